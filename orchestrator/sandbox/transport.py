"""Byte streams to an in-sandbox agent: one per sandbox, whatever the backend.

A transport only moves bytes. The RPC client (``rpc.py``) frames them. Backends choose:
``StreamTransport`` over asyncio streams (a local subprocess's pipes, a TCP connection) and
``DockerAttachTransport`` over Docker's hijacked exec socket, whose output is multiplexed
(8-byte headers: stream type, big-endian length) because the exec has no TTY.

The bytes come from an untrusted sandbox: a transport never holds more than ``READ_SIZE`` of
one read, whatever length a header claims, and keeps only the last ``STDERR_TAIL`` bytes of
stderr (for diagnostics), yielding to the event loop while it skips a flood of them.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Protocol

#: Most bytes one ``read()`` returns (and holds).
READ_SIZE = 1 << 20
#: Bytes of the agent's stderr kept for diagnostics.
STDERR_TAIL = 4096
#: Stderr frames skipped before the reader lets other tasks run.
STDERR_BATCH = 64


class Transport(Protocol):
    """What the RPC client needs from a byte stream."""

    async def read(self) -> bytes:
        """Next bytes from the agent's stdout; ``b""`` at end of stream."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the agent's stdin (raises ConnectionError when closed)."""
        ...

    async def close(self) -> None:
        """Close the stream; idempotent."""
        ...

    def stderr_tail(self) -> str:
        """The last few KB the agent wrote to stderr, for diagnostics."""
        ...


class StreamTransport:
    """A transport over an asyncio StreamReader/StreamWriter pair."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        write_pipe: asyncio.StreamWriter | None = None,
    ) -> None:
        self._reader = reader
        self._writer = write_pipe or writer
        self._stderr = bytearray()

    def feed_stderr(self, data: bytes) -> None:
        self._stderr += data[-STDERR_TAIL:]
        del self._stderr[:-STDERR_TAIL]

    async def read(self) -> bytes:
        try:
            return await self._reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise ConnectionError("stream to the agent is closed")
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def stderr_tail(self) -> str:
        return bytes(self._stderr).decode("utf-8", "replace")


class DockerAttachTransport:
    """Docker's hijacked exec/attach socket, demultiplexing stdout from stderr."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._stderr = bytearray()
        #: stdout bytes of the current multiplexed frame not yet returned
        self._left = 0

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> DockerAttachTransport:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        return cls(reader, writer)

    async def read(self) -> bytes:
        skipped = 0
        try:
            while True:
                if self._left:  # the rest of a stdout frame, a bounded piece at a time
                    data = await self._reader.read(min(self._left, READ_SIZE))
                    if not data:
                        return b""
                    self._left -= len(data)
                    return data
                header = await self._reader.readexactly(8)
                kind, size = struct.unpack(">BxxxI", header)
                if kind != 2:
                    self._left = size
                    continue
                while size:  # stderr: keep the tail only
                    data = await self._reader.read(min(size, READ_SIZE))
                    if not data:
                        return b""
                    size -= len(data)
                    self._stderr += data[-STDERR_TAIL:]
                    del self._stderr[:-STDERR_TAIL]
                skipped += 1
                if skipped % STDERR_BATCH == 0:
                    await asyncio.sleep(0)  # a flood of stderr must not hold the event loop
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return b""

    async def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionError("stream to the agent is closed")
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def stderr_tail(self) -> str:
        return bytes(self._stderr).decode("utf-8", "replace")
