"""Trajectory: everything one agent run did, as a versioned pydantic model.

A trajectory is a list of typed steps (what the model saw, said and called, what the tools
returned), plus status, reward, timings, token usage, LLM retries and infrastructure errors.
It round-trips through ``to_dict``/``from_dict`` (and JSON), and ``to_messages()`` gives the
OpenAI chat-messages view (usable as SFT data). Depends on pydantic only.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.exceptions import ConfigError
from orchestrator.metadata import TypedMetadataModel

#: 2 added ``outcome`` and ``attempt``; version-1 lines still load (the outcome is inferred)
SCHEMA_VERSION = 2


class StepType(str, Enum):
    OBSERVATION = "observation"  # task prompt or environment text shown to the model
    THOUGHT = "thought"  # model reasoning (ReAct "Thought:", or text beside tool calls)
    ACTION = "action"  # a text-format action the model wrote (ReAct)
    TOOL_CALL = "tool_call"  # a tool invocation (name + arguments)
    TOOL_RESULT = "tool_result"  # what the tool returned
    FINAL_ANSWER = "final_answer"
    ERROR = "error"  # format errors and other problems the model is told about


class TrajectoryStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    MAX_STEPS = "max_steps"
    ERROR = "error"
    TIMEOUT = "timeout"
    #: the token budget ran out (VERL ``response_length``): a normal end for RL, not a failure
    TRUNCATED = "truncated"


class Outcome(str, Enum):
    """Why a trajectory ended, as far as resuming is concerned.

    The policy outcomes (``completed``, ``max_steps``, ``truncated``, ``format_error``,
    ``timeout``) are what the model did: final, a rerun keeps them. ``task_error`` is the task's
    own fault (its setup command failed): final too unless asked. ``sandbox_violation``: the
    sandbox broke a host-side bound (a frame or line over the limit, a flood, a forged reply, a
    download over its cap) - what the policy's commands did, so final: a rerun of a hostile
    trajectory would only do it again. ``infra_error`` is ours or the world's (image missing,
    sandbox died, LLM unreachable, a bug): a rerun retries it.
    """

    COMPLETED = "completed"
    MAX_STEPS = "max_steps"
    TRUNCATED = "truncated"
    FORMAT_ERROR = "format_error"
    TIMEOUT = "timeout"
    TASK_ERROR = "task_error"
    SANDBOX_VIOLATION = "sandbox_violation"
    INFRA_ERROR = "infra_error"


#: outcomes a plain rerun retries
RETRIED_BY_DEFAULT = frozenset({Outcome.INFRA_ERROR})


class TokenUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: TokenUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


class RetryRecord(BaseModel):
    """One retried LLM call: which attempt failed, why, and how long we waited."""

    attempt: int
    error: str
    wait_seconds: float
    at: float = Field(default_factory=time.time)


class TrajectoryStep(BaseModel):
    model_config = ConfigDict(use_enum_values=False)

    step_type: StepType
    content: str = ""
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    tool_call_id: str | None = None
    tool_result: Any = None
    success: bool | None = None
    #: seconds spent in the LLM call (model steps) or in the tool (tool results)
    duration: float | None = None
    usage: TokenUsage | None = None
    #: model turn this step belongs to (0 = before the first call)
    turn: int = 0
    timestamp: float = Field(default_factory=time.time)
    metadata: dict[str, Any] = Field(default_factory=dict)


class TrajectoryError(BaseModel):
    """An infrastructure failure recorded on the trajectory (the run itself went on)."""

    type: str
    message: str
    at: float = Field(default_factory=time.time)


#: metadata keys our modules write, with their writer: the rest of ``metadata`` is the user's.
#: Those marked typed are fields of their own (``metadata`` reads them through; the JSON keeps
#: them in ``metadata``: orchestrator/metadata.py)
RESERVED_METADATA: dict[str, str] = {
    "patch": "agents.coding (typed: Trajectory.patch)",
    "patch_error": "agents.coding",
    "autosubmitted": "agents.coding",
    "tokens": "orchestrator.verl_integration (typed: Trajectory.token_ledger)",
    "task_id": "orchestrator.verl_integration (the dataset row's id)",
    "group": "orchestrator.verl_integration (the GRPO group whose snapshot it started from)",
    "save_error": "orchestrator.runner (typed: Trajectory.save_error; never stored)",
    "run_id": "orchestrator.runner",
    "sandbox": "orchestrator.runner",
    "warm_pool": "orchestrator.runner",
    "queue_wait": "orchestrator.runner",
    "agent_timeout": "orchestrator.harbor.run",
    "truncated": "agents.base",
    "finish_reasons": "agents.context",
}


class Trajectory(TypedMetadataModel):
    #: typed fields that the JSON keeps inside ``metadata``, where the previous versions wrote
    #: them: field name -> key in the JSON's ``metadata``
    TYPED_METADATA: ClassVar[dict[str, str]] = {
        "patch": "patch",
        "token_ledger": "tokens",
        "save_error": "save_error",
    }

    schema_version: int = SCHEMA_VERSION
    request_id: str
    agent_type: str = ""
    status: TrajectoryStatus = TrajectoryStatus.RUNNING
    steps: list[TrajectoryStep] = Field(default_factory=list)
    #: the chat messages exactly as sent to the model, when the agent keeps them
    messages: list[dict[str, Any]] = Field(default_factory=list)
    final_response: str | None = None
    reward: float | None = None
    reward_details: dict[str, Any] = Field(default_factory=dict)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    llm_seconds: float = 0.0
    tool_seconds: float = 0.0
    retries: list[RetryRecord] = Field(default_factory=list)
    errors: list[TrajectoryError] = Field(default_factory=list)
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    #: why it ended (see :class:`Outcome`); set when the runner stores it, inferred on old lines
    outcome: Outcome | None = None
    #: 1 for the first run of this request id; a retry of an infrastructure failure adds one
    attempt: int = Field(1, ge=1)
    #: the user's own data (and the untyped keys of :data:`RESERVED_METADATA` that our
    #: modules write); a :class:`~orchestrator.metadata.TypedMetadata`: the typed fields
    #: below are not stored in it
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: the diff the coding agent submitted (SWE grading reads it)
    patch: str | None = None
    #: VERL: the exact token ids, masks and log-probs of the conversation
    #: (:class:`orchestrator.tokens.TokenLedger` as a dict)
    token_ledger: dict[str, Any] | None = None
    #: why the store could not write this trajectory (the CLI exits 2 on it)
    save_error: str | None = None
    # ---- building

    def add_step(self, step: TrajectoryStep) -> TrajectoryStep:
        self.steps.append(step)
        if step.usage is not None:
            self.usage.add(step.usage)
        return step

    def add_error(self, exc: BaseException | str, *, type_: str | None = None) -> None:
        if isinstance(exc, BaseException):
            self.errors.append(TrajectoryError(type=type_ or type(exc).__name__, message=str(exc)))
        else:
            self.errors.append(TrajectoryError(type=type_ or "Error", message=exc))

    def finish(self, status: TrajectoryStatus, final_response: str | None = None) -> None:
        self.status = status
        if final_response is not None:
            self.final_response = final_response
        self.finished_at = time.time()

    # ---- reading (the seed's API)

    @property
    def is_completed(self) -> bool:
        return self.status != TrajectoryStatus.RUNNING

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def turns(self) -> int:
        return max((s.turn for s in self.steps), default=0)

    def get_final_response(self) -> str | None:
        if self.final_response is not None:
            return self.final_response
        for step in reversed(self.steps):
            if step.step_type == StepType.FINAL_ANSWER:
                return step.content
        return None

    def get_tool_calls(self) -> list[TrajectoryStep]:
        return [s for s in self.steps if s.step_type == StepType.TOOL_CALL]

    def get_tool_results(self) -> list[TrajectoryStep]:
        return [s for s in self.steps if s.step_type == StepType.TOOL_RESULT]

    def get_total_reward(self) -> float:
        return float(self.reward or 0.0)

    def classify(self) -> Outcome:
        """The stored :attr:`outcome`, else inferred from status and errors (old lines)."""
        if self.outcome is not None:
            return self.outcome
        return infer_outcome(self)

    # ---- serialisation

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trajectory:
        version = data.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"trajectory {data.get('request_id')!r} has schema version {version}; this "
                f"agentic-rollout reads up to {SCHEMA_VERSION}: upgrade to read it"
            )
        return cls.model_validate(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def to_messages(self) -> list[dict[str, Any]]:
        """OpenAI chat messages: the exact ones sent when recorded, else rebuilt from steps."""
        if self.messages:
            out = [dict(m) for m in self.messages]
            if self.final_response and not (out and out[-1].get("role") == "assistant"):
                out.append({"role": "assistant", "content": self.final_response})
            return out
        return _messages_from_steps(self.steps)


#: error types that are the task's own fault: retrying the same task cannot help
_TASK_ERRORS = frozenset({"TaskError"})
_POLICY_ERRORS = frozenset({"FormatError"})
#: the sandbox broke a host-side bound (orchestrator.exceptions: SandboxProtocolError,
#: DownloadTooLargeError)
_VIOLATION_ERRORS = frozenset({"SandboxProtocolError", "DownloadTooLargeError"})


def infer_outcome(trajectory: Trajectory) -> Outcome:
    """Classify a finished trajectory from its status and its last recorded error."""
    status = trajectory.status
    if status == TrajectoryStatus.COMPLETED:
        return Outcome.COMPLETED
    if status == TrajectoryStatus.MAX_STEPS:
        return Outcome.MAX_STEPS
    if status == TrajectoryStatus.TRUNCATED:
        return Outcome.TRUNCATED
    if status == TrajectoryStatus.TIMEOUT:
        return Outcome.TIMEOUT
    # a reward function's failure says nothing about how the trajectory ended
    errors = [e for e in trajectory.errors if e.type != "RewardError"]
    last = errors[-1].type if errors else ""
    if last in _POLICY_ERRORS:
        return Outcome.FORMAT_ERROR
    if last in _TASK_ERRORS:
        return Outcome.TASK_ERROR
    if last in _VIOLATION_ERRORS:
        return Outcome.SANDBOX_VIOLATION
    return Outcome.INFRA_ERROR


def _messages_from_steps(steps: list[TrajectoryStep]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for step in steps:
        kind = step.step_type
        if kind == StepType.OBSERVATION:
            messages.append({"role": "user", "content": step.content})
        elif kind in (StepType.THOUGHT, StepType.ACTION, StepType.FINAL_ANSWER):
            messages.append({"role": "assistant", "content": step.content})
        elif kind == StepType.TOOL_CALL:
            call = {
                "id": step.tool_call_id or f"call_{len(messages)}",
                "type": "function",
                "function": {"name": step.tool_name, "arguments": json.dumps(step.tool_args or {})},
            }
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == StepType.TOOL_RESULT:
            messages.append(
                {"role": "tool", "tool_call_id": step.tool_call_id or "", "content": step.content}
            )
        elif kind == StepType.ERROR:
            messages.append({"role": "user", "content": step.content})
    return messages
