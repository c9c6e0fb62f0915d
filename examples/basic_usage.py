"""The seed's basic usage: config, an llm_generate_func, a registered tool, one trajectory.

Offline by default (a deterministic function stands in for the model); pass --base-url and
--model to use any OpenAI-compatible endpoint instead.

    .venv/bin/python examples/basic_usage.py [--base-url URL --model NAME]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from orchestrator.config import AgenticRolloutConfig
from orchestrator.runner import AgenticRollout
from tools import CalculatorTool, ToolRegistry


def offline_llm() -> Any:
    """A stand-in model that answers in ReAct format (what a real model would say)."""

    async def llm_generate_func(
        messages: list[dict[str, Any]],
        max_tokens: int = 512,
        temperature: float = 0.7,
        **kwargs: Any,
    ) -> str:
        if not any(m["role"] == "assistant" for m in messages):
            return (
                "Thought: I should use the calculator.\nAction: calculator\n"
                'Action Input: {"expression": "15 * 24"}'
            )
        return f"Thought: I now know the final answer\nFinal Answer: {messages[-1]['content'].split('= ')[-1]}"

    return llm_generate_func


def openai_llm(base_url: str, model: str) -> Any:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY")

    async def llm_generate_func(
        messages: list[dict[str, Any]],
        max_tokens: int = 512,
        temperature: float = 0.7,
        **kwargs: Any,
    ) -> str:
        resp = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=kwargs.get("stop"),
        )
        return resp.choices[0].message.content or ""

    return llm_generate_func


async def main(base_url: str | None, model: str) -> None:
    config = AgenticRolloutConfig(
        agent_type="react",
        max_steps=10,
        max_tokens_per_step=512,
        temperature=0.7,
        sandbox={"type": "none"},
        save_trajectories=False,
    )
    llm_generate_func = openai_llm(base_url, model) if base_url else offline_llm()
    tools = ToolRegistry()
    tools.register(
        CalculatorTool, {"precision": 10}
    )  # or register_tool(...) on the global registry
    rollout = AgenticRollout(config=config, llm_generate_func=llm_generate_func, tools=tools)
    trajectory = await rollout.agent.run_trajectory(
        prompt={"content": "What is 15 * 24?"},
        llm_generate_func=llm_generate_func,
        request_id="math_example",
    )
    print(f"final response: {trajectory.get_final_response()}")
    print(
        f"steps: {len(trajectory.steps)}, tool calls: {len(trajectory.get_tool_calls())}, "
        f"status: {trajectory.status.value}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    asyncio.run(main(args.base_url, args.model))
