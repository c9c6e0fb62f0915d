"""SWE runs: rollouts with the coding agent whose reward is the graded evaluation, predictions
evaluation, and the harness sanity check (gold resolves, empty does not)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import TaskError
from orchestrator.llm import LLMClient
from orchestrator.runner import AgenticRollout, RunSummary
from orchestrator.sandbox.base import Sandbox
from orchestrator.swe.harness import EvalResult, evaluate, evaluate_many
from orchestrator.swe.task import SWETask
from orchestrator.tasks import Task
from orchestrator.trajectory import Trajectory

SWE_TOOLS = ["bash", "str_replace_editor", "search", "submit"]


def swe_config(base: AgenticRolloutConfig | None = None, **overrides: Any) -> AgenticRolloutConfig:
    """The coding agent with bash/editor/search/submit, submit building the patch."""
    cfg = base or AgenticRolloutConfig(agent_type="coding")
    tools_config = {**cfg.tools.config}
    tools_config["submit"] = {"mode": "auto", **tools_config.get("submit", {})}
    update: dict[str, Any] = {"tools.config": tools_config}
    if cfg.tools.names is None:
        update["tools.names"] = SWE_TOOLS
    update.update(overrides)
    return cfg.preset(**update)


def _record(traj: Trajectory, result: EvalResult) -> float:
    traj.reward_details = {
        "resolved": result.resolved,
        "patch_applied": result.patch_applied,
        "fail_to_pass": result.fail_to_pass,
        "pass_to_pass": result.pass_to_pass,
        "reason": result.reason,
        "report": result.report,
        "eval_sandbox": result.sandbox,
        "graded_in": result.graded_in,
        "test_infrastructure_touched": result.tampering,
    }
    return result.reward


def make_swe_reward(sandbox: dict[str, Any], *, strict: bool = False) -> Any:
    """An async reward: evaluate the trajectory's patch in a fresh sandbox of the task's image
    (or keep the result of an evaluation already done in the rollout's own sandbox).
    ``strict``: a patch touching test infrastructure gets 0 without running the tests."""

    async def reward(task: Task, traj: Trajectory) -> float:
        if "resolved" in traj.reward_details:
            return 1.0 if traj.reward_details["resolved"] else 0.0
        swe = SWETask.from_row(task.swe_row or {})
        return _record(traj, await evaluate(swe, traj.patch, sandbox=sandbox, strict=strict))

    return reward


def _in_rollout_sandbox(strict: bool) -> Any:
    async def after_agent(task: Task, traj: Trajectory, sandbox: Sandbox | None) -> None:
        if sandbox is None or sandbox.rpc.closed:
            return  # the reward falls back to a fresh sandbox
        swe = SWETask.from_row(task.swe_row or {})
        _record(
            traj,
            await evaluate(swe, traj.patch, use_sandbox=sandbox, strict=strict),
        )

    return after_agent


#: the default (non-strict) hook, as VERL's loop uses it
evaluate_in_rollout_sandbox = _in_rollout_sandbox(False)


async def run_swe(
    tasks: list[SWETask],
    config: AgenticRolloutConfig,
    *,
    llm_client: LLMClient | None = None,
    eval_in_rollout_sandbox: bool = False,
    strict_grading: bool = False,
) -> RunSummary:
    """Rollouts graded in a fresh sandbox of each task's image (default), or in the rollout's
    own sandbox (no second container; the agent's edits are graded in place, so whatever else
    it changed in that environment counts too: this trusts the policy).

    Patches touching test infrastructure are reported in ``reward_details``
    (``test_infrastructure_touched``); ``strict_grading`` gives them reward 0 untested."""
    sandbox = {k: v for k, v in config.sandbox.as_dict().items() if k not in ("image", "workdir")}
    rollout = AgenticRollout(
        swe_config(config),
        llm_client=llm_client,
        reward_fn=make_swe_reward(sandbox, strict=strict_grading),
        reward_all=True,
        after_agent=_in_rollout_sandbox(strict_grading) if eval_in_rollout_sandbox else None,
    )
    return await rollout.run([t.to_task() for t in tasks])


def load_predictions(path: str | Path) -> dict[str, dict[str, Any]]:
    """SWE-bench predictions (JSONL, or a JSON list or dict).

    Each has instance_id, model_name_or_path and model_patch.
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    try:
        data: Any = json.loads(text)
        if isinstance(data, dict) and "instance_id" in data:
            rows = [data]  # a JSONL file of one line: one prediction, not the dict form
        else:  # SWE-bench's dict form {instance_id: prediction}, or a list
            rows = list(data.values()) if isinstance(data, dict) else data
    except ValueError:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise TaskError(f"{path}:{number}: not valid JSON: {exc}") from None
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or "instance_id" not in row or "model_patch" not in row:
            raise TaskError(
                f"{path}: each prediction needs instance_id and model_patch, got {str(row)[:120]}"
            )
        out[str(row["instance_id"])] = row
    return out


async def eval_predictions(
    tasks: list[SWETask],
    predictions: dict[str, dict[str, Any]],
    *,
    sandbox: dict[str, Any],
    concurrency: int = 4,
    strict: bool = False,
) -> list[EvalResult]:
    pairs = [
        (t, predictions[t.instance_id].get("model_patch"))
        for t in tasks
        if t.instance_id in predictions
    ]
    return await evaluate_many(pairs, sandbox=sandbox, concurrency=concurrency, strict=strict)


async def validate(
    tasks: list[SWETask], *, sandbox: dict[str, Any], concurrency: int = 4
) -> list[tuple[SWETask, EvalResult, EvalResult]]:
    """For each task: (task, gold result, empty-patch result); gold must resolve, empty must not."""
    gold = await evaluate_many(
        [(t, t.patch) for t in tasks], sandbox=sandbox, concurrency=concurrency
    )
    empty = await evaluate_many(
        [(t, "") for t in tasks],
        sandbox=sandbox,
        concurrency=concurrency,
        run_tests_without_patch=True,
    )
    return list(zip(tasks, gold, empty, strict=True))


def write_reports(results: list[EvalResult], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for r in results:
        (directory / f"{r.instance_id}.report.json").write_text(
            json.dumps(r.report, indent=2) + "\n"
        )
        (directory / f"{r.instance_id}.log").write_text(r.log)
