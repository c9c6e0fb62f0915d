"""bench/sysstat.py: the machine's CPU is attributed to where it was really spent."""

from __future__ import annotations

import time

import pytest

from bench import sysstat
from tests.conftest import SANDBOX_IMAGE, docker_config

pytestmark = pytest.mark.skipif(not sysstat.available(), reason="needs Linux /proc")


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_own_cpu_counts_as_orchestrator() -> None:
    with sysstat.SystemMeter() as meter:
        _burn(0.3)
    split = meter.split
    assert split is not None
    assert split.orchestrator >= 0.25
    # the machine did at least what this process did (tick granularity: 10 ms)
    assert split.total >= split.orchestrator - 0.02
    per = split.per(3)
    assert per["orchestrator_ms"] == pytest.approx(split.orchestrator / 3 * 1000)


@pytest.mark.docker
async def test_a_container_burning_cpu_counts_as_sandboxes() -> None:
    """A sandbox that spins for ~0.5 s of CPU and is removed inside the window still counts:
    the parent cgroup keeps what removed children used."""
    assert sysstat.sandboxes_cpu_seconds() is not None or pytest.fail("no docker cgroup")
    with sysstat.SystemMeter() as meter:
        async with docker_config(image=SANDBOX_IMAGE).build() as sandbox:
            result = await sandbox.run(
                "python3 -c 'import time\nt=time.process_time()\n"
                "while time.process_time()-t<0.5: pass'",
                timeout=60,
            )
            assert result.exit_code == 0
    split = meter.split
    assert split is not None
    assert split.sandboxes >= 0.45, split
    # starting and removing a container costs the engine something; this process spun less
    # than the container did
    assert split.engine > 0, split
    assert split.orchestrator < split.sandboxes, split


_BURN = "python3 -c 'import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass'"


@pytest.mark.docker
async def test_containers_filter_counts_only_the_measured_containers() -> None:
    """With ``containers=``, a neighbour container's CPU is not ``sandboxes``, and a long-lived
    process that is not ours (here: a host process spinning through the window) is ``others``,
    not ``rest``: a shared machine's other work stays out of the figures."""
    import subprocess
    import sys

    async with (
        docker_config(image=SANDBOX_IMAGE).build() as ours,
        docker_config(image=SANDBOX_IMAGE).build() as neighbour,
    ):
        spinner = subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL
        )
        try:
            before = sysstat._proc_cpu(spinner.pid) or 0.0
            with sysstat.SystemMeter(containers=lambda: [ours.container_id]) as meter:
                assert (await ours.run(_BURN, timeout=60)).exit_code == 0
                assert (await neighbour.run(_BURN, timeout=60)).exit_code == 0
            spun = (sysstat._proc_cpu(spinner.pid) or 0.0) - before
        finally:
            spinner.kill()
            spinner.wait()
    split = meter.split
    assert split is not None
    # ours burnt 0.5 s; the neighbour's 0.5 s is not counted with it
    assert 0.45 <= split.sandboxes < 0.9, split
    assert split.others >= spun - 0.05 > 0, (split, spun)
    assert split.per(1)["others_ms"] == pytest.approx(split.others * 1000)
