"""``bench rpc``: per-call cost of our RPC vs ``docker exec``, and sandbox ready time.

In one process, one run, one image:

(a) our RPC: ``true`` in a persistent session of a running sandbox;
(b) ``docker exec`` of ``true`` per call through the SDK (exec_create + exec_start), which is
    what kodo, R2E-Gym and mini-swe-agent do for every command — against the same container;
(c) sandbox ready time (create -> agent answers its first ping) vs a raw create+start of the
    same image with the same limits running ``sleep infinity``.

(a) and (b) are interleaved in rounds, and so are the two halves of (c), so drift in machine
load affects both sides alike. Also reports the agent's RSS in an idle sandbox.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from orchestrator.sandbox.docker import DockerSandbox, DockerSandboxConfig, docker_api


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _raw_create_start(config: DockerSandboxConfig) -> float:
    """Seconds for a plain create+start with the same image and limits (then removed)."""
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
        api.remove_container(cid, force=True)
        return elapsed
    finally:
        api.close()


async def run(
    *,
    image: str = "agentic-rollout/sandbox:latest",
    calls: int = 400,
    exec_calls: int = 40,
    starts: int = 7,
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

    rpc: list[float] = []
    exe: list[float] = []
    async with config.build() as sandbox:
        assert isinstance(sandbox, DockerSandbox)
        await sandbox.run("true")
        api = docker_api(docker_host)
        try:
            per_round = max(1, calls // max(1, exec_calls))
            for _ in range(exec_calls):
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    result = await sandbox.run("true")
                    rpc.append(time.perf_counter() - t0)
                    assert result.exit_code == 0

                def docker_exec() -> float:
                    t0 = time.perf_counter()
                    exec_id = api.exec_create(sandbox.container_id, ["true"])["Id"]
                    api.exec_start(exec_id)
                    code = api.exec_inspect(exec_id)["ExitCode"]
                    assert code == 0
                    return time.perf_counter() - t0

                exe.append(await asyncio.to_thread(docker_exec))
        finally:
            api.close()
        rss_after = (await sandbox.info()).get("rss_bytes")

    rpc_p50 = statistics.median(rpc) * 1000
    exec_p50 = statistics.median(exe) * 1000
    ready_ms = statistics.median(ready) * 1000
    raw_ms = statistics.median(raw) * 1000
    return {
        "image": image,
        "rpc_calls": len(rpc),
        "exec_calls": len(exe),
        "starts": starts,
        "rpc_p50_ms": rpc_p50,
        "rpc_p99_ms": _p(rpc, 0.99) * 1000,
        "exec_p50_ms": exec_p50,
        "exec_p99_ms": _p(exe, 0.99) * 1000,
        "speedup": exec_p50 / rpc_p50,
        "ready_ms": ready_ms,
        "raw_start_ms": raw_ms,
        "ready_ratio": ready_ms / raw_ms,
        "ready_all_ms": [r * 1000 for r in ready],
        "raw_all_ms": [r * 1000 for r in raw],
        "agent_rss_idle_mb": statistics.median(rss_idle) / 2**20 if rss_idle else None,
        "agent_rss_after_calls_mb": rss_after / 2**20 if rss_after else None,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The human/machine lines printed after the JSON; the last one is the contract line."""
    return [
        f"agent_rss_idle_mb={result['agent_rss_idle_mb']:.2f} "
        f"agent_rss_after_calls_mb={result['agent_rss_after_calls_mb']:.2f} "
        f"rpc_p99_ms={result['rpc_p99_ms']:.3f} exec_p99_ms={result['exec_p99_ms']:.3f}",
        f"rpc_p50_ms={result['rpc_p50_ms']:.3f} exec_p50_ms={result['exec_p50_ms']:.3f} "
        f"speedup={result['speedup']:.2f} ready_ms={result['ready_ms']:.1f} "
        f"raw_start_ms={result['raw_start_ms']:.1f} ready_ratio={result['ready_ratio']:.3f}",
    ]
