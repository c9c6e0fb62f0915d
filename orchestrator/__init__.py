"""Agentic Rollout: LLM agent trajectories with one sandbox per trajectory.

The public surface is re-exported here and listed in ``__all__`` (checked by a test).
Importing this package has no side effects: no logging setup, no Docker connection, no SDK
client; LLM SDKs and backends are imported when used.
"""

from orchestrator.config import AgenticRolloutConfig, LLMSettings
from orchestrator.exceptions import (
    AgenticRolloutError,
    ConfigError,
    LLMError,
    LLMRequestError,
    LLMRetryableError,
    PreflightError,
    RemoteError,
    RpcTimeoutError,
    SandboxConnectionError,
    SandboxError,
    SandboxStartError,
    StoreError,
    StoreLockedError,
    TaskError,
)
from orchestrator.llm import (
    AnthropicClient,
    CallableClient,
    ClaudeAPIClient,
    LLMClient,
    LLMResponse,
    OpenAIClient,
    RetryPolicy,
    ToolCall,
)
from orchestrator.runner import AgenticRollout, RunSummary
from orchestrator.sandbox import (
    CommandResult,
    ExecResult,
    FileStat,
    Sandbox,
    SandboxConfig,
    SearchResult,
    sandbox_config,
)
from orchestrator.store import TrajectoryStore, read_trajectories
from orchestrator.tasks import Task, load_tasks
from orchestrator.trajectory import (
    Outcome,
    StepType,
    TokenUsage,
    Trajectory,
    TrajectoryStatus,
    TrajectoryStep,
)

__version__ = "0.1.0"

__all__ = [
    "AgenticRollout",
    "AgenticRolloutConfig",
    "AgenticRolloutError",
    "AnthropicClient",
    "CallableClient",
    "ClaudeAPIClient",
    "CommandResult",
    "ConfigError",
    "ExecResult",
    "FileStat",
    "LLMClient",
    "LLMError",
    "LLMRequestError",
    "LLMResponse",
    "LLMRetryableError",
    "LLMSettings",
    "OpenAIClient",
    "Outcome",
    "PreflightError",
    "RemoteError",
    "RetryPolicy",
    "RpcTimeoutError",
    "RunSummary",
    "Sandbox",
    "SandboxConfig",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxStartError",
    "SearchResult",
    "StepType",
    "StoreError",
    "StoreLockedError",
    "Task",
    "TaskError",
    "TokenUsage",
    "ToolCall",
    "Trajectory",
    "TrajectoryStatus",
    "TrajectoryStep",
    "TrajectoryStore",
    "__version__",
    "load_tasks",
    "read_trajectories",
    "sandbox_config",
]
