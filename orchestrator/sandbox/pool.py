"""A warm pool: sandboxes started ahead of time, handed out ready, never reused.

Starting a sandbox costs a container create+start and the agent's bootstrap (~100 ms on
Docker, seconds on Kubernetes: scheduling, image pull, exec handshake). With a pool, a
trajectory gets a sandbox that already answered its ping, and the pool starts the next one in
the background while the trajectory runs.

- one queue per distinct sandbox config (image, limits, ...), at most ``size`` ready in each;
- refilled in the background, at most ``max_starting`` starts at a time per config;
- :meth:`WarmPool.acquire` pops a ready sandbox (skipping any that died or idled longer than
  ``max_idle``) or, when none is ready, starts one at once - never waits on the refill;
- a sandbox handed out is the caller's: it is closed (destroyed) after its trajectory, never
  returned to the pool, so no state leaks from one trajectory to the next;
- :meth:`WarmPool.close` (or leaving ``async with``) stops the refill and removes every idle
  sandbox; the usual labels and ``agentic-rollout gc`` cover a killed orchestrator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from orchestrator.exceptions import ConfigError, SandboxAdmissionError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.base import Sandbox

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    values: dict[str, Any]
    ready: deque[tuple[float, Sandbox]] = field(default_factory=deque)
    starting: int = 0
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: set whenever a refill ends (ready or failed): acquire() waits on it
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    deferred: bool = False
    failures: int = 0
    last_error: str | None = None


@dataclass
class PoolStats:
    hits: int = 0
    misses: int = 0
    discarded: int = 0
    started: int = 0
    start_failures: int = 0


class WarmPool:
    def __init__(self, size: int, *, max_starting: int = 2, max_idle: float = 900.0) -> None:
        if size < 1:
            raise ConfigError(f"warm pool size must be >= 1, got {size}")
        if max_starting < 1:
            raise ConfigError(f"max_starting must be >= 1, got {max_starting}")
        self.size = size
        self.max_starting = max_starting
        self.max_idle = max_idle
        self.stats = PoolStats()
        self._slots: dict[str, _Slot] = {}
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()

    @staticmethod
    def key(values: dict[str, Any]) -> str:
        return json.dumps(values, sort_keys=True, default=str)

    def _slot(self, values: dict[str, Any]) -> _Slot:
        if self._closed:
            raise ConfigError("the warm pool is closed")
        key = self.key(values)
        slot = self._slots.get(key)
        if slot is None:
            sandbox_config(values)  # a bad config fails here, not in the background
            slot = self._slots[key] = _Slot(values=dict(values))
            slot.task = asyncio.create_task(self._refill(slot), name=f"warm-pool {key[:60]}")
        return slot

    def warm(self, values: dict[str, Any]) -> None:
        """Start filling the pool for this config now (before the first acquire)."""
        self._slot(values).wake.set()

    def ready(self, values: dict[str, Any]) -> int:
        slot = self._slots.get(self.key(values))
        return len(slot.ready) if slot else 0

    async def acquire(self, values: dict[str, Any]) -> Sandbox:
        """A started sandbox for ``values``; the caller closes it when the trajectory ends."""
        slot = self._slot(values)
        now = time.monotonic()
        while slot.ready:
            born, sandbox = slot.ready.popleft()
            slot.wake.set()
            if not sandbox.connected or now - born > self.max_idle:
                self.stats.discarded += 1
                task = asyncio.create_task(sandbox.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
                continue
            self.stats.hits += 1
            return sandbox
        if slot.starting > 0:
            # refills in flight hold admission slots: wait for one of them rather than queue
            # behind them for a slot of our own (with max_live <= size that never comes)
            slot.landed.clear()
            await slot.landed.wait()
            return await self.acquire(values)
        self.stats.misses += 1
        slot.wake.set()
        return await sandbox_config(values).build().start()

    async def _start_one(self, slot: _Slot) -> None:
        try:
            # never queue for admission: a refill must not take a slot a trajectory waits for
            sandbox = await sandbox_config(slot.values).build().start(queue=False)
        except SandboxAdmissionError:
            slot.deferred = True  # no free slot now; _refill retries after a pause
        except Exception as exc:  # the next acquire starts one itself and raises the real error
            slot.failures += 1
            slot.last_error = f"{type(exc).__name__}: {exc}"
            self.stats.start_failures += 1
            log.warning("warm pool: a sandbox failed to start: %s", slot.last_error)
        else:
            slot.failures = 0
            if self._closed:
                await sandbox.close()
            else:
                self.stats.started += 1
                slot.ready.append((time.monotonic(), sandbox))
        finally:
            slot.starting -= 1
            slot.landed.set()
            slot.wake.set()

    async def _refill(self, slot: _Slot) -> None:
        starts: set[asyncio.Task[None]] = set()
        try:
            while not self._closed:
                while (
                    len(slot.ready) + slot.starting < self.size
                    and slot.starting < self.max_starting
                ):
                    slot.starting += 1
                    task = asyncio.create_task(self._start_one(slot))
                    starts.add(task)
                    task.add_done_callback(starts.discard)
                slot.wake.clear()
                if slot.failures:  # back off after failures instead of spinning
                    await asyncio.sleep(min(30.0, 0.5 * 2 ** min(slot.failures, 6)))
                elif slot.deferred:  # admission was full: look again shortly
                    slot.deferred = False
                    await asyncio.sleep(0.2)
                    continue
                await slot.wake.wait()
        finally:
            if starts:
                await asyncio.gather(*starts, return_exceptions=True)

    async def close(self) -> None:
        """Stop refilling and remove every idle sandbox."""
        if self._closed:
            return
        self._closed = True
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        for slot in self._slots.values():
            slot.wake.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        idle = [sb for slot in self._slots.values() for _, sb in slot.ready]
        for slot in self._slots.values():
            slot.ready.clear()
        await asyncio.gather(*(sb.close() for sb in idle), *self._closing, return_exceptions=True)

    async def __aenter__(self) -> WarmPool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
