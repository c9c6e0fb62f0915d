"""``AgenticRollout``: run many trajectories concurrently, one sandbox each, keep every one.

For each task: fork the tool registry (fresh tool state), open a sandbox, run the setup
commands, run the agent, close the sandbox - whatever happens - and append the finished
trajectory to the JSONL store at once. A semaphore bounds live trajectories (and sandboxes).
A rerun with the same output file skips the ids already stored. Failures stay inside their
trajectory: status ``error``/``timeout`` with the exception recorded; the others go on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agents import make_agent
from agents.base import BaseAgent
from orchestrator import admission, metrics
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import AgenticRolloutError, ConfigError, TaskError
from orchestrator.llm import CallableClient, LLMClient, make_client
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.base import Sandbox
from orchestrator.sandbox.pool import WarmPool
from orchestrator.store import StoreError, TrajectoryStore
from orchestrator.tasks import Task
from orchestrator.trajectory import Trajectory, TrajectoryStatus
from tools.registry import ToolRegistry, default_registry, get_global_tool_registry

log = logging.getLogger(__name__)

#: sync or async; an async one may run an evaluation in a sandbox (SWE tasks)
RewardFn = Callable[[Task, Trajectory], "float | Awaitable[float | None] | None"]
EventFn = Callable[[str, Task, Trajectory | None], None]
AfterAgentFn = Callable[[Task, Trajectory, "Sandbox | None"], Awaitable[None]]


def answer_reward(task: Task, trajectory: Trajectory) -> float | None:
    """1.0 when the task's expected ``answer`` appears in the final response, else 0.0."""
    if task.answer is None:
        return None
    final = trajectory.get_final_response() or ""
    return 1.0 if task.answer.strip() and task.answer.strip() in final else 0.0


@dataclass
class RunSummary:
    trajectories: list[Trajectory] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def unsaved(self) -> list[Trajectory]:
        """Trajectories the store could not write (disk full...): a rerun redoes them."""
        return [t for t in self.trajectories if "save_error" in t.metadata]

    @property
    def by_status(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trajectories:
            out[t.status.value] = out.get(t.status.value, 0) + 1
        return out

    @property
    def infrastructure_failures(self) -> list[Trajectory]:
        return [
            t
            for t in self.trajectories
            if t.status in (TrajectoryStatus.ERROR, TrajectoryStatus.TIMEOUT)
            and any(e.type != "FormatError" for e in t.errors)
        ]


class AgenticRollout:
    def __init__(
        self,
        config: AgenticRolloutConfig | None = None,
        llm_generate_func: Callable[..., Any] | None = None,
        tokenizer: Any = None,
        *,
        llm_client: LLMClient | None = None,
        tools: ToolRegistry | None = None,
        reward_fn: RewardFn | None = answer_reward,
        agent: BaseAgent | None = None,
        reward_all: bool = False,
        after_agent: AfterAgentFn | None = None,
    ) -> None:
        self.config = config or AgenticRolloutConfig()
        if llm_client is not None and llm_generate_func is not None:
            raise ConfigError("pass llm_client or llm_generate_func, not both")
        self._llm: LLMClient | None = llm_client or (
            CallableClient(llm_generate_func) if llm_generate_func is not None else None
        )
        #: a Hugging Face tokenizer: needed by generate_sequences (VERL) to tokenize trajectories
        self.tokenizer = tokenizer
        self.run_id = uuid.uuid4().hex[:12]
        self._agent = agent or make_agent(self.config.agent_type, self.config.agent_config())
        base = tools
        if base is None:
            global_registry = get_global_tool_registry()
            base = global_registry if len(global_registry) else default_registry()
        unknown = set(self.config.tools or []) - set(base.names())
        if unknown:
            raise ConfigError(
                f"config.tools names unknown tools: {', '.join(sorted(unknown))}; "
                f"available: {', '.join(base.names())}"
            )
        self.tools = base
        # a typo in tools_config (or a bad value) fails here, once, not in every trajectory
        base.fork(self.config.tools_config, only=self.config.tools)
        self.reward_fn = reward_fn
        #: also reward trajectories that ended in max_steps/error (SWE: the patch still counts)
        self.reward_all = reward_all
        #: awaited inside the sandbox's lifetime after the agent (e.g. evaluate in that sandbox)
        self.after_agent = after_agent
        self._pool: WarmPool | None = None
        if self.config.admission:  # process-wide: applies to every rollout of this process
            admission.configure_all(dict(self.config.admission))
        self.store: TrajectoryStore | None = (
            TrajectoryStore(self.config.trajectory_save_path)
            if self.config.save_trajectories
            else None
        )

    # ---- the LLM

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            s = self.config.llm
            self._llm = make_client(
                s.provider, s.model, base_url=s.base_url, api_key=s.api_key, timeout=s.timeout
            )
        return self._llm

    # ---- seed compatibility: rollout.agent.run_trajectory(prompt=..., llm_generate_func=...)

    @property
    def agent(self) -> _SeedAgent:
        return _SeedAgent(self)

    # ---- running

    async def run(
        self, tasks: Iterable[Task | dict[str, Any] | str], *, on_event: EventFn | None = None
    ) -> RunSummary:
        """Run every task not already in the store; trajectories in task order."""
        items = [Task.from_any(t, index=i) for i, t in enumerate(tasks)]
        ids = [t.id for t in items]
        duplicates = {i for i in ids if ids.count(i) > 1}
        if duplicates:
            raise TaskError(f"duplicate task ids: {', '.join(sorted(duplicates))}")
        summary = RunSummary()
        done = self.store.done_ids() if self.store is not None else set()
        todo = [t for t in items if t.id not in done]
        summary.skipped = [t.id for t in items if t.id in done]
        semaphore = asyncio.Semaphore(self.config.concurrent_requests)
        results: dict[str, Trajectory] = {}
        if todo and self.config.warm_pool and self.config.uses_sandbox and self._pool is None:
            self._pool = WarmPool(self.config.warm_pool)
            self._pool.warm(self._sandbox_values(None))
        try:
            for start in range(0, len(todo), self.config.batch_size):
                chunk = todo[start : start + self.config.batch_size]
                finished = await asyncio.gather(
                    *(self._guarded(t, semaphore, on_event) for t in chunk)
                )
                for traj in finished:
                    results[traj.request_id] = traj
        finally:
            if self._pool is not None:
                pool, self._pool = self._pool, None
                await pool.close()
        summary.trajectories = [results[t.id] for t in todo]
        return summary

    async def generate_sequences(self, prompts: Any) -> Any:
        """VERL: one trajectory per row of a ``DataProto``, returned as a ``DataProto`` with the
        rollout keys (needs the ``verl`` extra and a tokenizer; see
        :func:`orchestrator.verl_integration.generate_sequences`)."""
        from orchestrator.verl_integration import generate_sequences

        return await generate_sequences(self, prompts)

    async def run_batch(self, tasks: Iterable[Task | dict[str, Any] | str]) -> list[Trajectory]:
        return (await self.run(tasks)).trajectories

    async def run_one(
        self, task: Task | dict[str, Any] | str, *, llm: LLMClient | None = None
    ) -> Trajectory:
        return await self._run_task(Task.from_any(task), llm or self.llm)

    async def _guarded(
        self, task: Task, semaphore: asyncio.Semaphore, on_event: EventFn | None
    ) -> Trajectory:
        async with semaphore:
            if on_event:
                on_event("started", task, None)
            traj = await self._run_task(task, self.llm)
            if on_event:
                on_event("finished", task, traj)
            return traj

    async def _run_task(self, task: Task, llm: LLMClient) -> Trajectory:
        traj = Trajectory(request_id=task.id, agent_type=self._agent.name)
        traj.metadata["run_id"] = self.run_id
        try:
            await asyncio.wait_for(self._execute(task, llm, traj), self.config.trajectory_timeout)
        except asyncio.TimeoutError:
            traj.add_error(
                f"trajectory exceeded {self.config.trajectory_timeout:g}s", type_="Timeout"
            )
            traj.finish(TrajectoryStatus.TIMEOUT)
        except AgenticRolloutError as exc:  # sandbox start, setup, config: this trajectory only
            traj.add_error(exc)
            traj.finish(TrajectoryStatus.ERROR)
        except Exception as exc:  # a bug must not take the batch down
            log.exception("trajectory %s failed", task.id)
            traj.add_error(exc)
            traj.finish(TrajectoryStatus.ERROR)
        if traj.status == TrajectoryStatus.RUNNING:
            traj.finish(TrajectoryStatus.ERROR)
        if self.reward_fn is not None and (
            traj.status == TrajectoryStatus.COMPLETED or self.reward_all
        ):
            try:
                value = self.reward_fn(task, traj)
                if inspect.isawaitable(value):
                    value = await value
                traj.reward = value
            except Exception as exc:
                traj.add_error(exc, type_="RewardError")
        metrics.trajectory_finished(traj)  # before the steps may be dropped below
        if not self.config.include_trajectory_in_output:
            traj.steps = []
            traj.messages = []
        if self.store is not None:
            try:
                await self.store.aappend(traj)
            except StoreError as exc:  # disk full: keep it in memory, say so, go on with the rest
                log.error("trajectory %s not saved: %s", task.id, exc)
                traj.metadata["save_error"] = str(exc)
        return traj

    async def _execute(self, task: Task, llm: LLMClient, traj: Trajectory) -> None:
        only = self.config.tools
        tools = self.tools.fork(self.config.tools_config, only=only)
        if not self.config.uses_sandbox:
            await self._agent.run(task, llm, tools, None, trajectory=traj)
            if self.after_agent is not None:
                await self.after_agent(task, traj, None)
            return
        values = self._sandbox_values(task)
        if self._pool is not None:
            traj.metadata["warm_pool"] = self._pool.ready(values) > 0
            sandbox = await self._pool.acquire(values)
        else:
            sandbox = await sandbox_config(values).build().start()
        async with sandbox:  # closed (destroyed) whatever happens; never reused
            traj.metadata["sandbox"] = sandbox.name
            # admission wait of this trajectory's start (0 for a warm pool's sandbox)
            traj.metadata["queue_wait"] = (
                0.0 if traj.metadata.get("warm_pool") else round(sandbox.queue_seconds, 4)
            )
            for command in task.setup:
                result = await sandbox.run(command, timeout=600)
                if not result.ok:
                    raise TaskError(
                        f"setup command failed (exit {result.exit_code}): {command[:200]}\n"
                        f"{result.output[-1000:]}"
                    )
            await self._agent.run(task, llm, tools, sandbox, trajectory=traj)
            if self.after_agent is not None:
                await self.after_agent(task, traj, sandbox)

    def _sandbox_values(self, task: Task | None) -> dict[str, Any]:
        values = {**self.config.sandbox, **(task.sandbox if task is not None else {})}
        if values.get("type", "docker") == "docker":
            values.setdefault("run_id", self.run_id)
        return values


class _SeedAgent:
    """``rollout.agent.run_trajectory(prompt=..., llm_generate_func=..., request_id=...)``."""

    def __init__(self, rollout: AgenticRollout) -> None:
        self._rollout = rollout

    @property
    def name(self) -> str:
        return self._rollout._agent.name

    async def run_trajectory(
        self,
        prompt: Any,
        llm_generate_func: Callable[..., Any] | None = None,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> Trajectory:
        task = Task.from_any(prompt if isinstance(prompt, (dict, str)) else {"prompt": prompt})
        if request_id is not None:
            task = task.model_copy(update={"id": request_id})
        llm = CallableClient(llm_generate_func) if llm_generate_func is not None else None
        return await self._rollout.run_one(task, llm=llm)
