"""Native tool calling in a Docker sandbox: write a script with the editor, run it with bash,
submit. The default model is scripted (offline); --base-url/--model use a real endpoint.

    .venv/bin/python examples/tool_integration_demo.py [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio

from orchestrator.config import AgenticRolloutConfig
from orchestrator.llm import LLMClient, OpenAIClient
from orchestrator.runner import AgenticRollout
from orchestrator.testing import ScriptedLLM, tool_call

FIB = "a, b = 0, 1\nfor _ in range(10):\n    print(a)\n    a, b = b, a + b\n"


async def main(base_url: str | None, model: str) -> None:
    llm: LLMClient
    if base_url:
        llm = OpenAIClient(model, base_url=base_url, api_key="EMPTY")
    else:
        llm = ScriptedLLM(
            [
                tool_call(
                    "str_replace_editor",
                    {"command": "create", "path": "/workspace/fib.py", "file_text": FIB},
                ),
                tool_call("bash", {"command": "python3 /workspace/fib.py | tr '\\n' ' '"}),
                lambda messages: tool_call(
                    "submit", {"answer": messages[-1]["content"].split("\n")[0].strip()}
                ),
            ]
        )
    config = AgenticRolloutConfig(
        agent_type="tool",
        max_steps=8,
        save_trajectories=False,
        tools=["bash", "str_replace_editor", "submit"],
        sandbox={"type": "docker", "image": "agentic-rollout/sandbox:latest"},
    )
    rollout = AgenticRollout(config, llm_client=llm)
    traj = await rollout.run_one(
        {
            "id": "fibonacci",
            "workspace": "/workspace",
            "prompt": "Write a Python script printing the first 10 Fibonacci numbers, "
            "run it, and submit its output.",
        }
    )
    for step in traj.steps:
        label = f"{step.step_type.value}{' ' + step.tool_name if step.tool_name else ''}"
        print(f"[{label}] {step.content[:200]}")
    print(f"final response: {traj.final_response}  status: {traj.status.value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    asyncio.run(main(args.base_url, args.model))
