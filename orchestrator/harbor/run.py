"""Running Harbor tasks: build the environment offline, run the agent, then the verifier.

Per task: the environment image is built once (``docker build --network none``, tagged by a
hash of ``environment/``; a ``FROM`` of a local image needs no registry), a sandbox of it runs
the agent - which sees neither ``tests/`` nor ``solution/``, they are not in the image - with
the agent timeout of task.toml, then ``tests/`` is copied to ``/tests`` and ``bash
/tests/test.sh`` runs in the same sandbox with the verifier timeout, and the reward is read from
``/logs/verifier/reward.txt`` (a number) or ``reward.json``. Whatever goes wrong in the
verifier (no reward written, a reward that is not a number, a timeout) is reward 0 with the
reason in ``reward_details``, never an exception. ``/logs/verifier`` is emptied before the
verifier runs so a reward the agent wrote itself does not count.

``--oracle`` swaps the model for ``solution/solve.sh``; :func:`validate` checks that the oracle
passes and that doing nothing fails.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.base import BaseAgent
from agents.registry import make_agent
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import TaskError
from orchestrator.harbor.task import HarborTask, load_harbor_task
from orchestrator.llm import CallableClient, LLMClient
from orchestrator.runner import AgenticRollout, RunSummary
from orchestrator.sandbox.base import ExecResult, Sandbox
from orchestrator.tasks import Task
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus, TrajectoryStep
from tools.registry import ToolRegistry

REWARD_DIR = "/logs/verifier"
HARBOR_TOOLS = ["bash", "str_replace_editor"]
_build_locks: dict[str, asyncio.Lock] = {}


# ---- the environment image


async def _docker(*args: str, timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "docker",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {timeout:g}s"
    return proc.returncode or 0, out.decode("utf-8", "replace")


async def ensure_image(task: HarborTask) -> str:
    """The task's image, built offline when its tag is missing; TaskError names the cause."""
    tag = task.image_tag()
    lock = _build_locks.setdefault(tag, asyncio.Lock())
    async with lock:  # tasks sharing one environment build it once
        code, _ = await _docker("image", "inspect", tag, timeout=60)
        if code == 0:
            return tag
        if task.docker_image:
            raise TaskError(
                f"harbor task {task.name}: image {tag} (task.toml docker_image) is not on this "
                "Docker engine; images are never pulled: load or build it first"
            )
        code, out = await _docker(
            "build",
            "--network",
            "none",
            "-t",
            tag,
            str(task.environment_dir),
            timeout=task.build_timeout,
        )
        if code != 0:
            tail = "\n".join(out.strip().splitlines()[-15:])
            raise TaskError(
                f"harbor task {task.name}: building environment/ failed (exit {code}; builds run "
                f"offline, so a FROM must name a local image):\n{tail}"
            )
        return tag


# ---- the verifier


@dataclass
class Verdict:
    reward: float
    reason: str | None
    source: str | None
    exit_code: int | None
    output: str

    def details(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "reason": self.reason,
            "reward_file": self.source,
            "test_exit_code": self.exit_code,
            "verifier_output": self.output[-4000:],
        }


def _reward_from_json(text: str) -> float:
    data = json.loads(text)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return float(data)
    if isinstance(data, dict):
        if isinstance(data.get("reward"), (int, float)):
            return float(data["reward"])
        numbers = [v for v in data.values() if isinstance(v, (int, float))]
        if len(numbers) == 1:
            return float(numbers[0])
    raise ValueError(
        'expected a number, {"reward": number} or an object with one number, got '
        f"{text.strip()[:120]!r}"
    )


async def verify(task: HarborTask, sandbox: Sandbox) -> Verdict:
    """Copy tests/ to /tests, run test.sh, read the reward it wrote."""
    prep = await sandbox.exec(
        f"rm -rf /tests {REWARD_DIR} && mkdir -p {REWARD_DIR} /logs/agent", timeout=60
    )
    if prep.exit_code != 0:
        why = f"could not prepare /tests and {REWARD_DIR}: {prep.stderr.strip()[-500:]}"
        return Verdict(0.0, why, None, None, "")
    await put_dir(sandbox, task.tests_dir, "/tests")
    result = await sandbox.exec(
        "bash /tests/test.sh", timeout=task.verifier_timeout, env=task.verifier_env or None
    )
    output = _output(result)
    if result.timed_out:
        return Verdict(
            0.0,
            f"test.sh did not finish within the verifier timeout ({task.verifier_timeout:g}s)",
            None,
            result.exit_code,
            output,
        )
    for name in ("reward.txt", "reward.json"):
        path = f"{REWARD_DIR}/{name}"
        if not await sandbox.exists(path):
            continue
        text = (await sandbox.read_file(path, length=65536)).decode("utf-8", "replace")
        try:
            value = float(text.strip()) if name == "reward.txt" else _reward_from_json(text)
        except ValueError as exc:
            why = f"{text.strip()[:80]!r} is not a number" if name == "reward.txt" else str(exc)
            return Verdict(0.0, f"{path}: {why}", name, result.exit_code, output)
        return Verdict(value, None, name, result.exit_code, output)
    return Verdict(
        0.0,
        f"test.sh wrote no reward: neither {REWARD_DIR}/reward.txt nor reward.json exists "
        f"(test.sh exit code {result.exit_code})",
        None,
        result.exit_code,
        output,
    )


async def put_dir(sandbox: Sandbox, src: Path, dest: str) -> None:
    """Copy host folder ``src`` to ``dest`` (replacing it). Staged under /tmp and moved, since
    the agent's tar.put refuses "/" as a destination."""
    stage = f"/tmp/.agentic-harbor-{uuid.uuid4().hex[:8]}"
    await sandbox.mkdir(stage)
    await sandbox.upload(src, stage)
    moved = await sandbox.exec(
        f"rm -rf {dest} && mv {stage}/{src.name} {dest} && rmdir {stage}", timeout=60
    )
    if moved.exit_code != 0:
        raise TaskError(f"could not put {src.name}/ at {dest}: {moved.stderr.strip()[-300:]}")


def _output(result: ExecResult) -> str:
    return result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr.strip() else "")


def _harbor_task(task: Task) -> HarborTask:

    data = task.metadata.get("harbor") or {}
    if "path" not in data:
        raise TaskError(f"task {task.id} is not a Harbor task")
    return load_harbor_task(data["path"])


async def _after_agent(task: Task, traj: Trajectory, sandbox: Sandbox | None) -> None:
    if sandbox is None or sandbox.rpc.closed:
        traj.reward_details = {
            "reward": 0.0,
            "reason": "the verifier did not run: the sandbox was gone when the agent ended",
        }
        return
    verdict = await verify(_harbor_task(task), sandbox)
    traj.reward_details = verdict.details()


def harbor_reward(task: Task, traj: Trajectory) -> float:
    details = traj.reward_details
    if "reward" not in details:
        last = traj.errors[-1] if traj.errors else None
        details["reward"] = 0.0
        details["reason"] = "the verifier did not run" + (
            f": {last.type}: {last.message}" if last else ""
        )
    return float(details["reward"])


# ---- policies


class TimedAgent(BaseAgent):
    """Any agent under the task's [agent] timeout_sec; on timeout the verifier still runs."""

    def __init__(self, inner: BaseAgent, timeouts: dict[str, float]) -> None:
        super().__init__(inner.config)
        self.inner = inner
        self.timeouts = timeouts
        self.name = inner.name  # type: ignore[misc]

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
        limit = self.timeouts.get(task.id)
        try:
            return await asyncio.wait_for(
                self.inner.run(task, llm, tools, sandbox, trajectory=traj), limit
            )
        except asyncio.TimeoutError:
            traj.metadata["agent_timeout"] = limit
            traj.add_error(f"agent exceeded the task's timeout of {limit:g}s", type_="AgentTimeout")
            traj.finish(TrajectoryStatus.TIMEOUT)
            return traj


class OracleAgent(BaseAgent):
    """The reference policy: copy solution/ to /solution and run ``bash solution/solve.sh``."""

    name = "oracle"

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
        traj.agent_type = self.name
        htask = _harbor_task(task)
        traj.add_step(TrajectoryStep(step_type=StepType.OBSERVATION, content=task.prompt_text()))
        if sandbox is None:
            raise TaskError("the oracle needs a sandbox")
        if not htask.has_solution:
            traj.add_error(f"harbor task {htask.name} has no solution/solve.sh", type_="NoSolution")
            traj.finish(TrajectoryStatus.ERROR)
            return traj
        await put_dir(sandbox, htask.solution_dir, "/solution")
        command = "bash /solution/solve.sh"
        traj.add_step(
            TrajectoryStep(
                step_type=StepType.TOOL_CALL,
                turn=1,
                tool_name="bash",
                tool_call_id="oracle",
                tool_args={"command": command},
                content=json.dumps({"command": command}),
            )
        )
        result = await sandbox.exec(command, timeout=htask.agent_timeout)
        traj.add_step(
            TrajectoryStep(
                step_type=StepType.TOOL_RESULT,
                turn=1,
                tool_name="bash",
                tool_call_id="oracle",
                content=_output(result),
                success=result.exit_code == 0 and not result.timed_out,
                tool_result={"exit_code": result.exit_code, "timed_out": result.timed_out},
            )
        )
        traj.finish(
            TrajectoryStatus.TIMEOUT if result.timed_out else TrajectoryStatus.COMPLETED,
            f"solve.sh exited {result.exit_code}",
        )
        return traj


class EmptyAgent(BaseAgent):
    """Does nothing: the verifier must fail on the untouched environment (``validate``)."""

    name = "empty"

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
        traj.agent_type = self.name
        traj.finish(TrajectoryStatus.COMPLETED, "")
        return traj


# ---- runs


def harbor_config(
    config: AgenticRolloutConfig, tasks: Sequence[HarborTask]
) -> AgenticRolloutConfig:
    """The run's config with room for each task's agent + verifier time, and the Harbor tools
    (bash, editor) unless the config names its own."""
    budget = max((t.agent_timeout + t.verifier_timeout for t in tasks), default=0.0) + 120.0
    update: dict[str, Any] = {"trajectory_timeout": max(config.trajectory_timeout, budget)}
    if config.tools.names is None:
        update["tools.names"] = HARBOR_TOOLS
    if not config.uses_sandbox:
        raise TaskError("harbor tasks run in a sandbox: --backend none cannot run them")
    return config.preset(**update)


async def build_images(
    tasks: Sequence[HarborTask], *, concurrency: int = 2
) -> tuple[list[HarborTask], list[str]]:
    """Build every task's image (a few at a time); tasks whose build failed are returned as
    messages."""
    gate = asyncio.Semaphore(concurrency)

    async def one(t: HarborTask) -> str | None:
        async with gate:
            try:
                await ensure_image(t)
            except TaskError as exc:
                return str(exc)
            return None

    results = await asyncio.gather(*(one(t) for t in tasks))
    ok = [t for t, err in zip(tasks, results, strict=True) if err is None]
    return ok, [err for err in results if err is not None]


def _quiet_llm() -> LLMClient:
    """Oracle and empty policies never call a model; this client says so if one tries."""

    def refuse(messages: Any, **kwargs: Any) -> str:
        raise TaskError("the oracle/empty policies do not call a model")

    return CallableClient(refuse)


async def run_harbor(
    tasks: Sequence[HarborTask],
    config: AgenticRolloutConfig,
    *,
    policy: str = "model",
    llm_client: LLMClient | None = None,
    on_event: Any = None,
) -> RunSummary:
    """Run ``tasks`` with the configured agent (``policy="model"``), the oracle or the empty
    policy; images must exist (:func:`build_images`)."""
    cfg = harbor_config(config, tasks)
    if policy == "oracle":
        agent: BaseAgent = OracleAgent(cfg.agent_config())
    elif policy == "empty":
        agent = EmptyAgent(cfg.agent_config())
    else:
        agent = make_agent(cfg.agent_type, cfg.agent_config())
    timed = TimedAgent(agent, {t.name: t.agent_timeout for t in tasks})
    rollout = AgenticRollout(
        cfg,
        llm_client=llm_client or (_quiet_llm() if policy != "model" else None),
        reward_fn=harbor_reward,
        agent=timed,
        reward_all=True,
        after_agent=_after_agent,
    )
    return await rollout.run([t.to_task() for t in tasks], on_event=on_event)


@dataclass
class Validation:
    task: str
    oracle: float | None
    empty: float | None
    ok: bool
    reason: str


async def validate(tasks: Sequence[HarborTask], config: AgenticRolloutConfig) -> list[Validation]:
    """Each task: the oracle must score 1, doing nothing must score below 1."""
    cfg = config.model_copy(update={"save_trajectories": False})
    runnable = [t for t in tasks if t.has_solution]
    oracle = await run_harbor(runnable, cfg, policy="oracle")
    empty = await run_harbor(runnable, cfg, policy="empty")
    by_o = {t.request_id: t for t in oracle.trajectories}
    by_e = {t.request_id: t for t in empty.trajectories}
    out: list[Validation] = []
    for t in tasks:
        if not t.has_solution:
            out.append(Validation(t.name, None, None, False, "no solution/solve.sh to validate"))
            continue
        o, e = by_o[t.name], by_e[t.name]
        problems = []
        if (o.reward or 0.0) < 1.0:
            why = o.reward_details.get("reason") or (o.errors[-1].message if o.errors else "")
            problems.append(f"oracle scored {o.reward}" + (f" ({why})" if why else ""))
        if (e.reward or 0.0) >= 1.0:
            problems.append("doing nothing scores 1: the verifier passes an untouched environment")
        out.append(Validation(t.name, o.reward, e.reward, not problems, "; ".join(problems)))
    return out
