"""Agents: the loop that asks the model, runs its tool calls and records the trajectory.

Chosen by short name (``react``, ``tool``, ``coding``) or import path (``pkg.mod:MyAgent``),
imported lazily; nothing registers on import.
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.base import BaseAgent
from agents.config import AgentConfig, Decision, ParsedCall
from orchestrator.exceptions import ConfigError as _ConfigError

AGENTS: dict[str, str] = {
    "react": "agents.react:ReActAgent",
    "tool": "agents.tool_agent:ToolCallingAgent",
    "coding": "agents.coding:CodingAgent",
}


def get_agent_class(name: str) -> type[BaseAgent]:
    spec = AGENTS.get(name, name if ":" in name else None)
    if spec is None:
        raise _ConfigError(
            f"unknown agent type {name!r}; known: {', '.join(sorted(AGENTS))} or an import path "
            "'package.module:AgentClass'"
        )
    module, _, attr = spec.partition(":")
    try:
        cls: Any = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise _ConfigError(f"cannot load agent {spec!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseAgent)):
        raise _ConfigError(f"{spec!r} is not a BaseAgent subclass")
    return cls


def make_agent(name: str, config: AgentConfig | dict[str, Any] | None = None) -> BaseAgent:
    return get_agent_class(name)(config)


__all__ = [
    "AGENTS",
    "AgentConfig",
    "BaseAgent",
    "Decision",
    "ParsedCall",
    "get_agent_class",
    "make_agent",
]
