"""Byte streams to an in-sandbox agent: one per sandbox, whatever the backend.

A transport only moves bytes. The RPC client (``rpc.py``) frames them. Backends choose:
``StreamTransport`` over asyncio streams (a local subprocess's pipes, a TCP connection) and
``DockerAttachTransport`` over Docker's hijacked exec socket, whose output is multiplexed
(8-byte headers: stream type, big-endian length) because the exec has no TTY.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from typing import Protocol


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
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=64)

    def feed_stderr(self, data: bytes) -> None:
        self._stderr.append(data)

    async def read(self) -> bytes:
        try:
            return await self._reader.read(1 << 20)
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
        return b"".join(self._stderr)[-4096:].decode("utf-8", "replace")


class DockerAttachTransport:
    """Docker's hijacked exec/attach socket, demultiplexing stdout from stderr."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._stderr: collections.deque[bytes] = collections.deque(maxlen=64)

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> DockerAttachTransport:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        return cls(reader, writer)

    async def read(self) -> bytes:
        while True:
            try:
                header = await self._reader.readexactly(8)
                kind, size = struct.unpack(">BxxxI", header)
                payload = await self._reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return b""
            if kind == 2:
                self._stderr.append(payload)
                continue
            if payload:
                return payload

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
        return b"".join(self._stderr)[-4096:].decode("utf-8", "replace")
