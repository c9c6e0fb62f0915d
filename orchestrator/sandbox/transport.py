"""Byte streams to an in-sandbox agent: one per sandbox, whatever the backend.

A transport only moves bytes. The RPC client (``rpc.py``) frames them. Backends choose:
``StreamTransport`` over asyncio streams (a local subprocess's pipes, a TCP connection),
``DockerAttachTransport`` over Docker's hijacked attach socket, whose output is multiplexed
(8-byte headers: stream type, big-endian length) because the container has no TTY, and
``SocketTransport``: a unix socket the host listens on in a per-sandbox directory
(``UnixChannel``) that the agent connects to, so dockerd carries no byte of the RPC; the attach
stream then only brings the agent's stderr.

The bytes come from an untrusted sandbox: a transport never holds more than ``READ_SIZE`` of
one read, whatever length a header claims, and keeps only the last ``STDERR_TAIL`` bytes of
stderr (for diagnostics), yielding to the event loop while it skips a flood of them.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import shutil
import socket
import stat
import struct
from pathlib import Path
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
        #: stdout bytes read past a line (read_line) and not yet returned
        self._pending = b""

    @classmethod
    async def from_socket(cls, sock: socket.socket) -> DockerAttachTransport:
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        return cls(reader, writer)

    async def read_line(self, limit: int = 4096) -> bytes:
        """The first line of stdout (at most ``limit`` bytes, newline included; ``b""`` at end
        of stream); what came after it is returned by the next ``read()``."""
        buf = self._pending
        self._pending = b""
        while b"\n" not in buf and len(buf) < limit:
            data = await self.read()
            if not data:
                return b""
            buf += data
        end = buf.find(b"\n") + 1 or limit
        self._pending = buf[end:]
        return buf[:end]

    async def read(self) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
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


#: Where the agent finds the channel directory inside the sandbox (a read-only bind mount).
CHANNEL_MOUNT = "/.agentic-rollout"
#: The listening socket's name in the channel directory.
CHANNEL_SOCKET = "rpc.sock"
#: Length of the secret the agent proves itself with (hex characters).
SECRET_CHARS = 64


class ChannelError(OSError):
    """The per-sandbox channel directory or its socket could not be made."""


def runtime_root(configured: str | None = None) -> Path:
    """The host directory holding every sandbox's channel directory (made 0700 if missing).

    ``$XDG_RUNTIME_DIR/agentic-rollout`` when the session has one, else
    ``/tmp/agentic-rollout-<uid>``. An existing one must be a real directory of ours that
    nobody else can enter: in a shared /tmp another user could have made it first.
    """
    if configured:
        root = Path(configured)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        root = Path(os.environ["XDG_RUNTIME_DIR"]) / "agentic-rollout"
    else:
        root = Path("/tmp") / f"agentic-rollout-{os.getuid()}"
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ChannelError(
            f"runtime directory {root} must be a directory owned by uid {os.getuid()} with "
            f"mode 0700 (found mode {stat.filemode(info.st_mode)}, owner {info.st_uid})"
        )
    return root


class UnixChannel:
    """The host end of a direct channel: a per-sandbox directory holding a listening socket.

    The directory is bind-mounted read-only into that sandbox alone, so nothing in it can be
    replaced or added from inside, and the parent (``runtime_root``) is 0700, so no other host
    user reaches it. The agent connects before any command exists and proves itself with the
    per-sandbox secret it got on the attach stream; the host then stops listening and unlinks
    the socket: a command started later finds nothing to connect to, and holds no descriptor
    of the accepted connection (close-on-exec, and the agent is not dumpable).
    """

    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.path = self.dir / CHANNEL_SOCKET
        self.secret = secrets.token_hex(SECRET_CHARS // 2).encode()
        self._listener: socket.socket | None = None
        try:
            os.mkdir(self.dir, 0o711)  # enter but not list, for a sandbox uid other than ours
            os.chmod(self.dir, 0o711)  # whatever the umask
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener = sock
            sock.bind(str(self.path))
            os.chmod(self.path, 0o666)  # connect() needs write permission, whatever the uid
            sock.listen(4)
            sock.setblocking(False)
        except OSError as exc:
            self.close()
            raise ChannelError(exc.errno, f"{exc.strerror or exc} ({self.path})") from exc

    @property
    def secret_line(self) -> bytes:
        return self.secret + b"\n"

    async def accept(self, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The agent's connection, once it proved the secret; then the socket is gone.

        Called once the agent said it connected and sent the secret, so the proof is already
        waiting: a connection that does not bring it within a second is closed and the next
        one is taken (until ``timeout``), so a stranger cannot hold the channel.
        """
        assert self._listener is not None, "channel closed"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError("no connection proved the sandbox's secret in time")
                conn, _ = await asyncio.wait_for(loop.sock_accept(self._listener), left)
                reader, writer = await asyncio.open_unix_connection(sock=conn, limit=1 << 22)
                try:
                    line = await asyncio.wait_for(
                        reader.readexactly(SECRET_CHARS + 1),
                        min(1.0, max(0.01, deadline - loop.time())),
                    )
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
                    line = b""
                if hmac.compare_digest(line, self.secret_line):
                    return reader, writer
                writer.close()
        finally:
            self.stop_listening()

    def stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def close(self) -> None:
        """Stop listening and remove the directory (idempotent)."""
        self.stop_listening()
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass
        except OSError:  # not empty: cannot come from the sandbox (read-only mount), but be sure
            shutil.rmtree(self.dir, ignore_errors=True)


class SocketTransport(StreamTransport):
    """RPC over the direct unix socket; the attach stream beside it only carries stderr.

    The side stream is read all along (its stdout is discarded: the agent writes nothing there
    once connected), so the agent's stderr never blocks on a full pipe and its tail is kept
    for diagnostics, with the same bounds as on the attach transport.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        side: DockerAttachTransport,
    ) -> None:
        super().__init__(reader, writer)
        self._side = side
        self._drain = asyncio.get_running_loop().create_task(self._drain_side())

    async def _drain_side(self) -> None:
        while True:
            if not await self._side.read():
                return
            await asyncio.sleep(0)  # a flood there must not hold the event loop

    async def close(self) -> None:
        await super().close()
        self._drain.cancel()
        await self._side.close()

    def stderr_tail(self) -> str:
        return self._side.stderr_tail()
