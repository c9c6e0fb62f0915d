"""Process-wide admission control (orchestrator/admission.py): the controller's bounds, FIFO,
cancellation, timeouts and token bucket; then on real Docker through the runner, the warm pool
and two rollouts sharing one process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import admission
from orchestrator.admission import (
    AdmissionController,
    AdmissionSettings,
    AdmissionStats,
    TokenBucket,
)
from orchestrator.exceptions import ConfigError, SandboxAdmissionError

from .conftest import docker_config


def _controller(**kwargs: Any) -> AdmissionController:
    values: dict[str, Any] = {"max_live": 2, "max_starting": 1, "rate": 1000, "burst": 1000}
    values.update(kwargs)
    return AdmissionController("test", AdmissionSettings(**values))


@pytest.fixture
def docker_limits() -> Iterator[AdmissionController]:
    """The process-wide docker controller, its settings restored after the test."""
    ctl = admission.controller("docker")
    saved = ctl.settings
    ctl.stats = AdmissionStats()  # the process's controller: earlier tests used it too
    yield ctl
    ctl.configure(saved)


async def test_live_and_starting_bounds_hold_and_waiters_are_served_in_order() -> None:
    ctl = _controller()
    order: list[int] = []
    peak = {"live": 0, "starting": 0}

    async def one(i: int) -> None:
        permit = await ctl.admit()
        order.append(i)
        peak["live"] = max(peak["live"], ctl.live)
        peak["starting"] = max(peak["starting"], ctl.starting)
        await asyncio.sleep(0.01)
        permit.started()
        await asyncio.sleep(0.02)
        permit.release()

    tasks = []
    for i in range(8):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0)  # queue them in a known order
    await asyncio.gather(*tasks)
    assert order == list(range(8))
    assert peak == {"live": 2, "starting": 1}
    assert (ctl.live, ctl.starting, ctl.queued) == (0, 0, 0)
    assert ctl.stats.admitted == 8


async def test_a_cancelled_waiter_leaves_no_trace_and_the_next_one_gets_its_turn() -> None:
    ctl = _controller(max_live=1)
    first = await ctl.admit()
    waiting = asyncio.create_task(ctl.admit())
    await asyncio.sleep(0.01)
    assert ctl.queued == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ctl.queued == 0
    nxt = asyncio.create_task(ctl.admit())
    await asyncio.sleep(0.01)
    first.release()
    permit = await asyncio.wait_for(nxt, 5)
    assert ctl.live == 1
    permit.release()
    permit.release()  # idempotent: a double close must not free a slot twice
    assert ctl.live == 0


async def test_queue_timeout_is_a_specific_error_naming_the_limits() -> None:
    ctl = _controller(max_live=1, queue_timeout=0.2)
    held = await ctl.admit()
    with pytest.raises(SandboxAdmissionError, match=r"within 0.2s \(1 live of 1"):
        await ctl.admit()
    assert ctl.queued == 0 and ctl.stats.rejected == 1
    held.release()


async def test_new_limits_apply_to_waiters_at_once() -> None:
    ctl = _controller(max_live=1, max_starting=1)
    held = await ctl.admit()
    held.started()
    waiting = asyncio.create_task(ctl.admit())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    ctl.configure(AdmissionSettings(max_live=2, max_starting=2, rate=1000, burst=1000))
    (await asyncio.wait_for(waiting, 5)).release()
    held.release()


def test_one_controller_serves_several_event_loops() -> None:
    """VERL workers and pytest each run their own loop: the counters must be shared."""
    ctl = _controller(max_live=1, max_starting=1)
    peak: list[int] = []

    def worker() -> None:
        async def main() -> None:
            for _ in range(5):
                permit = await ctl.admit()
                peak.append(ctl.live)
                await asyncio.sleep(0.005)
                permit.release()

        asyncio.run(main())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(peak) == 15 and max(peak) == 1 and ctl.live == 0


def test_token_bucket_never_exceeds_rate_plus_burst() -> None:
    bucket = TokenBucket(rate=50, burst=2)
    stamps = []
    for _ in range(12):
        bucket.acquire_sync()
        stamps.append(time.monotonic())
    # the first 2 may go at once, each later one at least 1/rate after the burst's start
    assert stamps[-1] - stamps[0] >= (12 - 2) / 50 * 0.95


def test_config_fields_merge_over_the_backend_defaults() -> None:
    from orchestrator.config import AgenticRolloutConfig

    cfg = AgenticRolloutConfig(admission={"kubernetes": {"max_live": 1000}})
    k8s = cfg.admission["kubernetes"]
    assert k8s.max_live == 1000
    assert k8s.rate == admission.DEFAULTS["kubernetes"].rate  # not the generic default
    with pytest.raises(ConfigError, match="invalid configuration"):
        AgenticRolloutConfig.load(None, admission={"docker": {"max_lve": 3}})
    with pytest.raises(ConfigError, match="invalid admission settings for 'docker'"):
        admission.configure("docker", {"rate": -1})


# ---- on real Docker


@pytest.mark.docker
async def test_runner_never_exceeds_max_live_and_records_queue_wait(
    docker_limits: AdmissionController, tmp_path: Any
) -> None:
    """Two AgenticRollouts of one process, 4 trajectories each at concurrency 4, share a
    docker limit of 2 live sandboxes: Docker never holds more than 2 of ours."""
    import docker

    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.runner import AgenticRollout
    from orchestrator.testing import ScriptedLLM, tool_call

    sandbox = docker_config().model_dump(mode="json")
    run_label = f"agentic-rollout.run={sandbox['run_id']}"
    rollouts = []
    for n in range(2):
        config = AgenticRolloutConfig(
            agent_type="tool",
            sandbox=sandbox,
            concurrent_requests=4,
            admission={"docker": {"max_live": 2, "max_starting": 2}},
            trajectory_save_path=str(tmp_path / f"t{n}.jsonl"),
        )
        llm = ScriptedLLM.by_prompt(
            {
                f"r{n} job {i}": [tool_call("bash", {"command": "sleep 0.3"}), "done"]
                for i in range(4)
            }
        )
        rollouts.append((AgenticRollout(config, llm_client=llm), n))
    client = docker.from_env()
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(client.containers.list(filters={"label": run_label})))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summaries = await asyncio.gather(
            *(r.run([f"r{n} job {i}" for i in range(4)]) for r, n in rollouts)
        )
    finally:
        stop.set()
        watcher.join()
        client.close()
    trajs = [t for s in summaries for t in s.trajectories]
    assert [t.status.value for t in trajs] == ["completed"] * 8
    assert max(seen) <= 2 and docker_limits.stats.max_live_seen <= 2
    waits = [t.metadata["queue_wait"] for t in trajs]
    assert sum(w > 0.1 for w in waits) >= 4  # at most 2 of 8 can start without waiting
    assert (docker_limits.live, docker_limits.starting, docker_limits.queued) == (0, 0, 0)


@pytest.mark.docker
async def test_warm_pool_starts_go_through_admission(docker_limits: AdmissionController) -> None:
    """The pool's sandboxes count as live; its refills never queue for a slot, so a
    trajectory waiting for one gets the next freed slot (no deadlock with max_live <= size)."""
    from orchestrator.sandbox.pool import WarmPool

    admission.configure("docker", {"max_live": 2})
    values = docker_config().model_dump(mode="json")
    async with WarmPool(3, max_starting=3) as pool:
        pool.warm(values)
        deadline = time.monotonic() + 30
        while pool.ready(values) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # give a (wrong) third start time to happen
        assert pool.ready(values) == 2 and docker_limits.live == 2
        assert docker_limits.queued == 0  # refills wait outside the queue
        first = await pool.acquire(values)
        second = await pool.acquire(values)
        third = asyncio.create_task(pool.acquire(values))
        await asyncio.sleep(0.5)
        assert not third.done() and docker_limits.live == 2
        await first.close()
        async with await asyncio.wait_for(third, 30) as sandbox:
            assert (await sandbox.run("echo hi")).output == "hi\n"
        await second.close()
    assert docker_limits.live == 0 and docker_limits.queued == 0


@pytest.mark.docker
async def test_a_failed_start_frees_its_slots(docker_limits: AdmissionController) -> None:
    from orchestrator.exceptions import SandboxStartError

    admission.configure("docker", {"max_live": 1, "max_starting": 1})
    for _ in range(2):
        with pytest.raises(SandboxStartError):
            await docker_config(image="agentic-rollout/nopython:latest").build().start()
    assert (docker_limits.live, docker_limits.starting) == (0, 0)
    async with docker_config().build() as sb:
        assert docker_limits.live == 1
        assert (await sb.run("echo ok")).ok
