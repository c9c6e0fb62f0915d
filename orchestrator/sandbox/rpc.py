"""Host side of the sandbox RPC: JSON lines over one byte stream, many calls in flight.

The client owns one reader task. Each call gets a fresh id and a future; replies are matched by
id, so they may arrive in any order. When the stream ends (container killed, agent crashed)
every pending call fails at once with :class:`SandboxConnectionError`, carrying the backend's
diagnosis when it has one within half a second; later calls fail the same way immediately.

Depends on ``transport.py`` and ``exceptions.py`` only; knows nothing about backends.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import itertools
import json
import logging
import os
import statistics
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any

from orchestrator.exceptions import (
    RemoteError,
    RpcTimeoutError,
    SandboxConnectionError,
    remote_error_from_wire,
)
from orchestrator.sandbox.transport import Transport

log = logging.getLogger(__name__)

ChunkHandler = Callable[[bytes], Awaitable[None] | None]
Diagnose = Callable[[], Awaitable[str | None]]

#: Extra seconds the host waits beyond a command's own timeout before giving up on the reply.
REPLY_GRACE = 15.0


class RpcClient:
    """Concurrent request/response calls to one in-sandbox agent."""

    def __init__(
        self, transport: Transport, *, name: str = "sandbox", diagnose: Diagnose | None = None
    ) -> None:
        self.name = name
        self._transport = transport
        self._diagnose = diagnose
        self._prefix = os.urandom(4).hex()
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._chunk_handlers: dict[str, ChunkHandler] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._closed: SandboxConnectionError | None = None
        #: (method, seconds) of recent calls, newest last.
        self.latencies: collections.deque[tuple[str, float]] = collections.deque(maxlen=10000)
        #: error frames the agent sent without a request id (e.g. for a malformed frame).
        self.unsolicited: collections.deque[RemoteError] = collections.deque(maxlen=100)

    # ---- lifecycle

    def start(self) -> None:
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._read_loop(), name=f"rpc-{self.name}")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self) -> None:
        if self._closed is None:
            self._closed = SandboxConnectionError(
                f"connection to {self.name} was closed by the host"
            )
        await self._transport.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_pending(self._closed)

    # ---- calls

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        request_id: str | None = None,
        on_chunk: ChunkHandler | None = None,
    ) -> Any:
        """Send one request and wait for its reply; raises the mapped RemoteError on error.

        ``timeout`` is the host-side deadline (default: the params' own ``timeout`` plus a
        grace); when it passes the call is cancelled in the sandbox and RpcTimeoutError raised.
        Pass ``request_id`` to retry a call: the agent never executes an id twice.
        """
        params = params or {}
        rid = request_id or self.new_id()
        if timeout is None:
            inner = params.get("timeout")
            timeout = (float(inner) if isinstance(inner, (int, float)) else 120.0) + REPLY_GRACE
        fut = self._register(rid, on_chunk)
        started = time.perf_counter()
        try:
            await self._send({"id": rid, "method": method, "params": params})
            return await self._wait(rid, fut, method, timeout)
        finally:
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
            await self._send({"id": rid, "method": method, "params": params})
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
            raise SandboxConnectionError(str(self._closed))

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

    async def _send(self, frame: dict[str, Any]) -> None:
        data = (json.dumps(frame, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            await self._transport.write(data)
        except (ConnectionError, OSError) as exc:
            raise self._closed or SandboxConnectionError(
                f"cannot write to {self.name}: {exc}"
            ) from exc

    async def _wait(self, rid: str, fut: asyncio.Future[Any], method: str, timeout: float) -> Any:
        # wait_for(shield(fut)) without its extra futures and tasks (a good share of the
        # client's CPU per call): one waiter woken by the reply or the deadline. A cancelled
        # caller leaves ``fut`` pending, as shield did, so a retry with the same id finds it.
        if not fut.done():
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            fut.add_done_callback(wake)
            timer = loop.call_later(timeout, wake)
            try:
                await waiter
            finally:
                timer.cancel()
                fut.remove_done_callback(wake)
        if fut.done():
            return fut.result()
        # the deadline passed: cancel it in the sandbox too
        if self._closed is None:
            try:
                await asyncio.wait_for(
                    self._send(
                        {"id": self.new_id(), "method": "cancel", "params": {"target": rid}}
                    ),
                    1.0,
                )
            except (SandboxConnectionError, asyncio.TimeoutError):
                pass
        raise RpcTimeoutError(
            f"{method} on {self.name}: no reply within {timeout:.1f}s (cancelled)"
        )

    async def _read_loop(self) -> None:
        # chunks of a partial line, joined once its newline arrives (a 1 MB reply comes in
        # dozens of chunks: appending to one bytes object would copy it over and over)
        parts: list[bytes] = []
        try:
            while True:
                data = await self._transport.read()
                if not data:
                    break
                if b"\n" not in data:
                    parts.append(data)
                    continue
                parts.append(data)
                *lines, rest = b"".join(parts).split(b"\n")
                parts = [rest] if rest else []
                for line in lines:
                    if line.strip():
                        await self._dispatch(line)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave callers hanging
            log.exception("rpc reader for %s crashed", self.name)
            self._fail_pending(SandboxConnectionError(f"reader for {self.name} crashed: {exc!r}"))
            return
        await self._on_eof()

    async def _dispatch(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("%s: agent sent a non-JSON line: %r", self.name, line[:200])
            return
        if not isinstance(msg, dict):
            return
        rid = msg.get("id")
        if "chunk" in msg:
            handler = self._chunk_handlers.get(rid) if isinstance(rid, str) else None
            if handler is not None:
                res = handler(base64.b64decode(msg["chunk"]))
                if res is not None:
                    await res
            return
        if rid is None:
            err = remote_error_from_wire(msg.get("error"))
            log.warning("%s: agent error without request id: %s", self.name, err)
            self.unsolicited.append(err)
            return
        fut = self._pending.get(rid) if isinstance(rid, str) else None
        if fut is None or fut.done():
            return
        if "error" in msg:
            fut.set_exception(remote_error_from_wire(msg["error"]))
        else:
            fut.set_result(msg.get("result"))

    async def _on_eof(self) -> None:
        if self._closed is not None:  # we closed it: nothing to diagnose (no inspect call)
            self._fail_pending(self._closed)
            return
        reason = "the agent's stream ended"
        if self._diagnose is not None:
            try:
                found = await asyncio.wait_for(self._diagnose(), 0.5)
                if found:
                    reason = found
            except Exception:  # diagnosis is best effort; never delay the failure past 0.5 s
                pass
        stderr = self._transport.stderr_tail().strip()
        if stderr:
            reason += f"; agent stderr: {stderr[-500:]}"
        self._closed = SandboxConnectionError(f"sandbox {self.name} is gone: {reason}")
        self._fail_pending(self._closed)

    def _fail_pending(self, exc: SandboxConnectionError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SandboxConnectionError(str(exc)))
        self._pending.clear()
