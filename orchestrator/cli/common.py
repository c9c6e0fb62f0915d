"""What several subcommands share: signal handling around the event loop, the run options and
the config they build, the progress bar and the summary table.

Every exit path cleans up: SIGINT, SIGTERM and SIGHUP cancel the running batch (its sandboxes
close and, once every worker thread is done, whatever this run still labels is removed),
then the command exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar, get_args

from orchestrator import metrics
from orchestrator.agent_settings import ToolFormatName
from orchestrator.config import AgenticRolloutConfig, resolve_retry
from orchestrator.exceptions import AgenticRolloutError
from orchestrator.tasks import Task, load_tasks

#: the source checkout (examples/, sandbox_images/, bench/ live there, not in the wheel)
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop; raised after cleanup, exit code 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Outside the event loop (a demo's server starting...): a signal raises Interrupted, so
    ``with`` blocks and ``finally`` clauses run."""
    for sig in SIGNALS:
        signal.signal(sig, _raise_interrupted)


def run_async(coro: Coroutine[Any, Any, T], *, rollout: Any = None) -> T:
    """``asyncio.run(coro)`` where SIGINT/SIGTERM/SIGHUP cancel it (so every ``async with``
    sandbox closes) and raise :class:`Interrupted` once the loop is closed. With ``rollout``,
    its leftover containers are removed after the loop's worker threads have all finished (a
    container being created in a thread when the signal came exists only then)."""
    received: list[int] = []

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(sig: int) -> None:
            if not received:
                print(
                    f"agentic-rollout: {signal.Signals(sig).name}: stopping, closing sandboxes",
                    file=sys.stderr,
                )
                task.cancel()
            received.append(sig)

        for sig in SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await coro
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not received:
            raise
        raise Interrupted(received[0]) from None
    finally:
        install_signal_handlers()  # remove_signal_handler reset them to the defaults
        if received and rollout is not None:
            try:
                asyncio.run(rollout.remove_sandboxes())
            except Exception as exc:
                print(f"agentic-rollout: cleanup failed: {exc}", file=sys.stderr)


def parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AgenticRolloutError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def rollout_config(args: argparse.Namespace) -> Any:

    overrides: dict[str, Any] = parse_sets(args.set or [])
    flag_map = {
        "agent_type": args.agent,
        "max_steps": args.max_steps,
        "concurrent_requests": args.concurrency,
        "tool_format": args.tool_format,
        "llm.model": args.model,
        "llm.base_url": args.base_url,
        "llm.provider": args.provider,
        "sandbox.type": args.backend,
        "sandbox.image": args.image,
        "max_tokens_per_step": args.max_tokens,
        "temperature": args.temperature,
        "retry_outcomes": getattr(args, "retry", None),
    }
    for key, value in flag_map.items():
        if value is not None:
            overrides.setdefault(key, value)
    if getattr(args, "no_preflight", False):
        overrides["preflight"] = False
    if args.output:
        overrides["trajectory_save_path"] = str(Path(args.output) / "trajectories.jsonl")
    if args.backend == "none":
        overrides.pop("sandbox.image", None)
    return AgenticRolloutConfig.load(args.config, **overrides)


def load_run_tasks(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:

    if args.prompt:
        # without --id the id comes from the prompt: another prompt is another trajectory
        row = {"id": args.id, "prompt": args.prompt} if args.id else {"prompt": args.prompt}
        return [Task.from_any(row)], []
    if not args.tasks:
        raise AgenticRolloutError("give a tasks file (JSONL) or --prompt TEXT")
    return load_tasks(args.tasks, split=args.split)


async def run_with_progress(rollout: Any, tasks: list[Any], show_progress: bool) -> Any:
    import time as _time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    counts = {"running": 0, "failed": 0, "tool_calls": 0}
    planned = {"n": len(tasks)}
    if rollout.store is not None:  # an estimate for the bar; the run decides after its lock
        records = rollout.store.records()
        retry = resolve_retry(rollout.config.retry_outcomes)
        planned["n"] = sum(
            1 for t in tasks if t.id not in records or records[t.id].outcome.value in retry
        )
    started = _time.monotonic()
    progress = Progress(
        TextColumn("[bold]rollout"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "running {task.fields[running]} failed {task.fields[failed]} "
            "tool calls/s {task.fields[rate]}"
        ),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    )
    bar = progress.add_task("run", total=None, running=0, failed=0, rate="0.0")

    def on_event(kind: str, task: Any, traj: Any) -> None:
        if kind == "started":
            if progress.tasks[0].total is None:  # the first start: the plan is known
                progress.update(bar, total=planned["n"])
            counts["running"] += 1
        else:
            counts["running"] -= 1
            counts["tool_calls"] += len(traj.get_tool_calls())
            if traj.status.value in ("error", "timeout"):
                counts["failed"] += 1
            progress.advance(bar)
        rate = counts["tool_calls"] / max(1e-9, _time.monotonic() - started)
        progress.update(bar, running=counts["running"], failed=counts["failed"], rate=f"{rate:.1f}")

    with progress:
        return await rollout.run(tasks, on_event=on_event)


def print_summary(summary: Any, elapsed: float, output: str | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title=f"rollout summary (run {summary.run_id})" if summary.run_id else None)
    table.add_column("metric")
    table.add_column("value", justify="right")
    trajs = summary.trajectories
    by = summary.by_status
    mean = summary.mean_reward
    rows = [
        ("trajectories run", str(len(trajs))),
        *(
            (f"  {status}", str(by.get(status, 0)))
            for status in ("completed", "max_steps", "truncated", "error", "timeout")
        ),
        ("  retried (stored outcome)", _counts(summary.retried.values())),
        ("skipped (stored outcome is final)", _counts(summary.skipped_outcomes.values())),
        ("identical tasks run once", str(len(summary.deduplicated))),
        (
            "solved / scored / unscored",
            f"{len(summary.solved)} / {len(summary.scored)} / {len(summary.unscored)}",
        ),
        (
            "mean reward (all run; unscored = 0)",
            f"{mean:.3f} over {len(trajs)}" if mean is not None else "-",
        ),
        ("tool calls", str(sum(len(t.get_tool_calls()) for t in trajs))),
        ("tokens", str(sum(t.usage.total_tokens for t in trajs))),
        ("LLM seconds (sum)", f"{sum(t.llm_seconds for t in trajs):.1f}"),
        ("tool seconds (sum)", f"{sum(t.tool_seconds for t in trajs):.1f}"),
        ("wall seconds", f"{elapsed:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for t in summary.infrastructure_failures:
        last = t.errors[-1] if t.errors else None
        console.print(
            f"[red]{escape(t.request_id)}[/red] {t.status.value}: "
            + escape(f"{last.type}: {last.message}"[:400] if last else "")
        )
    if summary.infrastructure_failures:
        console.print(
            f"{len(summary.infrastructure_failures)} infrastructure failure(s): fix the cause "
            "and rerun the same command; they are retried (--retry none keeps them)"
        )
    if output:
        console.print(f"trajectories: {output}")


def _counts(values: Any) -> str:
    """'3 (2 completed, 1 max_steps)' or '0'."""
    by: dict[str, int] = {}
    for v in values:
        by[v] = by.get(v, 0) + 1
    total = sum(by.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(f"{n} {k}" for k, n in sorted(by.items())) + ")"


def report_bad_lines(source: str | None, bad: list[Any]) -> int:
    """Print each unusable task line; the number of errors (warnings not counted)."""
    errors = 0
    for err in bad:
        if getattr(err, "level", "error") == "warning":
            print(f"{source}:{err.line}: note: {err.message}", file=sys.stderr)
        else:
            errors += 1
            print(f"{source}:{err.line}: skipped: {err.message}", file=sys.stderr)
    return errors


def announce(rollout: Any, n_tasks: int) -> None:
    out = rollout.config.trajectory_file
    print(
        f"agentic-rollout: run {rollout.run_id}: {n_tasks} task(s)"
        + (f" -> {out}" if out is not None else " (not saved)")
        + f"; leftover sandboxes, if any: agentic-rollout gc --run {rollout.run_id}",
        file=sys.stderr,
    )


def add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", help="YAML config (AgenticRolloutConfig fields)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (dotted keys: llm.model=gpt-4o); repeatable",
    )
    run.add_argument("--agent", help="agent type: react, tool, coding, or module:Class")
    run.add_argument("--tool-format", choices=get_args(ToolFormatName))
    run.add_argument(
        "--backend",
        choices=["docker", "kubernetes", "agent-sandbox", "kodo", "local", "none"],
        help="sandbox backend",
    )
    run.add_argument("--image", help="sandbox image (docker)")
    run.add_argument("--provider", choices=["openai", "anthropic"])
    run.add_argument("--model", help="model name")
    run.add_argument("--base-url", help="OpenAI/Anthropic-compatible endpoint")
    run.add_argument("--concurrency", type=int, help="trajectories (sandboxes) at once")
    run.add_argument("--max-steps", type=int)
    run.add_argument("--max-tokens", type=int, help="max tokens per model reply")
    run.add_argument("--temperature", type=float)
    run.add_argument("--output", help="output directory (default: from config)")
    run.add_argument("--split", help="split of a parquet/arrow dataset (e.g. test)")
    run.add_argument(
        "--retry",
        metavar="WHICH",
        help="stored outcomes to run again: infra (default: infrastructure failures), failed "
        "(everything not completed), all, none, or outcome names separated by commas "
        "(infra_error, task_error, format_error, timeout, max_steps, truncated, completed)",
    )
    run.add_argument(
        "--no-preflight",
        action="store_true",
        help="skip the checks before the first sandbox (image, LLM endpoint, agent/LLM fit)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on 127.0.0.1:PORT while running (needs the metrics extra)",
    )


def serve_metrics(args: argparse.Namespace) -> None:
    """--metrics-port: /metrics on loopback for the life of the command (a daemon thread)."""
    if getattr(args, "metrics_port", None) is None:
        return

    _server, port = metrics.serve(args.metrics_port)
    print(f"metrics: http://127.0.0.1:{port}/metrics", file=sys.stderr)
