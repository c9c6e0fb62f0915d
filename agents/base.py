"""The agent contract: six methods and one loop, readable in one sitting.

An agent is a :class:`BaseAgent` subclass. Its loop is :meth:`BaseAgent.run_trajectory`, written
with the six methods of the seed library, which every agent (built-in or yours) shares::

    async def run_trajectory(self, prompt, llm_generate_func, request_id, **kwargs):
        trajectory = Trajectory(request_id=request_id)
        trajectory.add_step(TrajectoryStep(step_type=StepType.OBSERVATION, content=...))
        while self.should_continue(trajectory):                 # status, answer, max_steps
            messages = self.format_messages_for_llm(trajectory)  # the exact conversation
            response = await llm_generate_func(messages)          # retried, timed, counted
            step = self.parse_llm_output(response)                # tool call | answer | error
            trajectory.add_step(step)
            if step.tool_name:
                result_step = await self.execute_tool_call(
                    step.tool_name, step.tool_args, trajectory)
                trajectory.add_step(result_step)
        self.finalize_trajectory(trajectory)                  # completed | max_steps | error
        return trajectory

The orchestrator (CLI, :class:`~orchestrator.runner.AgenticRollout`, the VERL loop) calls
:meth:`BaseAgent.run`, which binds one trajectory's sandbox, tools, LLM client and tool format
to the six methods (through a context variable, so one agent object serves many concurrent
trajectories), then calls ``run_trajectory``. What it returns is adopted into the stored record.

How tool calls are written (ReAct text, JSON, hermes tags, native function calling) is a
:class:`ToolFormat`. Tool failures are observations the model reads. LLM failures that outlive
their retries, sandbox failures and broken agent contracts (:class:`AgentError`: garbage from
``parse_llm_output``, an exception in ``execute_tool_call``, a loop that ignores ``max_steps``)
end that trajectory with the error recorded, never an exception out of ``run``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, ClassVar

from pydantic import ValidationError

# AgentConfig, Decision, ParsedCall and ToolFormat were defined here: still importable from here
from agents.config import AgentConfig, Decision, ParsedCall, ToolFormat, ToolFormatName
from agents.context import (
    CONTRACT,
    CURRENT,
    AgentRun,
    ModelReply,
    adopt,
    checked,
    describe,
    seed_prompt,
)
from agents.formats import HermesFormat, JsonFormat, NativeFormat, ReActFormat
from orchestrator.exceptions import (
    AgentError,
    ConfigError,
    LLMError,
    SandboxError,
    StepLimitExceeded,
    TokenBudgetExceeded,
)
from orchestrator.llm import (
    CallableClient,
    LLMClient,
    coerce_response,
)
from orchestrator.sandbox.base import Sandbox
from orchestrator.tasks import Task
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus, TrajectoryStep
from tools.base import ToolContext, ToolResult
from tools.registry import ToolRegistry, default_registry

log = logging.getLogger(__name__)

#: tool calls allowed per model turn before a loop counts as runaway (native replies may carry
#: several calls; a loop that calls tools without ever asking the model is bounded by this)
MAX_CALLS_PER_TURN = 32


def tool_context(task: Task, sandbox: Sandbox | None) -> ToolContext:
    """The tools' view of a task: its sandbox, workspace and extra context (SWE base commit)."""
    return ToolContext(
        sandbox=sandbox,
        instance_id=task.id,
        workspace=task.workspace,
        extra=dict(task.metadata.get("tool_context") or {}),
    )


def _ended(trajectory: Trajectory) -> bool:
    """The model answered, or a tool (submit/finish) ended the task."""
    for step in reversed(trajectory.steps):
        if step.step_type == StepType.FINAL_ANSWER:
            return True
        if step.step_type == StepType.TOOL_RESULT:
            return bool(step.metadata.get("terminate"))
        if step.step_type in (StepType.TOOL_CALL, StepType.ERROR):
            return False
    return False


def submitted_data(trajectory: Trajectory) -> dict[str, Any] | None:
    """The data of the tool result that ended the task (submit/finish), if one did."""
    for step in reversed(trajectory.steps):
        if step.step_type == StepType.TOOL_RESULT and step.metadata.get("terminate"):
            return step.tool_result if isinstance(step.tool_result, dict) else {}
    return None


class BaseAgent:
    """Subclass it and override any of the six contract methods (or write your own
    ``run_trajectory`` with them, as the seed's custom agent does). ``name`` is what trajectories
    record as ``agent_type``; ``default_tool_format`` picks how tools are offered (ReAct text
    unless overridden)."""

    name: ClassVar[str] = "base"
    _auto_name: ClassVar[bool] = False
    default_system_prompt: ClassVar[str] = (
        "You are a helpful assistant that solves tasks step by step."
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__ and (cls.name == "base" or cls._auto_name):
            cls.name = cls.__name__  # a custom agent records its class name as agent_type
            cls._auto_name = True
        for method in CONTRACT:
            fn = cls.__dict__.get(method)
            if fn is not None and not getattr(fn, "__agent_checked__", False):
                setattr(cls, method, checked(cls, method, fn))

    def __init__(
        self, config: AgentConfig | dict[str, Any] | None = None, **overrides: Any
    ) -> None:
        base = config if isinstance(config, AgentConfig) else AgentConfig(**(config or {}))
        if overrides:  # validated like the config itself: a typo is refused, not kept
            try:
                base = AgentConfig(**{**base.model_dump(), **overrides})
            except ValidationError as exc:
                raise ConfigError(
                    f"invalid agent settings for {type(self).__name__}: {exc}"
                ) from exc
        self.config = base

    # ---- how tools are offered

    def tool_format(self, llm: LLMClient | None) -> ToolFormat:
        """The configured format, else the agent's default (:meth:`default_tool_format`)."""
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

    def default_tool_format(self, llm: LLMClient | None) -> ToolFormat:
        """ReAct text: works with any model, and with ``llm_generate_func`` returning text."""
        return ReActFormat()

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

    def format_observation(self, result: ToolResult) -> str:
        text = result.observation()
        limit = self.config.max_observation_chars
        if len(text) > limit:
            half = limit // 2
            text = (
                f"{text[:half]}\n[... {len(text) - 2 * half} characters elided ...]\n{text[-half:]}"
            )
        return text

    # ---- the six methods of the contract

    async def run_trajectory(
        self, prompt: Any, llm_generate_func: Any, request_id: str | None = None, **kwargs: Any
    ) -> Trajectory:
        """The loop every built-in agent runs. Outside :meth:`run` (called directly, as in the
        seed) it runs itself through :meth:`run` with ``llm_generate_func`` and the default
        tools, without a sandbox."""
        run = CURRENT.get()
        if run is None or run.agent is not self or run.standalone:
            return await self._run_standalone(prompt, llm_generate_func, request_id, **kwargs)
        trajectory = self.new_trajectory(prompt, request_id or run.task.id)
        while self.should_continue(trajectory):
            messages = self.format_messages_for_llm(trajectory)
            response = await llm_generate_func(messages)
            step = self.parse_llm_output(response)
            trajectory.add_step(step)
            # a native reply may call several tools: the step, then one more step per call
            for call in self.reply_calls(step):
                if call is not step:
                    trajectory.add_step(call)
                result_step = await self.execute_tool_call(
                    call.tool_name or "", call.tool_args, trajectory
                )
                trajectory.add_step(result_step)
                if result_step.metadata.get("terminate"):
                    break
        self.finalize_trajectory(trajectory)
        return trajectory

    def should_continue(self, trajectory: Trajectory) -> bool:
        """Still running, no answer yet (nor a terminating tool), under ``max_steps`` turns."""
        run = self._run_for(trajectory)
        if trajectory.status != TrajectoryStatus.RUNNING or run.gave_up or _ended(trajectory):
            return False
        return run.turn < self.config.max_steps

    def format_messages_for_llm(self, trajectory: Trajectory) -> list[dict[str, Any]]:
        """The conversation to send: system prompt (with the tool format's instructions), the
        task, then every reply and observation so far, exactly as the model will see them."""
        run = self._run_for(trajectory)
        run.flush(trajectory)
        return list(run.messages)

    def parse_llm_output(self, response: Any) -> TrajectoryStep:
        """One model reply (text, an :class:`LLMResponse` or a :class:`ModelReply`) as one step:
        ``TOOL_CALL`` with ``tool_name``/``tool_args`` (further calls of a native reply come from
        :meth:`reply_calls`), ``FINAL_ANSWER``, or ``ERROR`` for a reply in the wrong format (the
        model is told what was wrong)."""
        run = self._run_for(None)
        reply = response.response if isinstance(response, ModelReply) else coerce_response(response)
        run.replies = max(run.replies + 1, run.llm_calls)
        turn = run.turn
        run.flush(run.built)  # observations of the previous reply come before this one
        decision = run.fmt.parse(reply, run.tools)
        run.messages.append(run.fmt.assistant_message(reply))
        thought = {"thought": decision.thought} if decision.thought else {}
        if decision.format_error is not None:
            run.format_errors += 1
            step = TrajectoryStep(
                step_type=StepType.ERROR,
                turn=turn,
                content=decision.format_error,
                metadata={"reply": reply.content, "finish_reason": reply.finish_reason},
            )
            if run.format_errors >= self.config.max_consecutive_format_errors:
                run.gave_up = (
                    f"{run.format_errors} consecutive replies the agent could not parse; "
                    f"last: {decision.format_error}"
                )
            else:
                run.messages.append(run.fmt.format_error_message(decision.format_error))
        elif decision.calls:
            run.format_errors = 0
            run.decision = decision
            steps = [_call_step(c, turn) for c in decision.calls]
            steps[0].metadata.update(thought)
            step = steps[0]
            run.more_calls[id(step)] = steps[1:]
            run.own.update(id(s) for s in steps)
        elif decision.final_answer is not None:
            run.format_errors = 0
            step = TrajectoryStep(
                step_type=StepType.FINAL_ANSWER,
                turn=turn,
                content=decision.final_answer,
                metadata=thought,
            )
        else:
            step = TrajectoryStep(step_type=StepType.THOUGHT, turn=turn, content=decision.thought)
        run.own.add(id(step))
        return step

    def reply_calls(self, step: TrajectoryStep) -> list[TrajectoryStep]:
        """The tool calls of a parsed reply: ``step`` itself when it calls a tool, then one
        ``TOOL_CALL`` step per further call of the same (native) reply."""
        if not step.tool_name:
            return []
        run = CURRENT.get()
        more = run.more_calls.pop(id(step), []) if run is not None else []
        return [step, *more]

    async def execute_tool_call(
        self, tool_name: str, tool_args: dict[str, Any] | None, trajectory: Trajectory
    ) -> TrajectoryStep:
        """Run one tool in this trajectory's sandbox; the ``TOOL_RESULT`` step it returns holds
        the observation (a tool failure is an observation too, ``success=False``)."""
        run = self._run_for(trajectory)
        run.render(trajectory)  # a call step the agent made itself precedes its observation
        run.tool_calls += 1
        limit = self.config.max_steps * MAX_CALLS_PER_TURN
        if run.tool_calls > limit:
            raise StepLimitExceeded(
                f"{type(self).__name__} made more than {limit} tool calls (max_steps "
                f"{self.config.max_steps} x {MAX_CALLS_PER_TURN} per turn): its run_trajectory "
                "must stop when should_continue() returns False"
            )
        call = trajectory.steps[-1] if trajectory.steps else None
        if call is None or call.step_type != StepType.TOOL_CALL or call.tool_name != tool_name:
            call = None  # called with a name the agent chose itself
        t0 = time.perf_counter()
        arguments_error = call.metadata.get("arguments_error") if call is not None else None
        args: Any = tool_args  # a custom parse_llm_output may put anything here
        if arguments_error:
            result = ToolResult.fail(str(arguments_error))
        elif args is not None and not isinstance(args, dict):
            result = ToolResult.fail(
                f"The arguments for `{tool_name}` must be a JSON object, got {type(args).__name__}."
            )
        else:
            result = await run.tools.execute(tool_name, args or {}, run.ctx)
        elapsed = time.perf_counter() - t0
        run.record.tool_seconds += elapsed
        text = self.format_observation(result)
        step = TrajectoryStep(
            step_type=StepType.TOOL_RESULT,
            turn=call.turn if call is not None else run.turn,
            tool_name=tool_name,
            tool_call_id=call.tool_call_id if call is not None else None,
            content=text,
            success=result.success,
            duration=elapsed,
            tool_result=jsonable(result.data),
            metadata={"terminate": True} if result.terminate and result.success else {},
        )
        run.results.append(result)
        run.texts.append(text)
        run.own.add(id(step))
        return step

    def finalize_trajectory(self, trajectory: Trajectory) -> None:
        """Close the trajectory: ``completed`` with the answer (or the terminating tool's),
        ``error`` after too many unparseable replies, else ``max_steps``."""
        run = self._run_for(trajectory)
        run.flush(trajectory)
        if not trajectory.messages:
            trajectory.messages = run.messages
        if trajectory.status != TrajectoryStatus.RUNNING:
            return
        if run.gave_up:
            trajectory.add_error(run.gave_up, type_="FormatError")
            trajectory.finish(TrajectoryStatus.ERROR)
            return
        if not _ended(trajectory):
            trajectory.finish(TrajectoryStatus.MAX_STEPS)
            return
        data = submitted_data(trajectory)
        answer = data.get("answer") if data is not None else trajectory.get_final_response()
        trajectory.finish(
            TrajectoryStatus.COMPLETED,
            answer if isinstance(answer, str) else trajectory.final_response,
        )

    # ---- helpers for loops written on the contract

    def new_trajectory(self, prompt: Any, request_id: str) -> Trajectory:
        """A trajectory holding the task prompt as its first step (inside :meth:`run`, the
        orchestrator's own record, so nothing needs copying afterwards)."""
        run = CURRENT.get()
        if run is not None and run.agent is self and not run.standalone and run.built is None:
            trajectory = run.record
        else:
            trajectory = Trajectory(request_id=request_id, agent_type=self.name)
        content = prompt.get("content", prompt) if isinstance(prompt, dict) else prompt
        if run is not None and run.agent is self and not run.standalone:
            content = run.task.prompt_text()
        trajectory.add_step(TrajectoryStep(step_type=StepType.OBSERVATION, content=str(content)))
        if run is not None:
            run.note(trajectory)
        return trajectory

    def _run_for(self, trajectory: Trajectory | None) -> AgentRun:
        """This trajectory's bindings; outside :meth:`run` a standalone set (no sandbox, the
        default tools, ReAct text) made on first use, so the seed's direct calls work."""
        run = CURRENT.get()
        if (
            run is not None
            and run.agent is self
            and (
                not run.standalone
                or trajectory is None
                or run.built is None
                or run.built is trajectory
            )
        ):
            run.note(trajectory)
            return run

        first = trajectory.steps[0].content if trajectory is not None and trajectory.steps else ""
        task = Task(
            id=trajectory.request_id if trajectory is not None else "standalone",
            prompt=first or "(no prompt)",
        )
        try:
            fmt = self.tool_format(None)
        except ConfigError:  # native calling needs a client; direct calls get text
            fmt = ReActFormat()
        tools = default_registry()
        run = AgentRun(
            agent=self,
            task=task,
            tools=tools,
            ctx=tool_context(task, None),
            fmt=fmt,
            record=trajectory or Trajectory(request_id=task.id),
            messages=self.initial_messages(task, tools, fmt),
            standalone=True,
        )
        run.note(trajectory)
        CURRENT.set(run)
        return run

    async def _run_standalone(
        self, prompt: Any, llm_generate_func: Any, request_id: str | None, **kwargs: Any
    ) -> Trajectory:

        task = Task.from_any(prompt if isinstance(prompt, (dict, str)) else {"prompt": prompt})
        if request_id is not None:
            task = task.model_copy(update={"id": request_id})
        return await self.run(task, CallableClient(llm_generate_func), default_registry())

    # ---- what the orchestrator calls

    async def run(
        self,
        task: Task,
        llm: LLMClient,
        tools: ToolRegistry,
        sandbox: Sandbox | None = None,
        *,
        trajectory: Trajectory | None = None,
    ) -> Trajectory:
        """Run one trajectory of ``task``: bind the sandbox, tools and LLM to the six methods,
        call :meth:`run_trajectory`, and fold what it returns into ``trajectory`` (the
        orchestrator's record). Never raises for a failure inside the trajectory."""
        record = trajectory or Trajectory(request_id=task.id, agent_type=self.name)
        record.agent_type = record.agent_type or self.name
        fmt = self.tool_format(llm)
        run = AgentRun(
            agent=self,
            task=task,
            tools=tools,
            ctx=tool_context(task, sandbox),
            fmt=fmt,
            record=record,
            messages=self.initial_messages(task, tools, fmt),
            llm=llm,
        )
        record.messages = run.messages  # the exact conversation, kept up to date
        token = CURRENT.set(run)
        try:
            try:
                built = await self.run_trajectory(seed_prompt(task), run.generate, task.id)
                if not isinstance(built, Trajectory):
                    raise AgentError(
                        f"{type(self).__name__}.run_trajectory returned {describe(built)}; it "
                        "must return the Trajectory"
                    )
                adopt(record, built, run)
            except TokenBudgetExceeded as exc:  # the token budget is spent: the normal RL end
                adopt(record, run.built, run)
                record.metadata["truncated"] = str(exc)
                record.finish(TrajectoryStatus.TRUNCATED)
            except StepLimitExceeded as exc:
                adopt(record, run.built, run)
                record.add_error(exc)
                record.finish(TrajectoryStatus.MAX_STEPS)
            except (LLMError, SandboxError, AgentError) as exc:  # this trajectory only
                adopt(record, run.built, run)
                record.add_error(exc)
                record.finish(TrajectoryStatus.ERROR)
            except Exception as exc:  # the agent's own code failed: say whose, keep the others
                log.warning("agent %s failed on %s", type(self).__name__, task.id, exc_info=True)
                adopt(record, run.built, run)
                record.add_error(
                    AgentError(
                        f"{type(self).__name__}.run_trajectory raised {type(exc).__name__}: {exc}"
                    )
                )
                record.finish(TrajectoryStatus.ERROR)
            if record.status == TrajectoryStatus.RUNNING:  # the loop never finalized
                BaseAgent.finalize_trajectory(self, record)
        finally:
            CURRENT.reset(token)
        return record


def _call_step(call: ParsedCall, turn: int) -> TrajectoryStep:
    return TrajectoryStep(
        step_type=StepType.TOOL_CALL,
        turn=turn,
        tool_name=call.name,
        tool_call_id=call.id,
        tool_args=call.arguments,
        content=call.raw_arguments,
        metadata={"arguments_error": call.error} if call.error is not None else {},
    )


def jsonable(data: Any) -> Any:
    """``data`` if JSON can hold it, else its ``str`` (tool results, VERL extra fields)."""
    try:
        json.dumps(data)
    except (TypeError, ValueError):
        return str(data)
    return data


__all__ = [
    "MAX_CALLS_PER_TURN",
    "AgentConfig",
    "BaseAgent",
    "Decision",
    "ParsedCall",
    "ToolFormat",
    "ToolFormatName",
    "jsonable",
    "submitted_data",
    "tool_context",
]
