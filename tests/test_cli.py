from __future__ import annotations

import re
import subprocess
import sys

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
