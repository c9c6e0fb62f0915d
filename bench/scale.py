"""``bench scale``: N concurrent sandboxes running trajectories, N = 8, 32, 64.

Each trajectory is driven by a simulated model that answers after ``latency`` seconds (a
remote LLM's turn) with one tool call from a fixed mix - bash commands, editor create / view /
str_replace, search - for ``tool_calls`` turns, then a final answer. Trajectories run through
the real stack: ``AgenticRollout`` (tool registry fork, the ``tool`` agent, Docker sandbox,
RPC, tools), ``trajectories`` of them per level with ``concurrency`` at once.

Per level it reports trajectories/min, tool calls/s, the orchestrator process's CPU per tool
call (user + system time of this process over the level, divided by its tool calls: the LLM
simulation is a sleep, so this is our overhead - agent loop, tools, RPC, Docker API calls to
start and remove sandboxes), peak host memory above the baseline, memory per sandbox (cgroup
usage of the containers at the busiest sample), and containers left afterwards (must be 0).
It also reports the whole machine's CPU per tool call (``bench/sysstat.py``) and where it went:
orchestrator / engine (dockerd, containerd, shims) / sandboxes (containers' cgroups) / rest
(kernel, short-lived helpers, anything else running).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench import sysstat
from orchestrator.config import AgenticRolloutConfig
from orchestrator.llm import LLMResponse, ToolCall
from orchestrator.runner import AgenticRollout
from orchestrator.sandbox.docker import docker_api
from orchestrator.sandbox.labels import LABEL_RUN
from orchestrator.trajectory import StepType


def _call(name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return name, args


#: one trajectory's tool calls, cycled; paths are per trajectory workspace files
MIX: list[tuple[str, dict[str, Any]]] = [
    _call("bash", {"command": "ls -la / | head -5"}),
    _call(
        "str_replace_editor",
        {
            "command": "create",
            "path": "/workspace/app.py",
            "file_text": "def add(a, b):\n    return a - b\n\n" + "# filler line\n" * 200,
        },
    ),
    _call("str_replace_editor", {"command": "view", "path": "/workspace/app.py"}),
    _call("search", {"command": "grep", "pattern": "def add", "path": "/workspace"}),
    _call(
        "str_replace_editor",
        {
            "command": "str_replace",
            "path": "/workspace/app.py",
            "old_str": "return a - b",
            "new_str": "return a + b",
        },
    ),
    _call("bash", {"command": "cd /workspace && python3 -c 'import app; print(app.add(2, 3))'"}),
    _call("bash", {"command": "echo $RANDOM > /workspace/r.txt && cat /workspace/r.txt"}),
    _call("search", {"command": "search_dir", "pattern": "filler", "path": "/workspace"}),
]


class SimulatedLLM:
    """Answers after ``latency`` seconds: the next tool call of the mix, then a final answer."""

    supports_tools = True

    def __init__(self, latency: float, tool_calls: int) -> None:
        self.latency = latency
        self.tool_calls = tool_calls

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        await asyncio.sleep(self.latency)
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if turn >= self.tool_calls:
            return LLMResponse(content="All done.", finish_reason="stop")
        name, args = MIX[turn % len(MIX)]
        return LLMResponse(
            content=None,
            tool_calls=[ToolCall(id=f"call_{turn}", name=name, arguments=json.dumps(args))],
            finish_reason="tool_calls",
        )


def _mem_used() -> int:
    info: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _level(
    concurrency: int,
    *,
    trajectories: int,
    latency: float,
    tool_calls: int,
    image: str,
) -> dict[str, Any]:
    run_id = f"bench-scale-{uuid.uuid4().hex[:6]}"
    config = AgenticRolloutConfig(
        agent_type="tool",
        tools=["bash", "str_replace_editor", "search"],
        max_steps=tool_calls + 1,
        concurrent_requests=concurrency,
        batch_size=trajectories,
        save_trajectories=False,
        include_trajectory_in_output=True,
        sandbox={
            "type": "docker",
            "image": image,
            "run_id": run_id,
            "memory": "256m",
            "pids_limit": 256,
        },
    )
    rollout = AgenticRollout(config, llm_client=SimulatedLLM(latency, tool_calls), reward_fn=None)
    api = docker_api()
    samples: list[tuple[int, int, int]] = []  # (host used bytes, containers, cgroup bytes)
    stop = asyncio.Event()

    sampler_cpu = [0.0]  # the sampler is the benchmark's, not the orchestrator's: excluded

    def sample() -> tuple[int, int, int]:
        c0 = time.thread_time()
        live = api.containers(filters={"label": f"{LABEL_RUN}={run_id}"})
        usage = [sysstat.cgroup_memory(c["Id"]) for c in live]
        out = _mem_used(), len(live), sum(u for u in usage if u)
        sampler_cpu[0] += time.thread_time() - c0
        return out

    async def sampler() -> None:
        while not stop.is_set():
            samples.append(await asyncio.to_thread(sample))
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass

    baseline = _mem_used()
    tasks = [{"id": f"s{i}", "prompt": "fix add()"} for i in range(trajectories)]
    cpu0, t0 = _cpu(), time.perf_counter()
    watcher = asyncio.create_task(sampler())
    meter = sysstat.SystemMeter()
    try:
        with meter if sysstat.available() else contextlib.nullcontext():
            summary = await rollout.run(tasks)
    finally:
        stop.set()
        await watcher
    wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0 - sampler_cpu[0]
    trajs = summary.trajectories
    calls = sum(1 for t in trajs for s in t.steps if s.step_type == StepType.TOOL_RESULT)
    failed = sum(
        1 for t in trajs for s in t.steps if s.step_type == StepType.TOOL_RESULT and not s.success
    )
    leaked = len(api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}))
    api.close()
    busiest = max(samples, key=lambda s: s[1]) if samples else (baseline, 0, 0)
    tool_seconds = [
        s.duration
        for t in trajs
        for s in t.steps
        if s.step_type == StepType.TOOL_RESULT and s.duration
    ]
    system = {}
    if meter.split is not None:
        system = {f"sys_{k}_per_tool_call": v for k, v in meter.split.per(calls).items()}
    return {
        **system,
        "concurrency": concurrency,
        "trajectories": len(trajs),
        "completed": sum(1 for t in trajs if t.status.value == "completed"),
        "tool_calls": calls,
        "failed_tool_calls": failed,
        "wall_s": wall,
        "trajectories_per_min": len(trajs) / wall * 60,
        "tool_calls_per_s": calls / wall,
        "cpu_s": cpu,
        "cpu_per_tool_call_ms": cpu / max(calls, 1) * 1000,
        "tool_call_p50_ms": statistics.median(tool_seconds) * 1000 if tool_seconds else None,
        "peak_host_mem_mb": (max(s[0] for s in samples) - baseline) / 2**20 if samples else None,
        "peak_live_sandboxes": busiest[1],
        "mem_per_sandbox_mb": busiest[2] / busiest[1] / 2**20 if busiest[1] else None,
        "leaked": leaked,
        "statuses": summary.by_status,
    }


async def run(
    *,
    levels: tuple[int, ...] = (8, 32, 64),
    per_slot: int = 2,
    latency: float = 0.2,
    tool_calls: int = 20,
    image: str = "agentic-rollout/sandbox:latest",
) -> dict[str, Any]:
    # one short level first: imports and the daemon's first container are not steady state
    await _level(2, trajectories=2, latency=0.0, tool_calls=len(MIX), image=image)
    results = []
    for n in levels:
        results.append(
            await _level(
                n,
                trajectories=n * per_slot,
                latency=latency,
                tool_calls=tool_calls,
                image=image,
            )
        )
    return {
        "image": image,
        "latency_s": latency,
        "tool_calls_per_trajectory": tool_calls,
        "cpu_count": os.cpu_count(),
        "levels": results,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for lv in result["levels"]:
        lines.append(
            f"concurrency={lv['concurrency']} traj_per_min={lv['trajectories_per_min']:.1f} "
            f"tool_calls_per_s={lv['tool_calls_per_s']:.1f} "
            f"cpu_per_tool_call_ms={lv['cpu_per_tool_call_ms']:.3f} "
            f"tool_call_p50_ms={lv['tool_call_p50_ms']:.1f} "
            f"peak_host_mem_mb={lv['peak_host_mem_mb']:.0f} "
            f"mem_per_sandbox_mb={lv['mem_per_sandbox_mb'] or 0:.1f} "
            f"completed={lv['completed']}/{lv['trajectories']} leaked={lv['leaked']}"
        )
        if "sys_total_ms_per_tool_call" in lv:
            lines.append(
                "  system-wide CPU per tool call (ms): "
                + " ".join(
                    f"{k}={lv[f'sys_{k}_ms_per_tool_call']:.3f}"
                    for k in ("total", "orchestrator", "engine", "sandboxes", "rest")
                )
            )
    top = result["levels"][-1]
    lines.append(
        f"max_concurrency={top['concurrency']} traj_per_min={top['trajectories_per_min']:.1f} "
        f"tool_calls_per_s={top['tool_calls_per_s']:.1f} "
        f"cpu_per_tool_call_ms={top['cpu_per_tool_call_ms']:.3f} "
        f"leaked={sum(lv['leaked'] for lv in result['levels'])}"
    )
    return lines
