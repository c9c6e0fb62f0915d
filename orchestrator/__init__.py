"""Agentic Rollout: LLM agent trajectories with one sandbox per trajectory.

The public surface is re-exported here and listed in ``__all__`` (checked by a test).
Importing this package has no side effects: no logging setup, no Docker connection.
"""

from orchestrator.exceptions import (
    AgenticRolloutError,
    ConfigError,
    RemoteError,
    RpcTimeoutError,
    SandboxConnectionError,
    SandboxError,
    SandboxStartError,
)
from orchestrator.sandbox import (
    CommandResult,
    ExecResult,
    FileStat,
    Sandbox,
    SandboxConfig,
    SearchResult,
    sandbox_config,
)

__version__ = "0.1.0"

__all__ = [
    "AgenticRolloutError",
    "CommandResult",
    "ConfigError",
    "ExecResult",
    "FileStat",
    "RemoteError",
    "RpcTimeoutError",
    "Sandbox",
    "SandboxConfig",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxStartError",
    "SearchResult",
    "__version__",
    "sandbox_config",
]
