"""SWE tasks: rows, grading (cross-checked with swebench's own code), rollouts with reward,
evaluation of predictions, and the harness sanity check - on real Docker."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import TaskError
from orchestrator.swe.grading import grade_tests, parse_log
from orchestrator.swe.harness import evaluate, evaluate_many
from orchestrator.swe.run import run_swe
from orchestrator.swe.task import SWETask, load_swe_tasks, patch_files, swebench_image
from orchestrator.testing import ScriptedLLM, tool_call

from .conftest import IN_CI, TEST_RUN_ID

ROOT = Path(__file__).resolve().parent.parent
TASKS_FILE = ROOT / "examples" / "swe" / "tasks.jsonl"


def example_tasks() -> dict[str, SWETask]:
    tasks, errors = load_swe_tasks(TASKS_FILE)
    assert not errors
    return {t.instance_id: t for t in tasks}


# ---- rows


def test_rows_as_users_have_them() -> None:
    row = {
        "instance_id": "django__django-11099",
        "repo": "django/django",
        "base_commit": "abc",
        "problem_statement": "p",
        "patch": "",
        "test_patch": "diff --git a/t/x.py b/t/x.py\n",
        "FAIL_TO_PASS": '["t/x.py::a"]',
        "PASS_TO_PASS": ["t/x.py::b"],
        "version": "3.0",
        "environment_setup_commit": "def",
        "hints_text": "",
    }
    task = SWETask.from_row(row)
    assert task.FAIL_TO_PASS == ["t/x.py::a"] and task.PASS_TO_PASS == ["t/x.py::b"]
    assert task.image_name == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"
    assert swebench_image("a__b-1") == "swebench/sweb.eval.x86_64.a_1776_b-1:latest"
    assert task.workdir == "/testbed" and task.test_files == ["t/x.py"]
    rollout_task = task.to_task()
    assert rollout_task.sandbox["image"] == task.image_name
    assert rollout_task.metadata["tool_context"] == {"base_commit": "abc", "exclude": ["t/x.py"]}
    with pytest.raises(
        TaskError, match=r"SWE task django__django-11099: field FAIL_TO_PASS: .*not a JSON list"
    ):
        SWETask.from_row({**row, "FAIL_TO_PASS": "[not json"})
    with pytest.raises(TaskError, match="SWE task django__django-11099: field PASS_TO_PASS"):
        SWETask.from_row({**row, "PASS_TO_PASS": [1, 2]})
    with pytest.raises(TaskError, match="SWE task <no instance_id>: field instance_id"):
        SWETask.from_row({k: v for k, v in row.items() if k != "instance_id"})


def test_task_file_rejects_rows_with_their_id(tmp_path: Path) -> None:
    good = TASKS_FILE.read_text().splitlines()[0]
    bad = json.dumps({**json.loads(good), "instance_id": "broken-1", "FAIL_TO_PASS": 7})
    path = tmp_path / "t.jsonl"
    path.write_text(f"{good}\n{bad}\nnot json\n")
    tasks, errors = load_swe_tasks(path)
    assert [t.instance_id for t in tasks] == ["agentic__textkit-1"]
    assert errors[0].startswith("line 2: SWE task broken-1: field FAIL_TO_PASS")
    assert errors[1].startswith("line 3: not valid JSON")


def test_patch_files_and_unknown_log_format() -> None:
    patch = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\ndiff --git a/old.py b/new.py\n"
    assert patch_files(patch) == ["a.py", "old.py", "new.py"]
    with pytest.raises(TaskError, match="the pytest log parser found no test results"):
        parse_log("this is not pytest output\nat all\n", "pytest")
    with pytest.raises(TaskError, match="no log parser named 'junit'; available: pytest"):
        parse_log("x", "junit")


def test_grading_semantics() -> None:
    status = {"a": "PASSED", "b": "XFAIL", "c": "SKIPPED", "d": "FAILED"}
    tests = grade_tests(status, f2p=["a", "b", "c", "missing"], p2p=["c", "d"])
    assert tests["FAIL_TO_PASS"] == {"success": ["a", "b"], "failure": ["c", "missing"]}
    assert tests["PASS_TO_PASS"] == {"success": ["c"], "failure": ["d"]}


# ---- the harness on real sandboxes


@pytest.mark.docker
def test_swe_validate_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "swe", "validate", str(TASKS_FILE)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "valid=3 invalid=0"
    assert "agentic__calkit-1: gold patch resolves; empty patch does not resolve" in lines


def _swebench_grading() -> types.SimpleNamespace:
    """swebench's own parser and grading, imported without its package __init__ (which pulls in
    modal, datasets and docker: not needed to grade)."""
    spec = importlib.util.find_spec("swebench")
    if spec is None or not spec.submodule_search_locations:
        if IN_CI:
            pytest.fail(
                "CI=true but swebench is not installed (scripts/setup.sh installs it)",
                pytrace=False,
            )
        pytest.skip("swebench not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    saved = {k: v for k, v in sys.modules.items() if k == "swebench" or k.startswith("swebench.")}
    for name, path in (("swebench", base), ("swebench.harness", base / "harness")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    try:
        from swebench.harness import grading
        from swebench.types import TestSpec
    finally:
        for key in [k for k in sys.modules if k == "swebench" or k.startswith("swebench.")]:
            del sys.modules[key]
        sys.modules.update(saved)
    return types.SimpleNamespace(grading=grading, TestSpec=TestSpec)


@pytest.mark.docker
async def test_grading_matches_swebench_on_real_pytest_logs(tmp_path: Path) -> None:
    swebench = _swebench_grading()
    tasks = list(example_tasks().values())
    cases = [(t, t.patch) for t in tasks] + [(t, "") for t in tasks]
    results = await evaluate_many(
        cases, sandbox={"run_id": TEST_RUN_ID}, run_tests_without_patch=True
    )
    for (task, patch), ours in zip(cases, results, strict=True):
        log_file = tmp_path / f"{task.instance_id}-{bool(patch)}.log"
        log_file.write_text(ours.log)
        spec = swebench.TestSpec(
            instance_id=task.instance_id,
            image=task.image_name,
            eval_script_list=[],
            repo=task.repo,
            version=task.version or "",
            FAIL_TO_PASS=task.FAIL_TO_PASS,
            PASS_TO_PASS=task.PASS_TO_PASS,
            log_parser="parse_log_pytest",
        )
        their_status, found = swebench.grading.get_logs_eval(spec, str(log_file))
        assert found, f"swebench could not read our log for {task.instance_id}"
        assert their_status == parse_log(ours.log, "pytest")
        report = swebench.grading.get_eval_tests_report(
            their_status, {"FAIL_TO_PASS": task.FAIL_TO_PASS, "PASS_TO_PASS": task.PASS_TO_PASS}
        )
        assert (
            report["FAIL_TO_PASS"] == ours.report[task.instance_id]["tests_status"]["FAIL_TO_PASS"]
        )
        assert (
            report["PASS_TO_PASS"] == ours.report[task.instance_id]["tests_status"]["PASS_TO_PASS"]
        )
        assert (swebench.grading.get_resolution_status(report) == "RESOLVED_FULL") == ours.resolved
        assert ours.resolved == bool(patch)


def _textkit_fix_policy(also_edit_tests: bool = False) -> ScriptedLLM:
    steps: list[Any] = [
        tool_call(
            "str_replace_editor",
            {
                "command": "str_replace",
                "path": "/testbed/textkit/slug.py",
                "old_str": "re.sub(r'[^a-z0-9]', '-', text)",
                "new_str": "re.sub(r'[^a-z0-9]+', '-', text)",
            },
        ),
    ]
    if (
        also_edit_tests
    ):  # edits to the task's test files are left out of the patch, as SWE-bench does
        steps.append(
            tool_call("bash", {"command": "echo '# scratch' >> /testbed/tests/test_slug.py"})
        )
    steps.append(tool_call("submit", {}))
    return ScriptedLLM(steps)


@pytest.mark.docker
async def test_scripted_policy_applying_gold_fix_through_the_editor_gets_reward_1(
    tmp_path: Path,
) -> None:
    task = example_tasks()["agentic__textkit-1"]
    config = AgenticRolloutConfig(
        agent_type="coding",
        trajectory_save_path=str(tmp_path / "t.jsonl"),
        sandbox={"type": "docker", "run_id": TEST_RUN_ID},
    )
    summary = await run_swe([task], config, llm_client=_textkit_fix_policy(also_edit_tests=True))
    traj = summary.trajectories[0]
    assert traj.reward == 1.0, traj.reward_details
    details = traj.reward_details
    assert details["resolved"] and details["fail_to_pass"] == 1.0 and details["pass_to_pass"] == 1.0
    report = details["report"]["agentic__textkit-1"]
    assert report["patch_exists"] and report["patch_successfully_applied"] and report["resolved"]
    patch = traj.metadata["patch"]
    assert "textkit/slug.py" in patch and "tests/test_slug.py" not in patch
    # a fresh sandbox of the task image by default
    assert details["eval_sandbox"].startswith("agentic-")
    assert details["eval_sandbox"] != traj.metadata["sandbox"]


@pytest.mark.docker
async def test_evaluation_in_the_rollout_sandbox(tmp_path: Path) -> None:
    task = example_tasks()["agentic__textkit-1"]
    config = AgenticRolloutConfig(
        agent_type="coding",
        trajectory_save_path=str(tmp_path / "t.jsonl"),
        sandbox={"type": "docker", "run_id": TEST_RUN_ID},
    )
    summary = await run_swe(
        [task], config, llm_client=_textkit_fix_policy(), eval_in_rollout_sandbox=True
    )
    traj = summary.trajectories[0]
    assert traj.reward == 1.0 and traj.reward_details["resolved"]
    # graded in place, in the very sandbox the agent edited (no second container)
    assert traj.reward_details["eval_sandbox"] == traj.metadata["sandbox"]


@pytest.mark.docker
async def test_policy_that_changes_nothing_gets_reward_0(tmp_path: Path) -> None:
    task = example_tasks()["agentic__statskit-1"]
    config = AgenticRolloutConfig(
        agent_type="coding",
        trajectory_save_path=str(tmp_path / "t.jsonl"),
        sandbox={"type": "docker", "run_id": TEST_RUN_ID},
    )
    summary = await run_swe([task], config, llm_client=ScriptedLLM([tool_call("submit", {})]))
    traj = summary.trajectories[0]
    assert (
        traj.reward == 0.0 and traj.reward_details["reason"] == "empty patch: nothing to evaluate"
    )
    assert traj.reward_details["report"]["agentic__statskit-1"]["patch_exists"] is False


@pytest.mark.docker
async def test_bad_inputs_are_reported_not_raised() -> None:
    tasks = example_tasks()
    calkit = tasks["agentic__calkit-1"]
    sandbox = {"run_id": TEST_RUN_ID}
    not_applying = "diff --git a/calkit/leap.py b/calkit/leap.py\n--- a/calkit/leap.py\n+++ b/calkit/leap.py\n@@ -1,2 +1,2 @@\n-nothing like this\n+x\n"
    r = await evaluate(calkit, not_applying, sandbox=sandbox)
    assert not r.resolved and not r.patch_applied and r.reward == 0.0
    assert r.reason is not None and r.reason.startswith("model patch does not apply")
    assert r.report["agentic__calkit-1"]["patch_successfully_applied"] is False
    broken_tests = calkit.model_copy(
        update={"test_patch": not_applying.replace("calkit/leap.py", "tests/test_leap.py")}
    )
    r = await evaluate(broken_tests, calkit.patch, sandbox=sandbox)
    assert (
        not r.resolved and r.reason is not None and r.reason.startswith("test patch does not apply")
    )
    hanging = calkit.model_copy(update={"test_command": "sleep 100; true", "test_timeout": 2})
    r = await evaluate(hanging, calkit.patch, sandbox=sandbox)
    assert not r.resolved and r.reason == "tests timed out after 2s"
    missing = calkit.model_copy(update={"image": "agentic-rollout/swe-missing:1"})
    [r] = await evaluate_many([(missing, calkit.patch)], sandbox=sandbox)
    assert not r.resolved and r.reason is not None
    assert r.reason.startswith("SandboxStartError") and "agentic-rollout/swe-missing:1" in r.reason


@pytest.mark.docker
def test_swe_eval_cli_with_predictions(tmp_path: Path) -> None:
    tasks = example_tasks()
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text(
        "".join(
            json.dumps(p) + "\n"
            for p in [
                {
                    "instance_id": "agentic__textkit-1",
                    "model_name_or_path": "gold",
                    "model_patch": tasks["agentic__textkit-1"].patch,
                },
                {
                    "instance_id": "agentic__statskit-1",
                    "model_name_or_path": "none",
                    "model_patch": "",
                },
            ]
        )
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "swe",
            "eval",
            str(TASKS_FILE),
            str(predictions),
            "--output",
            str(tmp_path / "reports"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "agentic__textkit-1: RESOLVED f2p=1.00 p2p=1.00" in proc.stdout
    assert "agentic__statskit-1: unresolved" in proc.stdout and "resolved=1 total=2" in proc.stdout
    assert "no prediction for agentic__calkit-1" in proc.stderr
    report = json.loads((tmp_path / "reports" / "agentic__textkit-1.report.json").read_text())
    assert set(report["agentic__textkit-1"]) == {
        "patch_is_None",
        "patch_exists",
        "patch_successfully_applied",
        "resolved",
        "tests_status",
    }
