"""A compromised in-sandbox agent, and host memory measurement, for the host-side hostile tests.

Item 1 of issue 13 makes the real agent unreachable from commands; the host must hold even if
that ever fails. So these tests run the real agent behind a prelude that hands its channel to
the sandbox's commands, as a successful attack would:

* every request the host sends is appended (first 2000 bytes) to ``<cwd>/.agent-in``, so a
  command can learn request ids, as the issue's attack read them from ``/proc/1/fd``;
* whatever a command writes to the FIFO ``<cwd>/.agent-out`` goes verbatim onto the agent's
  stdout, i.e. onto the host's stream, next to the agent's own replies;
* likewise ``<cwd>/.agent-err`` goes onto the agent's stderr;
* a request naming ``/evil/hold`` is swallowed (never reaches the agent), so it stays pending.

The attacks are then plain shell commands run through ``Sandbox.run`` in real Docker, and the
bytes reach the real ``DockerAttachTransport`` and ``RpcClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from orchestrator.sandbox.base import Sandbox, agent_source

PRELUDE = rb"""
import os as _o, threading as _t


def _evil_write(fd, data):
    view = memoryview(data)
    while view:
        view = view[_o.write(fd, view):]


def _evil_setup():
    here = _o.getcwd()
    out_fd, in_fd, err_fd = _o.dup(1), _o.dup(0), _o.dup(2)
    r, w = _o.pipe()
    _o.dup2(r, 0)
    _o.close(r)
    fifos = {}
    for name, fd in ((".agent-out", out_fd), (".agent-err", err_fd)):
        fifo = fifos[fd] = _o.path.join(here, name)
        try:
            _o.unlink(fifo)
        except OSError:
            pass
        _o.mkfifo(fifo)
        _o.chmod(fifo, 0o666)
    log = _o.open(_o.path.join(here, ".agent-in"), _o.O_WRONLY | _o.O_CREAT | _o.O_TRUNC, 0o644)

    def pump_in():
        buf = b""
        while True:
            data = _o.read(in_fd, 1 << 16)
            if not data:
                _o.close(w)
                return
            buf += data
            lines = buf.split(b"\n")
            buf = lines.pop()
            for line in lines:
                _evil_write(log, line[:2000] + b"\n")
                if b"/evil/hold" not in line:
                    _evil_write(w, line + b"\n")

    def pump_out(fd):
        while True:
            f = _o.open(fifos[fd], _o.O_RDONLY)
            while True:
                data = _o.read(f, 1 << 20)
                if not data:
                    break
                _evil_write(fd, data)
            _o.close(f)

    _t.Thread(target=pump_in, daemon=True).start()
    for fd in fifos:
        _t.Thread(target=pump_out, args=(fd,), daemon=True).start()


_evil_setup()
"""


def compromised_source() -> bytes:
    """The real agent, behind the prelude above."""
    return PRELUDE + b"\n" + agent_source()


@contextlib.asynccontextmanager
async def compromised(sandbox: Sandbox) -> AsyncIterator[Sandbox]:
    sandbox.agent_override = compromised_source()
    async with sandbox:
        yield sandbox


# ---- host memory


def rss_bytes() -> int:
    return _status_field("VmRSS")


def reset_peak() -> None:
    """Reset VmHWM (the peak RSS) of this process to its current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_bytes() -> int:
    return _status_field("VmHWM")


def _status_field(name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"{name} not in /proc/self/status")


class PeakRss:
    """``async with PeakRss() as m: ...`` then ``m.growth``: peak RSS above the start."""

    def __init__(self) -> None:
        self.start = 0
        self.peak = 0

    async def __aenter__(self) -> PeakRss:
        import gc

        gc.collect()
        reset_peak()
        self.start = rss_bytes()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.peak = peak_bytes()

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def __str__(self) -> str:
        return f"peak {mib(self.peak)} (start {mib(self.start)}, growth {mib(self.growth)})"


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"
