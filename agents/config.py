"""The agent layer's vocabulary: its settings (:class:`AgentConfig`, defined with the other
settings records in :mod:`orchestrator.agent_settings` so the run config can compose it without
importing agents), the tool-format names, and what a :class:`ToolFormat` reads out of a model
reply (:class:`Decision`).

It sits below both :mod:`agents.base` (the loop) and :mod:`agents.formats` (the formats), so
neither imports the other lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.agent_settings import AgentConfig, ToolFormatName
from orchestrator.llm import LLMResponse
from tools.base import ToolResult
from tools.registry import ToolRegistry

# ---- what the model decided


@dataclass
class ParsedCall:
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str
    id: str = ""
    #: why the arguments could not be used (shown to the model instead of running the tool)
    error: str | None = None


@dataclass
class Decision:
    thought: str = ""
    calls: list[ParsedCall] = field(default_factory=list)
    final_answer: str | None = None
    format_error: str | None = None


class ConfiguredAgent(Protocol):
    """What the per-trajectory context (:mod:`agents.context`) needs of an agent: its settings.
    (:class:`agents.base.BaseAgent` is one; typing it so keeps context below base.)"""

    config: AgentConfig


class ToolFormat(Protocol):
    """How tools are offered to the model and how its replies are read."""

    native: bool

    def instructions(self, tools: ToolRegistry) -> str: ...

    def parse(self, response: LLMResponse, tools: ToolRegistry) -> Decision: ...

    def assistant_message(self, response: LLMResponse) -> dict[str, Any]: ...

    def observation_messages(
        self, decision: Decision, results: list[ToolResult], texts: list[str]
    ) -> list[dict[str, Any]]: ...

    def format_error_message(self, error: str) -> dict[str, Any]: ...

    def stop(self) -> list[str] | None: ...


__all__ = [
    "AgentConfig",
    "ConfiguredAgent",
    "Decision",
    "ParsedCall",
    "ToolFormat",
    "ToolFormatName",
]
