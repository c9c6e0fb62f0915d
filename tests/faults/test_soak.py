"""A small soak in CI (the 500-trajectory run is `agentic-rollout bench soak`): with many injected
faults, nothing is lost, written twice or leaked. Asserts invariants, not timings."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.docker


def test_soak_with_faults_loses_and_leaks_nothing() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "bench",
            "soak",
            "--trajectories",
            "60",
            "--fault-rate",
            "0.3",
            "--concurrency",
            "8",
            "--seconds",
            "240",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"trajectories=(\d+) lost=(\d+) duplicated=(\d+) leaked=(\d+) errors_by_kind=(\S+)", last
    )
    assert match, last
    trajectories, lost, duplicated, leaked = map(int, match.groups()[:4])
    assert (trajectories, lost, duplicated, leaked) == (60, 0, 0, 0)
    injected = int(re.search(r"injected_faults=(\d+)", proc.stdout).group(1))  # type: ignore[union-attr]
    assert injected >= 10
