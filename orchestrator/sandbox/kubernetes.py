"""Kubernetes backend: a Pod per trajectory, one exec websocket per pod for the whole trajectory.

Lifecycle (the official ``kubernetes`` client for REST; its blocking calls run on this module's
own thread pool, never the event loop's default executor, so starting pods cannot starve the RPC
of running ones): create the Pod from :meth:`KubernetesSandboxConfig.pod_manifest`, wait for
``Running`` by polling from the event loop (image pull back-off tolerated up to
``image_pull_timeout``, the pull error in the message), open ONE exec stream running the agent's
bootstrap (the same ``python3 -c BOOTSTRAP`` as Docker: the agent's source comes over that
stream's stdin) and run the RPC over it; delete the Pod in ``close()``.

Every API call is retried on 429/5xx and on connection errors, honouring ``Retry-After``, within
``api_retry_budget`` seconds. A create that committed but answered 5xx is found again on the 409
of its retry by a per-sandbox annotation and adopted (never a second pod).

The exec stream (``kubernetes_stream.ExecTransport``): our own frame loop after the client's
handshake; stdin chunked under the 32 MiB frame limit, channel 3 kept, v4 and v5. A heartbeat
``ping`` RPC every ``heartbeat_interval`` s keeps idle streams alive through idle timeouts and
turns a half-open connection into a failure within ``heartbeat_interval + heartbeat_timeout``
seconds; closing shuts the socket down without waiting on a blocked send.

Verified against a wire-level API double (``tests/k8s_double.py``) with fault switches, not a
live cluster: ``agentic-rollout k8s check`` verifies a live cluster (docs/kubernetes.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import math
import os
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from orchestrator import admission
from orchestrator.exceptions import (
    RpcTimeoutError,
    SandboxError,
    SandboxStartError,
)
from orchestrator.sandbox.base import ManagedSandboxConfig, Sandbox, agent_command, agent_payload
from orchestrator.sandbox.kubernetes_stream import ExecTransport, tcp_authenticate
from orchestrator.sandbox.labels import (
    LABEL_EXPIRES,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_RUN,
    label_value,
    owner_process_labels,
)
from orchestrator.sandbox.transport import StreamTransport, Transport

log = logging.getLogger(__name__)

T = TypeVar("T")

#: annotation holding a per-sandbox random id: a create that committed but answered 5xx is
#: recognised by it on the 409 of the retry, and adopted
ANNOTATION_SANDBOX_ID = "agentic-rollout.sandbox-id"
#: statuses worth retrying: throttled, or the API server / a webhook / a load balancer hiccup
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: a real API server closes an exec stream on a websocket frame over 32 MiB
WS_FRAME_LIMIT = 32 * 1024 * 1024
#: most stdin bytes socket buffers on the way (ours, the API server's, the kubelet's) hold
#: without a sign of progress, and the slowest rate the heartbeat assumes they drain at: a
#: half-open stream busy with a large write fails within interval + timeout + 16 s
PIPE_BYTES = 16 * 1024 * 1024
DRAIN_RATE = 1e6


class KubernetesSandboxConfig(ManagedSandboxConfig):
    """Settings of the Kubernetes backend; ``build()`` makes a sandbox (shared fields: the base;
    ``ttl`` is also the pod's ``activeDeadlineSeconds``, rounded up)."""

    type: Literal["kubernetes"] = "kubernetes"
    image: str = "agentic-rollout/sandbox:latest"
    namespace: str = "agentic-rollout"
    kubeconfig: str | None = Field(None, description="path; default KUBECONFIG / ~/.kube/config")
    context: str | None = None
    in_cluster: bool = Field(False, description="use the pod's service account (orchestrator Job)")
    cpu: str = "1"
    memory: str = "2Gi"
    cpu_request: str | None = None
    memory_request: str | None = None
    ephemeral_storage: str | None = "10Gi"
    run_as_non_root: bool = False
    run_as_user: int | None = None
    workdir: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    image_pull_secrets: list[str] = Field(default_factory=list)
    runtime_class: str | None = Field(None, description="e.g. gvisor or kata")
    #: a pod is scheduled and its image pulled before the agent can answer
    startup_timeout: float = Field(300.0, gt=0, description="pending -> running, then agent ready")
    keepalive: list[str] = Field(default_factory=lambda: ["sleep", "infinity"])
    create_retries: int = Field(5, ge=1)
    name_prefix: str = "agentic"
    #: "exec": the RPC runs over the exec websocket (through the API server); "tcp": the agent is
    #: bootstrapped over exec, then listens on tcp_port and we connect to the pod IP directly
    connect: Literal["exec", "tcp"] = "exec"
    tcp_port: int = Field(7777, gt=0, lt=65536)
    tcp_listen_host: str = Field("0.0.0.0", description="where the agent listens inside the pod")
    #: merged over the generated Pod (dicts deep, everything else replaced): any field the options
    #: above do not cover, e.g. {"spec": {"priorityClassName": "rl"}}
    pod_template: dict[str, Any] = Field(default_factory=dict)
    image_pull_timeout: float = Field(
        120.0, gt=0, description="seconds of ErrImagePull/ImagePullBackOff tolerated"
    )
    api_timeout: float = Field(30.0, gt=0, description="seconds per API request (read timeout)")
    api_retry_budget: float = Field(
        60.0, ge=0, description="seconds one API call may spend retrying 429/5xx/unreachable"
    )
    heartbeat_interval: float = Field(
        30.0, ge=0, description="seconds between heartbeat pings on the RPC stream (0: off)"
    )
    heartbeat_timeout: float = Field(
        30.0, gt=0, description="a heartbeat without reply this long: the connection is dead"
    )
    write_timeout: float = Field(
        60.0, gt=0, description="a stdin write stalled this long (plus 1 s/MB): stream dead"
    )
    max_ws_frame: int = Field(
        1 << 20, gt=1024, le=WS_FRAME_LIMIT - 1, description="bytes of stdin per websocket frame"
    )
    #: in-cluster: make the orchestrator's own pod (env POD_NAME/POD_UID, downward API) the
    #: owner of each sandbox pod, so deleting the orchestrator pod garbage-collects its sandboxes
    owner_references: bool = True

    def build(self, **overrides: Any) -> KubernetesSandbox:
        return KubernetesSandbox(self.with_overrides(overrides))

    def pod_manifest(self, name: str, sandbox_id: str | None = None) -> dict[str, Any]:
        """The Pod, as JSON: isolation defaults, limits, labels for the reaper."""
        labels = {
            LABEL_MANAGED: "1",
            LABEL_OWNER: label_value(self.owner),
            LABEL_RUN: label_value(self.run_id),
            **self.labels,
        }
        annotations = {
            LABEL_EXPIRES: str(int(time.time() + self.ttl)),
            **owner_process_labels(),
            **self.annotations,
        }
        if sandbox_id:
            annotations[ANNOTATION_SANDBOX_ID] = sandbox_id
        requests = {
            "cpu": self.cpu_request or self.cpu,
            "memory": self.memory_request or self.memory,
        }
        limits = {"cpu": self.cpu, "memory": self.memory}
        if self.ephemeral_storage:
            requests["ephemeral-storage"] = limits["ephemeral-storage"] = self.ephemeral_storage
        pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
        if self.run_as_non_root:
            pod_security["runAsNonRoot"] = True
            pod_security["runAsUser"] = self.run_as_user or 1000
        elif self.run_as_user is not None:
            pod_security["runAsUser"] = self.run_as_user
        container: dict[str, Any] = {
            "name": "sandbox",
            "image": self.image,
            "command": list(self.keepalive),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {"requests": requests, "limits": limits},
        }
        if self.workdir:
            container["workingDir"] = self.workdir
        if self.env:
            container["env"] = [{"name": k, "value": v} for k, v in sorted(self.env.items())]
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": math.ceil(self.ttl),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security,
            "containers": [container],
        }
        if self.node_selector:
            spec["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            spec["tolerations"] = list(self.tolerations)
        if self.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": s} for s in self.image_pull_secrets]
        if self.runtime_class:
            spec["runtimeClassName"] = self.runtime_class
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "annotations": annotations,
        }
        owner = os.environ.get("POD_NAME"), os.environ.get("POD_UID")
        if self.in_cluster and self.owner_references and all(owner):
            metadata["ownerReferences"] = [
                {"apiVersion": "v1", "kind": "Pod", "name": owner[0], "uid": owner[1]}
            ]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
        return _deep_merge(pod, self.pod_template)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_CONFIGS: dict[tuple[bool, str | None, str | None], Any] = {}
_CONFIG_LOCK = threading.Lock()
_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def load_configuration(config: KubernetesSandboxConfig) -> Any:
    """The client Configuration, loaded once per process per (kubeconfig, context).

    Loading runs exec-plugin auth (EKS/GKE ``aws``/``gke-gcloud-auth-plugin``: a process and a
    token request each time); per sandbox at ``--concurrency 64`` that is 64 plugin runs per
    start wave. The client refreshes an expiring token through the configuration's hook.
    """
    from kubernetes import client
    from kubernetes import config as kube_config

    path = config.kubeconfig or os.environ.get("KUBECONFIG")
    key = (config.in_cluster, None if config.in_cluster else path, config.context)
    with _CONFIG_LOCK:
        cached = _CONFIGS.get(key)
        if cached is not None:
            return cached
        configuration = client.Configuration()
        try:
            if config.in_cluster:
                kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=config.kubeconfig,
                    context=config.context,
                    client_configuration=configuration,
                )
        except Exception as exc:
            where = "in-cluster service account" if config.in_cluster else path or "~/.kube/config"
            raise SandboxStartError(
                f"cannot load the Kubernetes configuration from {where}"
                f"{' (context ' + repr(config.context) + ')' if config.context else ''}: {exc}"
            ) from exc
        # urllib3 would resend a request on a dropped connection by itself, unseen by the API
        # limiter: the backends' own retry loops resend instead, through the limiter
        configuration.retries = False
        _CONFIGS[key] = configuration
        return configuration


def api_client(config: KubernetesSandboxConfig, backend: str = "kubernetes") -> Any:
    """A fresh ApiClient (own connection pool) over the process-wide configuration, every
    request of which waits for ``backend``'s API limiter (:func:`limit_requests`)."""
    from kubernetes import client

    return limit_requests(client.ApiClient(load_configuration(config)), backend)


def limit_requests(api: Any, backend: str) -> Any:
    """Make every HTTP request ``api`` sends (reads, polls, creates, deletes, list and watch,
    redirects) first wait for the process-wide API limiter of ``backend``, in the sending
    thread right before the request goes out (``admission.ApiRateLimiter``). The exec
    handshake does not use this pool: :meth:`KubernetesSandbox._exec_stream` asks itself."""
    limiter = admission.controller(backend).api
    pool_manager = api.rest_client.pool_manager
    send = pool_manager.urlopen

    def limited(*args: Any, **kwargs: Any) -> Any:
        limiter.acquire_sync()
        return send(*args, **kwargs)

    pool_manager.urlopen = limited
    return api


def api_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for blocking API calls, apart from the loop's default executor (which RPC writes
    of other backends and to_thread users share): a slow API server never starves them."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="k8s-api")
        return _POOL


def _status(exc: BaseException) -> int:
    """HTTP status of an ApiException, also for a refused websocket handshake (status 0 with
    "Handshake status 403 Forbidden -+-+- {headers} -+-+- {body}" as its reason)."""
    status = int(getattr(exc, "status", 0) or 0)
    if not status:
        found = re.search(r"Handshake status (\d{3})", str(getattr(exc, "reason", "") or ""))
        if found:
            status = int(found.group(1))
    return status


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None)
    value = headers.get("Retry-After") if headers is not None and hasattr(headers, "get") else None
    if value is None:  # a refused handshake carries its headers in the reason text
        found = re.search(
            r"retry-after['\"]?:\s*['\"]?(\d+)", str(getattr(exc, "reason", "")), re.I
        )
        value = found.group(1) if found else None
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else None
    except ValueError:
        return None


def _retryable(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = _status(exc)
        if status in RETRY_STATUSES:
            return True
        # a websocket that could not connect at all (refused, reset) has status 0, no handshake
        return status == 0 and "Handshake status" not in str(exc.reason or "")
    import urllib3

    return isinstance(exc, (urllib3.exceptions.HTTPError, OSError))


class KubernetesSandbox(Sandbox):
    backend: ClassVar[str] = "kubernetes"

    def __init__(self, config: KubernetesSandboxConfig) -> None:
        super().__init__(
            name=f"{config.name_prefix}-{uuid.uuid4().hex[:10]}",
            startup_timeout=config.startup_timeout,
            limits=config.limits,
        )
        self.config = config
        self.sandbox_id = uuid.uuid4().hex
        self._api_client: Any = None
        self._core: Any = None
        self.pod_created = False
        self._maybe_created = False  # a create was sent: teardown deletes by name
        self.container = "sandbox"  # the exec target, from the running pod's spec
        self.protocol: str | None = None  # negotiated exec subprotocol
        self._exec: ExecTransport | None = None
        self._abort: Callable[[str], None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.lost: str | None = None  # set when the heartbeat declared the connection dead

    def describe(self) -> str:
        return f"kubernetes sandbox {self.config.namespace}/{self.name} (image {self.config.image})"

    # ---- a pod someone else created (kodo): our exec stream into it, nothing more

    @classmethod
    def for_pod(cls, config: KubernetesSandboxConfig, name: str) -> KubernetesSandbox:
        """A handle on an existing pod ``name`` that this handle neither created nor deletes:
        :meth:`attach_existing` waits for it and opens the agent's exec stream,
        :meth:`detach` closes the handle's API client."""
        handle = cls(config)
        handle.name = name
        return handle

    async def attach_existing(self) -> Transport:
        """Wait for the pod to run (image pull back-off, the container named as in its spec),
        then the exec stream running the agent's bootstrap (the caller streams the agent in)."""
        await self._wait_running()
        return await self._attach()

    async def detach(self) -> None:
        await self._teardown_client()

    # ---- lifecycle

    async def start(self, *, queue: bool = True) -> KubernetesSandbox:
        await super().start(queue=queue)
        if self.config.heartbeat_interval > 0:
            self._heartbeat = asyncio.create_task(
                self._heartbeat_loop(), name=f"heartbeat-{self.name}"
            )
        return self

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await super().close()

    async def _heartbeat_loop(self) -> None:
        """A ping every interval: traffic that resets idle deadlines on the way (kubelet, API
        server, load balancers), and a bound on how long a half-open connection goes unseen.

        The verdict does not wait for the ping's reply: on one stream a reply queues behind a
        large write in flight (a healthy but slow link would look dead). Any sign of life
        within ``heartbeat_timeout`` of the ping counts (``ExecTransport.alive_since``: bytes
        received, frames of a write going out, the peer acknowledging what we sent), plus
        time for what sits in buffers unanswered (at most ``PIPE_BYTES`` at ``DRAIN_RATE``)."""
        rpc = self.rpc
        interval, timeout = self.config.heartbeat_interval, self.config.heartbeat_timeout
        ping: asyncio.Task[Any] | None = None
        try:
            while not rpc.closed:
                await asyncio.sleep(interval)
                stream = self._exec
                if stream is None:  # direct TCP: the reply is the only signal
                    try:
                        await rpc.call("ping", timeout=timeout)
                    except RpcTimeoutError:
                        self._declare_lost(f"no reply to a heartbeat ping within {timeout:g}s")
                        return
                    except SandboxError:
                        return
                    continue
                sent = time.monotonic()
                unacked = stream.unacked_bytes()
                if ping is None or ping.done():  # one in flight at most, behind a long write
                    ping = asyncio.create_task(rpc.call("ping", timeout=None))
                    ping.add_done_callback(_ignore_result)
                while not stream.alive_since(sent, unacked):
                    if _is_closed(rpc):  # (a call: the loop's condition narrowed the attribute)
                        return
                    # bytes already delivered into buffers (ours, the peer's, proxies') show
                    # no progress while the peer reads them: allow for them at a slow rate
                    ahead = min(stream.unanswered_bytes(), PIPE_BYTES)
                    if time.monotonic() - sent > timeout + ahead / DRAIN_RATE:
                        self._declare_lost(
                            f"no sign of life on the stream within {timeout:g}s of a heartbeat "
                            "ping (nothing received, nothing of ours acknowledged)"
                        )
                        return
                    await asyncio.sleep(min(0.1, timeout / 4))
        finally:
            if ping is not None:
                ping.cancel()

    def _declare_lost(self, what: str) -> None:
        self.lost = f"{what}: the connection is half-open (API server, node or load balancer gone)"
        log.warning("%s: %s", self.describe(), self.lost)
        if self._abort is not None:
            self._abort(self.lost)

    async def _open(self) -> Transport:
        await self._create_pod()
        await self._wait_running()
        if self.config.connect == "tcp":
            return await self._open_tcp()
        transport = await self._attach()
        try:
            await transport.write(b"".join(agent_payload()))
        except ConnectionError as exc:  # the exec died at once: channel 3 says why
            why = await self._diagnose()
            raise SandboxStartError(
                f"{self.describe()}: could not stream the agent in: {why or exc}"
            ) from exc
        self.agent_injected = True
        return transport

    async def _attach(self, extra_args: list[str] | None = None) -> ExecTransport:
        """Open the exec stream running the agent's bootstrap, as a transport."""
        from kubernetes.client.exceptions import ApiException

        try:
            ws = await self._api(
                "create pods/exec",
                self._exec_stream,
                extra_args,
                budget=min(self.config.api_retry_budget, self.config.startup_timeout),
            )
        except ApiException as exc:
            raise SandboxStartError(self._api_error("create", "pods/exec", exc)) from exc
        except OSError as exc:  # a handshake with no answer (TimeoutError), refused, reset
            raise SandboxStartError(
                f"{self.describe()}: cannot open the exec stream: {_short(exc)}"
            ) from exc
        transport = ExecTransport(
            ws,
            asyncio.get_running_loop(),
            max_frame=self.config.max_ws_frame,
            write_timeout=self.config.write_timeout,
        )
        self.protocol = transport.subprotocol
        self._exec = transport
        self._abort = transport.abort
        return transport

    async def _open_tcp(self) -> Transport:
        """Bootstrap over exec, hand the agent a per-sandbox secret on that stream, wait for it to
        listen, then connect to the pod IP and prove we hold the secret (HMAC of the agent's
        challenge): a connection that cannot is dropped by the agent."""
        address = f"{self.config.tcp_listen_host}:{self.config.tcp_port}"
        secret = secrets.token_hex(32)
        bootstrap = await self._attach(["--listen", address])
        try:
            await bootstrap.write(b"".join(agent_payload()) + f"{secret}\n".encode())
            self.agent_injected = True
            await self._wait_listening(bootstrap)
        finally:
            await bootstrap.close()  # the agent goes on serving TCP
        pod = await self._api("get pods", self._core_api().read_namespaced_pod, *self._pod_ref())
        ip = pod.status.pod_ip if pod.status else None
        if not ip:
            raise SandboxStartError(f"{self.describe()}: pod has no IP for a direct TCP connection")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    ip, self.config.tcp_port, limit=1 << 22
                )
                break
            except OSError as exc:
                if loop.time() > deadline:
                    raise SandboxStartError(
                        f"{self.describe()}: cannot connect to {ip}:{self.config.tcp_port}: {exc}"
                    ) from exc
                await asyncio.sleep(0.1)
        try:
            await asyncio.wait_for(tcp_authenticate(reader, writer, secret), 10)
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            writer.close()
            raise SandboxStartError(
                f"{self.describe()}: the agent at {ip}:{self.config.tcp_port} did not complete "
                f"the authentication handshake: {exc!r}"
            ) from exc
        self._abort = lambda _reason: writer.transport.abort()
        return StreamTransport(reader, writer)

    async def _wait_listening(self, bootstrap: ExecTransport) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.startup_timeout
        seen = b""
        while b"listening" not in seen:
            left = deadline - loop.time()
            data = b""
            if left > 0:
                try:
                    data = await asyncio.wait_for(bootstrap.read(), left)
                except asyncio.TimeoutError:
                    data = b""
            if not data:
                raise SandboxStartError(
                    f"{self.describe()}: the agent did not start listening: {seen[-300:]!r} "
                    f"{bootstrap.stderr_tail()[-500:]!r}"
                )
            seen += data

    def _core_api(self) -> Any:
        if self._core is None:
            from kubernetes import client

            self._api_client = api_client(self.config, self.backend)
            self._core = client.CoreV1Api(self._api_client)
        return self._core

    def _pod_ref(self) -> tuple[str, str]:
        return self.name, self.config.namespace

    async def _api(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        budget: float | None = None,
        on_retry: Callable[[BaseException], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """One API call on the API pool, retried on 429/5xx/unreachable with ``Retry-After``
        (else exponential backoff with jitter) for at most ``budget`` seconds."""
        loop = asyncio.get_running_loop()
        if fn != self._exec_stream:  # bound methods compare equal, never identical
            kwargs.setdefault("_request_timeout", self.config.api_timeout)
        budget = self.config.api_retry_budget if budget is None else budget
        deadline = loop.time() + budget
        delay = 0.25
        while True:
            try:
                if fn == self._exec_stream:
                    return await self._bounded_handshake(functools.partial(fn, *args, **kwargs))
                return await loop.run_in_executor(
                    api_pool(), functools.partial(fn, *args, **kwargs)
                )
            except Exception as exc:
                if not _retryable(exc):
                    raise
                wait = _retry_after(exc)
                wait = delay * (0.5 + random.random()) if wait is None else wait
                if loop.time() + wait > deadline:
                    raise
                log.info("%s: %s: %s; retrying in %.1fs", self.name, what, _short(exc), wait)
                if on_retry is not None:
                    on_retry(exc)
                await asyncio.sleep(wait)
                delay = min(delay * 2, 8.0)

    async def _bounded_handshake(self, connect: Callable[[], T]) -> T:
        """The exec websocket's handshake within ``api_timeout``: the client's ``stream()``
        has no connect timeout, and a black-holed handshake would hold the start (and an API
        thread) forever. A TimeoutError (retryable, like any unreachable server); a handshake
        that completes after we gave up is closed when it does."""
        future = api_pool().submit(connect)
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.config.api_timeout
            )
        except asyncio.TimeoutError:
            future.add_done_callback(_close_late_websocket)
            raise TimeoutError(
                f"exec handshake: no answer within {self.config.api_timeout:g}s"
            ) from None

    async def _create_pod(self) -> None:
        from kubernetes.client.exceptions import ApiException

        core = self._core_api()
        for _ in range(self.config.create_retries):
            maybe_committed = False

            def retried(exc: BaseException) -> None:
                nonlocal maybe_committed
                # 429 is refused before anything is stored; a 5xx or a lost reply may have
                # committed the pod
                maybe_committed = maybe_committed or _status(exc) != 429

            self._maybe_created = True
            try:
                await self._api(
                    "create pods",
                    core.create_namespaced_pod,
                    self.config.namespace,
                    self.config.pod_manifest(self.name, self.sandbox_id),
                    on_retry=retried,
                )
                self.pod_created = True
                return
            except ApiException as exc:
                if _status(exc) != 409:
                    raise SandboxStartError(self._api_error("create", "pods", exc)) from exc
                if maybe_committed and await self._is_ours():
                    log.info("%s: the create committed before its error: adopting", self.name)
                    self.pod_created = True
                    return
                # the name is someone else's: a new name, then retry
                self.name = f"{self.config.name_prefix}-{uuid.uuid4().hex[:10]}"
            except Exception as exc:  # connection refused, DNS, TLS, past the retry budget
                raise SandboxStartError(
                    f"{self.describe()}: Kubernetes API unreachable: {_short(exc)}"
                ) from exc
        raise SandboxStartError(
            f"{self.describe()}: create failed after {self.config.create_retries} tries "
            f"(409: every name taken)"
        )

    async def _is_ours(self) -> bool:
        try:
            pod = await self._api(
                "get pods", self._core_api().read_namespaced_pod, *self._pod_ref()
            )
        except Exception:
            return False
        notes = (pod.metadata.annotations if pod.metadata else None) or {}
        return bool(notes.get(ANNOTATION_SANDBOX_ID) == self.sandbox_id)

    def _api_error(self, verb: str, resource: str, exc: Any) -> str:
        status = _status(exc)
        body = exc.body
        text = str(exc.reason or "")
        if not exc.status and "-+-+-" in text:
            body = text.rsplit("-+-+-", 1)[-1]
        try:
            reason = json.loads(body).get("message", "")
        except (TypeError, ValueError, AttributeError):
            reason = text
        if status == 403 and "PodSecurity" in str(reason):
            return (
                f"{self.describe()}: rejected by PodSecurity admission in namespace "
                f"{self.config.namespace!r} (a policy on the pod, not a permission; see "
                f"docs/kubernetes.md): {reason}"
            )
        if status == 403 and ("exceeded quota" in str(reason) or "quota" in str(reason).lower()):
            return f"{self.describe()}: rejected by a ResourceQuota: {reason}"
        if (status == 403 and "forbidden: User" in str(reason)) or (
            status == 403 and "cannot" in str(reason)
        ):
            return (
                f"{self.describe()}: forbidden: the orchestrator may not {verb} {resource} in "
                f"namespace {self.config.namespace!r} (RBAC; see k8s/rbac.yaml): {reason}"
            )
        if status == 403:
            return f"{self.describe()}: {verb} {resource} forbidden (admission webhook?): {reason}"
        if status == 404 and verb == "create" and resource == "pods":
            return f"{self.describe()}: namespace {self.config.namespace!r} not found: {reason}"
        return f"{self.describe()}: {verb} {resource} failed ({status}): {reason}"

    async def _wait_running(self) -> Any:
        """Poll the pod from the event loop until Running; returns it. Image pull back-off is
        the kubelet retrying: tolerated up to ``image_pull_timeout``."""
        from kubernetes.client.exceptions import ApiException

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.startup_timeout
        pull_deadline: float | None = None
        pull_error = ""
        interval = 0.2
        while True:
            try:
                pod = await self._api(
                    "get pods", self._core_api().read_namespaced_pod, *self._pod_ref()
                )
            except ApiException as exc:
                raise SandboxStartError(self._api_error("get", "pods", exc)) from exc
            except Exception as exc:
                raise SandboxStartError(
                    f"{self.describe()}: Kubernetes API unreachable while waiting: {_short(exc)}"
                ) from exc
            status = pod.status
            phase = status.phase if status else None
            if phase == "Running":
                self.container = _sandbox_container(pod, self.container)
                return pod
            waiting, message = self._waiting(pod)
            now = loop.time()
            if phase in ("Failed", "Succeeded"):
                why = f" ({status.reason}: {status.message})" if status and status.reason else ""
                raise SandboxStartError(
                    f"{self.describe()}: pod {phase}{why}"
                    f"{' (' + waiting + ')' if waiting else ''}; {await self._events()}"
                )
            if waiting in ("ErrImagePull", "ImagePullBackOff"):
                if pull_deadline is None:
                    pull_deadline = now + self.config.image_pull_timeout
                if waiting == "ErrImagePull":
                    pull_error = message  # the back-off's own message only says "Back-off"
                if now > pull_deadline:
                    raise SandboxStartError(
                        f"{self.describe()}: image {self.config.image!r} did not pull within "
                        f"{self.config.image_pull_timeout:g}s (ErrImagePull: "
                        f"{pull_error or message}); {await self._events()}"
                    )
            elif waiting in (
                "InvalidImageName",
                "CreateContainerError",
                "CreateContainerConfigError",
                "RunContainerError",
            ):
                raise SandboxStartError(
                    f"{self.describe()}: pod Pending ({waiting}: {message}); {await self._events()}"
                )
            if now > deadline:
                raise SandboxStartError(
                    f"{self.describe()}: not running after "
                    f"{self.config.startup_timeout:g}s (phase {phase}"
                    f"{', ' + waiting if waiting else ''}{': ' + message if message else ''}); "
                    f"{await self._events()}"
                )
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    @staticmethod
    def _waiting(pod: Any) -> tuple[str | None, str]:
        statuses = (pod.status.container_statuses if pod.status else None) or []
        for status in statuses:
            if status.state and status.state.waiting and status.state.waiting.reason:
                return str(status.state.waiting.reason), str(status.state.waiting.message or "")
        conditions = (pod.status.conditions if pod.status else None) or []
        for cond in conditions:
            if cond.type == "PodScheduled" and cond.status == "False":
                return f"Unschedulable: {cond.message or cond.reason}", ""
        return None, ""

    async def _events(self) -> str:
        try:
            events = await self._api(
                "list events",
                self._core_api().list_namespaced_event,
                self.config.namespace,
                field_selector=f"involvedObject.name={self.name}",
                budget=5.0,
            )
        except Exception as exc:
            return f"events unavailable: {_short(exc)}"
        lines = [f"{e.reason}: {e.message}" for e in (events.items or [])][-5:]
        return "events: " + ("; ".join(lines) if lines else "none")

    def _exec_stream(self, extra_args: list[str] | None = None) -> Any:
        import websocket
        from kubernetes import client
        from kubernetes.stream import stream

        admission.controller(self.backend).api.acquire_sync()  # the handshake is a request too
        if websocket.getdefaulttimeout() is None:
            # stream() passes no timeout to the websocket's connect: without a default the
            # thread of a black-holed handshake would block forever (ExecTransport makes the
            # socket blocking again once connected)
            websocket.setdefaulttimeout(self.config.api_timeout)
        # a client of its own: stream() swaps its ApiClient's request method for the websocket
        # one until the handshake returns, so a REST call sharing it meanwhile (the teardown's
        # delete after a handshake we gave up on) would go out as a websocket upgrade
        api = client.ApiClient(load_configuration(self.config))
        try:
            return stream(
                client.CoreV1Api(api).connect_get_namespaced_pod_exec,
                self.name,
                self.config.namespace,
                command=agent_command(self.config.python) + list(extra_args or []),
                container=self.container,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                binary=True,
            )
        finally:
            api.close()  # type: ignore[no-untyped-call]  # the websocket uses no pool of it

    async def _diagnose(self) -> str | None:
        known = self.lost or (self._exec.dead if self._exec is not None else None)
        status = self._exec.exec_status if self._exec is not None else None
        if self.lost:  # the API server may be the thing that is gone: do not ask it
            return self.lost
        try:
            found = await asyncio.wait_for(self._diagnose_pod(), 5.0)
        except asyncio.TimeoutError:
            found = None
        parts = [p for p in (found, known, f"exec status: {status}" if status else None) if p]
        return "; ".join(parts) or None

    async def _diagnose_pod(self) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            pod = await self._api(
                "get pods", self._core_api().read_namespaced_pod, *self._pod_ref(), budget=0
            )
        except ApiException as exc:
            if exc.status == 404:
                return f"pod {self.config.namespace}/{self.name} no longer exists (deleted)"
            return f"pod {self.name}: {exc.status} {exc.reason}"
        except Exception as exc:
            return f"pod {self.name}: API unreachable: {_short(exc)}"
        status = pod.status
        phase = status.phase if status else None
        text = f"the exec stream to pod {self.name} closed (pod phase {phase}"
        if status and status.reason:  # Evicted, DeadlineExceeded
            text += f", {status.reason}: {status.message}"
        if pod.metadata and pod.metadata.deletion_timestamp:
            text += ", being deleted"
        return text + ")"

    async def _teardown(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            if self.pod_created or self._maybe_created:
                await self._api(
                    "delete pods",
                    self._core_api().delete_namespaced_pod,
                    *self._pod_ref(),
                    grace_period_seconds=0,
                    budget=min(self.config.api_retry_budget, 20.0),
                )
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "could not delete pod %s: %s; `agentic-rollout gc --kubernetes` reaps it",
                    self.name,
                    exc.reason,
                )
        except Exception as exc:
            log.warning("could not delete pod %s: %s", self.name, _short(exc))
        finally:
            await self._teardown_client()

    async def _teardown_client(self) -> None:
        if self._api_client is not None:
            client, self._api_client, self._core = self._api_client, None, None
            await asyncio.get_running_loop().run_in_executor(api_pool(), client.close)


def _is_closed(rpc: Any) -> bool:
    return bool(rpc.closed)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    """A heartbeat ping's outcome: its reply is not the verdict (a closed stream is seen by
    the loop, a failure by the caller whose call fails)."""
    if not task.cancelled():
        task.exception()


def _close_late_websocket(future: concurrent.futures.Future[Any]) -> None:
    """A handshake that completed after :meth:`KubernetesSandbox._bounded_handshake` gave up:
    nobody will use the stream, close it."""
    if future.cancelled() or future.exception() is not None:
        return
    try:
        future.result().close()
    except Exception as exc:  # closing an abandoned stream: nothing to report it to
        log.debug("closing an abandoned exec stream: %s", exc)


def _sandbox_container(pod: Any, preferred: str) -> str:
    """Our container in a running pod: ``preferred`` when the spec has it, else the first (kodo
    names its container after the pod)."""
    names = [c.name for c in (pod.spec.containers if pod.spec else None) or []]
    return preferred if preferred in names or not names else str(names[0])


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 400 else text[:400] + "..."
