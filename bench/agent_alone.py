"""The in-sandbox agent alone on pipes: CPU of the agent and of its session's bash per call.

No container, no orchestrator: the agent is started as a child of this script and driven with
sequential ``session.run`` requests, so the figures are the sandbox-side work of one call and
nothing else (compare two agent files one after the other, under the same load)::

    python -m bench.agent_alone [AGENT_PY] [--calls N] [--command true] [--syscalls]

``--syscalls`` also counts the system calls of the agent and of its bash per call (``strace
-c`` attached for the measured calls; slows them down, so its times are not comparable): a
figure that, unlike CPU time, does not move with the load of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
    ap.add_argument("--syscalls", action="store_true", help="count syscalls per call (strace)")
    args = ap.parse_args(argv)
    if args.syscalls and shutil.which("strace") is None:
        raise SystemExit("--syscalls needs strace on PATH")
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", args.agent],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=1 << 16,  # buffered: readline on a raw pipe reads one byte per read(2)
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def call(rid: int) -> dict[str, object]:
        req = {"id": rid, "method": "session.run", "params": {"command": args.command}}
        stdin.write((json.dumps(req) + "\n").encode())
        stdin.flush()
        reply: dict[str, object] = json.loads(stdout.readline())
        if "result" not in reply:
            raise SystemExit(f"agent answered {reply}")
        return reply

    try:
        for rid in range(50):  # warm-up: workers, bash, the first reads of /proc and cgroups
            call(rid)
        bashes = _children(proc.pid)
        tracers = [_strace(pid) for pid in [proc.pid, *bashes]] if args.syscalls else []
        before = {pid: _cpu_seconds(pid) for pid in [proc.pid, *bashes]}
        latencies = []
        wall = time.perf_counter()
        for rid in range(50, 50 + args.calls):
            t0 = time.perf_counter()
            call(rid)
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - wall
        used = {pid: _cpu_seconds(pid) - cpu for pid, cpu in before.items()}
        counts = [_strace_total(t) for t in tracers]
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
    if counts:
        print(
            "agent_alone syscalls_per_call agent=%.1f bash=%.1f"
            % (counts[0] / n, sum(counts[1:]) / n)
        )
    return 0


def _strace(pid: int) -> tuple[subprocess.Popen[bytes], Path]:
    """``strace -c`` attached to ``pid`` (all its threads), once it says it is attached."""
    out = Path(f"/tmp/agent-alone-strace-{os.getpid()}-{pid}")
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(pid)], stderr=subprocess.PIPE
    )
    assert tracer.stderr is not None
    tracer.stderr.readline()  # "strace: Process N attached": counting from here on
    return tracer, out


def _strace_total(tracer: tuple[subprocess.Popen[bytes], Path]) -> int:
    """Stop one tracer and read its total number of calls."""
    proc, out = tracer
    proc.terminate()
    proc.wait()
    try:
        for line in out.read_text().splitlines():
            if line.rstrip().endswith("total"):
                return int(line.split()[3])
    finally:
        out.unlink(missing_ok=True)
    raise SystemExit(f"no total in the strace summary of {out}")


if __name__ == "__main__":
    raise SystemExit(main())
