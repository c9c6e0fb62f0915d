"""The agent-sandbox backend (orchestrator/sandbox/agent_sandbox.py) through the real
``kubernetes`` client against the API double's CRD extension (tests/k8s_double_agent_sandbox.py:
real HTTP, watches, the exec websocket into Docker-backed pods), and the k8s/agent-sandbox/
manifests against the CRDs' schemas."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from orchestrator.exceptions import ConfigError, SandboxClaimError, SandboxStartError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig

from .conftest import NOPYTHON_IMAGE, SANDBOX_IMAGE, TEST_RUN_ID
from .k8s_double_agent_sandbox import (
    AgentSandboxDouble,
    load_schemas,
    pool_manifest,
    template_manifest,
    validate,
)

NS = "agentic-rollout"
MANIFESTS = Path(__file__).resolve().parent.parent / "k8s" / "agent-sandbox"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


# ---- manifests


def test_template_and_pool_manifests_match_the_crd_schemas() -> None:
    schemas = load_schemas()
    (template,) = _docs("template.yaml")
    (pool,) = _docs("warmpool.yaml")
    validate("sandboxtemplates", template, schemas)
    validate("sandboxwarmpools", pool, schemas)
    assert pool["spec"]["sandboxTemplateRef"]["name"] == template["metadata"]["name"]
    # the pod template is also a valid Pod (the CRD embeds PodSpec without every check)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        **template["spec"]["podTemplate"],
    }
    kubernetes_validate.validate(pod, "1.30.0", strict=True)
    spec = template["spec"]["podTemplate"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert all((MANIFESTS / r).exists() for r in kustomization["resources"])


def test_schema_check_catches_a_typo() -> None:
    (pool,) = _docs("warmpool.yaml")
    bad = copy.deepcopy(pool)
    bad["spec"]["replica"] = 3
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        validate("sandboxwarmpools", bad, load_schemas())


def test_rbac_grants_the_claim_verbs_and_nothing_wider() -> None:
    docs = _docs("rbac.yaml")
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    role = next(d for d in docs if d["kind"] == "Role")
    rules = {(r["apiGroups"][0], tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert {"create", "watch", "delete"} <= rules[
        ("extensions.agents.x-k8s.io", ("sandboxclaims",))
    ]
    assert all("*" not in v and "update" not in v for v in rules.values())
    assert rules[("extensions.agents.x-k8s.io", ("sandboxtemplates", "sandboxwarmpools"))] == {
        "get",
        "list",
    }


def test_claim_manifest_is_valid_and_carries_the_ttl() -> None:
    cfg = AgentSandboxConfig(warm_pool="p", ttl=60, run_id="r1")
    claim = cfg.claim_manifest("c1")
    validate("sandboxclaims", claim, load_schemas())
    assert claim["spec"]["lifecycle"]["shutdownPolicy"] == "Delete"
    expiry = time.mktime(
        time.strptime(claim["spec"]["lifecycle"]["shutdownTime"], "%Y-%m-%dT%H:%M:%SZ")
    )
    assert 0 < expiry - time.mktime(time.gmtime()) <= 61
    sandbox = cfg.sandbox_manifest("s1", template_manifest("t", SANDBOX_IMAGE))
    validate("sandboxes", sandbox, load_schemas())
    assert sandbox["spec"]["podTemplate"]["metadata"]["labels"]["agentic-rollout.run"] == "r1"


def test_backend_is_chosen_by_name() -> None:
    assert isinstance(sandbox_config(type="agent-sandbox"), AgentSandboxConfig)
    with pytest.raises(ConfigError, match="invalid agent-sandbox sandbox config"):
        sandbox_config(type="agent-sandbox", warm_pol="x")
    with pytest.raises(ConfigError, match="needs warm_pool"):
        AgentSandboxConfig(warm_pool=None).build()


# ---- on the double


@pytest.fixture(scope="module")
def as_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentSandboxDouble]:
    with AgentSandboxDouble() as double:
        double.kubeconfig_path = double.kubeconfig(tmp_path_factory.mktemp("kube-as"))
        with double.lock:
            double.create("sandboxtemplates", NS, template_manifest("tpl", SANDBOX_IMAGE))
            double.create("sandboxtemplates", NS, template_manifest("nopython", NOPYTHON_IMAGE))
            double.create("sandboxwarmpools", NS, pool_manifest("pool", "tpl", 2))
            double.create("sandboxwarmpools", NS, pool_manifest("empty", "tpl", 0))
            double.create("sandboxwarmpools", NS, pool_manifest("nopy", "nopython", 1))
        yield double


@pytest.fixture
def double(as_double: AgentSandboxDouble) -> Iterator[AgentSandboxDouble]:
    yield as_double
    as_double.error_rate = 0.0
    as_double.fail_next.clear()
    as_double.drop_watch_after = None
    as_double.down_until = 0.0
    as_double.forbidden.clear()


def cfg(double: AgentSandboxDouble, **kwargs: Any) -> AgentSandboxConfig:
    values: dict[str, Any] = {
        "warm_pool": "pool",
        "kubeconfig": str(double.kubeconfig_path),
        "run_id": TEST_RUN_ID,
        "claim_timeout": 30,
    }
    values.update(kwargs)
    return AgentSandboxConfig(**values)


async def wait_pool_ready(double: AgentSandboxDouble, pool: str, n: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with double.lock:
            obj = double.get("sandboxwarmpools", NS, pool)
            if obj and obj["status"].get("readyReplicas", 0) >= n:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"pool {pool} never had {n} ready")


def claims(double: AgentSandboxDouble) -> list[str]:
    with double.lock:
        return [o["metadata"]["name"] for o in double.items("sandboxclaims", NS)]


@pytest.mark.docker
async def test_claim_runs_our_agent_and_release_deletes_the_pod(double: AgentSandboxDouble) -> None:
    await wait_pool_ready(double, "pool", 2)
    before = len(double.requests)
    async with cfg(double).build() as sb:
        for i in range(5):
            assert (await sb.run(f"echo {i}")).output == f"{i}\n"
        await sb.write_file("/tmp/x", "y")
        assert await sb.read_file("/tmp/x") == b"y"
        pod = sb.name
        assert pod.startswith("pool-") and sb.claim_seconds is not None
        assert sb.claim_name in claims(double)
        with double.lock:
            assert (NS, pod) in double.pods
            labels = double.pods[(NS, pod)]["metadata"]["labels"]
        assert labels["agentic-rollout.run"] == TEST_RUN_ID  # additionalPodMetadata applied
    calls = [p for _, p in double.requests[before:] if p.endswith("/exec")]
    assert calls == [f"/api/v1/namespaces/{NS}/pods/{pod}/exec"]  # one stream, whole trajectory
    assert sb.claim_name not in claims(double)
    deadline = time.monotonic() + 5
    while (NS, pod) in double.pods and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (NS, pod) not in double.pods  # the claim owned the sandbox: pod gone
    await wait_pool_ready(double, "pool", 2)  # and the pool refilled


@pytest.mark.docker
async def test_without_a_pool_a_sandbox_is_created_from_the_template(
    double: AgentSandboxDouble,
) -> None:
    async with cfg(double, warm_pool=None, template="tpl").build() as sb:
        assert (await sb.run("echo cold")).output == "cold\n"
        with double.lock:
            obj = double.get("sandboxes", NS, sb.claim_name)
        assert obj is not None and obj["spec"]["shutdownPolicy"] == "Delete"
        assert obj["spec"]["podTemplate"]["spec"]["containers"][0]["image"] == SANDBOX_IMAGE
    with double.lock:
        assert double.get("sandboxes", NS, sb.claim_name) is None
        assert (NS, sb.claim_name) not in double.pods


@pytest.mark.docker
async def test_empty_pool_fails_after_the_claim_timeout_and_says_why(
    double: AgentSandboxDouble,
) -> None:
    sb = cfg(double, warm_pool="empty", claim_timeout=1.5).build()
    t0 = time.monotonic()
    with pytest.raises(
        SandboxClaimError, match=r"not Ready after 1.5s.*SandboxWarmPool 'empty' has 0 ready of 0"
    ):
        await sb.start()
    assert time.monotonic() - t0 < 10
    assert sb.claim_name not in claims(double)  # nothing leaked


@pytest.mark.docker
async def test_missing_pool_unknown_template_and_rbac_are_specific(
    double: AgentSandboxDouble,
) -> None:
    with pytest.raises(SandboxClaimError, match="SandboxWarmPool 'gone' does not exist"):
        await cfg(double, warm_pool="gone", claim_timeout=1).build().start()
    with pytest.raises(SandboxClaimError, match="SandboxTemplate 'nope' not found"):
        await cfg(double, warm_pool=None, template="nope").build().start()
    double.forbidden.add(("create", "sandboxclaims"))
    with pytest.raises(
        SandboxClaimError, match=r"forbidden: the orchestrator may not create SandboxClaim"
    ):
        await cfg(double).build().start()
    assert claims(double) == []


@pytest.mark.docker
async def test_template_image_without_python3(double: AgentSandboxDouble) -> None:
    await wait_pool_ready(double, "nopy", 1)
    sb = cfg(double, warm_pool="nopy", startup_timeout=20).build()
    with pytest.raises(SandboxStartError, match=r"python3|agent did not become ready"):
        await sb.start()
    assert sb.claim_name not in claims(double)


@pytest.mark.docker
async def test_pool_deleted_mid_run(double: AgentSandboxDouble) -> None:
    """A running trajectory keeps its sandbox only while its claim lives; a claim still
    waiting when its pool is deleted fails within its bound with the reason."""
    with double.lock:
        double.create("sandboxtemplates", NS, template_manifest("doomed-tpl", SANDBOX_IMAGE))
        double.create("sandboxwarmpools", NS, pool_manifest("doomed", "doomed-tpl", 1))
    await wait_pool_ready(double, "doomed", 1)
    with double.lock:  # no refill from here on: the next claim can only wait
        double._delete_cascade("sandboxtemplates", NS, "doomed-tpl")
    async with cfg(double, warm_pool="doomed").build() as running:
        waiting = asyncio.create_task(
            cfg(double, warm_pool="doomed", claim_timeout=3).build().start()
        )
        await asyncio.sleep(0.5)
        with double.lock:
            double._delete_cascade("sandboxwarmpools", NS, "doomed")
        with pytest.raises(SandboxClaimError, match=r"WarmPoolNotFound|does not exist"):
            await waiting
        assert (await running.run("echo still")).output == "still\n"  # bound: owned by its claim
    assert claims(double) == []


@pytest.mark.docker
async def test_shutdown_time_reaps_what_a_dead_orchestrator_left(
    double: AgentSandboxDouble,
) -> None:
    sb = cfg(double, ttl=2).build()
    await sb.claim()  # claimed, never released: as if the orchestrator was SIGKILLed
    pod = sb.name
    assert sb.claim_name in claims(double)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        sb.claim_name in claims(double) or (NS, pod) in double.pods
    ):
        await asyncio.sleep(0.1)
    assert sb.claim_name not in claims(double) and (NS, pod) not in double.pods


@pytest.mark.docker
async def test_faults_429_500_and_dropped_watches(double: AgentSandboxDouble) -> None:
    await wait_pool_ready(double, "pool", 2)
    double.fail_next = [429, 500, 429]  # the create meets both, whatever the random draws
    double.error_rate = 0.3
    double.drop_watch_after = 1
    drops = double.watch_drops
    async with cfg(double).build() as sb:
        assert (await sb.run("echo through")).output == "through\n"
    assert double.injected["429"] + double.injected["500"] > 0
    assert double.watch_drops > drops or sb.claim_seconds is not None
    assert claims(double) == []


async def _api_server_down(double: AgentSandboxDouble, seconds: float) -> None:
    """Down for ``seconds``: a running trajectory goes on (its exec stream does not pass the
    API server's REST side); a claim made meanwhile goes through once it is back (within its
    retry budget); with a budget shorter than the outage it fails with a specific error;
    nothing leaks."""
    await wait_pool_ready(double, "pool", 2)
    async with cfg(double).build() as running:
        double.down_for(seconds)
        short = asyncio.create_task(cfg(double, api_retry_budget=seconds / 10).build().start())
        patient = asyncio.create_task(cfg(double, api_retry_budget=seconds * 2).build().start())
        assert (await running.run("echo during")).output == "during\n"
        with pytest.raises(
            SandboxClaimError, match=r"unreachable|create SandboxClaim failed \(503\)"
        ):
            await short
        sb = await patient
        try:
            assert (await sb.run("echo back")).output == "back\n"
        finally:
            await sb.close()
        assert (await running.run("echo after")).output == "after\n"
    assert claims(double) == []


@pytest.mark.docker
async def test_api_server_down_for_a_few_seconds(double: AgentSandboxDouble) -> None:
    """The 30 s outage's code path with a 4 s outage (the suite's budget)."""
    await _api_server_down(double, 4.0)


@pytest.mark.docker
@pytest.mark.slow
async def test_api_server_down_for_30s(double: AgentSandboxDouble) -> None:
    await _api_server_down(double, 30.0)


@pytest.mark.docker
async def test_runner_on_agent_sandbox_goes_through_admission(
    double: AgentSandboxDouble, tmp_path: Any
) -> None:
    from orchestrator import admission
    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.runner import AgenticRollout
    from orchestrator.testing import ScriptedLLM, tool_call

    await wait_pool_ready(double, "pool", 2)
    ctl = admission.controller("agent-sandbox")
    saved = ctl.settings
    ctl.stats = admission.AdmissionStats()  # shared by the process: count this test only
    config = AgenticRolloutConfig(
        agent_type="tool",
        sandbox=cfg(double).model_dump(mode="json"),
        concurrent_requests=3,
        admission={"agent-sandbox": {"max_live": 2}},
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    llm = ScriptedLLM.by_prompt(
        {f"claim job {i}": [tool_call("bash", {"command": "hostname"}), "done"] for i in range(3)}
    )
    try:
        summary = await AgenticRollout(config, llm_client=llm).run(
            [f"claim job {i}" for i in range(3)]
        )
    finally:
        ctl.configure(saved)
    assert [t.status.value for t in summary.trajectories] == ["completed"] * 3
    assert ctl.stats.max_live_seen <= 2 and ctl.live == 0
    assert claims(double) == []
