"""A batch: a custom agent, a custom reward, concurrent Docker sandboxes, JSONL output that a
rerun resumes, and SFT data exported as OpenAI messages.

    .venv/bin/python examples/advanced_integration.py [--out DIR] [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

from agents.react import ReActAgent
from orchestrator.config import AgenticRolloutConfig
from orchestrator.llm import LLMClient, OpenAIClient
from orchestrator.runner import AgenticRollout
from orchestrator.tasks import Task
from orchestrator.testing import ScriptedLLM
from orchestrator.trajectory import Trajectory


class CustomReasoningAgent(ReActAgent):
    """The seed's custom agent, the small way: override a step of the shared loop."""

    name: ClassVar[str] = "custom_reasoning"
    default_system_prompt: ClassVar[str] = "You reason carefully and verify results with tools."

    def should_continue(self, trajectory: Trajectory) -> bool:
        # stop early when the model has produced 3 failing tool results in a row
        results = [s for s in trajectory.steps if s.tool_name][-3:]
        return super().should_continue(trajectory) and not (
            len(results) == 3 and all(s.success is False for s in results)
        )


def reward(task: Task, traj: Trajectory) -> float:
    expected = str(task.metadata.get("expected", ""))
    return 1.0 if expected and expected in (traj.final_response or "") else 0.0


def scripted() -> ScriptedLLM:
    def answer(n: int) -> Any:
        # the observation reads "Observation: <count>\n[exit code: 0]"
        return lambda messages: (
            f"Thought: checked.\nFinal Answer: {messages[-1]['content'].split()[1]}"
        )

    return ScriptedLLM.by_prompt(
        {
            f"Count the words in line {n}": [
                f'Thought: count them.\nAction: bash\nAction Input: {{"command": "echo {"word " * n}| wc -w"}}',
                answer(n),
            ]
            for n in (3, 5, 8)
        },
        supports_tools=False,
    )


async def main(out: Path, base_url: str | None, model: str) -> None:
    llm: LLMClient = (
        OpenAIClient(model, base_url=base_url, api_key="EMPTY") if base_url else scripted()
    )
    config = AgenticRolloutConfig(
        max_steps=5,
        concurrent_requests=3,
        tools=["bash"],
        trajectory_save_path=str(out / "trajectories.jsonl"),
        sandbox={"type": "docker", "image": "agentic-rollout/sandbox:latest"},
    )
    tasks = [
        Task(
            id=f"words-{n}",
            prompt=f"Count the words in line {n}: {'word ' * n}",
            metadata={"expected": str(n)},
        )
        for n in (3, 5, 8)
    ]
    rollout = AgenticRollout(
        config, llm_client=llm, agent=CustomReasoningAgent(config.agent_config()), reward_fn=reward
    )
    summary = await rollout.run(tasks)
    print(f"ran {len(summary.trajectories)}, skipped (already stored) {len(summary.skipped)}")
    for traj in summary.trajectories:
        print(
            f"{traj.request_id}: {traj.status.value} reward={traj.reward} answer={traj.final_response}"
        )
    sft = out / "sft.jsonl"
    with sft.open("w") as f:
        for traj in rollout.store or []:
            if traj.reward == 1.0:
                f.write(json.dumps({"messages": traj.to_messages()}) + "\n")
    print(f"SFT examples: {sum(1 for _ in sft.open())} in {sft}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="advanced-output")
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    asyncio.run(main(Path(args.out), args.base_url, args.model))
