"""Evaluate a patch for a SWE task inside a sandbox of the task's image.

Steps (as the SWE-bench harness): apply the model patch (``git apply``, then
``git apply --reject``, then ``patch --fuzz=5``), put the files the test patch touches back to
``base_commit``, apply the test patch, run the tests between markers with a timeout, parse the
log, grade. Every failure (patch does not apply, test patch does not apply, tests hang, unknown
log format) is a report with ``resolved: false`` and a reason, never an exception; only a
sandbox that cannot start (missing image) raises, with the image named.
"""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.exceptions import TaskError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.base import Sandbox
from orchestrator.swe.grading import (
    END_TEST_OUTPUT,
    START_TEST_OUTPUT,
    TEST_EXIT_CODE,
    empty_report,
    exit_code_of,
    fraction,
    grade_tests,
    parse_log,
    resolved,
)
from orchestrator.swe.task import SWETask

APPLY_COMMANDS = (
    "git apply --verbose {p}",
    "git apply --verbose --reject {p}",
    "patch --batch --fuzz=5 -p1 -i {p}",
)
EVAL_DIR = "/tmp/agentic_eval"


class EvalResult(BaseModel):
    instance_id: str
    #: SWE-bench report.json shape: {instance_id: {patch_is_None, patch_exists, ...}}
    report: dict[str, Any]
    resolved: bool = False
    patch_applied: bool = False
    reason: str | None = None
    fail_to_pass: float = 0.0
    pass_to_pass: float = 0.0
    #: name of the sandbox the tests ran in
    sandbox: str | None = None
    log: str = Field(default="", repr=False)

    @property
    def reward(self) -> float:
        return 1.0 if self.resolved else 0.0


async def evaluate(
    task: SWETask,
    model_patch: str | None,
    *,
    sandbox: dict[str, Any] | None = None,
    use_sandbox: Sandbox | None = None,
    run_tests_without_patch: bool = False,
) -> EvalResult:
    """Grade ``model_patch`` in a fresh sandbox of the task image, or in ``use_sandbox``: the
    rollout's own sandbox, whose workdir already holds the agent's edits, so the patch is not
    applied again (it is graded in place).

    ``run_tests_without_patch`` runs the tests even for an empty patch (``swe validate``).
    """
    report = empty_report(task.instance_id, model_patch)
    if not model_patch and not run_tests_without_patch:
        return EvalResult(
            instance_id=task.instance_id, report=report, reason="empty patch: nothing to evaluate"
        )
    if use_sandbox is not None:
        return await _evaluate_in(use_sandbox, task, model_patch, report, in_place=True)
    values = {
        "type": "docker",
        **(sandbox or {}),
        "image": task.image_name,
        "workdir": task.workdir,
    }
    async with sandbox_config(values).build() as sb:
        return await _evaluate_in(sb, task, model_patch, report)


async def _evaluate_in(
    sb: Sandbox,
    task: SWETask,
    model_patch: str | None,
    report: dict[str, Any],
    *,
    in_place: bool = False,
) -> EvalResult:
    iid = task.instance_id
    entry = report[iid]
    wd = shlex.quote(task.workdir)
    log: list[str] = []

    def result(reason: str | None = None, **extra: Any) -> EvalResult:
        return EvalResult(
            instance_id=iid,
            report=report,
            reason=reason,
            log="\n".join(log),
            sandbox=sb.name,
            **extra,
        )

    if model_patch and not in_place:
        path = f"{EVAL_DIR}/model.patch"
        await sb.write_file(path, model_patch if model_patch.endswith("\n") else model_patch + "\n")
        applied, out = await _apply(sb, wd, path)
        log.append(out)
        if not applied:
            return result(f"model patch does not apply: {out.strip()[-500:]}")
    entry["patch_successfully_applied"] = bool(model_patch)
    # the instance's test files go back to base_commit, then the test patch goes on
    for test_file in task.test_files:
        q = shlex.quote(test_file)
        await sb.run(
            f"cd {wd} && if git cat-file -e {shlex.quote(task.base_commit)}:{q} 2>/dev/null; "
            f"then git checkout {shlex.quote(task.base_commit)} -- {q}; else rm -f {q}; fi",
            session="eval",
            timeout=60,
        )
    await sb.write_file(f"{EVAL_DIR}/test.patch", task.test_patch)
    test_apply = await sb.run(
        f"cd {wd} && git apply --verbose {EVAL_DIR}/test.patch", session="eval", timeout=120
    )
    log.append(test_apply.output)
    if not test_apply.ok:
        return result(
            f"test patch does not apply: {test_apply.output.strip()[-500:]}",
            patch_applied=bool(model_patch),
        )
    command = (
        f"cd {wd} && echo '{START_TEST_OUTPUT}' && {{ {task.full_test_command()} ; }} ; "
        f"echo \"{TEST_EXIT_CODE}: $?\" ; echo '{END_TEST_OUTPUT}'"
    )
    run = await sb.run(
        command, session="eval", timeout=task.test_timeout, max_output=32 * 1024 * 1024
    )
    log.append(run.output)
    if run.timed_out:
        return result(
            f"tests timed out after {task.test_timeout:g}s", patch_applied=bool(model_patch)
        )
    try:
        status = parse_log(run.output, task.log_parser)
    except TaskError as exc:
        return result(str(exc), patch_applied=bool(model_patch))
    exit_code = exit_code_of(run.output)
    if exit_code not in (None, 0) and not any(v in ("FAILED", "ERROR") for v in status.values()):
        # as SWE-bench: PASSED lines printed by the code under test cannot fake a green run
        return result(
            f"the test command exited {exit_code} but reported no failure: the log does not "
            "describe the run",
            patch_applied=bool(model_patch),
        )
    tests = grade_tests(status, task.FAIL_TO_PASS, task.PASS_TO_PASS)
    ok = resolved(tests)
    entry["resolved"] = ok
    entry["tests_status"] = tests
    return result(
        None if ok else "tests failed",
        resolved=ok,
        patch_applied=bool(model_patch),
        fail_to_pass=fraction(tests, "FAIL_TO_PASS"),
        pass_to_pass=fraction(tests, "PASS_TO_PASS"),
    )


async def _apply(sb: Sandbox, wd: str, path: str) -> tuple[bool, str]:
    outputs = []
    for template in APPLY_COMMANDS:
        res = await sb.run(
            f"cd {wd} && {template.format(p=shlex.quote(path))}", session="eval", timeout=120
        )
        outputs.append(f"$ {template.format(p=path)}\n{res.output}")
        if res.ok:
            return True, "\n".join(outputs)
    return False, "\n".join(outputs)


async def evaluate_many(
    pairs: list[tuple[SWETask, str | None]],
    *,
    sandbox: dict[str, Any] | None = None,
    concurrency: int = 4,
    run_tests_without_patch: bool = False,
) -> list[EvalResult]:
    """Evaluate several (task, patch) pairs concurrently; a sandbox failure is a result too."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(task: SWETask, patch: str | None) -> EvalResult:
        async with semaphore:
            try:
                return await evaluate(
                    task, patch, sandbox=sandbox, run_tests_without_patch=run_tests_without_patch
                )
            except Exception as exc:  # e.g. the image is missing: reported, others go on
                return EvalResult(
                    instance_id=task.instance_id,
                    report=empty_report(task.instance_id, patch),
                    reason=f"{type(exc).__name__}: {exc}",
                )

    return list(await asyncio.gather(*(one(t, p) for t, p in pairs)))
