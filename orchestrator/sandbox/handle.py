"""What the code below the :class:`~orchestrator.sandbox.base.Sandbox` class sees of a sandbox.

The result records a sandbox's calls return, and :class:`SandboxHandle`, the protocol of the
sandbox members that ``fork.py`` (snapshots and forks) uses. ``base.py`` imports ``fork.py`` for
``Sandbox.fork``/``snapshot``; ``fork.py`` names this protocol instead of the class, so the two
modules do not import each other, not even for annotations. ``Sandbox`` satisfies the protocol
(checked by mypy where ``base.py`` passes ``self`` to ``fork.py``). The records are re-exported
by ``base.py`` and ``orchestrator.sandbox``, their public homes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CommandResult(_Result):
    """Outcome of a command in a persistent session."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    cancelled: bool = False
    elided_bytes: int = 0
    total_bytes: int = 0
    duration: float = 0.0
    session_ended: bool = False
    session_restarted: bool = False
    oom_killed: bool = False
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.cancelled


class ExecResult(_Result):
    """Outcome of a one-shot process."""

    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool = False
    cancelled: bool = False
    elided_bytes: int = 0
    total_bytes: int = 0
    duration: float = 0.0
    oom_killed: bool = False
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class FileStat(_Result):
    path: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: int
    mtime: float
    uid: int
    gid: int
    name: str | None = None
    #: symlinks resolved (``file.stat`` only)
    realpath: str | None = None


class SearchMatch(_Result):
    path: str
    line: int | None = None
    text: str | None = None
    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)


class SearchResult(_Result):
    matches: list[SearchMatch]
    truncated: bool
    files_scanned: int = 0
    files: list[dict[str, Any]] = Field(default_factory=list)
    #: non-regular files (FIFO, socket, device) the agent did not open: {"path", "kind"},
    #: at most 100 listed; skipped_count counts them all
    skipped: list[dict[str, Any]] = Field(default_factory=list)
    skipped_count: int = 0


class SandboxHandle(Protocol):
    """The members of a sandbox that snapshots and forks use (``Sandbox`` has them all)."""

    name: str
    #: awaited once after teardown (a fork's child releases its snapshot image)
    after_close: list[Callable[[], Awaitable[None]]]
    #: a ``fork.Snapshot`` restored right after the agent answers; ``Any`` because this module
    #: sits below ``fork.py``, which defines it
    restore_from: Any

    @property
    def backend(self) -> str: ...

    @property
    def state(self) -> str:
        """``not started``, ``running``, ``closed`` or ``dead (its stream closed)``."""
        ...

    def describe(self) -> str: ...

    async def start(self, *, queue: bool = True) -> Any: ...

    async def close(self) -> None: ...

    async def info(self) -> dict[str, Any]: ...

    @property
    def rpc(self) -> Any:
        """The agent's RPC client (``fs.diff`` / ``fs.apply`` stream through it)."""
        ...

    async def close_session(self, session: str = "default") -> bool: ...

    async def run(
        self,
        command: str,
        *,
        session: str = "default",
        timeout: float = ...,
        max_output: int | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult: ...

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = ...,
        max_output: int | None = None,
    ) -> ExecResult: ...

    async def list_dir(
        self, path: str, *, depth: int = 1, include_hidden: bool = True, max_entries: int = 10000
    ) -> list[FileStat]: ...

    async def remove(self, path: str, *, recursive: bool = False) -> None: ...

    async def mkdir(self, path: str) -> None: ...

    async def upload_tar(self, chunks: AsyncIterator[bytes], dest: str) -> dict[str, Any]: ...

    def download_tar(
        self,
        paths: Sequence[str],
        *,
        base: str = "/",
        compress: bool = False,
        max_bytes: int | None = None,
    ) -> AsyncIterator[bytes]: ...
