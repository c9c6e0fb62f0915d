"""Test-log parsers and SWE-bench grading.

Semantics follow the SWE-bench harness: a test passes if it is PASSED or XFAIL; a
FAIL_TO_PASS test that is missing, FAILED, ERROR or SKIPPED is a failure; a PASS_TO_PASS test
is maintained if it passes or is skipped; ``resolved`` needs every F2P and P2P test to succeed.
The report has SWE-bench's ``report.json`` shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from orchestrator.exceptions import TaskError

START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
TEST_EXIT_CODE = ">>>>> Test Exit Code"
_EXIT_CODE = re.compile(rf"{re.escape(TEST_EXIT_CODE)}:\s*(-?\d+)")
STATUSES = ("FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL")
_SKIP_SUMMARY_COUNT = re.compile(r"^\[\d+\]$")


def parse_log_pytest(log: str) -> dict[str, str]:
    """``pytest -rA`` short summary lines: ``PASSED tests/x.py::test_a`` -> status map."""
    status: dict[str, str] = {}
    for raw in log.split("\n"):
        if any(raw.startswith(s) for s in STATUSES):
            line = raw.replace(" - ", " ") if raw.startswith("FAILED") else raw
            parts = line.split()
            if len(parts) <= 1:
                continue
            if parts[0] == "SKIPPED" and _SKIP_SUMMARY_COUNT.match(parts[1]):
                continue  # "SKIPPED [2] file:line: reason" is a count, not a test
            status[parts[1]] = parts[0]
    return status


PARSERS: dict[str, Callable[[str], dict[str, str]]] = {"pytest": parse_log_pytest}


def parse_log(log: str, parser: str) -> dict[str, str]:
    try:
        fn = PARSERS[parser]
    except KeyError:
        raise TaskError(
            f"no log parser named {parser!r}; available: {', '.join(sorted(PARSERS))}"
        ) from None
    section = log
    if START_TEST_OUTPUT in log and END_TEST_OUTPUT in log:
        section = log.split(START_TEST_OUTPUT, 1)[1].split(END_TEST_OUTPUT, 1)[0]
    status = fn(section)
    if not status and section.strip():
        raise TaskError(
            f"the {parser} log parser found no test results in the test output; is the test "
            f"command producing {parser} output (e.g. pytest -rA)? First lines: "
            f"{section.strip()[:300]!r}"
        )
    return status


def exit_code_of(log: str) -> int | None:
    match = _EXIT_CODE.search(log)
    return int(match.group(1)) if match else None


def passed(case: str, status: dict[str, str]) -> bool:
    return status.get(case) in ("PASSED", "XFAIL")


def maintained(case: str, status: dict[str, str]) -> bool:
    return passed(case, status) or status.get(case) == "SKIPPED"


def grade_tests(
    status: dict[str, str], f2p: list[str], p2p: list[str]
) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {
        k: {"success": [], "failure": []}
        for k in ("FAIL_TO_PASS", "PASS_TO_PASS", "FAIL_TO_FAIL", "PASS_TO_FAIL")
    }
    for case in f2p:
        out["FAIL_TO_PASS"]["success" if passed(case, status) else "failure"].append(case)
    for case in p2p:
        out["PASS_TO_PASS"]["success" if maintained(case, status) else "failure"].append(case)
    return out


def resolved(report_tests: dict[str, dict[str, list[str]]]) -> bool:
    f2p, p2p = report_tests["FAIL_TO_PASS"], report_tests["PASS_TO_PASS"]
    return not f2p["failure"] and not p2p["failure"] and bool(f2p["success"] or p2p["success"])


def fraction(report_tests: dict[str, dict[str, list[str]]], key: str) -> float:
    group = report_tests[key]
    total = len(group["success"]) + len(group["failure"])
    return 1.0 if total == 0 else len(group["success"]) / total


def empty_report(instance_id: str, patch: str | None) -> dict[str, Any]:
    return {
        instance_id: {
            "patch_is_None": patch is None,
            "patch_exists": bool(patch),
            "patch_successfully_applied": False,
            "resolved": False,
        }
    }
