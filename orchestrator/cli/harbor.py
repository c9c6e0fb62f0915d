"""``agentic-rollout harbor validate PATH`` and ``run harbor:PATH [--oracle]`` (called by run)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import AgenticRolloutError


def load_harbor(path: str) -> tuple[list[Any], list[str]]:
    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.harbor.run import build_images
    from orchestrator.harbor.task import load_harbor_tasks

    tasks, errors = load_harbor_tasks(path)
    for err in errors:
        print(f"rejected: {err}", file=sys.stderr)
    built, failed = asyncio.run(build_images(tasks)) if tasks else ([], [])
    for err in failed:
        print(f"rejected: {err}", file=sys.stderr)
    return built, errors + failed


def cmd_run_harbor(
    args: argparse.Namespace, config: Any, print_summary: Callable[[Any, float, Any], None]
) -> int:
    """``agentic-rollout run harbor:PATH``: the model (or ``--oracle``) on each task, verified."""
    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.harbor.run import run_harbor

    path = args.tasks[len("harbor:") :]
    tasks, bad = load_harbor(path)
    if not tasks:
        print("agentic-rollout: no runnable Harbor task", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    summary = asyncio.run(run_harbor(tasks, config, policy="oracle" if args.oracle else "model"))
    print_summary(
        summary,
        time.monotonic() - t0,
        config.trajectory_save_path if config.save_trajectories else None,
    )
    for t in summary.trajectories:
        reason = t.reward_details.get("reason")
        why = f"  ({reason})" if reason else ""
        print(f"{t.request_id}: {t.status.value} reward={t.reward}{why}")
    return 1 if (summary.infrastructure_failures or bad) else 0


def cmd_harbor(args: argparse.Namespace) -> int:
    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.harbor.run import validate

    if args.harbor_command != "validate":  # argparse restricts the choices
        raise AgenticRolloutError(f"unknown harbor command {args.harbor_command!r}")
    tasks, bad = load_harbor(args.path)
    sandbox: dict[str, Any] = {"type": "docker"}
    if args.docker_host:
        sandbox["docker_host"] = args.docker_host
    config = AgenticRolloutConfig(sandbox=sandbox, concurrent_requests=args.concurrency)
    rows = asyncio.run(validate(tasks, config)) if tasks else []
    for row in rows:
        verdict = "valid" if row.ok else f"INVALID: {row.reason}"
        print(f"{row.task}: oracle reward={row.oracle} empty reward={row.empty}: {verdict}")
    invalid = sum(not r.ok for r in rows) + len(bad)
    print(f"valid={len(rows) - sum(not r.ok for r in rows)} invalid={invalid}")
    return 1 if invalid else 0


def add_parser(sub: Any) -> None:
    harbor = sub.add_parser(
        "harbor",
        help="Harbor task folders: validate (the oracle passes, doing nothing fails)",
        description="Harbor tasks (instruction.md, task.toml, environment/, tests/test.sh, "
        "solution/solve.sh). Run them with `agentic-rollout run harbor:PATH [--oracle]`.",
    )
    harbor_sub = harbor.add_subparsers(dest="harbor_command", required=True)
    val = harbor_sub.add_parser(
        "validate", help="build each task offline; the oracle must score 1, doing nothing < 1"
    )
    val.add_argument("path", help="a Harbor task folder or a folder of them")
    val.add_argument("--concurrency", type=int, default=2, help="sandboxes at once")
    val.add_argument("--docker-host", help="daemon URL")
    harbor.set_defaults(func=cmd_harbor)
