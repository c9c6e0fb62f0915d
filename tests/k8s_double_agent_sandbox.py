"""The API double (tests/k8s_double.py) taught the kubernetes-sigs agent-sandbox CRDs, and their
controller.

Served over the same real HTTP for the real ``kubernetes`` client, under
``/apis/{group}/v1beta1/namespaces/{ns}/{plural}``: ``sandboxtemplates``, ``sandboxwarmpools``,
``sandboxclaims`` (``extensions.agents.x-k8s.io``) and ``sandboxes`` (``agents.x-k8s.io``):
create / get / list / delete, and ``?watch=true`` streams (chunked JSON lines from a
``resourceVersion``; 410 Gone past the retained history). Every body is validated against the
CRD's real v1beta1 schema from shared/k8s-crds/agent-sandbox (unknown fields rejected, like
``kubectl --validate=strict``).

The controller (a thread, every ``tick`` seconds) does what agent-sandbox's does: keeps each
``SandboxWarmPool`` filled with ``replicas`` Sandboxes of its template, makes each Sandbox's pod
(a Docker container, as every pod of the base double, or - ``containers=False`` - a pod that
turns Running without one, so thousands fit on one machine), binds a claim to a ready pool
Sandbox (status ``sandbox.name``, condition Ready), deletes the bound Sandbox and its pod with
the claim (owner references), and deletes Sandboxes and claims whose ``shutdownTime`` passed.

Faults: ``error_rate`` (a share of requests answered 429 with ``Retry-After`` or 500;
``fail_next`` the next ones, in order),
``drop_watch_after`` (watch streams cut without their terminating chunk after that many
events), ``down_for(seconds)`` (every request refused with 503 for a while: the API server
down), ``forbidden`` as in the base double (verb, plural). ``request_times`` holds the arrival
time of every request, for the rate checks of bench/control_plane.py.

It only adds to the base double: it subclasses :class:`KubeDouble` and routes ``/apis/`` to
itself; pods, events and exec stay the base double's.
"""

from __future__ import annotations

import bisect
import copy
import datetime
import functools
import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema
import yaml

from tests.k8s_double import KubeDouble

CRD_DIR = Path("/work/shared/k8s-crds/agent-sandbox")
GROUP = "agents.x-k8s.io"
EXT_GROUP = "extensions.agents.x-k8s.io"
VERSION = "v1beta1"
#: plural -> (group, kind)
KINDS = {
    "sandboxes": (GROUP, "Sandbox"),
    "sandboxtemplates": (EXT_GROUP, "SandboxTemplate"),
    "sandboxwarmpools": (EXT_GROUP, "SandboxWarmPool"),
    "sandboxclaims": (EXT_GROUP, "SandboxClaim"),
}
POOL_LABEL = "agents.x-k8s.io/warm-pool"
CLAIM_LABEL = "agents.x-k8s.io/claim"


def crd_dir() -> Path:
    """Where the CRDs are: $AGENTIC_CRD_DIR, else the shared reference copy."""
    import os

    return Path(os.environ.get("AGENTIC_CRD_DIR", str(CRD_DIR)))


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected (the API server would prune them silently;
    for our manifests an unknown field is a typo)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if k != "properties"}
        if "properties" in schema:
            out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
            if "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"
            ):
                out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def load_schemas() -> dict[str, dict[str, Any]]:
    """plural -> the v1beta1 openAPIV3Schema, strict."""
    schemas = {}
    for path in sorted(crd_dir().glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        plural = crd["spec"]["names"]["plural"]
        for version in crd["spec"]["versions"]:
            if version["name"] == VERSION:
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[plural] = schema
    return schemas


_validators: dict[int, Any] = {}


def validate(plural: str, obj: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> None:
    """Raise jsonschema.ValidationError (the best match) when ``obj`` breaks the schema."""
    key = id(schemas[plural])
    validator = _validators.get(key)
    if validator is None:  # building one checks the 400 kB schema itself: once per schema
        validator = _validators[key] = jsonschema.Draft7Validator(schemas[plural])
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        raise error


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return (
        datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
        .replace(tzinfo=datetime.timezone.utc)
        .timestamp()
    )


def _condition(ready: bool, reason: str, message: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": _now(),
        }
    ]


class AgentSandboxDouble(KubeDouble):
    def __init__(
        self,
        namespaces: tuple[str, ...] = ("agentic-rollout",),
        *,
        containers: bool = True,
        tick: float = 0.05,
    ) -> None:
        super().__init__(namespaces)
        self.schemas = load_schemas()
        self.containers = containers
        self.tick = tick
        #: (plural, ns, name) -> object
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.by_plural: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.expiries: dict[str, float | None] = {}
        #: uids of Sandboxes whose pod is being made (outside the lock)
        self.making: set[str] = set()
        #: "ns/name" of every pod container this double made
        self.made: set[str] = set()
        self.rv = 0
        #: (rv, plural, ns, type, the watch event's JSON line) for watches
        self.history: list[tuple[int, str, str, str, bytes]] = []
        self.changed = threading.Condition(self.lock)
        self.crd_requests: list[tuple[float, str, str]] = []
        self.error_rate = 0.0
        self.drop_watch_after: int | None = None
        #: statuses (429 or 500) to answer the next requests with, in order
        self.fail_next: list[int] = []
        self.down_until = 0.0
        self.watch_drops = 0
        self.injected = {"429": 0, "500": 0, "503": 0}
        self.rng = random.Random(16)
        self._stop = threading.Event()
        self.server.socket.listen(1024)  # a burst of connections, not the default backlog of 5
        self.server.handle_error = _quiet_errors(self.server.handle_error)  # type: ignore[method-assign]
        self._controller = threading.Thread(
            target=self._control_loop, name="as-controller", daemon=True
        )

    # ---- lifecycle

    def __enter__(self) -> AgentSandboxDouble:
        super().__enter__()
        self._controller.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        with self.lock:
            self.changed.notify_all()
        self._controller.join(30)  # before the base removes the containers it may be touching
        if self.containers:
            self._remove_containers()
            super().__exit__(*exc)
        else:  # no container was made: leave dockerd alone (it may be busy or absent)
            self.server.shutdown()
            self.server.server_close()
            self.docker.close()

    def down_for(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    # ---- store (call with self.lock held)

    def _put(self, plural: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        self.rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        key = (plural, meta["namespace"], meta["name"])
        index = self.by_plural.setdefault(plural, {})
        if event == "DELETED":
            self.objects.pop(key, None)
            index.pop(key[1:], None)
        else:
            self.objects[key] = obj
            index[key[1:]] = obj
        # serialised once, here: the watch event as sent, whatever later changes the object
        line = json.dumps({"type": event, "object": obj}).encode() + b"\n"
        self.history.append((self.rv, plural, meta["namespace"], event, line))
        if len(self.history) > 200_000:
            del self.history[:50_000]
        self.changed.notify_all()
        return obj

    def create(self, plural: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        meta.setdefault("name", f"{KINDS[plural][1].lower()}-{uuid.uuid4().hex[:8]}")
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        body.setdefault("status", {})
        return self._put(plural, body, "ADDED")

    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, ns, name))

    def items(self, plural: str, ns: str) -> list[dict[str, Any]]:
        return [o for (n, _), o in self.by_plural.get(plural, {}).items() if n == ns]

    def delete(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.get((plural, ns, name))
        if obj is not None:
            self._put(plural, obj, "DELETED")
            if plural == "sandboxes":
                self._delete_pod(ns, name)
        return obj

    def _delete_pod(self, ns: str, name: str) -> None:
        if not self.containers:
            self.pods.pop((ns, name), None)
            return
        import docker

        try:
            self.delete_pod(ns, name)
        except docker.errors.APIError as exc:  # "removal already in progress": a second delete
            if exc.status_code not in (404, 409):
                raise
            self.pods.pop((ns, name), None)

    def _remove_containers(self) -> None:
        """Remove our containers, waiting out removals already in progress (the base double's
        exit would fail on their 409)."""
        import docker

        from tests.k8s_double import INSTANCE_LABEL, LABEL

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # ours only: other doubles on this machine label theirs with the same key
            try:
                mine = {"label": f"{INSTANCE_LABEL}={self.instance}"}
                listed = self.docker.containers.list(all=True, filters=mine)
            except docker.errors.NotFound:  # one went away while being listed: look again
                continue
            found = [c for c in listed if c.labels.get(LABEL) in self.made]
            if not found:
                return
            for c in found:
                try:
                    c.remove(force=True)
                except docker.errors.APIError as exc:
                    if exc.status_code not in (404, 409):
                        raise
            time.sleep(0.5)

    # ---- the controller

    def _make_pod(self, sandbox: dict[str, Any]) -> None:
        ns, name = sandbox["metadata"]["namespace"], sandbox["metadata"]["name"]
        template = sandbox["spec"]["podTemplate"]
        body = {
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        if self.containers:
            self.made.add(f"{ns}/{name}")
            self.create_pod(ns, body)  # a Docker container, Pending until it runs
        else:
            self.pods[(ns, name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                **body,
                "status": {"phase": "Running", "podIP": "10.0.0.1"},
            }

    def _pod_running(self, ns: str, name: str) -> bool:
        if not self.containers:
            return (ns, name) in self.pods
        pod = self.pod_view(ns, name)
        return bool(pod and pod["status"].get("phase") == "Running")

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception as exc:  # a controller bug must show, not hang the tests
                print(f"agent-sandbox double controller: {exc!r}")
            self._stop.wait(self.tick)

    def reconcile(self) -> None:
        now = time.time()
        with self.lock:
            wanted = [
                s
                for ns in self.namespaces
                for s in self.items("sandboxes", ns)
                if (ns, s["metadata"]["name"]) not in self.pods
                and s["metadata"]["uid"] not in self.making
            ]
            self.making.update(s["metadata"]["uid"] for s in wanted)
        for sandbox in wanted:  # no lock: Docker is slow, and requests must go on meanwhile
            try:
                self._make_pod(sandbox)
            finally:
                self.making.discard(sandbox["metadata"]["uid"])
        with self.lock:
            for sandbox in wanted:  # deleted while its pod was being made
                meta = sandbox["metadata"]
                if self.get("sandboxes", meta["namespace"], meta["name"]) is None:
                    self._delete_pod(meta["namespace"], meta["name"])
            # shutdownTime: the controller deletes what a dead client left
            for plural in ("sandboxclaims", "sandboxes"):
                for ns in self.namespaces:
                    for obj in self.items(plural, ns):
                        at = self._expiry(plural, obj)
                        if at is not None and at <= now:
                            self._delete_cascade(plural, ns, obj["metadata"]["name"])
            for ns in self.namespaces:
                self._reconcile_sandboxes(ns)
                self._reconcile_pools(ns)
                self._reconcile_claims(ns)

    def _expiry(self, plural: str, obj: dict[str, Any]) -> float | None:
        uid = obj["metadata"]["uid"]
        if uid not in self.expiries:  # parsed once per object: thousands are checked per tick
            spec = obj.get("spec") or {}
            self.expiries[uid] = _parse_time(
                (spec.get("lifecycle") or {}).get("shutdownTime")
                if plural == "sandboxclaims"
                else spec.get("shutdownTime")
            )
        return self.expiries[uid]

    def _delete_cascade(self, plural: str, ns: str, name: str) -> None:
        obj = self.delete(plural, ns, name)
        if obj is None:
            return
        uid = obj["metadata"]["uid"]
        # owner references: a claim owns its bound Sandbox, a pool its unclaimed ones
        bound = ((obj.get("status") or {}).get("sandbox") or {}).get("name")
        candidates = [self.get("sandboxes", ns, bound)] if bound else self.items("sandboxes", ns)
        for sandbox in candidates:
            owners = (sandbox or {}).get("metadata", {}).get("ownerReferences") or []
            if sandbox is not None and any(o.get("uid") == uid for o in owners):
                self.delete("sandboxes", ns, sandbox["metadata"]["name"])

    def _reconcile_sandboxes(self, ns: str) -> None:
        for sandbox in self.items("sandboxes", ns):
            name = sandbox["metadata"]["name"]
            if (ns, name) not in self.pods:
                continue  # made at the start of the next reconcile
            was = (sandbox.get("status") or {}).get("conditions") or []
            if was and was[0]["status"] == "True":
                continue  # ready stays ready (a lost pod fails the exec stream instead)
            ready = self._pod_running(ns, name)
            if not was or (was[0]["status"] == "True") != ready:
                sandbox["status"] = {
                    "conditions": _condition(
                        ready,
                        "DependenciesReady" if ready else "PodNotReady",
                        "the pod is running" if ready else "the pod is not running yet",
                    ),
                    "podIPs": ["10.0.0.1"] if ready else [],
                }
                self._put("sandboxes", sandbox, "MODIFIED")

    def _reconcile_pools(self, ns: str) -> None:
        for pool in self.items("sandboxwarmpools", ns):
            name = pool["metadata"]["name"]
            template = self.get("sandboxtemplates", ns, pool["spec"]["sandboxTemplateRef"]["name"])
            members = [
                s
                for s in self.items("sandboxes", ns)
                if (s["metadata"].get("labels") or {}).get(POOL_LABEL) == name
                and CLAIM_LABEL not in (s["metadata"].get("labels") or {})
            ]
            want = int(pool["spec"].get("replicas", 1))
            if template is not None:
                for _ in range(want - len(members)):
                    pod_template = json.loads(json.dumps(template["spec"]["podTemplate"]))
                    pod_template.setdefault("spec", {}).setdefault(
                        "automountServiceAccountToken", False
                    )
                    self.create(
                        "sandboxes",
                        ns,
                        {
                            "apiVersion": f"{GROUP}/{VERSION}",
                            "kind": "Sandbox",
                            "metadata": {
                                "name": f"{name}-{uuid.uuid4().hex[:6]}",
                                "labels": {POOL_LABEL: name},
                                "ownerReferences": [
                                    {
                                        "apiVersion": f"{EXT_GROUP}/{VERSION}",
                                        "kind": "SandboxWarmPool",
                                        "name": name,
                                        "uid": pool["metadata"]["uid"],
                                    }
                                ],
                            },
                            "spec": {"podTemplate": pod_template},
                        },
                    )
            ready = sum(1 for s in members if _is_ready(s))
            status = {"replicas": len(members), "readyReplicas": ready}
            if {k: pool["status"].get(k) for k in status} != status:
                pool["status"] = {**pool["status"], **status}
                self._put("sandboxwarmpools", pool, "MODIFIED")

    def _reconcile_claims(self, ns: str) -> None:
        free: dict[str, list[dict[str, Any]]] = {}
        for s in self.items("sandboxes", ns):
            labels = s["metadata"].get("labels") or {}
            if POOL_LABEL in labels and CLAIM_LABEL not in labels and _is_ready(s):
                free.setdefault(labels[POOL_LABEL], []).append(s)
        for claim in self.items("sandboxclaims", ns):
            status = claim.get("status") or {}
            if (status.get("sandbox") or {}).get("name"):
                continue
            pool_name = claim["spec"]["warmPoolRef"]["name"]
            if self.get("sandboxwarmpools", ns, pool_name) is None:
                self._claim_status(
                    claim, False, "WarmPoolNotFound", f'SandboxWarmPool "{pool_name}" not found'
                )
                continue
            ready = free.get(pool_name)
            if not ready:
                self._claim_status(
                    claim, False, "SandboxNotReady", f'no ready sandbox in pool "{pool_name}"'
                )
                continue
            sandbox = ready.pop()
            meta = sandbox["metadata"]
            meta["labels"][CLAIM_LABEL] = claim["metadata"]["name"]
            meta["ownerReferences"] = [
                {
                    "apiVersion": f"{EXT_GROUP}/{VERSION}",
                    "kind": "SandboxClaim",
                    "name": claim["metadata"]["name"],
                    "uid": claim["metadata"]["uid"],
                }
            ]
            extra = (claim["spec"].get("additionalPodMetadata") or {}).get("labels") or {}
            pod = self.pods.get((ns, meta["name"]))
            if pod is not None:
                pod["metadata"].setdefault("labels", {}).update(extra)
            self._put("sandboxes", sandbox, "MODIFIED")
            claim["status"] = {
                "conditions": _condition(True, "SandboxReady", "bound"),
                "sandbox": {"name": meta["name"], "podIPs": ["10.0.0.1"]},
            }
            self._put("sandboxclaims", claim, "MODIFIED")

    def _claim_status(self, claim: dict[str, Any], ready: bool, reason: str, msg: str) -> None:
        was = (claim.get("status") or {}).get("conditions") or []
        if was and was[0]["reason"] == reason:
            return
        claim["status"] = {"conditions": _condition(ready, reason, msg)}
        self._put("sandboxclaims", claim, "MODIFIED")

    # ---- HTTP

    def _handler(self) -> Any:
        base: Any = super()._handler()
        double = self

        class Handler(base):  # type: ignore[misc]
            def route(self, method: str) -> None:
                if time.monotonic() < double.down_until:
                    self._drain()
                    double.injected["503"] += 1
                    self.status(503, "ServiceUnavailable", "the API server is down")
                    return
                forced = double.fail_next.pop(0) if double.fail_next else None
                if forced or (double.error_rate and double.rng.random() < double.error_rate):
                    self._drain()
                    if forced == 429 or (forced is None and double.rng.random() < 0.5):
                        double.injected["429"] += 1
                        self.send_response(429)
                        body = json.dumps(
                            {"kind": "Status", "code": 429, "reason": "TooManyRequests"}
                        ).encode()
                        self.send_header("Retry-After", "1")
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    else:
                        double.injected["500"] += 1
                        self.status(500, "InternalError", "injected server error")
                    return
                if self.path.startswith("/apis/"):
                    self.route_crd(method)
                else:
                    super().route(method)

            def _drain(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)

            def route_crd(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                query = parse_qs(url.query)
                parts = url.path.strip("/").split("/")
                # apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
                if len(parts) < 6 or parts[3] != "namespaces" or parts[5] not in KINDS:
                    self.status(404, "NotFound", f"the double does not serve {url.path}")
                    return
                group, version, ns, plural = parts[1], parts[2], parts[4], parts[5]
                name = parts[6] if len(parts) > 6 else None
                if group != KINDS[plural][0] or version != VERSION:
                    self.status(404, "NotFound", f"{group}/{version} {plural} is not served")
                    return
                watch = query.get("watch", [""])[0] in ("true", "1")
                verb = {"POST": "create", "DELETE": "delete"}.get(
                    method, "watch" if watch else ("get" if name else "list")
                )
                double.crd_requests.append((time.monotonic(), verb, plural))
                if (verb, plural) in double.forbidden:
                    self.status(
                        403,
                        "Forbidden",
                        f'{plural}.{group} is forbidden: User "system:serviceaccount:x" cannot '
                        f'{verb} resource "{plural}" in API group "{group}" in the namespace '
                        f'"{ns}"',
                    )
                    return
                if ns not in double.namespaces:
                    self.status(404, "NotFound", f'namespaces "{ns}" not found')
                    return
                if watch:
                    self.watch(plural, ns, query)
                    return
                body: Any = None
                if method == "POST":  # validated outside the lock: the schemas are big
                    try:
                        body = json.loads(raw)
                        validate(plural, body, double.schemas)
                    except (ValueError, jsonschema.ValidationError) as exc:
                        msg = getattr(exc, "message", str(exc))
                        self.status(422, "Invalid", f"{KINDS[plural][1]} is invalid: {msg}")
                        return
                with double.lock:
                    if method == "POST":
                        bname = (body.get("metadata") or {}).get("name")
                        if bname and double.get(plural, ns, bname) is not None:
                            self.status(409, "AlreadyExists", f'{plural} "{bname}" already exists')
                            return
                        self.send_json(201, double.create(plural, ns, body))
                    elif method == "GET" and name:
                        obj = double.get(plural, ns, name)
                        if obj is None:
                            self.status(404, "NotFound", f'{plural}.{group} "{name}" not found')
                        else:
                            self.send_json(200, obj)
                    elif method == "GET":
                        self.send_json(
                            200,
                            {
                                "apiVersion": f"{group}/{version}",
                                "kind": f"{KINDS[plural][1]}List",
                                "metadata": {"resourceVersion": str(double.rv)},
                                "items": double.items(plural, ns),
                            },
                        )
                    elif method == "DELETE" and name:
                        if double.get(plural, ns, name) is None:
                            self.status(404, "NotFound", f'{plural}.{group} "{name}" not found')
                            return
                        double._delete_cascade(plural, ns, name)
                        self.send_json(200, {"kind": "Status", "status": "Success"})
                    else:
                        self.status(405, "MethodNotAllowed", f"{method} {url.path}")

            def watch(self, plural: str, ns: str, query: dict[str, list[str]]) -> None:
                since = int(query.get("resourceVersion", ["0"])[0] or 0)
                timeout = float(query.get("timeoutSeconds", ["30"])[0])
                deadline = time.monotonic() + timeout
                with double.lock:
                    oldest = double.history[0][0] if double.history else double.rv + 1
                gone = since and since < oldest - 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(data: bytes) -> None:
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()

                sent = 0
                try:
                    if gone:
                        chunk(
                            json.dumps(
                                {
                                    "type": "ERROR",
                                    "object": {"kind": "Status", "code": 410, "reason": "Gone"},
                                }
                            ).encode()
                            + b"\n"
                        )
                    else:
                        cursor = since
                        while time.monotonic() < deadline and not double._stop.is_set():
                            with double.lock:
                                start = bisect.bisect_right(double.history, cursor, key=_rv)
                                tail = double.history[start:]
                                cursor = max(cursor, double.rv)
                                events = [e for e in tail if e[1] == plural and e[2] == ns]
                                if not events:
                                    double.changed.wait(min(0.5, deadline - time.monotonic()))
                                    continue
                            for _, _, _, _, line in events:
                                chunk(line)
                                sent += 1
                                if (
                                    double.drop_watch_after is not None
                                    and sent >= double.drop_watch_after
                                ):
                                    double.watch_drops += 1
                                    self.close_connection = True
                                    self.connection.shutdown(2)  # cut: no terminating chunk
                                    return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True

        return Handler


def _quiet_errors(default: Any) -> Any:
    """Clients hanging up (a cut watch, a closed test) are not errors worth a traceback."""

    def handle_error(request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            default(request, client_address)

    return handle_error


def _rv(event: tuple[Any, ...]) -> int:
    return int(event[0])


def _is_ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def template_manifest(
    name: str, image: str, *, ns: str = "agentic-rollout", memory: str = "512Mi"
) -> dict[str, Any]:
    """A SandboxTemplate of our sandbox image, as in k8s/agent-sandbox/template.yaml."""
    return {
        "apiVersion": f"{EXT_GROUP}/{VERSION}",
        "kind": "SandboxTemplate",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "sandbox",
                            "image": image,
                            "command": ["sleep", "infinity"],
                            "resources": {"limits": {"cpu": "1", "memory": memory}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                }
            }
        },
    }


def pool_manifest(
    name: str, template: str, replicas: int, *, ns: str = "agentic-rollout"
) -> dict[str, Any]:
    return {
        "apiVersion": f"{EXT_GROUP}/{VERSION}",
        "kind": "SandboxWarmPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template}},
    }
