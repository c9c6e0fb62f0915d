"""Test doubles shipped in the package (inject them; nothing here is patched in).

:class:`ScriptedLLM` is a deterministic model: it plays back replies. With ``by_prompt`` each
trajectory of a concurrent batch gets its own script, chosen by its prompt, and the position in
the script is the number of assistant turns already in the conversation, so it needs no shared
state and is safe under concurrency.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

from orchestrator.exceptions import LLMError
from orchestrator.llm import LLMResponse, ToolCall, coerce_response
from orchestrator.trajectory import TokenUsage

ScriptItem: TypeAlias = (
    str | LLMResponse | dict[str, Any] | BaseException | Callable[[list[dict[str, Any]]], Any]
)


def tool_call(
    name: str,
    arguments: dict[str, Any] | str | None = None,
    *,
    content: str | None = None,
    call_id: str | None = None,
) -> LLMResponse:
    """A reply that calls one tool (arguments as a dict, or a raw string to test bad JSON)."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return LLMResponse(
        content=content,
        tool_calls=[ToolCall(id=call_id or f"call_{name}", name=name, arguments=raw)],
        finish_reason="tool_calls",
    )


def tool_calls(*calls: tuple[str, dict[str, Any]], content: str | None = None) -> LLMResponse:
    """A reply with several tool calls in one turn."""
    return LLMResponse(
        content=content,
        tool_calls=[
            ToolCall(id=f"call_{i}", name=n, arguments=json.dumps(a))
            for i, (n, a) in enumerate(calls)
        ],
        finish_reason="tool_calls",
    )


class ScriptedLLM:
    """Plays back ``script`` (or one script per prompt with :meth:`by_prompt`).

    Items: a string (text reply), an :class:`LLMResponse`, an OpenAI-style message dict, an
    exception instance (raised, e.g. to test retries) or a callable ``(messages) -> item``.
    """

    def __init__(
        self,
        script: Sequence[ScriptItem] = (),
        *,
        supports_tools: bool = True,
        delay: float = 0.0,
        tokens_per_reply: int = 0,
    ) -> None:
        self.script = list(script)
        self.supports_tools = supports_tools
        self.delay = delay
        self.tokens_per_reply = tokens_per_reply
        self.scripts: dict[str, list[ScriptItem]] | None = None
        #: every call: {"messages", "tools", "sampling"}
        self.calls: list[dict[str, Any]] = []
        self._position = 0

    @classmethod
    def by_prompt(cls, scripts: Mapping[str, Sequence[ScriptItem]], **kwargs: Any) -> ScriptedLLM:
        llm = cls(**kwargs)
        llm.scripts = {k: list(v) for k, v in scripts.items()}
        return llm

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        self.calls.append(
            {"messages": [dict(m) for m in messages], "tools": tools, "sampling": sampling}
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        item = self._next(messages)
        if isinstance(item, BaseException):
            raise item
        if callable(item):
            item = item(messages)
        response = coerce_response(item)
        if self.tokens_per_reply and response.usage.total_tokens == 0:
            response.usage = TokenUsage(
                prompt_tokens=sum(len(str(m.get("content") or "")) for m in messages) // 4,
                completion_tokens=self.tokens_per_reply,
            )
        return response

    def _next(self, messages: list[dict[str, Any]]) -> ScriptItem:
        if self.scripts is None:
            if self._position >= len(self.script):
                raise LLMError(f"ScriptedLLM: script exhausted after {len(self.script)} replies")
            item = self.script[self._position]
            self._position += 1
            return item
        first_user = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        for key, script in self.scripts.items():
            if key in first_user:
                turn = sum(1 for m in messages if m.get("role") == "assistant")
                if turn >= len(script):
                    raise LLMError(
                        f"ScriptedLLM: script for {key!r} exhausted after {len(script)} replies"
                    )
                return script[turn]
        raise LLMError(f"ScriptedLLM: no script matches the prompt {first_user[:80]!r}")
