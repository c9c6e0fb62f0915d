"""A wire-level Kubernetes API test double on 127.0.0.1, backed by real Docker containers.

It implements the subset the backend calls, over real HTTP(S), for the real ``kubernetes``
client: pods create / get / list (label selectors) / delete, events list (field selector), and
``pods/exec`` over a real websocket speaking ``v5.channel.k8s.io`` (or ``v4``; one byte of
channel per frame: 0 stdin, 1 stdout, 2 stderr, 3 status, 255 close-channel in v5). A pod is a
container (network none, the pod's limits and securityContext mapped to Docker); an exec is a
``docker exec`` attached socket.

Behaviours of a real cluster, each a switch a test turns on (all off by default except the ones
every real cluster has: the 32 MiB frame limit, the ``container`` parameter checked, channel 3):

- ``KubeDouble(tls=True)``: HTTPS/WSS with a self-signed CA (in the kubeconfig), and
  ``pack_frames=N`` splits exec output into N-byte frames written in one TLS record each;
- ``legacy_v4``: only ``v4.channel.k8s.io`` (pre-1.30 API servers); else v5 when offered;
- ``frame_limit``: a client frame over it closes the stream with 1009 (real: 32 MiB);
- ``idle_timeout``: an exec stream without a frame either way this long is closed;
- ``drop_streams(how)``: ``clean`` (close frame), ``reset`` (RST), ``blackhole`` (TCP stays
  open, nothing moves either way);
- ``restart(seconds)``: the API server goes away (connections reset, port refused) and returns;
- ``faults``: a list of :class:`Fault` answered (status + ``Retry-After``) to matching requests;
  ``throttle_creates``: the next N pod creates get 429; ``commit_then_504``: the next N pod
  creates are stored, then answered 504;
- ``start_delay``: pods stay Pending (ContainerCreating) this long; ``pull_backoff``: image ->
  seconds of ErrImagePull/ImagePullBackOff before the pull succeeds (a missing image: forever);
- ``pod_security = "baseline"``: PodSecurity admission rejects host namespaces, privileged,
  added capabilities, hostPath; ``ephemeral_capacity``: bytes of ephemeral storage on the one
  node, pods whose request does not fit stay Pending (Insufficient ephemeral-storage);
- ``graceful``: deletes honour ``gracePeriodSeconds`` (default 30): the pod keeps running,
  with a ``deletionTimestamp``; ``evict(ns, name)``; ``activeDeadlineSeconds`` ends a pod
  (Failed, DeadlineExceeded);
- exec of a command that cannot start: the runtime's error on channel 3 only.

Extensible: ``routes`` is a list of ``(method, regex, handler)`` tried before the built-in
routes (``handler(request, match, query, body)``; ``request.send_json``/``request.status``
answer), for resources other modules add (e.g. agent-sandbox CRDs).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import docker

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LABEL = "k8s-double.pod"
#: which double made the container: a double removes its own only (other test processes on
#: the machine run doubles of their own at the same time)
INSTANCE_LABEL = "k8s-double.instance"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
Route = tuple[str, "re.Pattern[str]", Callable[..., None]]


def _quantity(value: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 1000, "M": 10**6, "G": 10**9}
    for suffix, mult in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * mult)
    return int(value)


def _cpu(value: str) -> int:
    return int(float(value[:-1]) * 1e6) if value.endswith("m") else int(float(value) * 1e9)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
    return head + payload


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


@dataclass
class Fault:
    """Answer ``status`` (with ``Retry-After`` when set) to the next ``count`` matching requests."""

    status: int
    retry_after: float | None = None
    method: str | None = None
    path_contains: str | None = None
    count: int = 1

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class ExecStream:
    ns: str
    pod: str
    client: socket.socket
    protocol: str
    last_activity: float = field(default_factory=time.monotonic)
    blackhole: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    exec_sock: socket.socket | None = None

    def send(self, data: bytes) -> None:
        with self.send_lock:
            self.client.sendall(data)

    def close(self, how: str = "clean", code: int = 1000, reason: str = "") -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        try:
            if how == "clean":
                self.send(_frame(0x8, struct.pack(">H", code) + reason.encode()))
                socket.socket.shutdown(self.client, socket.SHUT_RDWR)
            else:  # reset: no close frame; SO_LINGER 0 makes the final close an RST
                self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # shutdown, not just close: the handler's reader holds the socket open
                socket.socket.shutdown(self.client, socket.SHUT_RDWR)
            self.client.close()
        except OSError:
            pass
        if self.exec_sock is not None:
            try:
                self.exec_sock.close()
            except OSError:
                pass


class KubeDouble:
    def __init__(self, namespaces: tuple[str, ...] = ("agentic-rollout",), *, tls: bool = False):
        self.namespaces = set(namespaces)
        self.instance = uuid.uuid4().hex
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        # a loaded daemon can take minutes per create/remove: wait rather than fail the pod
        self.docker = docker.from_env(timeout=600)
        # ---- switches
        self.forbidden: set[tuple[str, str]] = set()
        self.throttle_creates = 0
        self.commit_then_504 = 0
        self.faults: list[Fault] = []
        self.legacy_v4 = False
        self.frame_limit = 32 * 1024 * 1024
        self.idle_timeout: float | None = None
        self.pack_frames = 0
        self.start_delay = 0.0
        self.pull_backoff: dict[str, float] = {}
        self.pod_security: str | None = None
        self.ephemeral_capacity: int | None = None
        #: exec upgrade requests are read and never answered
        self.blackhole_handshakes = False
        #: a 403 with this message on every pod create (a ResourceQuota, a webhook)
        self.deny_create_pods: str | None = None
        #: bytes/s at which exec stdin is read (a slow link); None: as fast as it comes
        self.stdin_rate: float | None = None
        #: arrival time (monotonic) of every HTTP request, exec handshakes included
        self.request_times: list[float] = []
        self.graceful = False
        self.routes: list[Route] = []
        #: resources the double's RBAC never grants (SelfSubjectAccessReview answers)
        self.unauthorized_resources = {"secrets"}
        self.version = {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-double",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }
        # ---- state
        self.streams: list[ExecStream] = []
        self.negotiated: list[str] = []  # subprotocol of each exec, in order
        self.frames_in: list[int] = []  # payload size of each client frame (stdin)
        self._conns: set[socket.socket] = set()
        self._tls_dir: Path | None = None
        self._ssl: ssl.SSLContext | None = None
        self.ca_pem: bytes | None = None
        if tls:
            self._make_tls()
        self.server = self._new_server(0)
        self.port = int(self.server.server_address[1])
        self._stop = threading.Event()

    # ---- lifecycle

    def __enter__(self) -> KubeDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._watchdog, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for s in list(self.streams):
            s.close("reset")
        try:
            mine = {"label": f"{INSTANCE_LABEL}={self.instance}"}
            for c in self.docker.containers.list(all=True, filters=mine):
                try:
                    c.remove(force=True)
                except docker.errors.NotFound:
                    pass  # removed meanwhile by a deletion's background thread
        except (docker.errors.APIError, OSError) as exc:  # a slow daemon: the next exit retries
            import logging

            logging.getLogger(__name__).warning("k8s double: containers left for gc: %s", exc)
        self.docker.close()

    def _new_server(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), self._handler(), bind_and_activate=False)
        server.allow_reuse_address = True
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        server.daemon_threads = True
        if self._ssl is not None:
            server.socket = self._ssl.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        return server

    def _make_tls(self) -> None:
        import tempfile

        d = Path(tempfile.mkdtemp(prefix="k8s-double-tls-"))

        def run(*a: str) -> None:
            subprocess.run(a, cwd=d, check=True, capture_output=True)

        run(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=k8s-double-ca",
        )
        run(
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        )
        (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run(
            "openssl",
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / "srv.crt", d / "srv.key")
        self._ssl, self._tls_dir, self.ca_pem = ctx, d, (d / "ca.crt").read_bytes()

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig(self, directory: Path) -> Path:
        cluster: dict[str, Any] = {"server": self.url}
        if self.ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem).decode()
        path = directory / "kubeconfig"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "double",
                    "clusters": [{"name": "double", "cluster": cluster}],
                    "users": [{"name": "u", "user": {"token": "test-token"}}],
                    "contexts": [{"name": "double", "context": {"cluster": "double", "user": "u"}}],
                }
            )
        )
        return path

    def reset(self) -> None:
        """Every switch back off (the session-wide double is shared by tests)."""
        self.forbidden.clear()
        self.faults.clear()
        self.throttle_creates = self.commit_then_504 = self.pack_frames = 0
        self.legacy_v4 = self.graceful = self.blackhole_handshakes = False
        self.frame_limit = 32 * 1024 * 1024
        self.idle_timeout = self.pod_security = self.ephemeral_capacity = None
        self.start_delay = 0.0
        self.stdin_rate = self.deny_create_pods = None
        self.pull_backoff.clear()

    # ---- faults

    def restart(self, seconds: float) -> threading.Thread:
        """The API server goes away for ``seconds``: every connection reset, the port refused."""
        old = self.server
        old.shutdown()
        old.server_close()
        for s in list(self.streams):
            s.close("reset")
        for conn in list(self._conns):
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socket.socket.shutdown(conn, socket.SHUT_RDWR)  # wakes the handler's reader
                conn.close()
            except OSError:
                pass

        def back() -> None:
            time.sleep(seconds)
            self.server = self._new_server(self.port)
            self.server.serve_forever()

        t = threading.Thread(target=back, daemon=True)
        t.start()
        return t

    def drop_streams(self, how: str, pod: str | None = None) -> int:
        """End exec streams (of one pod, or all): clean, reset or blackhole."""
        hit = [s for s in self.streams if not s.closed.is_set() and pod in (None, s.pod)]
        for s in hit:
            if how == "blackhole":
                s.blackhole.set()
            else:
                s.close(how)
        return len(hit)

    def evict(
        self, ns: str, name: str, message: str = "The node was low on resource: memory."
    ) -> None:
        with self.lock:
            pod = self.pods[(ns, name)]
            pod["_terminal"] = {"phase": "Failed", "reason": "Evicted", "message": message}
        self._kill(ns, name)
        self.event(ns, name, "Evicted", message)

    def _kill(self, ns: str, name: str) -> None:
        """The kubelet's side of a deletion: streams end now, the container goes in the
        background (as on a node, and Docker can take seconds to remove one)."""
        for s in list(self.streams):
            if (s.ns, s.pod) == (ns, name):
                s.close("clean")
        threading.Thread(target=self._remove_container, args=(ns, name), daemon=True).start()

    def _remove_container(self, ns: str, name: str) -> None:
        c = self.container(ns, name)
        if c is not None:
            try:
                c.remove(force=True)
            except docker.errors.APIError:
                pass  # already going

    def _start_container(self, ns: str, name: str, image: str, kwargs: dict[str, Any]) -> None:
        """The kubelet starting the pod's container, off the request thread."""
        pod = self.pods.get((ns, name))
        try:
            # create + start, never run(): run() pulls a missing image, i.e. talks to a registry
            container = self.docker.containers.create(image, **kwargs)
            container.start()
            if pod is not None:
                pod["_cid"] = container.id
        except Exception as exc:  # the runtime failed: the pod says so, the double goes on
            if pod is not None:
                pod["_start_error"] = str(getattr(exc, "explanation", None) or exc)
        if self.pods.get((ns, name)) is not pod or (pod is not None and "_terminal" in pod):
            self._remove_container(ns, name)  # deleted while it was starting

    def _watchdog(self) -> None:
        """Idle timeouts of exec streams; graceful deletions that ran out their grace."""
        while not self._stop.wait(0.1):
            now = time.monotonic()
            if self.idle_timeout is not None:
                for s in list(self.streams):
                    if not s.closed.is_set() and now - s.last_activity > self.idle_timeout:
                        s.close("clean", 1000, "idle timeout")
            with self.lock:
                due = [k for k, p in self.pods.items() if p.get("_delete_at", float("inf")) < now]
                expired = [
                    k
                    for k, p in self.pods.items()
                    if p.get("_scheduled")
                    and "_terminal" not in p
                    and now - p["_created"] > p["spec"].get("activeDeadlineSeconds", float("inf"))
                ]
                for k in expired:
                    self.pods[k]["_terminal"] = {
                        "phase": "Failed",
                        "reason": "DeadlineExceeded",
                        "message": "Pod was active on the node longer than the specified deadline",
                    }
            for ns, name in expired:
                self._kill(ns, name)
            for ns, name in due:
                self.delete_pod(ns, name, grace=0)
            if self.ephemeral_capacity is not None:
                self._reschedule()

    # ---- pods

    def container(self, ns: str, name: str) -> Any:
        found = self.docker.containers.list(all=True, filters={"label": f"{LABEL}={ns}/{name}"})
        return found[0] if found else None

    def admission(self, spec: dict[str, Any]) -> str | None:
        """PodSecurity ``baseline``: the first violation, or None."""
        if self.pod_security != "baseline":
            return None
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                return f"host namespaces ({key}=true)"
        for v in spec.get("volumes") or []:
            if "hostPath" in v:
                return f'hostPath volumes (volume "{v.get("name")}")'
        allowed = {
            "AUDIT_WRITE",
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "FSETID",
            "KILL",
            "MKNOD",
            "NET_BIND_SERVICE",
            "SETFCAP",
            "SETGID",
            "SETPCAP",
            "SETUID",
            "SYS_CHROOT",
        }
        for c in spec.get("containers") or []:
            sc = c.get("securityContext") or {}
            if sc.get("privileged"):
                return f'privileged (container "{c["name"]}" must not set privileged=true)'
            extra = set((sc.get("capabilities") or {}).get("add") or []) - allowed
            if extra:
                return f'non-default capabilities (container "{c["name"]}": {sorted(extra)})'
            if any(p.get("hostPort") for p in c.get("ports") or []):
                return "hostPort"
        return None

    def _storage_request(self, spec: dict[str, Any]) -> int:
        total = 0
        for c in spec.get("containers") or []:
            value = ((c.get("resources") or {}).get("requests") or {}).get("ephemeral-storage")
            total += _quantity(value) if value else 0
        return total

    def create_pod(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        name = meta["name"]
        spec = body["spec"]
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **meta,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
            },
            "spec": spec,
            "status": {"phase": "Pending"},
            "_created": time.monotonic(),
        }
        self.pods[(ns, name)] = pod
        with self.lock:
            unschedulable = self._unschedulable(ns, name)
            if unschedulable:
                pod["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": unschedulable,
                    }
                ]
                self.event(ns, name, "FailedScheduling", unschedulable)
                return self.public(pod)
            pod["_scheduled"] = True
        self._bind(ns, name)
        return self.public(pod)

    def _unschedulable(self, ns: str, name: str) -> str | None:
        """Why the pod cannot be placed now (None: it fits). Terminal pods free their share,
        as the scheduler counts only pods that still run."""
        spec = self.pods[(ns, name)]["spec"]
        if "unschedulable" in (spec.get("nodeSelector") or {}):
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        if self.ephemeral_capacity is not None:
            used = sum(
                self._storage_request(p["spec"])
                for k, p in self.pods.items()
                if k != (ns, name) and p.get("_scheduled") and "_terminal" not in p
            )
            if used + self._storage_request(spec) > self.ephemeral_capacity:
                return "0/1 nodes are available: 1 Insufficient ephemeral-storage."
        return None

    def _reschedule(self) -> None:
        """The scheduler's retry: pending pods, oldest first, placed once they fit (storage
        freed by a deleted or finished pod)."""
        with self.lock:
            pending = sorted(
                (p["_created"], k)
                for k, p in self.pods.items()
                if not p.get("_scheduled") and "_terminal" not in p
            )
            placed = []
            for _, (ns, name) in pending:
                if self._unschedulable(ns, name) is None:
                    pod = self.pods[(ns, name)]
                    pod["_scheduled"] = True
                    pod["status"] = {"phase": "Pending"}
                    placed.append((ns, name))
        for ns, name in placed:
            self._bind(ns, name)

    def _bind(self, ns: str, name: str) -> None:
        """Start the scheduled pod's container (the kubelet's part)."""
        pod = self.pods[(ns, name)]
        spec = pod["spec"]
        ctr = spec["containers"][0]
        limits = (ctr.get("resources") or {}).get("limits") or {}
        security = ctr.get("securityContext") or {}
        pod_security = spec.get("securityContext") or {}
        kwargs: dict[str, Any] = {
            "command": ctr.get("command"),
            "name": f"k8s-{ns}-{name}",
            "network_mode": "none",
            # the double's own labels only: the pod's would make the Docker reaper claim it
            "labels": {LABEL: f"{ns}/{name}", INSTANCE_LABEL: self.instance},
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
        image = ctr["image"]
        pod["_pull_ok_at"] = time.monotonic() + self.pull_backoff.get(image, 0.0)
        pod["_ready_at"] = time.monotonic() + self.start_delay
        try:
            self.docker.images.get(image)
        except docker.errors.ImageNotFound:
            pod["_pull_ok_at"] = float("inf")  # the kubelet backs off and retries forever
        else:
            threading.Thread(
                target=self._start_container, args=(ns, name, image, kwargs), daemon=True
            ).start()
        self.event(ns, name, "Scheduled", f"Successfully assigned {ns}/{name} to double-node")

    @staticmethod
    def public(pod: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in pod.items() if not k.startswith("_")}

    def pod_view(self, ns: str, name: str) -> dict[str, Any] | None:
        pod = self.pods.get((ns, name))
        if pod is None:
            return None
        if not pod.get("_scheduled"):
            return self.public(pod)
        spec = pod["spec"]
        ctr_spec = spec["containers"][0]
        base = {
            "name": ctr_spec["name"],
            "restartCount": 0,
            "image": ctr_spec["image"],
            "imageID": "",
        }
        now = time.monotonic()
        terminal = pod.get("_terminal")
        if terminal is not None:
            pod["status"] = {
                **terminal,
                "containerStatuses": [
                    {
                        **base,
                        "ready": False,
                        "state": {"terminated": {"exitCode": 137, "reason": "Error"}},
                    }
                ],
            }
            return self.public(pod)
        if now < pod["_pull_ok_at"]:
            # the kubelet alternates: a pull attempt fails, then it backs off
            attempt = int((now - pod["_created"]) / 0.5)
            image = ctr_spec["image"]
            if attempt % 2 == 0:
                reason = "ErrImagePull"
                message = (
                    f"rpc error: code = NotFound desc = failed to pull and unpack image "
                    f'"{image}": not found'
                )
                if not pod.get("_pull_event"):
                    pod["_pull_event"] = True
                    self.event(ns, name, "Failed", f'Failed to pull image "{image}": not found')
            else:
                reason, message = "ImagePullBackOff", f'Back-off pulling image "{image}"'
            pod["status"] = {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        **base,
                        "ready": False,
                        "state": {"waiting": {"reason": reason, "message": message}},
                    }
                ],
            }
            return self.public(pod)
        if now < pod["_ready_at"]:
            pod["status"] = {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [
                    {**base, "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
                ],
            }
            return self.public(pod)
        if "_start_error" in pod:
            pod["status"] = {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        **base,
                        "ready": False,
                        "state": {
                            "waiting": {
                                "reason": "CreateContainerError",
                                "message": pod["_start_error"],
                            }
                        },
                    }
                ],
            }
            return self.public(pod)
        if "_cid" not in pod:
            pod["status"] = {
                "phase": "Pending",
                "containerStatuses": [
                    {**base, "ready": False, "state": {"waiting": {"reason": "ContainerCreating"}}}
                ],
            }
            return self.public(pod)
        try:
            c = self.docker.containers.get(pod["_cid"])
        except docker.errors.NotFound:
            c = None
        if c is not None:
            state = c.attrs["State"]
            if state["Running"]:
                pod["status"] = {
                    "phase": "Running",
                    **({"podIP": "127.0.0.1"} if spec.get("hostNetwork") else {}),
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
        return self.public(pod)

    def delete_pod(self, ns: str, name: str, grace: int | None = 0) -> dict[str, Any] | None:
        with self.lock:
            pod = self.pods.get((ns, name))
            if pod is None:
                return None
            if grace is None:
                grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            if self.graceful and grace > 0:
                # a graceful delete: Terminating, the container runs on until the grace ends
                pod["metadata"]["deletionTimestamp"] = _now()
                pod["metadata"]["deletionGracePeriodSeconds"] = grace
                pod.setdefault("_delete_at", time.monotonic() + grace)
                return self.public(pod)
            self.pods.pop((ns, name), None)
        self._kill(ns, name)
        return self.public(pod)

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

            def setup(self) -> None:
                super().setup()
                double._conns.add(self.connection)

            def finish(self) -> None:
                double._conns.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

            def send_json(
                self, status: int, obj: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def status(
                self, code: int, reason: str, message: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_json(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": reason,
                        "code": code,
                    },
                    headers,
                )

            def route(self, method: str) -> None:
                # read the body first: an early error reply must not leave it on the keep-alive stream
                length = int(self.headers.get("Content-Length") or 0)
                raw_body = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                query = parse_qs(url.query)
                double.requests.append((method, url.path))
                with double.lock:
                    fault = next((f for f in double.faults if f.matches(method, url.path)), None)
                    if fault is not None:
                        fault.count -= 1
                        if fault.count <= 0:
                            double.faults.remove(fault)
                if fault is not None:
                    names = {429: "TooManyRequests", 503: "ServiceUnavailable", 504: "Timeout"}
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = f"{fault.retry_after:g}"
                    self.status(
                        fault.status,
                        names.get(fault.status, "InternalError"),
                        "the double injected this fault",
                        headers,
                    )
                    return
                for m, pattern, handler in double.routes:
                    found = pattern.fullmatch(url.path)
                    if m == method and found:
                        handler(self, found, query, raw_body)
                        return
                if url.path.rstrip("/") == "/version":
                    self.send_json(200, double.version)
                    return
                if method == "POST" and url.path == (
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
                ):
                    body = json.loads(raw_body)
                    attrs = body["spec"]["resourceAttributes"]
                    kind = attrs["resource"] + (
                        "/" + attrs["subresource"] if attrs.get("subresource") else ""
                    )
                    allowed = (attrs["verb"], kind) not in double.forbidden and attrs[
                        "resource"
                    ] not in double.unauthorized_resources
                    self.send_json(201, {**body, "status": {"allowed": allowed}})
                    return
                parts = url.path.strip("/").split("/")
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
                if double.deny_create_pods and method == "POST" and kind == "pods":
                    self.status(403, "Forbidden", double.deny_create_pods)
                    return
                if resource == "pods" and sub == "exec":
                    self.exec(ns, name or "", query)  # lasts the whole stream: not under the lock
                    return
                with double.lock:
                    self.builtin(method, ns, resource, name, query, raw_body)

            def builtin(
                self,
                method: str,
                ns: str,
                resource: str,
                name: str | None,
                query: dict[str, list[str]],
                raw_body: bytes,
            ) -> None:
                if resource == "pods" and method == "POST":
                    if double.throttle_creates > 0:
                        double.throttle_creates -= 1
                        self.status(429, "TooManyRequests", "too many requests, retry later")
                        return
                    body = json.loads(raw_body)
                    pod_name = body["metadata"]["name"]
                    if (ns, pod_name) in double.pods:
                        self.status(409, "AlreadyExists", f'pods "{pod_name}" already exists')
                        return
                    violation = double.admission(body.get("spec") or {})
                    if violation:
                        self.status(
                            403,
                            "Forbidden",
                            f'pods "{pod_name}" is forbidden: violates PodSecurity '
                            f'"baseline:latest": {violation}',
                        )
                        return
                    created = double.create_pod(ns, body)
                    if double.commit_then_504 > 0:
                        double.commit_then_504 -= 1
                        self.status(
                            504,
                            "Timeout",
                            "Timeout: request did not complete within "
                            "requested timeout - context deadline exceeded",
                        )
                        return
                    self.send_json(201, created)
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
                        200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
                    )
                elif resource == "pods" and method == "DELETE" and name:
                    grace: int | None = None
                    if "gracePeriodSeconds" in query:
                        grace = int(query["gracePeriodSeconds"][0])
                    elif raw_body:
                        value = json.loads(raw_body).get("gracePeriodSeconds")
                        grace = None if value is None else int(value)
                    pod = double.delete_pod(ns, name, grace)
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
                        {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items},
                    )
                else:
                    self.status(404, "NotFound", f"{method} {resource} is not served by the double")

            # every request, whatever serves it (core, CRDs, exec handshakes), counted once on
            # arrival: what the load tests compare with the client's API limit
            def do_GET(self) -> None:
                double.request_times.append(time.monotonic())
                self.route("GET")

            def do_POST(self) -> None:
                double.request_times.append(time.monotonic())
                self.route("POST")

            def do_DELETE(self) -> None:
                double.request_times.append(time.monotonic())
                self.route("DELETE")

            # ---- pods/exec over a websocket (v5 / v4.channel.k8s.io)

            def exec(self, ns: str, name: str, query: dict[str, list[str]]) -> None:
                if double.blackhole_handshakes:
                    # the upgrade request was read; no answer ever comes (a half-open path)
                    while double.blackhole_handshakes and not double._stop.is_set():
                        time.sleep(0.05)
                    self.close_connection = True
                    return
                with double.lock:
                    pod = double.pods.get((ns, name))
                    view = double.pod_view(ns, name) if pod else None
                if view is None:
                    self.status(404, "NotFound", f'pods "{name}" not found')
                    return
                names = [c["name"] for c in view["spec"]["containers"]]
                wanted = query.get("container", [None])[0]
                if wanted is None and len(names) > 1:
                    self.status(
                        400,
                        "BadRequest",
                        f"a container name must be specified for pod {name}, choose one of: {names}",
                    )
                    return
                if wanted is not None and wanted not in names:
                    self.status(
                        400, "BadRequest", f"container {wanted} is not valid for pod {name}"
                    )
                    return
                cid = pod.get("_cid") if pod else None
                if view["status"].get("phase") != "Running" or cid is None:
                    self.status(400, "BadRequest", f"pod {name} is not running")
                    return
                key = self.headers.get("Sec-WebSocket-Key")
                if not key or self.headers.get("Upgrade", "").lower() != "websocket":
                    self.status(400, "BadRequest", "exec needs a websocket upgrade")
                    return
                offered = [
                    p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")
                ]
                if V5 in offered and not double.legacy_v4:
                    protocol = V5
                elif V4 in offered:
                    protocol = V4
                else:
                    self.status(400, "BadRequest", f"no supported subprotocol in {offered}")
                    return
                accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
                self.send_response(101)
                self.send_header("Upgrade", "websocket")
                self.send_header("Connection", "Upgrade")
                self.send_header("Sec-WebSocket-Accept", accept)
                self.send_header("Sec-WebSocket-Protocol", protocol)
                self.end_headers()
                self.wfile.flush()
                stream = ExecStream(ns, name, self.connection, protocol)
                double.streams.append(stream)
                double.negotiated.append(protocol)
                api = double.docker.api
                try:
                    exec_id = api.exec_create(
                        cid, query.get("command", []), stdin=True, stdout=True, stderr=True
                    )["Id"]
                    sock = api.exec_start(exec_id, socket=True)._sock
                except docker.errors.APIError as exc:  # the runtime refused: channel 3 only
                    status = {
                        "metadata": {},
                        "status": "Failure",
                        "message": f"Internal error occurred: error executing command in "
                        f"container: {exc.explanation or exc}",
                        "reason": "InternalError",
                        "code": 500,
                    }
                    stream.send(_frame(0x2, b"\x03" + json.dumps(status).encode()))
                    stream.close("clean")
                    return
                stream.exec_sock = sock
                threading.Thread(
                    target=self._pump_out, args=(stream, sock, api, exec_id), daemon=True
                ).start()
                self._pump_in(stream, sock)
                self.close_connection = True

            def _pump_in(self, stream: ExecStream, sock: socket.socket) -> None:
                """Client frames -> the exec's stdin."""
                reader = self.rfile
                try:
                    while not stream.closed.is_set():
                        if stream.blackhole.is_set():
                            stream.closed.wait()  # read nothing more: the client's sends pile up
                            break
                        head = reader.read(2)
                        if len(head) < 2:
                            break
                        opcode, length = head[0] & 0x0F, head[1] & 0x7F
                        if length == 126:
                            length = struct.unpack(">H", reader.read(2))[0]
                        elif length == 127:
                            length = struct.unpack(">Q", reader.read(8))[0]
                        mask = reader.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                        if length > double.frame_limit:
                            stream.close("clean", 1009, "message too big")
                            break
                        payload = _unmask(reader.read(length), mask)
                        if stream.blackhole.is_set():
                            stream.closed.wait()
                            break
                        stream.last_activity = time.monotonic()
                        if opcode == 0x8:  # close
                            break
                        if opcode == 0x9:  # ping: pong
                            stream.send(_frame(0xA, payload))
                            continue
                        if opcode not in (0x1, 0x2) or not payload:
                            continue
                        double.frames_in.append(len(payload) - 1)
                        if payload[0] == 0:
                            sock.sendall(payload[1:])
                            if double.stdin_rate:  # a slow link: frames drain at this rate
                                time.sleep((len(payload) - 1) / double.stdin_rate)
                        elif payload[0] == 255 and stream.protocol == V5 and payload[1:2] == b"\0":
                            sock.shutdown(socket.SHUT_WR)  # v5: the client closed stdin
                except (OSError, ValueError, struct.error):
                    pass
                finally:
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

            def _pump_out(
                self, stream: ExecStream, sock: socket.socket, api: Any, exec_id: str
            ) -> None:
                """The exec's demultiplexed stdout/stderr -> channel 1/2 frames; then status, close."""

                def send(frames: list[bytes]) -> None:
                    while stream.blackhole.is_set() and not stream.closed.is_set():
                        stream.closed.wait(0.1)
                    if stream.closed.is_set():
                        raise OSError("stream closed")
                    stream.last_activity = time.monotonic()
                    stream.send(b"".join(frames))  # one write: several frames in one TLS record

                def frames(channel: int, data: bytes) -> list[bytes]:
                    size = double.pack_frames or len(data) or 1
                    return [
                        _frame(0x2, bytes([channel]) + data[i : i + size])
                        for i in range(0, len(data), size)
                    ]

                try:
                    buf = b""
                    first = True
                    start_error = None
                    while True:
                        data = sock.recv(65536)
                        if not data:
                            break
                        buf += data
                        out: list[bytes] = []
                        while len(buf) >= 8:
                            kind, size = struct.unpack(">BxxxI", buf[:8])
                            if len(buf) < 8 + size:
                                break
                            chunk = buf[8 : 8 + size]
                            buf = buf[8 + size :]
                            if first and b"OCI runtime exec failed" in chunk:
                                start_error = chunk.decode("utf-8", "replace").strip()
                                continue
                            first = False
                            out += frames(1 if kind == 1 else 2, chunk)
                        if out:
                            send(out)
                    code = api.exec_inspect(exec_id)["ExitCode"]
                    if start_error is not None:
                        # the kubelet reports an exec that could not start on channel 3 only
                        status: dict[str, Any] = {
                            "metadata": {},
                            "status": "Failure",
                            "message": "Internal error occurred: error executing command in "
                            f"container: failed to exec in container: {start_error}",
                            "reason": "InternalError",
                            "code": 500,
                        }
                    elif code == 0:
                        status = {"metadata": {}, "status": "Success"}
                    else:
                        status = {
                            "metadata": {},
                            "status": "Failure",
                            "reason": "NonZeroExitCode",
                            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                        }
                    send([_frame(0x2, b"\x03" + json.dumps(status).encode())])
                    stream.close("clean")
                except OSError:
                    pass
                finally:
                    if stream in double.streams and stream.closed.is_set():
                        double.streams.remove(stream)

        return Handler
