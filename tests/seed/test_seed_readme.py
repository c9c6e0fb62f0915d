"""Every Python block of the seed README runs, as a script in tests/seed/ (imports changed, a
scripted model where the block says "your LLM"), each in its own process so the global tool
registry starts empty as it does for a user. Blocks covered elsewhere: the custom agent
(tests/seed/test_custom_agent.py), VERL's ``generate_sequences`` (tests/test_verl.py,
test_standalone_trajectories_to_dataproto) and the custom WebSearchTool
(examples/custom_tool_web_search.py, tests/test_examples.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SANDBOX_IMAGE, TEST_RUN_ID
from tests.llm_server import ScriptedServer, anthropic_message, openai_completion

ROOT = Path(__file__).resolve().parents[2]


def run_block(
    script: str, cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 280
) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "seed" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.docker
def test_basic_usage_block(tmp_path: Path) -> None:
    out = run_block("basic_usage.py", tmp_path).splitlines()
    assert out[:2] == ["最终响应: 360", "总步数: 4"]
    assert out[2].startswith("tools: ['calculator'] sandbox: ")
    (line,) = (tmp_path / "trajectories" / "trajectories.jsonl").read_text().splitlines()
    assert json.loads(line)["request_id"] == "math_example"


@pytest.mark.docker
def test_standalone_agent_with_tools_block(tmp_path: Path) -> None:
    out = run_block("tools_agent.py", tmp_path).splitlines()
    assert out == [
        "['bash', 'calculator', 'str_replace_editor']",
        "completed 0 1 1 2 3 5 8 13 21 34",
        repr("0\n1\n1\n2\n3\n5\n8\n13\n21\n34\n[exit code: 0]"),
    ]


@pytest.mark.docker
def test_multi_model_block_openai(tmp_path: Path) -> None:
    replies = ['Action: calculator\nAction Input: {"expression": "6 * 7"}', "Final Answer: 42"]
    with ScriptedServer([("json", openai_completion(r)) for r in replies]) as server:
        out = run_block(
            "multi_model.py", tmp_path, "openai", env={"OPENAI_BASE_URL": server.base_url}
        )
        bodies = [r["body"] for r in server.requests]
    assert out.splitlines() == ["openai completed 42", "openai ['6 * 7 = 42']"]
    assert [b["model"] for b in bodies] == ["gpt-4", "gpt-4"]
    assert bodies[0]["stop"] == ["\nObservation:"] and bodies[0]["max_tokens"] == 512
    assert bodies[1]["messages"][-1] == {"role": "user", "content": "Observation: 6 * 7 = 42"}


@pytest.mark.docker
def test_multi_model_block_claude(tmp_path: Path) -> None:
    import importlib

    import orchestrator
    import orchestrator.llm

    if not any(hasattr(m, "ClaudeAPIClient") for m in (orchestrator, orchestrator.llm)):
        pytest.skip("ClaudeAPIClient is not in this tree yet (helper 'run' adds it)")
    importlib.import_module("anthropic")
    replies = ['Action: calculator\nAction Input: {"expression": "6 * 7"}', "Final Answer: 42"]
    script = [("json", anthropic_message([{"type": "text", "text": r}])) for r in replies]
    with ScriptedServer(script) as server:
        out = run_block(
            "multi_model.py", tmp_path, "claude", env={"ANTHROPIC_BASE_URL": server.root_url}
        )
    assert out.splitlines() == ["claude completed 42", "claude ['6 * 7 = 42']"]


@pytest.mark.docker
def test_core_tools_blocks(tmp_path: Path) -> None:
    out = run_block("core_tools.py", tmp_path, SANDBOX_IMAGE, TEST_RUN_ID)
    assert out.splitlines()[:5] == [
        "calculator True: 2 + 3 * 4 = 14",
        "calculator True: sqrt(16) + factorial(4) = 28",
        "calculator True: sin(pi/2) = 1",
        "bash True: ok",
        "[exit code: 0]",
    ]
    assert "bash False: " in out and "`rm` is blocked" in out
    assert "str_replace_editor True: File created successfully at: /tmp/w/a.py" in out
    assert "str_replace_editor False: Files with extension `.sh` cannot be edited" in out
    # search_extensions: the .txt file with the same text is not searched
    assert 'search True: Found 1 matches for "x = 1" in /tmp/w:\n/tmp/w/a.py (1 matches)' in out


@pytest.mark.docker
def test_config_blocks(tmp_path: Path) -> None:
    out = run_block("config_blocks.py", tmp_path).splitlines()
    assert out == [
        "calculator: 1/3 = 0.3333333333",
        "stored: ['third']",
        "concurrency: 4 2",
        "memory: store None",
        "debug: debug_trajectories/trajectories.jsonl",  # the seed: a directory
        "verl: react 10",
    ]


@pytest.mark.docker
@pytest.mark.timeout(900)  # four trajectories, each in its own container
def test_scenario_analysis_and_batch_blocks(tmp_path: Path) -> None:
    out = run_block("scenarios.py", tmp_path, timeout=880).splitlines()
    assert out[0] == "completed ['100 - 1.96 * 15 = 70.6']"
    assert out[1].startswith("completed ['File created successfully at: /tmp/qs.py', '[1, 2, 3]")
    assert out[2] == "completed ['3\\n[exit code: 0]']"
    assert out[3] == "completed ['checked\\n[exit code: 0]']"
    assert out[4:7] == ["总步数: 4", "工具调用: 1", "最终奖励: 0.0"]
    assert json.loads((tmp_path / "trajectory.json").read_text())["status"] == "completed"
    assert out[7] == "[('batch_0', '360'), ('batch_1', 'sorted(xs)'), ('batch_2', 'qubits')]"


def test_env_var_block_save_trajectories(tmp_path: Path) -> None:
    code = (
        "from orchestrator import AgenticRolloutConfig\n"
        "print(AgenticRolloutConfig().save_trajectories)\n"
    )
    for value, expected in (("true", "True"), ("false", "False")):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT), "AGENTIC_SAVE_TRAJECTORIES": value},
        )
        assert proc.stdout.strip() == expected
