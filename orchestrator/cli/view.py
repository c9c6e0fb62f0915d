"""``agentic-rollout view``: a run's trajectories as one self-contained HTML report (see
:mod:`orchestrator.viewer`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    view = sub.add_parser(
        "view",
        help="write a self-contained HTML report of trajectories (table, filters, details)",
        description="Render a run's trajectories (RUN_DIR with trajectories.jsonl, or a JSONL "
        "file) as one HTML file that needs no network: filter and search the table, open a "
        "trajectory to read its messages, tool calls, outputs, patch and reward.",
    )
    view.add_argument("source", help="run folder or trajectories JSONL")
    view.add_argument("-o", "--output", help="HTML file to write (default: <source>.html)")
    view.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    output = Path(args.output or Path(args.source).with_suffix("").name + ".html")
    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.viewer import write_report

    run = write_report(args.source, output)
    for file, number, reason in run.bad_lines:
        print(f"{file}:{number}: unreadable, skipped: {reason}")
    print(
        f"wrote {output} ({len(run.trajectories)} trajectories, "
        f"{len(run.bad_lines)} unreadable lines)"
    )
    return 0 if run.trajectories or not run.bad_lines else 1
