"""``agentic-rollout bench NAME``: one subparser per benchmark, from the :data:`BENCHMARKS` table.

The benchmarks live in the source checkout's ``bench/`` folder, which is not installed with the
package: :func:`load` imports ``bench.<module>`` from the checkout this CLI runs from (a
checkout's root is put on ``sys.path`` only when the command runs), and says so when there is
none. Each benchmark prints its JSON result, then its ``key=value`` summary lines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from orchestrator.cli.common import REPO_ROOT
from orchestrator.exceptions import AgenticRolloutError

DEFAULT_IMAGE = "agentic-rollout/sandbox:latest"


def load(module: str) -> ModuleType:
    """``bench.<module>`` from the source checkout (bench/ is not part of the installed package)."""
    if not (REPO_ROOT / "bench" / "__init__.py").is_file():
        raise AgenticRolloutError(
            f"{REPO_ROOT / 'bench'} not found: benchmarks need a source checkout of agentic-rollout"
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module(f"bench.{module}")


@dataclass(frozen=True)
class Benchmark:
    help: str
    #: the benchmark's own options (``--json`` is added to every one)
    arguments: Callable[[argparse.ArgumentParser], None]
    #: runs it: (JSON result, summary lines)
    run: Callable[[argparse.Namespace], tuple[dict[str, Any], list[str]]]


def _image(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", default=DEFAULT_IMAGE)


def _rpc_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("--calls", type=int, default=400, help="RPC calls")
    p.add_argument("--exec-calls", type=int, default=40, help="docker exec calls")
    p.add_argument("--starts", type=int, default=7, help="sandbox starts")
    p.add_argument("--big-calls", type=int, default=10, help="1 MB-output calls")
    p.add_argument(
        "--peers",
        action="store_true",
        help="also SWE-ReX (run_in_session and execute; installed from PyPI into "
        "~/.cache/agentic-rollout on first use)",
    )
    p.add_argument("--docker-host")


def _rpc(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    rpc = load("rpc")
    result: dict[str, Any] = asyncio.run(
        rpc.run(
            image=args.image,
            calls=args.calls,
            exec_calls=args.exec_calls,
            starts=args.starts,
            big_calls=args.big_calls,
            peers=args.peers,
            docker_host=args.docker_host,
        )
    )
    return result, rpc.summary_lines(result)


def _soak_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("--trajectories", type=int, default=500, help="trajectories")
    p.add_argument("--fault-rate", type=float, default=0.12, help="share with a fault")
    p.add_argument("--concurrency", type=int, default=16, help="sandboxes at once")
    p.add_argument("--seconds", type=float, default=600, help="time bound")


def _soak(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    soak = load("soak")
    result: dict[str, Any] = asyncio.run(
        soak.run(
            trajectories=args.trajectories,
            fault_rate=args.fault_rate,
            concurrency=args.concurrency,
            seconds=args.seconds,
            image=args.image,
        )
    )
    return result, soak.summary_lines(result)


def _races_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("--rounds", type=int, default=20, help="rounds of each scenario")


def _races(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    races = load("races")
    result: dict[str, Any] = asyncio.run(races.run(rounds=args.rounds, image=args.image))
    return result, races.summary_lines(result)


def _startup_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("--starts", type=int, default=7, help="sandbox starts")
    p.add_argument("--pool-size", type=int, default=4, help="warm pool size")


def _startup(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    startup = load("startup")
    result: dict[str, Any] = asyncio.run(
        startup.run(image=args.image, starts=args.starts, pool_size=args.pool_size)
    )
    return result, startup.summary_lines(result)


def _scale_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("--levels", default="8,32,64", help="concurrency levels")
    p.add_argument("--per-slot", type=int, default=2, help="trajectories per slot")
    p.add_argument("--latency", type=float, default=0.2, help="simulated LLM s/turn")
    p.add_argument("--tool-calls", type=int, default=20, help="per trajectory")
    # the live mode (bench/scale.py's live_arguments has the same options for python -m
    # bench.scale, which also measures older checkouts whose CLI lacks them)
    p.add_argument(
        "--sandboxes",
        type=int,
        nargs="+",
        help="live mode instead of trajectories: levels of N sandboxes alive at once (1..256)",
    )
    p.add_argument("--rounds", type=int, default=30, help="live mode: calls per sandbox, phase")
    p.add_argument("--think", type=float, default=0.2, help="live mode: s between calls")
    p.add_argument("--max-seconds", type=float, default=600.0, help="live mode: s per level")


def _scale(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    scale = load("scale")
    if args.sandboxes:
        live: dict[str, Any] = scale.run_live_from_args(args)
        return live, scale.live_summary_lines(live)
    result: dict[str, Any] = asyncio.run(
        scale.run(
            levels=tuple(int(x) for x in args.levels.split(",")),
            per_slot=args.per_slot,
            latency=args.latency,
            tool_calls=args.tool_calls,
            image=args.image,
        )
    )
    return result, scale.summary_lines(result)


def _tools_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("--rounds", type=int, default=30, help="rounds per operation")


def _tool(kind: str) -> Callable[[argparse.Namespace], tuple[dict[str, Any], list[str]]]:
    def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
        tools = load("tools")
        result: dict[str, Any] = asyncio.run(tools.run(kind, image=args.image, rounds=args.rounds))
        return result, tools.summary_lines(result)

    return run


def _plots_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="bench/results", help="folder of bench JSON files")
    p.add_argument("--out", default="docs/benchmarks", help="where plots go")


def _plots(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    plots = load("plots")
    result: dict[str, Any] = plots.run(Path(args.results), Path(args.out))
    return result, plots.summary_lines(result)


def _fork_arguments(p: argparse.ArgumentParser) -> None:
    _image(p)
    p.add_argument("-n", type=int, default=8, help="children of the fork")
    p.add_argument("--setup-seconds", type=float, default=10.0, help="the setup's sleep")
    p.add_argument("--starts", type=int, default=3, help="cold starts (median)")


def _fork(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    fork = load("fork")
    result: dict[str, Any] = asyncio.run(
        fork.run(image=args.image, n=args.n, setup_seconds=args.setup_seconds, starts=args.starts)
    )
    return result, fork.summary_lines(result)


#: name -> benchmark, in the order ``bench --help`` lists them
BENCHMARKS: dict[str, Benchmark] = {
    "rpc": Benchmark(
        "our RPC vs docker exec per call, and sandbox ready time vs raw container create+start",
        _rpc_arguments,
        _rpc,
    ),
    "startup": Benchmark(
        "how long until a trajectory has a sandbox that answers (cold, warm pool)",
        _startup_arguments,
        _startup,
    ),
    "scale": Benchmark(
        "N concurrent sandboxes running trajectories with a simulated model; --sandboxes N..: "
        "N live sandboxes, tool-call latency, CPU split, memory per sandbox",
        _scale_arguments,
        _scale,
    ),
    "editor": Benchmark(
        "editor tool latency on a real tree vs docker exec", _tools_arguments, _tool("editor")
    ),
    "search": Benchmark(
        "search tool latency on a real tree vs docker exec", _tools_arguments, _tool("search")
    ),
    "soak": Benchmark(
        "many trajectories with random injected faults; counts lost, duplicated and leaked",
        _soak_arguments,
        _soak,
    ),
    "races": Benchmark(
        "the agent's kill and flood races (fork bombs, jobs killed at the pids limit, "
        "kill -9 -1), repeated; counts outputs that leaked into the next command",
        _races_arguments,
        _races,
    ),
    "fork": Benchmark(
        "fork of n from a sandbox whose setup took >= 10 s, beside n cold starts + n setups",
        _fork_arguments,
        _fork,
    ),
    "plots": Benchmark(
        "PNG plots and markdown tables from the benchmarks' JSON files", _plots_arguments, _plots
    ),
}


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="run a benchmark; prints JSON then key=value lines",
        description="Benchmarks. rpc: our RPC vs docker exec per call, and "
        "sandbox ready time vs raw container create+start. soak: many trajectories with random "
        "injected faults; counts lost, duplicated and leaked. Needs a source checkout (bench/).",
    )
    names = bench.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, benchmark in BENCHMARKS.items():
        p = names.add_parser(name, help=benchmark.help, description=benchmark.help)
        benchmark.arguments(p)
        p.add_argument("--json", metavar="PATH", help="also write the JSON result here")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    result, lines = BENCHMARKS[args.name].run(args)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    for line in lines:
        print(line)
    return 0
