"""The architecture holds: trajectories written by the previous version load and serialise to
the same JSON, the exception tree in the docs is the real one, and the layer contracts pass."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import exceptions
from orchestrator.cli import main
from orchestrator.store import read_trajectories

ROOT = Path(__file__).resolve().parent.parent
#: written by the code of main before the restructuring (agentic-rollout 0.1.0, schema 2)
FIXTURE = ROOT / "tests" / "fixtures" / "trajectories-v0.1.0.jsonl"


def test_trajectories_of_the_previous_version_load_and_keep_their_json() -> None:
    lines = FIXTURE.read_text().splitlines()
    trajectories = list(read_trajectories(FIXTURE))
    assert [t.request_id for t in trajectories] == ["calc-1", "calc-2", "swe-1"]
    for line, traj in zip(lines, trajectories, strict=True):
        assert json.loads(traj.to_json()) == json.loads(line)  # same trajectory JSON
    swe = trajectories[2]
    assert swe.metadata["patch"].startswith("diff --git a/x.py")
    assert swe.metadata["user_key"] == "kept" and swe.reward == 1.0
    assert trajectories[0].get_tool_calls()[0].tool_name == "calculator"


def test_the_cli_reads_trajectories_of_the_previous_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(FIXTURE), "--id", "swe-1"]) == 0
    assert "swe-1" in capsys.readouterr().out
    out = tmp_path / "sft.jsonl"
    assert main(["export", str(FIXTURE), "-o", str(out), "--where", "status=completed"]) == 0
    assert len(out.read_text().splitlines()) == 3
    html = tmp_path / "report.html"
    assert main(["view", str(FIXTURE), "-o", str(html)]) == 0
    assert "diff --git a/x.py" in html.read_text()  # the patch reaches the report


def _documented_tree() -> dict[str, str]:
    """class -> parent, from the box drawing in orchestrator/exceptions.py's docstring."""
    doc = exceptions.__doc__ or ""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in doc.splitlines():
        at = line.find("── ")
        if at < 0:
            continue
        name = line[at + 3 :].split()[0]
        while stack and stack[-1][0] >= at:
            stack.pop()
        parents[name] = stack[-1][1] if stack else "AgenticRolloutError"
        stack.append((at, name))
    return parents


def test_the_documented_exception_tree_is_the_real_one() -> None:
    real = {
        name: cls.__bases__[0].__name__
        for name, cls in inspect.getmembers(exceptions, inspect.isclass)
        if issubclass(cls, exceptions.AgenticRolloutError)
        and cls is not exceptions.AgenticRolloutError
        and cls.__module__ == exceptions.__name__
    }
    assert _documented_tree() == real


def test_the_layer_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is in the dev extra"
    proc = subprocess.run(
        [lint], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"Contracts: \d+ kept, 0 broken", proc.stdout)
