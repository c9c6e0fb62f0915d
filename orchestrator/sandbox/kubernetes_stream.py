"""Byte streams to the agent in a Kubernetes pod: the exec websocket as a Transport, and the
client side of the agent's authenticated direct-TCP handshake.

The exec stream: the ``kubernetes`` client does the websocket handshake (auth, TLS, proxies);
from then on our own frame loop runs on its ``websocket.WebSocket``: a reader thread blocked in
``recv_data_frame`` (frames already decrypted into the TLS buffer are read, not polled for, so
the client's ``update()``/``poll()`` bug kubernetes-client/python#2414 does not apply), a writer
thread per stream (never the loop's shared executor), stdin in frames under the API server's
32 MiB limit, channel 3 kept for diagnostics, ``v4`` and ``v5.channel.k8s.io``.

Depends on ``websocket`` (installed with ``kubernetes``) and the standard library only.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import hashlib
import hmac
import json
import logging
import socket
import struct
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class ExecTransport:
    """The exec websocket as a Transport: our own frame loop on the client's WebSocket.

    Reader: a thread blocked in ``recv_data_frame`` (stdout to the event loop, stderr and
    channel 3 kept for diagnostics). Writer: a thread of its own (never the shared executor)
    sending stdin in frames of at most ``max_frame`` bytes, bounded by a stall timeout. Close and
    abort shut the socket down, which frees both threads at once even mid-send.
    """

    def __init__(
        self,
        ws_client: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        max_frame: int = 1 << 20,
        write_timeout: float = 60.0,
    ) -> None:
        self._ws = ws_client.sock  # websocket.WebSocket, after the client's handshake
        self._raw = self._ws.sock  # socket.socket or ssl.SSLSocket
        self.subprotocol = str(getattr(ws_client, "subprotocol", None) or "v4.channel.k8s.io")
        self._loop = loop
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=64)
        self.exec_status: str | None = None  # channel 3: the exec's status or start error
        self.dead: str | None = None  # why the stream ended, when we know better than "EOF"
        self._closed = False
        #: monotonic time of the last frame received (any channel, control frames too)
        self.last_recv = time.monotonic()
        #: monotonic time a write started or one of its frames went out; ``sending`` while
        #: a write is in progress
        self.last_send_progress = 0.0
        self.sending = False
        #: stdin bytes sent so far, and that count when the last frame was received
        self.bytes_sent = 0
        self.bytes_sent_at_recv = 0
        self._max_frame = max_frame
        self._write_timeout = write_timeout
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="k8s-exec-w")
        self._ws.settimeout(None)
        self._thread = threading.Thread(target=self._pump, name="k8s-exec-r", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        from websocket import ABNF

        try:
            while True:
                opcode, frame = self._ws.recv_data_frame(True)
                self.last_recv = time.monotonic()
                self.bytes_sent_at_recv = self.bytes_sent
                if opcode == ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) or not frame.data:
                    continue
                data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
                channel, payload = data[0], data[1:]
                if channel == 1 and payload:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, payload)
                elif channel == 2:
                    self._stderr.append(payload)
                elif channel == 3:
                    self.exec_status = exec_status_text(payload)
                # 255 (v5): the server closed one of our channels; the close frame follows
        except Exception as exc:  # reset, TLS error, shut down by abort(): EOF for the reader
            if not self._closed and self.dead is None:
                self.dead = f"exec stream broke: {exc or type(exc).__name__}"
            log.debug("exec stream reader stopped: %r", exc)
        finally:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, b"")
            except RuntimeError:
                pass  # the loop is closed
            try:
                self._raw.close()
            except OSError:
                pass

    async def read(self) -> bytes:
        return await self._queue.get()

    def _send(self, data: bytes) -> None:
        from websocket import ABNF

        view = memoryview(data)
        self.sending = True
        self.last_send_progress = time.monotonic()
        try:
            for i in range(0, len(data), self._max_frame):
                chunk = view[i : i + self._max_frame]
                self._ws.send(b"\x00" + bytes(chunk), ABNF.OPCODE_BINARY)
                self.bytes_sent += len(chunk)
                self.last_send_progress = time.monotonic()
        finally:
            self.sending = False

    def unacked_bytes(self) -> int | None:
        """Bytes we sent that the peer's TCP has not acknowledged yet (Linux ``TIOCOUTQ``;
        None where it cannot be read). Falling while nothing comes back: the peer is alive and
        draining a large write, not gone."""
        try:
            import fcntl
            import termios
        except ImportError:  # not POSIX
            return None
        request = getattr(termios, "TIOCOUTQ", None)
        if request is None or self._closed:
            return None
        try:
            buf = fcntl.ioctl(self._raw.fileno(), request, b"\0\0\0\0")
        except (OSError, ValueError):
            return None
        return int(struct.unpack("i", buf)[0])

    def unanswered_bytes(self) -> int:
        """Bytes sent since the last frame came back: what the peer may still have to read
        before a reply to anything sent after them can arrive."""
        return self.bytes_sent - self.bytes_sent_at_recv

    def alive_since(self, since: float, unacked: int | None) -> bool:
        """Whether the connection showed life after ``since``: bytes came back, a frame of a
        write in progress went out (the peer made room for it), or fewer of our bytes wait
        for the peer's acknowledgement than ``unacked`` (sampled earlier). Independent of
        replies, which queue behind a large write on the same stream."""
        if self.last_recv >= since:
            return True
        if self.sending and self.last_send_progress >= since:
            return True
        now_unacked = self.unacked_bytes()
        return unacked is not None and now_unacked is not None and now_unacked < unacked

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError(self.dead or "exec stream to the pod is closed")
        limit = self._write_timeout + len(data) / 1e6
        try:
            fut = self._loop.run_in_executor(self._writer, self._send, data)
            await asyncio.wait_for(fut, limit)
        except asyncio.TimeoutError:
            self.abort(f"a write to the exec stream stalled for {limit:.0f}s (half-open?)")
            raise ConnectionError(self.dead) from None
        except RuntimeError as exc:  # the writer was shut down by close()
            raise ConnectionError(self.dead or "exec stream to the pod is closed") from exc
        except Exception as exc:  # after abort(): its reason, not the socket's complaint
            raise ConnectionError(self.dead or f"exec stream write failed: {exc}") from exc

    def abort(self, reason: str) -> None:
        """Kill the stream now, from any thread: blocked reads and sends fail at once."""
        if self.dead is None:
            self.dead = reason
        self._closed = True
        try:  # the plain socket's shutdown: SSLSocket.shutdown would drop its SSL object under
            # a thread still inside it
            socket.socket.shutdown(self._raw, socket.SHUT_RDWR)
        except (OSError, TypeError, ValueError):
            pass
        self._writer.shutdown(wait=False, cancel_futures=True)

    async def close(self) -> None:
        # never waits: the socket's shutdown unblocks the threads, which then exit on their own
        if not self._closed:
            self.abort("closed by the host")

    def stderr_tail(self) -> str:
        text = b"".join(self._stderr)[-4096:].decode("utf-8", "replace")
        if self.exec_status:
            text += f"{chr(10) if text else ''}[exec status: {self.exec_status}]"
        return text


def exec_status_text(payload: bytes) -> str:
    """Channel 3 carries a metav1.Status: success, the exit code, or why exec could not start."""
    try:
        status = json.loads(payload)
    except ValueError:
        return payload.decode("utf-8", "replace")[:500]
    if not isinstance(status, dict):
        return str(status)[:500]
    if status.get("status") == "Success":
        return "Success"
    causes = (status.get("details") or {}).get("causes") or []
    code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), None)
    if code is not None:
        return f"exit code {code}"
    return str(status.get("message") or status.get("reason") or status)[:500]


async def tcp_authenticate(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: str
) -> None:
    """Client side of the agent's TCP handshake: the agent sends ``{"challenge": nonce}``, we
    answer ``{"auth": hmac_sha256(secret, nonce)}``, the agent confirms ``{"auth": "ok"}``."""
    hello = json.loads(await reader.readline())
    nonce = hello.get("challenge") if isinstance(hello, dict) else None
    if not isinstance(nonce, str):
        raise ValueError(f"expected a challenge from the agent, got {hello!r:.200}")
    proof = hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()
    writer.write((json.dumps({"auth": proof}) + "\n").encode())
    await writer.drain()
    reply = json.loads(await reader.readline() or b"null")
    if not isinstance(reply, dict) or reply.get("auth") != "ok":
        raise ValueError(f"the agent refused the proof: {reply!r:.200}")
