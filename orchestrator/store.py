"""JSONL trajectory store: one line per trajectory, written atomically, one writer, resumable.

Each trajectory is appended as one line with a single ``write`` on an ``O_APPEND`` descriptor
and fsynced. If the write fails part-way (disk full) the file is truncated back to where it
was, so it never holds half a line from us.

One writer per output: a run takes an exclusive ``flock`` on ``<file>.lock`` (released by the
kernel when the process dies, so a SIGKILLed run leaves no stale lock) and a second run into
the same file fails at once with :class:`StoreLockedError` naming the holder (pid, host, run
id). Reading needs no lock.

Every line records why its trajectory ended (:class:`~orchestrator.trajectory.Outcome`). A
rerun may *supersede* a stored record (an infrastructure failure retried): the new line is
appended, readers keep the last line of each id, and when the writer releases the file it is
compacted (rewritten atomically) so it again holds one line per id; the superseded lines are
moved to ``<stem>.superseded.jsonl``, never dropped. Opening a store writes nothing: a trailing
partial line (a crash mid-write) is ignored when read and cut off when a writer takes the lock.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.exceptions import StoreError, StoreLockedError
from orchestrator.trajectory import Outcome, Trajectory, infer_outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredRecord:
    """What resuming needs to know about a stored trajectory."""

    request_id: str
    outcome: Outcome
    attempt: int
    #: line number in the file when it was read (0: written by this process)
    line: int


def _record(data: dict[str, object], line: int) -> StoredRecord:
    rid = str(data["request_id"])
    raw = data.get("outcome")
    # a version-1 line has none: inferred from status and errors
    outcome = Outcome(raw) if raw is not None else infer_outcome(Trajectory.model_validate(data))
    attempt = data.get("attempt", 1)
    return StoredRecord(rid, outcome, attempt if isinstance(attempt, int) else 1, line)


class TrajectoryStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.superseded_path = self.path.with_name(self.path.stem + ".superseded.jsonl")
        self._lock = threading.Lock()
        self._records: dict[str, StoredRecord] = {}
        #: ids with more than one line in the file (compaction removes the older ones)
        self._stale: set[str] = set()
        self._lock_fd: int | None = None
        #: acquire() calls not yet released (one store object may serve overlapping runs)
        self._holders = 0
        #: seconds a single append outside a run waits for another writer to finish
        self.append_lock_wait = 10.0
        #: lines that could not be read when the store was opened (line number, reason)
        self.bad_lines: list[tuple[int, str]] = []
        self.partial_tail = 0
        #: (inode, size, mtime) of the file as last read or written by us: unchanged means no
        #: other process wrote, so taking the lock need not re-read it
        self._stat: tuple[int, int, int] | None = None
        self.refresh()

    def _current_stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    # ---- reading

    def refresh(self) -> None:
        """(Re)read the ids and outcomes in the file; writes nothing."""
        records: dict[str, StoredRecord] = {}
        stale: set[str] = set()
        seen = self._current_stat()
        self.bad_lines = []
        self.partial_tail = 0
        try:
            # a device (/dev/null, /dev/full in tests) has no lines to resume from
            data = self.path.read_bytes() if not _special(self.path) else b""
        except FileNotFoundError:
            data = b""
        except IsADirectoryError:
            raise StoreError(
                f"{self.path} is a directory; give a file path (or the directory as "
                "trajectory_save_path: trajectories.jsonl is written inside it)"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from exc
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            self.partial_tail = len(data) - keep
            data = data[:keep]
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = _record(json.loads(line), number)
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_lines.append((number, f"{type(exc).__name__}: {exc}"))
                continue
            if rec.request_id in records:
                stale.add(rec.request_id)
            records[rec.request_id] = rec
        with self._lock:
            self._records = records
            self._stale = stale
            self._stat = seen
        if self.partial_tail:
            log.warning(
                "%s: a partial last line (%d bytes) left by an interrupted write is ignored",
                self.path,
                self.partial_tail,
            )
        if self.bad_lines:
            log.warning(
                "%s: %d unreadable line(s) skipped: %s",
                self.path,
                len(self.bad_lines),
                self.bad_lines[:3],
            )

    def done_ids(self) -> set[str]:
        with self._lock:
            return set(self._records)

    def records(self) -> dict[str, StoredRecord]:
        with self._lock:
            return dict(self._records)

    def get(self, request_id: str) -> StoredRecord | None:
        with self._lock:
            return self._records.get(request_id)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._records

    def __iter__(self) -> Iterator[Trajectory]:
        return read_trajectories(self.path)

    def load(self) -> dict[str, Trajectory]:
        return {t.request_id: t for t in self}

    # ---- the writer's lock

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def acquire(self, *, run_id: str = "", wait: float = 0.0) -> None:
        """Become the one writer of this file; repair what a crash left. ``wait``: seconds to
        keep trying while another process holds it (0: fail at once, as a run does)."""
        if self._lock_fd is not None:
            self._holders += 1
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"output {self.path.parent} is not writable ({exc.strerror}); nothing was run "
                "and nothing was written"
            ) from exc
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StoreLockedError(
                    f"{self.path} is being written by another run ({_describe_holder(holder)}); "
                    "wait for it to finish or write to another output"
                ) from None
            raise StoreError(f"cannot lock {self.lock_path}: {exc.strerror}") from exc
        info = json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "run_id": run_id,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info + b"\n", 0)
        except OSError as exc:  # a full disk: the lock holds without the note of who holds it
            log.warning("%s: cannot record the lock holder: %s", self.lock_path, exc.strerror)
        self._lock_fd = fd
        self._holders = 1
        try:
            if self._current_stat() != self._stat:
                self.refresh()  # another run wrote since we read it
            self._repair_tail()
            if self._stale:
                self._compact()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Compact superseded lines away, then let another run write."""
        fd = self._lock_fd
        if fd is None:
            return
        self._holders -= 1
        if self._holders > 0:
            return
        try:
            if self._stale:
                self._compact()
        except StoreError as exc:  # the lines are all there; readers keep the last per id
            log.error("%s: not compacted: %s", self.path, exc)
        finally:
            self._lock_fd = None
            os.close(fd)  # closing the last descriptor drops the flock

    def _repair_tail(self) -> None:
        if not self.partial_tail:
            return
        size = self.path.stat().st_size
        log.warning(
            "%s: removing a partial last line (%d bytes) left by an interrupted write",
            self.path,
            self.partial_tail,
        )
        with open(self.path, "r+b") as f:
            f.truncate(size - self.partial_tail)
            os.fsync(f.fileno())
        self.partial_tail = 0

    def _compact(self) -> None:
        """Rewrite the file with the last line of each id; older lines go to the side file."""
        with self._lock:
            # decided from the bytes on disk, not from memory: the last line of each id stays
            lines = [ln for ln in self.path.read_bytes().splitlines(keepends=True) if ln.strip()]
            ids: list[str | None] = []
            for ln in lines:
                try:
                    ids.append(str(json.loads(ln)["request_id"]))
                except (ValueError, KeyError, TypeError):
                    ids.append(None)  # unreadable lines stay where they are, for a human
            last = {rid: i for i, rid in enumerate(ids) if rid is not None}
            kept: list[bytes] = []
            moved: list[bytes] = []
            for i, (rid, ln) in enumerate(zip(ids, lines, strict=True)):
                (kept if rid is None or last[rid] == i else moved).append(ln)
            tmp = self.path.with_name(self.path.name + ".compact.tmp")
            try:
                if moved:
                    with open(self.superseded_path, "ab") as side:
                        side.write(b"".join(moved))
                        os.fsync(side.fileno())
                with open(tmp, "wb") as f:
                    f.write(b"".join(kept))
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
                self._stat = self._current_stat()
                dirfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise StoreError(f"cannot compact {self.path}: {exc.strerror}") from exc
            self._stale = set()
        if moved:
            log.info(
                "%s: %d superseded line(s) moved to %s",
                self.path,
                len(moved),
                self.superseded_path,
            )

    # ---- writing

    def append(self, trajectory: Trajectory, *, supersede: bool = False) -> bool:
        """Write one trajectory; False if its id is stored and ``supersede`` is off."""
        if self._lock_fd is None:  # a single write outside a run: hold the lock for it
            # (several processes appending one at a time - VERL workers - take turns; a run
            # holding the file makes this fail after the wait, naming the run)
            self.acquire(wait=self.append_lock_wait)
            try:
                return self.append(trajectory, supersede=supersede)
            finally:
                self.release()
        if trajectory.outcome is None:
            trajectory.outcome = infer_outcome(trajectory)
        line = (trajectory.to_json() + "\n").encode("utf-8")
        with self._lock:
            old = self._records.get(trajectory.request_id)
            if old is not None and not supersede:
                log.warning(
                    "%s: trajectory %r already stored; not writing it twice",
                    self.path,
                    trajectory.request_id,
                )
                return False
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot open {self.path}: {exc.strerror}") from exc
            try:
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError as exc:
                    try:
                        os.ftruncate(fd, size)  # never leave half a line behind
                    except OSError:
                        pass
                    raise StoreError(
                        f"cannot write trajectory {trajectory.request_id!r} to {self.path}: "
                        f"{exc.strerror}; the {len(self._records)} trajectories already there "
                        "are intact"
                    ) from exc
                st = os.fstat(fd)
                self._stat = (st.st_ino, st.st_size, st.st_mtime_ns)
            finally:
                os.close(fd)
            self._records[trajectory.request_id] = StoredRecord(
                trajectory.request_id, trajectory.outcome, trajectory.attempt, 0
            )
            if old is not None:
                self._stale.add(trajectory.request_id)
        return True

    async def aappend(self, trajectory: Trajectory, *, supersede: bool = False) -> bool:
        return await asyncio.to_thread(self.append, trajectory, supersede=supersede)


def _special(path: Path) -> bool:
    try:
        return not stat.S_ISREG(path.stat().st_mode) and not stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return (
            f"pid {info['pid']} on {info['host']}, run {info.get('run_id') or '?'}, "
            f"since {info.get('since', '?')}"
        )
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


__all__ = [
    "StoreError",
    "StoreLockedError",
    "StoredRecord",
    "TrajectoryStore",
    "read_trajectories",
]


def read_trajectories(path: str | os.PathLike[str]) -> Iterator[Trajectory]:
    """Trajectories from a JSONL file, one per request id (the last line of each wins: a
    retried trajectory supersedes its failed attempt), skipping unreadable lines (logged)."""
    p = Path(path)
    if not p.exists():
        return
    last: dict[str, int] = {}
    with open(p, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                continue
            try:
                last[str(json.loads(line)["request_id"])] = number
            except (ValueError, KeyError, TypeError):
                continue
    wanted = set(last.values())
    with open(p, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or not line.endswith("\n"):
                continue
            try:
                data = json.loads(line)
                if number not in wanted:
                    continue
                yield Trajectory.from_dict(data)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("%s:%d: unreadable trajectory skipped: %s", p, number, exc)
