"""The in-sandbox agent must run on any python3 >= 3.8 with only the standard library."""

from __future__ import annotations

import ast
import sys

from orchestrator.sandbox.base import AGENT_FILE, BOOTSTRAP

# modules added to the standard library after 3.8 must not be used either
_NOT_IN_38 = {"graphlib", "zoneinfo", "tomllib", "_tokenize"}


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "the agent is one file: no relative imports"
            names.add((node.module or "").split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("_Lazy", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def test_agent_imports_only_the_standard_library() -> None:
    tree = ast.parse(AGENT_FILE.read_text())
    imported = _imports(tree)
    assert imported, "found no imports at all: the check is broken"
    non_stdlib = {m for m in imported if m not in sys.stdlib_module_names}
    assert not non_stdlib, f"agent imports non-stdlib modules: {non_stdlib}"
    assert not imported & _NOT_IN_38


def test_agent_and_bootstrap_parse_as_python_38() -> None:
    ast.parse(AGENT_FILE.read_text(), feature_version=(3, 8))
    ast.parse(BOOTSTRAP, feature_version=(3, 8))
    assert _imports(ast.parse(BOOTSTRAP)) <= {"os", "sys", "marshal"}


def test_agent_has_no_import_side_effects() -> None:
    import importlib
    import os

    before = set(os.listdir("/tmp"))
    module = importlib.import_module("orchestrator.sandbox.agent.agent")
    assert hasattr(module, "main")
    assert set(os.listdir("/tmp")) == before
