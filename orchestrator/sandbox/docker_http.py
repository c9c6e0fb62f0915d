"""The Docker Engine API calls of a sandbox's life (create, attach, start, remove) over the
local unix socket with ``http.client``.

docker-py's ``APIClient`` goes through requests/urllib3, ~1 ms of CPU per call (prepare,
adapters, hooks); these four calls are every trajectory's fixed cost, so at 64 sandboxes and a
few tool calls each they were a large share of the orchestrator's CPU. docker-py still builds
the container and host configs, and handles every other call (inspect, logs, kill, gc).
"""

from __future__ import annotations

import http.client
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


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


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
        self._conn: _UnixConnection | None = None

    def _request(self, method: str, url: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):  # a keep-alive connection the daemon closed: reconnect once
            if self._conn is None:
                self._conn = _UnixConnection(self.path, self.timeout)
            try:
                self._conn.request(method, self.prefix + url, body=data, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

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
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
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
        if self._conn is not None:
            self._conn.close()
            self._conn = None
