"""A wire-level Kubernetes API test double on 127.0.0.1, backed by real Docker containers.

It implements the subset the backend calls, over real HTTP, for the real ``kubernetes`` client:
pods create / get / list (label selectors) / delete, events list (field selector), and
``pods/exec`` over a real websocket speaking ``v4.channel.k8s.io`` (one byte of channel per
frame: 0 stdin, 1 stdout, 2 stderr, 3 status). A pod is a container (network none, the pod's
limits and securityContext mapped to Docker); an exec is a ``docker exec`` attached socket.

Fault knobs: ``forbidden`` (verb, resource) pairs answer 403; ``throttle_creates`` answers the next
N pod creates with 429; pods whose nodeSelector has a key ``unschedulable`` stay Pending with a
PodScheduled=False condition; a missing image gives ErrImagePull and a Failed event.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import docker

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LABEL = "k8s-double.pod"


def _quantity(value: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 1000, "M": 10**6, "G": 10**9}
    for suffix, mult in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * mult)
    return int(value)


def _cpu(value: str) -> int:
    return int(float(value[:-1]) * 1e6) if value.endswith("m") else int(float(value) * 1e9)


class KubeDouble:
    def __init__(self, namespaces: tuple[str, ...] = ("agentic-rollout",)) -> None:
        self.namespaces = set(namespaces)
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.forbidden: set[tuple[str, str]] = set()
        self.throttle_creates = 0
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.docker = docker.from_env()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    # ---- lifecycle

    def __enter__(self) -> KubeDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        for c in self.docker.containers.list(all=True, filters={"label": LABEL}):
            c.remove(force=True)
        self.docker.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [{"name": "double", "cluster": {"server": self.url}}],
                    "users": [{"name": "u", "user": {"token": "test-token"}}],
                    "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}],
                }
            )
        )
        return path

    # ---- pods

    def container(self, ns: str, name: str) -> Any:
        found = self.docker.containers.list(all=True, filters={"label": f"{LABEL}={ns}/{name}"})
        return found[0] if found else None

    def create_pod(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        name = meta["name"]
        spec = body["spec"]
        ctr = spec["containers"][0]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **meta,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "spec": spec,
            "status": {"phase": "Pending"},
        }
        self.pods[(ns, name)] = pod
        if "unschedulable" in (spec.get("nodeSelector") or {}):
            pod["status"]["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
                }
            ]
            self.event(ns, name, "FailedScheduling", pod["status"]["conditions"][0]["message"])
            return pod
        limits = (ctr.get("resources") or {}).get("limits") or {}
        security = ctr.get("securityContext") or {}
        pod_security = spec.get("securityContext") or {}
        kwargs: dict[str, Any] = {
            "command": ctr.get("command"),
            "name": f"k8s-{ns}-{name}",
            "detach": True,
            "network_mode": "none",
            # the double's own labels only: the pod's would make the Docker reaper claim it
            "labels": {LABEL: f"{ns}/{name}"},
            "environment": {e["name"]: e["value"] for e in ctr.get("env") or []},
            "working_dir": ctr.get("workingDir"),
            "cap_drop": (security.get("capabilities") or {}).get("drop"),
            "security_opt": ["no-new-privileges"]
            if security.get("allowPrivilegeEscalation") is False
            else None,
        }
        if "memory" in limits:
            kwargs["mem_limit"] = _quantity(limits["memory"])
        if "cpu" in limits:
            kwargs["nano_cpus"] = _cpu(limits["cpu"])
        if pod_security.get("runAsUser") is not None:
            kwargs["user"] = str(pod_security["runAsUser"])
        if spec.get("hostNetwork"):  # for the direct-TCP test: the pod IP is then 127.0.0.1
            kwargs["network_mode"] = "host"
        kwargs.pop("detach")
        try:
            # create + start, never run(): run() pulls a missing image, i.e. talks to a registry
            self.docker.containers.create(ctr["image"], **kwargs).start()
        except docker.errors.ImageNotFound as exc:
            pod["status"]["containerStatuses"] = [
                {
                    "name": ctr["name"],
                    "ready": False,
                    "restartCount": 0,
                    "image": ctr["image"],
                    "imageID": "",
                    "state": {"waiting": {"reason": "ErrImagePull", "message": str(exc)}},
                }
            ]
            self.event(ns, name, "Failed", f'Failed to pull image "{ctr["image"]}": not found')
        return pod

    def pod_view(self, ns: str, name: str) -> dict[str, Any] | None:
        pod = self.pods.get((ns, name))
        if pod is None:
            return None
        c = self.container(ns, name)
        if c is not None:
            state = c.attrs["State"]
            ctr_name = pod["spec"]["containers"][0]["name"]
            base = {
                "name": ctr_name,
                "restartCount": 0,
                "image": pod["spec"]["containers"][0]["image"],
                "imageID": "",
            }
            if state["Running"]:
                pod["status"] = {
                    "phase": "Running",
                    **({"podIP": "127.0.0.1"} if pod["spec"].get("hostNetwork") else {}),
                    "containerStatuses": [
                        {
                            **base,
                            "ready": True,
                            "started": True,
                            "state": {"running": {"startedAt": state["StartedAt"]}},
                        }
                    ],
                }
            else:
                code = state["ExitCode"]
                pod["status"] = {
                    "phase": "Succeeded" if code == 0 else "Failed",
                    "containerStatuses": [
                        {
                            **base,
                            "ready": False,
                            "state": {"terminated": {"exitCode": code, "reason": "Error"}},
                        }
                    ],
                }
        return pod

    def delete_pod(self, ns: str, name: str) -> dict[str, Any] | None:
        pod = self.pods.pop((ns, name), None)
        c = self.container(ns, name)
        if c is not None:
            c.remove(force=True)
        return pod

    def event(self, ns: str, name: str, reason: str, message: str) -> None:
        self.events.append(
            {
                "metadata": {"name": f"{name}.{uuid.uuid4().hex[:6]}", "namespace": ns},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": ns},
                "reason": reason,
                "message": message,
                "type": "Warning",
            }
        )

    # ---- HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def send_json(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def status(self, code: int, reason: str, message: str) -> None:
                self.send_json(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": message,
                        "reason": reason,
                        "code": code,
                    },
                )

            def route(self, method: str) -> None:
                # read the body first: an early error reply must not leave it on the keep-alive stream
                length = int(self.headers.get("Content-Length") or 0)
                raw_body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                parts = url.path.strip("/").split("/")
                query = parse_qs(url.query)
                double.requests.append((method, url.path))
                # /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]
                if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5:
                    self.status(404, "NotFound", f"the double does not serve {url.path}")
                    return
                ns, resource = parts[3], parts[4]
                name = parts[5] if len(parts) > 5 else None
                sub = parts[6] if len(parts) > 6 else None
                verb = {"POST": "create", "DELETE": "delete"}.get(method, "get" if name else "list")
                kind = f"{resource}/{sub}" if sub else resource
                if sub == "exec":
                    verb = "create"
                if (verb, kind) in double.forbidden:
                    self.status(
                        403,
                        "Forbidden",
                        f'{kind} is forbidden: User "system:serviceaccount:x" cannot '
                        f'{verb} resource "{kind}" in API group "" in the namespace "{ns}"',
                    )
                    return
                if ns not in double.namespaces:
                    self.status(404, "NotFound", f'namespaces "{ns}" not found')
                    return
                if resource == "pods" and sub == "exec":
                    self.exec(ns, name or "", query)  # lasts the whole stream: not under the lock
                    return
                with double.lock:
                    if resource == "pods" and method == "POST":
                        if double.throttle_creates > 0:
                            double.throttle_creates -= 1
                            self.status(429, "TooManyRequests", "too many requests, retry later")
                            return
                        body = json.loads(raw_body)
                        if (ns, body["metadata"]["name"]) in double.pods:
                            self.status(
                                409,
                                "AlreadyExists",
                                f'pods "{body["metadata"]["name"]}" already exists',
                            )
                            return
                        self.send_json(201, double.create_pod(ns, body))
                    elif resource == "pods" and method == "GET" and name:
                        pod = double.pod_view(ns, name)
                        if pod is None:
                            self.status(404, "NotFound", f'pods "{name}" not found')
                        else:
                            self.send_json(200, pod)
                    elif resource == "pods" and method == "GET":
                        selector = dict(
                            s.split("=", 1)
                            for s in (query.get("labelSelector", [""])[0].split(","))
                            if "=" in s
                        )
                        items = [double.pod_view(n, p) for (n, p) in list(double.pods) if n == ns]
                        items = [
                            i
                            for i in items
                            if i
                            and all(
                                (i["metadata"].get("labels") or {}).get(k) == v
                                for k, v in selector.items()
                            )
                        ]
                        self.send_json(
                            200,
                            {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items},
                        )
                    elif resource == "pods" and method == "DELETE" and name:
                        pod = double.delete_pod(ns, name)
                        if pod is None:
                            self.status(404, "NotFound", f'pods "{name}" not found')
                        else:
                            self.send_json(200, pod)
                    elif resource == "events":
                        wanted = query.get("fieldSelector", [""])[0].removeprefix(
                            "involvedObject.name="
                        )
                        items = [
                            e
                            for e in double.events
                            if e["metadata"]["namespace"] == ns
                            and (not wanted or e["involvedObject"]["name"] == wanted)
                        ]
                        self.send_json(
                            200,
                            {
                                "kind": "EventList",
                                "apiVersion": "v1",
                                "metadata": {},
                                "items": items,
                            },
                        )
                    else:
                        self.status(
                            404, "NotFound", f"{method} {url.path} is not served by the double"
                        )

            def do_GET(self) -> None:
                self.route("GET")

            def do_POST(self) -> None:
                self.route("POST")

            def do_DELETE(self) -> None:
                self.route("DELETE")

            # ---- pods/exec over a websocket (v4.channel.k8s.io)

            def exec(self, ns: str, name: str, query: dict[str, list[str]]) -> None:
                c = double.container(ns, name)
                if c is None or not c.attrs["State"]["Running"]:
                    self.status(
                        404 if c is None else 400, "BadRequest", f"pod {name} is not running"
                    )
                    return
                key = self.headers.get("Sec-WebSocket-Key")
                if not key or self.headers.get("Upgrade", "").lower() != "websocket":
                    self.status(400, "BadRequest", "exec needs a websocket upgrade")
                    return
                accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
                self.end_headers()
                self.wfile.flush()
                api = double.docker.api
                exec_id = api.exec_create(
                    c.id, query.get("command", []), stdin=True, stdout=True, stderr=True
                )["Id"]
                sock = api.exec_start(exec_id, socket=True)._sock
                client_sock = self.connection
                threading.Thread(
                    target=self._pump_out, args=(sock, client_sock, api, exec_id), daemon=True
                ).start()
                self._pump_in(client_sock, sock)
                self.close_connection = True

            def _pump_in(self, client_sock: socket.socket, sock: socket.socket) -> None:
                """Client frames -> the exec's stdin."""
                reader = self.rfile
                try:
                    while True:
                        head = reader.read(2)
                        if len(head) < 2:
                            break
                        opcode, length = head[0] & 0x0F, head[1] & 0x7F
                        if length == 126:
                            length = struct.unpack(">H", reader.read(2))[0]
                        elif length == 127:
                            length = struct.unpack(">Q", reader.read(8))[0]
                        mask = reader.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                        payload = bytearray(reader.read(length))
                        for i in range(len(payload)):
                            payload[i] ^= mask[i % 4]
                        if opcode == 0x8:  # close
                            break
                        if opcode in (0x1, 0x2) and payload and payload[0] == 0:
                            sock.sendall(bytes(payload[1:]))
                except OSError:
                    pass
                finally:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

            def _pump_out(
                self, sock: socket.socket, client_sock: socket.socket, api: Any, exec_id: str
            ) -> None:
                """The exec's demultiplexed stdout/stderr -> channel 1/2 frames; then status, close."""

                def send(channel: int, data: bytes, opcode: int = 0x2) -> None:
                    payload = bytes([channel]) + data if channel >= 0 else data
                    n = len(payload)
                    head = bytes([0x80 | opcode]) + (
                        bytes([n])
                        if n < 126
                        else bytes([126]) + struct.pack(">H", n)
                        if n < 65536
                        else bytes([127]) + struct.pack(">Q", n)
                    )
                    client_sock.sendall(head + payload)

                try:
                    buf = b""
                    while True:
                        data = sock.recv(65536)
                        if not data:
                            break
                        buf += data
                        while len(buf) >= 8:
                            kind, size = struct.unpack(">BxxxI", buf[:8])
                            if len(buf) < 8 + size:
                                break
                            send(1 if kind == 1 else 2, buf[8 : 8 + size])
                            buf = buf[8 + size :]
                    code = api.exec_inspect(exec_id)["ExitCode"]
                    status = (
                        {"metadata": {}, "status": "Success"}
                        if code == 0
                        else {
                            "metadata": {},
                            "status": "Failure",
                            "reason": "NonZeroExitCode",
                            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                        }
                    )
                    send(3, json.dumps(status).encode())
                    send(-1, struct.pack(">H", 1000), opcode=0x8)
                except OSError:
                    pass

        return Handler
