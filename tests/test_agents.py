"""Each agent type driven by the scripted model (the package's own test double): tool calls,
format errors, max_steps, submit - with the exact trajectories asserted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agents import AgentConfig, get_agent_class, make_agent
from agents.formats import JsonFormat
from orchestrator.exceptions import ConfigError, LLMRequestError
from orchestrator.llm import CallableClient, LLMResponse
from orchestrator.tasks import Task
from orchestrator.testing import ScriptedLLM, tool_call, tool_calls
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus
from tools import default_registry

TASK = Task(id="t1", prompt="What is 6 * 7?")


def kinds(traj: Trajectory) -> list[str]:
    return [s.step_type.value for s in traj.steps]


async def test_react_tool_call_then_final_answer() -> None:
    llm = ScriptedLLM(
        [
            'Thought: I should multiply.\nAction: calculator\nAction Input: {"expression": "6 * 7"}',
            "Thought: I now know the final answer\nFinal Answer: 42",
        ]
    )
    traj = await make_agent("react").run(TASK, llm, default_registry())
    assert traj.status == TrajectoryStatus.COMPLETED and traj.final_response == "42"
    # one step per model reply (the seed's parse_llm_output), its thought kept in metadata
    assert kinds(traj) == ["observation", "tool_call", "tool_result", "final_answer"]
    call, result = traj.steps[1], traj.steps[2]
    assert (call.tool_name, call.tool_args, call.turn) == ("calculator", {"expression": "6 * 7"}, 1)
    assert call.metadata["thought"] == "I should multiply."
    assert traj.steps[3].metadata["thought"] == "I now know the final answer"
    assert (result.content, result.success) == ("6 * 7 = 42", True)
    assert [m["role"] for m in traj.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert traj.messages[3] == {"role": "user", "content": "Observation: 6 * 7 = 42"}
    assert (
        "Action: the tool name, one of [bash, calculator, search, str_replace_editor, submit]"
        in traj.messages[0]["content"]
    )
    assert llm.calls[0]["sampling"]["stop"] == ["\nObservation:"]
    assert traj.get_final_response() == "42" and len(traj.get_tool_calls()) == 1
    # the trajectory round-trips
    again = Trajectory.from_dict(json.loads(traj.to_json()))
    assert again == traj and again.to_messages() == traj.to_messages()


async def test_react_format_errors_reset_and_cap() -> None:
    llm = ScriptedLLM(["I think it is 42.", "", "Final Answer: 42"])
    traj = await make_agent("react").run(TASK, llm, default_registry())
    assert traj.status == TrajectoryStatus.COMPLETED
    assert kinds(traj) == ["observation", "error", "error", "final_answer"]
    assert traj.steps[1].content == (
        "Invalid format: your reply has neither `Action:` (with `Action Input:`) nor `Final Answer:`. "
        "Reply again in the required format."
    )
    assert traj.steps[1].metadata["reply"] == "I think it is 42."
    assert traj.steps[2].content == (
        "Your reply was empty. Reply with a Thought and either an Action "
        "with an Action Input, or a Final Answer."
    )
    capped = await make_agent("react", {"max_consecutive_format_errors": 2}).run(
        TASK, ScriptedLLM(["nope", "still nope", "Final Answer: 1"]), default_registry()
    )
    assert capped.status == TrajectoryStatus.ERROR
    assert capped.errors[0].type == "FormatError"
    assert capped.errors[0].message.startswith("2 consecutive replies the agent could not parse")


async def test_react_reply_cut_by_token_limit_is_reported() -> None:
    llm = ScriptedLLM(
        [LLMResponse(content="Thought: long long long", finish_reason="length"), "Final Answer: ok"]
    )
    traj = await make_agent("react").run(TASK, llm, default_registry())
    assert "Your reply was cut off by the token limit; be shorter." in traj.steps[1].content


async def test_react_bad_tool_input_is_an_observation() -> None:
    llm = ScriptedLLM(
        [
            "Action: calculator\nAction Input: 6 * 7",  # bare text for a one-string-argument tool
            'Action: str_replace_editor\nAction Input: {"command": "view", "path": ',  # broken JSON
            "Action: teleport\nAction Input: {}",
            "Final Answer: done",
        ]
    )
    traj = await make_agent("react").run(TASK, llm, default_registry())
    results = [s.content for s in traj.steps if s.step_type == StepType.TOOL_RESULT]
    assert results[0] == "6 * 7 = 42"
    assert results[1].startswith("The arguments for `str_replace_editor` are not valid JSON (")
    assert results[2] == (
        "Unknown tool `teleport`. Available tools: bash, calculator, search, "
        "str_replace_editor, submit."
    )
    assert traj.status == TrajectoryStatus.COMPLETED


async def test_max_steps() -> None:
    llm = ScriptedLLM([tool_call("calculator", {"expression": "1+1"})] * 3)
    traj = await make_agent("tool", {"max_steps": 3}).run(TASK, llm, default_registry())
    assert traj.status == TrajectoryStatus.MAX_STEPS and len(llm.calls) == 3
    assert traj.turns == 3 and len(traj.get_tool_calls()) == 3


async def test_tool_agent_several_calls_per_turn_and_final_text() -> None:
    llm = ScriptedLLM(
        [
            tool_calls(
                ("calculator", {"expression": "6*7"}),
                ("calculator", {"expression": "2**10"}),
                content="Computing both.",
            ),
            "Both done: 42 and 1024.",
        ]
    )
    traj = await make_agent("tool").run(TASK, llm, default_registry())
    assert kinds(traj) == [
        "observation",
        "tool_call",
        "tool_result",
        "tool_call",
        "tool_result",
        "final_answer",
    ]
    assert traj.steps[1].metadata["thought"] == "Computing both."
    assert [s.tool_call_id for s in traj.steps[1:5]] == ["call_0", "call_0", "call_1", "call_1"]
    assert traj.final_response == "Both done: 42 and 1024."
    assistant, tool1, tool2 = traj.messages[2:5]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0", "call_1"]
    assert tool1 == {"role": "tool", "tool_call_id": "call_0", "content": "6*7 = 42"}
    assert tool2 == {"role": "tool", "tool_call_id": "call_1", "content": "2**10 = 1024"}
    assert llm.calls[0]["tools"] is not None and len(llm.calls[0]["tools"]) == 5


async def test_tool_agent_bad_calls_are_observations() -> None:
    llm = ScriptedLLM(
        [
            tool_call("nope", {}),
            tool_call("str_replace_editor", '{"command": "view", "path": '),  # not JSON
            tool_call("calculator", "6 * 7"),  # bare text: calculator takes one string argument
            tool_call("calculator", {"expression": 5}),
            tool_call("calculator", "[1, 2]"),
            LLMResponse(content=None),
            "fine",
        ]
    )
    traj = await make_agent("tool").run(TASK, llm, default_registry())
    results = [s.content for s in traj.steps if s.step_type == StepType.TOOL_RESULT]
    assert results == [
        "Unknown tool `nope`. Available tools: bash, calculator, search, str_replace_editor, submit.",
        "The arguments for `str_replace_editor` are not valid JSON (Expecting value at position 27). "
        'Give a JSON object, e.g. {"key": "value"}.',
        "6 * 7 = 42",
        "Tool `calculator`: argument `expression` must be string, got integer 5.",
        "The arguments for `calculator` must be a JSON object, got list.",
    ]
    assert traj.steps[-2].content == "Your reply was empty: call a tool or give your final answer."
    assert traj.status == TrajectoryStatus.COMPLETED and traj.final_response == "fine"


async def test_tool_agent_needs_native_tools() -> None:
    agent = make_agent("tool")
    with pytest.raises(
        ConfigError, match="agent 'tool' needs an LLM client with native tool calling"
    ):
        await agent.run(TASK, CallableClient(lambda m, **k: "x"), default_registry())


async def test_submit_terminates_with_answer() -> None:
    llm = ScriptedLLM([tool_call("submit", {"answer": "42"}), "never asked"])
    traj = await make_agent("tool").run(TASK, llm, default_registry())
    assert traj.status == TrajectoryStatus.COMPLETED and traj.final_response == "42"
    assert len(llm.calls) == 1


async def test_llm_failure_ends_the_trajectory_with_the_error_recorded() -> None:
    llm = ScriptedLLM([LLMRequestError("400 bad request: context too long", status=400)])
    traj = await make_agent("react").run(TASK, llm, default_registry())
    assert traj.status == TrajectoryStatus.ERROR
    assert traj.errors[0].type == "LLMRequestError" and "context too long" in traj.errors[0].message


async def test_seed_style_callable_drives_react() -> None:
    replies = iter(
        ['Action: calculator\nAction Input: {"expression": "15*24"}', "Final Answer: 360"]
    )

    async def llm_generate_func(
        messages: list[dict[str, Any]],
        max_tokens: int = 512,
        temperature: float = 0.7,
        **kwargs: Any,
    ) -> str:
        return next(replies)

    traj = await make_agent("react").run(
        TASK, CallableClient(llm_generate_func), default_registry()
    )
    assert traj.final_response == "360"


async def test_json_format_for_small_models() -> None:
    llm = ScriptedLLM(
        [
            '{"action": "calculator", "action_input": {"expression": "6*7", "command": "junk"}, "thought": "go"}',
            '{"action": "final_answer", "action_input": {"answer": "42"}}',
        ]
    )
    agent = make_agent("react", AgentConfig(tool_format="json"))
    traj = await agent.run(TASK, llm, default_registry())
    assert traj.final_response == "42" and traj.steps[2].content == "6*7 = 42"
    schema = llm.calls[0]["sampling"]["response_format"]["schema"]
    assert schema["properties"]["action"]["enum"] == [
        "bash",
        "calculator",
        "search",
        "str_replace_editor",
        "submit",
        "final_answer",
    ]
    fmt = JsonFormat()
    bad = fmt.parse(
        LLMResponse(content='{"action": "calc', finish_reason="length"), default_registry()
    )
    assert bad.format_error is not None and bad.format_error.startswith(
        "Your reply is not valid JSON (cut off by the token limit; be shorter)"
    )
    ok = fmt.parse(
        LLMResponse(content='{"action": "bash", "action_input": {"command": "a\nb"}}'),
        default_registry(),
    )
    assert ok.calls[0].arguments == {"command": "a\nb"}  # raw newline inside a string is accepted


async def test_coding_agent_submits_a_patch(local_sandbox: Any) -> None:
    root = (await local_sandbox.info())["cwd"] + "/repo"
    await local_sandbox.run(
        f"mkdir -p {root} && cd {root} && git init -q && printf 'x = 1\\n' > a.py && "
        "git add -A && git -c user.email=t@t -c user.name=t commit -qm base"
    )
    tools = default_registry(submit={"mode": "patch", "workdir": root})
    llm = ScriptedLLM(
        [
            tool_call(
                "str_replace_editor",
                {
                    "command": "str_replace",
                    "path": f"{root}/a.py",
                    "old_str": "x = 1",
                    "new_str": "x = 2",
                },
            ),
            tool_call("submit", {}),
        ]
    )
    task = Task(id="fix", prompt="Set x to 2.", workspace=root)
    traj = await make_agent("coding").run(task, llm, tools, local_sandbox)
    assert traj.status == TrajectoryStatus.COMPLETED
    assert "-x = 1\n+x = 2" in (traj.final_response or "")
    assert traj.metadata["patch"] == traj.final_response
    assert root in traj.messages[0]["content"]


async def test_coding_agent_without_submit_still_yields_the_diff(local_sandbox: Any) -> None:
    root = (await local_sandbox.info())["cwd"] + "/repo2"
    await local_sandbox.run(
        f"mkdir -p {root} && cd {root} && git init -q && printf 'y\\n' > b.txt && "
        "git add -A && git -c user.email=t@t -c user.name=t commit -qm base"
    )
    llm = ScriptedLLM([tool_call("bash", {"command": f"echo z >> {root}/b.txt"}), "I am done."])
    traj = await make_agent("coding").run(
        Task(id="c", prompt="p", workspace=root), llm, default_registry(), local_sandbox
    )
    assert "+z" in (traj.final_response or "")


def test_agent_registry() -> None:
    assert get_agent_class("coding").name == "coding"
    assert get_agent_class("agents.react:ReActAgent").name == "react"
    with pytest.raises(ConfigError, match="unknown agent type 'nope'"):
        get_agent_class("nope")
    with pytest.raises(ConfigError, match="is not a BaseAgent subclass"):
        get_agent_class("orchestrator.tasks:Task")


# ---- hermes: <tool_call> tags in the text (token-level rollouts)


def test_hermes_format_reads_calls_thought_answers_and_bad_calls() -> None:
    from agents.formats import HermesFormat
    from orchestrator.llm import LLMResponse
    from tools.registry import default_registry

    fmt, tools = HermesFormat(), default_registry()
    assert "<tools>" in fmt.instructions(tools) and '"name": "bash"' in fmt.instructions(tools)

    d = fmt.parse(
        LLMResponse(
            content='Look first.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n'
            '</tool_call>\n<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": '
            '\\"1+1\\"}"}</tool_call>'
        ),
        tools,
    )
    assert d.thought == "Look first." and d.final_answer is None
    assert [(c.name, c.arguments, c.id) for c in d.calls] == [
        ("bash", {"command": "ls"}, "call_0"),
        ("calculator", {"expression": "1+1"}, "call_1"),  # arguments given as a JSON string
    ]
    assert fmt.parse(LLMResponse(content="  42 \n"), tools).final_answer == "42"
    assert "empty" in (fmt.parse(LLMResponse(content=" "), tools).format_error or "")

    bad = fmt.parse(
        LLMResponse(content='<tool_call>{"name": "bash", "arguments": {</tool_call>'), tools
    )
    assert bad.calls[0].error and "not valid JSON" in bad.calls[0].error
    cut = fmt.parse(
        LLMResponse(content='<tool_call>{"name": "bash", "argu', finish_reason="length"), tools
    )
    assert "cut off by the token limit" in (cut.calls[0].error or "")
    nameless = fmt.parse(LLMResponse(content="<tool_call>[1, 2]</tool_call>"), tools)
    assert 'string "name"' in (nameless.calls[0].error or "")
    wrong_args = fmt.parse(
        LLMResponse(content='<tool_call>{"name": "bash", "arguments": [1]}</tool_call>'), tools
    )
    assert "must be a JSON object" in (wrong_args.calls[0].error or "")

    # results go back as tool messages, one per call, also for calls not run
    msgs = fmt.observation_messages(d, [], ["out"])
    assert msgs == [
        {"role": "tool", "content": "out"},
        {"role": "tool", "content": "Not run: the task ended with an earlier call."},
    ]
