"""``bench editor`` / ``bench search``: tool-level latency on a real repository tree.

The project's own sources (``orchestrator/ agents/ tools/ bench/ tests/``, ~100 files) are
uploaded into a Docker sandbox at ``/repo``. Each operation runs through the real tool (what a
model's call costs: argument validation, the sandbox calls, formatting the observation) and,
interleaved with it in the same run, the closest ``docker exec`` command as the baseline (what a
harness that shells out per call pays for the raw operation alone).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

from bench.rpc import _p, docker_exec
from orchestrator.sandbox.docker import DockerSandbox, DockerSandboxConfig, docker_api
from tools.base import ToolContext
from tools.registry import default_registry

ROOT = Path(__file__).resolve().parent.parent
TREES = ("orchestrator", "agents", "tools", "bench", "tests")
FILE = "/repo/orchestrator/runner.py"

#: operation -> (tool name, arguments, baseline shell command)
OPS: dict[str, dict[str, tuple[str, dict[str, Any], str]]] = {
    "editor": {
        "view_file": (
            "str_replace_editor",
            {"command": "view", "path": FILE},
            f"cat -n {FILE}",
        ),
        "view_range": (
            "str_replace_editor",
            {"command": "view", "path": FILE, "view_range": [100, 160]},
            f"sed -n 100,160p {FILE}",
        ),
        "view_dir": (
            "str_replace_editor",
            {"command": "view", "path": "/repo/orchestrator"},
            "find /repo/orchestrator -maxdepth 2 -not -path '*/.*'",
        ),
        "str_replace": (
            "str_replace_editor",
            {
                "command": "str_replace",
                "path": "/repo/scratch.py",
                "old_str": "VALUE = {old}",
                "new_str": "VALUE = {new}",
            },
            "sed -i 's/VALUE = {old}/VALUE = {new}/' /repo/scratch.py",
        ),
        "create": (
            "str_replace_editor",
            {"command": "create", "path": "/repo/new_{n}.py", "file_text": "x = 1\n" * 50},
            "printf 'x = 1\\n%.0s' $(seq 50) > /repo/new_{n}.py",
        ),
    },
    "search": {
        "grep": (
            "search",
            {"command": "grep", "pattern": "async def [a-z_]+\\(", "path": "/repo"},
            "grep -rnE 'async def [a-z_]+\\(' /repo",
        ),
        "search_dir": (
            "search",
            {"command": "search_dir", "pattern": "Sandbox", "path": "/repo"},
            "grep -rc Sandbox /repo | grep -v ':0$'",
        ),
        "search_file": (
            "search",
            {"command": "search_file", "pattern": "def ", "path": FILE},
            f"grep -n 'def ' {FILE}",
        ),
        "find_file": (
            "search",
            {"command": "find_file", "pattern": "*.py", "path": "/repo"},
            "find /repo -name '*.py'",
        ),
    },
}


def _fill(value: Any, n: int, current: int) -> Any:
    """{n}: a fresh number; {old}/{new}: scratch.py's VALUE now and after the edit."""
    if isinstance(value, str):
        return (
            value.replace("{n}", str(n))
            .replace("{old}", str(current))
            .replace("{new}", str(current + 1))
        )
    if isinstance(value, dict):
        return {k: _fill(v, n, current) for k, v in value.items()}
    return value


async def run(
    kind: str, *, image: str = "agentic-rollout/sandbox:latest", rounds: int = 30
) -> dict[str, Any]:
    ops = OPS[kind]
    config = DockerSandboxConfig(image=image, memory="1g")
    async with config.build() as sandbox:
        assert isinstance(sandbox, DockerSandbox)
        for tree in TREES:
            await sandbox.upload(ROOT / tree, "/repo")
        await sandbox.write_file("/repo/scratch.py", b"VALUE = 0\n")
        files = (await sandbox.exec("find /repo -type f | wc -l")).stdout.strip()
        registry = default_registry()
        ctx = ToolContext(sandbox=sandbox, workspace="/repo")
        api = docker_api()
        tool_t: dict[str, list[float]] = {op: [] for op in ops}
        base_t: dict[str, list[float]] = {op: [] for op in ops}
        sizes: dict[str, int] = {}

        def exec_once(cmd: str) -> float:
            assert sandbox.container_id is not None
            return docker_exec(api, sandbox.container_id, cmd)[0]

        try:
            n = value = 0
            for i in range(rounds + 1):  # the first round warms up and is dropped
                for op, (tool, args, shell) in ops.items():
                    n += 1
                    t0 = time.perf_counter()
                    result = await registry.execute(tool, _fill(args, n, value), ctx)
                    elapsed = time.perf_counter() - t0
                    assert result.success, (op, result.output[:300])
                    sizes[op] = len(result.observation())
                    value += op == "str_replace"
                    n += 1
                    base = await asyncio.to_thread(exec_once, _fill(shell, n, value))
                    value += op == "str_replace"
                    if i > 0:
                        tool_t[op].append(elapsed)
                        base_t[op].append(base)
        finally:
            api.close()

    out: dict[str, Any] = {"kind": kind, "image": image, "rounds": rounds, "files": int(files)}
    for op in ops:
        tool_p50 = statistics.median(tool_t[op]) * 1000
        base_p50 = statistics.median(base_t[op]) * 1000
        out[op] = {
            "tool_p50_ms": tool_p50,
            "tool_p99_ms": _p(tool_t[op], 0.99) * 1000,
            "docker_exec_p50_ms": base_p50,
            "speedup": base_p50 / tool_p50,
            "observation_chars": sizes[op],
        }
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    ops = [k for k, v in result.items() if isinstance(v, dict)]
    lines = [
        f"{op}: tool_p50_ms={result[op]['tool_p50_ms']:.2f} "
        f"tool_p99_ms={result[op]['tool_p99_ms']:.2f} "
        f"docker_exec_p50_ms={result[op]['docker_exec_p50_ms']:.2f} "
        f"speedup={result[op]['speedup']:.1f}"
        for op in ops
    ]
    lines.append(
        " ".join(f"{op}_p50_ms={result[op]['tool_p50_ms']:.2f}" for op in ops)
        + f" min_speedup={min(result[op]['speedup'] for op in ops):.1f}"
    )
    return lines
