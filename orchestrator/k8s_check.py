"""``agentic-rollout k8s check``: the live-cluster checklist of the Kubernetes backend, run by a
user against their own cluster, written as a report (JSON, plus one line per check on stdout).

What the API double in the tests cannot prove, this proves on the real thing: versions and the
negotiated exec protocol, RBAC (the verbs we need, and that secrets are *not* readable), a smoke
trajectory (commands, files, a large transfer, search), writes around the websocket frame limit,
an idle period, the pod TTL, isolation probes from inside a sandbox, and optionally a pod deleted
mid-call. Each check records ok/failed, seconds and what it saw; one failing check never stops
the others. Depends on the Kubernetes backend and the sandbox API only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from orchestrator.exceptions import SandboxStartError
from orchestrator.sandbox.kubernetes import (
    KubernetesSandbox,
    KubernetesSandboxConfig,
    api_client,
    api_pool,
)

#: (verb, resource, subresource) the orchestrator needs in its namespace
NEEDED = [
    ("create", "pods", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("delete", "pods", ""),
    ("create", "pods", "exec"),
    ("get", "pods", "exec"),
    ("list", "events", ""),
]
#: must be refused: a compromised orchestrator must not read the namespace's secrets
REFUSED = [("get", "secrets", ""), ("list", "secrets", "")]

#: run inside a sandbox: every probe must fail to connect (network policy / network none)
PROBE = r"""
import json, os, socket, sys
targets = json.loads(sys.argv[1])
out = {"service_account_token": os.path.exists(
    "/var/run/secrets/kubernetes.io/serviceaccount/token")}
try:
    socket.getaddrinfo("kubernetes.default.svc.cluster.local", 443)
    out["dns"] = "resolved"
except OSError as exc:
    out["dns"] = "unreachable: %s" % exc
for name, host, port in targets:
    try:
        socket.create_connection((host, port), timeout=3).close()
        out[name] = "REACHABLE %s:%s" % (host, port)
    except OSError as exc:
        out[name] = "unreachable: %s" % exc
print(json.dumps(out))
"""


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    detail: Any = None
    required: bool = True


@dataclass
class Report:
    started: str
    config: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.required)


class Checker:
    def __init__(self, config: KubernetesSandboxConfig, args: argparse.Namespace) -> None:
        self.config = config
        self.args = args
        self.report = Report(
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            config=config.model_dump(exclude={"env", "annotations", "pod_template"}),
        )

    async def step(
        self, name: str, fn: Callable[[], Awaitable[Any]], *, required: bool = True
    ) -> Any:
        t0 = time.monotonic()
        try:
            detail = await fn()
            ok = True
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if self.args.verbose:
                detail += "\n" + traceback.format_exc()
            ok = False
        check = Check(name, ok, round(time.monotonic() - t0, 3), detail, required)
        self.report.checks.append(check)
        mark = "ok  " if ok else ("FAIL" if required else "warn")
        print(f"[{mark}] {name} ({check.seconds:.1f}s): {_one_line(detail)}", flush=True)
        return detail if ok else None

    # ---- checks

    async def versions(self) -> dict[str, Any]:
        import kubernetes
        from kubernetes import client

        def get() -> dict[str, Any]:
            api = api_client(self.config)
            try:
                info = client.VersionApi(api).get_code()
                return {
                    "server": info.git_version,
                    "client": kubernetes.__version__,
                    "python": platform.python_version(),
                    "api_server": api.configuration.host,
                }
            finally:
                api.close()

        found = await asyncio.get_running_loop().run_in_executor(api_pool(), get)
        self.report.environment.update(found)
        return found

    async def can_i(self, verbs: list[tuple[str, str, str]], want: bool) -> dict[str, bool]:
        from kubernetes import client

        def review() -> dict[str, bool]:
            api = api_client(self.config)
            try:
                authz = client.AuthorizationV1Api(api)
                out = {}
                for verb, resource, sub in verbs:
                    body: Any = {
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SelfSubjectAccessReview",
                        "spec": {
                            "resourceAttributes": {
                                "namespace": self.config.namespace,
                                "verb": verb,
                                "resource": resource,
                                "subresource": sub,
                            }
                        },
                    }
                    res: Any = authz.create_self_subject_access_review(body)
                    out[f"{verb} {resource}{'/' + sub if sub else ''}"] = bool(res.status.allowed)
                return out
            finally:
                api.close()

        found = await asyncio.get_running_loop().run_in_executor(api_pool(), review)
        wrong = [k for k, v in found.items() if v != want]
        if wrong:
            raise AssertionError(
                ("missing RBAC: " if want else "allowed but must not be: ") + ", ".join(wrong)
            )
        return found

    async def smoke(self, sb: KubernetesSandbox) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": sb.protocol, "ready_seconds": sb.ready_seconds}
        self.report.environment["exec_protocol"] = sb.protocol
        r = await sb.run("cd /tmp && export CHECK=1 && echo $CHECK $(pwd)")
        assert r.output == "1 /tmp\n", r.output
        await sb.write_file("/tmp/check/hello.txt", "hello from k8s check\n")
        assert await sb.read_text("/tmp/check/hello.txt") == "hello from k8s check\n"
        hits = await sb.search("/tmp/check", "hello from")
        assert len(hits.matches) == 1, f"search: {hits.matches}"
        out["search_matches"] = len(hits.matches)
        size = self.args.transfer_mb << 20
        made = await sb.exec(
            f"head -c {size} /dev/urandom > /tmp/check/big && sha256sum /tmp/check/big",
            timeout=300,
        )
        assert made.exit_code == 0, made.stderr
        remote_sha = made.stdout.split()[0]
        t0 = time.monotonic()
        local = await sb.download("/tmp/check/big", self.args.workdir)
        tar_seconds = time.monotonic() - t0
        local_sha = await asyncio.to_thread(lambda: hashlib.sha256(local.read_bytes()).hexdigest())
        local.unlink()
        assert local_sha == remote_sha, f"sha256 differs: {local_sha} != {remote_sha}"
        out["transfer"] = {
            "mib": self.args.transfer_mb,
            "tar_seconds": round(tar_seconds, 2),
            "mib_per_s": round(self.args.transfer_mb / max(tar_seconds, 1e-6), 1),
        }
        return out

    async def writes(self, sb: KubernetesSandbox) -> dict[str, Any]:
        """Around the API server's 32 MiB websocket frame limit: 20 MiB must work; 40 MiB must
        either work (stdin is chunked) or fail with a clear error, and the sandbox must live."""
        out: dict[str, Any] = {}
        for mib in (20, 40):
            data = b"k" * (mib << 20)
            t0 = time.monotonic()
            try:
                await sb.write_file(f"/tmp/check/w{mib}", data)
                size = (await sb.stat(f"/tmp/check/w{mib}")).size
                assert size == len(data), f"{mib} MiB write left {size} bytes"
                out[f"{mib}MiB"] = f"written in {time.monotonic() - t0:.1f}s"
            except Exception as exc:
                if mib == 20:
                    raise
                out[f"{mib}MiB"] = f"refused cleanly: {type(exc).__name__}: {exc}"
            await sb.remove(f"/tmp/check/w{mib}")
        assert (await sb.run("echo alive")).output == "alive\n", "sandbox died after the writes"
        return out

    async def idle(self, sb: KubernetesSandbox) -> str:
        await asyncio.sleep(self.args.idle)
        assert (await sb.run("echo awake")).output == "awake\n"
        return f"a call after {self.args.idle:g}s idle worked"

    async def isolation(self, sb: KubernetesSandbox) -> dict[str, Any]:
        api = urlparse(self.report.environment.get("api_server") or "https://127.0.0.1:443")
        targets = [
            ["api_server", api.hostname or "127.0.0.1", api.port or 443],
            ["api_service", "10.96.0.1", 443],
            ["cloud_metadata", "169.254.169.254", 80],
        ]
        pod = await sb._api("get pods", sb._core_api().read_namespaced_pod, *sb._pod_ref())
        host_ip = pod.status.host_ip if pod.status else None
        if host_ip:
            targets.append(["kubelet", host_ip, 10250])
        other = self.report.environment.get("other_pod_ip")
        if other:
            targets.append(["other_pod", other, 7777])
        res = await sb.exec(
            [self.config.python, "-c", PROBE, json.dumps(targets)], timeout=60, max_output=65536
        )
        found: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        bad = [k for k, v in found.items() if v is True or str(v).startswith(("REACHABLE", "res"))]
        if bad:
            raise AssertionError(f"reachable from a sandbox: {bad}: {found}")
        return found

    async def ttl(self) -> str:

        cfg = self.config.model_copy(update={"ttl": self.args.ttl, "heartbeat_interval": 0})
        sb = cfg.build()
        try:
            await sb.start()
        except SandboxStartError as exc:
            # the deadline counts from the pod's start: a slow start can meet it first
            if "DeadlineExceeded" not in str(exc):
                raise
            return f"the pod ended before it was ready: {exc}"
        async with sb:
            t0 = time.monotonic()
            try:
                await sb.run(f"sleep {self.args.ttl + 120}", timeout=self.args.ttl + 120)
            except Exception as exc:
                waited = time.monotonic() - t0
                if waited > self.args.ttl + 90:
                    raise AssertionError(f"the pod outlived its TTL by {waited:.0f}s") from exc
                return f"the pod ended after {waited:.1f}s: {type(exc).__name__}: {exc}"
        raise AssertionError("a call outlived the pod's activeDeadlineSeconds")

    async def disruption(self) -> str:
        cfg = self.config.model_copy(update={"heartbeat_interval": 0})
        async with cfg.build() as sb:
            call = asyncio.create_task(sb.run("sleep 300", timeout=300))
            await asyncio.sleep(1)
            core = sb._core_api()
            await sb._api(
                "delete pods", core.delete_namespaced_pod, *sb._pod_ref(), grace_period_seconds=0
            )
            t0 = time.monotonic()
            try:
                await call
            except Exception as exc:
                return f"failed after {time.monotonic() - t0:.1f}s: {type(exc).__name__}: {exc}"
        raise AssertionError("a call on a deleted pod returned normally")

    # ---- the run

    async def run(self) -> Report:
        await self.step("versions", self.versions)
        await self.step("rbac: needed verbs allowed", lambda: self.can_i(NEEDED, True))
        await self.step("rbac: secrets refused", lambda: self.can_i(REFUSED, False))
        sb: KubernetesSandbox | None = None
        other: KubernetesSandbox | None = None

        async def start() -> dict[str, Any]:
            nonlocal sb, other
            sb = await self.config.build().start()
            other = await self.config.build().start()  # a neighbour for the isolation probe
            pod = await other._api(
                "get pods", other._core_api().read_namespaced_pod, *other._pod_ref()
            )
            if pod.status and pod.status.pod_ip:
                self.report.environment["other_pod_ip"] = pod.status.pod_ip
            return {"pod": sb.name, "ready_seconds": round(sb.ready_seconds or 0, 2)}

        try:
            if await self.step("sandbox start", start) is not None and sb is not None:
                started = sb
                await self.step("smoke trajectory", lambda: self.smoke(started))
                await self.step("writes around the frame limit", lambda: self.writes(started))
                await self.step("isolation probes", lambda: self.isolation(started))
                await self.step("idle period", lambda: self.idle(started))
        finally:
            for s in (sb, other):
                if s is not None:
                    await s.close()
        if self.args.ttl:
            await self.step("pod TTL ends the pod", self.ttl)
        if self.args.disruption:
            await self.step("pod deleted mid-call", self.disruption, required=False)
        return self.report


def _one_line(detail: Any) -> str:
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
    text = text.replace("\n", " ")
    return text if len(text) < 300 else text[:300] + "..."
