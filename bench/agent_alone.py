"""The in-sandbox agent alone on pipes: CPU of the agent and of its session's bash per call.

No container, no orchestrator: the agent is started as a child of this script and driven with
sequential ``session.run`` requests, so the figures are the sandbox-side work of one call and
nothing else (compare two agent files one after the other, under the same load)::

    python -m bench.agent_alone [AGENT_PY] [--calls N] [--command true]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_AGENT = Path(__file__).resolve().parent.parent / "orchestrator/sandbox/agent/agent.py"


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (bash is started by whichever thread ran the call)."""
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        out += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("agent", nargs="?", default=str(DEFAULT_AGENT))
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--command", default="true")
    args = ap.parse_args(argv)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", args.agent],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def call(rid: int) -> dict[str, object]:
        req = {"id": rid, "method": "session.run", "params": {"command": args.command}}
        stdin.write((json.dumps(req) + "\n").encode())
        reply: dict[str, object] = json.loads(stdout.readline())
        if "result" not in reply:
            raise SystemExit(f"agent answered {reply}")
        return reply

    try:
        for rid in range(50):  # warm-up: workers, bash, the first reads of /proc and cgroups
            call(rid)
        bashes = _children(proc.pid)
        before = {pid: _cpu_seconds(pid) for pid in [proc.pid, *bashes]}
        latencies = []
        wall = time.perf_counter()
        for rid in range(50, 50 + args.calls):
            t0 = time.perf_counter()
            call(rid)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - wall
        used = {pid: _cpu_seconds(pid) - cpu for pid, cpu in before.items()}
    finally:
        stdin.close()
        proc.wait()
    latencies.sort()
    n = args.calls
    print(
        "agent_alone calls=%d wall_per_call_ms=%.3f p50_ms=%.3f agent_cpu_ms=%.3f bash_cpu_ms=%.3f"
        % (
            n,
            wall / n * 1e3,
            latencies[n // 2] * 1e3,
            used[proc.pid] / n * 1e3,
            sum(used[b] for b in bashes) / n * 1e3,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
