"""``agentic-rollout swe run|eval|validate``: SWE-bench-style tasks, graded."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.common import add_run_options, rollout_config, run_async, serve_metrics
from orchestrator.exceptions import AgenticRolloutError
from orchestrator.swe.task import load_swe_tasks


def add_parser(sub: Any) -> None:
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
    add_run_options(swe_run)
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
    swe.set_defaults(func=cmd_swe)


def _swe_tasks(path: str, split: str | None = None) -> list[Any]:

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


def cmd_swe(args: argparse.Namespace) -> int:
    # import cost: an integration module loaded only by the subcommand that uses it
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
    config = rollout_config(args)
    serve_metrics(args)
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
                        "model_patch": t.patch,
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
