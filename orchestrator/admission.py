"""Admission control: one process-wide gate per backend between every caller and sandbox starts.

Every ``Sandbox.start()`` (the runner, the warm pool, the VERL loop, a fork - there is no
other way in) first asks the controller of its backend for a :class:`Permit`, which bounds:

- ``max_live``: sandboxes alive at once in this process (a permit is held until ``close()``);
- ``max_starting``: starts in flight at once (released as soon as the agent answered, or the
  start failed);
- ``rate`` / ``burst``: sandbox creations per second, a token bucket;
- ``api_rate`` / ``api_burst`` (the Kubernetes backends): every API-server request they send
  (creates, reads and status polls, list and watch requests, deletes, exec handshakes, every
  retry) is permitted by :class:`ApiRateLimiter` in the sending thread, so the API server
  never counts more than ``api_rate`` requests in any one second, however many trajectories
  start at once; a request refused with ``429`` waits its ``Retry-After`` and asks again.

Waiters are served first in, first out. The controllers are per *process*, not per event
loop or per ``AgenticRollout``: the state is guarded by a thread lock and a waiter is woken on
its own loop, so the VERL workers' loops, pytest's loop-per-test and the sync Kubernetes
client threads all share one set of counters. The defaults are safe for one laptop; for a
cluster see docs/kubernetes.md ("agent-sandbox backend and admission").

Depends on pydantic and the standard library only (metrics read it, never the reverse).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.exceptions import ConfigError, SandboxAdmissionError


class AdmissionSettings(BaseModel):
    """Limits of one backend in this process."""

    model_config = ConfigDict(extra="forbid")

    max_live: int = Field(64, ge=1, description="sandboxes alive at once")
    max_starting: int = Field(16, ge=1, description="starts in flight at once")
    rate: float = Field(50.0, gt=0, description="sandbox creations per second")
    burst: int = Field(16, ge=1, description="creations allowed back to back")
    api_rate: float | None = Field(None, gt=0, description="API-server requests per second")
    api_burst: int = Field(10, ge=1)
    queue_timeout: float = Field(
        3600.0, gt=0, description="seconds a start may wait for admission before it fails"
    )


#: safe on one laptop; raise them for a cluster (docs/kubernetes.md)
DEFAULTS: dict[str, AdmissionSettings] = {
    "docker": AdmissionSettings(max_live=64, max_starting=16, rate=50, burst=16),
    "kodo": AdmissionSettings(max_live=64, max_starting=16, rate=50, burst=16),
    "local": AdmissionSettings(max_live=64, max_starting=16, rate=50, burst=16),
    # pod creations: each is a scheduling + image pull + kubelet start on the cluster; every
    # API request (create, status polls, exec handshake, delete, retries) counts to api_rate
    "kubernetes": AdmissionSettings(
        max_live=128, max_starting=32, rate=10, burst=10, api_rate=100, api_burst=50
    ),
    # claims are binds: more of them per second; every API request (create, list/watch,
    # delete, the exec handshake, retries) counted against api_rate
    "agent-sandbox": AdmissionSettings(
        max_live=128, max_starting=64, rate=20, burst=20, api_rate=40, api_burst=20
    ),
}


class TokenBucket:
    """Reservations on a token bucket: ``reserve()`` takes a token now (the balance may go
    negative) and returns how long to wait before using it, so any number of threads and event
    loops can share it and the n-th request after the burst goes out at ``n / rate``."""

    def __init__(self, rate: float, burst: int) -> None:
        self._lock = threading.Lock()
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def configure(self, rate: float, burst: int) -> None:
        with self._lock:
            self._refill(time.monotonic())
            self.rate, self.burst = rate, burst
            self._tokens = min(self._tokens, float(burst))

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def reserve(self) -> float:
        """Take one token; seconds to wait before acting on it."""
        with self._lock:
            now = time.monotonic()
            self._refill(now)
            self._tokens -= 1
            return max(0.0, -self._tokens / self.rate)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def acquire_sync(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)


class ApiRateLimiter:
    """The API-server request limit of one backend: at most ``rate`` requests in any window of
    one second as the API server counts them, at most ``burst`` of them back to back.

    A token bucket alone bounds when requests are *scheduled*; a thread woken late, or a
    request queued behind a busy thread pool, then goes out together with later ones and the
    server sees more than the rate (172 in one second against 150/s + 10 in the control-plane
    load test). So the bucket only spaces requests, and :meth:`acquire_sync`, called by the
    thread that sends the request just before its bytes go out, also keeps a log of when
    requests actually left and admits one only while fewer than ``rate`` left in the last
    ``1 + GUARD`` seconds. ``GUARD`` covers the time from that permit to the server reading the
    request (serialising, a busy GIL, the server's own accept): a window the server measures
    can only hold requests permitted within ``1 + GUARD`` s of each other.

    ``rate`` None: unlimited (requests are still counted).
    """

    #: seconds added to the 1 s window for the permit -> server arrival delay
    GUARD = 0.25

    def __init__(self, rate: float | None, burst: int) -> None:
        self._lock = threading.Lock()
        self.rate = rate
        self.bucket = TokenBucket(rate or 1e9, burst)
        self._sent: deque[float] = deque()
        #: requests permitted so far (all of them, limited or not)
        self.count = 0
        #: permit times, when a caller sets a list here (the load test's client-side view)
        self.record: list[float] | None = None

    @property
    def cap(self) -> int | None:
        """Requests allowed in one window (None: unlimited)."""
        return None if self.rate is None else max(1, int(self.rate))

    def configure(self, rate: float | None, burst: int) -> None:
        with self._lock:
            self.rate = rate
        self.bucket.configure(rate or 1e9, burst)

    def acquire_sync(self) -> None:
        """Block until one request may leave now (call it from the sending thread, as late
        as possible before the send)."""
        if self.rate is not None:
            delay = self.bucket.reserve()
            if delay > 0:
                time.sleep(delay)
        window = 1.0 + self.GUARD
        while True:
            with self._lock:
                now = time.monotonic()
                cap = self.cap
                while self._sent and self._sent[0] <= now - window:
                    self._sent.popleft()
                if cap is None or len(self._sent) < cap:
                    if cap is not None:
                        self._sent.append(now)
                    self.count += 1
                    if self.record is not None:
                        self.record.append(now)
                    return
                wait = self._sent[0] + window - now
            time.sleep(max(wait, 0.001))


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    granted: bool = False


@dataclass
class AdmissionStats:
    admitted: int = 0
    rejected: int = 0
    queue_seconds_total: float = 0.0
    max_live_seen: int = 0
    max_starting_seen: int = 0


class Permit:
    """One sandbox's admission: ``started()`` once its start ends, ``release()`` when closed."""

    def __init__(self, controller: AdmissionController, queue_wait: float) -> None:
        self.controller = controller
        #: seconds this start waited in the queue and for a creation token
        self.queue_wait = queue_wait
        self._starting = True
        self._live = True

    def started(self) -> None:
        if self._starting:
            self._starting = False
            self.controller._done_starting()

    def release(self) -> None:
        self.started()
        if self._live:
            self._live = False
            self.controller._done_live()


@dataclass
class AdmissionController:
    """The gate of one backend; get it with :func:`controller`, never build one per caller."""

    backend: str
    settings: AdmissionSettings
    live: int = 0
    starting: int = 0
    stats: AdmissionStats = field(default_factory=AdmissionStats)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self.creations = TokenBucket(self.settings.rate, self.settings.burst)
        self.api = ApiRateLimiter(self.settings.api_rate, self.settings.api_burst)

    # ---- read by metrics

    @property
    def queued(self) -> int:
        return len(self._queue)

    def configure(self, settings: AdmissionSettings) -> None:
        """New limits; waiters are re-examined at once (nothing live is revoked)."""
        with self._lock:
            self.settings = settings
            self.creations.configure(settings.rate, settings.burst)
            self.api.configure(settings.api_rate, settings.api_burst)
            self._dispatch_locked()

    # ---- admission

    async def admit(self) -> Permit:
        """Wait (FIFO) for a live slot, a start slot and a creation token."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        waiter = _Waiter(loop, loop.create_future())
        with self._lock:
            self._queue.append(waiter)
            self._dispatch_locked()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), self.settings.queue_timeout)
        except BaseException as exc:
            with self._lock:
                if waiter.granted:  # granted while we were being cancelled: give it back
                    self._release_locked(live=True, starting=True)
                else:
                    self._queue.remove(waiter)
                    self.stats.rejected += 1
            if isinstance(exc, asyncio.TimeoutError):
                raise SandboxAdmissionError(
                    f"{self.backend}: no sandbox admitted within "
                    f"{self.settings.queue_timeout:g}s ({self.live} live of "
                    f"{self.settings.max_live}, {self.starting} starting of "
                    f"{self.settings.max_starting}, {self.queued} queued)"
                ) from None
            raise
        permit = await self._with_token(t0)
        self.stats.queue_seconds_total += permit.queue_wait
        return permit

    async def try_admit(self) -> Permit | None:
        """A permit only if a slot is free now and nobody is queued (the warm pool's refills:
        they must never hold slots that waiting trajectories need); else None."""
        t0 = time.monotonic()
        with self._lock:
            s = self.settings
            if self._queue or self.live >= s.max_live or self.starting >= s.max_starting:
                return None
            self.live += 1
            self.starting += 1
            self.stats.admitted += 1
            self.stats.max_live_seen = max(self.stats.max_live_seen, self.live)
            self.stats.max_starting_seen = max(self.stats.max_starting_seen, self.starting)
        return await self._with_token(t0)

    async def _with_token(self, t0: float) -> Permit:
        """The permit for slots already taken, once the creation rate gives a token (the
        token comes after the slots: a queued start never holds a token it cannot use); the
        slots are given back if the wait is cancelled."""
        permit = Permit(self, 0.0)
        try:
            await self.creations.acquire()
        except BaseException:
            permit.release()
            raise
        permit.queue_wait = time.monotonic() - t0
        return permit

    def _dispatch_locked(self) -> None:
        s = self.settings
        while self._queue and self.live < s.max_live and self.starting < s.max_starting:
            waiter = self._queue.popleft()
            if waiter.future.done():  # cancelled; its admit() removes nothing more
                continue
            waiter.granted = True
            self.live += 1
            self.starting += 1
            self.stats.admitted += 1
            self.stats.max_live_seen = max(self.stats.max_live_seen, self.live)
            self.stats.max_starting_seen = max(self.stats.max_starting_seen, self.starting)
            try:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            except RuntimeError:  # its loop is closed: nobody will use the slots
                self._release_locked(live=True, starting=True, dispatch=False)

    def _release_locked(self, *, live: bool, starting: bool, dispatch: bool = True) -> None:
        if live:
            self.live -= 1
        if starting:
            self.starting -= 1
        if dispatch:
            self._dispatch_locked()

    def _done_starting(self) -> None:
        with self._lock:
            self._release_locked(live=False, starting=True)

    def _done_live(self) -> None:
        with self._lock:
            self._release_locked(live=True, starting=False)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_controllers: dict[str, AdmissionController] = {}
_controllers_lock = threading.Lock()


def controller(backend: str) -> AdmissionController:
    """The process-wide controller of ``backend`` (created with its defaults on first use)."""
    with _controllers_lock:
        found = _controllers.get(backend)
        if found is None:
            settings = DEFAULTS.get(backend, AdmissionSettings())
            found = _controllers[backend] = AdmissionController(backend, settings.model_copy())
        return found


def merge_admission_defaults(value: Any) -> Any:
    """For config validators: each backend's partial dict laid over that backend's defaults."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for backend, given in value.items():
        if isinstance(given, dict):
            base = DEFAULTS.get(str(backend), AdmissionSettings())
            out[backend] = {**base.model_dump(), **given}
        else:
            out[backend] = given
    return out


def configure(backend: str, settings: AdmissionSettings | dict[str, Any]) -> AdmissionController:
    """Set the limits of ``backend`` for the whole process; fields not given keep the
    backend's defaults."""
    if isinstance(settings, dict):
        base = DEFAULTS.get(backend, AdmissionSettings())
        try:
            settings = AdmissionSettings.model_validate({**base.model_dump(), **settings})
        except ValueError as exc:
            raise ConfigError(f"invalid admission settings for {backend!r}: {exc}") from None
    ctl = controller(backend)
    ctl.configure(settings)
    return ctl


def configure_all(per_backend: dict[str, AdmissionSettings | dict[str, Any]]) -> None:
    for backend, settings in per_backend.items():
        configure(backend, settings)


def controllers() -> list[AdmissionController]:
    with _controllers_lock:
        return list(_controllers.values())


__all__ = [
    "DEFAULTS",
    "AdmissionController",
    "AdmissionSettings",
    "AdmissionStats",
    "ApiRateLimiter",
    "Permit",
    "TokenBucket",
    "configure",
    "configure_all",
    "controller",
    "controllers",
    "merge_admission_defaults",
]
