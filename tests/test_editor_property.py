"""Property: random str_replace/insert edits match a pure-Python model of the file, and undoing
them all restores the original bytes exactly (on a real sandbox)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orchestrator.sandbox.local import LocalSandboxConfig
from tools import FileEditorTool, ToolContext

from .conftest import docker_config

TEXT = st.text(alphabet="abcdefgh \t\né€", max_size=60)
#: positions are drawn as raw integers and mapped onto the file as it is at that step, so most
#: edits are valid (unique old_str, line in range) while the edge cases still occur
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("replace"), st.integers(0, 10**6), st.integers(0, 6), TEXT),
        st.tuples(st.just("insert"), st.integers(0, 10**6), TEXT),
    ),
    max_size=8,
)


def _unique_slice(model: str, start: int, length: int) -> str:
    """Grow model[start:start+length] until it occurs once (or give up at the end)."""
    if not model:
        return ""
    start %= len(model)
    while start + length < len(model) and model.count(model[start : start + length]) != 1:
        length += 1
    return model[start : start + length]


async def _check(sandbox_config: Any, original: str, ops: list[tuple[Any, ...]]) -> None:
    async with sandbox_config.build() as sandbox:
        root = (await sandbox.info())["cwd"]
        ctx = ToolContext(sandbox=sandbox, workspace=root)
        editor = FileEditorTool()
        path = f"{root}/f.txt"
        await sandbox.write_file(path, original.encode())
        model = original
        edits = 0
        for op in ops:
            if op[0] == "replace":
                _, start, length, new = op
                old = _unique_slice(model, start, length)
                r = await editor.execute(
                    {"command": "str_replace", "path": path, "old_str": old, "new_str": new}, ctx
                )
                ok = model.count(old) == 1  # the reference's rule: "" only in an empty file
                assert r.success == ok, (r.output, old, new)
                if ok:
                    model = model.replace(old, new)
            else:
                _, raw, new = op
                lines = model.split("\n")
                line = raw % (len(lines) + 3) - 1  # -1 and len+1 are out of range
                r = await editor.execute(
                    {"command": "insert", "path": path, "insert_line": line, "new_str": new}, ctx
                )
                ok = 0 <= line <= len(lines)
                assert r.success == ok, r.output
                if ok:
                    model = "\n".join(lines[:line] + new.split("\n") + lines[line:])
            edits += r.success
            assert await sandbox.read_file(path) == model.encode()
        event(f"successful edits: {edits}" if edits < 3 else "successful edits: 3+")
        for _ in range(edits):
            assert (await editor.execute({"command": "undo_edit", "path": path}, ctx)).success
        assert await sandbox.read_file(path) == original.encode()
        r = await editor.execute({"command": "undo_edit", "path": path}, ctx)
        assert r.output == f"No edit history found for {path}."


async def _check_reference(sandbox_config: Any, original: str, ops: list[tuple[Any, ...]]) -> None:
    """``semantics: reference``: every edit works on the tab-expanded text, as the reference tool
    does (old_str/new_str expanded too), and undo restores that expanded text."""
    async with sandbox_config.build() as sandbox:
        root = (await sandbox.info())["cwd"]
        ctx = ToolContext(sandbox=sandbox, workspace=root)
        editor = FileEditorTool({"semantics": "reference"})
        path = f"{root}/r.txt"
        await sandbox.write_file(path, original.encode())
        model, history = original, []
        for op in ops:
            expanded = model.expandtabs()
            if op[0] == "replace":
                _, start, length, new = op
                old = _unique_slice(model, start, length)
                r = await editor.execute(
                    {"command": "str_replace", "path": path, "old_str": old, "new_str": new}, ctx
                )
                ok = expanded.count(old.expandtabs()) == 1
                if ok:
                    history.append(expanded)
                    model = expanded.replace(old.expandtabs(), new.expandtabs())
            else:
                _, raw, new = op
                lines = expanded.split("\n")
                line = raw % (len(lines) + 3) - 1
                r = await editor.execute(
                    {"command": "insert", "path": path, "insert_line": line, "new_str": new}, ctx
                )
                ok = 0 <= line <= len(lines)
                if ok:
                    history.append(expanded)
                    model = "\n".join(lines[:line] + new.expandtabs().split("\n") + lines[line:])
            assert r.success == ok, r.output
            assert await sandbox.read_file(path) == model.encode()
        while history:
            assert (await editor.execute({"command": "undo_edit", "path": path}, ctx)).success
            assert await sandbox.read_file(path) == history.pop().encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=TEXT, ops=OPS)
def test_reference_semantics_edits_and_undo_local(
    original: str, ops: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_check_reference(LocalSandboxConfig(), original, ops))


@pytest.mark.docker
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=TEXT, ops=OPS)
def test_reference_semantics_edits_and_undo_docker(
    original: str, ops: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_check_reference(docker_config(), original, ops))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=TEXT, ops=OPS)
def test_random_edits_then_undo_restore_bytes_local(
    original: str, ops: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_check(LocalSandboxConfig(), original, ops))


@pytest.mark.docker
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=TEXT, ops=OPS)
def test_random_edits_then_undo_restore_bytes_docker(
    original: str, ops: list[tuple[Any, ...]]
) -> None:
    asyncio.run(_check(docker_config(), original, ops))


@pytest.mark.docker
async def test_search_works_without_grep_or_rg() -> None:
    from tools import SearchTool

    async with docker_config().build() as sandbox:
        await sandbox.write_file("/workspace/m.py", "def target():\n    pass\n")
        gone = await sandbox.run(
            "rm -f $(command -v rg) $(command -v grep); command -v rg grep || echo none"
        )
        assert gone.output.strip().endswith("none")
        ctx = ToolContext(sandbox=sandbox, workspace="/workspace")
        r = await SearchTool().execute({"command": "grep", "pattern": "def target"}, ctx)
        assert r.success and r.output == (
            'Found 1 matches for "def target" in /workspace:\n/workspace/m.py:1:def target():'
        )
