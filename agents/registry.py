"""Agents by name: the short names and the factory (``make_agent``), re-exported by ``agents``.

The orchestration layer imports the factory from here, not from the package ``agents``, so it
never needs a name of a package whose ``__init__`` is still running (see ``agents/__init__.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.base import BaseAgent
from agents.config import AgentConfig
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
