"""Fork and snapshot: copy a prepared sandbox into new, independent ones.

``await sandbox.fork(n)`` returns n started sandboxes holding the parent's filesystem and, for
each of the parent's bash sessions, its cwd and exported environment; ``await
sandbox.snapshot()`` returns a :class:`Snapshot` from which ``sandbox_config(...,
from_snapshot=snap)`` starts any number later. Two ways to copy the filesystem:

* **diff** (every backend; the default for ``fork``): the agent's ``fs.diff`` walks the
  filesystem (never following a symlink; not ``/proc``, ``/sys``, ``/dev``, the host channel,
  nor a mount other than ``/``, writable tmpfs and the work directory) and streams, as an
  uncompressed tar, every entry whose ctime is at or after the sandbox's start (minus a 2 s
  margin: a user cannot set a ctime back); its first member carries each changed directory's
  entry list, so a child removes what the parent deleted. Children of the same image apply it
  with ``fs.apply`` (see ``_Applier`` in the agent: one path component at a time, O_NOFOLLOW,
  nothing written in an excluded tree, removals never cross a mount). The cap
  (``max_snapshot_bytes``, apparent size of the changed files) is checked by the walk before a
  byte moves: :class:`SnapshotTooLargeError`. ``fork(n, into=blanks)`` streams it from the
  parent once into all n already started sandboxes at the same time (no host file) - group
  rollouts start the blanks during the setup; ``fork(n)`` reads it into a host file while
  its n children start.
* **image** (Docker, ``method="image"``; the default for ``snapshot()`` there): ``docker
  commit`` of the container. The image carries the sandbox labels plus
  ``agentic-rollout.kind=snapshot`` and is reaped by ``gc`` like a container (expired, or its
  orchestrator process gone). A fork's image is removed once its last child is closed.
  Not for ``read_only`` sandboxes (the work directory is a volume, not in the layer).

Session state is read with one command per session (its cwd and ``os.environ`` as the
session's children see them) and given to the child's session when it is created; functions,
aliases and non-exported variables are not carried. Imports no backend: the backend that
commits an image snapshot (``commit_snapshot``) hands over the coroutine that removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import shlex
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import admission
from orchestrator.exceptions import (
    AgenticRolloutError,
    ArchiveTooLargeError,
    ConfigError,
    ForkError,
    SnapshotTooLargeError,
)
from orchestrator.sandbox.handle import SandboxHandle
from orchestrator.sandbox.labels import LABEL_KIND
from orchestrator.sandbox.rpc import human_size

log = logging.getLogger(__name__)

#: default cap on a portable snapshot's work directory
DEFAULT_MAX_SNAPSHOT_BYTES = 1 << 30
#: removes a snapshot image given its id: True once it is gone (or was already), False when a
#: later snapshot's image was committed on top of it (it can go only after that one); any
#: other failure is logged by the backend and left to ``gc``
ImageDeleter = Callable[[str], Awaitable[bool]]
#: exported variables that describe the process, not the state to carry
_NOT_CARRIED = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "HOSTNAME"})
_MARK = "@@agentic-fork@@"
_CAPTURE = (
    "import json,os,sys;sys.stdout.write('\\n" + _MARK + "'+json.dumps([os.getcwd(),"
    "dict(os.environ)])+'\\n')"
)


class SessionState(BaseModel):
    """What a child's session starts with: the parent session's cwd and exported env."""

    model_config = ConfigDict(frozen=True)

    name: str
    cwd: str
    env: dict[str, str] = Field(default_factory=dict)


class Snapshot(BaseModel):
    """A handle on a sandbox's prepared state; start sandboxes from it with
    ``sandbox_config(from_snapshot=snap)`` and ``delete()`` it when done (``gc`` reaps Docker
    snapshot images whose orchestrator is gone or whose TTL passed)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    backend: str
    kind: Literal["image", "diff"]
    #: the parent's backend config (children start from it)
    config: Any
    #: kind "image": the Docker image id
    image: str | None = None
    #: kind "image": removes it (given by the backend that committed it)
    delete_image: ImageDeleter | None = Field(default=None, exclude=True, repr=False)
    #: kind "diff": the host file holding the filesystem changes (``fs.diff``'s tar)
    archive: str | None = None
    #: kind "diff": mount points carried beyond ``/`` and tmpfs (the work directory)
    include: list[str] = Field(default_factory=list)
    size: int = 0
    sessions: list[SessionState] = Field(default_factory=list)
    created: float = Field(default_factory=time.time)
    source: str = ""
    deleted: bool = False
    #: the snapshot the source sandbox itself was started from (a fork of a fork): its image
    #: is the parent of this one's and can only go after it
    base: Snapshot | None = None
    #: delete() was asked while a later snapshot's image still depended on this one
    pending_delete: bool = False

    async def delete(self) -> None:
        """Remove the image or archive (idempotent; an image still used by a sandbox stays
        for ``gc``)."""
        if self.deleted:
            return
        self.deleted = True
        if self.kind == "diff" and self.archive:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, self.archive)
        elif (
            self.kind == "image"
            and self.image
            and self.delete_image is not None
            and not await self.delete_image(self.image)
        ):
            # a fork of one of our children committed on top of this image: it goes when
            # that snapshot goes (below)
            self.deleted, self.pending_delete = False, True
        if self.deleted and self.base is not None and self.base.pending_delete:
            self.base.deleted = self.base.pending_delete = False
            await self.base.delete()

    def config_for_child(self, **overrides: Any) -> Any:
        """The backend config a sandbox started from this snapshot uses."""
        if self.deleted:
            raise ForkError(f"snapshot {self.id} of {self.source} was deleted")
        update = dict(overrides)
        if self.kind == "image":
            update["image"] = self.image
        return self.config.model_copy(update=update) if update else self.config


class SnapshotConfig:
    """A sandbox config (``sandbox_config(..., from_snapshot=snap)``): the snapshot's backend
    config with ``overrides``; every sandbox it builds restores the snapshot when started."""

    def __init__(self, snapshot: Snapshot, overrides: dict[str, Any]) -> None:
        kind = overrides.pop("type", snapshot.backend)
        if kind != snapshot.backend:
            raise ConfigError(
                f"from_snapshot: snapshot {snapshot.id} is a {snapshot.backend} snapshot; "
                f"it cannot start a {kind} sandbox"
            )
        # the run config's own image (the one the snapshot was taken from) is fine
        if (
            snapshot.kind == "image"
            and "image" in overrides
            and overrides.pop("image") != getattr(snapshot.config, "image", None)
        ):
            raise ConfigError("from_snapshot: the snapshot's image is the image; drop 'image'")
        unknown = set(overrides) - set(type(snapshot.config).model_fields)
        if unknown:
            raise ConfigError(
                f"from_snapshot: unknown {kind} sandbox keys: {', '.join(sorted(unknown))}"
            )
        self.snapshot = snapshot
        self.overrides = overrides
        self.type = kind

    def build(self, **overrides: Any) -> SandboxHandle:
        cfg = self.snapshot.config_for_child(**{**self.overrides, **overrides})
        sandbox: SandboxHandle = cfg.build()
        sandbox.restore_from = self.snapshot
        return sandbox


def _config_of(sandbox: SandboxHandle) -> BaseModel:
    # the config that built it: agent-sandbox keeps its own as ``settings`` (``config`` is
    # the Pod transport's part)
    cfg = getattr(sandbox, "settings", None)
    if not (isinstance(cfg, BaseModel) and hasattr(cfg, "build")):
        cfg = getattr(sandbox, "config", None)
    if not isinstance(cfg, BaseModel):
        raise ForkError(f"{sandbox.describe()}: its backend keeps no config to start children")
    return cfg


async def _check_alive(sandbox: SandboxHandle) -> dict[str, Any]:
    """The parent's ``info``; ForkError when it is not (or no longer) running."""
    if sandbox.state != "running":
        raise ForkError(f"cannot fork {sandbox.describe()}: it is {sandbox.state}")
    try:
        return await sandbox.info()
    except AgenticRolloutError as exc:
        raise ForkError(f"cannot fork {sandbox.describe()}: it is not answering: {exc}") from exc


def _python(sandbox: SandboxHandle) -> str:
    return str(getattr(getattr(sandbox, "config", None), "python", None) or "python3")


async def capture_sessions(sandbox: SandboxHandle, names: Sequence[str]) -> list[SessionState]:
    """cwd and exported environment of each named session, as its commands see them."""
    states = []
    command = f"builtin command {shlex.quote(_python(sandbox))} -c {shlex.quote(_CAPTURE)}"
    for name in names:
        result = await sandbox.run(command, session=name, timeout=60, max_output=16 << 20)
        line = next(
            (ln for ln in reversed(result.output.splitlines()) if ln.startswith(_MARK)), None
        )
        if line is None or result.exit_code != 0:
            raise ForkError(
                f"cannot read the state of session {name!r} of {sandbox.describe()} "
                f"(exit {result.exit_code}): {result.output[-300:]}"
            )
        cwd, env = json.loads(line[len(_MARK) :])
        env = {k: v for k, v in env.items() if k not in _NOT_CARRIED}
        states.append(SessionState(name=name, cwd=cwd, env=env))
    return states


async def restore_sessions(sandbox: SandboxHandle, sessions: Sequence[SessionState]) -> None:
    """Create each session in ``sandbox`` with the captured cwd and env."""
    for s in sessions:
        await _in_session(
            sandbox, s.name, "builtin true", f"be restored in {s.cwd}", cwd=s.cwd, env=s.env
        )


async def _in_session(
    sandbox: SandboxHandle, name: str, command: str, what: str, **kwargs: Any
) -> None:
    """Run a fork's set-up ``command`` in session ``name``; ForkError saying it could not
    ``what`` unless it succeeded."""
    result = await sandbox.run(command, session=name, timeout=60, **kwargs)
    if not result.ok:
        raise ForkError(
            f"{sandbox.describe()}: session {name!r} could not {what}: {result.output[-300:]}"
        )


def _include(sandbox: SandboxHandle, info: dict[str, Any]) -> list[str]:
    """Mount points the diff carries beyond ``/`` and tmpfs: the work directory (a volume on a
    read-only root, an emptyDir in a pod)."""
    cfg = getattr(sandbox, "config", None)
    workdir = str(getattr(cfg, "workdir", None) or info.get("cwd") or "")
    if workdir.startswith("/") and posixpath.normpath(workdir) != "/":
        return [posixpath.normpath(workdir)]
    return []


def _too_large(sandbox: SandboxHandle, max_bytes: int, exc: BaseException) -> SnapshotTooLargeError:
    return SnapshotTooLargeError(
        f"cannot snapshot {sandbox.describe()}: {exc} - over the snapshot cap of "
        f"{human_size(max_bytes)} (max_snapshot_bytes). Nothing was copied; remove what the "
        "setup left behind, raise the cap, or use an image snapshot (Docker, no cap)"
    )


async def stream_diff(
    sandbox: SandboxHandle,
    include: list[str],
    max_bytes: int,
    on_chunk: Callable[[bytes], Awaitable[None]],
) -> dict[str, Any]:
    """Stream the parent's filesystem changes since it started (the agent's ``fs.diff``: an
    uncompressed tar, its first member carrying each changed directory's entry list) into
    ``on_chunk``. The agent checks the cap before a byte moves; the host counts too (a
    subverted agent could send more than it said)."""
    backstop = 2 * max_bytes + (256 << 20)
    received = 0
    # a chunk handler must not raise (that would be the reader's error, closing the parent):
    # the first failure is kept, later chunks dropped, and it is raised once the call ends
    failure: BaseException | None = None

    async def counted(data: bytes) -> None:
        nonlocal received, failure
        received += len(data)
        if failure is not None:
            return
        if received > backstop:
            failure = SnapshotTooLargeError(
                f"{sandbox.describe()} streamed {human_size(received)} for a snapshot capped "
                f"at {human_size(max_bytes)}; stopped"
            )
        else:
            try:
                await on_chunk(data)
                return
            except Exception as exc:
                failure = exc
        call.cancel()  # the agent is told to stop

    call = asyncio.ensure_future(
        sandbox.rpc.call(
            "fs.diff",
            {"include": include, "max_bytes": max_bytes},
            timeout=3600.0,
            on_chunk=counted,
        )
    )
    try:
        result: dict[str, Any] = await asyncio.shield(call)
    except ArchiveTooLargeError as exc:
        raise _too_large(sandbox, max_bytes, exc) from exc
    except asyncio.CancelledError:
        if failure is None or not call.cancelled():
            call.cancel()
            raise
    if failure is not None:
        raise failure
    return result


async def apply_diff(
    child: SandboxHandle, chunks: AsyncIterator[bytes], include: list[str], max_bytes: int
) -> dict[str, Any]:
    """Put a diff into a started sandbox of the same image (the agent's ``fs.apply``: every
    path opened one component at a time without following symlinks, nothing written in
    ``/proc``, ``/sys``, ``/dev`` or a mount the diff does not carry)."""
    result: dict[str, Any] = await child.rpc.upload(
        "fs.apply", {"include": include, "max_bytes": max_bytes}, chunks, timeout=3600.0
    )
    return result


class _Fanout:
    """One stream read once, written to n consumers at the pace of the slowest; a consumer
    that stopped (its sandbox failed) no longer holds the others up."""

    def __init__(self, n: int) -> None:
        self.queues: list[asyncio.Queue[bytes | None]] = [
            asyncio.Queue(maxsize=64) for _ in range(n)
        ]
        self.stopped = [False] * n

    async def put(self, data: bytes) -> None:
        for i, q in enumerate(self.queues):
            if not self.stopped[i]:
                await q.put(data)

    async def end_soon(self) -> None:
        for i, q in enumerate(self.queues):
            if not self.stopped[i]:
                await q.put(None)

    async def chunks(self, i: int) -> AsyncIterator[bytes]:
        q = self.queues[i]
        try:
            while (data := await q.get()) is not None:
                yield data
        finally:
            self.stopped[i] = True
            while not q.empty():  # a producer waiting on this full queue goes on
                q.get_nowait()


async def fill(
    parent: SandboxHandle, children: Sequence[SandboxHandle], *, max_bytes: int
) -> list[SessionState]:
    """Copy the parent's filesystem changes and sessions into started ``children``: read once
    from the parent, written to all children at once, no host file."""
    info = await _check_alive(parent)
    include = _include(parent, info)
    fan = _Fanout(len(children))
    applies = [
        asyncio.ensure_future(apply_diff(c, fan.chunks(i), include, max_bytes))
        for i, c in enumerate(children)
    ]

    async def produce() -> dict[str, Any]:
        try:
            return await stream_diff(parent, include, max_bytes, fan.put)
        finally:
            await fan.end_soon()  # a failed diff ends each child's stream (it then fails)

    captured = asyncio.ensure_future(capture_sessions(parent, list(info.get("sessions") or [])))
    # each child's sessions are made (with the parent's env) while the files stream in; their
    # cwd, which the files may create, is entered afterwards
    early = [asyncio.ensure_future(_open_sessions(c, captured)) for c in children]
    produced = asyncio.ensure_future(produce())
    results = await asyncio.gather(produced, captured, *applies, *early, return_exceptions=True)
    for r in results[:2]:
        if isinstance(r, BaseException):
            raise r
    failed = [r for r in results[2:] if isinstance(r, BaseException)]
    if failed:
        raise ForkError(
            f"fork of {parent.describe()}: {len(failed)} of {len(children)} children could "
            f"not take its filesystem or sessions. First error: {failed[0]}"
        ) from failed[0]
    sessions: list[SessionState] = results[1]
    await asyncio.gather(*(_enter_cwds(c, sessions) for c in children))
    log.debug("fork of %s into %d: diff %s", parent.describe(), len(children), results[0])
    return sessions


async def _open_sessions(
    child: SandboxHandle, captured: asyncio.Future[list[SessionState]]
) -> None:
    """The child's sessions, new, with the parent's exported env (a blank's own session of the
    same name is replaced: a session takes its env when it is made)."""
    sessions = await asyncio.shield(captured)
    existing = set((await child.info()).get("sessions") or [])
    for s in sessions:
        if s.name in existing:
            await child.close_session(s.name)
        await _in_session(child, s.name, "builtin true", "be made", cwd="/", env=s.env)


async def _enter_cwds(child: SandboxHandle, sessions: Sequence[SessionState]) -> None:
    for s in sessions:
        await _in_session(child, s.name, f"builtin cd -- {shlex.quote(s.cwd)}", f"enter {s.cwd}")


async def _diff_to_file(
    sandbox: SandboxHandle, info: dict[str, Any], max_bytes: int, snap_id: str
) -> tuple[str, list[str], int]:
    """(host file, include, bytes): the parent's diff kept for sandboxes started later."""
    include = _include(sandbox, info)
    folder = os.path.join(tempfile.gettempdir(), "agentic-rollout-snapshots")
    await asyncio.to_thread(os.makedirs, folder, 0o700, True)
    path = os.path.join(folder, f"{snap_id}.tar")
    out = await asyncio.to_thread(open, path, "wb")
    size = 0

    async def write(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)
        await asyncio.to_thread(out.write, chunk)

    try:
        await stream_diff(sandbox, include, max_bytes, write)
    except BaseException:
        await asyncio.to_thread(out.close)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    await asyncio.to_thread(out.close)
    return path, include, size


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, 256 * 1024):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


async def restore(sandbox: SandboxHandle, snapshot: Snapshot) -> None:
    """Put a snapshot's filesystem changes (diff kind) and sessions into a started sandbox."""
    if snapshot.deleted:
        raise ForkError(f"snapshot {snapshot.id} of {snapshot.source} was deleted")
    if snapshot.kind == "diff" and snapshot.archive:
        await apply_diff(
            sandbox,
            _file_chunks(snapshot.archive),
            snapshot.include,
            max(snapshot.size, 1) + (64 << 20),
        )
    await restore_sessions(sandbox, snapshot.sessions)


Method = Literal["auto", "image", "diff"]


def _resolve(
    sandbox: SandboxHandle, config: BaseModel, method: str, portable: bool, fork: bool
) -> str:
    if method not in ("auto", "image", "diff"):
        raise ConfigError(f"method must be auto, image or diff, got {method!r}")
    can_commit = getattr(sandbox, "commit_snapshot", None) is not None and not getattr(
        config, "read_only", False
    )
    if method == "image" and not can_commit:
        raise ForkError(
            f"{sandbox.describe()}: an image snapshot needs the Docker backend and a writable "
            "root filesystem (read_only keeps the work directory in a volume); use method=diff"
        )
    if portable or method == "diff" or not can_commit:
        return "diff"
    if method == "image":
        return "image"
    # auto: a fork streams the changes into children started from the parent's image (no
    # commit: the engine's naive diff walks the whole image and writes a layer); a snapshot
    # kept for later is a committed image, started from directly
    return "diff" if fork else "image"


async def take_snapshot(
    sandbox: SandboxHandle,
    *,
    method: str = "auto",
    portable: bool = False,
    max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
) -> Snapshot:
    """The parent's state as a :class:`Snapshot` (see the module docstring)."""
    _refuse_local(sandbox)
    if max_bytes <= 0:
        raise ConfigError(f"max_snapshot_bytes must be > 0, got {max_bytes}")
    info = await _check_alive(sandbox)
    config = _config_of(sandbox)
    names = list(info.get("sessions") or [])
    snap_id = uuid.uuid4().hex[:12]
    if _resolve(sandbox, config, method, portable, fork=False) == "image":
        sessions = await capture_sessions(sandbox, names)
        commit: Callable[[], Awaitable[tuple[str, ImageDeleter]]] = sandbox.commit_snapshot  # type: ignore[attr-defined]
        try:
            image, delete_image = await commit()
        except AgenticRolloutError:
            raise
        except Exception as exc:
            raise ForkError(f"cannot snapshot {sandbox.describe()}: commit failed: {exc}") from exc
        return Snapshot(
            id=snap_id,
            backend=str(getattr(config, "type", sandbox.backend)),
            kind="image",
            config=config,
            image=image,
            delete_image=delete_image,
            sessions=sessions,
            source=sandbox.name,
            base=sandbox.restore_from,
        )
    # the sessions are read while the changes stream out (both in the parent)
    captured, archived = await asyncio.gather(
        capture_sessions(sandbox, names),
        _diff_to_file(sandbox, info, max_bytes, snap_id),
        return_exceptions=True,
    )
    if isinstance(archived, BaseException):
        raise archived
    path, include, size = archived
    if isinstance(captured, BaseException):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise captured
    return Snapshot(
        id=snap_id,
        backend=str(getattr(config, "type", sandbox.backend)),
        kind="diff",
        config=config,
        archive=path,
        include=include,
        size=size,
        sessions=captured,
        source=sandbox.name,
    )


def _refuse_local(sandbox: SandboxHandle) -> None:
    if sandbox.backend == "local":
        raise ForkError(
            f"cannot fork or snapshot {sandbox.describe()}: the local backend has no isolation "
            "(children would share the host's directories); use docker or kubernetes"
        )


async def _start_all(children: list[SandboxHandle], what: str) -> None:
    """Start every child; on any failure (or cancellation) all of them are closed."""
    tasks = [asyncio.ensure_future(c.start()) for c in children]
    try:
        results = await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
    except asyncio.CancelledError:
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in children), return_exceptions=True)
        raise
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await asyncio.gather(*(c.close() for c in children), return_exceptions=True)
        raise ForkError(
            f"{what}: {len(failed)} of {len(children)} children failed to start; the others "
            f"were removed. First error: {failed[0]}"
        ) from failed[0]


async def fork(
    sandbox: SandboxHandle,
    n: int,
    *,
    into: Sequence[SandboxHandle] | None = None,
    method: str = "auto",
    portable: bool = False,
    max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
) -> list[SandboxHandle]:
    """n started copies of ``sandbox``; on any failure the ones made are removed."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ForkError(f"fork of {sandbox.describe()}: n must be an integer >= 1, got {n!r}")
    _refuse_local(sandbox)
    if max_bytes <= 0:
        raise ConfigError(f"max_snapshot_bytes must be > 0, got {max_bytes}")
    what = f"fork of {n} from {sandbox.describe()}"
    if into is not None:
        if len(into) != n:
            raise ForkError(f"fork: into= holds {len(into)} sandboxes for n={n}")
        image = getattr(_config_of(sandbox), "image", None)
        for blank in into:
            if blank is sandbox or blank.backend != sandbox.backend:
                raise ForkError(
                    f"fork: into= takes started {sandbox.backend} sandboxes other than the parent"
                )
            other = getattr(_config_of(blank), "image", None)
            if image is not None and other is not None and other != image:
                raise ForkError(
                    f"fork: into= sandbox {blank.describe()} runs image {other}, the parent "
                    f"{image}: the parent's changes apply to the image it started from"
                )
            await _check_alive(blank)
        await fill(sandbox, list(into), max_bytes=max_bytes)
        return list(into)
    limit = admission.controller(sandbox.backend).settings.max_live
    if n + 1 > limit:  # the parent holds a slot while its children start
        raise ForkError(
            f"{what}: {n} children plus the parent exceed the {sandbox.backend} admission "
            f"limit max_live={limit}"
        )
    config = _config_of(sandbox)
    if _resolve(sandbox, config, method, portable, fork=True) == "diff":
        await _check_alive(sandbox)
        # The changes are read into a host file while the children start (the start is most
        # of the time), then written into each. Children of the parent's own image (a
        # committed snapshot's, when it came from one); what was restored into the parent is
        # part of its changes since it started.
        taking = asyncio.ensure_future(take_snapshot(sandbox, method="diff", max_bytes=max_bytes))
        children: list[SandboxHandle] = [config.build() for _ in range(n)]  # type: ignore[attr-defined]
        try:
            await _start_all(children, what)
        except BaseException:
            taking.cancel()
            with contextlib.suppress(BaseException):
                await (await taking).delete()
            raise
        try:
            snap = await taking
        except BaseException:
            await asyncio.gather(*(c.close() for c in children), return_exceptions=True)
            raise
        try:
            await asyncio.gather(*(restore(c, snap) for c in children))
        except BaseException:
            await asyncio.gather(*(c.close() for c in children), return_exceptions=True)
            raise
        finally:
            await snap.delete()
        return children
    snap = await take_snapshot(sandbox, method="image", max_bytes=max_bytes)
    lease = _Lease(snap, n)
    children = [SnapshotConfig(snap, {}).build() for _ in range(n)]
    for child in children:
        child.after_close.append(lease.release)
    await _start_all(children, what)
    return children


class _Lease:
    """A fork's snapshot is removed once each of its n children closed (or failed)."""

    def __init__(self, snapshot: Snapshot, n: int) -> None:
        self.snapshot = snapshot
        self.left = n

    async def release(self) -> None:
        self.left -= 1
        if self.left == 0:
            await self.snapshot.delete()


__all__ = [
    "DEFAULT_MAX_SNAPSHOT_BYTES",
    "LABEL_KIND",
    "ImageDeleter",
    "SessionState",
    "Snapshot",
    "SnapshotConfig",
    "capture_sessions",
    "fork",
    "restore",
    "restore_sessions",
    "take_snapshot",
]
