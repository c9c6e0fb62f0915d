"""``AgenticRollout``: run many trajectories concurrently, one sandbox each, keep every one.

Before the first sandbox, :mod:`orchestrator.preflight` checks the whole setup; then the run
takes the output file's lock (one writer per output). For each task: fork the tool registry
(fresh tool state), open a sandbox, run the setup commands, run the agent, close the sandbox -
whatever happens - and append the finished trajectory, with its outcome, to the JSONL store at
once. ``concurrent_requests`` bounds live trajectories (and sandboxes).

A rerun with the same output skips the ids whose stored outcome is final and runs again those
whose outcome is retried (infrastructure failures by default; ``retry_outcomes``), superseding
the old line. Failures stay inside their trajectory; an interruption (signal, exception) stores
nothing half-done and removes this run's containers.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agents.base import BaseAgent
from agents.registry import make_agent
from orchestrator import admission, metrics
from orchestrator.config import AgenticRolloutConfig, resolve_retry
from orchestrator.exceptions import AgenticRolloutError, ConfigError, TaskError
from orchestrator.llm import CallableClient, LLMClient, make_client
from orchestrator.preflight import check_agent, run_preflight
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.base import ManagedSandboxConfig, Sandbox
from orchestrator.sandbox.docker import DockerSandboxConfig
from orchestrator.sandbox.gc import reap_docker, reap_kubernetes
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig
from orchestrator.sandbox.pool import WarmPool
from orchestrator.store import StoreError, TrajectoryStore
from orchestrator.tasks import Task
from orchestrator.trajectory import Outcome, Trajectory, TrajectoryStatus, infer_outcome
from orchestrator.validation import did_you_mean
from orchestrator.verl_batch import generate_sequences
from tools.registry import ToolRegistry, default_registry, get_global_tool_registry

log = logging.getLogger(__name__)

#: sync or async; an async one may run an evaluation in a sandbox (SWE tasks)
RewardFn = Callable[[Task, Trajectory], "float | Awaitable[float | None] | None"]
EventFn = Callable[[str, Task, Trajectory | None], None]
AfterAgentFn = Callable[[Task, Trajectory, "Sandbox | None"], Awaitable[None]]


_SPACES = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """What exact match compares: Unicode NFKC, case-folded, runs of whitespace as one space,
    no leading/trailing whitespace, and one trailing period dropped ("360." == "360")."""
    out = _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    return out[:-1].rstrip() if out.endswith(".") else out


def answer_reward(task: Task, trajectory: Trajectory) -> float | None:
    """Exact match: 1.0 when the final response equals the task's ``answer`` after
    :func:`normalize_answer` on both, else 0.0; None (unscored) when the task has no answer."""
    if task.answer is None:
        return None
    final = trajectory.get_final_response()
    if final is None:
        return 0.0
    return 1.0 if normalize_answer(final) == normalize_answer(task.answer) else 0.0


@dataclass
class RunSummary:
    trajectories: list[Trajectory] = field(default_factory=list)
    #: ids not run because their stored outcome is final
    skipped: list[str] = field(default_factory=list)
    #: why each skipped id was skipped: its stored outcome
    skipped_outcomes: dict[str, str] = field(default_factory=dict)
    #: ids run again: id -> the stored outcome that was retried
    retried: dict[str, str] = field(default_factory=dict)
    #: ids given more than once with identical content: run once
    deduplicated: list[str] = field(default_factory=list)
    run_id: str = ""

    @property
    def scored(self) -> list[Trajectory]:
        return [t for t in self.trajectories if t.reward is not None]

    @property
    def solved(self) -> list[Trajectory]:
        return [t for t in self.trajectories if t.reward is not None and t.reward >= 1.0]

    @property
    def unscored(self) -> list[Trajectory]:
        return [t for t in self.trajectories if t.reward is None]

    @property
    def mean_reward(self) -> float | None:
        """Mean over every finished trajectory; an unscored one counts as 0."""
        if not self.trajectories:
            return None
        return sum(t.reward or 0.0 for t in self.trajectories) / len(self.trajectories)

    @property
    def skipped_by_outcome(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for outcome in self.skipped_outcomes.values():
            out[outcome] = out.get(outcome, 0) + 1
        return out

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
        """Trajectories that ended for reasons outside the policy (a rerun retries them)."""
        return [t for t in self.trajectories if t.classify() == Outcome.INFRA_ERROR]


async def run_task_setup(sandbox: Sandbox, task: Task) -> None:
    """Run a task's ``setup`` commands in ``sandbox``; the first that fails is a TaskError."""
    for command in task.setup:
        result = await sandbox.run(command, timeout=600)
        if not result.ok:
            raise TaskError(
                f"setup command failed (exit {result.exit_code}): {command[:200]}\n"
                f"{result.output[-1000:]}"
            )


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
        #: labels this run's sandboxes (``agentic-rollout gc --run RUN_ID``); the sandbox
        #: config's own run_id if it sets one
        settings = self.config.sandbox
        self.run_id = uuid.uuid4().hex[:12]
        if isinstance(settings, ManagedSandboxConfig) and "run_id" in settings.model_fields_set:
            self.run_id = settings.run_id
        self._agent = agent or make_agent(self.config.agent_type, self.config.agent_config())
        base = tools
        if base is None:
            global_registry = get_global_tool_registry()
            base = global_registry if len(global_registry) else default_registry()
        unknown = sorted(set(self.config.tools.names or []) - set(base.names()))
        if unknown:
            raise ConfigError(
                f"config.tools names unknown tools: {', '.join(unknown)}"
                f"{did_you_mean(unknown[0], base.names())}; available: {', '.join(base.names())}"
            )
        self.tools = base
        # a typo in tools_config (or a bad value) fails here, once, not in every trajectory
        base.fork(self.config.tools.config, only=self.config.tools.names)
        self.reward_fn = reward_fn
        #: also reward trajectories that ended in max_steps/error (SWE: the patch still counts)
        self.reward_all = reward_all
        #: awaited inside the sandbox's lifetime after the agent (e.g. evaluate in that sandbox)
        self.after_agent = after_agent
        self._pool: WarmPool | None = None
        if self.config.admission:  # process-wide: applies to every rollout of this process
            admission.configure_all(dict(self.config.admission))
        path = self.config.trajectory_file
        #: opening reads the file and writes nothing; a run takes its lock
        self.store: TrajectoryStore | None = TrajectoryStore(path) if path is not None else None
        self._retry = resolve_retry(self.config.retry_outcomes)
        self._active_retry = self._retry
        self._agent_checked = False

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
        self,
        tasks: Iterable[Task | dict[str, Any] | str],
        *,
        on_event: EventFn | None = None,
        retry: str | list[str] | None = None,
        preflight: bool | None = None,
    ) -> RunSummary:
        """Run every task whose stored outcome does not make it final; trajectories in task
        order. ``retry``: which stored outcomes run again (default ``config.retry_outcomes``);
        ``preflight``: check the setup first (default ``config.preflight``)."""
        items = self.prepare(tasks)
        retry_set = self._retry if retry is None else resolve_retry(retry)
        self._active_retry = retry_set
        summary = RunSummary(run_id=self.run_id, deduplicated=items.deduplicated)
        if preflight if preflight is not None else self.config.preflight:
            # only what will run needs checking: a rerun with everything final needs no LLM
            if self.store is not None:
                self.store.refresh()  # reads only: a failed preflight writes nothing
            pending = self._plan(self._samples(items.tasks), retry_set, RunSummary())
            if pending:
                await self.preflight([t for t, _ in pending])
        log.debug(
            "run %s: %d task(s), output %s",
            self.run_id,
            len(items.tasks),
            self.config.trajectory_file,
        )
        if self.store is not None:
            self.store.acquire(run_id=self.run_id)  # StoreLockedError: another run writes there
        interrupted = True
        try:
            plan = self._plan(self._samples(items.tasks), retry_set, summary)
            semaphore = asyncio.Semaphore(self.config.concurrent_requests)
            if plan and self.config.warm_pool and self.config.uses_sandbox and self._pool is None:
                self._pool = WarmPool(self.config.warm_pool)
                self._pool.warm(self._sandbox_values(None))
            # every task is scheduled at once: concurrent_requests alone bounds how many run
            # (batch_size is the seed's and does not cap it: batch_size=1 with
            # concurrent_requests=4 runs 4 at a time, as the seed's does)
            jobs = [
                asyncio.ensure_future(self._guarded_group(group, semaphore, on_event))
                if len(group) > 1
                else asyncio.ensure_future(self._guarded_one(*group[0], semaphore, on_event))
                for group in self._groups(plan)
            ]
            try:
                finished = await asyncio.gather(*jobs)
            except BaseException:
                # a cancellation (signal) or an exception escaping a hook: stop the others and
                # let each close its sandbox before the leftovers are removed below
                for job in jobs:
                    job.cancel()
                await asyncio.gather(*jobs, return_exceptions=True)
                raise
            summary.trajectories = [t for done in finished for t in done]
            interrupted = False
        finally:
            try:
                if self._pool is not None:
                    pool, self._pool = self._pool, None
                    await pool.close()
            finally:
                if self.store is not None:
                    self.store.release()
                if interrupted:
                    await asyncio.shield(self.remove_sandboxes())
        log.info(
            "run %s: %d run, %d skipped, %d retried",
            self.run_id,
            len(summary.trajectories),
            len(summary.skipped),
            len(summary.retried),
        )
        return summary

    def prepare(self, tasks: Iterable[Task | dict[str, Any] | str]) -> _Prepared:
        """Tasks from any accepted shape; a repeated explicit id is an error, identical tasks
        (same content id) run once with a warning."""
        out = _Prepared()
        seen: dict[str, Task] = {}
        duplicates: set[str] = set()
        for i, raw in enumerate(tasks):
            task = Task.from_any(raw, index=i)
            if task.id in seen:
                if task.id_from_content and seen[task.id].id_from_content:
                    out.deduplicated.append(task.id)
                    log.warning(
                        "task %s is given more than once with identical content: it runs once",
                        task.id,
                    )
                else:
                    duplicates.add(task.id)
                continue
            seen[task.id] = task
            out.tasks.append(task)
        if duplicates:
            raise TaskError(f"duplicate task ids: {', '.join(sorted(duplicates))}")
        return out

    def _samples(self, tasks: list[Task]) -> list[Task]:
        """Each task as ``group_size`` samples ``id#i`` (itself when group_size is 1)."""
        n = self.config.group_size
        if n == 1:
            return tasks
        return [
            t.model_copy(
                update={
                    "id": f"{t.id}#{i}",
                    "metadata": {**t.metadata, "group": {"id": t.id, "index": i, "size": n}},
                }
            )
            for t in tasks
            for i in range(n)
        ]

    def _groups(self, plan: list[tuple[Task, int]]) -> list[list[tuple[Task, int]]]:
        """The plan's samples of one task together when they share a setup (one sandbox
        prepared, then forked); every other sample on its own."""
        groups: dict[str, list[tuple[Task, int]]] = {}
        out: list[list[tuple[Task, int]]] = []
        for task, attempt in plan:
            group = task.metadata.get("group")
            if group is None or not task.setup or not self.config.uses_sandbox:
                out.append([(task, attempt)])
                continue
            if group["id"] not in groups:
                groups[group["id"]] = []
                out.append(groups[group["id"]])
            groups[group["id"]].append((task, attempt))
        return out

    def _plan(
        self, tasks: list[Task], retry: frozenset[str], summary: RunSummary
    ) -> list[tuple[Task, int]]:
        """(task, attempt) for each task to run; fills the summary's skipped/retried."""
        records = self.store.records() if self.store is not None else {}
        plan: list[tuple[Task, int]] = []
        for task in tasks:
            rec = records.get(task.id)
            if rec is None:
                plan.append((task, 1))
            elif rec.outcome.value in retry:
                summary.retried[task.id] = rec.outcome.value
                plan.append((task, rec.attempt + 1))
            else:
                summary.skipped.append(task.id)
                summary.skipped_outcomes[task.id] = rec.outcome.value
        return plan

    async def preflight(self, tasks: Iterable[Task | dict[str, Any] | str] = ()) -> None:
        """Check the setup for these tasks (see :mod:`orchestrator.preflight`); raises
        :class:`~orchestrator.exceptions.PreflightError` listing every problem."""

        items = [Task.from_any(t) for t in tasks]
        await run_preflight(
            sandbox=self.config.sandbox.as_dict() if self.config.uses_sandbox else None,
            tasks=items,
            agent=self._agent,
            llm=self.llm,
            output=self.config.trajectory_file,
        )
        self._agent_checked = True

    async def remove_sandboxes(self) -> int:
        """Remove every Docker container (Kubernetes pod) labelled with this run's id, after
        an interruption: a sandbox being torn down when the signal came may not have closed."""
        settings = self.config.sandbox
        try:
            if isinstance(settings, DockerSandboxConfig):
                reaped: list[Any] = await asyncio.to_thread(
                    reap_docker, docker_host=settings.docker_host, run_id=self.run_id
                )
            elif isinstance(settings, KubernetesSandboxConfig):
                reaped = await asyncio.to_thread(reap_kubernetes, settings, run_id=self.run_id)
            else:
                return 0
        except Exception as exc:  # the engine may be what failed: say so, do not mask the cause
            log.error("run %s: could not remove its sandboxes: %s", self.run_id, exc)
            return 0
        if reaped:
            log.info("run %s: removed %d leftover sandbox(es)", self.run_id, len(reaped))
        return len(reaped)

    async def generate_sequences(self, prompts: Any) -> Any:
        """VERL: one trajectory per row of a ``DataProto``, returned as a ``DataProto`` with the
        rollout keys (needs the ``verl`` extra and a tokenizer; see
        :func:`orchestrator.verl_batch.generate_sequences`)."""
        return await generate_sequences(self, prompts)

    async def run_batch(self, tasks: Iterable[Task | dict[str, Any] | str]) -> list[Trajectory]:
        return (await self.run(tasks)).trajectories

    async def run_one(
        self, task: Task | dict[str, Any] | str, *, llm: LLMClient | None = None
    ) -> Trajectory:
        """Run one task now (no resume check, no preflight beyond the agent/LLM fit); a stored
        record is superseded only if its outcome is one that is retried."""
        task = Task.from_any(task)
        client = llm or self.llm
        if not self._agent_checked:
            problems = check_agent(self._agent, client)
            if problems:
                raise ConfigError(problems[0])
            self._agent_checked = llm is None
        rec = self.store.get(task.id) if self.store is not None else None
        attempt = 1 if rec is None else rec.attempt + 1
        self._active_retry = self._retry
        return await self._run_task(task, client, attempt=attempt)

    async def _guarded_one(
        self, task: Task, attempt: int, semaphore: asyncio.Semaphore, on_event: EventFn | None
    ) -> list[Trajectory]:
        return [await self._guarded(task, attempt, semaphore, on_event)]

    async def _guarded(
        self, task: Task, attempt: int, semaphore: asyncio.Semaphore, on_event: EventFn | None
    ) -> Trajectory:
        async with semaphore:
            if on_event:
                on_event("started", task, None)
            traj = await self._run_task(task, self.llm, attempt=attempt)
            if on_event:
                on_event("finished", task, traj)
            return traj

    async def _guarded_group(
        self,
        samples: list[tuple[Task, int]],
        semaphore: asyncio.Semaphore,
        on_event: EventFn | None,
    ) -> list[Trajectory]:
        """The samples of one task: its setup runs once, the prepared sandbox is forked once
        per sample, each sample runs in its own fork (any failure is every sample's error)."""
        async with semaphore:
            prepared = asyncio.ensure_future(self._prepare_group(samples[0][0], len(samples)))

            async def run(i: int, task: Task, attempt: int) -> Trajectory:
                async def acquire() -> tuple[Sandbox, dict[str, Any]]:
                    children, info = await asyncio.shield(prepared)
                    return children[i], info

                if on_event:
                    on_event("started", task, None)
                traj = await self._run_task(task, self.llm, attempt=attempt, acquire=acquire)
                if on_event:
                    on_event("finished", task, traj)
                return traj

            try:
                return list(
                    await asyncio.gather(*(run(i, t, a) for i, (t, a) in enumerate(samples)))
                )
            finally:
                if not prepared.done():
                    prepared.cancel()
                with contextlib.suppress(BaseException):  # each sample recorded its error
                    children, _ = await prepared
                    # close() is idempotent: this removes only forks no sample took
                    await asyncio.gather(*(c.close() for c in children))

    async def _prepare_group(self, task: Task, n: int) -> tuple[list[Sandbox], dict[str, Any]]:
        """Setup once, then n forks: the n children start while the setup runs, then the
        filesystem's changes since the parent started (and its sessions) stream into them,
        read once from the parent (fork ``into``), so the group is ready about as soon as the
        setup is done."""
        loop = asyncio.get_running_loop()
        values = self._sandbox_values(task)
        prestart = str(values.get("type", "docker")) != "local"
        blanks = [sandbox_config(values).build() for _ in range(n)] if prestart else []
        starting = [asyncio.ensure_future(start_cancel_safe(b)) for b in blanks]
        try:
            parent = await start_cancel_safe(sandbox_config(values).build())
            async with parent:
                t0 = loop.time()
                await self._run_setup(parent, task)
                t1 = loop.time()
                if prestart:
                    await asyncio.gather(*starting)
                    children = await parent.fork(n, into=blanks)
                else:
                    children = await parent.fork(n)
                info = {
                    "parent": parent.name,
                    "setup_seconds": round(t1 - t0, 3),
                    "fork_seconds": round(loop.time() - t1, 3),
                    "prestarted": prestart,
                }
        except BaseException:
            for start in starting:
                start.cancel()
            await asyncio.gather(*starting, return_exceptions=True)
            await asyncio.gather(*(b.close() for b in blanks), return_exceptions=True)
            raise
        log.debug("group %s: setup once in %s, forked %d", task.id, parent.name, n)
        return children, info

    async def _run_setup(self, sandbox: Sandbox, task: Task) -> None:
        await run_task_setup(sandbox, task)

    async def _run_task(
        self,
        task: Task,
        llm: LLMClient,
        *,
        attempt: int = 1,
        acquire: Callable[[], Awaitable[tuple[Sandbox, dict[str, Any]]]] | None = None,
    ) -> Trajectory:
        traj = Trajectory(request_id=task.id, agent_type=self._agent.name, attempt=attempt)
        traj.metadata["run_id"] = self.run_id
        log.debug("trajectory %s: start (attempt %d)", task.id, attempt)
        try:
            await asyncio.wait_for(
                self._execute(task, llm, traj, acquire), self.config.trajectory_timeout
            )
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
        traj.outcome = infer_outcome(traj)
        log.debug(
            "trajectory %s: %s (%s) after %.1fs, %d step(s), reward %s",
            task.id,
            traj.status.value,
            traj.outcome.value,
            traj.duration or 0.0,
            len(traj.steps),
            traj.reward,
        )
        if traj.outcome == Outcome.INFRA_ERROR and traj.errors:
            log.warning(
                "trajectory %s failed: %s: %s",
                task.id,
                traj.errors[-1].type,
                traj.errors[-1].message[:300],
            )
        metrics.trajectory_finished(traj)  # before the steps may be dropped below
        if not self.config.include_trajectory_in_output:
            traj.steps = []
            traj.messages = []
        if self.store is not None:
            rec = self.store.get(task.id)
            # only what this run chose to retry replaces its stored line; anything else stored
            # meanwhile is kept (the store refuses to write the id twice)
            supersede = rec is not None and rec.outcome.value in self._active_retry
            try:
                await self.store.aappend(traj, supersede=supersede)
            except StoreError as exc:  # disk full: keep it in memory, say so, go on with the rest
                log.error("trajectory %s not saved: %s", task.id, exc)
                traj.save_error = str(exc)
        return traj

    async def _execute(
        self,
        task: Task,
        llm: LLMClient,
        traj: Trajectory,
        acquire: Callable[[], Awaitable[tuple[Sandbox, dict[str, Any]]]] | None = None,
    ) -> None:
        if "group" in task.metadata:
            traj.metadata["group"] = dict(task.metadata["group"])
        only = self.config.tools.names
        tools = self.tools.fork(self.config.tools.config, only=only)
        if not self.config.uses_sandbox:
            await self._agent.run(task, llm, tools, None, trajectory=traj)
            if self.after_agent is not None:
                await self.after_agent(task, traj, None)
            return
        values = self._sandbox_values(task)
        if acquire is not None:  # a fork of the group's prepared sandbox: setup already ran
            sandbox, info = await acquire()
            traj.metadata["group"].update(info, forked=True)
        elif self._pool is not None:
            traj.metadata["warm_pool"] = self._pool.ready(values) > 0
            sandbox = await self._pool.acquire(values)
        else:
            sandbox = await start_cancel_safe(sandbox_config(values).build())
        async with sandbox:  # closed (destroyed) whatever happens; never reused
            traj.metadata["sandbox"] = sandbox.name
            log.debug("trajectory %s: sandbox %s ready", task.id, sandbox.name)
            # admission wait of this trajectory's start (0 for a warm pool's sandbox)
            traj.metadata["queue_wait"] = (
                0.0 if traj.metadata.get("warm_pool") else round(sandbox.queue_seconds, 4)
            )
            if acquire is None:
                await self._run_setup(sandbox, task)
            await self._agent.run(task, llm, tools, sandbox, trajectory=traj)
            if self.after_agent is not None:
                await self.after_agent(task, traj, sandbox)

    def _sandbox_values(self, task: Task | None) -> dict[str, Any]:
        values = {**self.config.sandbox.as_dict(), **(task.sandbox if task is not None else {})}
        if values.get("type", "docker") in ("docker", "kubernetes"):
            values.setdefault("run_id", self.run_id)
        return values


async def start_cancel_safe(sandbox: Sandbox) -> Sandbox:
    """``sandbox.start()``, but a cancellation (a signal) while it starts waits for the start
    to finish and removes what it made: the backend creates the container in a thread that a
    cancellation does not stop, so otherwise it would appear after everyone stopped looking."""
    start = asyncio.ensure_future(sandbox.start())
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        try:
            await start
        except BaseException:  # a failed start closed itself
            pass
        await sandbox.close()
        raise


@dataclass
class _Prepared:
    tasks: list[Task] = field(default_factory=list)
    deduplicated: list[str] = field(default_factory=list)


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
