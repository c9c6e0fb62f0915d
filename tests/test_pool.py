"""The warm pool against real Docker: ready sandboxes handed out, never reused, refilled in
the background, bounded, dead ones skipped, nothing left behind."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator import AgenticRollout, AgenticRolloutConfig
from orchestrator.exceptions import ConfigError, SandboxStartError
from orchestrator.sandbox.labels import LABEL_RUN
from orchestrator.sandbox.pool import WarmPool
from orchestrator.testing import ScriptedLLM, tool_call

from .conftest import SANDBOX_IMAGE, TEST_RUN_ID

pytestmark = pytest.mark.docker


def _values(run_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "docker", "image": SANDBOX_IMAGE, "run_id": run_id, "memory": "256m", **extra}


def _containers(run_id: str) -> list[Any]:
    client = docker.from_env()
    try:
        return client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    finally:
        client.close()


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_pool_hands_out_ready_sandboxes_once_and_refills() -> None:
    run = f"{TEST_RUN_ID}-pool-{uuid.uuid4().hex[:6]}"
    values = _values(run)
    async with WarmPool(2, max_starting=2) as pool:
        pool.warm(values)
        await _until(lambda: pool.ready(values) == 2)
        assert len(_containers(run)) == 2  # bounded: size ready, nothing more
        t0 = time.perf_counter()
        first = await pool.acquire(values)
        acquire_ms = (time.perf_counter() - t0) * 1000
        assert acquire_ms < 50, acquire_ms  # a pop, not a container start
        assert (await first.run("echo ready")).output.strip() == "ready"
        await first.run("echo secret > /tmp/state")
        second = await pool.acquire(values)
        assert second.name != first.name
        assert not await second.exists("/tmp/state")  # no state shared between sandboxes
        await first.close()  # a used sandbox is destroyed, never returned
        await second.close()
        await _until(lambda: pool.ready(values) == 2)  # refilled in the background
        names = {c.name for c in _containers(run)}
        assert first.name not in names and second.name not in names and len(names) == 2
        assert pool.stats.hits == 2 and pool.stats.misses == 0

        # a sandbox that died while idle is skipped, not handed out
        _, idle = pool._slots[pool.key(values)].ready[0]
        docker.from_env().containers.get(idle.name).kill()
        await _until(lambda: idle._rpc is not None and idle._rpc.closed)
        third = await pool.acquire(values)
        assert third.name != idle.name and (await third.run("true")).exit_code == 0
        assert pool.stats.discarded == 1
        await third.close()

        # empty pool: acquire starts one at once instead of waiting for the refill
        other = _values(run, cpus=0.5)
        cold = await pool.acquire(other)
        assert pool.stats.misses == 1 and (await cold.run("true")).exit_code == 0
        await cold.close()
    assert _containers(run) == []  # closing the pool removed every idle sandbox


async def test_pool_with_a_broken_config_reports_the_start_error() -> None:
    run = f"{TEST_RUN_ID}-pool-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ConfigError, match="size must be >= 1"):
        WarmPool(0)
    async with WarmPool(1) as pool:
        with pytest.raises(ConfigError):
            pool.warm({"type": "docker", "image": SANDBOX_IMAGE, "no_such_option": 1})
        missing = _values(run, image="agentic-rollout/no-such-image:404")
        pool.warm(missing)
        await _until(lambda: pool.stats.start_failures >= 1)
        with pytest.raises(SandboxStartError, match="no-such-image"):
            await pool.acquire(missing)
    assert _containers(run) == []


async def test_rollout_with_warm_pool_runs_each_trajectory_in_a_fresh_sandbox(
    tmp_path: Path,
) -> None:
    config = AgenticRolloutConfig(
        agent_type="tool",
        warm_pool=2,
        concurrent_requests=2,
        tools=["bash"],
        sandbox=_values(TEST_RUN_ID),
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    step = tool_call("bash", {"command": "test -e /tmp/mark && echo REUSED; touch /tmp/mark"})
    llm = ScriptedLLM.by_prompt({"go": [step, "done"]})
    rollout = AgenticRollout(config, llm_client=llm, reward_fn=None)
    summary = await rollout.run([{"id": f"t{i}", "prompt": "go"} for i in range(6)])
    trajs = summary.trajectories
    assert [t.status.value for t in trajs] == ["completed"] * 6, [t.errors for t in trajs]
    assert len({t.metadata["sandbox"] for t in trajs}) == 6
    for t in trajs:
        outputs = [s.content for s in t.steps if s.step_type.value == "tool_result"]
        assert outputs and "REUSED" not in outputs[0]
    assert any(t.metadata.get("warm_pool") for t in trajs)  # later ones found a ready sandbox
    assert rollout._pool is None
    assert _containers(TEST_RUN_ID) == []  # used ones destroyed, idle ones removed at the end
