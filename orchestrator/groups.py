"""Prepared-sandbox groups for loops that see one sample at a time (VERL's agent loop).

GRPO asks for n samples of one prompt, and VERL calls the agent loop once per sample, maybe
in several worker processes. :class:`SnapshotGroups` lets the first sample of a group (same
key) start a sandbox, run the task's ``setup`` once, take a snapshot and close it; that sample
and the next ``size - 1`` with the same key start their own sandbox from the snapshot. The
snapshot is deleted once all ``size`` samples released it, or ``linger`` seconds after the
last one took it (a group split across worker processes never completes here; ``gc`` reaps
what a killed process leaves). The runner's ``group_size`` forks instead (it sees the whole
group at once): orchestrator/runner.py.

Depends on the sandbox package only; no verl import.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.exceptions import ConfigError
from orchestrator.sandbox.fork import Snapshot

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Group:
    key: str
    size: int
    future: asyncio.Future[Snapshot]
    taken: int = 0
    released: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class GroupMember:
    """One sample's share of a group: the snapshot to start from; ``release()`` when done."""

    def __init__(self, owner: SnapshotGroups, group: _Group, index: int) -> None:
        self._owner = owner
        self._group = group
        self.index = index
        self._released = False

    async def snapshot(self) -> Snapshot:
        return await asyncio.shield(self._group.future)

    @property
    def info(self) -> dict[str, Any]:
        return {
            "id": self._group.key,
            "index": self.index,
            "size": self._group.size,
            **self._group.info,
        }

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._owner._release(self._group)


class SnapshotGroups:
    """Groups of ``size`` samples sharing one prepared snapshot, keyed by the caller."""

    def __init__(self, *, linger: float = 600.0) -> None:
        if linger <= 0:
            raise ConfigError(f"linger must be > 0 seconds, got {linger}")
        self.linger = linger
        self._open: dict[str, _Group] = {}
        #: prepares started (what a test observes: setup ran once per group)
        self.prepared = 0

    def join(self, key: str, size: int, prepare: Callable[[], Awaitable[Snapshot]]) -> GroupMember:
        """A member of the open group ``key`` (a new group after ``size`` joined the last)."""
        if size < 1:
            raise ConfigError(f"group size must be >= 1, got {size}")
        group = self._open.get(key)
        if group is None:
            loop = asyncio.get_running_loop()
            group = _Group(key, size, loop.create_future())
            self._open[key] = group
            self.prepared += 1
            task = asyncio.ensure_future(self._prepare(group, prepare))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
        index = group.taken
        group.taken += 1
        if group.taken >= group.size:
            del self._open[key]  # full: the next sample with this key starts a new group
        if group.timer is not None:
            group.timer.cancel()
        group.timer = asyncio.get_running_loop().call_later(
            self.linger, lambda: asyncio.ensure_future(self._expire(group))
        )
        return GroupMember(self, group, index)

    async def _prepare(self, group: _Group, prepare: Callable[[], Awaitable[Snapshot]]) -> None:
        t0 = time.monotonic()
        try:
            snap = await prepare()
        except BaseException as exc:
            group.future.set_exception(exc)
            if self._open.get(group.key) is group:  # later samples of the key try afresh
                del self._open[group.key]
            return
        group.info = {"prepare_seconds": round(time.monotonic() - t0, 3), "snapshot": snap.id}
        group.future.set_result(snap)

    async def _release(self, group: _Group) -> None:
        group.released += 1
        if group.released >= group.size:
            await self._delete(group)

    async def _expire(self, group: _Group) -> None:
        if self._open.get(group.key) is group:
            del self._open[group.key]
        await self._delete(group)

    async def _delete(self, group: _Group) -> None:
        if group.timer is not None:
            group.timer.cancel()
        if group.future.done() and not group.future.cancelled():
            with contextlib.suppress(BaseException):
                await group.future.result().delete()


__all__ = ["GroupMember", "SnapshotGroups"]
