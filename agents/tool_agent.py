"""``tool``: native function calling (OpenAI tool_calls / Anthropic tool_use), several per turn."""

from __future__ import annotations

from typing import ClassVar

from agents.base import BaseAgent, ToolFormat
from agents.formats import NativeFormat
from orchestrator.exceptions import ConfigError
from orchestrator.llm import LLMClient


class ToolCallingAgent(BaseAgent):
    name: ClassVar[str] = "tool"

    def default_tool_format(self, llm: LLMClient | None) -> ToolFormat:
        if not getattr(llm, "supports_tools", False):
            raise ConfigError(
                "agent 'tool' needs an LLM client with native tool calling (OpenAI or Anthropic "
                "client); a plain llm_generate_func returns text: use agent_type 'react'"
            )
        return NativeFormat()
