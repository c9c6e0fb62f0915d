"""The Docker Engine API calls of a sandbox's life (create, attach, start, remove) over the
local unix socket, as plain HTTP/1.1.

docker-py's ``APIClient`` goes through requests/urllib3, ~1 ms of CPU per call (prepare,
adapters, hooks); these four calls are every trajectory's fixed cost, so at 64 sandboxes and a
few tool calls each they were a large share of the orchestrator's CPU (``http.client`` was
better, but its header parsing goes through the email package). docker-py still builds
the container and host configs, and handles every other call (inspect, logs, kill, gc).
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import quote, urlencode


class DockerHTTPError(Exception):
    """The daemon answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def unix_socket_path(base_url: str) -> str | None:
    """The socket path of a ``unix://`` daemon URL, else None (use docker-py)."""
    if base_url.startswith("unix://"):
        return base_url[len("unix://") :] or None
    return None


class DockerHTTP:
    """One keep-alive connection for the control calls; attach gets its own socket."""

    def __init__(self, path: str, version: str, timeout: float = 120.0) -> None:
        self.path = path
        self.prefix = f"/v{version}"
        self.timeout = timeout
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
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
