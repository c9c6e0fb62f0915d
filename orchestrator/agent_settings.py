"""The agent's settings: :class:`AgentConfig` (one trajectory's loop: turns, tokens per step,
temperature, tool format, LLM retry policy, system prompt) and the tool-format names.

A record at the bottom of the layers, next to the LLM client's :class:`RetryPolicy` it uses:
the run config (:mod:`orchestrator.config`) composes it as its ``agent`` section and the agents
(:mod:`agents.config` re-exports it) read it, without either importing the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.llm import RetryPolicy

#: how tool calls are written: the agent's default ("auto"), ReAct text, schema-constrained JSON
#: (small local models), native function calling, or hermes ``<tool_call>`` tags - the one
#: spelling of this list (the run config, the CLI's --tool-format and VERL's settings use it)
ToolFormatName = Literal["auto", "react", "json", "native", "hermes"]


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(10, ge=1, description="model turns at most")
    max_tokens_per_step: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_consecutive_format_errors: int = Field(3, ge=1)
    max_observation_chars: int = Field(20000, ge=100)
    system_prompt: str | None = None
    #: how tool calls are written: the agent's default ("auto"), ReAct text, schema-constrained
    #: JSON (small local models), or native function calling
    #: ``hermes``: ``<tool_call>{"name", "arguments"}</tool_call>`` in the text (Qwen, Hermes,
    #: most open models' chat templates; the VERL agent loop's default)
    tool_format: ToolFormatName = "auto"
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


__all__ = ["AgentConfig", "ToolFormatName"]
