"""SWE-style tasks: SWE-bench instance rows as users have them.

A row has ``instance_id, repo, base_commit, problem_statement, patch, test_patch, FAIL_TO_PASS,
PASS_TO_PASS, version, environment_setup_commit, hints_text`` (F2P/P2P as JSON strings or
lists), plus optional ``image``, ``workdir`` (default ``/testbed``), ``test_command`` and
``log_parser``. Without ``image`` the SWE-bench scheme names it. A malformed row is rejected
with its instance id.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.datasets import is_dataset_path, load_rows
from orchestrator.exceptions import TaskError
from orchestrator.tasks import Task

DEFAULT_TEST_COMMAND = "python3 -m pytest -rA -p no:cacheprovider"

PROMPT = """<uploaded_files>
{workdir}
</uploaded_files>
I've uploaded a python code repository in the directory {workdir}. Consider the following issue:

<issue_description>
{problem_statement}
</issue_description>

Make the minimal changes to non-test files in {workdir} so that the issue is resolved. The tests
are already taken care of: do not modify them. When you are done, call submit."""


def swebench_image(instance_id: str) -> str:
    """SWE-bench's image name for an instance (``__`` becomes ``_1776_``)."""
    return f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_').lower()}:latest"


_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.M)


def patch_files(patch: str) -> list[str]:
    """Paths a unified git diff touches (both sides of renames)."""
    found: list[str] = []
    for a, b in _DIFF_FILE.findall(patch or ""):
        for path in (a, b):
            if path not in found:
                found.append(path)
    return found


class SWETask(BaseModel):
    model_config = ConfigDict(extra="allow")

    instance_id: str
    repo: str = ""
    base_commit: str
    problem_statement: str
    patch: str = ""
    test_patch: str
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str] = Field(default_factory=list)
    version: str | None = None
    environment_setup_commit: str | None = None
    hints_text: str | None = None
    image: str | None = None
    workdir: str = "/testbed"
    #: the test command; the instance's test files are appended
    test_command: str = DEFAULT_TEST_COMMAND
    log_parser: str = "pytest"
    #: seconds for the test run in evaluation
    test_timeout: float = 1800.0

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except ValueError as exc:
                raise ValueError(f"not a JSON list of test ids: {exc}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("must be a list of test ids (strings) or a JSON string of one")
        return value

    @classmethod
    def from_row(cls, row: Any) -> SWETask:
        if not isinstance(row, dict):
            raise TaskError(f"a SWE task must be a JSON object, got {type(row).__name__}")
        iid = row.get("instance_id", "<no instance_id>")
        try:
            return cls.model_validate(row)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise TaskError(f"SWE task {iid}: field {where}: {first['msg']}") from None

    @property
    def image_name(self) -> str:
        return self.image or swebench_image(self.instance_id)

    @property
    def test_files(self) -> list[str]:
        return patch_files(self.test_patch)

    def full_test_command(self) -> str:
        return f"{self.test_command} {' '.join(self.test_files)}".strip()

    def to_task(self) -> Task:
        """The rollout task: the problem statement in the workdir of the task's image."""
        return Task(
            id=self.instance_id,
            prompt=PROMPT.format(workdir=self.workdir, problem_statement=self.problem_statement),
            workspace=self.workdir,
            sandbox={"image": self.image_name, "workdir": self.workdir},
            metadata={
                "swe": self.model_dump(),
                # read by the submit tool and the coding agent when they build the patch
                "tool_context": {"base_commit": self.base_commit, "exclude": self.test_files},
            },
        )


#: columns a SWE-bench-shaped dataset must have (the others have defaults)
REQUIRED_COLUMNS = ("instance_id", "base_commit", "problem_statement", "test_patch", "FAIL_TO_PASS")


def load_swe_tasks(
    path: str | Path, *, split: str | None = None
) -> tuple[list[SWETask], list[str]]:
    """SWE tasks from JSONL (or a JSON list), or from a local Hugging Face dataset (parquet or
    arrow, ``split`` as in SWE-bench's ``test``); bad rows are returned as messages with their
    id, and a dataset missing a SWE-bench column is refused with the column named."""
    rows: list[tuple[int, Any]] = []
    errors: list[str] = []
    if is_dataset_path(path):
        data_rows = load_rows(path, split=split, columns=REQUIRED_COLUMNS)
        rows = list(enumerate(data_rows, start=1))
    elif str(path).endswith(".json"):
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
        rows = list(enumerate(data if isinstance(data, list) else [data], start=1))
    else:
        text = Path(path).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except ValueError as exc:
                    rows.append((number, TaskError(f"not valid JSON: {exc}")))
    tasks: list[SWETask] = []
    for number, row in rows:
        try:
            if isinstance(row, TaskError):
                raise row
            tasks.append(SWETask.from_row(row))
        except TaskError as exc:
            errors.append(f"{'row' if is_dataset_path(path) else 'line'} {number}: {exc}")
    return tasks, errors
