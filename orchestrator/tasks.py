"""Tasks: what one trajectory is asked to do, and loading them from JSONL.

Accepts the shapes users have: ``{"id", "prompt"}``, the seed's ``{"content": ...}``, chat
``{"messages": [...]}``, and ``request_id`` / ``instance_id`` as the id. A broken line in a task
file is reported with its number and the rest still runs.

A task without an id gets one derived from its content (``task-`` + 12 hex digits of the
SHA-256 of its canonical JSON): stable across runs, so resuming works, and two different tasks
cannot share it by accident. Two identical tasks get the same id: they run once, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from orchestrator.datasets import is_dataset_path, load_rows
from orchestrator.exceptions import TaskError
from orchestrator.metadata import TypedMetadataModel

log = logging.getLogger(__name__)


def content_id(values: dict[str, Any]) -> str:
    """``task-`` + the first 12 hex digits of the SHA-256 of the task's canonical JSON."""
    canonical = json.dumps(
        values, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return "task-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


class Task(TypedMetadataModel):
    model_config = ConfigDict(extra="allow")
    #: typed fields that the JSON keeps inside ``metadata`` (see orchestrator/metadata.py)
    TYPED_METADATA: ClassVar[dict[str, str]] = {"swe_row": "swe"}

    id: str
    #: the user request, as text or as chat messages
    prompt: str | list[dict[str, Any]]
    system_prompt: str | None = None
    #: working directory inside the sandbox (tools are confined to it)
    workspace: str | None = None
    #: per-task sandbox overrides, e.g. {"image": "python:3.12"}
    sandbox: dict[str, Any] = Field(default_factory=dict)
    #: shell commands run in the sandbox before the agent starts (setup, not part of the run)
    setup: list[str] = Field(default_factory=list)
    #: expected answer: reward 1.0 when the final answer contains it (exact-match style tasks)
    answer: str | None = None
    #: the user's own data (a :class:`~orchestrator.metadata.TypedMetadata` without swe_row)
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: the SWE-bench row of an SWE task (set by :meth:`orchestrator.swe.task.SWETask.to_task`;
    #: ``metadata.swe`` in the JSON, as the previous versions wrote it), else None
    swe_row: dict[str, Any] | None = None
    #: True when the id was derived from the content (no id given)
    _content_id: bool = PrivateAttr(default=False)

    @property
    def id_from_content(self) -> bool:
        return self._content_id

    @property
    def kind(self) -> Literal["swe", "plain"]:
        """What kind of task it is, from the typed fields (``swe`` when it has an SWE row)."""
        return "swe" if self.swe_row is not None else "plain"

    @classmethod
    def from_any(cls, data: Any, *, index: int = 0) -> Task:
        """Build a task from a string, a seed-style dict or a full task dict.

        Without an id the task's id is derived from its content (see :func:`content_id`);
        ``index`` is accepted for compatibility and no longer used.
        """
        if isinstance(data, Task):
            return data
        if isinstance(data, str):
            data = {"prompt": data}
        if not isinstance(data, dict):
            raise TaskError(f"a task must be a JSON object or a string, got {type(data).__name__}")
        values = dict(data)
        tid = (
            values.pop("id", None)
            or values.pop("request_id", None)
            or values.pop("instance_id", None)
        )
        if "prompt" not in values:
            if "content" in values:
                values["prompt"] = values.pop("content")
            elif "messages" in values:
                values["prompt"] = values.pop("messages")
            elif "problem_statement" in values:
                values["prompt"] = values["problem_statement"]
        if isinstance(values.get("prompt"), dict):  # the seed's prompt={"content": ...}
            values["prompt"] = values["prompt"].get("content", "")
        if not values.get("prompt"):
            raise TaskError("task has no prompt (expected 'prompt', 'content' or 'messages')")
        try:
            if tid is not None:
                return cls(id=str(tid), **values)
            probe = cls(id="-", **values)  # validate first, so the hash sees normalised values
            task = probe.model_copy(
                update={"id": content_id(probe.model_dump(mode="json", exclude={"id"}))}
            )
            task._content_id = True
            return task
        except ValidationError as exc:
            raise TaskError(
                f"invalid task: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            ) from None

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n\n".join(
            str(m.get("content", "")) for m in self.prompt if m.get("role") == "user"
        )


class TaskLoadError(BaseModel):
    line: int
    message: str
    #: "warning": the line was skipped knowingly (an identical task already listed)
    level: Literal["error", "warning"] = "error"


def load_tasks(
    path: str | Path, *, split: str | None = None
) -> tuple[list[Task], list[TaskLoadError]]:
    """Tasks from a JSONL file (a .json file holding a list also works), or from a local
    Hugging Face dataset (parquet/arrow file or folder; ``split`` picks one of its splits).

    Returns the good tasks and one error per bad line (row); duplicate ids are errors too.
    """
    path = Path(path)
    rows: list[tuple[int, Any]] = []
    errors: list[TaskLoadError] = []
    if is_dataset_path(path):
        rows = list(enumerate(load_rows(path, split=split), start=1))
        return _tasks_from_rows(rows, errors)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not content
    except OSError as exc:
        raise TaskError(f"cannot read task file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TaskError(f"task file {path} is not UTF-8: {exc}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TaskError(f"{path} is not valid JSON: {exc}") from None
        rows = list(enumerate(data if isinstance(data, list) else [data], start=1))
    else:
        lines = text.splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                rows.append((number, json.loads(line)))
            except ValueError as exc:
                message = f"not valid JSON: {exc}"
                if number == len(lines) and not text.endswith("\n"):
                    message = (
                        "truncated last line (no newline at the end: the file was cut or is "
                        f"still being written): {message}"
                    )
                errors.append(TaskLoadError(line=number, message=message))
    return _tasks_from_rows(rows, errors)


def _tasks_from_rows(
    rows: list[tuple[int, Any]], errors: list[TaskLoadError]
) -> tuple[list[Task], list[TaskLoadError]]:
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for number, row in rows:
        try:
            task = Task.from_any(row, index=number)
        except TaskError as exc:
            errors.append(TaskLoadError(line=number, message=str(exc)))
            continue
        if task.id in seen:
            first = seen[task.id]
            if task.id_from_content:
                errors.append(
                    TaskLoadError(
                        line=number,
                        message=f"identical to the task on line {first} (same content, same id "
                        f"{task.id!r}): it runs once",
                        level="warning",
                    )
                )
            else:
                errors.append(
                    TaskLoadError(
                        line=number,
                        message=f"duplicate task id {task.id!r} (first on line {first}): this "
                        "line is not run; give it another id",
                    )
                )
            continue
        seen[task.id] = number
        tasks.append(task)
    errors.sort(key=lambda e: e.line)
    return tasks, errors
