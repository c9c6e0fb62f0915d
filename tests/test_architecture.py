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
from orchestrator.tasks import Task
from orchestrator.trajectory import RESERVED_METADATA, Trajectory

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
    assert swe.patch is not None and swe.patch.startswith("diff --git a/x.py")  # typed access
    assert swe.patch == swe.metadata["patch"] and trajectories[0].patch is None
    assert swe.token_ledger is None and swe.save_error is None
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


def test_every_metadata_key_our_modules_write_is_reserved_and_documented() -> None:
    """``metadata`` is the user's, except RESERVED_METADATA: a new load-bearing key has to be
    declared there (with its writer), not slipped into the user's dict."""
    written: dict[str, set[str]] = {}
    for package in ("orchestrator", "agents", "tools"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for key in re.findall(
                r"\b(?:traj|trajectory|record)\.metadata(?:\[\"(\w+)\"\] =|\.setdefault\(\"(\w+)\")",
                text,
            ):
                written.setdefault(key[0] or key[1], set()).add(str(path.relative_to(ROOT)))
    assert written, "the scan found the writers"
    assert set(written) <= set(RESERVED_METADATA), written


def test_typed_trajectory_fields_leave_metadata_to_the_user() -> None:
    """patch, token ledger and save error are typed fields: in memory ``metadata`` holds the
    user's keys only; the JSON keeps them inside ``metadata`` where the previous versions wrote
    them (so old readers and old files work). Documented behaviour for a reserved key written
    through ``metadata``: it reads and writes the typed field, never the user's dict; given
    both ways at once, the trajectory is refused."""
    traj = Trajectory(request_id="t")
    traj.metadata["run_id"] = "r"  # the runner's, before the agent runs
    traj.patch, traj.token_ledger, traj.save_error = "d", {"prompt_ids": [1]}, "disk full"
    traj.metadata["user_key"] = 1
    assert dict(traj.metadata) == {"run_id": "r", "user_key": 1} and len(traj.metadata) == 2
    stored = json.loads(traj.to_json())
    assert list(stored["metadata"]) == ["run_id", "patch", "tokens", "save_error", "user_key"]
    assert not {"patch", "token_ledger", "save_error"} & set(stored)  # not top-level keys
    again = Trajectory.from_dict(stored)
    assert (again.patch, again.token_ledger, again.save_error) == (
        "d",
        {"prompt_ids": [1]},
        "disk full",
    )
    assert dict(again.metadata) == {"run_id": "r", "user_key": 1}
    assert again.to_json() == traj.to_json()  # byte for byte
    # a reserved key through metadata is the typed field
    traj.metadata["patch"] = "e"
    assert traj.patch == "e" and traj.metadata["patch"] == "e" and "patch" in traj.metadata
    assert dict(traj.metadata) == {"run_id": "r", "user_key": 1}
    traj.patch = None
    assert "patch" not in traj.metadata and traj.metadata.get("patch") is None
    assert Trajectory(request_id="u", metadata={"tokens": {"a": 1}}).token_ledger == {"a": 1}
    with pytest.raises(ValueError, match=r"metadata\.patch and patch are the same field"):
        Trajectory(request_id="u", patch="a", metadata={"patch": "b"})


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


def test_bench_is_not_installed_and_the_cli_loads_it_from_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(p.startswith("bench") for p in include)
    from orchestrator.cli import bench

    assert bench.load("sysstat").__file__ == str(ROOT / "bench" / "sysstat.py")
    monkeypatch.setattr(bench, "REPO_ROOT", tmp_path)  # an installed copy: no checkout around
    with pytest.raises(exceptions.AgenticRolloutError, match="need a source checkout"):
        bench.load("rpc")


#: what a program may import first; each runs the package ``orchestrator``'s ``__init__`` (which
#: re-exports the runner) at a different point of its own import
ENTRY_POINTS = (
    "orchestrator",
    "tools",
    "agents",
    "tools.editor",
    "agents.formats",
    "orchestrator.cli",
)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_any_package_imports_first_with_an_eager_public_api_and_no_side_effects(
    entry: str,
) -> None:
    """No import cycle is dodged with a lazy import: ``orchestrator`` exports the runner eagerly
    whichever package a program imports first, and importing creates no client, thread or
    logging handler and imports no SDK (those load when used)."""
    code = f"""
import json, logging, sys, threading
import {entry}
import orchestrator
print(json.dumps({{
    "getattr": hasattr(orchestrator, "__getattr__"),
    "runner": orchestrator.AgenticRollout.__module__,
    "sdks": sorted(m for m in ("docker", "kubernetes", "openai", "anthropic", "prometheus_client",
                               "verl", "torch") if m in sys.modules),
    "threads": threading.active_count(),
    "handlers": len(logging.getLogger().handlers),
}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    assert found == {
        "getattr": False,
        "runner": "orchestrator.runner",
        "sdks": [],
        "threads": 1,
        "handlers": 0,
    }


def test_the_module_graph_has_no_import_cycle_not_even_for_annotations() -> None:
    """Every import statement counts: those inside functions and under ``TYPE_CHECKING`` too (a
    type-only loop is still two modules that cannot be read or moved apart)."""
    import grimp

    graph = grimp.build_graph("orchestrator", "agents", "tools", include_external_packages=False)
    loops = sorted(
        f"{importer} -> {imported} -> ... -> {importer}"
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported != importer and graph.chain_exists(importer=imported, imported=importer)
    )
    assert loops == []


def test_the_task_kind_is_a_typed_field_and_the_task_json_is_unchanged() -> None:
    row = {"instance_id": "x__y-1", "repo": "x/y"}
    task = Task.from_any({"prompt": "fix it", "metadata": {"a": 1, "swe": row, "b": 2}})
    assert task.swe_row == row and task.kind == "swe" and dict(task.metadata) == {"a": 1, "b": 2}
    dumped = task.model_dump(mode="json")
    assert list(dumped["metadata"]) == ["a", "swe", "b"] and "swe_row" not in dumped
    assert task.id == "task-7236a8d828bb"  # the content id of the previous version
    assert Task.from_any("q").kind == "plain" and Task.from_any("q").swe_row is None
