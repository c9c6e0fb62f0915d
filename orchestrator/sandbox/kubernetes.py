"""Kubernetes backend: a Pod per trajectory, one exec websocket per pod for the whole trajectory.

Lifecycle (the official ``kubernetes`` client; its blocking calls run in threads): create the
Pod from :meth:`KubernetesSandboxConfig.pod_manifest` (retried on 409/429/5xx with backoff),
wait for ``Running`` (on failure the error carries the pod's conditions and events: image pull
failures, unschedulable), open ONE exec stream running the agent's bootstrap (the same
``python3 -c BOOTSTRAP`` as Docker: the agent's source comes over that stream's stdin, no image
rebuild, no network) and run the RPC over it; delete the Pod in ``close()``.

Each sandbox has its own ``ApiClient``: R2E-Gym's shared client orphaned pods under concurrent
creates and deletes. Verified against a wire-level API double (``tests/k8s_double.py``: HTTP +
the v4.channel.k8s.io websocket protocol, backed by Docker containers), not a live cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.exceptions import SandboxError, SandboxStartError
from orchestrator.sandbox.base import Sandbox, agent_command, agent_payload
from orchestrator.sandbox.docker import (
    LABEL_EXPIRES,
    LABEL_HOST,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PID,
    LABEL_PID_START,
    LABEL_RUN,
    default_owner,
    process_start_ticks,
)

log = logging.getLogger(__name__)


class KubernetesSandboxConfig(BaseModel):
    """Settings of the Kubernetes backend; ``build()`` makes a sandbox."""

    model_config = ConfigDict(extra="forbid")

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
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    image_pull_secrets: list[str] = Field(default_factory=list)
    runtime_class: str | None = Field(None, description="e.g. gvisor or kata")
    owner: str = Field(default_factory=default_owner)
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    ttl: int = Field(6 * 3600, gt=0, description="activeDeadlineSeconds of the pod")
    startup_timeout: float = Field(300.0, gt=0, description="pending -> running, then agent ready")
    python: str = "python3"
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

    def build(self, **overrides: Any) -> KubernetesSandbox:
        return KubernetesSandbox(self.model_copy(update=overrides) if overrides else self)

    def pod_manifest(self, name: str) -> dict[str, Any]:
        """The Pod, as JSON: isolation defaults, limits, labels for the reaper."""
        pid = os.getpid()
        labels = {
            LABEL_MANAGED: "1",
            LABEL_OWNER: _label_value(self.owner),
            LABEL_RUN: _label_value(self.run_id),
            **self.labels,
        }
        annotations = {
            LABEL_EXPIRES: str(int(time.time() + self.ttl)),
            LABEL_HOST: socket.gethostname(),
            LABEL_PID: str(pid),
            LABEL_PID_START: process_start_ticks(pid),
            **self.annotations,
        }
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
            "activeDeadlineSeconds": self.ttl,
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
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": spec,
        }
        return _deep_merge(pod, self.pod_template)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _label_value(value: str) -> str:
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63].strip("-_.")
    return clean or "unknown"


def api_client(config: KubernetesSandboxConfig) -> Any:
    """A fresh ApiClient for one sandbox (never shared)."""
    from kubernetes import client
    from kubernetes import config as kube_config

    configuration = client.Configuration()
    if config.in_cluster:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config.kubeconfig,
            context=config.context,
            client_configuration=configuration,
        )
    return client.ApiClient(configuration)


class _ExecTransport:
    """The exec websocket as a Transport: a reader thread pumps stdout into the event loop."""

    def __init__(self, ws: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._ws = ws
        self._loop = loop
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._stderr = bytearray()
        self._write_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, name="k8s-exec-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            while not self._closed and self._ws.is_open():
                self._ws.update(timeout=0.5)
                out = self._ws.read_stdout(timeout=0) if self._ws.peek_stdout() else b""
                if self._ws.peek_stderr():
                    self._stderr += self._ws.read_stderr(timeout=0)
                    del self._stderr[:-4096]
                if out:
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, out)
        except Exception as exc:  # the stream broke: EOF for the reader
            log.debug("exec stream reader stopped: %s", exc)
        finally:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, b"")
            except RuntimeError:
                pass  # the loop is closed

    async def read(self) -> bytes:
        return await self._queue.get()

    async def write(self, data: bytes) -> None:
        if self._closed or not self._ws.is_open():
            raise ConnectionError("exec stream to the pod is closed")

        def send() -> None:
            with self._write_lock:
                self._ws.write_stdin(data)

        try:
            await asyncio.to_thread(send)
        except Exception as exc:
            raise ConnectionError(f"exec stream write failed: {exc}") from exc

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._ws.close)

    def stderr_tail(self) -> str:
        return bytes(self._stderr).decode("utf-8", "replace")


class KubernetesSandbox(Sandbox):
    backend: ClassVar[str] = "kubernetes"

    def __init__(self, config: KubernetesSandboxConfig) -> None:
        super().__init__(
            name=f"{config.name_prefix}-{uuid.uuid4().hex[:10]}",
            startup_timeout=config.startup_timeout,
        )
        self.config = config
        self._api_client: Any = None
        self._core: Any = None
        self.pod_created = False

    def describe(self) -> str:
        return f"kubernetes sandbox {self.config.namespace}/{self.name} (image {self.config.image})"

    # ---- lifecycle

    async def _open(self) -> Any:
        await asyncio.to_thread(self._create_pod)
        await asyncio.to_thread(self._wait_running)
        if self.config.connect == "tcp":
            return await self._open_tcp()
        ws = await asyncio.to_thread(self._exec_agent)
        return _ExecTransport(ws, asyncio.get_running_loop())

    async def _open_tcp(self) -> Any:
        """Bootstrap over exec, wait for the agent to listen, then connect to the pod IP."""
        from orchestrator.sandbox.transport import StreamTransport

        address = f"{self.config.tcp_listen_host}:{self.config.tcp_port}"
        ws = await asyncio.to_thread(self._exec_agent, ["--listen", address])
        try:
            await asyncio.to_thread(ws.write_stdin, b"".join(agent_payload()))
            self.agent_injected = True
            await asyncio.to_thread(self._wait_listening, ws)
        finally:
            await asyncio.to_thread(ws.close)  # the agent goes on serving TCP
        pod = await asyncio.to_thread(
            self._core_api().read_namespaced_pod, self.name, self.config.namespace
        )
        ip = pod.status.pod_ip if pod.status else None
        if not ip:
            raise SandboxStartError(f"{self.describe()}: pod has no IP for a direct TCP connection")
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    ip, self.config.tcp_port, limit=1 << 22
                )
                return StreamTransport(reader, writer)
            except OSError as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise SandboxStartError(
                        f"{self.describe()}: cannot connect to {ip}:{self.config.tcp_port}: {exc}"
                    ) from exc
                await asyncio.sleep(0.1)

    def _wait_listening(self, ws: Any) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        seen = b""
        while b"listening" not in seen:
            if time.monotonic() > deadline or not ws.is_open():
                raise SandboxStartError(
                    f"{self.describe()}: the agent did not start listening: {seen[-300:]!r} "
                    f"{ws.read_stderr(timeout=0) if ws.is_open() else ''!r}"
                )
            ws.update(timeout=0.2)
            if ws.peek_stdout():
                seen += ws.read_stdout(timeout=0)

    def _core_api(self) -> Any:
        if self._core is None:
            from kubernetes import client

            self._api_client = api_client(self.config)
            self._core = client.CoreV1Api(self._api_client)
        return self._core

    def _create_pod(self) -> None:
        from kubernetes.client.exceptions import ApiException

        core = self._core_api()
        delay = 0.5
        for attempt in range(1, self.config.create_retries + 1):
            try:
                core.create_namespaced_pod(
                    self.config.namespace, self.config.pod_manifest(self.name)
                )
                self.pod_created = True
                return
            except ApiException as exc:
                if exc.status == 409:  # name taken: a new name, then retry
                    self.name = f"{self.config.name_prefix}-{uuid.uuid4().hex[:10]}"
                elif (
                    exc.status in (429, 500, 502, 503, 504) and attempt < self.config.create_retries
                ):
                    pass
                else:
                    raise SandboxStartError(self._api_error("create", "pods", exc)) from exc
            except Exception as exc:  # connection refused, DNS, TLS
                if attempt >= self.config.create_retries:
                    raise SandboxStartError(
                        f"{self.describe()}: Kubernetes API unreachable: {exc}"
                    ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        raise SandboxStartError(
            f"{self.describe()}: create failed after {self.config.create_retries} tries"
        )

    def _api_error(self, verb: str, resource: str, exc: Any) -> str:
        status = exc.status
        body = exc.body
        text = str(exc.reason or "")
        # a refused websocket handshake (exec) arrives as status 0:
        # "Handshake status 403 Forbidden -+-+- {headers} -+-+- {status body}"
        handshake = re.search(r"Handshake status (\d{3})", text)
        if not status and handshake:
            status = int(handshake.group(1))
            body = text.rsplit("-+-+-", 1)[-1]
        try:
            reason = json.loads(body).get("message", "")
        except (TypeError, ValueError, AttributeError):
            reason = text
        if status == 403:
            return (
                f"{self.describe()}: forbidden: the orchestrator may not {verb} {resource} in "
                f"namespace {self.config.namespace!r} (RBAC; see k8s/rbac.yaml): {reason}"
            )
        if status == 404 and verb == "create" and resource == "pods":
            return f"{self.describe()}: namespace {self.config.namespace!r} not found: {reason}"
        return f"{self.describe()}: {verb} {resource} failed ({status}): {reason}"

    def _wait_running(self) -> None:
        core = self._core_api()
        deadline = time.monotonic() + self.config.startup_timeout
        while True:
            pod = core.read_namespaced_pod(self.name, self.config.namespace)
            phase = pod.status.phase if pod.status else None
            if phase == "Running":
                return
            waiting = self._waiting_reason(pod)
            if phase in ("Failed", "Succeeded") or waiting in (
                "ErrImagePull",
                "ImagePullBackOff",
                "InvalidImageName",
                "CreateContainerError",
            ):
                raise SandboxStartError(
                    f"{self.describe()}: pod {phase or 'Pending'}"
                    f"{' (' + waiting + ')' if waiting else ''}; {self._events()}"
                )
            if time.monotonic() > deadline:
                raise SandboxStartError(
                    f"{self.describe()}: not running after "
                    f"{self.config.startup_timeout:g}s (phase {phase}"
                    f"{', ' + waiting if waiting else ''}); {self._events()}"
                )
            time.sleep(0.2)

    @staticmethod
    def _waiting_reason(pod: Any) -> str | None:
        statuses = (pod.status.container_statuses if pod.status else None) or []
        for status in statuses:
            if status.state and status.state.waiting and status.state.waiting.reason:
                return str(status.state.waiting.reason)
        conditions = (pod.status.conditions if pod.status else None) or []
        for cond in conditions:
            if cond.type == "PodScheduled" and cond.status == "False":
                return f"Unschedulable: {cond.message or cond.reason}"
        return None

    def _events(self) -> str:
        try:
            events = self._core_api().list_namespaced_event(
                self.config.namespace, field_selector=f"involvedObject.name={self.name}"
            )
        except Exception as exc:
            return f"events unavailable: {exc}"
        lines = [f"{e.reason}: {e.message}" for e in (events.items or [])][-5:]
        return "events: " + ("; ".join(lines) if lines else "none")

    def _exec_agent(self, extra_args: list[str] | None = None) -> Any:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        try:
            return stream(
                self._core_api().connect_get_namespaced_pod_exec,
                self.name,
                self.config.namespace,
                command=agent_command(self.config.python) + list(extra_args or []),
                container="sandbox",
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                _preload_content=False,
                binary=True,
            )
        except ApiException as exc:
            raise SandboxStartError(self._api_error("create", "pods/exec", exc)) from exc

    async def _diagnose(self) -> str | None:
        return await asyncio.to_thread(self._diagnose_sync)

    def _diagnose_sync(self) -> str | None:
        from kubernetes.client.exceptions import ApiException

        try:
            pod = self._core_api().read_namespaced_pod(self.name, self.config.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return f"pod {self.config.namespace}/{self.name} no longer exists (deleted)"
            return f"pod {self.name}: {exc.status} {exc.reason}"
        except Exception as exc:
            return f"pod {self.name}: API unreachable: {exc}"
        phase = pod.status.phase if pod.status else None
        return f"the exec stream to pod {self.name} closed (pod phase {phase})"

    async def _teardown(self) -> None:
        await asyncio.to_thread(self._delete)

    def _delete(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            if self.pod_created:
                self._core_api().delete_namespaced_pod(
                    self.name, self.config.namespace, grace_period_seconds=0
                )
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "could not delete pod %s: %s; `agentic-rollout gc --kubernetes` reaps it",
                    self.name,
                    exc.reason,
                )
        except Exception as exc:
            log.warning("could not delete pod %s: %s", self.name, exc)
        finally:
            if self._api_client is not None:
                self._api_client.close()


def reap_kubernetes(
    config: KubernetesSandboxConfig,
    *,
    run_id: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> list[tuple[str, str]]:
    """Delete sandbox pods nobody will delete (finished, expired, orphaned); (name, reason)."""
    from kubernetes import client

    from orchestrator.sandbox.gc import orchestrator_alive

    api = api_client(config)
    try:
        core = client.CoreV1Api(api)
        selector = f"{LABEL_MANAGED}=1" + (f",{LABEL_RUN}={_label_value(run_id)}" if run_id else "")
        reaped = []
        now = time.time()
        from kubernetes.client.exceptions import ApiException

        for pod in core.list_namespaced_pod(config.namespace, label_selector=selector).items:
            meta = pod.metadata
            if meta is None or meta.name is None:
                continue
            name: str = meta.name
            notes = dict(meta.annotations or {})
            reason = None
            if everything or run_id:
                reason = "--all" if everything else "run matches"
            elif pod.status and pod.status.phase in ("Succeeded", "Failed"):
                reason = f"finished ({pod.status.phase})"
            elif float(notes.get(LABEL_EXPIRES, "inf")) < now:
                reason = "expired"
            elif not orchestrator_alive(notes):
                reason = "orphaned: its orchestrator process is gone"
            if reason is None:
                continue
            if not dry_run:
                try:
                    core.delete_namespaced_pod(name, config.namespace, grace_period_seconds=0)
                except ApiException as exc:
                    if exc.status != 404:
                        raise SandboxError(f"cannot delete pod {name}: {exc.reason}") from exc
            reaped.append((name, reason))
        return reaped
    finally:
        api.close()
