"""``bench rpc``: per-call cost of our RPC vs ``docker exec``, and sandbox ready time.

In one process, one run, one image:

(a) our RPC: ``true`` in a persistent session of a running sandbox, over the direct unix
    socket (the default transport) and, as ``rpc_attach``, over the container's attach stream
    (dockerd in the data path) in a second sandbox;
(b) ``docker exec`` of ``true`` per call through the SDK (exec_create + exec_start), which is
    what kodo, R2E-Gym and mini-swe-agent do for every command — against the same container;
(c) sandbox ready time (create -> agent answers its first ping) vs a raw create+start of the
    same image with the same limits running ``sleep infinity``.

(a) and (b) are interleaved in rounds, and so are the two halves of (c), so drift in machine
load affects both sides alike. Also reports the agent's RSS in an idle sandbox and the memory
charged to a live sandbox's cgroup (agent, bash, page cache) after the calls.

(d) system-wide CPU (``bench/sysstat.py``: the whole machine's CPU from ``/proc/stat``, split
    into orchestrator / engine / sandboxes / rest) per trivial call in a sandbox, and per
    sandbox life cycle (create -> first call -> removed) beside a raw ``create+start+rm -f``
    of the same image. These windows run alone, one after the other: on an otherwise idle
    machine everything the machine did in them is the work measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from bench import sysstat
from orchestrator.sandbox.docker import DockerSandbox, DockerSandboxConfig, docker_api


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def docker_exec(api: Any, container_id: str, cmd: str) -> tuple[float, bytes]:
    """Seconds and output of one ``docker exec`` of ``bash -c cmd`` (create + start +
    inspect, as harnesses that shell out per call pay it); it must exit 0."""
    t0 = time.perf_counter()
    exec_id = api.exec_create(container_id, ["bash", "-c", cmd])["Id"]
    data: bytes = api.exec_start(exec_id)
    code = api.exec_inspect(exec_id)["ExitCode"]
    elapsed = time.perf_counter() - t0
    assert code == 0, (cmd, code)
    return elapsed, data


def _raw_create_start(config: DockerSandboxConfig) -> float:
    """Seconds for a plain create+start with the same image and limits (then removed:
    ``docker run`` + ``rm -f``, the raw life cycle the system-wide CPU figure compares to)."""
    import docker.errors

    api = docker_api(config.docker_host)
    probe = config.build()  # same host config as a real sandbox
    try:
        host_config = probe.host_config(api)
        t0 = time.perf_counter()
        cid = api.create_container(
            config.image,
            command=["sleep", "infinity"],
            host_config=host_config,
            network_disabled=True,
            labels=probe.labels(),
        )["Id"]
        api.start(cid)
        elapsed = time.perf_counter() - t0
        try:
            api.remove_container(cid, force=True)
        except docker.errors.APIError as exc:  # a slow engine still removing it: done anyway
            if "already in progress" not in str(exc):
                raise
        return elapsed
    finally:
        api.close()


async def run(
    *,
    image: str = "agentic-rollout/sandbox:latest",
    calls: int = 400,
    exec_calls: int = 40,
    starts: int = 7,
    big_calls: int = 10,
    peers: bool = False,
    docker_host: str | None = None,
) -> dict[str, Any]:
    config = DockerSandboxConfig(image=image, docker_host=docker_host)

    # warm-up: daemon API version probe, image layers in page cache
    async with config.build() as warm:
        await warm.run("true")
    await asyncio.to_thread(_raw_create_start, config)

    ready: list[float] = []
    raw: list[float] = []
    rss_idle: list[int] = []
    for _ in range(starts):
        raw.append(await asyncio.to_thread(_raw_create_start, config))
        sandbox = config.build()
        async with sandbox:
            assert sandbox.ready_seconds is not None
            ready.append(sandbox.ready_seconds)
            info = await sandbox.info()
            if info.get("rss_bytes"):
                rss_idle.append(int(info["rss_bytes"]))

    async with config.build() as sandbox, config.build(transport="attach") as via_attach:
        assert isinstance(sandbox, DockerSandbox) and isinstance(via_attach, DockerSandbox)
        await sandbox.run("true")
        await via_attach.run("true")
        transports = (sandbox.transport_kind, via_attach.transport_kind)
        api = docker_api(docker_host)
        try:
            async with contextlib.AsyncExitStack() as stack:
                swerex = None
                if peers:
                    from bench.peers import swerex_server

                    swerex = await stack.enter_async_context(
                        swerex_server(image, labels=sandbox.labels())
                    )
                timings = await _measure(
                    sandbox,
                    via_attach,
                    api,
                    swerex=swerex,
                    calls=calls,
                    exec_calls=exec_calls,
                    big_calls=big_calls,
                )
        finally:
            api.close()
        rss_after = (await sandbox.info()).get("rss_bytes")
        assert sandbox.container_id is not None
        sandbox_memory = sysstat.cgroup_memory(sandbox.container_id)
        system_cpu = await _system_cpu(sandbox, via_attach, config, calls=calls, cycles=starts)

    result: dict[str, Any] = {
        "image": image,
        "starts": starts,
        "ready_ms": statistics.median(ready) * 1000,
        "raw_start_ms": statistics.median(raw) * 1000,
        "ready_all_ms": [r * 1000 for r in ready],
        "raw_all_ms": [r * 1000 for r in raw],
        "agent_rss_idle_mb": statistics.median(rss_idle) / 2**20 if rss_idle else None,
        "agent_rss_after_calls_mb": rss_after / 2**20 if rss_after else None,
        "sandbox_memory_mb": sandbox_memory / 2**20 if sandbox_memory else None,
        "transport": transports[0],
        "transport_attach": transports[1],
    }
    result["ready_ratio"] = result["ready_ms"] / result["raw_start_ms"]
    result.update(system_cpu)
    for (system, size), values in timings.items():
        key = f"{system}_{size}"
        result[f"{key}_calls"] = len(values)
        result[f"{key}_p50_ms"] = statistics.median(values) * 1000
        result[f"{key}_p99_ms"] = _p(values, 0.99) * 1000
    # the names the issue and earlier runs use
    result["rpc_p50_ms"] = result["rpc_trivial_p50_ms"]
    result["rpc_p99_ms"] = result["rpc_trivial_p99_ms"]
    result["exec_p50_ms"] = result["exec_trivial_p50_ms"]
    result["exec_p99_ms"] = result["exec_trivial_p99_ms"]
    result["rpc_calls"] = result["rpc_trivial_calls"]
    result["exec_calls"] = result["exec_trivial_calls"]
    for size in ("trivial", "1mb"):
        base = result[f"rpc_{size}_p50_ms"]
        suffix = "" if size == "trivial" else "_1mb"
        result[f"speedup{suffix}"] = result[f"exec_{size}_p50_ms"] / base
        if peers:
            result[f"swerex_session_speedup{suffix}"] = (
                result[f"swerex_session_{size}_p50_ms"] / base
            )
            result[f"swerex_exec_speedup{suffix}"] = result[f"swerex_exec_{size}_p50_ms"] / base
    for size in ("trivial", "1mb"):
        suffix = "" if size == "trivial" else "_1mb"
        result[f"socket_vs_attach{suffix}"] = (
            result[f"rpc_attach_{size}_p50_ms"] / result[f"rpc_{size}_p50_ms"]
        )
    return result


async def _system_cpu(
    sandbox: DockerSandbox,
    via_attach: DockerSandbox,
    config: DockerSandboxConfig,
    *,
    calls: int,
    cycles: int,
) -> dict[str, Any]:
    """System-wide CPU per trivial call (each transport) and per life cycle (ours vs raw),
    with the split."""
    if not sysstat.available():
        return {}
    out: dict[str, Any] = {}
    for prefix, box in (("sys_call", sandbox), ("sys_call_attach", via_attach)):
        with sysstat.SystemMeter() as per_call:
            for _ in range(calls):
                await box.run(TRIVIAL)
        assert per_call.split is not None
        for key, value in per_call.split.per(calls).items():
            out[f"{prefix}_{key}"] = value

    async def ours() -> None:
        async with config.build() as fresh:
            await fresh.run(TRIVIAL)

    with sysstat.SystemMeter() as life:
        for _ in range(cycles):
            await ours()
    with sysstat.SystemMeter() as raw:
        for _ in range(cycles):
            await asyncio.to_thread(_raw_create_start, config)
    assert life.split is not None and raw.split is not None
    for key, value in life.split.per(cycles).items():
        out[f"sys_life_{key}"] = value
    for key, value in raw.split.per(cycles).items():
        out[f"sys_raw_life_{key}"] = value
    out["sys_life_ratio"] = out["sys_life_total_ms"] / max(1e-9, out["sys_raw_life_total_ms"])
    return out


TRIVIAL = "true"
#: 1 MB of output (1,000,000 bytes of "a", no newline)
BIG = "head -c 1000000 /dev/zero | tr '\\0' a"


async def _measure(
    sandbox: DockerSandbox,
    via_attach: DockerSandbox,
    api: Any,
    *,
    swerex: Any,
    calls: int,
    exec_calls: int,
    big_calls: int,
) -> dict[tuple[str, str], list[float]]:
    """Per-call seconds by (system, size); systems interleaved round by round."""
    out: dict[tuple[str, str], list[float]] = {}

    def exec_once(cmd: str) -> float:
        assert sandbox.container_id is not None
        elapsed, data = docker_exec(api, sandbox.container_id, cmd)
        assert cmd != BIG or len(data) == 1_000_000, len(data)
        return elapsed

    async def ours(cmd: str, box: DockerSandbox = sandbox) -> float:
        t0 = time.perf_counter()
        result = await box.run(cmd, max_output=2_000_000)
        elapsed = time.perf_counter() - t0
        assert result.exit_code == 0 and (cmd != BIG or len(result.output) == 1_000_000)
        return elapsed

    async def timed(coro: Any, cmd: str) -> float:
        t0 = time.perf_counter()
        text = await coro
        elapsed = time.perf_counter() - t0
        assert cmd != BIG or text.count("a") == 1_000_000, len(text)
        return elapsed

    async def one_round(size: str, cmd: str, ours_n: int) -> None:
        for _ in range(ours_n):
            out.setdefault(("rpc", size), []).append(await ours(cmd))
            out.setdefault(("rpc_attach", size), []).append(await ours(cmd, via_attach))
        out.setdefault(("exec", size), []).append(await asyncio.to_thread(exec_once, cmd))
        if swerex is not None:
            out.setdefault(("swerex_session", size), []).append(
                await timed(swerex.run_in_session(cmd), cmd)
            )
            out.setdefault(("swerex_exec", size), []).append(await timed(swerex.execute(cmd), cmd))

    if swerex is not None:  # warm the peer's paths too
        await swerex.run_in_session(TRIVIAL)
        await swerex.execute(TRIVIAL)
    per_round = max(1, calls // max(1, exec_calls))
    for _ in range(exec_calls):
        await one_round("trivial", TRIVIAL, per_round)
    for _ in range(big_calls):
        await one_round("1mb", BIG, 1)
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The human/machine lines printed after the JSON; the last one is the contract line."""
    memory = result.get("sandbox_memory_mb")
    lines = [
        f"transport={result['transport']} "
        f"rpc_attach_p50_ms={result['rpc_attach_trivial_p50_ms']:.3f} "
        f"rpc_attach_1mb_p50_ms={result['rpc_attach_1mb_p50_ms']:.2f} "
        f"socket_vs_attach={result['socket_vs_attach']:.2f} "
        f"socket_vs_attach_1mb={result['socket_vs_attach_1mb']:.2f} "
        f"sandbox_memory_mb={memory if memory is None else round(memory, 1)}",
        f"agent_rss_idle_mb={result['agent_rss_idle_mb']:.2f} "
        f"agent_rss_after_calls_mb={result['agent_rss_after_calls_mb']:.2f} "
        f"rpc_p99_ms={result['rpc_p99_ms']:.3f} exec_p99_ms={result['exec_p99_ms']:.3f}",
        f"rpc_1mb_p50_ms={result['rpc_1mb_p50_ms']:.2f} exec_1mb_p50_ms="
        f"{result['exec_1mb_p50_ms']:.2f} speedup_1mb={result['speedup_1mb']:.2f}",
    ]
    if "sys_call_total_ms" in result:
        lines.append(
            "system-wide CPU per trivial call: "
            + " ".join(
                f"{k}={result[f'sys_call_{k}_ms']:.3f}"
                for k in ("total", "orchestrator", "engine", "sandboxes", "rest")
            )
            + " (ms)"
        )
        lines.append(
            "system-wide CPU per trivial call over the attach stream: "
            + " ".join(
                f"{k}={result[f'sys_call_attach_{k}_ms']:.3f}"
                for k in ("total", "orchestrator", "engine", "sandboxes", "rest")
            )
            + " (ms)"
        )
        lines.append(
            f"system-wide CPU per life cycle: ours={result['sys_life_total_ms']:.1f} ms "
            f"raw create+start+rm={result['sys_raw_life_total_ms']:.1f} ms "
            f"sys_life_ratio={result['sys_life_ratio']:.3f}"
        )
    last = (
        f"rpc_p50_ms={result['rpc_p50_ms']:.3f} exec_p50_ms={result['exec_p50_ms']:.3f} "
        f"speedup={result['speedup']:.2f} ready_ms={result['ready_ms']:.1f} "
        f"raw_start_ms={result['raw_start_ms']:.1f} ready_ratio={result['ready_ratio']:.3f}"
    )
    if "swerex_session_speedup" in result:
        lines.append(
            f"swerex_session_p50_ms={result['swerex_session_trivial_p50_ms']:.2f} "
            f"swerex_exec_p50_ms={result['swerex_exec_trivial_p50_ms']:.2f} "
            f"swerex_session_1mb_p50_ms={result['swerex_session_1mb_p50_ms']:.1f} "
            f"swerex_exec_1mb_p50_ms={result['swerex_exec_1mb_p50_ms']:.1f} "
            f"swerex_session_speedup_1mb={result['swerex_session_speedup_1mb']:.2f} "
            f"swerex_exec_speedup_1mb={result['swerex_exec_speedup_1mb']:.2f}"
        )
        last += (
            f" swerex_session_speedup={result['swerex_session_speedup']:.2f}"
            f" swerex_exec_speedup={result['swerex_exec_speedup']:.2f}"
        )
    return [*lines, last]
