"""``agentic-rollout show``: trajectories from a JSONL file, pretty-printed in the terminal."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from orchestrator.store import read_trajectories


def add_parser(sub: Any) -> None:
    show = sub.add_parser("show", help="pretty-print trajectories from a JSONL file")
    show.add_argument("file")
    show.add_argument("--id", help="only this request id")
    show.add_argument("--max-chars", type=int, default=4000, help="cut long step contents")
    show.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    console = Console()
    shown = 0
    for traj in read_trajectories(args.file):
        if args.id and traj.request_id != args.id:
            continue
        shown += 1
        console.rule(
            f"[bold]{escape(traj.request_id)}[/bold]  {escape(traj.agent_type)}  "
            f"{traj.status.value}  reward={traj.reward}  tokens={traj.usage.total_tokens}"
        )
        colors = {
            "observation": "cyan",
            "thought": "white",
            "action": "yellow",
            "tool_call": "yellow",
            "tool_result": "green",
            "final_answer": "bold magenta",
            "error": "red",
        }
        for step in traj.steps:
            kind = step.step_type.value
            title = f"{kind} (turn {step.turn})"
            if step.tool_name:
                title += f" {step.tool_name}"
            body = (
                step.content
                if kind != "tool_call"
                else json.dumps(step.tool_args, ensure_ascii=False)
            )
            if kind == "error" and step.metadata.get("reply") is not None:
                body += f"\n--- model reply ---\n{step.metadata['reply']}"
            console.print(
                Panel(
                    Text(body[: args.max_chars]),
                    title=title,
                    border_style=colors.get(kind, "white"),
                    title_align="left",
                )
            )
        if traj.final_response is not None:
            console.print(
                Panel(
                    Text(traj.final_response[: args.max_chars]),
                    title="final response",
                    border_style="magenta",
                    title_align="left",
                )
            )
        for err in traj.errors:
            console.print(f"[red]error[/red] {escape(err.type)}: {escape(err.message)}")
    if not shown:
        print(
            f"agentic-rollout: no trajectory{' ' + args.id if args.id else ''} in {args.file}",
            file=sys.stderr,
        )
        return 1
    return 0
