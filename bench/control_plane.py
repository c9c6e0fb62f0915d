"""``bench control-plane``: 2,000 agent-sandbox claims at once from one process, on the API double.

What a VERL step does to a cluster (256 prompts x 8 samples asking for sandboxes in the same
second), against the API double's agent-sandbox CRDs in no-container mode (pods turn Running
without a container, so thousands fit on one machine) with faults injected: a share of
requests answered 429 (``Retry-After: 1``) or 500, and watch streams cut mid-way.

Two phases, the orchestrator a separate process each time (the double stays up):

1. **burst**: ``requests`` claims at once through the process-wide admission controller (the
   backend's own code: admit -> create claim -> watch until bound -> release). Prints the
   API requests/s the double received (the highest 1 s window must stay within the configured
   ``api_rate``; every request, retries and watches included, counted both by the client's
   API limiter and on arrival at the double: the two counts must be equal), claim latency
   (create -> bound) and start latency (queue wait included) p50/p99, and that every claim
   was released.
2. **kill**: the same burst with a short ``ttl``, the orchestrator SIGKILLed once ``kill_after``
   claims exist; then leaks (claims, Sandboxes and pods nobody released) right after the kill
   and after the TTL, when the controller has reaped them: must be 0.

The control plane only: no agent is exec'd into these pods (bench startup/scale time that).
Needs the repository's tests/ (the double): run from the repository root.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NS = "agentic-rollout"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def max_window(times: list[float], window: float = 1.0) -> int:
    """Most requests in any ``window`` seconds (sliding over the arrival times)."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---- the orchestrator side (a subprocess)


async def _worker(args: dict[str, Any]) -> dict[str, Any]:
    from orchestrator import admission
    from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig

    ctl = admission.configure(
        "agent-sandbox",
        {
            "max_live": args["max_live"],
            "max_starting": args["max_starting"],
            "rate": args["rate"],
            "burst": args["burst"],
            "api_rate": args["api_rate"],
            "api_burst": args["api_burst"],
        },
    )
    config = AgentSandboxConfig(
        warm_pool="burst",
        kubeconfig=args["kubeconfig"],
        ttl=args["ttl"],
        claim_timeout=args["claim_timeout"],
        api_retry_budget=args["claim_timeout"],
        run_id=args["run_id"],
        watch_seconds=10,
    )
    # when the limiter let each API request leave (the client's view of the same requests)
    released: list[float] = []
    ctl.api.record = released
    claim_s: list[float] = []
    start_s: list[float] = []
    errors: dict[str, int] = {}

    async def one() -> None:
        t0 = time.monotonic()
        permit = await ctl.admit()
        sandbox = config.build()
        try:
            await sandbox.claim()
            claim_s.append(sandbox.claim_seconds or 0.0)
            start_s.append(time.monotonic() - t0)
            permit.started()
            await asyncio.sleep(args["hold"])  # the trajectory
        except Exception as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            permit.started()
            await sandbox.release()
            permit.release()

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args["requests"])))
    return {
        "seconds": time.monotonic() - t0,
        "claimed": len(claim_s),
        "errors": errors,
        "claim_p50": _pct(claim_s, 0.5),
        "claim_p99": _pct(claim_s, 0.99),
        "start_p50": _pct(start_s, 0.5),
        "start_p99": _pct(start_s, 0.99),
        "client_api_requests": len(released),
        "client_max_1s_window": max_window(released),
        "max_live_seen": ctl.stats.max_live_seen,
        "max_starting_seen": ctl.stats.max_starting_seen,
    }


def worker_main() -> None:
    args = json.loads(sys.argv[2])
    print(json.dumps(asyncio.run(_worker(args))), flush=True)


# ---- the driver


def _spawn(args: dict[str, Any]) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "bench.control_plane", "--worker", json.dumps(args)],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _leaks(double: Any, run_id: str) -> dict[str, int]:
    with double.lock:
        claims = [
            o
            for o in double.items("sandboxclaims", NS)
            if (o["metadata"].get("labels") or {}).get("agentic-rollout.run") == run_id
        ]
        bound = [
            o
            for o in double.items("sandboxes", NS)
            if "agents.x-k8s.io/claim" in (o["metadata"].get("labels") or {})
        ]
        pods = len(double.pods)
    return {"claims": len(claims), "bound_sandboxes": len(bound), "pods": pods}


def run(
    *,
    requests: int = 2000,
    pool: int = 256,
    api_rate: float = 150.0,
    api_burst: int = 10,
    max_live: int = 1000,
    max_starting: int = 128,
    error_rate: float = 0.05,
    drop_watch_after: int = 200,
    hold: float = 0.5,
    kill_requests: int | None = None,
    kill_after: int = 100,
    ttl: int = 5,
    timeout: float = 600.0,
) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        from tests.k8s_double_agent_sandbox import (
            AgentSandboxDouble,
            pool_manifest,
            template_manifest,
        )
    except ImportError as exc:  # an installed package without the repository's tests/
        raise RuntimeError(f"bench control-plane needs the repository's tests/: {exc}") from exc

    result: dict[str, Any] = {
        "requests": requests,
        "pool": pool,
        "api_rate": api_rate,
        "api_burst": api_burst,
        "error_rate": error_rate,
        "drop_watch_after": drop_watch_after,
    }
    common = {
        "max_live": max_live,
        "max_starting": max_starting,
        "rate": api_rate,
        "burst": api_burst,
        "api_rate": api_rate,
        "api_burst": api_burst,
        "claim_timeout": 300.0,
        "hold": hold,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        AgentSandboxDouble(containers=False, tick=0.1) as double,
    ):
        kubeconfig = str(double.kubeconfig(Path(tmp)))
        with double.lock:
            double.create("sandboxtemplates", NS, template_manifest("burst", "none:latest"))
            double.create("sandboxwarmpools", NS, pool_manifest("burst", "burst", pool))
        deadline = time.monotonic() + 60
        while _ready(double) < pool and time.monotonic() < deadline:
            time.sleep(0.1)
        double.error_rate = error_rate
        double.drop_watch_after = drop_watch_after

        # 1. the burst
        first = len(double.request_times)
        proc = _spawn({**common, "requests": requests, "kubeconfig": kubeconfig,
                       "ttl": 3600, "run_id": "burst"})  # fmt: skip
        out, _ = proc.communicate(timeout=timeout)
        burst = json.loads(out.strip().splitlines()[-1])
        times = double.request_times[first:]
        span = (max(times) - min(times)) if times else 0.0
        result["burst"] = {
            **burst,
            "api_requests": len(times),
            "api_requests_per_s_mean": len(times) / span if span else 0.0,
            "api_requests_max_1s_window": max_window(times),
            "injected": dict(double.injected),
            "watch_drops": double.watch_drops,
            "leaks_after": _leaks(double, "burst"),
        }

        # 2. SIGKILL mid-burst, then the controller's TTL
        proc = _spawn({**common, "requests": kill_requests or requests,
                       "kubeconfig": kubeconfig, "ttl": ttl, "run_id": "killed",
                       "hold": 60.0})  # fmt: skip
        deadline = time.monotonic() + timeout
        while _leaks(double, "killed")["claims"] < kill_after and time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        double.error_rate = 0.0
        at_kill = _leaks(double, "killed")
        killed_at = time.monotonic()
        while _leaks(double, "killed")["claims"] and time.monotonic() - killed_at < ttl + 30:
            time.sleep(0.1)
        time.sleep(0.5)  # a tick for the cascades
        result["kill"] = {
            "claims_at_kill": at_kill["claims"],
            "leaks_after_ttl": _leaks(double, "killed"),
            "reaped_within_s": round(time.monotonic() - killed_at, 2),
            "ttl": ttl,
        }
        with double.lock:
            unbound = [
                o
                for o in double.items("sandboxes", NS)
                if "agents.x-k8s.io/claim" not in (o["metadata"].get("labels") or {})
            ]
            result["kill"]["pods_left"] = len(double.pods) - len(unbound)
    return result


def _ready(double: Any) -> int:
    with double.lock:
        pool = double.get("sandboxwarmpools", NS, "burst")
        return int((pool or {}).get("status", {}).get("readyReplicas", 0))


def summary_lines(result: dict[str, Any]) -> list[str]:
    b, k = result["burst"], result["kill"]
    rate = result["api_rate"]
    same = b["api_requests"] == b["client_api_requests"]
    return [
        f"requests={result['requests']} claimed={b['claimed']} errors={b['errors']} "
        f"seconds={b['seconds']:.1f}",
        # when the client's API limiter let each request out
        f"client: api_requests={b['client_api_requests']} "
        f"max_1s_window={b['client_max_1s_window']}",
        # arrival times at the double: what the API server counts
        f"server: api_requests={b['api_requests']} mean_rps={b['api_requests_per_s_mean']:.1f} "
        f"max_1s_window={b['api_requests_max_1s_window']} (api_rate {rate:g}/s: "
        f"{'OK' if b['api_requests_max_1s_window'] <= rate else 'EXCEEDED'}; "
        f"{'same count both sides' if same else 'COUNTS DIFFER'})",
        f"claim_p50={b['claim_p50'] * 1000:.0f}ms claim_p99={b['claim_p99'] * 1000:.0f}ms "
        f"start_p50={b['start_p50']:.2f}s start_p99={b['start_p99']:.2f}s "
        f"(queue wait included)",
        f"injected={b['injected']} watch_drops={b['watch_drops']} leaks_after={b['leaks_after']}",
        f"SIGKILL: claims_at_kill={k['claims_at_kill']} leaks_after_ttl={k['leaks_after_ttl']} "
        f"pods_left={k['pods_left']} reaped_within={k['reaped_within_s']}s (ttl {k['ttl']}s)",
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.control_plane")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--api-rate", type=float, default=150.0)
    parser.add_argument("--api-burst", type=int, default=10)
    parser.add_argument("--max-starting", type=int, default=128)
    parser.add_argument("--error-rate", type=float, default=0.05)
    parser.add_argument("--drop-watch-after", type=int, default=200)
    parser.add_argument("--kill-after", type=int, default=100)
    parser.add_argument("--ttl", type=int, default=5)
    parser.add_argument("--json", help="also write the result here")
    ns = parser.parse_args(argv)
    result = run(
        requests=ns.requests,
        pool=ns.pool,
        api_rate=ns.api_rate,
        api_burst=ns.api_burst,
        max_starting=ns.max_starting,
        error_rate=ns.error_rate,
        drop_watch_after=ns.drop_watch_after,
        kill_after=ns.kill_after,
        ttl=ns.ttl,
    )
    text = json.dumps(result, indent=2)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    print(text)
    for line in summary_lines(result):
        print(line)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker_main()
    else:
        sys.exit(main())

__all__ = ["max_window", "run", "summary_lines"]
