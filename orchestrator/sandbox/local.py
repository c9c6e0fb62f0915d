"""Local backend: the agent as a host subprocess in a temporary directory.

For development and fast unit tests only. There is NO isolation: commands run as your user on
your machine with your network. It says so in a warning every time a sandbox starts.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator.exceptions import SandboxStartError
from orchestrator.sandbox.base import Sandbox, SandboxConfigBase
from orchestrator.sandbox.transport import StreamTransport, Transport

log = logging.getLogger(__name__)


class LocalSandboxConfig(SandboxConfigBase):
    """Settings of the local (no isolation) backend (shared fields: the base)."""

    type: Literal["local"] = "local"
    #: the orchestrator's own interpreter: the host may have no ``python3`` on PATH
    python: str = Field(default_factory=lambda: sys.executable)
    workdir: str | None = Field(None, description="run here instead of a fresh temp dir (kept)")

    def build(self, **overrides: Any) -> LocalSandbox:
        return LocalSandbox(self.with_overrides(overrides))


class LocalSandbox(Sandbox):
    backend: ClassVar[str] = "local"

    def __init__(self, config: LocalSandboxConfig) -> None:
        super().__init__(
            name=f"local-{uuid.uuid4().hex[:8]}",
            startup_timeout=config.startup_timeout,
            limits=config.limits,
        )
        self.config = config
        self.workdir: str | None = None
        self._owns_workdir = False
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    async def _open(self) -> Transport:
        log.warning(
            "local sandbox %s: NO ISOLATION - commands run on this host as this user", self.name
        )
        if self.config.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="agentic-local-")
            self._owns_workdir = True
        else:
            self.workdir = self.config.workdir
        env = {**self._base_env(), **self.config.env}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.agent_argv(self.config.python),
                cwd=self.workdir,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=1 << 22,
            )
        except OSError as exc:
            raise SandboxStartError(f"cannot run {self.config.python!r}: {exc}") from exc
        assert self._proc.stdout is not None and self._proc.stdin is not None
        transport = StreamTransport(self._proc.stdout, None, write_pipe=self._proc.stdin)
        self._stderr_task = asyncio.create_task(self._pump_stderr(transport))
        return transport

    @staticmethod
    def _base_env() -> dict[str, str]:
        import os

        return dict(os.environ)

    async def _pump_stderr(self, transport: StreamTransport) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while data := await self._proc.stderr.read(65536):
            transport.feed_stderr(data)

    async def _diagnose(self) -> str | None:
        if self._proc is None:
            return None
        try:
            code = await asyncio.wait_for(self._proc.wait(), 0.3)
        except asyncio.TimeoutError:
            return "the agent closed its stdout but is still running"
        return f"the agent process exited with code {code}"

    async def _teardown(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            try:
                await self._stderr_task
            except (asyncio.CancelledError, Exception):
                pass
        if self._owns_workdir and self.workdir:
            await asyncio.to_thread(shutil.rmtree, self.workdir, True)
