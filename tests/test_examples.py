"""The examples run as documented (so they cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_custom_tool_example() -> None:
    out = _run("custom_tool_web_search.py")
    assert '"found": 1' in out
    assert "Tool `web_search`: missing required argument `query`." in out


@pytest.mark.docker
def test_core_tools_demo_on_docker() -> None:
    out = _run("core_tools_demo.py")
    assert "sqrt(16) + factorial(4) = 28" in out
    assert "     2\t    return a + b" in out
    assert out.rstrip().endswith("Submitted a patch: 1 file(s) changed, 175 bytes.")


@pytest.mark.docker
def test_sandbox_quickstart_on_docker() -> None:
    out = _run("sandbox_quickstart.py")
    assert "hello from /workspace/demo" in out and "session still usable: hello" in out


def test_basic_usage_example() -> None:
    out = _run("basic_usage.py")
    assert "final response: 360" in out and "status: completed" in out


@pytest.mark.docker
def test_tool_integration_demo() -> None:
    out = _run("tool_integration_demo.py")
    assert "final response: 0 1 1 2 3 5 8 13 21 34  status: completed" in out


@pytest.mark.docker
def test_advanced_integration_runs_and_resumes(tmp_path: Path) -> None:
    out = _run("advanced_integration.py", "--out", str(tmp_path))
    assert (
        "ran 3, skipped (already stored) 0" in out
        and "words-8: completed reward=1.0 answer=8" in out
    )
    again = _run("advanced_integration.py", "--out", str(tmp_path))
    assert "ran 0, skipped (already stored) 3" in again and "SFT examples: 3" in again


@pytest.mark.docker
def test_demo_command_is_a_real_offline_rollout(tmp_path: Path) -> None:
    """The README's main job (after setup): llama.cpp + SmolLM2 + Docker, trajectories on disk."""
    import importlib.util

    from orchestrator.store import read_trajectories

    from .conftest import IN_CI

    if importlib.util.find_spec("llama_cpp") is None:
        if IN_CI:
            pytest.fail("CI=true but llama-cpp-python is not installed", pytrace=False)
        pytest.skip("llama-cpp-python not installed")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "demo",
            "--output",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rollout summary" in proc.stdout
    stored = list(read_trajectories(tmp_path / "trajectories.jsonl"))
    assert len(stored) == 5 and all(t.usage.completion_tokens > 0 for t in stored)


@pytest.mark.docker
def test_fork_tree_search_example_branches_and_keeps_the_best() -> None:
    import docker

    client = docker.from_env()
    snapshots = {"label": "agentic-rollout.kind=snapshot"}
    before = {i.id for i in client.images.list(filters=snapshots)}
    out = _run("fork_tree_search.py")
    assert "depth 2: score 3 <- sed -i 's/return a$/return -a/' calc.py" in out
    assert "status: completed" in out and "score 3/3" in out and "return a * b" in out
    # every branch's snapshot image went with its branches (forks of forks included)
    assert {i.id for i in client.images.list(filters=snapshots)} <= before
