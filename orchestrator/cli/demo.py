"""``agentic-rollout demo``: the offline end-to-end demo (llama.cpp + SmolLM2 + Docker)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.common import (
    REPO_ROOT,
    announce,
    print_summary,
    run_async,
    run_with_progress,
)
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import AgenticRolloutError
from orchestrator.runner import AgenticRollout
from orchestrator.tasks import load_tasks


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="offline end-to-end demo: local llama.cpp + SmolLM2 + Docker sandboxes",
        description="Start llama.cpp's OpenAI-compatible server with SmolLM2-135M on 127.0.0.1, "
        "run examples/tasks/demo.jsonl with examples/config/demo.yaml in Docker sandboxes, write "
        "the trajectories, stop the server. The model is tiny: every part is real.",
    )
    demo.add_argument("--output", default="demo-output")
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import time as _time

    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.local_llm import MODEL_ALIAS, LlamaServer

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
        # import cost: an integration module loaded only by the subcommand that uses it
        from orchestrator.demo import demo_client

        rollout = AgenticRollout(config, llm_client=demo_client(config))
        announce(rollout, len(tasks))
        t0 = _time.monotonic()
        # a signal here cancels the batch, then leaves this `with`: the server is stopped too
        summary = run_async(
            run_with_progress(rollout, tasks, show_progress=not args.no_progress),
            rollout=rollout,
        )
    print_summary(summary, _time.monotonic() - t0, config.trajectory_save_path)
    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.demo import print_outcomes

    print_outcomes(summary.trajectories, tasks)
    print(f"look at one: agentic-rollout show {config.trajectory_save_path} --id {tasks[0].id}")
    print(f"or all of them in a browser: agentic-rollout view {output} -o {output}/report.html")
    return 1 if summary.infrastructure_failures else 0
