"""RPC latency of running Kubernetes sandboxes while many others are starting (API double with a
slow start phase). Not a test: a measurement, run as

    PYTHONPATH=$PWD python -m tests.bench_k8s_starting --running 4 --starting 32 --delay 8

To compare versions, run from another directory with PYTHONPATH=OTHER_CHECKOUT:THIS_CHECKOUT
(``python -m`` puts the current directory first): the double and the load stay the same, only
the backend changes; the output names the backend module used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.k8s_double import KubeDouble

IMAGE = "agentic-rollout/sandbox:latest"


def stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p99_ms": round(values[min(len(values) - 1, int(len(values) * 0.99))] * 1000, 1),
        "max_ms": round(values[-1] * 1000, 1),
    }


async def load(sandboxes: list[Any], until: float) -> list[float]:
    out: list[float] = []

    async def one(sb: Any) -> None:
        i = 0
        while time.monotonic() < until:
            t0 = time.monotonic()
            await sb.write_file(f"/tmp/b{i % 8}", "x" * 1024)  # a stdin write each call
            out.append(time.monotonic() - t0)
            i += 1
            await asyncio.sleep(0.02)

    await asyncio.gather(*(one(sb) for sb in sandboxes))
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    with KubeDouble() as double, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = str(double.kubeconfig(Path(tmp)))

        def config() -> Any:
            return KubernetesSandboxConfig(
                image=IMAGE,
                run_id="bench-k8s-starting",
                memory="256Mi",
                kubeconfig=kubeconfig,
                startup_timeout=args.delay + 120,
            )

        running = [await config().build().start() for _ in range(args.running)]
        try:
            idle = await load(running, time.monotonic() + 3)
            double.start_delay = args.delay
            t_start = time.monotonic()
            starting = [asyncio.create_task(config().build().start()) for _ in range(args.starting)]
            await asyncio.sleep(0.5)
            busy = await load(running, t_start + args.delay - 0.5)
            started = await asyncio.gather(*starting, return_exceptions=True)
            all_started = time.monotonic() - t_start
            for sb in started:
                if not isinstance(sb, BaseException):
                    await sb.close()
        finally:
            for sb in running:
                await sb.close()
    failures = [repr(s) for s in started if isinstance(s, BaseException)]
    import orchestrator.sandbox.kubernetes as backend

    return {
        "backend": backend.__file__,
        "running": args.running,
        "starting": args.starting,
        "start_delay_s": args.delay,
        "rpc_idle": stats(idle),
        "rpc_while_starting": stats(busy),
        "all_started_after_s": round(all_started, 1),
        "start_failures": failures[:3],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--running", type=int, default=4)
    parser.add_argument("--starting", type=int, default=32)
    parser.add_argument("--delay", type=float, default=8.0)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
