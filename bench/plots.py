"""``bench plots``: PNG plots and markdown tables from the JSON files the benchmarks wrote.

    agentic-rollout bench rpc --peers --json bench/results/rpc.json
    agentic-rollout bench startup --json bench/results/startup.json
    agentic-rollout bench scale --json bench/results/scale.json
    agentic-rollout bench editor --json bench/results/editor.json
    agentic-rollout bench search --json bench/results/search.json
    agentic-rollout bench plots --results bench/results --out docs/benchmarks

Writes one PNG per benchmark found, and ``tables.md`` with the figures as tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.exceptions import ConfigError


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return data


def _bars(ax: Any, labels: list[str], values: list[float], *, log: bool, unit: str) -> None:
    bars = ax.bar(labels, values, color=["#2b6cb0", "#a0aec0", "#dd6b20", "#d69e2e"][: len(labels)])
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(unit)
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(
            f"{value:.3g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _rpc(result: dict[str, Any], out: Path, plt: Any) -> tuple[Path, str]:
    systems = [("rpc", "ours (RPC)"), ("exec", "docker exec")]
    if "swerex_session_trivial_p50_ms" in result:
        systems += [("swerex_session", "SWE-ReX session"), ("swerex_exec", "SWE-ReX execute")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rows = ["| system | trivial p50 | trivial p99 | 1 MB p50 | 1 MB p99 |", "|---|---|---|---|---|"]
    for ax, size, title in ((axes[0], "trivial", "`true`"), (axes[1], "1mb", "1 MB of output")):
        values = [result[f"{key}_{size}_p50_ms"] for key, _ in systems]
        _bars(ax, [label for _, label in systems], values, log=True, unit="p50 ms per call (log)")
        ax.set_title(f"per-call latency: {title}")
        ax.tick_params(axis="x", labelsize=8)
    for key, label in systems:
        rows.append(
            f"| {label} | {result[f'{key}_trivial_p50_ms']:.2f} ms | "
            f"{result[f'{key}_trivial_p99_ms']:.2f} ms | {result[f'{key}_1mb_p50_ms']:.1f} ms | "
            f"{result[f'{key}_1mb_p99_ms']:.1f} ms |"
        )
    fig.tight_layout()
    path = out / "rpc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, "\n".join(rows)


def _startup(result: dict[str, Any], out: Path, plt: Any) -> tuple[Path, str]:
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = ["raw create+start", "sandbox ready", "warm-pool acquire"]
    values = [result["raw_start_ms"], result["ready_ms"], result["pool_acquire_p50_ms"]]
    _bars(ax, labels, values, log=True, unit="p50 ms (log)")
    ax.set_title("time to a sandbox that answers")
    fig.tight_layout()
    path = out / "startup.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rows = [
        "| measure | p50 |",
        "|---|---|",
        f"| raw create+start (`sleep infinity`) | {result['raw_start_ms']:.1f} ms |",
        f"| sandbox ready (create to first answered ping) | {result['ready_ms']:.1f} ms |",
        f"| ready / raw | {result['ready_ratio']:.2f} |",
        f"| warm-pool acquire (pool of {result['pool_size']}, {result['pool_hits']}/"
        f"{result['pool_acquires']} hits) | {result['pool_acquire_p50_ms']:.3f} ms "
        f"(p99 {result['pool_acquire_p99_ms']:.3f}) |",
        f"| burst of {2 * result['pool_size']} acquires: misses (cold starts under load) | "
        f"{result['burst_miss_p50_ms'] or 0:.0f} ms |",
    ]
    return path, "\n".join(rows)


def _scale(result: dict[str, Any], out: Path, plt: Any) -> tuple[Path, str]:
    levels = result["levels"]
    xs = [lv["concurrency"] for lv in levels]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    axes[0].plot(xs, [lv["trajectories_per_min"] for lv in levels], "o-", label="trajectories/min")
    axes[0].plot(xs, [lv["tool_calls_per_s"] for lv in levels], "s-", label="tool calls/s")
    axes[0].set_title("throughput")
    axes[0].legend()
    axes[1].plot(xs, [lv["cpu_per_tool_call_ms"] for lv in levels], "o-", color="#dd6b20")
    axes[1].axhline(1.0, ls="--", color="grey", lw=1)
    axes[1].set_title("orchestrator CPU ms per tool call")
    axes[1].set_ylim(bottom=0)
    axes[2].plot(xs, [lv["mem_per_sandbox_mb"] or 0 for lv in levels], "o-", label="per sandbox")
    axes[2].set_title("memory per sandbox (MB, cgroup)")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("concurrent sandboxes")
        ax.set_xticks(xs)
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rows = [
        "| sandboxes | traj/min | tool calls/s | CPU ms/tool call | tool call p50 | peak host "
        "mem | mem/sandbox | completed | leaked |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        rows.append(
            f"| {lv['concurrency']} | {lv['trajectories_per_min']:.0f} | "
            f"{lv['tool_calls_per_s']:.1f} | {lv['cpu_per_tool_call_ms']:.2f} | "
            f"{lv['tool_call_p50_ms']:.0f} ms | {lv['peak_host_mem_mb']:.0f} MB | "
            f"{lv['mem_per_sandbox_mb'] or 0:.1f} MB | {lv['completed']}/{lv['trajectories']} | "
            f"{lv['leaked']} |"
        )
    return path, "\n".join(rows)


def _tools(result: dict[str, Any], out: Path, plt: Any) -> tuple[Path, str]:
    ops = [k for k, v in result.items() if isinstance(v, dict)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    xs = list(range(len(ops)))
    ax.bar(
        [x - width / 2 for x in xs],
        [result[o]["tool_p50_ms"] for o in ops],
        width,
        label="tool (ours)",
        color="#2b6cb0",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [result[o]["docker_exec_p50_ms"] for o in ops],
        width,
        label="docker exec",
        color="#a0aec0",
    )
    ax.set_xticks(xs)
    ax.set_xticklabels(ops)
    ax.set_ylabel("p50 ms")
    ax.set_title(f"{result['kind']}: tool latency on a {result['files']}-file tree")
    ax.legend()
    fig.tight_layout()
    path = out / f"{result['kind']}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rows = [
        "| operation | tool p50 | tool p99 | docker exec p50 | ratio |",
        "|---|---|---|---|---|",
    ]
    for o in ops:
        r = result[o]
        rows.append(
            f"| {o} | {r['tool_p50_ms']:.2f} ms | {r['tool_p99_ms']:.2f} ms | "
            f"{r['docker_exec_p50_ms']:.1f} ms | {r['speedup']:.1f}x |"
        )
    return path, "\n".join(rows)


def run(results: Path, out: Path) -> dict[str, Any]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError(f"bench plots needs matplotlib (pip install matplotlib): {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    makers = {"rpc": _rpc, "startup": _startup, "scale": _scale, "editor": _tools, "search": _tools}
    files: list[str] = []
    tables: list[str] = []
    for name, make in makers.items():
        data = _load(results, name)
        if data is None:
            continue
        path, table = make(data, out, plt)
        files.append(str(path))
        tables.append(f"### {name}\n\n{table}\n")
    if not files:
        raise ConfigError(f"no benchmark results (rpc.json, scale.json, ...) in {results}")
    (out / "tables.md").write_text("\n".join(tables))
    return {"plots": files, "tables": str(out / "tables.md")}


def summary_lines(result: dict[str, Any]) -> list[str]:
    return [f"plots={len(result['plots'])} tables={result['tables']}"]
