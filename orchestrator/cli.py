"""``agentic-rollout`` command line.

Subcommands import what they need when they run, so ``--help`` works without Docker installed.
Logging is configured here (AGENTIC_LOG_LEVEL), never at import time.

Every exit path cleans up: SIGINT, SIGTERM and SIGHUP cancel the running batch (its sandboxes
close and, once every worker thread is done, whatever this run still labels is removed),
then the command exits with 128 + the signal number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.exceptions import AgenticRolloutError

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop; raised after cleanup, exit code 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _install_signal_handlers() -> None:
    """Outside the event loop (a demo's server starting...): a signal raises Interrupted, so
    ``with`` blocks and ``finally`` clauses run."""
    for sig in _SIGNALS:
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

        for sig in _SIGNALS:
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            return await coro
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if not received:
            raise
        raise Interrupted(received[0]) from None
    finally:
        _install_signal_handlers()  # remove_signal_handler reset them to the defaults
        if received and rollout is not None:
            try:
                asyncio.run(rollout.remove_sandboxes())
            except Exception as exc:
                print(f"agentic-rollout: cleanup failed: {exc}", file=sys.stderr)


def _cmd_gc(args: argparse.Namespace) -> int:
    if args.kubernetes:
        from orchestrator.sandbox.gc import reap_kubernetes
        from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

        config = KubernetesSandboxConfig(
            namespace=args.namespace, kubeconfig=args.kubeconfig, in_cluster=args.in_cluster
        )
        pods = reap_kubernetes(config, run_id=args.run, everything=args.all, dry_run=args.dry_run)
        for name, reason in pods:
            print(f"{'would delete' if args.dry_run else 'deleted'} pod {name}: {reason}")
        print(f"reaped={0 if args.dry_run else len(pods)} found={len(pods)}")
        return 0
    from orchestrator.sandbox.gc import reap_docker

    reaped = reap_docker(
        docker_host=args.docker_host, run_id=args.run, everything=args.all, dry_run=args.dry_run
    )
    for r in reaped:
        verb = "would remove" if args.dry_run else ("removed" if r.removed else "FAILED to remove")
        print(f"{verb} {r.container_id} {r.name}: {r.reason}")
    print(f"reaped={sum(r.removed for r in reaped)} found={len(reaped)}")
    return 0 if all(r.removed or args.dry_run for r in reaped) else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.name == "rpc":
        from bench import rpc

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
        lines = rpc.summary_lines(result)
    elif args.name == "soak":
        from bench import soak

        result = asyncio.run(
            soak.run(
                trajectories=args.trajectories,
                fault_rate=args.fault_rate,
                concurrency=args.concurrency,
                seconds=args.seconds,
                image=args.image,
            )
        )
        lines = soak.summary_lines(result)
    elif args.name == "startup":
        from bench import startup

        result = asyncio.run(
            startup.run(image=args.image, starts=args.starts, pool_size=args.pool_size)
        )
        lines = startup.summary_lines(result)
    elif args.name == "scale":
        from bench import scale

        result = asyncio.run(
            scale.run(
                levels=tuple(int(x) for x in args.levels.split(",")),
                per_slot=args.per_slot,
                latency=args.latency,
                tool_calls=args.tool_calls,
                image=args.image,
            )
        )
        lines = scale.summary_lines(result)
    elif args.name in ("editor", "search"):
        from bench import tools as tools_bench

        result = asyncio.run(tools_bench.run(args.name, image=args.image, rounds=args.rounds))
        lines = tools_bench.summary_lines(result)
    elif args.name == "plots":
        from bench import plots

        result = plots.run(Path(args.results), Path(args.out))
        lines = plots.summary_lines(result)
    else:  # argparse restricts the choices
        raise AgenticRolloutError(f"unknown benchmark {args.name!r}")
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    for line in lines:
        print(line)
    return 0


def _cmd_build_images(args: argparse.Namespace) -> int:
    script = REPO_ROOT / "sandbox_images" / "build.sh"
    if not script.exists():
        raise AgenticRolloutError(
            f"{script} not found: build-images needs a source checkout of agentic-rollout"
        )
    return subprocess.call(["bash", str(script)])


def _cmd_shell(args: argparse.Namespace) -> int:
    from orchestrator.sandbox import sandbox_config

    values: dict[str, Any] = {"type": args.backend}
    if args.backend == "docker":
        values["image"] = args.image

    async def loop() -> None:
        async with sandbox_config(values).build() as sandbox:
            print(
                f"# {sandbox.describe()} ready in {sandbox.ready_seconds:.3f}s; "
                "commands run in one persistent bash session; Ctrl-D exits",
                file=sys.stderr,
            )
            while True:
                try:
                    line = await asyncio.to_thread(input, "sandbox$ ")
                except EOFError:
                    return
                result = await sandbox.run(line, timeout=args.timeout)
                sys.stdout.write(result.output)
                if result.timed_out:
                    print(f"[timed out after {args.timeout}s]")
                elif result.exit_code:
                    print(f"[exit {result.exit_code}]")

    run_async(loop())
    return 0


def _parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AgenticRolloutError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _rollout_config(args: argparse.Namespace) -> Any:
    from orchestrator.config import AgenticRolloutConfig

    overrides: dict[str, Any] = _parse_sets(args.set or [])
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


def _load_run_tasks(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from orchestrator.tasks import Task, load_tasks

    if args.prompt:
        # without --id the id comes from the prompt: another prompt is another trajectory
        row = {"id": args.id, "prompt": args.prompt} if args.id else {"prompt": args.prompt}
        return [Task.from_any(row)], []
    if not args.tasks:
        raise AgenticRolloutError("give a tasks file (JSONL) or --prompt TEXT")
    return load_tasks(args.tasks, split=args.split)


async def _run_with_progress(rollout: Any, tasks: list[Any], show_progress: bool) -> Any:
    import time as _time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    counts = {"running": 0, "failed": 0, "tool_calls": 0}
    planned = {"n": len(tasks)}
    if rollout.store is not None:  # an estimate for the bar; the run decides after its lock
        records = rollout.store.records()
        retry = rollout._retry
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


def _print_summary(summary: Any, elapsed: float, output: str | None) -> None:
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


def _report_bad_lines(source: str | None, bad: list[Any]) -> int:
    """Print each unusable task line; the number of errors (warnings not counted)."""
    errors = 0
    for err in bad:
        if getattr(err, "level", "error") == "warning":
            print(f"{source}:{err.line}: note: {err.message}", file=sys.stderr)
        else:
            errors += 1
            print(f"{source}:{err.line}: skipped: {err.message}", file=sys.stderr)
    return errors


def _announce(rollout: Any, n_tasks: int) -> None:
    out = rollout.config.trajectory_file
    print(
        f"agentic-rollout: run {rollout.run_id}: {n_tasks} task(s)"
        + (f" -> {out}" if out is not None else " (not saved)")
        + f"; leftover sandboxes, if any: agentic-rollout gc --run {rollout.run_id}",
        file=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    import time as _time

    from orchestrator.runner import AgenticRollout

    if (args.tasks or "").startswith("harbor:"):
        from orchestrator.harbor.cli import cmd_run_harbor

        return cmd_run_harbor(args, _rollout_config(args), _print_summary)
    config = _rollout_config(args)
    tasks, bad = _load_run_tasks(args)
    bad_errors = _report_bad_lines(args.tasks, bad)
    if not tasks:
        print("agentic-rollout: no runnable task", file=sys.stderr)
        return 1
    rollout = AgenticRollout(config)
    _announce(rollout, len(tasks))
    _serve_metrics(args)
    t0 = _time.monotonic()
    summary = run_async(
        _run_with_progress(rollout, tasks, show_progress=not args.no_progress), rollout=rollout
    )
    out = config.trajectory_file
    _print_summary(summary, _time.monotonic() - t0, str(out) if out is not None else None)
    if summary.unsaved:
        print(
            f"agentic-rollout: {len(summary.unsaved)} trajectories could not be saved "
            f"({summary.unsaved[0].metadata['save_error']}); the ones already in the file are "
            "intact, and a rerun redoes the unsaved ones",
            file=sys.stderr,
        )
        return 2
    return 1 if (summary.infrastructure_failures or bad_errors) else 0


def _cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    from orchestrator.store import read_trajectories

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


def _cmd_demo(args: argparse.Namespace) -> int:
    import time as _time

    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.local_llm import MODEL_ALIAS, LlamaServer
    from orchestrator.runner import AgenticRollout
    from orchestrator.tasks import load_tasks

    examples = REPO_ROOT / "examples"
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    tasks, bad = load_tasks(examples / "tasks" / "demo.jsonl")
    if bad:
        raise AgenticRolloutError(f"examples/tasks/demo.jsonl has bad lines: {bad}")
    print(
        f"starting llama.cpp (SmolLM2-135M) on 127.0.0.1; log: {output / 'llama-server.log'}",
        file=sys.stderr,
    )
    with LlamaServer(log_path=output / "llama-server.log") as server:
        config = AgenticRolloutConfig.load(
            examples / "config" / "demo.yaml",
            **{
                "llm.base_url": server.base_url,
                "llm.model": MODEL_ALIAS,
                "trajectory_save_path": str(output / "trajectories.jsonl"),
            },
        )
        from orchestrator.demo import demo_client

        rollout = AgenticRollout(config, llm_client=demo_client(config))
        _announce(rollout, len(tasks))
        t0 = _time.monotonic()
        # a signal here cancels the batch, then leaves this `with`: the server is stopped too
        summary = run_async(
            _run_with_progress(rollout, tasks, show_progress=not args.no_progress),
            rollout=rollout,
        )
    _print_summary(summary, _time.monotonic() - t0, config.trajectory_save_path)
    from orchestrator.demo import print_outcomes

    print_outcomes(summary.trajectories, tasks)
    print(f"look at one: agentic-rollout show {config.trajectory_save_path} --id {tasks[0].id}")
    print(f"or all of them in a browser: agentic-rollout view {output} -o {output}/report.html")
    return 1 if summary.infrastructure_failures else 0


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--config", help="YAML config (AgenticRolloutConfig fields)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (dotted keys: llm.model=gpt-4o); repeatable",
    )
    run.add_argument("--agent", help="agent type: react, tool, coding, or module:Class")
    run.add_argument("--tool-format", choices=["auto", "react", "json", "native", "hermes"])
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


def _serve_metrics(args: argparse.Namespace) -> None:
    """--metrics-port: /metrics on loopback for the life of the command (a daemon thread)."""
    if getattr(args, "metrics_port", None) is None:
        return
    from orchestrator import metrics

    _server, port = metrics.serve(args.metrics_port)
    print(f"metrics: http://127.0.0.1:{port}/metrics", file=sys.stderr)


def _swe_tasks(path: str, split: str | None = None) -> list[Any]:
    from orchestrator.swe.task import load_swe_tasks

    tasks, errors = load_swe_tasks(path, split=split)
    for err in errors:
        print(f"{path}: rejected: {err}", file=sys.stderr)
    if not tasks:
        raise AgenticRolloutError(f"no usable SWE task in {path}")
    return tasks


def _swe_sandbox(args: argparse.Namespace) -> dict[str, Any]:
    return {"type": "docker", **({"docker_host": args.docker_host} if args.docker_host else {})}


def _print_results(results: list[Any]) -> None:
    for r in results:
        mark = "RESOLVED" if r.resolved else "unresolved"
        reason = f"  ({r.reason[:200]})" if r.reason and not r.resolved else ""
        print(f"{r.instance_id}: {mark} f2p={r.fail_to_pass:.2f} p2p={r.pass_to_pass:.2f}{reason}")
    print(f"resolved={sum(r.resolved for r in results)} total={len(results)}")


def _cmd_swe(args: argparse.Namespace) -> int:
    from orchestrator.swe import run as swe

    tasks = _swe_tasks(args.tasks, getattr(args, "split", None))
    if args.swe_command == "validate":
        rows = run_async(
            swe.validate(tasks, sandbox=_swe_sandbox(args), concurrency=args.concurrency)
        )
        bad = 0
        for task, gold, empty in rows:
            ok = gold.resolved and not empty.resolved and empty.log != ""
            bad += not ok
            gold_text = "resolves" if gold.resolved else f"DOES NOT resolve ({gold.reason})"
            empty_text = "RESOLVES (broken task)" if empty.resolved else "does not resolve"
            print(f"{task.instance_id}: gold patch {gold_text}; empty patch {empty_text}")
        print(f"valid={len(rows) - bad} invalid={bad}")
        return 1 if bad else 0
    if args.swe_command == "eval":
        predictions = swe.load_predictions(args.predictions)
        for task in tasks:
            if task.instance_id not in predictions:
                print(f"no prediction for {task.instance_id}", file=sys.stderr)
        results = run_async(
            swe.eval_predictions(
                tasks,
                predictions,
                sandbox=_swe_sandbox(args),
                concurrency=args.concurrency,
                strict=args.strict_grading,
            )
        )
        if args.output:
            swe.write_reports(results, Path(args.output))
        _print_results(results)
        return 0
    config = _rollout_config(args)
    _serve_metrics(args)
    summary = run_async(
        swe.run_swe(
            tasks,
            config,
            eval_in_rollout_sandbox=args.eval_in_rollout_sandbox,
            strict_grading=args.strict_grading,
        )
    )
    out_dir = (config.trajectory_file or Path(".")).parent
    with (out_dir / "predictions.jsonl").open("a", encoding="utf-8") as f:
        for t in summary.trajectories:
            f.write(
                json.dumps(
                    {
                        "instance_id": t.request_id,
                        "model_name_or_path": config.llm.model,
                        "model_patch": t.metadata.get("patch"),
                    }
                )
                + "\n"
            )
    for t in summary.trajectories:
        d = t.reward_details
        reason = f"  ({d.get('reason')})" if d.get("reason") else ""
        print(
            f"{t.request_id}: {t.status.value} reward={t.reward} "
            f"f2p={d.get('fail_to_pass', 0):.2f} p2p={d.get('pass_to_pass', 0):.2f}{reason}"
        )
    resolved = sum(1 for t in summary.trajectories if t.reward == 1.0)
    print(f"resolved={resolved} total={len(summary.trajectories)} skipped={len(summary.skipped)}")
    return 1 if summary.infrastructure_failures else 0


def build_parser() -> argparse.ArgumentParser:
    from orchestrator import __version__

    parser = argparse.ArgumentParser(
        prog="agentic-rollout", description="LLM agent rollouts with one sandbox per trajectory."
    )
    parser.add_argument("--version", action="version", version=f"agentic-rollout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gc = sub.add_parser(
        "gc",
        help="remove leaked sandboxes (stopped, expired or orphaned)",
        description="Remove sandbox containers nobody will remove: stopped, "
        "past their expiry label, or whose orchestrator process is gone "
        "(e.g. after a SIGKILL).",
    )
    gc.add_argument("--all", action="store_true", help="remove every agentic-rollout sandbox")
    gc.add_argument("--run", metavar="RUN_ID", help="remove the sandboxes of one run")
    gc.add_argument("--dry-run", action="store_true", help="list, do not remove")
    gc.add_argument("--docker-host", help="daemon URL (default: DOCKER_HOST or the local socket)")
    gc.add_argument("--kubernetes", action="store_true", help="reap sandbox pods instead")
    gc.add_argument("--namespace", default="agentic-rollout", help="with --kubernetes")
    gc.add_argument("--kubeconfig", help="with --kubernetes (default: KUBECONFIG / ~/.kube/config)")
    gc.add_argument(
        "--in-cluster", action="store_true", help="with --kubernetes, from inside a pod"
    )
    gc.set_defaults(func=_cmd_gc)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark; prints JSON then key=value lines",
        description="Benchmarks. rpc: our RPC vs docker exec per call, and "
        "sandbox ready time vs raw container create+start. soak: many trajectories with random "
        "injected faults; counts lost, duplicated and leaked.",
    )
    bench.add_argument(
        "name", choices=["rpc", "startup", "scale", "editor", "search", "soak", "plots"]
    )
    bench.add_argument("--trajectories", type=int, default=500, help="trajectories (soak)")
    bench.add_argument("--fault-rate", type=float, default=0.12, help="share with a fault (soak)")
    bench.add_argument("--concurrency", type=int, default=16, help="sandboxes at once (soak)")
    bench.add_argument("--seconds", type=float, default=600, help="time bound (soak)")
    bench.add_argument("--image", default="agentic-rollout/sandbox:latest")
    bench.add_argument("--calls", type=int, default=400, help="RPC calls (rpc)")
    bench.add_argument("--exec-calls", type=int, default=40, help="docker exec calls (rpc)")
    bench.add_argument("--starts", type=int, default=7, help="sandbox starts (rpc)")
    bench.add_argument("--big-calls", type=int, default=10, help="1 MB-output calls (rpc)")
    bench.add_argument(
        "--peers",
        action="store_true",
        help="rpc: also SWE-ReX (run_in_session and execute; installed from PyPI into "
        "~/.cache/agentic-rollout on first use)",
    )
    bench.add_argument("--pool-size", type=int, default=4, help="warm pool size (startup)")
    bench.add_argument("--levels", default="8,32,64", help="concurrency levels (scale)")
    bench.add_argument("--per-slot", type=int, default=2, help="trajectories per slot (scale)")
    bench.add_argument("--latency", type=float, default=0.2, help="simulated LLM s/turn (scale)")
    bench.add_argument("--tool-calls", type=int, default=20, help="per trajectory (scale)")
    bench.add_argument(
        "--rounds", type=int, default=30, help="rounds per operation (editor/search)"
    )
    bench.add_argument(
        "--results", default="bench/results", help="folder of bench JSON files (plots)"
    )
    bench.add_argument("--out", default="docs/benchmarks", help="where plots go (plots)")
    bench.add_argument("--docker-host")
    bench.add_argument("--json", metavar="PATH", help="also write the JSON result here")
    bench.set_defaults(func=_cmd_bench)

    images = sub.add_parser(
        "build-images",
        help="build the sandbox images offline",
        description="debootstrap a Debian base from the configured apt "
        "mirror, docker import it, docker build the sandbox image on top. "
        "Steps whose image tag exists are skipped.",
    )
    images.set_defaults(func=_cmd_build_images)

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
    _add_run_options(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    show = sub.add_parser("show", help="pretty-print trajectories from a JSONL file")
    show.add_argument("file")
    show.add_argument("--id", help="only this request id")
    show.add_argument("--max-chars", type=int, default=4000, help="cut long step contents")
    show.set_defaults(func=_cmd_show)

    demo = sub.add_parser(
        "demo",
        help="offline end-to-end demo: local llama.cpp + SmolLM2 + Docker sandboxes",
        description="Start llama.cpp's OpenAI-compatible server with SmolLM2-135M on 127.0.0.1, "
        "run examples/tasks/demo.jsonl with examples/config/demo.yaml in Docker sandboxes, write "
        "the trajectories, stop the server. The model is tiny: every part is real.",
    )
    demo.add_argument("--output", default="demo-output")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=_cmd_demo)

    swe = sub.add_parser(
        "swe",
        help="SWE-style tasks: rollouts with grading, evaluation, validation",
        description="SWE-bench-style tasks (JSONL rows: instance_id, repo, "
        "base_commit, problem_statement, patch, test_patch, FAIL_TO_PASS, "
        "PASS_TO_PASS, image, ...). Grading: every FAIL_TO_PASS and PASS_TO_PASS "
        "test must pass (PASSED or XFAIL; a skipped P2P test is kept).",
    )
    swe_sub = swe.add_subparsers(dest="swe_command", required=True)
    swe_run = swe_sub.add_parser(
        "run", help="coding-agent rollouts, each graded in a fresh sandbox"
    )
    swe_run.add_argument("tasks")
    swe_run.add_argument(
        "--eval-in-rollout-sandbox",
        action="store_true",
        help="grade in the rollout's own sandbox instead of a fresh one of the task image",
    )
    _add_run_options(swe_run)
    swe_eval = swe_sub.add_parser(
        "eval", help="grade SWE-bench predictions (instance_id, model_name_or_path, model_patch)"
    )
    swe_eval.add_argument("tasks")
    swe_eval.add_argument("predictions", help="JSONL or JSON predictions")
    swe_eval.add_argument("--output", help="write <id>.report.json and <id>.log here")
    swe_validate = swe_sub.add_parser(
        "validate",
        help="harness sanity check: the gold patch must resolve, the empty patch must not",
    )
    swe_validate.add_argument("tasks")
    for p in (swe_run, swe_eval):
        p.add_argument(
            "--strict-grading",
            action="store_true",
            help="a patch touching test infrastructure (conftest.py, pytest/tox/setup.cfg "
            "settings, sitecustomize, *.pth, the task's test files) gets reward 0 unrun; "
            "without it such patches are graded and named in reward_details",
        )
    for p in (swe_run, swe_eval, swe_validate):
        p.add_argument("--docker-host", help="daemon URL for evaluation sandboxes")
        if p is not swe_run:
            p.add_argument("--concurrency", type=int, default=4, help="evaluations at once")
    swe.set_defaults(func=_cmd_swe)

    from orchestrator import export, k8s_check, viewer
    from orchestrator.harbor import cli as harbor_cli

    viewer.add_parser(sub)
    export.add_parser(sub)
    harbor_cli.add_parser(sub)
    k8s_check.add_parser(sub)  # imports no Kubernetes client until a check runs

    shell = sub.add_parser("shell", help="open an interactive shell in a fresh sandbox")
    shell.add_argument("--backend", choices=["docker", "local"], default="docker")
    shell.add_argument("--image", default="agentic-rollout/sandbox:latest")
    shell.add_argument("--timeout", type=float, default=120.0, help="per-command timeout (s)")
    shell.set_defaults(func=_cmd_shell)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from orchestrator.config import configure_logging

    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    _install_signal_handlers()
    try:
        configure_logging()
        code: int = args.func(args)
    except AgenticRolloutError as exc:
        print(f"agentic-rollout: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    finally:  # main() called in-process (tests, notebooks) leaves the handlers as they were
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
