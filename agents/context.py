"""One trajectory's bindings for the agent contract, and the contract's checks.

:class:`AgentRun` is what the six methods of :class:`~agents.base.BaseAgent` work with while
:meth:`~agents.base.BaseAgent.run` runs one trajectory: the task, tools, sandbox context, LLM
client, tool format and the conversation, held in a context variable so one agent object serves
many concurrent trajectories. :func:`checked` wraps a subclass's own contract methods so that a
wrong return value or an exception becomes an :class:`~orchestrator.exceptions.AgentError`
naming the method. Depends on the orchestrator's models and the LLM retry helper only.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agents.config import ConfiguredAgent, Decision, ToolFormat
from orchestrator import metrics
from orchestrator.exceptions import AgentError, AgenticRolloutError, ConfigError, StepLimitExceeded
from orchestrator.llm import LLMClient, LLMResponse, generate_with_retries
from orchestrator.tasks import Task
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus, TrajectoryStep
from tools.base import ToolContext, ToolResult
from tools.registry import ToolRegistry


class ModelReply(str):
    """What ``llm_generate_func`` returns inside a run: the reply text (a ``str``, as the seed's
    functions return) that also carries the whole :class:`LLMResponse` (native tool calls,
    usage, finish reason) in ``.response``, so :meth:`BaseAgent.parse_llm_output` loses nothing."""

    response: LLMResponse

    def __new__(cls, response: LLMResponse) -> ModelReply:
        reply = super().__new__(cls, response.content or "")
        reply.response = response
        return reply


# ---- one trajectory's bindings


@dataclass
class AgentRun:
    """What the six methods work with during one trajectory: its task, tools, sandbox, LLM,
    tool format and the conversation. Held in a context variable by :meth:`BaseAgent.run`."""

    #: the agent running it (a BaseAgent; only its settings are read here)
    agent: ConfiguredAgent
    task: Task
    tools: ToolRegistry
    ctx: ToolContext
    fmt: ToolFormat
    #: the orchestrator's record: usage, retries and timings land here as they happen
    record: Trajectory
    messages: list[dict[str, Any]]
    llm: LLMClient | None = None
    #: run_trajectory called outside :meth:`BaseAgent.run` (no sandbox, no LLM client)
    standalone: bool = False
    #: the trajectory the agent builds (its own object when it makes one, as the seed does)
    built: Trajectory | None = None
    llm_calls: int = 0
    replies: int = 0
    tool_calls: int = 0
    format_errors: int = 0
    #: why the agent gave up (too many consecutive format errors)
    gave_up: str | None = None
    #: steps whose messages are already in the conversation (made by the default methods)
    own: set[int] = field(default_factory=set)
    #: steps of ``built`` already looked at for the conversation
    seen: int = 0
    #: the last reply's tool calls, results and observation texts, not yet in the conversation
    decision: Decision | None = None
    results: list[ToolResult] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    more_calls: dict[int, list[TrajectoryStep]] = field(default_factory=dict)

    @property
    def turn(self) -> int:
        return max(self.llm_calls, self.replies)

    def note(self, trajectory: Any) -> None:
        if isinstance(trajectory, Trajectory) and self.built is None:
            self.built = trajectory

    async def generate(self, messages: list[dict[str, Any]], **kwargs: Any) -> ModelReply:
        """The ``llm_generate_func`` given to ``run_trajectory``: sampling settings from the
        agent config, retries, usage and timing recorded, and a hard stop at ``max_steps``."""
        if self.llm is None:
            raise ConfigError("this run has no LLM client")
        limit = self.agent.config.max_steps
        if self.llm_calls >= limit:
            raise StepLimitExceeded(
                f"{type(self.agent).__name__} asked for model turn {self.llm_calls + 1} but "
                f"max_steps is {limit}: its run_trajectory must stop when should_continue() "
                "returns False"
            )
        self.llm_calls += 1
        cfg = self.agent.config
        sampling: dict[str, Any] = {
            "max_tokens": cfg.max_tokens_per_step,
            "temperature": cfg.temperature,
            "stop": self.fmt.stop(),
        }
        response_format = getattr(self.fmt, "response_format", None)
        if response_format is not None:
            sampling["response_format"] = response_format(self.tools)
        sampling.update(kwargs)
        t0 = time.perf_counter()
        response = await generate_with_retries(
            self.llm,
            messages,
            tools=self.tools.openai_schemas() if self.fmt.native and len(self.tools) else None,
            policy=cfg.retry,
            on_retry=self.record.retries.append,
            **sampling,
        )
        elapsed = time.perf_counter() - t0
        metrics.llm_call(elapsed)
        self.record.llm_seconds += elapsed
        self.record.usage.add(response.usage)
        self.record.metadata.setdefault("finish_reasons", []).append(response.finish_reason)
        return ModelReply(response)

    def flush(self, trajectory: Trajectory | None) -> None:
        """Bring the conversation up to date: the last reply's observations, then any step the
        agent added itself (rendered as plain user/assistant text)."""
        if self.decision is not None:
            self.messages.extend(
                self.fmt.observation_messages(self.decision, self.results, self.texts)
            )
        else:
            self.messages.extend(
                {"role": "user", "content": f"Observation: {text}"} for text in self.texts
            )
        self.decision, self.results, self.texts = None, [], []
        self.render(trajectory)

    def render(self, trajectory: Trajectory | None) -> None:
        """Add the steps the agent made itself (not by the default methods) to the
        conversation as plain user/assistant text, in order."""
        if trajectory is None:
            return
        for index in range(self.seen, len(trajectory.steps)):
            step = trajectory.steps[index]
            if id(step) in self.own or (index == 0 and step.step_type == StepType.OBSERVATION):
                continue  # ours (already in) or the task prompt (the first user message)
            self.messages.append(_plain_message(step))
        self.seen = len(trajectory.steps)


CURRENT: ContextVar[AgentRun | None] = ContextVar("agentic_rollout_agent_run", default=None)


def _plain_message(step: TrajectoryStep) -> dict[str, Any]:
    kind = step.step_type
    if kind in (StepType.THOUGHT, StepType.ACTION, StepType.FINAL_ANSWER, StepType.TOOL_CALL):
        text = step.content or (
            f"{step.tool_name} {json.dumps(step.tool_args)}" if step.tool_name else ""
        )
        return {"role": "assistant", "content": text}
    if kind == StepType.TOOL_RESULT:
        return {"role": "user", "content": f"Observation: {step.content}"}
    return {"role": "user", "content": step.content}


def describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80]}{'...' if len(text) > 80 else ''}"


def checked(cls: type, name: str, fn: Any) -> Any:
    """Wrap a subclass's own contract method so that a wrong return value or an exception from
    the agent's code becomes an :class:`AgentError` naming the method (the trajectory then ends
    with that message instead of an AttributeError somewhere later)."""
    where = f"{cls.__name__}.{name}"

    def wrong(value: Any, expected: str) -> AgentError:
        return AgentError(f"{where} returned {describe(value)}; it must return {expected}")

    def check(result: Any) -> Any:
        if name in ("parse_llm_output", "execute_tool_call") and not isinstance(
            result, TrajectoryStep
        ):
            raise wrong(result, "a TrajectoryStep (with tool_name/tool_args to call a tool)")
        if name == "format_messages_for_llm" and not (
            isinstance(result, list) and all(isinstance(m, dict) for m in result)
        ):
            raise wrong(result, "a list of chat messages (dicts)")
        return result

    def reraise(exc: Exception, args: tuple[Any, ...]) -> AgenticRolloutError:
        if isinstance(exc, AgenticRolloutError):
            return exc  # ours (sandbox died, LLM failed, a nested contract error): as it is
        detail = f"({args[0]!r})" if name == "execute_tool_call" and args else ""
        return AgentError(f"{where}{detail} raised {type(exc).__name__}: {exc}")

    def note(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        run = CURRENT.get()
        if run is not None:
            for value in (*args, *kwargs.values()):
                run.note(value)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            note(args, kwargs)
            try:
                result = await fn(self, *args, **kwargs)
            except Exception as exc:
                raise reraise(exc, args) from exc
            return check(result)

        async_wrapper.__agent_checked__ = True  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        note(args, kwargs)
        try:
            result = fn(self, *args, **kwargs)
        except Exception as exc:
            raise reraise(exc, args) from exc
        if inspect.isawaitable(result):
            if name == "execute_tool_call":  # a plain def returning super()'s coroutine
                return _await_checked(result, check)
            raise wrong(result, "a value, not a coroutine (the method must not be async)")
        return check(result)

    wrapper.__agent_checked__ = True  # type: ignore[attr-defined]
    return wrapper


async def _await_checked(awaitable: Any, check: Any) -> Any:
    return check(await awaitable)


CONTRACT = (
    "should_continue",
    "format_messages_for_llm",
    "parse_llm_output",
    "execute_tool_call",
    "finalize_trajectory",
)


def seed_prompt(task: Task) -> dict[str, Any]:
    """The seed's ``prompt`` argument: ``{"content": text}`` (plus the chat messages, the id and
    the task's metadata for agents that want them)."""
    prompt: dict[str, Any] = {"content": task.prompt_text(), "id": task.id}
    if isinstance(task.prompt, list):
        prompt["messages"] = [dict(m) for m in task.prompt]
    metadata = task.json_metadata()  # as the previous versions handed it (an SWE row included)
    if metadata:
        prompt["metadata"] = metadata
    return prompt


def adopt(record: Trajectory, built: Trajectory | None, run: AgentRun) -> None:
    """Fold the trajectory an agent built itself (the seed's ``Trajectory(request_id=...)``)
    into the orchestrator's record, which already holds usage, retries and timings."""
    if built is None or built is record:
        if not record.messages:
            record.messages = run.messages
        return
    record.steps = list(built.steps)
    record.messages = list(built.messages) or run.messages
    if built.final_response is not None:
        record.final_response = built.final_response
    if built.reward is not None:
        record.reward = built.reward
    record.reward_details.update(built.reward_details)
    record.errors.extend(built.errors)
    record.metadata.update({k: v for k, v in built.metadata.items() if k not in record.metadata})
    if record.usage.total_tokens == 0:
        record.usage = built.usage
    if built.status != TrajectoryStatus.RUNNING:
        record.finish(built.status)
        record.finished_at = built.finished_at or record.finished_at
