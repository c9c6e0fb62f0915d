"""The demo's strict tool-call schema: what llama.cpp is asked to enforce, turn by turn, and
that llama.cpp's own schema-to-grammar converter accepts it."""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.demo import (
    ANSWER_PATTERN,
    EXPRESSION_PATTERN,
    StrictJsonClient,
    demo_client,
    outcomes_table,
)
from orchestrator.runner import AgenticRollout
from orchestrator.tasks import Task
from orchestrator.testing import ScriptedLLM
from tools.registry import default_registry

from .conftest import IN_CI


def _tools() -> Any:
    return default_registry().fork({}, only=["bash", "calculator"])


async def test_first_reply_must_call_a_tool_then_the_answer_follows() -> None:
    inner = ScriptedLLM(
        [
            '{"action": "calculator", "action_input": {"expression": "6 * 7"}}',
            '{"action": "final_answer", "action_input": {"answer": "42"}}',
        ],
        supports_tools=False,
    )
    client = StrictJsonClient(inner, _tools(), patterns={"expression": EXPRESSION_PATTERN})
    config = AgenticRolloutConfig(
        agent_type="react",
        tool_format="json",
        tools=["bash", "calculator"],
        sandbox={"type": "none"},
        save_trajectories=False,
    )
    summary = await AgenticRollout(config, llm_client=client).run(
        [{"id": "m", "prompt": "what is 6 * 7?", "answer": "42"}]
    )
    assert summary.trajectories[0].reward == 1.0
    first, second = (c["sampling"]["response_format"]["schema"] for c in inner.calls)
    # turn 1: one alternative per tool, each with only that tool's own arguments
    actions = {a["properties"]["action"]["const"]: a for a in first["anyOf"]}
    assert sorted(actions) == ["bash", "calculator"]
    calc = actions["calculator"]["properties"]["action_input"]
    assert calc["properties"] == {"expression": {"type": "string", "pattern": EXPRESSION_PATTERN}}
    assert calc["additionalProperties"] is False and calc["required"] == ["expression"]
    bash = actions["bash"]["properties"]["action_input"]["properties"]
    assert bash == {"command": {"type": "string", "maxLength": 120}}
    # turn 2, after the observation: only the final answer
    assert second["properties"]["action"] == {"const": "final_answer"}
    answer = second["properties"]["action_input"]["properties"]["answer"]
    assert answer["pattern"] == ANSWER_PATTERN


def test_answer_pattern_refuses_spilled_json() -> None:
    ok = re.compile(ANSWER_PATTERN)
    assert ok.match("Python 3.11.2") and ok.match("Linux") and ok.match("12.0")
    assert not ok.match("}}\n```\nYou can use the calculator") and not ok.match("")


def test_llama_cpp_compiles_the_schema_into_a_grammar() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        if IN_CI:
            pytest.fail("llama-cpp-python is not installed")
        pytest.skip("llama-cpp-python is not installed")
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    client = demo_client(AgenticRolloutConfig(tools=["bash", "calculator"]))
    for messages in (
        [{"role": "user", "content": "q"}],
        [{"role": "user", "content": "Observation: x"}],
    ):
        grammar = json_schema_to_gbnf(json.dumps(client.schema(messages)))
        assert "root ::=" in grammar
    tool_grammar = json_schema_to_gbnf(
        json.dumps(client.schema([{"role": "user", "content": "q"}]))
    )
    assert '"\\"calculator\\""' in tool_grammar and "final_answer" not in tool_grammar


def test_outcomes_table_counts() -> None:
    from orchestrator.trajectory import Trajectory, TrajectoryStatus

    a = Trajectory(request_id="a")
    a.finish(TrajectoryStatus.COMPLETED, "Linux")
    a.reward = 1.0
    b = Trajectory(request_id="b")
    b.finish(TrajectoryStatus.MAX_STEPS)
    table = outcomes_table(
        [a, b], [Task(id="a", prompt="x", answer="Linux"), Task(id="b", prompt="y")]
    )
    assert table.caption == "1 of 2 completed, 1 with reward 1"
    assert table.row_count == 2
