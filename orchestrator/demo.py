"""The offline demo's helpers: a stricter tool-call grammar for a 135M model, and the per-task
report (what each task expected and what the model answered)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator.config import AgenticRolloutConfig
from orchestrator.llm import LLMClient, LLMResponse, make_client
from orchestrator.tasks import Task
from orchestrator.trajectory import Trajectory
from tools.registry import ToolRegistry, default_registry


def outcomes_table(trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> Table:
    """One row per trajectory: status, reward, expected answer, the model's answer."""
    answers = {t.id: t.answer for t in tasks}
    table = Table(title="demo tasks")
    for name, justify in (
        ("task", "left"),
        ("status", "left"),
        ("reward", "right"),
        ("tool calls", "right"),
        ("expected", "left"),
        ("final answer", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for t in trajectories:
        final = (t.get_final_response() or "").replace("\n", " ")
        table.add_row(
            t.request_id,
            t.status.value,
            "-" if t.reward is None else f"{t.reward:g}",
            str(len(t.get_tool_calls())),
            answers.get(t.request_id) or "-",
            final[:60] + ("..." if len(final) > 60 else ""),
        )
    rewarded = sum(1 for t in trajectories if t.reward is not None and t.reward >= 1)
    completed = sum(1 for t in trajectories if t.status.value == "completed")
    table.caption = f"{completed} of {len(trajectories)} completed, {rewarded} with reward 1"
    return table


def print_outcomes(trajectories: Sequence[Trajectory], tasks: Sequence[Task]) -> None:
    Console().print(outcomes_table(trajectories, tasks))


# ---- constrained decoding for small local models


def tool_alternatives(
    tools: ToolRegistry, *, max_string: int = 120, patterns: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One JSON-schema alternative per tool: ``{"action": NAME, "action_input": ITS REQUIRED
    ARGUMENTS}``, strings bounded in length (and by ``patterns``, per argument name)."""
    out: list[dict[str, Any]] = []
    for schema in tools.openai_schemas():
        fn = schema["function"]
        params = fn.get("parameters") or {}
        required = list(params.get("required") or [])
        props = {
            # optional arguments only give a tiny model more ways to go wrong
            key: _bounded(key, prop, max_string, patterns or {})
            for key, prop in (params.get("properties") or {}).items()
            if key in required
        }
        out.append(_alternative(fn["name"], props, required))
    return out


#: a short answer of words and numbers: no braces or backticks, so the model cannot spill the
#: rest of a JSON object or a markdown fence into it (it did: '}}\n```\nYou can use...')
ANSWER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 .,:/_+-]{0,59}$"
#: a calculator expression: digits, names of functions, operators
EXPRESSION_PATTERN = r"^[0-9a-z(][0-9a-z+*/(). -]{0,39}$"


def answer_alternative(pattern: str = ANSWER_PATTERN) -> dict[str, Any]:
    return _alternative(
        "final_answer", {"answer": {"type": "string", "pattern": pattern}}, ["answer"]
    )


def _bounded(key: str, prop: dict[str, Any], max_string: int, patterns: dict[str, str]) -> Any:
    out = {k: v for k, v in prop.items() if k in ("type", "enum", "items")}
    if out.get("type") == "string" and "enum" not in out:
        if key in patterns:
            out["pattern"] = patterns[key]
        else:
            out["maxLength"] = max_string
    return out


def _alternative(name: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "action": {"const": name},
            "action_input": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            },
        },
        "required": ["action", "action_input"],
        "additionalProperties": False,
    }


class StrictJsonClient:
    """Wraps an LLM client for the ``json`` tool format on llama.cpp: each request's schema is
    replaced by a stricter one that llama.cpp compiles into a grammar.

    * One alternative per tool with that tool's own arguments (the format's own schema is one
      flat object whose ``action_input`` is the union of every tool's arguments, so a 135M model
      gives the calculator a ``command``); strings bounded, so a reply cannot run on inside a
      string until the token limit cuts the JSON (the old demo's "three unparseable replies").
    * ``one_tool_call``: the demo's protocol - the first reply must call a tool, the reply after
      its observation must be the final answer. SmolLM2-135M otherwise repeats its tool call
      until ``max_steps`` (measured: 0 of 5 tasks answered). What it answers stays its own.
    """

    def __init__(
        self,
        inner: LLMClient,
        tools: ToolRegistry,
        *,
        one_tool_call: bool = True,
        max_string: int = 120,
        patterns: dict[str, str] | None = None,
    ) -> None:
        self.inner = inner
        self.supports_tools = inner.supports_tools
        self.one_tool_call = one_tool_call
        self._tools = tool_alternatives(tools, max_string=max_string, patterns=patterns)
        self._answer = answer_alternative()

    def schema(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.one_tool_call:
            return {"anyOf": [*self._tools, self._answer]}
        last = messages[-1] if messages else {}
        observed = last.get("role") == "user" and str(last.get("content", "")).startswith(
            "Observation:"
        )
        return self._answer if observed else {"anyOf": self._tools}

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        if sampling.get("response_format") is not None:
            sampling["response_format"] = {"type": "json_object", "schema": self.schema(messages)}
        return await self.inner.generate(messages, tools=tools, **sampling)


def demo_client(config: AgenticRolloutConfig) -> StrictJsonClient:
    """The demo's model client: the configured llama.cpp endpoint under the strict schema."""

    s = config.llm
    inner = make_client(s.provider, s.model, base_url=s.base_url, api_key=s.api_key)
    tools = default_registry().fork(config.tools.config, only=config.tools.names)
    return StrictJsonClient(inner, tools, patterns={"expression": EXPRESSION_PATTERN})
