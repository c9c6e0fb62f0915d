"""The sandbox contract: where a sandbox lives (backends) vs how we talk to it (RPC).

A backend subclass implements ``_open()`` (start the sandbox, return a transport to a running
agent) and ``_teardown()`` (remove it); everything else — commands, files, tar, search — is
this class, over the RPC client, identical for every backend. Agents and tools only see this.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import functools
import logging
import marshal
import os
import sys
import tarfile
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    ItemsView,
    KeysView,
    Mapping,
    Sequence,
)
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

from orchestrator import admission, metrics
from orchestrator.admission import Permit
from orchestrator.exceptions import (
    AgenticRolloutError,
    DownloadTooLargeError,
    SandboxAdmissionError,
    SandboxError,
    SandboxStartError,
)
from orchestrator.sandbox.fork import (
    DEFAULT_MAX_SNAPSHOT_BYTES,
    Snapshot,
    fork,
    restore,
    take_snapshot,
)

# the result records live in handle.py (below fork.py); this module stays their public home
from orchestrator.sandbox.handle import CommandResult as CommandResult  # noqa: PLC0414
from orchestrator.sandbox.handle import ExecResult as ExecResult  # noqa: PLC0414
from orchestrator.sandbox.handle import FileStat as FileStat  # noqa: PLC0414
from orchestrator.sandbox.handle import SearchMatch as SearchMatch  # noqa: PLC0414
from orchestrator.sandbox.handle import SearchResult as SearchResult  # noqa: PLC0414
from orchestrator.sandbox.labels import default_owner
from orchestrator.sandbox.rpc import RpcClient, RpcLimits, human_size
from orchestrator.sandbox.transport import Transport

log = logging.getLogger(__name__)

AGENT_FILE = Path(__file__).with_name("agent") / "agent.py"
#: Baked-in copy in our own images (the backends still stream the current source in).
AGENT_DIR = "/opt/agentic/agent"
DEFAULT_TIMEOUT = 120.0
TAR_CHUNK = 256 * 1024
#: Run as ``python3 -I -S -c BOOTSTRAP <tag> <code_len> <src_len>``. Reads from stdin the
#: agent pre-compiled by the host (marshal, valid for the host's ``cache_tag``) and its source,
#: runs the compiled one when the sandbox's Python has the same tag (saves ~10 ms of compile
#: per sandbox) and compiles the source otherwise; then the agent serves the rest of that same
#: stream. Nothing is written into the sandbox's filesystem: works on read-only root
#: filesystems, needs no put_archive, no rebuild and no network.
BOOTSTRAP = (
    "import os,sys,marshal\n"
    "if sys.version_info<(3,8):"
    "sys.stderr.write('agentic-rollout agent needs python>=3.8, found '"
    "+sys.version.split()[0]+'\\n');sys.exit(4)\n"
    "def r(n):\n b=b''\n while len(b)<n:\n"
    "  d=os.read(0,n-len(b))\n  if not d:sys.exit(3)\n  b+=d\n return b\n"
    "c=r(int(sys.argv[2]));s=r(int(sys.argv[3]))\n"
    "c=marshal.loads(c) if c and sys.argv[1]==sys.implementation.cache_tag else "
    "compile(s,'agentic-agent.py','exec')\n"
    "exec(c,{'__name__':'__main__'})"
)


@functools.cache
def agent_source() -> bytes:
    return AGENT_FILE.read_bytes()


@functools.cache
def agent_payload() -> tuple[bytes, bytes]:
    """(marshalled code for this interpreter's cache_tag, source) as streamed at start."""
    code = compile(agent_source(), "agentic-agent.py", "exec", dont_inherit=True)
    return marshal.dumps(code), agent_source()


def agent_command(python: str = "python3", payload: tuple[bytes, bytes] | None = None) -> list[str]:
    """argv that starts the agent from the payload streamed on its stdin (see BOOTSTRAP)."""
    code, source = payload or agent_payload()
    return [
        python,
        "-I",
        "-S",
        "-c",
        BOOTSTRAP,
        sys.implementation.cache_tag or "-",
        str(len(code)),
        str(len(source)),
    ]


class SandboxSettingsBase(BaseModel):
    """A sandbox section as a run config holds it: typed attributes (the effective settings,
    defaults included), and read access as the mapping that was given: ``settings["image"]``,
    ``settings.get("run_id")``, ``{**settings, **overrides}``, ``settings == {...}``. That
    mapping (``type`` and the keys that were set) is also what the config serialises to, and
    what a task's ``sandbox`` overrides are merged into."""

    def as_dict(self, *, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """``type`` and the settings that were given (not the defaults)."""
        given = self.model_dump(mode=mode, exclude_unset=True)
        return {**self.model_dump(mode=mode, include={"type"}), **given}

    def keys(self) -> KeysView[str]:
        return self.as_dict().keys()

    def items(self) -> ItemsView[str, Any]:
        return self.as_dict().items()

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.as_dict() == dict(other)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as any pydantic model


class SandboxConfigBase(SandboxSettingsBase):
    """What every backend's settings share, with one meaning and one default each.

    A backend subclasses it with its own ``type`` literal and fields, overriding a default only
    where its sandboxes need it (a pod is scheduled and its image pulled within
    ``startup_timeout``, so the cluster backends allow 300 s) and saying why.
    """

    model_config = ConfigDict(extra="forbid")

    python: str = Field("python3", description="interpreter in the sandbox that runs the agent")
    env: dict[str, str] = Field(default_factory=dict)
    startup_timeout: float = Field(
        60.0, gt=0, description="seconds from start() until the agent answers its first ping"
    )
    limits: RpcLimits = Field(
        default_factory=RpcLimits, description="host-side bounds on what the sandbox may send"
    )

    @abc.abstractmethod
    def build(self, **overrides: Any) -> Sandbox:
        """A sandbox with these settings (``overrides`` replace fields for this one)."""

    def with_overrides(self, overrides: dict[str, Any]) -> Self:
        """These settings with ``overrides`` applied (no copy when there are none)."""
        return self.model_copy(update=overrides) if overrides else self


class ManagedSandboxConfig(SandboxConfigBase):
    """Settings of a backend whose sandboxes can outlive the orchestrator process (a container,
    a pod): labelled with who started them and reaped by label (``orchestrator.sandbox.gc``)."""

    labels: dict[str, str] = Field(default_factory=dict)
    owner: str = Field(default_factory=default_owner)
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    ttl: float = Field(
        6 * 3600.0, gt=0, description="seconds until the reaper (or the cluster) may remove it"
    )


class Sandbox(abc.ABC):
    """One isolated environment per trajectory, used as ``async with``."""

    backend: ClassVar[str] = "abstract"

    def __init__(
        self, *, name: str, startup_timeout: float = 60.0, limits: RpcLimits | None = None
    ) -> None:
        self.name = name
        self.startup_timeout = startup_timeout
        #: host-side bounds on what this sandbox may send (docs/security.md)
        self.limits = limits or RpcLimits()
        #: another agent's source to stream in instead of agent.py (tests of a compromised or
        #: misbehaving agent); set before start, on backends that stream the agent in
        self.agent_override: bytes | None = None
        self._rpc: RpcClient | None = None
        self._closed = False
        #: set by a backend whose _open() streamed the agent in itself (Kubernetes direct TCP)
        self.agent_injected = False
        #: seconds from start() to the agent answering its first ping
        self.ready_seconds: float | None = None
        #: seconds start() waited for admission (orchestrator.admission)
        self.queue_seconds: float = 0.0
        self._permit: Permit | None = None
        #: a snapshot restored right after the agent answers (``from_snapshot``; fork.py)
        self.restore_from: Snapshot | None = None
        #: awaited once after teardown (a fork's child releases its snapshot image)
        self.after_close: list[Callable[[], Awaitable[None]]] = []

    # ---- backend hooks

    @abc.abstractmethod
    async def _open(self) -> Transport:
        """Create/start the sandbox and return a transport to a freshly started agent."""

    @abc.abstractmethod
    async def _teardown(self) -> None:
        """Remove the sandbox; must be safe to call after a partial or failed start."""

    async def _diagnose(self) -> str | None:
        """Why the stream died (e.g. container state); None when unknown."""
        return None

    def agent_payload(self) -> tuple[bytes, bytes]:
        """(compiled code, source) streamed in at start; no code: the sandbox compiles it."""
        if self.agent_override is not None:
            return b"", self.agent_override
        return agent_payload()

    def agent_argv(self, python: str = "python3") -> list[str]:
        return agent_command(python, self.agent_payload())

    # ---- lifecycle

    async def start(self, *, queue: bool = True) -> Self:
        """Start the sandbox. ``queue=False`` (warm pool refills): raise
        :class:`SandboxAdmissionError` at once instead of waiting for admission."""

        # every start passes the process-wide admission of its backend: live sandboxes,
        # concurrent starts and the creation rate are bounded for all callers together
        ctl = admission.controller(self.backend)
        permit = await ctl.admit() if queue else await ctl.try_admit()
        if permit is None:
            raise SandboxAdmissionError(f"{self.backend}: no free admission slot right now")
        self._permit = permit
        self.queue_seconds = self._permit.queue_wait
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            transport = await self._open()
            if not self.agent_injected:  # else the backend already streamed it in elsewhere
                await transport.write(b"".join(self.agent_payload()))
            self._rpc = RpcClient(
                transport, name=self.name, diagnose=self._diagnose, limits=self.limits
            )
            self._rpc.start()
            remaining = max(1.0, self.startup_timeout - (loop.time() - t0))
            try:
                await self._rpc.call("ping", timeout=remaining)
            except AgenticRolloutError as exc:
                why = await self._diagnose()
                raise SandboxStartError(
                    f"{self.describe()}: the in-sandbox agent did not become ready: {why or exc}"
                ) from exc
            if self.restore_from is not None:
                await restore(self, self.restore_from)
        except BaseException as exc:
            metrics.sandbox_start_failed(self.backend, exc)
            await self.close()
            raise
        finally:
            permit.started()
        self.ready_seconds = loop.time() - t0
        metrics.sandbox_started(self.backend, self.ready_seconds, self.queue_seconds)
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._rpc is not None:
                await self._rpc.close()
        finally:
            try:
                await asyncio.shield(self._teardown())
            finally:
                if self._permit is not None:
                    self._permit.release()
                for hook in self.after_close:
                    try:
                        await asyncio.shield(hook())
                    except Exception as exc:  # cleanup of a snapshot must not mask the close
                        log.warning("%s: after-close hook failed: %s", self.describe(), exc)

    async def __aenter__(self) -> Self:
        if self._rpc is not None and not self._closed:  # started already (a warm pool's)
            return self
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def describe(self) -> str:
        return f"{self.backend} sandbox {self.name}"

    @property
    def rpc(self) -> RpcClient:
        if self._rpc is None:
            raise SandboxError(f"{self.describe()} is not started (use `async with`)")
        return self._rpc

    @property
    def state(self) -> str:
        """``not started``, ``running``, ``closed`` or ``dead (its stream closed)``."""
        if self._closed:
            return "closed"
        if self._rpc is None:
            return "not started"
        return "dead (its stream closed)" if self._rpc.closed else "running"

    @property
    def connected(self) -> bool:
        """Started and its agent's stream still open (what a warm pool checks before handing
        a sandbox out); False before start, after close or once the stream dropped."""
        return self._rpc is not None and not self._rpc.closed and not self._closed

    # ---- fork and snapshot (orchestrator/sandbox/fork.py)

    async def fork(
        self,
        n: int,
        *,
        into: Sequence[Sandbox] | None = None,
        method: str = "auto",
        portable: bool = False,
        max_snapshot_bytes: int | None = None,
    ) -> list[Sandbox]:
        """n new started sandboxes with this one's filesystem and its sessions' cwd and
        exported env, each independent afterwards (the caller closes them). ``into``: fill
        these already started sandboxes of the same image instead (started during the setup:
        the fastest way). ``method``: ``diff`` (the filesystem's changes since the start,
        streamed into children of the same image; every backend; the default), ``image``
        (Docker: ``docker commit``, children started from it). Raises
        :class:`~orchestrator.exceptions.ForkError`; partial failures remove what was made."""
        # a child is built by this sandbox's own backend config (or is one of ``into``)
        children = await fork(
            self,
            n,
            into=into,
            method=method,
            portable=portable,
            max_bytes=max_snapshot_bytes or DEFAULT_MAX_SNAPSHOT_BYTES,
        )
        return cast(list[Sandbox], children)

    async def snapshot(
        self,
        *,
        method: str = "auto",
        portable: bool = False,
        max_snapshot_bytes: int | None = None,
    ) -> Snapshot:
        """This sandbox's state as a :class:`~orchestrator.sandbox.fork.Snapshot`; start
        sandboxes from it with ``sandbox_config(..., from_snapshot=snap)``; ``delete()`` it
        when done. ``method``: ``image`` (Docker's default: a committed image), ``diff`` (the
        changes since the start in a host file, applied to each sandbox started from it)."""
        return await take_snapshot(
            self,
            method=method,
            portable=portable,
            max_bytes=max_snapshot_bytes or DEFAULT_MAX_SNAPSHOT_BYTES,
        )

    # ---- commands

    async def ping(self) -> float:
        """Round-trip seconds of a ping."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await self.rpc.call("ping", timeout=10.0)
        return loop.time() - t0

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.rpc.call("info", timeout=10.0)
        return result

    async def run(
        self,
        command: str,
        *,
        session: str = "default",
        timeout: float = DEFAULT_TIMEOUT,
        max_output: int | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> CommandResult:
        """Run ``command`` in a persistent bash session (cwd/env persist between calls).

        ``cwd``/``env`` only apply when the session is first created.
        """
        params: dict[str, Any] = {"command": command, "session": session, "timeout": timeout}
        if max_output is not None:
            params["max_output"] = max_output
        if cwd is not None:
            params["cwd"] = cwd
        if env:
            params["env"] = env
        return CommandResult.model_validate(await self.rpc.call("session.run", params))

    async def close_session(self, session: str = "default") -> bool:
        result = await self.rpc.call("session.close", {"session": session})
        return bool(result["closed"])

    async def exec(
        self,
        command: str | Sequence[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_output: int | None = None,
    ) -> ExecResult:
        """Run a one-shot process: ``command`` as argv list, or a string for ``bash -c``."""
        params: dict[str, Any] = {"timeout": timeout}
        if isinstance(command, str):
            params["command"] = command
        else:
            params["argv"] = list(command)
        if cwd is not None:
            params["cwd"] = cwd
        if env:
            params["env"] = env
        if max_output is not None:
            params["max_output"] = max_output
        return ExecResult.model_validate(await self.rpc.call("exec", params))

    # ---- files

    async def read_file(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        """Read bytes; files bigger than 16 MiB are read in several calls."""
        chunks: list[bytes] = []
        while True:
            params: dict[str, Any] = {"path": path, "offset": offset}
            if length is not None:
                params["length"] = length - sum(map(len, chunks))
            res = await self.rpc.call("file.read", params, timeout=60.0)
            data = base64.b64decode(res["data"])
            chunks.append(data)
            offset += len(data)
            if res["eof"] or not data or (length is not None and sum(map(len, chunks)) >= length):
                return b"".join(chunks)

    async def read_text(self, path: str) -> str:
        return (await self.read_file(path)).decode("utf-8", "replace")

    async def write_file(
        self,
        path: str,
        data: bytes | str,
        *,
        mode: int | None = None,
        parents: bool = True,
        exclusive: bool = False,
        append: bool = False,
    ) -> int:
        """Write atomically (temp file + rename); returns the size written."""
        raw = data.encode() if isinstance(data, str) else data
        params: dict[str, Any] = {
            "path": path,
            "data": base64.b64encode(raw).decode("ascii"),
            "parents": parents,
            "exclusive": exclusive,
            "append": append,
        }
        if mode is not None:
            params["mode"] = mode
        res = await self.rpc.call("file.write", params, timeout=120.0)
        return int(res["size"])

    async def stat(self, path: str, *, follow_symlinks: bool = True) -> FileStat:
        return FileStat.model_validate(
            await self.rpc.call("file.stat", {"path": path, "follow_symlinks": follow_symlinks})
        )

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except FileNotFoundError:
            return False
        return True

    async def list_dir(
        self, path: str, *, depth: int = 1, include_hidden: bool = True, max_entries: int = 10000
    ) -> list[FileStat]:
        res = await self.rpc.call(
            "file.list",
            {
                "path": path,
                "depth": depth,
                "include_hidden": include_hidden,
                "max_entries": max_entries,
            },
            timeout=60.0,
        )
        return [FileStat.model_validate(e) for e in res["entries"]]

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await self.rpc.call("file.remove", {"path": path, "recursive": recursive}, timeout=120.0)

    async def mkdir(self, path: str) -> None:
        await self.rpc.call("file.mkdir", {"path": path})

    async def search(
        self,
        path: str,
        pattern: str,
        *,
        mode: Literal["content", "files"] = "content",
        include: Sequence[str] = (),
        context: int = 0,
        max_results: int = 1000,
        ignore_case: bool = False,
        fixed_string: bool = False,
    ) -> SearchResult:
        """Regex content search or glob file-name search, done by the agent in pure Python."""
        res = await self.rpc.call(
            "search",
            {
                "path": path,
                "pattern": pattern,
                "mode": mode,
                "include": list(include),
                "context": context,
                "max_results": max_results,
                "ignore_case": ignore_case,
                "fixed_string": fixed_string,
            },
            timeout=300.0,
        )
        return SearchResult.model_validate(res)

    # ---- tar streaming

    async def upload_tar(self, chunks: AsyncIterator[bytes], dest: str) -> dict[str, Any]:
        """Stream a tar archive (any compression) into ``dest``, chunk by chunk."""
        res: dict[str, Any] = await self.rpc.upload("tar.put", {"dest": dest}, chunks)
        return res

    async def upload(self, src: str | os.PathLike[str], dest: str) -> dict[str, Any]:
        """Copy a host file or directory tree into directory ``dest`` of the sandbox."""
        src_path = Path(src)
        if not await asyncio.to_thread(src_path.exists):
            raise FileNotFoundError(f"upload source does not exist: {src_path}")
        return await self.upload_tar(_tar_stream(src_path), dest)

    async def download_tar(
        self,
        paths: Sequence[str],
        *,
        base: str = "/",
        compress: bool = False,
        max_bytes: int | None = None,
    ) -> AsyncIterator[bytes]:
        """Stream a tar of ``paths`` (relative to ``base``) out of the sandbox.

        More than ``max_bytes`` (default ``limits.max_download_bytes``) raises
        :class:`DownloadTooLargeError` and stops the transfer.
        """
        cap = max_bytes or self.limits.max_download_bytes
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)
        received = 0

        async def on_chunk(data: bytes) -> None:
            nonlocal received
            received += len(data)
            if received > cap:
                if received - len(data) <= cap:  # said once; later chunks are dropped
                    await queue.put(
                        DownloadTooLargeError(
                            f"download of {', '.join(paths)[:200]} from {self.describe()} "
                            f"passed its cap of {human_size(cap)} (max_download_bytes); "
                            "stopped"
                        )
                    )
                return
            await queue.put(data)

        rid = self.rpc.new_id()

        async def runner() -> None:
            try:
                await self.rpc.call(
                    "tar.get",
                    # the agent stops at the source too (and refuses sparse files); the count
                    # in on_chunk is the host's own backstop
                    {"paths": list(paths), "base": base, "compress": compress, "max_bytes": cap},
                    timeout=3600.0,
                    on_chunk=on_chunk,
                    request_id=rid,
                )
                await queue.put(None)
            except BaseException as exc:  # delivered to the consumer below
                await queue.put(exc)

        task = asyncio.create_task(runner())
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not task.done():
                task.cancel()
                if not self.rpc.closed:  # stop the agent streaming what nobody reads
                    try:
                        await self.rpc.call("cancel", {"target": rid}, timeout=5.0)
                    except AgenticRolloutError:
                        pass

    async def download(self, path: str, dest: str | os.PathLike[str]) -> Path:
        """Copy a sandbox file or directory to host directory ``dest``; returns the local path."""
        dest_path = Path(dest)
        await asyncio.to_thread(dest_path.mkdir, parents=True, exist_ok=True)
        parent, name = os.path.split(path.rstrip("/")) if path != "/" else ("/", ".")
        reader, writer = os.pipe()
        loop = asyncio.get_running_loop()
        cap = self.limits.max_download_bytes

        def extract() -> None:
            claimed = 0

            def bounded(member: tarfile.TarInfo, where: str) -> tarfile.TarInfo | None:
                # a sparse or lying header can claim far more than was sent: count sizes too
                nonlocal claimed
                claimed += member.size
                if claimed > cap:
                    raise DownloadTooLargeError(
                        f"download of {path} from {self.describe()}: its files claim more "
                        f"than {human_size(cap)} (max_download_bytes; at {member.name!r})"
                    )
                return tarfile.data_filter(member, where)

            with os.fdopen(reader, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
                tar.extractall(dest_path, filter=bounded)

        extractor = loop.run_in_executor(None, extract)
        out = os.fdopen(writer, "wb")
        try:
            async for chunk in self.download_tar([name], base=parent or "/"):
                await loop.run_in_executor(None, out.write, chunk)
        except BaseException:
            # the remote error is the one to report, not the extractor's truncated-archive
            # error; but a cap the extractor hit is why the pipe broke
            out.close()
            (failure,) = await asyncio.gather(extractor, return_exceptions=True)
            if isinstance(failure, DownloadTooLargeError):
                raise failure from None
            raise
        out.close()
        await extractor
        return dest_path / name


async def _tar_stream(src: Path) -> AsyncIterator[bytes]:
    """Tar a host path in a thread, yielding chunks as they are produced (bounded memory)."""
    loop = asyncio.get_running_loop()
    reader, writer = os.pipe()

    def produce() -> None:
        with os.fdopen(writer, "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(src, arcname=src.name)

    producer = loop.run_in_executor(None, produce)
    source = os.fdopen(reader, "rb")
    try:
        while chunk := await loop.run_in_executor(None, source.read, TAR_CHUNK):
            yield chunk
    finally:
        source.close()  # a producer still writing gets EPIPE and stops
        results = await asyncio.gather(producer, return_exceptions=True)
    if isinstance(results[0], BaseException):
        raise results[0]
