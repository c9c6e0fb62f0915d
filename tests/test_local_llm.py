"""The offline model server's start: a server that lists its model but dies on its first
completion (what a llama.cpp built with AMX does on some CPUs) is a specific error at start,
naming the signal and the log, not a connection error in every trajectory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.exceptions import ConfigError
from orchestrator.local_llm import LlamaServer, free_port
from tests.conftest import child_pids, process_alive

# a real HTTP server on loopback: lists a model, then crashes (SIGSEGV) or hangs on a completion
_SERVER = textwrap.dedent(
    """
    import os, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
        def do_POST(self):
            if sys.argv[2] == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            if sys.argv[2] == "hang":
                time.sleep(60)
            self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def _server(tmp_path: Path, mode: str, startup_timeout: float = 30.0) -> LlamaServer:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"")
    server = LlamaServer(
        model, port=free_port(), log_path=tmp_path / "server.log", startup_timeout=startup_timeout
    )
    server._proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(server.port), mode], stdin=subprocess.DEVNULL
    )
    return server


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("crash", r"died on its first completion \(signal SIGSEGV\); see .*server\.log"),
        ("hang", r"did not answer a one-token completion: .*timed out"),
    ],
)
def test_a_server_that_cannot_complete_fails_its_start_clearly(
    tmp_path: Path, mode: str, expected: str
) -> None:
    server = _server(tmp_path, mode, startup_timeout=3.0 if mode == "hang" else 30.0)
    try:
        with pytest.raises(ConfigError, match=expected):
            server._wait_ready()
    finally:
        server.stop()
    assert server._proc is not None and server._proc.poll() is not None


def test_a_server_that_completes_is_ready(tmp_path: Path) -> None:
    server = _server(tmp_path, "ok")
    try:
        server._wait_ready()
        assert server._proc is not None and server._proc.poll() is None
    finally:
        server.stop()


# a CLI process starting a child whose exec is slow (preexec_fn sleeps in the forked child):
# SIGTERM arrives while Popen waits for the exec, and the CLI's handler raises
_STARTER = textwrap.dedent(
    """
    import subprocess, sys, time
    from orchestrator.cli.common import Interrupted, install_signal_handlers
    from orchestrator.local_llm import OwnedPopen

    install_signal_handlers()
    cls = OwnedPopen if sys.argv[1] == "owned" else subprocess.Popen
    try:
        cls(["sleep", "60"], preexec_fn=lambda: time.sleep(3), start_new_session=True)
    except Interrupted:
        sys.exit(3)
    sys.exit(0)
    """
)


@pytest.mark.parametrize(("popen", "leaks"), [("owned", False), ("plain", True)])
def test_a_signal_while_the_server_process_starts_leaves_no_process_behind(
    popen: str, leaks: bool
) -> None:
    """What the demo does when SIGTERM comes as the server starts (the plain Popen is the
    control: it shows the interruption really falls between fork and exec)."""
    root = Path(__file__).resolve().parents[1]
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, popen], cwd=root)
    deadline = time.monotonic() + 30
    child: list[int] = []
    while not child and time.monotonic() < deadline:
        child = child_pids(starter.pid)
        time.sleep(0.02)
    assert child, "the starter forked no child"
    starter.send_signal(signal.SIGTERM)
    assert starter.wait(30) == 3  # Popen() raised Interrupted
    time.sleep(3.5)  # past the child's preexec sleep: a leaked child has exec'd sleep 60 now
    try:
        assert process_alive(child[0]) is leaks
    finally:
        if process_alive(child[0]):
            os.kill(child[0], signal.SIGKILL)
