"""Evaluate a patch for a SWE task inside a sandbox of the task's image.

Steps (as the SWE-bench harness): apply the model patch (``git apply``, then
``git apply --reject``, then ``patch --fuzz=5``), put the files the test patch touches back to
``base_commit``, apply the test patch, run the tests between markers with a timeout, parse the
log, grade. Every failure (patch does not apply, test patch does not apply, tests hang, unknown
log format) is a report with ``resolved: false`` and a reason, never an exception; only a
sandbox that cannot start (missing image) raises, with the image named.

Reward tampering: the policy is optimised against this grader. A patch that touches test
infrastructure (conftest.py, pytest/tox/setup.cfg/pyproject test settings, sitecustomize,
``*.pth``, the task's own test files) is listed in ``EvalResult.tampering`` (and the trajectory's
``reward_details``); ``strict`` grading refuses such a patch without running anything. Grading
in a fresh sandbox is the default; grading in the rollout's own sandbox trusts the policy
(whatever it changed outside the patch, e.g. site-packages, counts).
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import shlex
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.exceptions import TaskError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.base import Sandbox
from orchestrator.sandbox.handle import CommandResult
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
from orchestrator.swe.task import SWETask, patch_files

APPLY_COMMANDS = (
    "git apply --verbose {p}",
    "git apply --verbose --reject {p}",
    "patch --batch --fuzz=5 -p1 -i {p}",
)
EVAL_DIR = "/tmp/agentic_eval"

#: files that configure or run the tests whatever their directory
_TEST_INFRA_NAMES = {
    "conftest.py": "pytest conftest (fixtures and hooks run by the tests)",
    "pytest.ini": "pytest settings",
    "tox.ini": "tox/pytest settings",
    "sitecustomize.py": "runs in every Python process",
    "usercustomize.py": "runs in every Python process",
    "noxfile.py": "test runner settings",
}
#: a hunk of setup.cfg / pyproject.toml that changes test settings mentions one of these
_TEST_SETTINGS = re.compile(
    r"pytest|addopts|testpaths|python_files|python_functions|python_classes|tox|"
    r"filterwarnings|norecursedirs|rootdir|confcutdir|\[tool\.coverage|\[coverage",
    re.IGNORECASE,
)
_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$")


def tampered_paths(patch: str | None, test_files: Sequence[str] = ()) -> list[str]:
    """Each path of ``patch`` that touches test infrastructure, as ``"path: why"``."""
    if not patch:
        return []
    found: dict[str, str] = {}
    for path in patch_files(patch):
        name = posixpath.basename(path)
        if path in test_files:
            found[path] = "one of the task's test files (reset before grading)"
        elif name in _TEST_INFRA_NAMES:
            found[path] = _TEST_INFRA_NAMES[name]
        elif name.endswith(".pth"):
            found[path] = ".pth file (runs at interpreter start-up)"
    current: str | None = None
    for line in patch.splitlines():  # setup.cfg / pyproject.toml: only their test settings
        header = _DIFF_HEADER.match(line)
        if header:
            current = header.group(2)
            continue
        if (
            current is not None
            and posixpath.basename(current) in ("setup.cfg", "pyproject.toml")
            and line[:1] in ("+", "-", "@")
            and not line.startswith(("+++", "---"))
            and _TEST_SETTINGS.search(line)
        ):
            found.setdefault(current, "test settings in " + posixpath.basename(current))
    return [f"{path}: {why}" for path, why in found.items()]


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
    #: paths of the patch that touch test infrastructure, "path: why"
    tampering: list[str] = Field(default_factory=list)
    #: "fresh sandbox" (default) or "rollout sandbox (trusts the policy)"
    graded_in: str = "fresh sandbox"
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
    strict: bool = False,
) -> EvalResult:
    """Grade ``model_patch`` in a fresh sandbox of the task image, or in ``use_sandbox``: the
    rollout's own sandbox, whose workdir already holds the agent's edits, so the patch is not
    applied again (it is graded in place, trusting whatever else the policy changed there).

    ``run_tests_without_patch`` runs the tests even for an empty patch (``swe validate``).
    ``strict`` refuses a patch that touches test infrastructure (see
    :func:`tampered_paths`) without running the tests; otherwise such paths are
    only reported.
    """
    report = empty_report(task.instance_id, model_patch)
    tampering = tampered_paths(model_patch, task.test_files)
    graded_in = "fresh sandbox" if use_sandbox is None else "rollout sandbox (trusts the policy)"
    if not model_patch and not run_tests_without_patch:
        return EvalResult(
            instance_id=task.instance_id, report=report, reason="empty patch: nothing to evaluate"
        )
    if strict and tampering:
        return EvalResult(
            instance_id=task.instance_id,
            report=report,
            tampering=tampering,
            graded_in=graded_in,
            reason="strict grading refused the patch: it touches test infrastructure ("
            + "; ".join(tampering)
            + ")",
        )
    if use_sandbox is not None:
        result = await _evaluate_in(use_sandbox, task, model_patch, report, in_place=True)
        return result.model_copy(update={"tampering": tampering, "graded_in": graded_in})
    values = {
        "type": "docker",
        **(sandbox or {}),
        "image": task.image_name,
        "workdir": task.workdir,
    }
    async with sandbox_config(values).build() as sb:
        result = await _evaluate_in(sb, task, model_patch, report)
    return result.model_copy(update={"tampering": tampering})


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
    test_apply = await _put_test_patch(sb, task, wd)
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


async def _put_test_patch(sb: Sandbox, task: SWETask, wd: str) -> CommandResult:
    """The instance's test files go back to base_commit (whatever the model did to them),
    then the test patch goes on."""
    base = shlex.quote(task.base_commit)
    for test_file in task.test_files:
        q = shlex.quote(test_file)
        await sb.run(
            f"cd {wd} && if git cat-file -e {base}:{q} 2>/dev/null; "
            f"then git checkout {base} -- {q}; else rm -f {q}; fi",
            session="eval",
            timeout=60,
        )
    await sb.write_file(f"{EVAL_DIR}/test.patch", task.test_patch)
    return await sb.run(
        f"cd {wd} && git apply --verbose {EVAL_DIR}/test.patch", session="eval", timeout=120
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
    strict: bool = False,
) -> list[EvalResult]:
    """Evaluate several (task, patch) pairs concurrently; a sandbox failure is a result too."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(task: SWETask, patch: str | None) -> EvalResult:
        async with semaphore:
            try:
                return await evaluate(
                    task,
                    patch,
                    sandbox=sandbox,
                    run_tests_without_patch=run_tests_without_patch,
                    strict=strict,
                )
            except Exception as exc:  # e.g. the image is missing: reported, others go on
                return EvalResult(
                    instance_id=task.instance_id,
                    report=empty_report(task.instance_id, patch),
                    reason=f"{type(exc).__name__}: {exc}",
                )

    return list(await asyncio.gather(*(one(t, p) for t, p in pairs)))
