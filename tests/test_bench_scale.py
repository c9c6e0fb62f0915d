"""bench/scale.py's live mode: bounded levels, its accounting, and nothing left behind."""

from __future__ import annotations

import uuid

import pytest

from bench import scale
from orchestrator.exceptions import AgenticRolloutError, ConfigError
from orchestrator.sandbox import labels
from orchestrator.sandbox.docker import docker_api
from tests.conftest import SANDBOX_IMAGE


def test_label_is_the_orchestrators() -> None:
    # spelled out in the bench so it also runs against older checkouts: must not drift
    assert scale.LABEL_RUN == labels.LABEL_RUN


@pytest.mark.parametrize("n", [0, -1, scale.MAX_SANDBOXES + 1])
def test_a_level_out_of_bounds_is_refused(n: int) -> None:
    with pytest.raises(ConfigError, match=rf"--sandboxes {n} is outside 1\.\.256"):
        scale.check_live_level(n, available=2**40)


def test_a_level_that_does_not_fit_in_memory_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"128 live sandboxes need about 10\.0 GiB free"):
        scale.check_live_level(128, available=4 * 2**30)
    scale.check_live_level(128, available=11 * 2**30)  # fits: no error


def _own(run_id: str) -> int:
    api = docker_api()
    try:
        return len(api.containers(all=True, filters={"label": f"{labels.LABEL_RUN}={run_id}"}))
    finally:
        api.close()


@pytest.mark.docker
async def test_live_level_measures_every_call_and_removes_its_sandboxes() -> None:
    run_id = f"pytest-live-{uuid.uuid4().hex[:6]}"
    lv = await scale.live_level(2, rounds=3, think=0.0, image=SANDBOX_IMAGE, run_id=run_id)
    assert lv["live"] == 2 and lv["leaked"] == 0 and _own(run_id) == 0
    assert lv["trivial"]["calls"] == 6 and lv["trivial"]["failed"] == 0
    # the mix: each sandbox starts at its own op, so 2 x 3 calls cover 4 different ops
    assert lv["mix"]["calls"] == 6 and lv["mix"]["failed"] == 0, lv["mix"]
    assert set(lv["mix"]["p50_ms_by_op"]) == {"ls", "write", "view", "search"}
    assert lv["cgroup_mem_per_sandbox_mb"] > 1
    split = ("total", "orchestrator", "engine", "sandboxes", "others", "rest")
    assert all(f"cpu_{k}_ms" in lv["trivial"] for k in split)
    assert lv["trivial"]["cpu_sandboxes_ms"] > 0  # the agents answered: their cgroups count
    lines = scale.table_lines([("x", {"levels": [lv]})])
    assert lines[2].startswith("| x | 2 |") and lines[2].endswith("| 0 | 0 |")


@pytest.mark.docker
async def test_a_level_past_its_wall_limit_fails_and_leaves_nothing() -> None:
    run_id = f"pytest-live-{uuid.uuid4().hex[:6]}"
    with pytest.raises(AgenticRolloutError, match="2 live sandboxes ran past 2 s"):
        await scale.live_level(
            2, rounds=1000, think=0.01, image=SANDBOX_IMAGE, max_seconds=2.0, run_id=run_id
        )
    assert _own(run_id) == 0
