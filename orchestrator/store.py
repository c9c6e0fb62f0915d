"""JSONL trajectory store: one line per finished trajectory, written atomically, resumable.

Each trajectory is appended as one line with a single ``write`` on an ``O_APPEND`` descriptor
and fsynced. If the write fails part-way (disk full) the file is truncated back to where it
was, so it never holds half a line from us. On open, a trailing partial line (a crash in the
middle of a write by some other process) is cut off and reported. A request id is never written
twice: ids already in the file, or written by this process, are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from orchestrator.exceptions import AgenticRolloutError
from orchestrator.trajectory import Trajectory

log = logging.getLogger(__name__)


class StoreError(AgenticRolloutError, OSError):
    """The trajectory file could not be written; what was already in it is intact."""


class TrajectoryStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._ids: set[str] = set()
        #: lines that could not be read when the store was opened (line number, reason)
        self.bad_lines: list[tuple[int, str]] = []
        self._open()

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning(
                "%s: removing a partial last line (%d bytes) left by an interrupted write",
                self.path,
                len(data) - keep,
            )
            with open(self.path, "r+b") as f:
                f.truncate(keep)
            data = data[:keep]
        for number, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rid = json.loads(line)["request_id"]
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_lines.append((number, f"{type(exc).__name__}: {exc}"))
                continue
            self._ids.add(str(rid))
        if self.bad_lines:
            log.warning(
                "%s: %d unreadable line(s) skipped: %s",
                self.path,
                len(self.bad_lines),
                self.bad_lines[:3],
            )

    def done_ids(self) -> set[str]:
        with self._lock:
            return set(self._ids)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._ids

    def append(self, trajectory: Trajectory) -> bool:
        """Write one trajectory; False if its id is already stored (nothing written)."""
        line = (trajectory.to_json() + "\n").encode("utf-8")
        with self._lock:
            if trajectory.request_id in self._ids:
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
                        f"{exc.strerror}; the {len(self._ids)} trajectories already there are "
                        "intact"
                    ) from exc
            finally:
                os.close(fd)
            self._ids.add(trajectory.request_id)
        return True

    async def aappend(self, trajectory: Trajectory) -> bool:
        return await asyncio.to_thread(self.append, trajectory)

    def __iter__(self) -> Iterator[Trajectory]:
        return read_trajectories(self.path)

    def load(self) -> dict[str, Trajectory]:
        return {t.request_id: t for t in self}


def read_trajectories(path: str | os.PathLike[str]) -> Iterator[Trajectory]:
    """Trajectories from a JSONL file, skipping unreadable lines (they are logged)."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip() or not line.endswith("\n"):
                continue
            try:
                yield Trajectory.from_dict(json.loads(line))
            except (ValueError, TypeError) as exc:
                log.warning("%s:%d: unreadable trajectory skipped: %s", p, number, exc)
