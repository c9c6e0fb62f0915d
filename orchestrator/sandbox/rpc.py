"""Host side of the sandbox RPC: JSON lines over one byte stream, many calls in flight.

The client owns one reader task. Each call gets a fresh id and a future; replies are matched by
id, so they may arrive in any order. When the stream ends (container killed, agent crashed)
every pending call fails at once with :class:`SandboxConnectionError`, carrying the backend's
diagnosis when it has one within half a second; later calls fail the same way immediately.

Everything the sandbox sends is untrusted (docs/security.md, "Hostile sandbox: host side"):
the reader buffers at most ``max_frame_bytes`` without a newline, refuses frames that answer no
request, answer one twice, exceed the request's own cap or forge a chunk, keeps a bounded
number of unsolicited frames, logs at most ``log_bytes`` of any text the sandbox chose, and
spends at most ``reader_cpu_share`` of a core on average, so a flooding sandbox slows down
itself and not its neighbours. A violation, or any exception in the reader, closes the client
with a :class:`SandboxProtocolError` naming the limit and what was seen; pending and later
calls fail with it at once.

Depends on ``transport.py``, ``exceptions.py`` and pydantic only; knows nothing about backends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import itertools
import json
import logging
import os
import statistics
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.exceptions import (
    RemoteError,
    RpcTimeoutError,
    SandboxConnectionError,
    SandboxProtocolError,
    remote_error_from_wire,
)
from orchestrator.sandbox.transport import Transport

log = logging.getLogger(__name__)

ChunkHandler = Callable[[bytes], Awaitable[None] | None]
Diagnose = Callable[[], Awaitable[str | None]]

#: Extra seconds the host waits beyond a command's own timeout before giving up on the reply.
REPLY_GRACE = 15.0
#: The agent's own output cap when a request names none (agent.py DEFAULT_MAX_OUTPUT).
AGENT_DEFAULT_MAX_OUTPUT = 1024 * 1024
#: The agent's largest ``file.read`` (agent.py MAX_READ).
AGENT_MAX_READ = 16 * 1024 * 1024
#: Room in a reply for everything but the capped output (fields, notes, paths).
REPLY_OVERHEAD = 64 * 1024
#: A byte of output can become at most 6 bytes of JSON (a control character as \u0001).
JSON_EXPANSION = 6
#: Issued ids remembered to tell a late reply (after a timeout) from a forged one.
OUTSTANDING_MAX = 65536
#: how long a dead stream's cause is looked for (an engine under load is slow to see an exit)
DIAGNOSE_S = 2.0
#: Frames handled before the reader checks its CPU budget and lets other tasks run.
BATCH = 64
#: One encoder for every request: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class LineFramer:
    """Cuts the agent's byte stream into lines, none longer than ``max_frame`` bytes.

    Chunks of a partial line are kept apart and joined once its newline arrives (a 1 MB reply
    comes in dozens of chunks: appending to one bytes object would copy it over and over). A
    line over the limit, complete or not, goes to ``too_large``, which raises.
    """

    __slots__ = ("buffered", "max_frame", "parts", "too_large")

    def __init__(self, max_frame: int, too_large: Callable[[str], NoReturn]) -> None:
        self.max_frame = max_frame
        self.too_large = too_large
        self.parts: list[bytes] = []
        self.buffered = 0

    def feed(self, data: bytes) -> list[bytes]:
        """The lines ``data`` completes, without their newlines."""
        max_frame = self.max_frame
        nl = data.find(b"\n")
        if nl < 0:
            self.buffered += len(data)
            if self.buffered > max_frame:
                self.too_large(
                    f"sent more than {human_size(max_frame)} without a newline "
                    f"({human_size(self.buffered)} buffered)"
                )
            self.parts.append(data)
            return []
        if self.buffered + nl > max_frame:
            self.too_large(f"sent a {human_size(self.buffered + nl)} line")
        if self.parts:
            self.parts.append(data)
            data = b"".join(self.parts)
        *lines, rest = data.split(b"\n")
        del data
        self.parts = [rest] if rest else []
        self.buffered = len(rest)
        if self.buffered > max_frame:
            self.too_large(f"sent more than {human_size(max_frame)} without a newline")
        for line in lines:
            if len(line) > max_frame:
                self.too_large(f"sent a {human_size(len(line))} line")
        return lines


class RpcLimits(BaseModel):
    """Host-side bounds on what one sandbox may send (a ``limits`` field of every backend
    config). Defaults fit the in-sandbox agent's own caps with room to spare."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_frame_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="longest line (frame) accepted from the sandbox; checked as bytes arrive, "
        "so no more than this is ever buffered without a newline",
    )
    max_unsolicited_frames: int = Field(
        1000,
        ge=0,
        description="error frames without a request id tolerated per sandbox (the agent sends "
        "one per malformed frame it receives); one more closes the sandbox",
    )
    unsolicited_kept: int = Field(
        32, ge=0, description="how many unsolicited errors are kept for inspection"
    )
    log_bytes: int = Field(
        500,
        ge=40,
        description="most characters of sandbox-chosen text put into a log line, a kept error "
        "or an exception message",
    )
    reader_cpu_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="average share of one CPU the reader of one sandbox may use; beyond it, "
        "the reader pauses (the sandbox's writes block) so other sandboxes keep their pace",
    )
    reader_burst_seconds: float = Field(
        0.05, gt=0, description="CPU seconds the reader may spend in a burst before it pauses"
    )
    max_download_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1,
        description="most bytes one download (tar stream) may bring out of the sandbox, and "
        "most bytes its extracted files may claim (sparse files count at their full size)",
    )


def human_size(n: float) -> str:
    """Bytes as '12 bytes', '200.0 KiB', '1.0 GiB' (for messages)."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def clip(text: object, limit: int) -> str:
    """At most ``limit`` characters of sandbox-chosen text, saying how much was cut."""
    s = text if isinstance(text, str) else repr(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... [{len(s) - limit} more characters]"


def reply_cap(method: str, params: dict[str, Any], max_frame: int) -> int:
    """The largest reply the agent can honestly send to this request (its output caps times
    the JSON escaping bound), or the frame limit when the method has no cap of its own."""
    if method in ("session.run", "exec"):
        cap = params.get("max_output", AGENT_DEFAULT_MAX_OUTPUT)
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            return max_frame
        streams = 2 if method == "exec" else 1
        return min(max_frame, REPLY_OVERHEAD + JSON_EXPANSION * cap * streams)
    if method == "file.read":
        length = params.get("length", AGENT_MAX_READ)
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            length = AGENT_MAX_READ
        return min(max_frame, REPLY_OVERHEAD + (min(length, AGENT_MAX_READ) + 2) * 4 // 3)
    return max_frame


class RpcClient:
    """Concurrent request/response calls to one in-sandbox agent."""

    def __init__(
        self,
        transport: Transport,
        *,
        name: str = "sandbox",
        diagnose: Diagnose | None = None,
        limits: RpcLimits | None = None,
    ) -> None:
        self.name = name
        self.limits = limits = limits or RpcLimits()
        self._transport = transport
        self._diagnose = diagnose
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self._issued = 0
        self._pending: dict[str, asyncio.Future[Any]] = {}
        #: id -> wake-ups of the callers waiting on that id's reply, called at once when it
        #: arrives: a done-callback on the future would cost one more event-loop iteration
        #: (a scheduled callback, then the caller's step) per call
        self._waiters: dict[str, list[Callable[[], None]]] = {}
        self._chunk_handlers: dict[str, ChunkHandler] = {}
        #: id -> [method, replies still due, reply cap]: sent requests not yet answered, kept
        #: after a timeout or a cancelled caller so the late reply is recognised as honest
        self._outstanding: dict[str, list[Any]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._closed: SandboxConnectionError | None = None
        #: (method, seconds) of recent calls, newest last.
        self.latencies: collections.deque[tuple[str, float]] = collections.deque(maxlen=10000)
        #: error frames the agent sent without a request id (e.g. for a malformed frame);
        #: the newest ``limits.unsolicited_kept``, their messages clipped to ``log_bytes``
        self.unsolicited: collections.deque[RemoteError] = collections.deque(
            maxlen=limits.unsolicited_kept
        )
        self.unsolicited_count = 0
        #: CPU seconds the reader spent, and how long it paused to keep within its share
        self.reader_cpu_seconds = 0.0
        self.reader_paused_seconds = 0.0

    # ---- lifecycle

    def start(self) -> None:
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._read_loop(), name=f"rpc-{self.name}")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def close_reason(self) -> SandboxConnectionError | None:
        """Why the client is closed (None while open)."""
        return self._closed

    async def close(self) -> None:
        if self._closed is None:
            self._closed = SandboxConnectionError(
                f"connection to {self.name} was closed by the host"
            )
        await self._transport.close()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending(self._closed)

    # ---- calls

    def new_id(self) -> str:
        self._issued = n = next(self._ids)
        return f"{self._prefix}-{n}"

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        on_chunk: ChunkHandler | None = None,
        max_reply_bytes: int | None = None,
    ) -> Any:
        """Send one request and wait for its reply; raises the mapped RemoteError on error.

        ``timeout`` is the host-side deadline (default: the params' own ``timeout`` plus a
        grace); when it passes the call is cancelled in the sandbox and RpcTimeoutError raised.
        Pass ``request_id`` to retry a call: the agent never executes an id twice.
        ``max_reply_bytes``: a reply frame longer than this closes the sandbox (default: what
        the request's own output cap allows, see :func:`reply_cap`).
        """
        params = params or {}
        rid = request_id or self.new_id()
        if timeout is None:
            inner = params.get("timeout")
            timeout = (float(inner) if isinstance(inner, (int, float)) else 120.0) + REPLY_GRACE
        fut = self._register(rid, on_chunk)
        cap = max_reply_bytes or reply_cap(method, params, self.limits.max_frame_bytes)
        started = time.perf_counter()
        try:
            await self._send({"id": rid, "method": method, "params": params}, method, cap)
            return await self._wait(rid, fut, method, timeout)
        finally:
            if rid not in self._waiters:  # else a retry with this id still waits for the reply
                self._pending.pop(rid, None)
                self._chunk_handlers.pop(rid, None)
            self.latencies.append((method, time.perf_counter() - started))

    async def upload(
        self,
        method: str,
        params: dict[str, Any],
        chunks: AsyncIterable[bytes],
        *,
        timeout: float = 600.0,
    ) -> Any:
        """A call whose request is followed by a stream of data chunks (e.g. ``tar.put``)."""
        rid = self.new_id()
        fut = self._register(rid, None)
        started = time.perf_counter()
        try:
            await self._send(
                {"id": rid, "method": method, "params": params},
                method,
                self.limits.max_frame_bytes,
            )
            async for chunk in chunks:
                if fut.done():
                    break  # the agent already failed the upload: stop sending
                await self._send({"id": rid, "chunk": base64.b64encode(chunk).decode("ascii")})
            if not fut.done():
                await self._send({"id": rid, "eof": True})
            return await self._wait(rid, fut, method, timeout)
        finally:
            self._pending.pop(rid, None)
            self.latencies.append((method, time.perf_counter() - started))

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (for tests of the agent's frame handling)."""
        self._check_open()
        await self._transport.write(data)

    def latency_stats(self, method: str | None = None) -> dict[str, float]:
        values = sorted(d for m, d in self.latencies if method is None or m == method)
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "p50_ms": statistics.median(values) * 1000,
            "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))] * 1000,
            "mean_ms": statistics.fmean(values) * 1000,
        }

    # ---- internals

    def _check_open(self) -> None:
        if self._closed is not None:
            raise _copy(self._closed)

    def _register(self, rid: str, on_chunk: ChunkHandler | None) -> asyncio.Future[Any]:
        self._check_open()
        self.start()
        existing = self._pending.get(rid)
        if existing is not None:
            return existing  # a retry of a call in flight: the agent replies once, for both
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        if on_chunk is not None:
            self._chunk_handlers[rid] = on_chunk
        return fut

    async def _send(self, frame: dict[str, Any], method: str | None = None, cap: int = 0) -> None:
        data = (_encode(frame) + "\n").encode()
        if method is not None:  # a request: one more reply is due for its id
            entry = self._outstanding.get(frame["id"])
            if entry is None:
                if len(self._outstanding) >= OUTSTANDING_MAX:
                    del self._outstanding[next(iter(self._outstanding))]
                self._outstanding[frame["id"]] = [method, 1, cap]
            else:
                entry[1] += 1
                entry[2] = max(entry[2], cap)
        try:
            await self._transport.write(data)
        except (ConnectionError, OSError) as exc:
            if self._closed is None and self._reader_task is not None:
                # the reader is about to see the end of the stream and find out why (the
                # container died, the OOM killer...): that cause beats "connection lost"
                await asyncio.wait({self._reader_task}, timeout=DIAGNOSE_S + 0.5)
            if self._closed is not None:
                raise _copy(self._closed) from exc
            raise SandboxConnectionError(f"cannot write to {self.name}: {exc}") from exc

    async def _wait(self, rid: str, fut: asyncio.Future[Any], method: str, timeout: float) -> Any:
        # wait_for(shield(fut)) without its extra futures and tasks (a good share of the
        # client's CPU per call): one waiter woken by the reply or the deadline. A cancelled
        # caller leaves ``fut`` pending, as shield did, so a retry with the same id finds it.
        if not fut.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake() -> None:
                if not waiter.done():
                    waiter.set_result(None)

            waiters = self._waiters.setdefault(rid, [])
            waiters.append(wake)
            timer = loop.call_later(timeout, wake)
            try:
                await waiter
            finally:
                timer.cancel()
                if wake in waiters:
                    waiters.remove(wake)
                    if not waiters and self._waiters.get(rid) is waiters:
                        del self._waiters[rid]
        if fut.done():
            return fut.result()
        # the deadline passed: cancel it in the sandbox too
        if self._closed is None:
            try:
                await asyncio.wait_for(
                    self._send(
                        {"id": self.new_id(), "method": "cancel", "params": {"target": rid}},
                        "cancel",
                        REPLY_OVERHEAD,
                    ),
                    1.0,
                )
            except (SandboxConnectionError, asyncio.TimeoutError):
                pass
        raise RpcTimeoutError(
            f"{method} on {self.name}: no reply within {timeout:.1f}s (cancelled)"
        )

    async def _read_loop(self) -> None:
        share, burst = self.limits.reader_cpu_share, self.limits.reader_burst_seconds
        framer = LineFramer(self.limits.max_frame_bytes, self._frame_too_large)
        clock = time.perf_counter
        # CPU budget: a token bucket refilled at ``share`` per second, holding at most
        # ``burst``; in debt, the reader stops reading until it is repaid. Billing costs two
        # clock reads per read, the pause path is off the hot path.
        credit, last = burst, clock()
        try:
            while True:
                data = await self._transport.read()
                if not data:
                    break
                t0 = clock()
                credit = min(burst, credit + (t0 - last) * share)
                for i, line in enumerate(framer.feed(data), 1):
                    await self._dispatch(line)
                    if i % BATCH == 0:  # a burst of small frames: pay as it goes
                        now = clock()
                        credit -= now - t0
                        self.reader_cpu_seconds += now - t0
                        credit = await self._pause(credit, share) if credit < 0 else credit
                        if credit >= 0:
                            await asyncio.sleep(0)
                        t0 = clock()
                last = clock()
                self.reader_cpu_seconds += last - t0
                credit -= last - t0
                if credit < 0:
                    credit = await self._pause(credit, share)
                    last = clock()
        except asyncio.CancelledError:
            raise
        except SandboxProtocolError as exc:
            await self._abort(exc)
            return
        except Exception as exc:  # anything at all: never leave callers hanging
            what = clip(f"{type(exc).__name__}: {exc}", self.limits.log_bytes)
            log.warning("rpc reader for %s failed: %s", self.name, what)
            await self._abort(
                SandboxProtocolError(
                    f"sandbox {self.name} was closed: reading its stream failed with {what}"
                )
            )
            return
        await self._on_eof()

    async def _pause(self, credit: float, share: float) -> float:
        """Stop reading until the debt ``-credit`` is repaid at ``share`` per second; the
        sandbox's writes block meanwhile, so a flood slows itself, not its neighbours."""
        pause = -credit / share
        self.reader_paused_seconds += pause
        await asyncio.sleep(pause)
        return 0.0

    def _frame_too_large(self, what: str) -> NoReturn:
        self._violation(what, "max_frame_bytes")

    def _violation(self, what: str, limit: str | None = None) -> NoReturn:
        where = f"; limit {limit}" if limit else ""
        if limit == "max_frame_bytes":
            where = f"; limit {human_size(self.limits.max_frame_bytes)} (max_frame_bytes)"
        raise SandboxProtocolError(f"sandbox {self.name} was closed: it {what}{where}", limit=limit)

    async def _abort(self, exc: SandboxProtocolError) -> None:
        """Close the client for good: the stream is never read again, whatever comes next."""
        if self._closed is None:
            self._closed = exc
            log.warning("%s", exc)
        self._fail_pending(self._closed)
        try:
            await self._transport.close()
        except Exception:  # the transport may already be gone; the failure is recorded
            pass

    async def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except RecursionError:
            self._violation("sent a frame nested too deeply to parse")
        except ValueError:
            self._violation(f"sent a line that is not JSON: {clip(line, self.limits.log_bytes)}")
        if type(msg) is not dict:
            self._violation(
                f"sent a frame that is not an object: {clip(line, self.limits.log_bytes)}"
            )
        rid: Any = msg.get("id")
        entry = self._outstanding.get(rid) if type(rid) is str else None
        if entry is None:  # off the hot path: no reply is due for this frame's id
            if rid is None and "error" in msg and "chunk" not in msg:
                self._unsolicited(msg["error"])
                return
            if type(rid) is not str:
                self._violation(
                    f"sent a frame without a valid id: {clip(line, self.limits.log_bytes)}"
                )
            self._violation(self._stray(rid, "chunk" in msg))
        if "chunk" in msg:
            await self._chunk(rid, entry[0], msg["chunk"])
            return
        if len(line) > entry[2]:
            self._violation(
                f"sent a {human_size(len(line))} reply to {entry[0]} (request {clip(rid, 80)}); "
                f"that request's cap is {human_size(entry[2])}",
                "reply cap",
            )
        if "result" in msg:
            error = None
        elif "error" in msg:
            error = msg["error"]
        else:
            self._violation(
                f"sent a reply to {entry[0]} (request {clip(rid, 80)}) with neither result "
                "nor error"
            )
        entry[1] -= 1
        if entry[1] <= 0:
            del self._outstanding[rid]
        fut = self._pending.get(rid)
        if fut is None or fut.done():
            return  # a late reply: its caller timed out or went away
        if error is None:
            fut.set_result(msg["result"])
        else:
            fut.set_exception(remote_error_from_wire(error))
        self._wake(rid)

    def _wake(self, rid: str) -> None:
        for wake in self._waiters.pop(rid, ()):
            wake()

    def _stray(self, rid: str, chunk: bool) -> str:
        """What a frame for an id with no reply due is: a second reply, or pure invention."""
        prefix, _, n = rid.partition("-")
        ours = prefix == self._prefix and n.isdigit() and 0 < int(n) <= self._issued
        what = "a data chunk" if chunk else "a reply"
        if ours:
            return f"sent {what} for request {clip(rid, 80)}, which was already answered"
        return f"sent {what} for an unknown request id {clip(rid, 80)}"

    async def _chunk(self, rid: str, method: str, payload: Any) -> None:
        handler = self._chunk_handlers.get(rid)
        if handler is None:
            if rid in self._pending:
                self._violation(
                    f"sent a data chunk for {method} (request {clip(rid, 80)}), which does "
                    "not stream"
                )
            return  # a download whose consumer stopped: its last chunks are still coming
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, TypeError, ValueError):
            self._violation(
                f"sent a data chunk that is not base64 for {method} (request {clip(rid, 80)}): "
                f"{clip(payload, 80)}"
            )
        res = handler(data)
        if res is not None:
            await res

    def _unsolicited(self, error: Any) -> None:
        self.unsolicited_count += 1
        if self.unsolicited_count > self.limits.max_unsolicited_frames:
            self._violation(
                f"sent {self.unsolicited_count} error frames without a request id",
                "max_unsolicited_frames",
            )
        err = remote_error_from_wire(error)
        n = self.limits.log_bytes
        if len(err.message) > n or err.data is not None:  # keep bounded memory per frame
            err = type(err)(clip(err.message, n), code=err.code, type=clip(err.type, 80))
        if self.unsolicited_count <= 10:  # a flood is counted, not logged line by line
            log.warning("%s: agent error without request id: %s", self.name, err)
        self.unsolicited.append(err)

    async def _on_eof(self) -> None:
        if self._closed is not None:  # we closed it: nothing to diagnose (no inspect call)
            self._fail_pending(self._closed)
            return
        reason = "the agent's stream ended"
        if self._diagnose is not None:
            try:
                found = await asyncio.wait_for(self._diagnose(), DIAGNOSE_S)
                if found:
                    reason = found
            except Exception:  # diagnosis is best effort; never delay the failure past it
                pass
        stderr = self._transport.stderr_tail().strip()
        if stderr:
            reason += f"; agent stderr: {clip(stderr[-500:], self.limits.log_bytes)}"
        self._closed = SandboxConnectionError(f"sandbox {self.name} is gone: {reason}")
        self._fail_pending(self._closed)
        # the stream is over for good: a "reopened" stream is never read (a new sandbox is)
        try:
            await self._transport.close()
        except Exception:  # already gone
            pass

    def _fail_pending(self, exc: SandboxConnectionError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(_copy(exc))
        self._pending.clear()
        for wakes in list(self._waiters.values()):
            for wake in wakes:
                wake()
        self._waiters.clear()


def _copy(exc: SandboxConnectionError) -> SandboxConnectionError:
    """A fresh exception per caller (one instance raised in many tasks tangles tracebacks)."""
    if isinstance(exc, SandboxProtocolError):
        return SandboxProtocolError(str(exc), limit=exc.limit)
    return SandboxConnectionError(str(exc))
