"""``bench soak``: many trajectories in real Docker sandboxes with random injected faults.

Each trajectory is driven by the scripted model (two turns: a bash call, then an answer). A
fraction of them get one fault: the container killed, the agent killed (from the host: it is the
container's PID 1), a transient LLM 500 (retried), a tool call that times out, a call to an
unknown tool. Afterwards it counts what matters for a training run: trajectories written, lost
(started but never written), duplicated (written twice) and leaked (containers left), plus the
error kinds. Bounded: it stops scheduling after ``seconds``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import LLMServerError
from orchestrator.runner import AgenticRollout
from orchestrator.sandbox.docker import docker_api
from orchestrator.sandbox.labels import LABEL_RUN
from orchestrator.tasks import Task
from orchestrator.testing import ScriptedLLM, tool_call
from orchestrator.trajectory import Trajectory

FAULTS = ("container_kill", "agent_kill", "llm_500", "tool_timeout", "unknown_tool")


def _kill(run_id: str, mark: str, agent: bool) -> None:
    api = docker_api()
    try:
        for c in api.containers(filters={"label": f"{LABEL_RUN}={run_id}"}):
            info = api.inspect_container(c["Id"])
            if f"TASK_MARK={mark}" in (info["Config"]["Env"] or []):
                if agent:
                    os.kill(info["State"]["Pid"], signal.SIGKILL)
                else:
                    api.kill(c["Id"])
                return
    finally:
        api.close()


def _script(kind: str | None, mark: str, run_id: str) -> list[Any]:
    work = tool_call("bash", {"command": "echo work; ls / | wc -l"})
    if kind in ("container_kill", "agent_kill"):

        def fault(messages: list[dict[str, Any]], kind: str = kind) -> Any:
            _kill(run_id, mark, agent=kind == "agent_kill")
            return work

        return [fault, "done"]
    if kind == "llm_500":
        state = {"failed": False}

        def flaky(messages: list[dict[str, Any]]) -> Any:
            if not state["failed"]:
                state["failed"] = True
                raise LLMServerError("injected 500", status=500)
            return work

        return [flaky, "done"]
    if kind == "tool_timeout":
        return [tool_call("bash", {"command": "sleep 30", "timeout": 1}), "done"]
    if kind == "unknown_tool":
        return [tool_call("teleport", {}), "done"]
    return [work, "done"]


async def run(
    *,
    trajectories: int = 500,
    fault_rate: float = 0.12,
    concurrency: int = 16,
    seconds: float = 600.0,
    seed: int = 7,
    image: str = "agentic-rollout/sandbox:latest",
) -> dict[str, Any]:
    rng = random.Random(seed)
    run_id = f"soak-{uuid.uuid4().hex[:8]}"
    out = Path(tempfile.mkdtemp(prefix="agentic-soak-")) / "trajectories.jsonl"
    injected: dict[str, str] = {}
    scripts: dict[str, list[Any]] = {}
    tasks = []
    for i in range(trajectories):
        mark = f"s{i}"
        kind = rng.choice(FAULTS) if rng.random() < fault_rate else None
        if kind:
            injected[mark] = kind
        scripts[f"soak job {mark}:"] = _script(kind, mark, run_id)
        tasks.append(
            Task(id=mark, prompt=f"soak job {mark}: go", sandbox={"env": {"TASK_MARK": mark}})
        )
    config = AgenticRolloutConfig(
        agent_type="tool",
        concurrent_requests=concurrency,
        batch_size=trajectories,
        trajectory_save_path=str(out),
        sandbox={"type": "docker", "image": image, "run_id": run_id, "memory": "256m"},
        retry={"max_attempts": 3, "initial_wait": 0.01, "max_wait": 0.05},
        trajectory_timeout=120,
    )
    started: set[str] = set()
    deadline = time.monotonic() + seconds

    def on_event(kind: str, task: Task, traj: Trajectory | None) -> None:
        if kind == "started":
            started.add(task.id)

    rollout = AgenticRollout(config, llm_client=ScriptedLLM.by_prompt(scripts))
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(
            rollout.run(tasks, on_event=on_event), max(1.0, deadline - time.monotonic())
        )
        timed_out = False
    except asyncio.TimeoutError:
        timed_out = True  # bounded: running trajectories were cancelled, their sandboxes closed
    elapsed = time.monotonic() - t0
    ids = (
        [json.loads(line)["request_id"] for line in out.read_text().splitlines()]
        if out.exists()
        else []
    )
    written = set(ids)
    errors: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines() if out.exists() else []:
        data = json.loads(line)
        statuses[data["status"]] += 1
        for err in data["errors"]:
            errors[err["type"]] += 1
    api = docker_api()
    try:
        leaked = len(api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}))
    finally:
        api.close()
    cancelled = started - written if timed_out else set()
    return {
        "trajectories": len(written),
        "requested": trajectories,
        "injected_faults": len(injected),
        "faults_by_kind": dict(collections.Counter(injected.values())),
        "lost": len(started - written - cancelled),
        "cancelled_at_deadline": len(cancelled),
        "duplicated": len(ids) - len(written),
        "leaked": leaked,
        "statuses": dict(statuses),
        "errors_by_kind": dict(errors),
        "seconds": round(elapsed, 1),
        "trajectories_per_min": round(len(written) / elapsed * 60, 1) if elapsed else 0.0,
        "output": str(out),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    kinds = ",".join(f"{k}:{v}" for k, v in sorted(result["errors_by_kind"].items())) or "none"
    return [
        f"injected_faults={result['injected_faults']} seconds={result['seconds']} "
        f"trajectories_per_min={result['trajectories_per_min']} statuses={result['statuses']}",
        f"trajectories={result['trajectories']} lost={result['lost']} "
        f"duplicated={result['duplicated']} leaked={result['leaked']} errors_by_kind={kinds}",
    ]
