"""The seed's custom agent (tests/seed/custom_agent.py, the README block as written) gets what
built-in agents get: a real Docker sandbox, tools, LLM retries, the store, VERL export, the CLI's
``--agent module:Class``. And custom agents that break the contract end only their own
trajectory, with an error that says what they did."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.base import BaseAgent
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import LLMRateLimitError
from orchestrator.runner import AgenticRollout
from orchestrator.store import read_trajectories
from orchestrator.testing import ScriptedLLM
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus, TrajectoryStep
from tests.conftest import SANDBOX_IMAGE, TEST_RUN_ID
from tests.llm_server import ScriptedServer, openai_completion
from tests.seed import custom_agent
from tests.seed.custom_agent import CustomReasoningAgent

ROOT = Path(__file__).resolve().parents[2]
DOCKER = {
    "type": "docker",
    "image": SANDBOX_IMAGE,
    "run_id": TEST_RUN_ID,
    "memory": "512m",
    "pids_limit": 256,
}
BASH_IN_DOCKER = (
    "Thought: check where I run.\nAction: bash\nAction Input: "
    '{"command": "test -f /.dockerenv && echo in-docker; echo seed-$((6*7))"}'
)


def kinds(traj: Trajectory) -> list[str]:
    return [s.step_type.value for s in traj.steps]


@pytest.mark.docker
async def test_seed_custom_agent_runs_in_docker_with_retries_and_store(tmp_path: Path) -> None:
    llm = ScriptedLLM(
        [
            LLMRateLimitError("429 slow down", status=429),  # retried by the runner's client
            BASH_IN_DOCKER,
            "Thought: done.\nFinal Answer: seed-42",
        ]
    )
    config = AgenticRolloutConfig(
        sandbox=DOCKER, trajectory_save_path=str(tmp_path / "t.jsonl"), max_steps=8
    )
    agent = custom_agent.agent  # the block's own `agent = CustomReasoningAgent(max_steps=8)`
    rollout = AgenticRollout(config, llm_client=llm, agent=agent)
    summary = await rollout.run([{"id": "seed-1", "prompt": "Where do you run? Compute 6*7."}])
    traj = summary.trajectories[0]
    assert traj.status == TrajectoryStatus.COMPLETED, traj.errors
    assert traj.final_response == "seed-42" and traj.agent_type == "CustomReasoningAgent"
    assert kinds(traj) == ["observation", "tool_call", "tool_result", "final_answer"]
    result = traj.steps[2]
    assert result.success and result.content.startswith("in-docker\nseed-42\n")
    assert traj.metadata["sandbox"]  # a container was started for it (and removed: conftest)
    assert len(traj.retries) == 1 and "429" in traj.retries[0].error
    # the model saw the task, the ReAct tool instructions and the observation
    second = llm.calls[2]["messages"]
    assert "Action: the tool name" in second[0]["content"]
    assert second[1] == {"role": "user", "content": "Where do you run? Compute 6*7."}
    assert second[-1]["content"].startswith("Observation: in-docker\nseed-42")
    assert traj.messages[-1] == {
        "role": "assistant",
        "content": "Thought: done.\nFinal Answer: seed-42",
    }
    stored = list(read_trajectories(tmp_path / "t.jsonl"))
    assert [t.request_id for t in stored] == ["seed-1"] and stored[0].steps == traj.steps


@pytest.mark.docker
def test_seed_custom_agent_from_the_cli(tmp_path: Path) -> None:
    replies = [BASH_IN_DOCKER, "Final Answer: seed-42"]
    # the run's preflight asks the endpoint once (one token) before the agent's two turns
    script = [("json", openai_completion("pong"))] + [
        ("json", openai_completion(r)) for r in replies
    ]
    with ScriptedServer(script) as server:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "run",
                "--agent",
                "tests.seed.custom_agent:CustomReasoningAgent",
                "--prompt",
                "Where do you run?",
                "--base-url",
                server.base_url,
                "--model",
                "m",
                "--backend",
                "docker",
                "--image",
                SANDBOX_IMAGE,
                "--set",
                f"sandbox.run_id={TEST_RUN_ID}",
                "--output",
                str(tmp_path),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=ROOT,
            env={**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(server.requests) == 3 and server.requests[0]["body"]["max_tokens"] == 1
    (traj,) = list(read_trajectories(tmp_path / "trajectories.jsonl"))
    assert traj.agent_type == "CustomReasoningAgent" and traj.status == TrajectoryStatus.COMPLETED
    assert traj.steps[2].content.startswith("in-docker\nseed-42")
    assert traj.usage.total_tokens == 36  # two completions of 18 tokens, counted by the runner


async def test_seed_custom_agent_called_directly_as_in_the_seed() -> None:
    async def llm_func(messages: list[dict[str, Any]], **kwargs: Any) -> str:
        if messages[-1]["role"] == "user" and messages[-1]["content"].startswith("Observation"):
            return "Final Answer: " + messages[-1]["content"].rsplit("= ", 1)[-1]
        return 'Action: calculator\nAction Input: {"expression": "15 * 24"}'

    traj = await CustomReasoningAgent(max_steps=8).run_trajectory(
        prompt={"content": "What is 15 * 24?"}, llm_generate_func=llm_func, request_id="math"
    )
    assert traj.status == TrajectoryStatus.COMPLETED and traj.get_final_response() == "360"
    assert kinds(traj) == ["observation", "tool_call", "tool_result", "final_answer"]
    # a second direct run on the same object starts from a clean conversation
    again = await CustomReasoningAgent(max_steps=8).run_trajectory(
        prompt={"content": "What is 15 * 24?"}, llm_generate_func=llm_func, request_id="m2"
    )
    assert kinds(again) == kinds(traj)


# ---- agents that break the contract


class UnrulyAgent(CustomReasoningAgent):
    """The seed's loop with overrides that misbehave on request (chosen by the model's reply,
    so each trajectory of one concurrent batch misbehaves differently)."""

    def should_continue(self, trajectory: Trajectory) -> bool:
        if trajectory.steps and trajectory.steps[0].content == "never stop":
            return True  # ignores max_steps: the runner's llm_generate_func stops it
        return super().should_continue(trajectory)

    def parse_llm_output(self, response: Any) -> TrajectoryStep:
        if response == "GARBAGE":
            return "not a step"  # type: ignore[return-value]
        return super().parse_llm_output(response)

    async def execute_tool_call(
        self, tool_name: str, tool_args: dict[str, Any] | None, trajectory: Trajectory
    ) -> TrajectoryStep:
        if tool_args == {"expression": "boom"}:
            raise RuntimeError("the tool backend exploded")
        return await super().execute_tool_call(tool_name, tool_args, trajectory)


CALC = 'Action: calculator\nAction Input: {"expression": "%s"}'


async def test_broken_custom_agents_fail_alone_with_specific_errors(tmp_path: Path) -> None:
    llm = ScriptedLLM.by_prompt(
        {
            "garbage": ["GARBAGE"],
            "raise": [CALC % "boom"],
            "never stop": [CALC % "1+1"] * 20,
            "fine": [CALC % "6*7", "Final Answer: 42"],
        },
        delay=0.01,  # interleave the four trajectories
    )
    config = AgenticRolloutConfig(
        sandbox={"type": "none"},
        max_steps=4,
        concurrent_requests=4,
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    rollout = AgenticRollout(config, llm_client=llm, agent=UnrulyAgent(max_steps=4))
    tasks = [
        {"id": p.replace(" ", "-"), "prompt": p} for p in ("garbage", "raise", "never stop", "fine")
    ]
    summary = await rollout.run(tasks)
    by_id = {t.request_id: t for t in summary.trajectories}

    garbage = by_id["garbage"]
    assert garbage.status == TrajectoryStatus.ERROR
    assert [(e.type, e.message) for e in garbage.errors] == [
        (
            "AgentError",
            "UnrulyAgent.parse_llm_output returned str 'not a step'; it must return a "
            "TrajectoryStep (with tool_name/tool_args to call a tool)",
        )
    ]
    assert kinds(garbage) == ["observation"]  # what the agent had built is kept

    raised = by_id["raise"]
    assert raised.status == TrajectoryStatus.ERROR
    assert [(e.type, e.message) for e in raised.errors] == [
        (
            "AgentError",
            "UnrulyAgent.execute_tool_call('calculator') raised RuntimeError: the tool backend "
            "exploded",
        )
    ]
    assert kinds(raised) == ["observation", "tool_call"]

    endless = by_id["never-stop"]
    assert endless.status == TrajectoryStatus.MAX_STEPS
    assert endless.errors[0].type == "StepLimitExceeded"
    assert endless.errors[0].message == (
        "UnrulyAgent asked for model turn 5 but max_steps is 4: its run_trajectory must stop "
        "when should_continue() returns False"
    )
    assert len(endless.get_tool_calls()) == 4  # bounded by max_steps

    assert {t.agent_type for t in summary.trajectories} == {"UnrulyAgent"}
    fine = by_id["fine"]
    assert fine.status == TrajectoryStatus.COMPLETED and fine.final_response == "42"
    assert fine.reward is None and not fine.errors
    # every trajectory was stored, each with its own outcome
    stored = {t.request_id: t.status for t in read_trajectories(tmp_path / "t.jsonl")}
    assert stored == {
        "garbage": TrajectoryStatus.ERROR,
        "raise": TrajectoryStatus.ERROR,
        "never-stop": TrajectoryStatus.MAX_STEPS,
        "fine": TrajectoryStatus.COMPLETED,
    }


async def test_contract_violations_in_run_trajectory_and_tool_only_loops() -> None:
    class ReturnsNothing(BaseAgent):
        async def run_trajectory(
            self, prompt: Any, llm_generate_func: Any, request_id: str, **kwargs: Any
        ) -> Any:
            await llm_generate_func([{"role": "user", "content": "hi"}])
            return None

    class ToolsForever(BaseAgent):
        async def run_trajectory(
            self, prompt: Any, llm_generate_func: Any, request_id: str, **kwargs: Any
        ) -> Trajectory:
            trajectory = Trajectory(request_id=request_id)
            trajectory.add_step(TrajectoryStep(step_type=StepType.OBSERVATION, content="x"))
            while True:  # never asks the model, never checks should_continue
                trajectory.add_step(
                    await self.execute_tool_call("calculator", {"expression": "1"}, trajectory)
                )

    class Crashes(BaseAgent):
        async def run_trajectory(
            self, prompt: Any, llm_generate_func: Any, request_id: str, **kwargs: Any
        ) -> Trajectory:
            return {}["missing"]  # type: ignore[no-any-return]

    from orchestrator.tasks import Task
    from tools import default_registry

    task = Task(id="t", prompt="p")
    nothing = await ReturnsNothing().run(task, ScriptedLLM(["ok"]), default_registry())
    assert nothing.status == TrajectoryStatus.ERROR
    assert nothing.errors[0].message == (
        "ReturnsNothing.run_trajectory returned NoneType None; it must return the Trajectory"
    )
    assert nothing.usage.total_tokens == 0 and nothing.metadata["finish_reasons"] == [None]

    forever = await ToolsForever(max_steps=2).run(task, ScriptedLLM([]), default_registry())
    assert forever.status == TrajectoryStatus.MAX_STEPS
    assert forever.errors[0].message.startswith("ToolsForever made more than 64 tool calls")
    assert len(forever.steps) == 65  # what it built is kept

    crash = await Crashes().run(task, ScriptedLLM([]), default_registry())
    assert (crash.status, crash.errors[0].type) == (TrajectoryStatus.ERROR, "AgentError")
    assert crash.errors[0].message == "Crashes.run_trajectory raised KeyError: 'missing'"

    with pytest.raises(Exception, match="invalid agent settings for Crashes"):
        Crashes(max_stepz=3)


async def test_seed_loop_with_native_tool_calls_and_bad_values_from_overrides() -> None:
    from orchestrator.tasks import Task
    from orchestrator.testing import tool_call
    from tools import default_registry

    # the seed's loop over native function calling: llm_generate_func's reply is the text,
    # and carries the tool calls for parse_llm_output
    llm = ScriptedLLM([tool_call("calculator", {"expression": "6*7"}), "It is 42."])
    agent = CustomReasoningAgent(tool_format="native")
    traj = await agent.run(Task(id="n", prompt="6*7?"), llm, default_registry())
    assert traj.status == TrajectoryStatus.COMPLETED and traj.final_response == "It is 42."
    assert traj.messages[3] == {
        "role": "tool",
        "tool_call_id": "call_calculator",
        "content": "6*7 = 42",
    }
    assert llm.calls[0]["tools"] is not None

    class StringArgs(CustomReasoningAgent):
        def parse_llm_output(self, response: Any) -> TrajectoryStep:
            if "Final" in response:
                return super().parse_llm_output(response)
            step = TrajectoryStep(
                step_type=StepType.TOOL_CALL, tool_name="calculator", content=response
            )
            step.tool_args = "6*7"  # type: ignore[assignment]  # not validated on assignment
            return step

    traj = await StringArgs().run(
        Task(id="s", prompt="p"), ScriptedLLM(["call it", "Final Answer: ok"]), default_registry()
    )
    assert traj.steps[2].content == "The arguments for `calculator` must be a JSON object, got str."
    assert traj.status == TrajectoryStatus.COMPLETED  # a bad call is an observation, not a crash
    # the model saw its own reply and the observation even though parse_llm_output was custom
    assert traj.messages[2:4] == [
        {"role": "assistant", "content": "call it"},
        {
            "role": "user",
            "content": "Observation: The arguments for `calculator` must be a JSON object, got str.",
        },
    ]

    class BadMessages(CustomReasoningAgent):
        def format_messages_for_llm(self, trajectory: Trajectory) -> list[dict[str, Any]]:
            return "hello"  # type: ignore[return-value]

    traj = await BadMessages().run(Task(id="b", prompt="p"), ScriptedLLM([]), default_registry())
    assert traj.errors[0].message == (
        "BadMessages.format_messages_for_llm returned str 'hello'; it must return a list of chat "
        "messages (dicts)"
    )


async def test_readme_custom_agent_example_runs() -> None:
    import re

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Custom agents") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    replies = iter(
        ['Action: calculator\nAction Input: {"expression": "2**10"}', "Final Answer: 1024"]
    )

    async def my_llm_func(messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return next(replies)

    traj = await namespace["MyAgent"]().run_trajectory({"content": "2**10?"}, my_llm_func, "id")
    assert traj.status == TrajectoryStatus.COMPLETED and traj.final_response == "1024"
    assert traj.steps[2].content == "2**10 = 1024"
