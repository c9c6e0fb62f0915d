"""Cleanup after the orchestrator is SIGKILLed mid-run, on the API doubles: nothing of it
closes its sandboxes, ``agentic-rollout gc --kubernetes`` finds them by label and by the
dead pid in their annotations and removes them - pods (Pod backend), and claims (agent-sandbox
backend, long before their shutdownTime would)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.k8s_double_agent_sandbox import AgentSandboxDouble, pool_manifest, template_manifest

from .conftest import SANDBOX_IMAGE

NS = "agentic-rollout"
ROOT = Path(__file__).resolve().parent.parent

POD_CHILD = """
import asyncio, sys
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

async def main():
    cfg = KubernetesSandboxConfig.model_validate_json(sys.argv[1])
    sandboxes = [cfg.build() for _ in range(3)]
    await asyncio.gather(*(sb.start() for sb in sandboxes))
    print("up", flush=True)
    # the next one is being created when the kill comes
    await cfg.build().start()
    await asyncio.sleep(3600)

asyncio.run(main())
"""

CLAIM_CHILD = """
import asyncio, sys
from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig

async def main():
    cfg = AgentSandboxConfig.model_validate_json(sys.argv[1])
    await asyncio.gather(*(cfg.build().claim() for _ in range(3)))
    print("up", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def _spawn(code: str, config: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, config.model_dump_json()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_when_up(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the child's sandboxes are up (or it died)
    assert line.strip() == "up", f"the child failed before its sandboxes were up: {line!r}"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _gc(kubeconfig: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "gc", "--kubernetes",
         "--kubeconfig", kubeconfig, "--namespace", NS],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return out.stdout


def _of_run(objects: list[dict[str, Any]], run_id: str) -> list[str]:
    return [
        o["metadata"]["name"]
        for o in objects
        if (o["metadata"].get("labels") or {}).get("agentic-rollout.run") == run_id
    ]


@pytest.mark.docker
def test_gc_removes_the_pods_of_a_sigkilled_orchestrator(kube_double: Any) -> None:
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    kube_double.reset()
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    config = KubernetesSandboxConfig(
        image=SANDBOX_IMAGE,
        run_id=run_id,
        memory="512Mi",
        kubeconfig=str(kube_double.kubeconfig_path),
        heartbeat_interval=0,
        startup_timeout=300,
    )
    proc = _spawn(POD_CHILD, config)
    try:
        _kill_when_up(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    with kube_double.lock:
        left = _of_run(list(kube_double.pods.values()), run_id)
    assert len(left) >= 3  # nothing closed them
    out = _gc(str(kube_double.kubeconfig_path))
    assert "orphaned: its orchestrator process is gone" in out
    with kube_double.lock:
        assert _of_run(list(kube_double.pods.values()), run_id) == []


@pytest.fixture(scope="module")
def claim_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentSandboxDouble]:
    with AgentSandboxDouble(containers=False, tick=0.05) as double:
        double.kubeconfig_path = double.kubeconfig(tmp_path_factory.mktemp("kube-kill"))
        with double.lock:
            double.create("sandboxtemplates", NS, template_manifest("tpl", "none:latest"))
            double.create("sandboxwarmpools", NS, pool_manifest("pool", "tpl", 4))
        yield double


def test_gc_removes_the_claims_of_a_sigkilled_orchestrator(
    claim_double: AgentSandboxDouble,
) -> None:
    from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig

    double = claim_double
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    # a TTL far away: what removes the claims below is gc, not the controller
    config = AgentSandboxConfig(
        warm_pool="pool",
        kubeconfig=str(double.kubeconfig_path),
        run_id=run_id,
        ttl=3600,
        claim_timeout=60,
    )
    proc = _spawn(CLAIM_CHILD, config)
    try:
        _kill_when_up(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    with double.lock:
        claimed = _of_run(double.items("sandboxclaims", NS), run_id)
        bound = [
            o["metadata"]["name"]
            for o in double.items("sandboxes", NS)
            if (o["metadata"].get("labels") or {}).get("agents.x-k8s.io/claim") in claimed
        ]
    assert len(claimed) == 3 and len(bound) == 3
    out = _gc(str(double.kubeconfig_path))
    assert out.count("deleted sandboxclaims/") == 3, out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with double.lock:
            names = {o["metadata"]["name"] for o in double.items("sandboxes", NS)}
            gone = not _of_run(double.items("sandboxclaims", NS), run_id)
        if gone and not names & set(bound):
            break
        time.sleep(0.1)
    with double.lock:
        assert _of_run(double.items("sandboxclaims", NS), run_id) == []
        names = {o["metadata"]["name"] for o in double.items("sandboxes", NS)}
    assert not names & set(bound)  # the controller deleted the claimed sandboxes (and pods)
