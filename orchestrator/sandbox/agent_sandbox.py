"""agent-sandbox backend: a pod from a kubernetes-sigs/agent-sandbox warm pool, our agent in it.

The SIG Apps project's CRDs (``SandboxTemplate``, ``SandboxWarmPool``, ``SandboxClaim``,
``Sandbox``) keep pods of a template started ahead of time; a claim is a bind, not a boot.
Per trajectory:

1. **get a sandbox** - with ``warm_pool`` set, create a ``SandboxClaim`` (v1beta1,
   ``warmPoolRef``); without it, read the ``SandboxTemplate`` and create a ``Sandbox`` from its
   pod template. Either carries ``shutdownTime = now + ttl`` with policy ``Delete``: the
   controller reaps what a SIGKILLed orchestrator left, no ``gc`` needed.
2. **wait** for it to turn Ready through ONE shared watch per (API server, namespace, kind) for
   the whole process (2,000 claims are one watch connection, not 2,000 polls); a dropped
   watch is re-listed and resumed; ``claim_timeout`` bounds the wait and the error says why
   (the pool is empty or gone, the template is unknown, RBAC refused the verb).
3. **run our agent** over the Pod backend's exec transport (the agent streamed in over stdin:
   any template image with python3 works), reused from :mod:`orchestrator.sandbox.kubernetes`.
4. **release**: delete the claim (or the Sandbox); the controller deletes the pod.

Every request this backend sends passes the process-wide API token bucket of
:mod:`orchestrator.admission` (``api_rate``); a request refused with 429 waits the
server's ``Retry-After`` before it is sent again (through the bucket again). Verified on the
API double's CRD extension (``tests/k8s_double_agent_sandbox.py``), not on a live cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import datetime
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator

from orchestrator.exceptions import ConfigError, SandboxClaimError
from orchestrator.sandbox.base import ManagedSandboxConfig
from orchestrator.sandbox.kubernetes import (
    KubernetesSandbox,
    KubernetesSandboxConfig,
    limit_requests,
    load_configuration,
)
from orchestrator.sandbox.labels import (
    LABEL_EXPIRES,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_RUN,
    label_value,
    owner_process_labels,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP = "agents.x-k8s.io"
EXT_GROUP = "extensions.agents.x-k8s.io"
VERSION = "v1beta1"
BACKEND = "agent-sandbox"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class AgentSandboxConfig(ManagedSandboxConfig):
    """Settings of the agent-sandbox backend; ``build()`` makes a sandbox (shared fields: the
    base; ``ttl`` sets the claim's ``shutdownTime``, when the controller deletes it)."""

    type: Literal["agent-sandbox"] = "agent-sandbox"
    #: claim from this SandboxWarmPool; None: create a Sandbox from ``template`` (a cold start)
    warm_pool: str | None = "agentic-sandbox"
    template: str | None = Field(
        None, description="SandboxTemplate to create a Sandbox from when warm_pool is None"
    )
    namespace: str = "agentic-rollout"
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    claim_timeout: float = Field(120.0, gt=0, description="seconds for a claim to turn Ready")
    api_timeout: float = Field(30.0, gt=0, description="seconds per API request")
    api_retry_budget: float = Field(
        60.0, ge=0, description="seconds of 429/5xx/unreachable retries per request"
    )
    container: str | None = Field(None, description="exec target; default the pod's first")
    #: watch requests last at most this long before being renewed (a real server caps it too)
    watch_seconds: int = Field(30, ge=1)

    @field_validator("env")
    @classmethod
    def _no_env(cls, value: dict[str, str]) -> dict[str, str]:
        # the pod exists before the claim: its environment is the SandboxTemplate's
        if value:
            raise ValueError(
                "the agent-sandbox backend cannot set a claimed pod's environment; "
                "set env in the SandboxTemplate's pod template"
            )
        return value

    def build(self, **overrides: Any) -> AgentSandbox:
        return AgentSandbox(self.with_overrides(overrides))

    def kubernetes(self) -> KubernetesSandboxConfig:
        """The Pod backend's settings for the transport (exec) part."""
        return KubernetesSandboxConfig(
            namespace=self.namespace,
            kubeconfig=self.kubeconfig,
            context=self.context,
            in_cluster=self.in_cluster,
            startup_timeout=self.startup_timeout,
            python=self.python,
            limits=self.limits,
            owner=self.owner,
            run_id=self.run_id,
        )

    def pod_labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "1",
            LABEL_OWNER: label_value(self.owner),
            LABEL_RUN: label_value(self.run_id),
            **self.labels,
        }

    def object_meta(self, name: str) -> dict[str, Any]:
        """Metadata of a claim or Sandbox we create: our labels, and who created it with the
        expiry as annotations, so ``gc`` finds what a SIGKILLed orchestrator left."""
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": self.pod_labels(),
            "annotations": {
                LABEL_EXPIRES: str(int(time.time() + self.ttl)),
                **owner_process_labels(),
            },
        }

    def shutdown_time(self) -> str:
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=self.ttl)
        return at.strftime("%Y-%m-%dT%H:%M:%SZ")

    def claim_manifest(self, name: str) -> dict[str, Any]:
        """A v1beta1 SandboxClaim on ``warm_pool`` that expires at now + ttl."""
        return {
            "apiVersion": f"{EXT_GROUP}/{VERSION}",
            "kind": "SandboxClaim",
            "metadata": self.object_meta(name),
            "spec": {
                "warmPoolRef": {"name": self.warm_pool},
                "lifecycle": {"shutdownTime": self.shutdown_time(), "shutdownPolicy": "Delete"},
                "additionalPodMetadata": {"labels": self.pod_labels()},
            },
        }

    def sandbox_manifest(self, name: str, template: dict[str, Any]) -> dict[str, Any]:
        """A Sandbox with the SandboxTemplate's pod template, expiring at now + ttl."""
        pod = json.loads(json.dumps((template.get("spec") or {}).get("podTemplate") or {}))
        meta = pod.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **self.pod_labels()}
        spec = pod.setdefault("spec", {})
        # the controller's own default for templates (agent-sandbox README): no API token
        spec.setdefault("automountServiceAccountToken", False)
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Sandbox",
            "metadata": self.object_meta(name),
            "spec": {
                "podTemplate": pod,
                "shutdownTime": self.shutdown_time(),
                "shutdownPolicy": "Delete",
            },
        }


# ---- API calls: one thread pool, the admission API bucket, Retry-After honoured


_pool_lock = threading.Lock()
_pool: list[concurrent.futures.ThreadPoolExecutor] = []
_clients: dict[tuple[Any, ...], Any] = {}


def _api_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for blocking API calls, apart from the loop's default executor."""
    with _pool_lock:
        if not _pool:
            _pool.append(concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="agent-sb"))
        return _pool[0]


def _shared_client(config: AgentSandboxConfig) -> Any:
    """One ApiClient per (kubeconfig, context) for the CRD calls: claims are small requests;
    the per-sandbox client (exec stream) is the Pod backend's own."""
    from kubernetes.client import ApiClient

    key = (config.kubeconfig, config.context, config.in_cluster)
    with _pool_lock:
        found = _clients.get(key)
        if found is None:
            # the Pod backend's config loading (once per process; urllib3's own resends off)
            configuration = copy.copy(load_configuration(config.kubernetes()))
            configuration.connection_pool_maxsize = 32
            found = _clients[key] = limit_requests(ApiClient(configuration), BACKEND)
        return found


def _status(exc: BaseException) -> int:
    return int(getattr(exc, "status", 0) or 0)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "headers", None)
    value = headers.get("Retry-After") if headers is not None and hasattr(headers, "get") else None
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else None
    except ValueError:
        return None


def _message(exc: BaseException) -> str:
    body: Any = getattr(exc, "body", None)
    try:
        return str(json.loads(body).get("message") or exc)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", None) or exc)


def call_api(config: AgentSandboxConfig, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Blocking: one API request, retried on 429/5xx and connection errors (after the server's
    Retry-After when it gives one) within ``api_retry_budget`` seconds. Each try waits for the
    process's API limiter inside the client (:func:`limit_requests`)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + config.api_retry_budget
    delay = 0.25
    kwargs.setdefault("_request_timeout", config.api_timeout)
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if isinstance(exc, ApiException):
                status = _status(exc)
                transient = status in RETRY_STATUSES
            else:
                status = 0
                transient = isinstance(exc, (urllib3.exceptions.HTTPError, OSError))
            if not transient:
                raise
            wait = _retry_after(exc)
            wait = delay if wait is None else wait
            if time.monotonic() + wait > deadline:
                raise
            # like client-go: the refused request waits its Retry-After; the others keep to
            # the bucket's rate, which already bounds what the process sends
            time.sleep(wait)
        delay = min(delay * 2, 4.0)


async def acall_api(
    config: AgentSandboxConfig, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        _api_pool(), functools.partial(call_api, config, fn, *args, **kwargs)
    )


# ---- one shared watch per (client, namespace, kind)


class _Watcher:
    """List+watch of one resource kind in one namespace, shared by every waiter of the process.

    Waiters register a name and a predicate on the object; the watch thread resolves their
    futures on their own loops. A watch that ends or breaks (server timeout, dropped
    connection, 410 Gone) is followed by a fresh list - which also catches every change made
    while no watch was open - and a new watch from that list's resourceVersion.
    """

    def __init__(self, config: AgentSandboxConfig, group: str, plural: str) -> None:
        self.config = config
        self.group = group
        self.plural = plural
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._seen: dict[str, dict[str, Any] | None] = {}
        self._thread: threading.Thread | None = None
        self.restarts = 0
        self.last_error: str | None = None

    async def wait(self, name: str, timeout: float) -> dict[str, Any] | None:
        """The object once it is Ready (None once it was deleted); TimeoutError after
        ``timeout``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._waiters.setdefault(name, []).append((loop, fut))
            seen = self._seen.get(name)
            if seen is not None and _is_final(seen):
                self._resolve_locked(name, seen)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"watch-{self.plural}", daemon=True
                )
                self._thread.start()
        try:
            result: dict[str, Any] | None = await asyncio.wait_for(fut, timeout)
            return result
        finally:
            with self._lock:
                entries = self._waiters.get(name, [])
                entries[:] = [e for e in entries if e[1] is not fut]
                if not entries:
                    self._waiters.pop(name, None)

    def _resolve_locked(self, name: str, obj: dict[str, Any] | None) -> None:
        for loop, fut in self._waiters.get(name, []):
            try:
                loop.call_soon_threadsafe(_set_result, fut, obj)
            except RuntimeError:
                pass  # that loop is closed

    def _observe(self, kind: str, obj: dict[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        with self._lock:
            # kept for every object, waited on or not yet: a claim can bind before its creator
            # registered as a waiter (the create's reply and the watch event race)
            if kind == "DELETED":
                self._seen.pop(name, None)
                if name in self._waiters:
                    self._resolve_locked(name, None)
                return
            self._seen[name] = obj
            if name in self._waiters and _is_final(obj):
                self._resolve_locked(name, obj)

    def _run(self) -> None:
        from kubernetes import client
        from kubernetes.watch.watch import iter_resp_lines

        api = client.CustomObjectsApi(_shared_client(self.config))
        cfg = self.config
        idle_since: float | None = None
        while True:
            with self._lock:
                if not self._waiters:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 2:
                        self._thread = None
                        return
                else:
                    idle_since = None
            if idle_since is not None:
                # nobody waits: no list or watch request (the API limit counts every one), but
                # stay up a moment for the next waiter of a burst
                time.sleep(0.05)
                continue
            try:
                # names first: a waiter registers after its create returned, so every name
                # taken here is in the listing unless it is really gone
                with self._lock:
                    names = set(self._waiters)
                listing: Any = call_api(
                    cfg, api.list_namespaced_custom_object, self.group, VERSION,
                    cfg.namespace, self.plural,
                )  # fmt: skip
                present = {i["metadata"]["name"]: i for i in listing.get("items", [])}
                with self._lock:
                    self._seen = {k: v for k, v in self._seen.items() if k in present}
                for item in present.values():
                    self._observe("MODIFIED", item)
                for name in names - present.keys():
                    self._observe("DELETED", {"metadata": {"name": name}})
                rv = (listing.get("metadata") or {}).get("resourceVersion")
                resp: Any = call_api(
                    cfg, api.list_namespaced_custom_object, self.group, VERSION,
                    cfg.namespace, self.plural, watch=True, resource_version=rv,
                    timeout_seconds=cfg.watch_seconds, _preload_content=False,
                    _request_timeout=(cfg.api_timeout, cfg.watch_seconds + cfg.api_timeout),
                )  # fmt: skip
                try:
                    for line in iter_resp_lines(resp):  # type: ignore[no-untyped-call]
                        event = json.loads(line)
                        if event.get("type") == "ERROR":  # 410 Gone: re-list
                            break
                        self._observe(event.get("type", ""), event.get("object") or {})
                        with self._lock:
                            if not self._waiters:
                                break
                finally:
                    resp.release_conn()
            except Exception as exc:  # dropped, refused, 5xx past the budget: re-list
                self.last_error = f"{type(exc).__name__}: {_message(exc)}"
                log.debug("watch %s restarting: %s", self.plural, self.last_error)
                time.sleep(0.5)
            self.restarts += 1


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _ready(obj: dict[str, Any] | None) -> tuple[bool, str]:
    """(Ready, reason/message) from an object's status conditions."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            text = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
            return cond.get("status") == "True", text
    return False, ""


def _is_final(obj: dict[str, Any] | None) -> bool:
    return obj is None or _ready(obj)[0]


_watchers: dict[tuple[Any, ...], _Watcher] = {}


def watcher(config: AgentSandboxConfig, group: str, plural: str) -> _Watcher:
    key = (config.kubeconfig, config.context, config.in_cluster, config.namespace, group, plural)
    with _pool_lock:
        found = _watchers.get(key)
        if found is None:
            found = _watchers[key] = _Watcher(config, group, plural)
        return found


# ---- the sandbox


class AgentSandbox(KubernetesSandbox):
    """A claimed (or template-created) agent-sandbox pod, reached like a Pod-backend pod."""

    backend: ClassVar[str] = BACKEND

    def __init__(self, config: AgentSandboxConfig) -> None:
        if config.warm_pool is None and config.template is None:
            raise ConfigError("agent-sandbox needs warm_pool (claim) or template (create)")
        super().__init__(config.kubernetes())
        self.settings = config
        #: the object we created: a SandboxClaim (warm pool) or a Sandbox (template)
        self.claim_name = f"agentic-{uuid.uuid4().hex[:10]}"
        self.claimed = False
        #: seconds from the create request to the claim turning Ready
        self.claim_seconds: float | None = None

    def describe(self) -> str:
        source = (
            f"warm pool {self.settings.warm_pool!r}"
            if self.settings.warm_pool
            else f"template {self.settings.template!r}"
        )
        return f"agent-sandbox {self.settings.namespace}/{self.claim_name} ({source})"

    @property
    def _kind(self) -> tuple[str, str, str]:
        """(group, plural, kind) of the object this sandbox creates and deletes."""
        if self.settings.warm_pool:
            return EXT_GROUP, "sandboxclaims", "SandboxClaim"
        return GROUP, "sandboxes", "Sandbox"

    def _custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(_shared_client(self.settings))

    async def claim(self) -> str:
        """Create the claim (or Sandbox), wait for Ready; the pod's name (also ``self.name``)."""
        from kubernetes.client.exceptions import ApiException

        cfg = self.settings
        group, plural, kind = self._kind
        api = self._custom()
        t0 = time.monotonic()
        try:
            if cfg.warm_pool:
                body = cfg.claim_manifest(self.claim_name)
            else:
                template = await acall_api(
                    cfg, api.get_namespaced_custom_object, EXT_GROUP, VERSION, cfg.namespace,
                    "sandboxtemplates", cfg.template,
                )  # fmt: skip
                body = cfg.sandbox_manifest(self.claim_name, template)
            self.claimed = True  # from here on, teardown deletes by name
            try:
                await acall_api(
                    cfg, api.create_namespaced_custom_object, group, VERSION, cfg.namespace,
                    plural, body,
                )  # fmt: skip
            except ApiException as exc:
                # the name is random per sandbox: a 409 is our own earlier attempt, which
                # committed before its reply was lost (a 5xx or a cut connection): adopt it
                if _status(exc) != 409:
                    raise
                log.info("%s: the create committed before its error: adopting", self.claim_name)
        except ApiException as exc:
            raise SandboxClaimError(self._refusal(exc, kind)) from exc
        except Exception as exc:
            raise SandboxClaimError(
                f"{self.describe()}: Kubernetes API unreachable: {exc}"
            ) from exc
        watch = watcher(cfg, group, plural)
        try:
            obj = await watch.wait(self.claim_name, cfg.claim_timeout)
        except asyncio.TimeoutError:
            raise SandboxClaimError(await self._why_unbound()) from None
        if obj is None:
            raise SandboxClaimError(f"{self.describe()}: the {kind} was deleted before it bound")
        pod = ((obj.get("status") or {}).get("sandbox") or {}).get("name") or self.claim_name
        self.name = pod
        self.claim_seconds = time.monotonic() - t0
        return pod

    def _refusal(self, exc: Any, kind: str) -> str:
        status = _status(exc)
        if status == 403:
            return (
                f"{self.describe()}: forbidden: the orchestrator may not create {kind} objects "
                f"in namespace {self.settings.namespace!r} (RBAC; see "
                f"k8s/agent-sandbox/rbac.yaml): {_message(exc)}"
            )
        if status == 404 and not self.settings.warm_pool:
            return (
                f"{self.describe()}: SandboxTemplate {self.settings.template!r} not found in "
                f"namespace {self.settings.namespace!r}: {_message(exc)}"
            )
        if status == 404:
            return (
                f"{self.describe()}: the agent-sandbox CRDs are not installed (or namespace "
                f"{self.settings.namespace!r} is missing): {_message(exc)}"
            )
        return f"{self.describe()}: create {kind} failed ({status}): {_message(exc)}"

    async def _why_unbound(self) -> str:
        """A claim that never turned Ready: say whether the pool is missing, empty or slow."""
        from kubernetes.client.exceptions import ApiException

        cfg = self.settings
        head = f"{self.describe()}: not Ready after {cfg.claim_timeout:g}s"
        api = self._custom()
        try:
            group, plural, _ = self._kind
            obj = await acall_api(
                cfg, api.get_namespaced_custom_object, group, VERSION, cfg.namespace, plural,
                self.claim_name, _request_timeout=5,
            )  # fmt: skip
            _, reason = _ready(obj)
            if reason:
                head += f" ({reason})"
            if cfg.warm_pool:
                pool = await acall_api(
                    cfg, api.get_namespaced_custom_object, EXT_GROUP, VERSION, cfg.namespace,
                    "sandboxwarmpools", cfg.warm_pool, _request_timeout=5,
                )  # fmt: skip
                status = pool.get("status") or {}
                head += (
                    f"; SandboxWarmPool {cfg.warm_pool!r} has {status.get('readyReplicas', 0)} "
                    f"ready of {(pool.get('spec') or {}).get('replicas', '?')}"
                )
        except ApiException as exc:
            if _status(exc) == 404 and cfg.warm_pool:
                return f"{head}; SandboxWarmPool {cfg.warm_pool!r} does not exist"
            head += f"; status unavailable: {_message(exc)}"
        except Exception as exc:
            head += f"; status unavailable: {exc}"
        return head

    async def release(self) -> None:
        """Delete the claim (or Sandbox): the controller removes the pod. Idempotent."""
        from kubernetes.client.exceptions import ApiException

        if not self.claimed:
            return
        self.claimed = False
        group, plural, kind = self._kind
        cfg = self.settings
        try:
            await acall_api(
                cfg, self._custom().delete_namespaced_custom_object, group, VERSION,
                cfg.namespace, plural, self.claim_name,
            )  # fmt: skip
        except ApiException as exc:
            if _status(exc) != 404:
                log.warning(
                    "could not delete %s %s: %s; its shutdownTime reaps it",
                    kind,
                    self.claim_name,
                    _message(exc),
                )
        except Exception as exc:
            log.warning("could not delete %s %s: %s", kind, self.claim_name, exc)

    # ---- Sandbox hooks

    async def _open(self) -> Any:
        await self.claim()
        return await self._open_exec()

    async def _open_exec(self) -> Any:
        """The Pod backend's exec transport to our pod (its agent bootstrap over stdin, its
        heartbeat, its frame limits)."""
        return await self._attach()

    async def _teardown(self) -> None:
        try:
            await self.release()
        finally:
            await self._teardown_client()


__all__ = ["AgentSandbox", "AgentSandboxConfig", "acall_api", "call_api", "watcher"]
