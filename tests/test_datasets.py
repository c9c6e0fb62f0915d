"""Tasks from local Hugging Face datasets (parquet / arrow / save_to_disk), built offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import TaskError
from orchestrator.runner import AgenticRollout
from orchestrator.swe.run import run_swe
from orchestrator.swe.task import load_swe_tasks
from orchestrator.tasks import load_tasks
from orchestrator.testing import ScriptedLLM, tool_call

from .conftest import TEST_RUN_ID

ROOT = Path(__file__).resolve().parent.parent
SWE_TASKS = ROOT / "examples" / "swe" / "tasks.jsonl"


def _swe_rows() -> list[dict[str, object]]:
    rows = [json.loads(line) for line in SWE_TASKS.read_text().splitlines() if line.strip()]
    # as on the Hub: F2P/P2P are JSON strings
    assert all(isinstance(r["FAIL_TO_PASS"], str) for r in rows)
    return rows


def _swe_parquet(path: Path, drop: tuple[str, ...] = ()) -> Path:
    import datasets

    rows = [{k: v for k, v in r.items() if k not in drop} for r in _swe_rows()]
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def test_swe_bench_shaped_parquet_loads_like_the_jsonl(tmp_path: Path) -> None:
    from_jsonl, errors = load_swe_tasks(SWE_TASKS)
    assert not errors
    from_parquet, errors = load_swe_tasks(_swe_parquet(tmp_path / "swe.parquet"), split="test")
    assert not errors
    assert [t.model_dump() for t in from_parquet] == [t.model_dump() for t in from_jsonl]
    assert from_parquet[0].FAIL_TO_PASS and isinstance(from_parquet[0].FAIL_TO_PASS, list)


def test_missing_swe_columns_are_named(tmp_path: Path) -> None:
    path = _swe_parquet(tmp_path / "bad.parquet", drop=("FAIL_TO_PASS", "test_patch"))
    with pytest.raises(TaskError) as info:
        load_swe_tasks(path)
    assert "has no column test_patch, FAIL_TO_PASS" in str(info.value)


def test_saved_dataset_with_splits(tmp_path: Path) -> None:
    import datasets

    rows = [{"id": f"q{i}", "prompt": f"what is {i}+{i}?", "answer": str(2 * i)} for i in range(3)]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(rows[:2]),
            "test": datasets.Dataset.from_list(rows[2:]),
        }
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    tasks, bad = load_tasks(tmp_path / "ds", split="test")
    assert not bad and [t.id for t in tasks] == ["q2"] and tasks[0].answer == "4"
    with pytest.raises(TaskError, match="has splits train, test: choose one with --split"):
        load_tasks(tmp_path / "ds")
    with pytest.raises(TaskError, match="has no split 'dev'"):
        load_tasks(tmp_path / "ds", split="dev")
    # an arrow file is read as well
    dd["train"].to_parquet(str(tmp_path / "train.parquet"))
    tasks, _ = load_tasks(tmp_path / "train.parquet")
    assert [t.id for t in tasks] == ["q0", "q1"]


async def test_run_from_parquet_with_answer_reward(tmp_path: Path) -> None:
    import datasets

    rows = [
        {"id": "add", "prompt": "what is 2+2?", "answer": "4"},
        {"id": "bad", "prompt": "", "answer": "1"},  # no prompt: reported with its row
    ]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "t.parquet"))
    tasks, bad = load_tasks(tmp_path / "t.parquet")
    assert [t.id for t in tasks] == ["add"]
    assert bad[0].line == 2 and "no prompt" in bad[0].message
    config = AgenticRolloutConfig(
        agent_type="tool", sandbox={"type": "none"}, save_trajectories=False
    )
    llm = ScriptedLLM([tool_call("calculator", {"expression": "2+2"}), "4"])
    summary = await AgenticRollout(config, llm_client=llm).run(tasks)
    assert summary.trajectories[0].reward == 1.0


def test_cli_split_flag_reaches_the_loader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _swe_parquet(tmp_path / "swe.parquet", drop=("problem_statement",))
    assert main(["swe", "run", str(tmp_path / "swe.parquet"), "--split", "test"]) == 2
    assert "has no column problem_statement" in capsys.readouterr().err


@pytest.mark.docker
async def test_swe_run_from_parquet_gets_reward_1(tmp_path: Path) -> None:
    (task,) = [
        t
        for t in load_swe_tasks(_swe_parquet(tmp_path / "swe.parquet"))[0]
        if t.instance_id == "agentic__textkit-1"
    ]
    config = AgenticRolloutConfig(
        agent_type="coding",
        trajectory_save_path=str(tmp_path / "t.jsonl"),
        sandbox={"type": "docker", "run_id": TEST_RUN_ID},
    )
    policy = ScriptedLLM(
        [
            tool_call(
                "str_replace_editor",
                {
                    "command": "str_replace",
                    "path": "/testbed/textkit/slug.py",
                    "old_str": "re.sub(r'[^a-z0-9]', '-', text)",
                    "new_str": "re.sub(r'[^a-z0-9]+', '-', text)",
                },
            ),
            tool_call("submit", {}),
        ]
    )
    summary = await run_swe([task], config, llm_client=policy)
    assert summary.trajectories[0].reward == 1.0, summary.trajectories[0].reward_details
