"""``react``: Thought / Action / Action Input / Observation in plain text (any text model)."""

from __future__ import annotations

from typing import ClassVar

from agents.base import BaseAgent, ToolFormat
from agents.formats import ReActFormat
from orchestrator.llm import LLMClient


class ReActAgent(BaseAgent):
    name: ClassVar[str] = "react"

    def default_tool_format(self, llm: LLMClient | None) -> ToolFormat:
        return ReActFormat()
