"""Architecture figures: import cycles between modules, modules importing another module's
private (_underscore) names, the longest functions, and where each run-config field is defined.

    python scripts/arch_metrics.py            # run from the checkout to measure

Imports are read from the source (grimp: every import statement, including those inside
functions and under TYPE_CHECKING), so a lazy import still counts as an edge; the cycles left
when TYPE_CHECKING imports (annotations only) are left out are printed too.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

import grimp

ROOT = Path.cwd()  # the checkout measured (run it from another checkout to compare)
PACKAGES = ("orchestrator", "agents", "tools")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in graph.modules:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def private_imports() -> list[str]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "sandbox/agent/" in str(path):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.module
                    and node.level == 0
                    and node.module.split(".")[0] in PACKAGES  # ours, not a library's
                ):
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__"):
                            found.append(f"{path.relative_to(ROOT)}: {node.module}.{alias.name}")
    return found


def longest_functions(n: int = 5) -> list[tuple[int, str]]:
    sizes = []
    for pkg in (*PACKAGES, "bench"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    sizes.append((length, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(sizes, reverse=True)[:n]


#: the pydantic models that describe one run's configuration (read from the source by name, so
#: the figure compares versions whose modules differ)
CONFIG_MODELS = (
    "AgenticRolloutConfig",
    "LLMSettings",
    "AgentConfig",
    "ToolsSettings",
    "VerlLoopSettings",
)


def config_field_definitions() -> Counter[str]:
    """How many of the run-configuration models define each field name (source, not imports)."""
    count: Counter[str] = Counter()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name in CONFIG_MODELS:
                    count.update(
                        stmt.target.id
                        for stmt in node.body
                        if isinstance(stmt, ast.AnnAssign)
                        and isinstance(stmt.target, ast.Name)
                        and stmt.target.id != "model_config"
                    )
    return count


def main() -> None:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    found = cycles(graph)
    print(f"import cycles (strongly connected groups of modules): {len(found)}")
    for comp in found:
        print(f"  {len(comp)} modules: {', '.join(comp[:8])}{' ...' if len(comp) > 8 else ''}")
    # the same without imports under TYPE_CHECKING (annotations only: no import order at run time)
    runtime = grimp.build_graph(
        *PACKAGES, include_external_packages=False, exclude_type_checking_imports=True
    )
    print(f"  of which with run-time imports only (TYPE_CHECKING left out): {len(cycles(runtime))}")
    private = private_imports()
    print(f"imports of another module's private names: {len(private)}")
    for line in private:
        print(f"  {line}")
    print("longest functions:")
    for length, where in longest_functions():
        print(f"  {length:4d} lines  {where}")
    counts = config_field_definitions()
    repeated = {k: v for k, v in sorted(counts.items()) if v > 1}
    print(
        f"run-config fields: {len(counts)} names, {sum(counts.values())} definitions; "
        f"defined more than once: {len(repeated)} {repeated}"
    )


if __name__ == "__main__":
    main()
