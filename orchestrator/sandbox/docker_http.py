"""The Docker Engine API calls of a sandbox's life (create, attach, start, remove) as plain
HTTP/1.1 on the daemon's socket: the one code path for them, for a ``unix://`` or a plain
``tcp://`` daemon URL (TLS is refused with a clear error: the attach stream is handed to
asyncio as a raw socket; forward a remote daemon's socket over ssh instead).

Why not docker-py for these too: measured on the same machine and image (``create + attach +
start + remove``), docker-py's ``APIClient`` costs 7.3-8.4 ms of the orchestrator's CPU per
sandbox life cycle (requests/urllib3: prepare, adapters, hooks), this client 1.0-1.1 ms. These
calls are every trajectory's fixed cost, paid by the one orchestrator process for hundreds of
sandboxes. docker-py still builds the container and host configs (no I/O) and makes the rare
calls (inspect and logs for a diagnosis, kill, info, gc).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any
from urllib.parse import quote, urlencode, urlsplit


class DockerHTTPError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class DockerURLError(ValueError):
    """A daemon URL this client cannot speak to."""


def unix_socket_path(base_url: str) -> str | None:
    """The socket path of a ``unix://`` daemon URL, else None."""
    if base_url.startswith("unix://"):
        return base_url[len("unix://") :] or None
    return None


class DockerHTTP:
    """One keep-alive connection for the control calls; attach gets its own socket."""

    def __init__(self, base_url: str, version: str, timeout: float = 120.0) -> None:
        self.path = unix_socket_path(base_url)
        self.address: tuple[str, int] | None = None
        if self.path is None:
            url = urlsplit(base_url if "://" in base_url else f"tcp://{base_url}")
            if url.scheme not in ("tcp", "http") or not url.hostname:
                raise DockerURLError(
                    f"Docker daemon URL {base_url!r} is not supported: use unix:///path or "
                    "tcp://host:port (forward a TLS or ssh daemon's socket with ssh -L)"
                )
            if os.environ.get("DOCKER_TLS_VERIFY"):
                raise DockerURLError(
                    f"Docker daemon {base_url!r} with DOCKER_TLS_VERIFY: TLS is not supported; "
                    "forward the daemon's socket with ssh -L and use unix:// or tcp://localhost"
                )
            self.address = (url.hostname, url.port or 2375)
        self.prefix = f"/v{version}"
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.address is not None:
            return socket.create_connection(self.address, timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path or "")
        except BaseException:
            sock.close()
            raise
        return sock

    def _request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {self.prefix}{url} HTTP/1.1\r\nHost: docker\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        head += f"Content-Length: {len(data)}\r\n\r\n"
        for attempt in (1, 2):  # a keep-alive connection the daemon closed: reconnect once
            fresh = self._sock is None
            if self._sock is None:
                self._sock = self._connect()
            try:
                self._sock.sendall(head.encode() + data)
                status, payload, keep = self._response(self._sock)
            except (ConnectionError, EOFError):
                self.close()
                if fresh or attempt == 2:
                    raise
                continue
            if not keep:
                self.close()
            return status, payload
        raise AssertionError("unreachable")

    def _response(self, sock: socket.socket) -> tuple[int, bytes, bool]:
        """Status, body and keep-alive of one HTTP/1.1 response (Content-Length or chunked)."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("the daemon closed the connection")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close"
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(rest) < size:
                chunk = sock.recv(max(65536, size - len(rest)))
                if not chunk:
                    raise EOFError("the daemon closed the connection mid-body")
                rest += chunk
            return status, rest[:size], keep
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in rest:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EOFError("the daemon closed the connection mid-body")
                    rest += chunk
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EOFError("the daemon closed the connection mid-body")
                    rest += chunk
                if size == 0:
                    return status, body, keep
                body += rest[:size]
                rest = rest[size + 2 :]
        # no length: the body runs to the end of the connection
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return status, rest, False
            rest += chunk

    @staticmethod
    def _message(payload: bytes) -> str:
        try:
            return str(json.loads(payload).get("message", payload.decode(errors="replace")))
        except (ValueError, AttributeError):
            return payload.decode(errors="replace").strip()

    def _check(self, status: int, payload: bytes) -> bytes:
        if status >= 400:
            raise DockerHTTPError(status, self._message(payload))
        return payload

    def create(self, config: dict[str, Any], name: str) -> str:
        status, payload = self._request(
            "POST", f"/containers/create?{urlencode({'name': name})}", config
        )
        return str(json.loads(self._check(status, payload))["Id"])

    def start(self, container_id: str) -> None:
        status, payload = self._request("POST", f"/containers/{quote(container_id)}/start")
        if status != 304:  # 304: already started
            self._check(status, payload)

    def remove(self, container_id: str) -> None:
        status, payload = self._request("DELETE", f"/containers/{quote(container_id)}?force=1&v=1")
        self._check(status, payload)

    def attach(self, container_id: str) -> socket.socket:
        """The container's stdin/stdout/stderr as a hijacked stream (stdout and stderr
        multiplexed in 8-byte-header frames, as ``docker attach`` without a TTY)."""
        sock = self._connect()
        try:
            query = "stdin=1&stdout=1&stderr=1&stream=1"
            request = (
                f"POST {self.prefix}/containers/{quote(container_id)}/attach?{query} HTTP/1.1\r\n"
                "Host: docker\r\nContent-Type: text/plain\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
            )
            sock.sendall(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                # peek, then take exactly the header bytes: what follows is the stream
                chunk = sock.recv(4096, socket.MSG_PEEK)
                if not chunk:
                    raise DockerHTTPError(0, "the daemon closed the attach connection")
                end = (head + chunk).find(b"\r\n\r\n")
                take = len(chunk) if end < 0 else end + 4 - len(head)
                head += sock.recv(take)
            status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if status not in (101, 200):
                raise DockerHTTPError(status, f"attach refused: {status_line}")
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
