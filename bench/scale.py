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
import random
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orchestrator
from bench import sysstat
from orchestrator import admission
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import AgenticRolloutError, ConfigError
from orchestrator.llm import LLMResponse, ToolCall
from orchestrator.runner import AgenticRollout
from orchestrator.sandbox.base import Sandbox
from orchestrator.sandbox.docker import DockerSandboxConfig, docker_api
from orchestrator.trajectory import StepType

#: the run label of our containers; spelled out rather than imported because its module moved
#: (orchestrator.sandbox.labels), and ``python -m bench.scale`` also measures older checkouts
LABEL_RUN = "agentic-rollout.run"


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


# --- live mode: N sandboxes alive at once, tool calls across all of them ------------------------

#: hard cap on live sandboxes of one level: the bench must stay a bounded load on a shared host
MAX_SANDBOXES = 256
#: memory kept free for everything else on the machine while the level is alive
RESERVE_BYTES = 2 * 2**30
#: what one idle sandbox is assumed to cost before a level runs (measured ~10-20 MB on Docker;
#: generous so the headroom check refuses rather than swapping)
ESTIMATE_PER_SANDBOX = 64 * 2**20

_APP = "def add(a, b):\n    return a - b\n\n" + "# filler line\n" * 200

#: the realistic mix, at the sandbox API the tools call (the same RPCs as bash, the editor's
#: create / view, search): (name, operation)
LIVE_MIX: list[tuple[str, Callable[[Sandbox], Awaitable[Any]]]] = [
    ("ls", lambda s: s.run("ls -la / | head -5")),
    ("write", lambda s: s.write_file("/tmp/w/app.py", _APP)),
    ("view", lambda s: s.read_text("/tmp/w/app.py")),
    ("search", lambda s: s.search("/tmp/w", "def add")),
    ("python", lambda s: s.run("cd /tmp/w && python3 -c 'import app; print(app.add(2, 3))'")),
    ("echo", lambda s: s.run("echo $RANDOM > /tmp/w/r.txt && cat /tmp/w/r.txt")),
]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise ConfigError("/proc/meminfo has no MemAvailable")


def check_live_level(n: int, *, available: int | None = None) -> None:
    """Refuse a level that is out of bounds or would not fit the host's free memory."""
    if not 1 <= n <= MAX_SANDBOXES:
        raise ConfigError(f"bench scale: --sandboxes {n} is outside 1..{MAX_SANDBOXES}")
    free = _mem_available() if available is None else available
    need = n * ESTIMATE_PER_SANDBOX + RESERVE_BYTES
    if free < need:
        raise ConfigError(
            f"bench scale: {n} live sandboxes need about {need / 2**30:.1f} GiB free "
            f"({ESTIMATE_PER_SANDBOX // 2**20} MB each + {RESERVE_BYTES // 2**30} GiB reserve); "
            f"the host has {free / 2**30:.1f} GiB available"
        )


#: a level waits (at most SETTLE_MAX_S) until the machine is less busy than this, in cores: the
#: previous level's removals go on in the kernel (btrfs subvolume cleanup) after docker returns
SETTLE_BELOW_CORES = 1.0
SETTLE_MAX_S = 20.0


async def _settle() -> dict[str, float]:
    """Wait until the machine is quiet (or SETTLE_MAX_S passed): seconds waited and the busy
    cores of the last second, the load this level starts from."""
    t0 = time.perf_counter()
    while True:
        b0 = sysstat.machine_busy_seconds()
        await asyncio.sleep(1.0)
        busy = sysstat.machine_busy_seconds() - b0
        if busy < SETTLE_BELOW_CORES or time.perf_counter() - t0 >= SETTLE_MAX_S:
            return {"settle_s": time.perf_counter() - t0, "busy_cores": busy}


async def _idle(sandboxes: Sequence[Sandbox], seconds: float) -> dict[str, float]:
    """The machine's CPU while the sandboxes are alive and nobody calls them, per sandbox and
    second: what merely keeping them costs (agents, shims, dockerd's bookkeeping)."""
    with _meter(sandboxes) as meter:
        await asyncio.sleep(seconds)
    if not isinstance(meter, sysstat.SystemMeter) or meter.split is None:
        return {}
    window = len(sandboxes) * seconds  # sandbox-seconds
    return {f"idle_cpu_{k}_per_sandbox_s": v / window for k, v in meter.split.per(1).items()}


def _split(meter: sysstat.SystemMeter, units: int, prefix: str) -> dict[str, float]:
    if meter.split is None:
        return {}
    return {f"{prefix}_{k}": v for k, v in meter.split.per(units).items()}


def _meter(sandboxes: Sequence[Sandbox]) -> Any:
    """A meter narrowed to these sandboxes' containers (other work on the host is ``others``)."""
    if not sysstat.available():
        return contextlib.nullcontext()
    return sysstat.SystemMeter(
        containers=lambda: [getattr(s, "container_id", None) for s in sandboxes]
    )


async def _calls(
    sandboxes: Sequence[Sandbox],
    ops: list[tuple[str, Callable[[Sandbox], Awaitable[Any]]]],
    *,
    rounds: int,
    think: float,
    seed: int,
) -> dict[str, Any]:
    """Every sandbox makes ``rounds`` calls, ``think`` s apart (+-50 %, like a model's turn):
    returns latencies, failures and the machine's CPU split per call."""
    latencies: list[float] = []
    by_op: dict[str, list[float]] = {}
    failed = [0]
    failed_ops: list[str] = []

    async def one(i: int, sandbox: Sandbox) -> None:
        rng = random.Random(seed + i)
        # spread the first calls over one think time: N sandboxes do not fire at once
        await asyncio.sleep(rng.uniform(0, think))
        for r in range(rounds):
            name, op = ops[(i + r) % len(ops)]
            t0 = time.perf_counter()
            try:
                result = await op(sandbox)
            except Exception:  # counted, not fatal: a failed call is a figure of the bench
                result = None
            dt = time.perf_counter() - t0
            if result is None or getattr(result, "exit_code", 0) not in (0, None):
                failed[0] += 1
                failed_ops.append(name)
            latencies.append(dt)
            by_op.setdefault(name, []).append(dt)
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))

    t0 = time.perf_counter()
    with _meter(sandboxes) as meter:
        await asyncio.gather(*(one(i, s) for i, s in enumerate(sandboxes)))
    wall = time.perf_counter() - t0
    calls = len(latencies)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return {
        "calls": calls,
        "failed": failed[0],
        "wall_s": wall,
        "calls_per_s": calls / wall,
        "p50_ms": p50 * 1000 if p50 is not None else None,
        "p99_ms": p99 * 1000 if p99 is not None else None,
        "failed_ops": sorted(set(failed_ops)),
        "p50_ms_by_op": {k: statistics.median(v) * 1000 for k, v in sorted(by_op.items())},
        **(_split(meter, calls, "cpu") if isinstance(meter, sysstat.SystemMeter) else {}),
    }


def _own_containers(api: Any, run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.containers(
        all=True, filters={"label": f"{LABEL_RUN}={run_id}"}
    )
    return found


#: every live level's run label in this process: main() sweeps them once the event loop and
#: its threads are done (a start still in a thread when a level was interrupted creates its
#: container after the level's own sweep)
RUN_IDS: list[str] = []


def sweep(run_ids: Sequence[str]) -> int:
    """Remove the containers of these run labels (ours only); returns how many were found."""
    api = docker_api()
    found = 0
    try:
        for run_id in run_ids:
            for c in _own_containers(api, run_id):
                found += 1
                with contextlib.suppress(Exception):
                    api.remove_container(c["Id"], force=True)
    finally:
        api.close()
    return found


async def _start_cancel_safe(sandbox: Any) -> Any:
    """The runner's cancel-safe start (a level past its wall limit is cancelled while the
    backend still creates containers in threads: waited for and removed, never leaked). Looked
    up when used: the old code this bench also measures (210400e) named it privately."""
    from orchestrator import runner

    names = ("start_cancel_safe", "_start_cancel_safe")
    safe: Callable[[Any], Awaitable[Any]] = next(
        getattr(runner, n) for n in names if hasattr(runner, n)
    )
    return await safe(sandbox)


async def live_level(
    n: int,
    *,
    rounds: int = 30,
    think: float = 0.2,
    image: str = "agentic-rollout/sandbox:latest",
    max_seconds: float = 600.0,
    run_id: str | None = None,
    settle: bool = True,
) -> dict[str, Any]:
    """One level: start ``n`` sandboxes, keep them all alive through a trivial phase
    (``run("true")``) and a mix phase, then remove them; bounded by ``max_seconds`` of wall time
    (past it everything this level started is removed and the level fails)."""
    check_live_level(n)
    run_id = run_id or f"bench-live-{uuid.uuid4().hex[:6]}"
    RUN_IDS.append(run_id)
    # the process-wide admission allows 64 live Docker sandboxes by default; this level needs n
    # (starts in flight and the creation rate keep their defaults: they are part of the figure)
    admission.configure("docker", {"max_live": max(n, 64)})
    config = DockerSandboxConfig(image=image, run_id=run_id, memory="256m", pids_limit=256)
    sandboxes = [config.build() for _ in range(n)]
    api = docker_api()
    result: dict[str, Any] = {"sandboxes": n, "run_id": run_id}
    t_level = time.perf_counter()

    async def body() -> None:
        result["load_before"] = os.getloadavg()[0]
        if settle:
            result.update({f"start_{k}": v for k, v in (await _settle()).items()})
        used0 = _mem_used()
        t0 = time.perf_counter()
        with _meter(sandboxes) as meter:
            await asyncio.gather(*(_start_cancel_safe(s) for s in sandboxes))
        result["start_wall_s"] = time.perf_counter() - t0
        if isinstance(meter, sysstat.SystemMeter):
            result.update(_split(meter, n, "start_cpu"))
        # the mix's file exists before any call: each sandbox starts the mix at its own op
        await asyncio.gather(*(s.write_file("/tmp/w/app.py", _APP) for s in sandboxes))
        # the starts' aftermath (page cache, the kernel's work) out of the call phases' figures
        if settle:
            result.update({f"calls_{k}": v for k, v in (await _settle()).items()})
        usage = [sysstat.cgroup_memory(c["Id"]) for c in _own_containers(api, run_id)]
        result["host_mem_per_sandbox_mb"] = (_mem_used() - used0) / n / 2**20
        known = [u for u in usage if u is not None]
        result["cgroup_mem_per_sandbox_mb"] = sum(known) / len(known) / 2**20 if known else None
        result["live"] = len(usage)
        trivial = [("true", lambda s: s.run("true"))]
        result.update(await _idle(sandboxes, 3.0))
        result["trivial"] = await _calls(sandboxes, trivial, rounds=rounds, think=think, seed=1)
        result["mix"] = await _calls(sandboxes, LIVE_MIX, rounds=rounds, think=think, seed=2)
        t0 = time.perf_counter()
        with _meter(sandboxes) as meter:
            await asyncio.gather(*(s.close() for s in sandboxes))
        result["remove_wall_s"] = time.perf_counter() - t0
        if isinstance(meter, sysstat.SystemMeter):
            result.update(_split(meter, n, "remove_cpu"))

    try:
        await asyncio.wait_for(body(), max_seconds)
    except asyncio.TimeoutError:
        raise AgenticRolloutError(
            f"bench scale: the level of {n} live sandboxes ran past {max_seconds:.0f} s"
        ) from None
    finally:
        # whatever happened, nothing of this level outlives it: close what we started, then
        # remove any container still carrying this level's run label (ours only)
        await asyncio.gather(*(s.close() for s in sandboxes), return_exceptions=True)
        for c in _own_containers(api, run_id):
            with contextlib.suppress(Exception):
                api.remove_container(c["Id"], force=True)
        result["leaked"] = len(_own_containers(api, run_id))
        api.close()
        result["level_wall_s"] = time.perf_counter() - t_level
    return result


async def run_live(
    levels: tuple[int, ...],
    *,
    rounds: int = 30,
    think: float = 0.2,
    image: str = "agentic-rollout/sandbox:latest",
    max_seconds: float = 600.0,
) -> dict[str, Any]:
    for n in levels:
        check_live_level(n)  # refuse a bad level before any sandbox starts
    # one sandbox first: imports and the daemon's first container are not steady state
    await live_level(1, rounds=2, think=0.0, image=image, max_seconds=max_seconds, settle=False)
    results = [
        await live_level(n, rounds=rounds, think=think, image=image, max_seconds=max_seconds)
        for n in levels
    ]
    return {
        "mode": "live",
        "image": image,
        "rounds": rounds,
        "think_s": think,
        "cpu_count": os.cpu_count(),
        "code": _code_root(),
        "levels": results,
    }


def _code_root() -> str:
    """The checkout whose ``orchestrator`` this run measured (before / after comparisons)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(orchestrator.__file__)))


def live_summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"code={result['code']}"]
    for lv in result["levels"]:
        t, m = lv["trivial"], lv["mix"]
        lines.append(
            f"sandboxes={lv['sandboxes']} load_before={lv['load_before']:.2f} "
            f"start_wall_s={lv['start_wall_s']:.1f} remove_wall_s={lv['remove_wall_s']:.1f} "
            f"host_mem_per_sandbox_mb={lv['host_mem_per_sandbox_mb']:.1f} "
            f"cgroup_mem_per_sandbox_mb={lv['cgroup_mem_per_sandbox_mb'] or 0:.1f} "
            f"leaked={lv['leaked']}"
        )
        for name, ph in (("trivial", t), ("mix", m)):
            line = (
                f"  {name}: calls={ph['calls']} failed={ph['failed']} "
                f"calls_per_s={ph['calls_per_s']:.0f} p50_ms={ph['p50_ms']:.2f} "
                f"p99_ms={ph['p99_ms']:.2f}"
            )
            if "cpu_total_ms" in ph:
                line += " cpu_per_call_ms: " + " ".join(
                    f"{k}={ph[f'cpu_{k}_ms']:.3f}"
                    for k in ("total", "orchestrator", "engine", "sandboxes", "others", "rest")
                )
            lines.append(line)
        if "idle_cpu_total_ms_per_sandbox_s" in lv:
            lines.append(
                "  idle_cpu_ms_per_sandbox_s: "
                + " ".join(
                    f"{k}={lv[f'idle_cpu_{k}_ms_per_sandbox_s']:.3f}"
                    for k in ("total", "orchestrator", "engine", "sandboxes", "others", "rest")
                )
                + f" busy_cores_before_calls={lv.get('calls_busy_cores', float('nan')):.2f}"
            )
        if "start_cpu_total_ms" in lv:
            lines.append(
                "  cpu_per_sandbox_ms: "
                + " ".join(
                    f"{phase}_{k}={lv[f'{phase}_cpu_{k}_ms']:.0f}"
                    for phase in ("start", "remove")
                    for k in ("total", "engine")
                )
            )
    lines.append(f"leaked={sum(lv['leaked'] for lv in result['levels'])}")
    return lines


def table_lines(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """A markdown table of live-mode results: one row per (label, level)."""
    split = ("total", "orchestrator", "engine", "sandboxes", "others", "rest")
    lines = [
        "| run | N | busy cores | trivial p50 / p99 ms | trivial CPU/call ms: "
        + " / ".join(split)
        + " | mix p50 / p99 ms | mix CPU/call ms total | idle CPU ms/sandbox/s "
        "| start s | remove s | MB/sandbox host / cgroup | failed | leaked |",
        "|---" * 13 + "|",
    ]
    for label, result in results:
        for lv in result["levels"]:
            t, m = lv["trivial"], lv["mix"]
            cpu = " / ".join(f"{t.get(f'cpu_{k}_ms', float('nan')):.2f}" for k in split)
            lines.append(
                f"| {label} | {lv['sandboxes']} | {lv.get('calls_busy_cores', float('nan')):.2f} "
                f"| {t['p50_ms']:.2f} / {t['p99_ms']:.1f} | {cpu} "
                f"| {m['p50_ms']:.2f} / {m['p99_ms']:.1f} "
                f"| {m.get('cpu_total_ms', float('nan')):.2f} "
                f"| {lv.get('idle_cpu_total_ms_per_sandbox_s', float('nan')):.3f} "
                f"| {lv['start_wall_s']:.1f} | {lv['remove_wall_s']:.1f} "
                f"| {lv['host_mem_per_sandbox_mb']:.1f} "
                f"/ {lv['cgroup_mem_per_sandbox_mb'] or 0:.1f} "
                f"| {t['failed'] + m['failed']} | {lv['leaked']} |"
            )
    return lines


def run_live_from_args(args: Any) -> dict[str, Any]:
    """The live mode for parsed :func:`live_arguments` (plus ``image``), then a sweep once the
    loop's threads are done: a start interrupted in a thread may create its container after
    its level's own sweep."""
    try:
        result: dict[str, Any] = asyncio.run(
            run_live(
                tuple(args.sandboxes),
                rounds=args.rounds,
                think=args.think,
                image=args.image,
                max_seconds=args.max_seconds,
            )
        )
    finally:
        late = sweep(RUN_IDS)
        if late:
            print(f"removed {late} containers left by an interrupted level", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.scale --sandboxes 64 128``: the live mode without the CLI, so a checkout
    of older code can be measured by this bench (``PYTHONPATH=<this bench's root>:<old code>``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    live_arguments(p)
    p.add_argument("--image", default="agentic-rollout/sandbox:latest")
    p.add_argument("--json", help="write the JSON result here")
    p.add_argument(
        "--table",
        nargs="+",
        metavar="LABEL=FILE",
        help="print a markdown table of earlier --json results instead of running",
    )
    args = p.parse_args(argv)
    if args.table:
        pairs = [item.partition("=")[::2] for item in args.table]
        for line in table_lines([(k, json.loads(Path(v).read_text())) for k, v in pairs]):
            print(line)
        return
    if not args.sandboxes:
        p.error("--sandboxes N [N ...] is required (or --table)")
    result = run_live_from_args(args)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    for line in live_summary_lines(result):
        print(line)


def live_arguments(p: Any) -> None:
    """The live mode's options (the CLI's ``bench scale`` and ``python -m bench.scale``)."""
    p.add_argument(
        "--sandboxes",
        type=int,
        nargs="+",
        help=f"live mode: levels of N sandboxes alive at once (1..{MAX_SANDBOXES})",
    )
    p.add_argument("--rounds", type=int, default=30, help="live mode: calls per sandbox per phase")
    p.add_argument(
        "--think", type=float, default=0.2, help="live mode: s between a sandbox's calls"
    )
    p.add_argument(
        "--max-seconds", type=float, default=600.0, help="live mode: wall limit per level"
    )


if __name__ == "__main__":
    main()
