"""The agent contract and its loop, readable in one sitting.

``await agent.run(task, llm, tools, sandbox)`` -> :class:`Trajectory`. The loop:

    messages = initial_messages(task)
    while should_continue(trajectory):
        response = query(messages)                 # LLM call, retried, timed, recorded
        decision = format.parse(response)          # final answer | tool calls | format error
        observe(decision)                          # run tools, append observations
    finalize(trajectory)

How tool calls are written (ReAct text vs native function calling) is a :class:`ToolFormat`,
so every agent shares this loop. Tool failures are observations the model reads; LLM failures
that outlive their retries and sandbox failures end the trajectory with status ``error`` and
the exception recorded, never an exception out of ``run``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.exceptions import ConfigError, LLMError, SandboxError, TokenBudgetExceeded
from orchestrator.llm import LLMClient, LLMResponse, RetryPolicy, generate_with_retries
from orchestrator.sandbox.base import Sandbox
from orchestrator.tasks import Task
from orchestrator.trajectory import (
    StepType,
    Trajectory,
    TrajectoryStatus,
    TrajectoryStep,
)
from tools.base import ToolContext, ToolResult
from tools.registry import ToolRegistry


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
    tool_format: Literal["auto", "react", "json", "native", "hermes"] = "auto"
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


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


def tool_context(task: Task, sandbox: Sandbox | None) -> ToolContext:
    """The tools' view of a task: its sandbox, workspace and extra context (SWE base commit)."""
    return ToolContext(
        sandbox=sandbox,
        instance_id=task.id,
        workspace=task.workspace,
        extra=dict(task.metadata.get("tool_context") or {}),
    )


class BaseAgent:
    """Subclasses pick a ``tool_format`` and may override the small methods below."""

    name: ClassVar[str] = "base"
    default_system_prompt: ClassVar[str] = (
        "You are a helpful assistant that solves tasks step by step."
    )

    def __init__(
        self, config: AgentConfig | dict[str, Any] | None = None, **overrides: Any
    ) -> None:
        base = config if isinstance(config, AgentConfig) else AgentConfig(**(config or {}))
        self.config = base.model_copy(update=overrides) if overrides else base

    # ---- overridable steps

    def tool_format(self, llm: LLMClient) -> ToolFormat:
        """The configured format, else the agent's default (:meth:`default_tool_format`)."""
        from agents.formats import HermesFormat, JsonFormat, NativeFormat, ReActFormat

        choice = self.config.tool_format
        if choice == "react":
            return ReActFormat()
        if choice == "json":
            return JsonFormat()
        if choice == "hermes":
            return HermesFormat()
        if choice == "native":
            if not getattr(llm, "supports_tools", False):
                raise ConfigError(
                    "tool_format 'native' needs an LLM client with native tool calling (OpenAI or "
                    "Anthropic client); a plain llm_generate_func returns text: use 'react'"
                )
            return NativeFormat()
        return self.default_tool_format(llm)

    def default_tool_format(self, llm: LLMClient) -> ToolFormat:
        raise NotImplementedError

    def system_prompt(self, task: Task, tools: ToolRegistry, fmt: ToolFormat) -> str:
        base = task.system_prompt or self.config.system_prompt or self.default_system_prompt
        extra = fmt.instructions(tools)
        return f"{base}\n\n{extra}" if extra else base

    def initial_messages(
        self, task: Task, tools: ToolRegistry, fmt: ToolFormat
    ) -> list[dict[str, Any]]:
        system = {"role": "system", "content": self.system_prompt(task, tools, fmt)}
        if isinstance(task.prompt, list):
            return [system, *[dict(m) for m in task.prompt if m.get("role") != "system"]]
        return [system, {"role": "user", "content": task.prompt}]

    def should_continue(self, trajectory: Trajectory) -> bool:
        return trajectory.status == TrajectoryStatus.RUNNING

    def format_observation(self, result: ToolResult) -> str:
        text = result.observation()
        limit = self.config.max_observation_chars
        if len(text) > limit:
            half = limit // 2
            text = (
                f"{text[:half]}\n[... {len(text) - 2 * half} characters elided ...]\n{text[-half:]}"
            )
        return text

    async def finalize(
        self, trajectory: Trajectory, ctx: ToolContext, result: ToolResult | None
    ) -> None:
        """Called once when the model ends the run (final answer or a terminating tool)."""
        answer = None
        if result is not None and isinstance(result.data, dict):
            answer = result.data.get("answer")
        trajectory.finish(
            TrajectoryStatus.COMPLETED, answer if answer is not None else trajectory.final_response
        )

    # ---- the loop

    async def run(
        self,
        task: Task,
        llm: LLMClient,
        tools: ToolRegistry,
        sandbox: Sandbox | None = None,
        *,
        trajectory: Trajectory | None = None,
    ) -> Trajectory:
        traj = trajectory or Trajectory(request_id=task.id, agent_type=self.name)
        traj.agent_type = traj.agent_type or self.name
        fmt = self.tool_format(llm)
        ctx = tool_context(task, sandbox)
        messages = self.initial_messages(task, tools, fmt)
        traj.messages = messages  # the exact conversation, kept up to date
        traj.add_step(TrajectoryStep(step_type=StepType.OBSERVATION, content=task.prompt_text()))
        format_errors = 0
        try:
            for turn in range(1, self.config.max_steps + 1):
                if not self.should_continue(traj):
                    break
                response = await self.query(llm, messages, tools, fmt, traj)
                decision = fmt.parse(response, tools)
                messages.append(fmt.assistant_message(response))
                if decision.format_error is not None:
                    format_errors += 1
                    traj.add_step(
                        TrajectoryStep(
                            step_type=StepType.ERROR,
                            turn=turn,
                            content=decision.format_error,
                            metadata={
                                "reply": response.content,
                                "finish_reason": response.finish_reason,
                            },
                        )
                    )
                    if format_errors >= self.config.max_consecutive_format_errors:
                        traj.add_error(
                            f"{format_errors} consecutive replies the agent could not "
                            f"parse; last: {decision.format_error}",
                            type_="FormatError",
                        )
                        traj.finish(TrajectoryStatus.ERROR)
                        break
                    messages.append(fmt.format_error_message(decision.format_error))
                    continue
                format_errors = 0
                if decision.thought:
                    traj.add_step(
                        TrajectoryStep(
                            step_type=StepType.THOUGHT, turn=turn, content=decision.thought
                        )
                    )
                if decision.final_answer is not None and not decision.calls:
                    traj.add_step(
                        TrajectoryStep(
                            step_type=StepType.FINAL_ANSWER,
                            turn=turn,
                            content=decision.final_answer,
                        )
                    )
                    traj.final_response = decision.final_answer
                    await self.finalize(traj, ctx, None)
                    break
                await self.observe(
                    decision, tools=tools, ctx=ctx, fmt=fmt, messages=messages, traj=traj, turn=turn
                )
            else:
                if traj.status == TrajectoryStatus.RUNNING:
                    traj.finish(TrajectoryStatus.MAX_STEPS)
        except TokenBudgetExceeded as exc:  # the token budget is spent: the normal RL end
            traj.metadata["truncated"] = str(exc)
            traj.finish(TrajectoryStatus.TRUNCATED)
        except (LLMError, SandboxError) as exc:  # infrastructure: record and end this trajectory
            traj.add_error(exc)
            traj.finish(TrajectoryStatus.ERROR)
        if traj.status == TrajectoryStatus.RUNNING:
            traj.finish(TrajectoryStatus.MAX_STEPS)
        return traj

    async def query(
        self,
        llm: LLMClient,
        messages: list[dict[str, Any]],
        tools: ToolRegistry,
        fmt: ToolFormat,
        traj: Trajectory,
    ) -> LLMResponse:
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        response_format = getattr(fmt, "response_format", None)
        if response_format is not None:
            extra["response_format"] = response_format(tools)
        response = await generate_with_retries(
            llm,
            messages,
            tools=tools.openai_schemas() if fmt.native and len(tools) else None,
            policy=self.config.retry,
            on_retry=traj.retries.append,
            max_tokens=self.config.max_tokens_per_step,
            temperature=self.config.temperature,
            stop=fmt.stop(),
            **extra,
        )
        elapsed = time.perf_counter() - t0
        traj.llm_seconds += elapsed
        traj.usage.add(response.usage)
        traj.metadata.setdefault("finish_reasons", []).append(response.finish_reason)
        return response

    async def observe(
        self,
        decision: Decision,
        *,
        tools: ToolRegistry,
        ctx: ToolContext,
        fmt: ToolFormat,
        messages: list[dict[str, Any]],
        traj: Trajectory,
        turn: int,
    ) -> None:
        results: list[ToolResult] = []
        texts: list[str] = []
        terminating: ToolResult | None = None
        for call in decision.calls:
            traj.add_step(
                TrajectoryStep(
                    step_type=StepType.TOOL_CALL,
                    turn=turn,
                    tool_name=call.name,
                    tool_call_id=call.id,
                    tool_args=call.arguments,
                    content=call.raw_arguments,
                )
            )
            t0 = time.perf_counter()
            if call.error is not None:
                result = ToolResult.fail(call.error)
            else:
                result = await tools.execute(call.name, call.arguments or {}, ctx)
            elapsed = time.perf_counter() - t0
            traj.tool_seconds += elapsed
            text = self.format_observation(result)
            traj.add_step(
                TrajectoryStep(
                    step_type=StepType.TOOL_RESULT,
                    turn=turn,
                    tool_name=call.name,
                    tool_call_id=call.id,
                    content=text,
                    success=result.success,
                    duration=elapsed,
                    tool_result=_jsonable(result.data),
                )
            )
            results.append(result)
            texts.append(text)
            if result.terminate and result.success:
                terminating = result
                break
        messages.extend(fmt.observation_messages(decision, results, texts))
        if terminating is not None:
            await self.finalize(traj, ctx, terminating)


def _jsonable(data: Any) -> Any:
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        return str(data)
    return data
