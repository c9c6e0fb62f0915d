from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser, main


def test_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("gc", "bench", "build-images", "run", "show", "demo", "swe", "shell"):
        assert name in out


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["bench", "nope"])
    assert info.value.code == 2


@pytest.mark.docker
def test_gc_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gc", "--dry-run"]) == 0
    assert re.search(r"^reaped=0 found=\d+$", capsys.readouterr().out, re.M)


@pytest.mark.docker
def test_bench_rpc_prints_the_contract_line() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "bench",
            "rpc",
            "--calls",
            "40",
            "--exec-calls",
            "4",
            "--starts",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    f = r"\d+\.\d+"
    assert re.fullmatch(
        rf"rpc_p50_ms={f} exec_p50_ms={f} speedup={f} ready_ms={f} "
        rf"raw_start_ms={f} ready_ratio={f}",
        last,
    ), last
    assert re.search(rf"^agent_rss_idle_mb={f} ", proc.stdout, re.M)


def _bench(*args: str, timeout: int = 600) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip()
    last = out.splitlines()[-1]
    data, _ = json.JSONDecoder().raw_decode(out)  # the JSON comes first, then the lines
    return data, last


@pytest.mark.docker
def test_bench_suite_runs_end_to_end_and_plots(tmp_path: Path) -> None:
    """Every benchmark runs on real Docker (tiny sizes; figures are not asserted, shapes are)
    and `bench plots` turns their JSON into PNGs and tables."""
    f = r"\d+\.\d+"
    results = tmp_path / "results"
    results.mkdir()
    rpc, last = _bench(
        "rpc", "--peers", "--calls", "20", "--exec-calls", "2", "--big-calls", "1",
        "--starts", "1", "--json", str(results / "rpc.json"),
    )  # fmt: skip
    assert re.fullmatch(
        rf"rpc_p50_ms={f} exec_p50_ms={f} speedup={f} ready_ms={f} raw_start_ms={f} "
        rf"ready_ratio={f} swerex_session_speedup={f} swerex_exec_speedup={f}",
        last,
    ), last
    assert rpc["swerex_session_1mb_calls"] == 1 and rpc["rpc_1mb_calls"] == 1
    startup, last = _bench(
        "startup", "--starts", "1", "--pool-size", "1", "--json", str(results / "startup.json")
    )
    assert re.search(rf"pool_acquire_p50_ms={f}", last) and startup["pool_acquires"] == 40
    scale, last = _bench(
        "scale", "--levels", "2", "--per-slot", "1", "--tool-calls", "8",
        "--latency", "0.01", "--json", str(results / "scale.json"),
    )  # fmt: skip
    assert last.endswith("leaked=0"), last
    level = scale["levels"][0]  # type: ignore[index]
    assert level["completed"] == 2 and level["tool_calls"] == 16 and level["failed_tool_calls"] == 0
    for kind in ("editor", "search"):
        result, last = _bench(kind, "--rounds", "1", "--json", str(results / f"{kind}.json"))
        assert "min_speedup=" in last and result["files"] > 50  # type: ignore[operator]
    _, last = _bench("plots", "--results", str(results), "--out", str(tmp_path / "plots"))
    assert last.startswith("plots=5 ")
    for name in ("rpc", "startup", "scale", "editor", "search"):
        png = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    tables = (tmp_path / "plots" / "tables.md").read_text()
    assert "SWE-ReX execute" in tables and "| 2 |" in tables
