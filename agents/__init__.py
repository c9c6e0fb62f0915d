"""Agents: the loop that asks the model, runs its tool calls and records the trajectory.

Chosen by short name (``react``, ``tool``, ``coding``) or import path (``pkg.mod:MyAgent``),
imported lazily; nothing registers on import.
"""

# This import comes first on purpose. Python initialises the package ``orchestrator`` before any
# ``orchestrator.*`` module, and its ``__init__`` re-exports the runner, which uses this package's
# submodules. Loading the bottom of ``orchestrator`` before any submodule of ``agents`` means that,
# when ``agents`` is the first package a program imports, the runner finds those submodules
# unloaded (it loads them whole) rather than half-initialised. The layers stay acyclic: this is
# a downward import; ``tests/test_architecture.py`` imports each package first in a fresh
# interpreter.
import orchestrator.exceptions  # noqa: F401  (isort keeps ``import`` lines before ``from`` lines)
from agents.base import BaseAgent
from agents.config import AgentConfig, Decision, ParsedCall
from agents.registry import AGENTS, get_agent_class, make_agent

__all__ = [
    "AGENTS",
    "AgentConfig",
    "BaseAgent",
    "Decision",
    "ParsedCall",
    "get_agent_class",
    "make_agent",
]
