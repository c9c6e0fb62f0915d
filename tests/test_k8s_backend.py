"""The Kubernetes backend through the real `kubernetes` client against the wire-level API double
(tests/k8s_double.py, backed by Docker): pod spec, lifecycle, one exec stream, faults, reaper.
The shared sandbox suites (test_primitives, test_tools_sandbox) also run on this backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kubernetes_validate
import pytest

from orchestrator.exceptions import ConfigError, SandboxConnectionError, SandboxStartError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.gc import reap_kubernetes
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

from .conftest import kube_config

VERSION = "1.30.0"


def test_pod_manifest_defaults_are_valid_and_safe() -> None:
    pod = KubernetesSandboxConfig(run_id="r1").pod_manifest("agentic-x")
    kubernetes_validate.validate(pod, VERSION, strict=True)
    spec = pod["spec"]
    ctr = spec["containers"][0]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 6 * 3600
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctr["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert ctr["resources"]["limits"] == {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "10Gi"}
    labels = pod["metadata"]["labels"]
    assert labels["agentic-rollout.managed"] == "1" and labels["agentic-rollout.run"] == "r1"
    assert "agentic-rollout.expires" in pod["metadata"]["annotations"]


def test_pod_manifest_options_are_valid() -> None:
    cfg = KubernetesSandboxConfig(
        run_as_non_root=True,
        node_selector={"pool": "rl"},
        runtime_class="gvisor",
        tolerations=[{"key": "rl-training", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_secrets=["regcred"],
        env={"A": "1"},
        workdir="/testbed",
        annotations={"team": "x"},
        cpu_request="250m",
        memory_request="512Mi",
    )
    pod = cfg.pod_manifest("agentic-y")
    kubernetes_validate.validate(pod, VERSION, strict=True)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["runtimeClassName"] == "gvisor" and pod["spec"]["imagePullSecrets"] == [
        {"name": "regcred"}
    ]
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "250m"


def test_pod_template_is_merged_and_still_valid() -> None:
    cfg = KubernetesSandboxConfig(
        pod_template={
            "spec": {
                "priorityClassName": "rl-rollouts",
                "containers": [{"name": "sandbox", "image": "x:1"}],
            },
            "metadata": {"labels": {"team": "rl"}},
        }
    )
    pod = cfg.pod_manifest("agentic-z")
    kubernetes_validate.validate(pod, VERSION, strict=True)
    assert (
        pod["spec"]["priorityClassName"] == "rl-rollouts"
        and pod["spec"]["restartPolicy"] == "Never"
    )
    assert (
        pod["metadata"]["labels"]["team"] == "rl"
        and pod["metadata"]["labels"]["agentic-rollout.managed"] == "1"
    )
    assert pod["spec"]["containers"] == [{"name": "sandbox", "image": "x:1"}]  # lists are replaced


def test_backend_is_chosen_by_name() -> None:
    assert isinstance(sandbox_config(type="kubernetes"), KubernetesSandboxConfig)
    with pytest.raises(ConfigError, match="invalid kubernetes sandbox config"):
        sandbox_config(type="kubernetes", namespce="x")


@pytest.mark.docker
async def test_one_exec_stream_for_the_whole_trajectory(kube_double: Any) -> None:
    before = len(kube_double.requests)
    async with kube_config(kube_double).build() as sb:
        for i in range(20):
            assert (await sb.run(f"echo {i}")).output == f"{i}\n"
        await sb.write_file("/tmp/x", "y")
        name = sb.name
    calls = [r for r in kube_double.requests[before:] if name in r[1]]
    assert [m for m, p in calls if p.endswith("/exec")] == ["GET"]  # exactly one exec
    assert calls[0][0] == "POST" or calls[-1][0] == "DELETE"
    assert ("DELETE", f"/api/v1/namespaces/agentic-rollout/pods/{name}") in calls
    assert ("agentic-rollout", name) not in kube_double.pods


@pytest.mark.docker
async def test_image_pull_failure_names_the_image_with_events(kube_double: Any) -> None:
    sb = kube_config(kube_double, image="agentic-rollout/not-there:1", image_pull_timeout=1).build()
    with pytest.raises(
        SandboxStartError,
        match=r"ErrImagePull.*Failed to pull image \"agentic-rollout/not-there:1\"",
    ):
        await sb.start()
    assert ("agentic-rollout", sb.name) not in kube_double.pods  # deleted on failure


@pytest.mark.docker
async def test_unschedulable_pod_times_out_with_the_reason(kube_double: Any) -> None:
    sb = kube_config(
        kube_double, node_selector={"unschedulable": "yes"}, startup_timeout=1.5
    ).build()
    t0 = time.monotonic()
    with pytest.raises(
        SandboxStartError, match=r"not running after 1.5s.*Unschedulable.*didn't match"
    ):
        await sb.start()
    assert time.monotonic() - t0 < 10
    assert ("agentic-rollout", sb.name) not in kube_double.pods


@pytest.mark.docker
async def test_pod_deleted_mid_trajectory_fails_pending_calls_fast(kube_double: Any) -> None:
    async with kube_config(kube_double).build() as sb:
        pending = asyncio.create_task(sb.run("sleep 100", timeout=100))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await asyncio.to_thread(kube_double.delete_pod, "agentic-rollout", sb.name)
        with pytest.raises(SandboxConnectionError, match="no longer exists"):
            await pending
        assert time.monotonic() - t0 < 1.5


@pytest.mark.docker
async def test_exec_stream_closed_mid_call(kube_double: Any) -> None:
    async with kube_config(kube_double).build() as sb:
        pending = asyncio.create_task(sb.run("sleep 100", timeout=100))
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        await sb.rpc._transport.close()
        with pytest.raises(SandboxConnectionError):
            await pending
        assert time.monotonic() - t0 < 1.0


@pytest.mark.docker
async def test_create_retried_through_429_bursts(kube_double: Any) -> None:
    kube_double.throttle_creates = 3
    async with kube_config(kube_double).build() as sb:
        assert (await sb.run("echo ok")).output == "ok\n"
    assert kube_double.throttle_creates == 0


@pytest.mark.docker
async def test_missing_namespace_and_rbac_forbidden_are_clear(kube_double: Any) -> None:
    with pytest.raises(SandboxStartError, match="namespace 'nope' not found"):
        await kube_config(kube_double, namespace="nope").build().start()
    kube_double.forbidden.add(("create", "pods/exec"))
    try:
        sb = kube_config(kube_double).build()
        with pytest.raises(
            SandboxStartError, match=r"may not create pods/exec in namespace 'agentic-rollout'"
        ):
            await sb.start()
        assert ("agentic-rollout", sb.name) not in kube_double.pods
    finally:
        kube_double.forbidden.clear()


@pytest.mark.docker
async def test_reaper_deletes_orphaned_pods(kube_double: Any) -> None:
    cfg = kube_config(kube_double, annotations={"agentic-rollout.pid": "999999999"})
    orphan = cfg.build()
    await orphan.start()
    alive = kube_config(kube_double).build()
    await alive.start()
    try:
        reaped = await asyncio.to_thread(reap_kubernetes, kube_config(kube_double))
        names = {n for n, _ in reaped}
        assert orphan.name in names and alive.name not in names
        assert dict(reaped)[orphan.name].startswith("orphaned")
    finally:
        await orphan.close()
        await alive.close()


@pytest.mark.docker
async def test_runner_on_kubernetes(kube_double: Any, tmp_path: Any) -> None:
    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.runner import AgenticRollout
    from orchestrator.testing import ScriptedLLM, tool_call

    sandbox = kube_config(kube_double).model_dump()
    config = AgenticRolloutConfig(
        agent_type="tool", sandbox=sandbox, trajectory_save_path=str(tmp_path / "t.jsonl")
    )
    llm = ScriptedLLM.by_prompt(
        {f"pod job {i}": [tool_call("bash", {"command": "hostname"}), "done"] for i in range(3)}
    )
    summary = await AgenticRollout(config, llm_client=llm).run([f"pod job {i}" for i in range(3)])
    assert [t.status.value for t in summary.trajectories] == ["completed"] * 3
    assert len({t.metadata["sandbox"] for t in summary.trajectories}) == 3
    assert not [k for k in kube_double.pods if k[0] == "agentic-rollout"]


@pytest.mark.docker
def test_gc_kubernetes_cli(kube_double: Any) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "gc",
            "--kubernetes",
            "--dry-run",
            "--kubeconfig",
            str(kube_double.kubeconfig_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("reaped=0 found=")


@pytest.mark.docker
async def test_direct_tcp_to_the_pod_ip(kube_double: Any) -> None:
    """connect=tcp: bootstrapped over exec, then the RPC goes straight to the pod (here a
    host-network pod whose IP is 127.0.0.1; the agent listens on loopback only)."""
    from orchestrator.local_llm import free_port

    port = free_port()
    cfg = kube_config(
        kube_double,
        connect="tcp",
        tcp_port=port,
        tcp_listen_host="127.0.0.1",
        pod_template={"spec": {"hostNetwork": True}},
    )
    before = len(kube_double.requests)
    async with cfg.build() as sb:
        assert (await sb.run("cd /tmp && export A=1")).ok
        assert (await sb.run("echo $A $(pwd)")).output == "1 /tmp\n"
        await sb.write_file("/tmp/t", "x")
        assert await sb.read_file("/tmp/t") == b"x"
        exec_calls = [p for m, p in kube_double.requests[before:] if p.endswith("/exec")]
        calls_after_start = len(kube_double.requests)
        for _ in range(10):
            await sb.run("true")
        assert len(kube_double.requests) == calls_after_start  # nothing through the API server
    assert len(exec_calls) == 1
