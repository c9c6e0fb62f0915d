"""What stands in for "your LLM" in the seed README's blocks: a deterministic function with the
seed's ``llm_generate_func`` signature that answers in ReAct text, per prompt, by turn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

LLMFunc = Callable[..., Awaitable[str]]


def scripted(plan: Mapping[str, Sequence[str]]) -> LLMFunc:
    """Reply ``plan[key][n]`` to the conversation whose first user message contains ``key``,
    ``n`` being the number of assistant turns so far (so concurrent trajectories are safe)."""

    async def llm_generate_func(
        messages: list[dict[str, Any]],
        max_tokens: int = 512,
        temperature: float = 0.7,
        **kwargs: Any,
    ) -> str:
        first_user = next(str(m["content"]) for m in messages if m["role"] == "user")
        turn = sum(1 for m in messages if m["role"] == "assistant")
        for key, replies in plan.items():
            if key in first_user:
                return replies[turn]
        raise AssertionError(f"no scripted reply for {first_user[:80]!r}")

    return llm_generate_func


def call(tool: str, arguments: str, thought: str = "I will use a tool.") -> str:
    return f"Thought: {thought}\nAction: {tool}\nAction Input: {arguments}"
