"""``bench startup``: how long until a trajectory has a sandbox that answers.

In one run, one image, interleaved:

(a) raw create+start of a container (``sleep infinity``, same limits): the floor;
(b) a sandbox from nothing to the agent answering its first ping (``ready``);
(c) a warm pool of ``pool_size``: trajectories acquire a sandbox, hold it for ``hold``
    seconds (the trajectory), and destroy it; acquire time is measured, refills happen in
    the background meanwhile;
(d) a burst of ``2 * pool_size`` acquires at once on a full pool: the first ``pool_size``
    are hits, the rest start cold.

System-wide CPU (``bench/sysstat.py``, split orchestrator / engine / sandboxes / rest): per
cold start (start -> ready -> removed) and per raw create+start+rm, each in a window of its
own after the interleaved timings, and per pool cycle of (c) (acquire, the trajectory's call,
release, the refill behind it).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

from bench import sysstat
from bench.rpc import _p, _raw_create_start
from orchestrator.sandbox.docker import DockerSandboxConfig
from orchestrator.sandbox.pool import WarmPool


async def run(
    *,
    image: str = "agentic-rollout/sandbox:latest",
    starts: int = 10,
    pool_size: int = 4,
    acquires: int = 40,
    hold: float = 0.25,
) -> dict[str, Any]:
    run_id = f"bench-startup-{uuid.uuid4().hex[:6]}"
    config = DockerSandboxConfig(image=image, run_id=run_id)
    async with config.build() as warm:  # daemon API probe, image in page cache
        await warm.run("true")
    await asyncio.to_thread(_raw_create_start, config)

    ready: list[float] = []
    raw: list[float] = []
    cold_total: list[float] = []
    for _ in range(starts):
        raw.append(await asyncio.to_thread(_raw_create_start, config))
        t0 = time.perf_counter()
        cold = await config.build().start()
        cold_total.append(time.perf_counter() - t0)
        assert cold.ready_seconds is not None
        ready.append(cold.ready_seconds)
        await cold.close()

    system: dict[str, float] = {}
    if sysstat.available():
        with sysstat.SystemMeter() as cold_meter:
            for _ in range(starts):
                await (await config.build().start()).close()
        with sysstat.SystemMeter() as raw_meter:
            for _ in range(starts):
                await asyncio.to_thread(_raw_create_start, config)
        for prefix, meter in (("sys_cold_start", cold_meter), ("sys_raw_start", raw_meter)):
            assert meter.split is not None
            system.update({f"{prefix}_{k}": v for k, v in meter.split.per(starts).items()})

    values = {"type": "docker", "image": image, "run_id": run_id}
    pool_meter = sysstat.SystemMeter()
    acquire: list[float] = []
    burst_hits: list[float] = []
    burst_misses: list[float] = []
    async with WarmPool(pool_size) as pool:
        pool.warm(values)
        deadline = time.monotonic() + 60
        while pool.ready(values) < pool_size and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if sysstat.available():
            pool_meter.__enter__()
        for _ in range(acquires):
            t0 = time.perf_counter()
            sandbox = await pool.acquire(values)
            acquire.append(time.perf_counter() - t0)
            assert (await sandbox.run("true")).exit_code == 0
            await asyncio.sleep(hold)  # the trajectory
            await sandbox.close()
        if sysstat.available():
            pool_meter.__exit__()
            assert pool_meter.split is not None
            system.update(
                {f"sys_pool_cycle_{k}": v for k, v in pool_meter.split.per(acquires).items()}
            )
        stats = pool.stats
        hits, misses = stats.hits, stats.misses
        while pool.ready(values) < pool_size and time.monotonic() < deadline + 60:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

        async def one() -> tuple[float, bool]:
            before = pool.ready(values)
            t0 = time.perf_counter()
            sandbox = await pool.acquire(values)
            elapsed = time.perf_counter() - t0
            await sandbox.close()
            return elapsed, before > 0

        for elapsed, hit in await asyncio.gather(*(one() for _ in range(2 * pool_size))):
            (burst_hits if hit else burst_misses).append(elapsed)

    ready_ms = statistics.median(ready) * 1000
    raw_ms = statistics.median(raw) * 1000
    return {
        "image": image,
        "starts": starts,
        "ready_ms": ready_ms,
        "raw_start_ms": raw_ms,
        "ready_ratio": ready_ms / raw_ms,
        "cold_start_total_ms": statistics.median(cold_total) * 1000,
        "ready_all_ms": [r * 1000 for r in ready],
        "raw_all_ms": [r * 1000 for r in raw],
        "pool_size": pool_size,
        "pool_hold_s": hold,
        "pool_acquires": len(acquire),
        "pool_hits": hits,
        "pool_misses": misses,
        "pool_acquire_p50_ms": statistics.median(acquire) * 1000,
        "pool_acquire_p99_ms": _p(acquire, 0.99) * 1000,
        "pool_acquire_all_ms": [a * 1000 for a in acquire],
        "burst_hit_p50_ms": statistics.median(burst_hits) * 1000 if burst_hits else None,
        "burst_miss_p50_ms": statistics.median(burst_misses) * 1000 if burst_misses else None,
        "burst_hits": len(burst_hits),
        "burst_misses": len(burst_misses),
        **system,
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    burst_hit = result["burst_hit_p50_ms"] or 0.0
    burst_miss = result["burst_miss_p50_ms"] or 0.0
    system = [
        f"system-wide CPU per {what}: "
        + " ".join(
            f"{k}={result[f'{prefix}_{k}_ms']:.1f}"
            for k in ("total", "orchestrator", "engine", "sandboxes", "rest")
        )
        + " (ms)"
        for prefix, what in (
            ("sys_cold_start", "cold start+remove"),
            ("sys_raw_start", "raw create+start+rm"),
            ("sys_pool_cycle", "pool cycle"),
        )
        if f"{prefix}_total_ms" in result
    ]
    return [
        *system,
        f"burst_hits={result['burst_hits']} burst_hit_p50_ms={burst_hit:.2f} "
        f"burst_misses={result['burst_misses']} burst_miss_p50_ms={burst_miss:.1f} "
        f"cold_start_total_ms={result['cold_start_total_ms']:.1f}",
        f"ready_ms={result['ready_ms']:.1f} raw_start_ms={result['raw_start_ms']:.1f} "
        f"ready_ratio={result['ready_ratio']:.3f} "
        f"pool_acquire_p50_ms={result['pool_acquire_p50_ms']:.3f} "
        f"pool_acquire_p99_ms={result['pool_acquire_p99_ms']:.3f} "
        f"pool_hits={result['pool_hits']}/{result['pool_acquires']}",
    ]
