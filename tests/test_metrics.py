"""Prometheus exposition (orchestrator/metrics.py): scraped over HTTP on loopback while a real
Docker run is going, and through the CLI's ``--metrics-port``."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

import pytest

from orchestrator import metrics

from .conftest import docker_config


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def _value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}``; 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"([a-zA-Z_:]+)(\{.*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


@pytest.fixture(scope="module")
def metrics_port() -> Any:
    server, port = metrics.serve(0)
    yield port
    server.shutdown()
    server.server_close()


def test_serves_on_loopback_only(metrics_port: int) -> None:
    text = _scrape(metrics_port)
    assert "# TYPE agentic_sandbox_start_seconds histogram" in text
    assert "# TYPE agentic_trajectories_total counter" in text


@pytest.mark.docker
async def test_scraped_during_a_real_docker_run(metrics_port: int, tmp_path: Any) -> None:
    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.runner import AgenticRollout
    from orchestrator.testing import ScriptedLLM, tool_call

    before = _scrape(metrics_port)
    config = AgenticRolloutConfig(
        agent_type="tool",
        sandbox=docker_config().model_dump(mode="json"),
        concurrent_requests=3,
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    llm = ScriptedLLM.by_prompt(
        {
            **{
                f"job {i}": [tool_call("bash", {"command": "sleep 1.5; echo ok"}), "done"]
                for i in range(3)
            },
            "bad job": [tool_call("bash", {"command": "exit 3"}), "done"],
        }
    )
    rollout = AgenticRollout(config, llm_client=llm)
    run = asyncio.create_task(rollout.run([*(f"job {i}" for i in range(3)), "bad job"]))
    live_seen = 0.0
    while not run.done():
        text = await asyncio.to_thread(_scrape, metrics_port)
        live_seen = max(live_seen, _value(text, "agentic_sandboxes_live", backend="docker"))
        await asyncio.sleep(0.1)
    summary = await run
    assert [t.status.value for t in summary.trajectories] == ["completed"] * 4
    assert live_seen >= 2  # seen mid-run, while the sleeps were going
    after = _scrape(metrics_port)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("agentic_trajectories_total", status="completed") == 4
    assert delta("agentic_sandbox_start_seconds_count", backend="docker") == 4
    assert delta("agentic_sandbox_queue_wait_seconds_count", backend="docker") == 4
    assert delta("agentic_tool_call_seconds_count", tool="bash", outcome="ok") == 3
    assert delta("agentic_tool_call_seconds_count", tool="bash", outcome="failed") == 1
    # a 1.5 s tool call lands above the 1 s bucket
    assert delta("agentic_tool_call_seconds_bucket", tool="bash", outcome="ok", le="1.0") == 0
    assert delta("agentic_llm_call_seconds_count") == 8
    assert _value(after, "agentic_sandboxes_live", backend="docker") == 0


@pytest.mark.docker
async def test_start_failures_and_errors_by_kind(metrics_port: int, tmp_path: Any) -> None:
    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.runner import AgenticRollout
    from orchestrator.testing import ScriptedLLM

    before = _scrape(metrics_port)
    config = AgenticRolloutConfig(
        agent_type="tool",
        sandbox=docker_config(image="agentic-rollout/nopython:latest").model_dump(mode="json"),
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    summary = await AgenticRollout(config, llm_client=ScriptedLLM(["done"])).run(["x"])
    assert summary.trajectories[0].status.value == "error"
    after = _scrape(metrics_port)
    kind = summary.trajectories[0].errors[0].type
    assert (
        _value(after, "agentic_errors_total", kind=kind)
        - _value(before, "agentic_errors_total", kind=kind)
        == 1
    )
    assert (
        _value(after, "agentic_sandbox_start_failures_total", backend="docker", kind=kind)
        - _value(before, "agentic_sandbox_start_failures_total", backend="docker", kind=kind)
        == 1
    )
    assert (
        _value(after, "agentic_trajectories_total", status="error")
        - _value(before, "agentic_trajectories_total", status="error")
        == 1
    )


@pytest.mark.docker
def test_reaper_counts_what_it_removed(metrics_port: int) -> None:
    import docker

    from orchestrator.sandbox.gc import reap_docker

    from .conftest import SANDBOX_IMAGE, TEST_RUN_ID

    client = docker.from_env()
    c = client.containers.create(
        SANDBOX_IMAGE,
        ["sleep", "60"],
        network_mode="none",
        labels={"agentic-rollout.managed": "1", "agentic-rollout.run": TEST_RUN_ID + "-gc"},
    )
    client.close()
    before = _value(_scrape(metrics_port), "agentic_sandboxes_reaped_total", backend="docker")
    reaped = reap_docker(run_id=TEST_RUN_ID + "-gc")
    assert [r.container_id for r in reaped] == [c.id[:12]]
    after = _value(_scrape(metrics_port), "agentic_sandboxes_reaped_total", backend="docker")
    assert after - before == 1


def test_cli_metrics_port_is_loopback_and_bad_port_is_clear() -> None:
    from orchestrator.cli import build_parser

    args = build_parser().parse_args(["run", "t.jsonl", "--metrics-port", "0"])
    assert args.metrics_port == 0
    import socket

    from orchestrator.exceptions import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
            metrics.serve(taken)
