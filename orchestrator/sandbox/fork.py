"""Fork and snapshot: copy a prepared sandbox into new, independent ones.

``await sandbox.fork(n)`` returns n started sandboxes holding the parent's filesystem and, for
each of the parent's bash sessions, its cwd and exported environment; ``await
sandbox.snapshot()`` returns a :class:`Snapshot` from which ``sandbox_config(...,
from_snapshot=snap)`` starts any number later. Two ways to copy the filesystem:

* **image** (Docker): ``docker commit`` of the container — its whole writable layer, wherever
  the setup wrote (site-packages included). The image carries the sandbox labels plus
  ``agentic-rollout.kind=snapshot`` and is reaped by ``gc`` like a container (expired, or its
  orchestrator process gone). A fork's image is removed once its last child is closed.
  Not used for ``read_only`` sandboxes (the work directory is a volume, not in the layer).
* **archive** (every other backend, and any ``into=`` fork): the work directory (the config's
  ``workdir``, else the agent's cwd) streamed out with the agent's ``tar.get`` into a host temp
  file, then emptied and refilled in each child with ``tar.put``. Its size is measured in the
  parent first (an ``os.walk`` of sizes that stops at the cap) so an oversized work directory
  fails in well under a second with :class:`SnapshotTooLargeError`, before a byte moves.
  Only the work directory travels: files written elsewhere are not carried.

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
#: sums file sizes under argv[1], exits 3 as soon as the sum passes argv[2]
_MEASURE = (
    "import os,sys\n"
    "r,cap,t,n=sys.argv[1],int(sys.argv[2]),0,0\n"
    "for d,ds,fs in os.walk(r):\n"
    " for f in fs+ds:\n"
    "  n+=1\n"
    "  try:t+=os.lstat(os.path.join(d,f)).st_size\n"
    "  except OSError:pass\n"
    "  if t>cap:print(t,n);sys.exit(3)\n"
    "print(t,n)"
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
    kind: Literal["image", "archive"]
    #: the parent's backend config (children start from it)
    config: Any
    #: kind "image": the Docker image id
    image: str | None = None
    #: kind "image": removes it (given by the backend that committed it)
    delete_image: ImageDeleter | None = Field(default=None, exclude=True, repr=False)
    #: kind "archive": the host file holding the work directory's tar
    archive: str | None = None
    #: kind "archive": the absolute work directory it restores
    workdir: str | None = None
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
        if self.kind == "archive" and self.archive:
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
        result = await sandbox.run("builtin true", session=s.name, cwd=s.cwd, env=s.env, timeout=60)
        if not result.ok:
            raise ForkError(
                f"{sandbox.describe()}: session {s.name!r} could not be restored in {s.cwd}: "
                f"{result.output[-300:]}"
            )


def _workdir(sandbox: SandboxHandle, info: dict[str, Any]) -> str:
    cfg = getattr(sandbox, "config", None)
    workdir = str(getattr(cfg, "workdir", None) or info.get("cwd") or "")
    if not workdir.startswith("/") or posixpath.normpath(workdir) == "/":
        raise ForkError(
            f"{sandbox.describe()}: the portable fork streams the work directory, and "
            f"{workdir or '(none)'!r} is not one (set the sandbox's workdir)"
        )
    return posixpath.normpath(workdir)


async def _archive(
    sandbox: SandboxHandle, info: dict[str, Any], max_bytes: int, snap_id: str
) -> tuple[str, str, int]:
    """(host tar path, workdir, bytes): the work directory, measured against the cap first."""
    workdir = _workdir(sandbox, info)
    measured = await sandbox.exec(
        [_python(sandbox), "-c", _MEASURE, workdir, str(max_bytes)], timeout=120
    )
    if measured.exit_code == 3:
        total, files = measured.stdout.split()[:2]
        raise SnapshotTooLargeError(
            f"cannot snapshot {sandbox.describe()}: its work directory {workdir} holds more "
            f"than the portable snapshot cap of {human_size(max_bytes)} (passed it at "
            f"{human_size(int(total))} after {files} entries; max_snapshot_bytes). Nothing was "
            "copied; shrink the work directory, raise the cap, or use the Docker backend "
            "(image snapshots have no such cap)"
        )
    if measured.exit_code != 0:
        raise ForkError(
            f"cannot measure {workdir} in {sandbox.describe()}: {measured.stderr[-300:]}"
        )
    folder = os.path.join(tempfile.gettempdir(), "agentic-rollout-snapshots")
    await asyncio.to_thread(os.makedirs, folder, 0o700, True)
    path = os.path.join(folder, f"{snap_id}.tar")
    size = 0
    out = await asyncio.to_thread(open, path, "wb")
    try:
        # tar headers and padding add to the measured sizes: the cap is on the content
        # members relative to the work directory ("./..."), extracted into the child's
        # gzip: compressed once in the parent, it is n times fewer bytes through the streams
        async for chunk in sandbox.download_tar(
            ["."], base=workdir, compress=True, max_bytes=max_bytes + (64 << 20)
        ):
            size += len(chunk)
            await asyncio.to_thread(out.write, chunk)
    except BaseException:
        await asyncio.to_thread(out.close)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    await asyncio.to_thread(out.close)
    return path, workdir, size


async def _file_chunks(path: str) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(f.read, 256 * 1024):
            yield chunk
    finally:
        await asyncio.to_thread(f.close)


async def restore(sandbox: SandboxHandle, snapshot: Snapshot) -> None:
    """Put a snapshot's work directory (archive kind) and sessions into a started sandbox."""
    if snapshot.deleted:
        raise ForkError(f"snapshot {snapshot.id} of {snapshot.source} was deleted")
    if snapshot.kind == "archive" and snapshot.archive and snapshot.workdir:
        workdir = snapshot.workdir
        await sandbox.mkdir(workdir)
        # emptied through the agent's own file calls: no process spawned per child
        entries = await sandbox.list_dir(workdir, depth=1, max_entries=100000)
        await asyncio.gather(
            *(
                sandbox.remove(e.path, recursive=e.type == "directory")
                for e in entries
                if e.path.rstrip("/") != workdir
            )
        )
        await sandbox.upload_tar(_file_chunks(snapshot.archive), workdir)
    await restore_sessions(sandbox, snapshot.sessions)


async def take_snapshot(
    sandbox: SandboxHandle,
    *,
    portable: bool = False,
    max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
) -> Snapshot:
    """The parent's state as a :class:`Snapshot` (see the module docstring)."""
    if sandbox.backend == "local":
        raise ForkError(
            f"cannot fork or snapshot {sandbox.describe()}: the local backend has no isolation "
            "(children would share the host's directories); use docker or kubernetes"
        )
    if max_bytes <= 0:
        raise ConfigError(f"max_snapshot_bytes must be > 0, got {max_bytes}")
    info = await _check_alive(sandbox)
    config = _config_of(sandbox)
    names = list(info.get("sessions") or [])
    snap_id = uuid.uuid4().hex[:12]
    commit: Callable[[], Awaitable[tuple[str, ImageDeleter]]] | None = getattr(
        sandbox, "commit_snapshot", None
    )
    if commit is not None and not portable and not getattr(config, "read_only", False):
        sessions = await capture_sessions(sandbox, names)
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
    # the sessions are read while the work directory streams out (both in the parent)
    captured, archived = await asyncio.gather(
        capture_sessions(sandbox, names),
        _archive(sandbox, info, max_bytes, snap_id),
        return_exceptions=True,
    )
    if isinstance(archived, BaseException):
        raise archived
    path, workdir, size = archived
    if isinstance(captured, BaseException):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise captured
    return Snapshot(
        id=snap_id,
        backend=str(getattr(config, "type", sandbox.backend)),
        kind="archive",
        config=config,
        archive=path,
        workdir=workdir,
        size=size,
        sessions=captured,
        source=sandbox.name,
    )


async def fork(
    sandbox: SandboxHandle,
    n: int,
    *,
    into: Sequence[SandboxHandle] | None = None,
    portable: bool = False,
    max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
) -> list[SandboxHandle]:
    """n started copies of ``sandbox``; on any failure the ones made are removed."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ForkError(f"fork of {sandbox.describe()}: n must be an integer >= 1, got {n!r}")
    if into is not None:
        if len(into) != n:
            raise ForkError(f"fork: into= holds {len(into)} sandboxes for n={n}")
        for blank in into:
            if blank is sandbox or blank.backend != sandbox.backend:
                raise ForkError(
                    f"fork: into= takes started {sandbox.backend} sandboxes other than the parent"
                )
            await _check_alive(blank)
    else:
        limit = admission.controller(sandbox.backend).settings.max_live
        if n + 1 > limit:  # the parent holds a slot while its children start
            raise ForkError(
                f"fork of {n} from {sandbox.describe()}: {n} children plus the parent exceed "
                f"the {sandbox.backend} admission limit max_live={limit}"
            )
    snap = await take_snapshot(sandbox, portable=portable or into is not None, max_bytes=max_bytes)
    lease = _Lease(snap, n)
    try:
        if into is not None:
            children = list(into)
            await asyncio.gather(*(restore(c, snap) for c in children))
            await snap.delete()  # the archive is copied: nothing else needs it
            return children
        children = [SnapshotConfig(snap, {}).build() for _ in range(n)]
        for child in children:
            child.after_close.append(lease.release)
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
                f"fork of {n} from {sandbox.describe()}: {len(failed)} of {n} children failed "
                f"to start; the others were removed. First error: {failed[0]}"
            ) from failed[0]
        if snap.kind == "archive":  # restored into every child already
            await snap.delete()
        return children
    except BaseException:
        if not snap.deleted and into is not None:
            await snap.delete()
        raise


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
