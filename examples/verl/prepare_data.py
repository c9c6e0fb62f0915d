"""Turn task files into VERL parquet rows for the ``agentic_sandbox_agent`` loop.

Reads our task JSONL (``{"id", "prompt", "answer", "sandbox", "setup", ...}``) and/or SWE-bench
rows (``examples/swe/tasks.jsonl``, or any file with ``instance_id`` + ``problem_statement``)
and writes one parquet file with VERL's columns:

- ``prompt``: the chat messages (VERL's dataset hands them to the loop as ``raw_prompt``)
- ``agent_name``: ``agentic_sandbox_agent`` (picks our loop)
- ``data_source``, ``reward_model`` (``{"style": "rule", "ground_truth": answer}``)
- ``extra_info``: ``index``, ``task_id``, and JSON strings ``sandbox`` (per-row backend
  overrides such as the image), ``setup`` and ``swe`` (the SWE-bench row: image, workdir,
  tests, for grading) - strings so that rows of different shapes share one parquet schema.

    .venv/bin/python examples/verl/prepare_data.py --tasks examples/tasks/demo.jsonl \\
        --swe examples/swe/tasks.jsonl --out data/train.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from orchestrator.swe.task import load_swe_tasks  # noqa: E402
from orchestrator.tasks import load_tasks  # noqa: E402

AGENT_NAME = "agentic_sandbox_agent"


def task_rows(path: Path, start: int) -> list[dict[str, Any]]:
    tasks, errors = load_tasks(path)
    for error in errors:
        print(f"{path}:{error.line}: skipped: {error.message}", file=sys.stderr)
    rows = []
    for i, task in enumerate(tasks, start=start):
        prompt = (
            [{"role": "user", "content": task.prompt}]
            if isinstance(task.prompt, str)
            else task.prompt
        )
        if task.system_prompt:
            prompt = [{"role": "system", "content": task.system_prompt}, *prompt]
        rows.append(
            {
                "data_source": "agentic_rollout/tasks",
                "agent_name": AGENT_NAME,
                "prompt": prompt,
                "reward_model": {"style": "rule", "ground_truth": task.answer or ""},
                "extra_info": {
                    "index": i,
                    "task_id": task.id,
                    "answer": task.answer,
                    "workspace": task.workspace,
                    "sandbox": json.dumps(task.sandbox),
                    "setup": json.dumps(task.setup),
                    "swe": "",
                },
            }
        )
    return rows


def swe_rows(path: Path, start: int) -> list[dict[str, Any]]:
    tasks, errors = load_swe_tasks(path)
    for error in errors:
        print(f"{path}: skipped: {error}", file=sys.stderr)
    rows = []
    for i, swe in enumerate(tasks, start=start):
        task = swe.to_task()
        assert isinstance(task.prompt, str)
        rows.append(
            {
                "data_source": "agentic_rollout/swe",
                "agent_name": AGENT_NAME,
                "prompt": [{"role": "user", "content": task.prompt}],
                "reward_model": {"style": "swe", "ground_truth": ""},
                "extra_info": {
                    "index": i,
                    "task_id": swe.instance_id,
                    "answer": None,
                    "workspace": swe.workdir,
                    "sandbox": json.dumps({}),
                    "setup": json.dumps([]),
                    "swe": json.dumps(swe.model_dump()),
                },
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=Path, action="append", default=[], help="task JSONL")
    parser.add_argument("--swe", type=Path, action="append", default=[], help="SWE-bench JSONL")
    parser.add_argument("--out", type=Path, required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    if not args.tasks and not args.swe:
        parser.error("give --tasks and/or --swe")
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for path in args.tasks:
        rows += task_rows(path, len(rows))
    for path in args.swe:
        rows += swe_rows(path, len(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(args.out)
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
