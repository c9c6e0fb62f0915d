"""Preflight: every configuration error shows before the first sandbox starts, with nothing
written and no container created (checked against the real Docker engine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import ConfigError, PreflightError
from orchestrator.local_llm import free_port
from orchestrator.runner import AgenticRollout
from orchestrator.testing import ScriptedLLM
from orchestrator.trajectory import Outcome

from .conftest import SANDBOX_IMAGE, TEST_RUN_ID
from .llm_server import openai_completion, scripted_server

ROOT = Path(__file__).resolve().parent.parent


def containers() -> list[Any]:
    client = docker.from_env()
    try:
        return list(
            client.containers.list(
                all=True, filters={"label": f"agentic-rollout.run={TEST_RUN_ID}"}
            )
        )
    finally:
        client.close()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


def test_a_typo_in_the_sandbox_settings_fails_at_load_with_a_did_you_mean(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sandbox:\n  type: docker\n  imagee: python:3.12\nmax_step: 3\n")
    with pytest.raises(ConfigError) as info:
        AgenticRolloutConfig.load(config)
    text = str(info.value)
    assert "sandbox.imagee: unknown key; did you mean 'image'?" in text
    assert "max_step: unknown key; did you mean 'max_steps'?" in text
    with pytest.raises(ConfigError, match=r"llm\.base_ur: unknown key; did you mean 'base_url'"):
        AgenticRolloutConfig.load(None, **{"llm.base_ur": "http://x"})
    with pytest.raises(
        ConfigError,
        match=r"sandbox\.type: unknown sandbox backend 'dokcer'; did "
        r"you mean 'docker'",
    ):
        AgenticRolloutConfig.load(None, **{"sandbox.type": "dokcer"})
    with pytest.raises(
        ConfigError,
        match=r"sandbox\.memory_limit: unknown key; did you mean "
        r"'memory'",
    ):
        AgenticRolloutConfig.load(None, sandbox={"type": "kubernetes", "memory_limit": "1Gi"})
    # the CLI: exit 2, the message, nothing written
    out = tmp_path / "out"
    proc = cli("run", "--prompt", "hi", "--config", str(config), "--output", str(out))
    assert proc.returncode == 2 and "did you mean 'image'?" in proc.stderr
    assert not out.exists()


@pytest.mark.docker
def test_missing_image_dead_url_and_agent_mismatch_all_reported_nothing_started(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there
    out = tmp_path / "out"
    proc = cli(
        "run",
        "--prompt",
        "hi",
        "--backend",
        "docker",
        "--image",
        "agentic-rollout/does-not-exist:1",
        "--base-url",
        f"http://127.0.0.1:{port}/v1",
        "--set",
        "llm.api_key=k",
        "--set",
        f"sandbox.run_id={TEST_RUN_ID}",
        "--output",
        str(out),
        "--no-progress",
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "preflight failed; nothing was started or written" in err
    assert "sandbox image 'agentic-rollout/does-not-exist:1' does not exist on the Docker" in err
    assert f"LLM endpoint http://127.0.0.1:{port}/v1/ (model 'default') did not answer" in err
    assert not out.exists(), "a preflight failure writes nothing"
    assert containers() == []
    assert "retry" not in err.lower()  # one request, not ~21 s of retries per trajectory
    # a plain function cannot drive the native tool-calling agent
    rollout = AgenticRollout(
        AgenticRolloutConfig(agent_type="tool", sandbox={"type": "none"}, save_trajectories=False),
        lambda messages, **kw: "text",
    )
    import asyncio

    with pytest.raises(PreflightError, match="agent 'tool': agent 'tool' needs an LLM client"):
        asyncio.run(rollout.run(["q"]))


@pytest.mark.docker
async def test_preflight_passes_then_runs_and_no_preflight_stores_the_failure(
    tmp_path: Path,
) -> None:
    ok = AgenticRolloutConfig(
        agent_type="react",
        sandbox={"type": "docker", "image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID},
        trajectory_save_path=str(tmp_path / "a.jsonl"),
    )
    with scripted_server(
        [("ok", openai_completion("pong")), ("ok", openai_completion("Final Answer: 1"))]
    ) as server:
        config = ok.model_copy(
            update={"llm": ok.llm.model_copy(update={"base_url": server.base_url, "api_key": "k"})}
        )
        summary = await AgenticRollout(config).run(["q"])
    assert summary.trajectories[0].outcome == Outcome.COMPLETED
    assert server.requests[0]["body"]["max_tokens"] == 1
    assert containers() == []
    # --no-preflight: the missing image fails the trajectory, stored as retryable
    bad = ok.model_copy(
        update={
            "sandbox": {**ok.sandbox, "image": "agentic-rollout/does-not-exist:1"},
            "preflight": False,
            "trajectory_save_path": str(tmp_path / "b.jsonl"),
        }
    )
    summary = await AgenticRollout(bad, llm_client=ScriptedLLM(["Final Answer: 1"])).run(["q"])
    assert summary.trajectories[0].outcome == Outcome.INFRA_ERROR
    assert summary.trajectories[0].errors[0].type == "SandboxStartError"
    assert containers() == []


async def test_a_rerun_with_nothing_to_do_needs_no_endpoint(tmp_path: Path) -> None:
    config = AgenticRolloutConfig(
        agent_type="react",
        sandbox={"type": "none"},
        trajectory_save_path=str(tmp_path / "t.jsonl"),
        llm={"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": "k"},
    )
    done = await AgenticRollout(config, llm_client=ScriptedLLM(["Final Answer: 1"])).run(["q"])
    assert done.trajectories[0].outcome == Outcome.COMPLETED
    again = await AgenticRollout(config).run(["q"])  # the dead endpoint is never asked
    assert again.trajectories == [] and again.skipped_outcomes == {
        done.trajectories[0].request_id: "completed"
    }
    with pytest.raises(PreflightError, match="did not answer"):
        await AgenticRollout(config).run(["q", "new"])
