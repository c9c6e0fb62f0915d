"""``agentic-rollout run``: a batch of trajectories (tasks JSONL, a dataset, ``harbor:PATH`` or
one ``--prompt``), one sandbox each, appended to OUTPUT/trajectories.jsonl."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.cli.common import (
    add_run_options,
    announce,
    load_run_tasks,
    print_summary,
    report_bad_lines,
    rollout_config,
    run_async,
    run_with_progress,
    serve_metrics,
)
from orchestrator.cli.harbor import cmd_run_harbor
from orchestrator.runner import AgenticRollout


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run agent trajectories (tasks JSONL or one --prompt), one sandbox each",
        description="Run a batch of trajectories concurrently, one sandbox per trajectory, and "
        "append each finished trajectory to OUTPUT/trajectories.jsonl. The setup is checked "
        "first (preflight). Rerunning with the same output skips ids whose stored outcome is "
        "final and retries infrastructure failures (see --retry). Exit code 1 if a task line "
        "was unreadable or a trajectory failed for infrastructure reasons (LLM unreachable, "
        "sandbox died), 2 on a configuration/preflight error, 128+N on signal N.",
    )
    run.add_argument(
        "tasks",
        nargs="?",
        help="JSONL file ({id, prompt, ...} per line), a parquet/arrow dataset, or "
        "harbor:PATH (a Harbor task folder or a folder of them)",
    )
    run.add_argument(
        "--oracle", action="store_true", help="harbor: run solution/solve.sh instead of a model"
    )
    run.add_argument("--prompt", help="run a single prompt instead of a file")
    run.add_argument("--id", help="task id for --prompt")
    add_run_options(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    import time as _time

    if (args.tasks or "").startswith("harbor:"):
        return cmd_run_harbor(args, rollout_config(args), print_summary)
    config = rollout_config(args)
    tasks, bad = load_run_tasks(args)
    bad_errors = report_bad_lines(args.tasks, bad)
    if not tasks:
        print("agentic-rollout: no runnable task", file=sys.stderr)
        return 1
    rollout = AgenticRollout(config)
    announce(rollout, len(tasks))
    serve_metrics(args)
    t0 = _time.monotonic()
    summary = run_async(
        run_with_progress(rollout, tasks, show_progress=not args.no_progress), rollout=rollout
    )
    out = config.trajectory_file
    print_summary(summary, _time.monotonic() - t0, str(out) if out is not None else None)
    if summary.unsaved:
        print(
            f"agentic-rollout: {len(summary.unsaved)} trajectories could not be saved "
            f"({summary.unsaved[0].save_error}); the ones already in the file are "
            "intact, and a rerun redoes the unsaved ones",
            file=sys.stderr,
        )
        return 2
    return 1 if (summary.infrastructure_failures or bad_errors) else 0
