"""`agentic-rollout export`: SFT files from real trajectories, read back with `datasets`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.config import AgenticRolloutConfig
from orchestrator.export import FilterError, export, parse_where
from orchestrator.runner import AgenticRollout
from orchestrator.testing import ScriptedLLM, tool_call
from orchestrator.trajectory import Trajectory, TrajectoryStatus


async def _run(folder: Path) -> Path:
    """Two solved tasks (one with two tool calls), one wrong answer, one that hits max_steps."""
    config = AgenticRolloutConfig(
        agent_type="tool",
        tools=["bash", "calculator"],
        max_steps=2,
        sandbox={"type": "local"},
        trajectory_save_path=str(folder / "trajectories.jsonl"),
    )
    llm = ScriptedLLM.by_prompt(
        {
            "multiply": [tool_call("calculator", {"expression": "6*7"}), "42."],
            "files": [
                tool_call("bash", {"command": "echo one; echo two"}, call_id="c1"),
                tool_call("calculator", {"expression": "1+1"}, call_id="c2"),
            ],
            "guess": ["It is 5."],
            "hello": [tool_call("bash", {"command": "echo hello"}), "hello"],
        }
    )
    await AgenticRollout(config, llm_client=llm).run(
        [
            {"id": "mul", "prompt": "multiply 6 by 7", "answer": "42"},
            {"id": "loop", "prompt": "files and more files", "answer": "x"},
            {"id": "wrong", "prompt": "guess a number", "answer": "7"},
            {"id": "hi", "prompt": "say hello", "answer": "hello"},
        ]
    )
    return folder / "trajectories.jsonl"


def _trajectory(status: str, reward: float | None, **meta: Any) -> Trajectory:
    t = Trajectory(request_id="t", metadata=meta)
    t.finish(TrajectoryStatus(status))
    t.reward = reward
    return t


def test_where_semantics() -> None:
    keep = parse_where("status=completed and reward>=1")
    assert keep(_trajectory("completed", 1.0))
    assert not keep(_trajectory("completed", 0.0))
    assert not keep(_trajectory("completed", None))  # no reward is not >= 1
    assert not keep(_trajectory("error", 1.0))
    either = parse_where("not (status = 'completed') or reward < 0.5")
    assert either(_trajectory("error", 1.0)) and either(_trajectory("completed", 0.0))
    assert not either(_trajectory("completed", 1.0))
    assert parse_where("metadata.run_id == abc")(_trajectory("completed", 1.0, run_id="abc"))
    assert parse_where("reward = none")(_trajectory("error", None))
    assert parse_where("")(_trajectory("error", None))


@pytest.mark.parametrize(
    ("expr", "column", "why"),
    [
        ("status=completed and", 21, "expected a comparison"),
        ("status=completed reward>=1", 18, "expected 'and', 'or' or the end, got 'reward'"),
        ("rewrd>=1", 1, "unknown field 'rewrd'"),
        ("reward >= ", 11, "expected a value after '>='"),
        ("status completed", 8, "expected an operator"),
        ("(reward>1", 10, "expected ')'"),
        ("reward>=1 & status=x", 11, "unexpected character '&'"),
    ],
)
def test_bad_filter_says_where_it_fails(expr: str, column: int, why: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_where(expr)
    message = str(info.value)
    assert f"at column {column}: {why}" in message
    # the caret points at that column under the expression
    lines = message.splitlines()
    assert lines[1].strip() == expr.strip() and lines[2].index("^") - 2 == column - 1


async def test_messages_export_round_trips_through_datasets(tmp_path: Path) -> None:
    import datasets

    source = await _run(tmp_path / "run")
    out = tmp_path / "sft.jsonl"
    result = export(source, out, fmt="messages", where="status=completed and reward>=1")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.written == 2 and result.skipped == 2
    assert [r["id"] for r in rows] == ["mul", "hi"]
    mul = rows[0]["messages"]
    assert [m["role"] for m in mul] == ["system", "user", "assistant", "tool", "assistant"]
    call = mul[2]["tool_calls"][0]
    # the chat-template form: arguments as an object, the result names its call and tool
    assert call["type"] == "function" and call["function"] == {
        "name": "calculator",
        "arguments": {"expression": "6*7"},
    }
    assert mul[3]["tool_call_id"] == call["id"] and mul[3]["name"] == "calculator"
    assert "42" in mul[3]["content"] and mul[4]["content"] == "42."
    assert [t["function"]["name"] for t in rows[0]["tools"]] == ["calculator"]
    loaded = datasets.load_dataset("json", data_files=str(out), split="train")
    assert loaded.num_rows == 2 and loaded[0]["id"] == "mul"

    def strip(x: Any) -> Any:  # arrow fills keys another row has with None
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if v is not None}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    assert strip(loaded[0]["messages"]) == strip(mul)


async def test_parquet_and_sharegpt(tmp_path: Path) -> None:
    import datasets

    source = await _run(tmp_path / "run")
    pq = tmp_path / "sft.parquet"
    assert main(["export", str(source), "--format", "parquet", "-o", str(pq)]) == 0
    ds = datasets.load_dataset("parquet", data_files=str(pq), split="train")
    assert ds.num_rows == 4 and set(ds.column_names) >= {"id", "messages", "tools", "reward"}
    loop = next(r for r in ds if r["id"] == "loop")
    assert loop["reward"] is None and loop["status"] == "max_steps"
    calls = [m["tool_calls"] for m in loop["messages"] if m["tool_calls"]]
    assert [c[0]["id"] for c in calls] == ["c1", "c2"]
    assert json.loads(calls[0][0]["function"]["arguments"]) == {"command": "echo one; echo two"}
    assert json.loads(loop["tools"])[0]["function"]["name"] == "bash"
    # an exact round trip: what we wrote is what the library reads
    again = tmp_path / "again.parquet"
    ds.to_parquet(str(again))
    assert datasets.load_dataset("parquet", data_files=str(again), split="train").to_list() == (
        ds.to_list()
    )

    share = tmp_path / "share.jsonl"
    assert (
        main(["export", str(source), "--format", "sharegpt", "--where", "id=hi", "-o", str(share)])
        == 0
    )
    (row,) = [json.loads(x) for x in share.read_text().splitlines()]
    assert [t["from"] for t in row["conversations"]] == [
        "human",
        "function_call",
        "observation",
        "gpt",
    ]
    assert json.loads(row["conversations"][1]["value"]) == {
        "name": "bash",
        "arguments": {"command": "echo hello"},
    }
    assert row["conversations"][2]["value"].startswith("hello")
    assert row["system"] and json.loads(row["tools"])[0]["function"]["name"] == "bash"
    loaded = datasets.load_dataset("json", data_files=str(share), split="train")
    assert loaded[0]["conversations"] == row["conversations"]


def test_export_cli_bad_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.jsonl").write_text("")
    code = main(["export", str(tmp_path / "t.jsonl"), "--where", "reward>>1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--where does not parse at column 8: expected a value after '>'" in err
