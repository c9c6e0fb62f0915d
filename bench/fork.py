"""``python -m bench.fork``: a group of n sandboxes from one whose setup took >= 10 s.

In one run, one image (Docker):

(a) one cold start (sandbox from nothing to the agent answering), median of ``starts``;
(b) baseline: n cold starts + n setups, all at once (what a group costs without fork);
(c) ``fork(n, method="image")``: ``docker commit`` of the prepared sandbox, n sandboxes started
    from the image, sessions restored; wall from the call to all n ready;
(d) ``fork(n, method="diff")``: n sandboxes started from the parent's image, then the
    filesystem's changes since the parent started streamed from it once into all n;
(e) ``fork(n, into=blanks)``: the n blank sandboxes were started while the setup ran (as a
    group rollout does), then the changes and sessions are streamed into them; wall from the
    call to all n ready.

Prints JSON, then ``key=value`` lines. Ratios are against (a), measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

from orchestrator.sandbox.docker import DockerSandboxConfig

SETUP = (
    "sleep {seconds}; mkdir -p /workspace/proj/pkg && cd /workspace/proj && "
    'seq 1 200000 > data.txt && for i in $(seq 1 50); do echo "x = $i" > pkg/m$i.py; done && '
    "mkdir -p /usr/local/lib/bench-site && cp pkg/*.py /usr/local/lib/bench-site/ && "
    "export PREPARED=1"
)


async def _cold(config: DockerSandboxConfig) -> float:
    t0 = time.perf_counter()
    async with config.build() as sb:
        elapsed = time.perf_counter() - t0
        await sb.run("true")
    return elapsed


async def _verify(children: list[Any]) -> None:
    for child in children:
        # outside the work directory too (as a pip install would write)
        out = await child.run(
            'pwd; echo "$PREPARED"; wc -l < data.txt; ls /usr/local/lib/bench-site | wc -l'
        )
        if out.output.split() != ["/workspace/proj", "1", "200000", "50"]:
            raise RuntimeError(f"fork child {child.name} lacks the prepared state: {out.output}")


async def run(
    *,
    image: str = "agentic-rollout/sandbox:latest",
    n: int = 8,
    setup_seconds: float = 10.0,
    starts: int = 3,
) -> dict[str, Any]:
    run_id = f"bench-fork-{uuid.uuid4().hex[:6]}"
    config = DockerSandboxConfig(image=image, run_id=run_id, workdir="/workspace")
    setup = SETUP.format(seconds=setup_seconds)
    await _cold(config)  # warm-up: daemon API probe, image in page cache
    cold = statistics.median([await _cold(config) for _ in range(starts)])

    # (b) n cold starts + n setups, at once
    async def start_and_setup() -> None:
        async with config.build() as sb:
            result = await sb.run(setup, timeout=setup_seconds + 120)
            if not result.ok:
                raise RuntimeError(f"setup failed: {result.output[-300:]}")

    t0 = time.perf_counter()
    await asyncio.gather(*(start_and_setup() for _ in range(n)))
    baseline = time.perf_counter() - t0

    async with config.build() as parent:
        t0 = time.perf_counter()
        assert (await parent.run(setup, timeout=setup_seconds + 120)).ok
        setup_took = time.perf_counter() - t0

        # (c) fork by commit, (d) by diff into fresh children
        forks = {}
        for method in ("image", "diff"):
            t0 = time.perf_counter()
            children = await parent.fork(n, method=method)
            forks[method] = time.perf_counter() - t0
            try:
                await _verify(children)
            finally:
                await asyncio.gather(*(c.close() for c in children))
        fork_commit, fork_diff = forks["image"], forks["diff"]

        # (d) blanks started while a setup runs (the parent reruns its setup meanwhile)
        blanks = [config.build() for _ in range(n)]
        t0 = time.perf_counter()
        await asyncio.gather(
            parent.run(setup, timeout=setup_seconds + 120), *(b.start() for b in blanks)
        )
        overlapped = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            await parent.fork(n, into=blanks)
            fork_into = time.perf_counter() - t0
            await _verify(blanks)
        finally:
            await asyncio.gather(*(b.close() for b in blanks))
    return {
        "image": image,
        "n": n,
        "cold_start_s": round(cold, 3),
        "setup_s": round(setup_took, 3),
        "baseline_n_cold_plus_setup_s": round(baseline, 3),
        "fork_commit_s": round(fork_commit, 3),
        "fork_commit_over_cold": round(fork_commit / cold, 2),
        "fork_diff_s": round(fork_diff, 3),
        "fork_diff_over_cold": round(fork_diff / cold, 2),
        "setup_with_blank_starts_s": round(overlapped, 3),
        "fork_into_started_s": round(fork_into, 3),
        "fork_into_started_over_cold": round(fork_into / cold, 2),
        "baseline_over_fork_commit": round(baseline / (setup_took + fork_commit), 2),
        "baseline_over_setup_plus_fork_into": round(baseline / (overlapped + fork_into), 2),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    n = result["n"]
    return [
        f"cold_start={result['cold_start_s']}s setup={result['setup_s']}s",
        f"{n}_cold_starts_plus_{n}_setups={result['baseline_n_cold_plus_setup_s']}s",
        f"fork_{n}_image(commit)={result['fork_commit_s']}s "
        f"({result['fork_commit_over_cold']}x cold)",
        f"fork_{n}_diff(fresh children)={result['fork_diff_s']}s "
        f"({result['fork_diff_over_cold']}x cold)",
        f"fork_{n}_diff_into_started={result['fork_into_started_s']}s "
        f"({result['fork_into_started_over_cold']}x cold; blanks started during setup: "
        f"setup+starts {result['setup_with_blank_starts_s']}s)",
        f"group of {n} ready: {n} cold starts + {n} setups "
        f"{result['baseline_n_cold_plus_setup_s']}s vs setup (blanks starting) + fork into "
        f"{round(result['setup_with_blank_starts_s'] + result['fork_into_started_s'], 3)}s "
        f"({result['baseline_over_setup_plus_fork_into']}x faster)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fork", description=__doc__)
    parser.add_argument("--image", default="agentic-rollout/sandbox:latest")
    parser.add_argument("-n", type=int, default=8)
    parser.add_argument("--setup-seconds", type=float, default=10.0)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(
        run(image=args.image, n=args.n, setup_seconds=args.setup_seconds, starts=args.starts)
    )
    print(json.dumps(result, indent=2))
    for line in summary_lines(result):
        print(line)


if __name__ == "__main__":
    main()
