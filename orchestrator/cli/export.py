"""``agentic-rollout export``: a run's trajectories as SFT data, filtered (see
:mod:`orchestrator.export`)."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.export import FIELDS, FORMATS


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write trajectories as SFT data (messages, sharegpt, parquet), filtered",
        description="Export a run's trajectories for supervised fine-tuning. "
        '--where keeps the ones that match, e.g. "status=completed and reward>=1" '
        "(fields: " + ", ".join(FIELDS) + ", metadata.KEY; and/or/not, parentheses).",
    )
    p.add_argument("source", help="run folder or trajectories JSONL")
    p.add_argument("--format", choices=FORMATS, default="messages")
    p.add_argument("--where", help='filter, e.g. "status=completed and reward>=1"')
    p.add_argument("-o", "--output", help="output file (default: sft.<format>.jsonl)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    default = "sft.parquet" if args.format == "parquet" else f"sft.{args.format}.jsonl"
    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.export import export

    result = export(args.source, args.output or default, fmt=args.format, where=args.where)
    print(
        f"wrote {result.written} trajectories to {result.output} ({args.format}); "
        f"{result.skipped} filtered out, {result.bad_lines} unreadable lines skipped"
    )
    return 0
