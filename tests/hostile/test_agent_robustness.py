"""Commands that used to turn into infrastructure errors or poison later calls, in real Docker:
a burst of concurrent calls, FIFOs and devices, fork bombs, user traps on the wrapper, sparse
files. Each asserts the specific outcome the model sees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.races import FORKER
from orchestrator.exceptions import ArchiveTooLargeError, NotARegularFileError
from tests.conftest import docker_config

pytestmark = pytest.mark.docker


@pytest.fixture
async def box() -> AsyncIterator[Any]:
    async with docker_config(pids_limit=128, memory="256m").build() as sandbox:
        yield sandbox


async def test_a_burst_of_calls_runs_in_one_wave(box: Any) -> None:
    """20 concurrent calls each record when they started and ended sleeping: every one started
    before any ended (the pool used to run them four at a time)."""
    for i in range(10):  # the sessions exist first: a bash start-up is not what is measured
        await box.run("true", session=f"s{i}")
    stamp = "s=$(date +%s%N); sleep 5; e=$(date +%s%N); echo $s $e"
    results = await asyncio.gather(
        *[box.exec(stamp) for _ in range(10)],
        *[box.run(stamp, session=f"s{i}") for i in range(10)],
    )
    spans = [
        tuple(map(int, (r.stdout if hasattr(r, "stdout") else r.output).split())) for r in results
    ]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans


async def test_non_regular_files_are_refused_by_file_primitives(box: Any) -> None:
    await box.run(
        "mkfifo /tmp/fifo && python3 -c "
        "'import socket; socket.socket(socket.AF_UNIX).bind(\"/tmp/sock\")'"
    )
    cases = {
        "/tmp/fifo": "a FIFO (named pipe)",
        "/tmp/sock": "a socket",
        "/dev/zero": "a character device",
    }
    for path, kind in cases.items():
        t0 = time.monotonic()
        with pytest.raises(NotARegularFileError) as err:
            await box.read_file(path)
        assert f"{path} is {kind}, not a regular file" in str(err.value)
        assert err.value.data["path"] == path
        assert time.monotonic() - t0 < 10  # a FIFO used to hold a worker for 60 s
    with pytest.raises(NotARegularFileError, match="FIFO"):
        await box.write_file("/tmp/fifo", "x", append=True)
    # plain writes replace the FIFO by a regular file, as `>` does not: the file is atomic
    assert await box.write_file("/tmp/fifo", "now a file") == 10
    assert await box.read_text("/tmp/fifo") == "now a file"


async def test_background_fork_bomb_is_killed_and_the_next_output_is_clean(box: Any) -> None:
    r = await box.run(":(){ :|:& };:", timeout=10)
    assert r.exit_code == 0  # returns at once: the bomb runs in the background
    if r.note is None:
        # the watchdog sees the pids limit hit within a second or so, kills the bomb and tells
        # the session, whose next command drops the bomb's output
        for _ in range(300):
            if (await box.info())["pids_guard_kills"] >= 1:
                break
            await asyncio.sleep(0.1)
        r = await box.run("echo clean")
        assert r.output == "clean\n", r.output
        assert r.note is not None and "pids limit reached (128 processes): killed" in r.note, r
        assert "of session 'default'" in r.note and "bytes of their output were discarded" in r.note
    else:
        # or the limit was hit before the command's own result was made: the bomb is killed
        # then, its output after the marker is this command's, and the next one is clean
        assert "pids limit reached (128 processes) during this command: killed" in r.note, r
        r = await box.run("echo clean")
        assert r.output == "clean\n" and r.note is None, r
    r = await box.run("sleep 1; echo still-clean; ps -e --no-headers | wc -l")
    lines = r.output.split()
    assert lines[0] == "still-clean" and int(lines[1]) < 10, r.output
    assert r.note is None


async def test_foreground_fork_bomb_ends_with_a_note(box: Any) -> None:
    r = await box.run("bomb() { bomb | bomb; }; bomb", timeout=120)
    # it ends at the limit (its forks fail, or the pids guard kills it), not at the timeout
    assert not r.timed_out, r
    assert r.note is not None and r.note.startswith("pids limit reached (128 processes)"), r
    r = await box.run("echo clean")
    assert r.output == "clean\n" and r.note is None, r


async def test_jobs_killed_at_the_pids_limit_are_reported_in_their_command_not_the_next(
    box: Any,
) -> None:
    """A command fills the pids limit and leaves jobs behind: the agent kills them when the
    command ends, and bash's report of the jobs it lost ("Killed sleep 100"), which bash prints
    only after the next command it reads, is this command's output, never the next command's."""
    await box.write_file("/tmp/forker.py", FORKER)
    r = await box.run("sleep 100 & sleep 101 & python3 /tmp/forker.py", timeout=60)
    assert r.note is not None, r
    assert "pids limit reached (128 processes) during this command: killed" in r.note, r
    lines = r.output.splitlines()
    assert lines[0].startswith("forked "), r.output
    killed = [x for x in lines if "Killed" in x]
    assert any("sleep 100" in x for x in killed) and any("sleep 101" in x for x in killed), lines
    r = await box.run("echo clean")
    assert r.output == "clean\n" and r.note is None, r
    r = await box.run("jobs; ps -e --no-headers | wc -l")
    assert int(r.output.split()[-1]) < 10, r.output  # nothing of it is left


async def test_wrapper_is_invisible_to_user_traps_and_xtrace(box: Any) -> None:
    await box.run("trap 'echo DEBUG-TRAP' DEBUG; trap 'echo RETURN-TRAP' RETURN; set -x")
    r = await box.run("echo hi")
    lines = r.output.splitlines()
    # the user's DEBUG trap fires once, for the user's one command, and xtrace shows only it
    assert lines.count("DEBUG-TRAP") == 1 and "RETURN-TRAP" not in lines, r.output
    assert lines[-1] == "hi" and r.exit_code == 0, r.output
    assert not any("__ag" in x or "agentic" in x or x.startswith("+ .") for x in lines), lines
    traced = [x for x in lines if x.startswith("+")]
    assert [x.lstrip("+ ") for x in traced] == ["echo DEBUG-TRAP", "echo hi"], lines
    r = await box.run("trap - DEBUG RETURN; set +x; false")
    assert r.exit_code == 1
    r = await box.run("echo plain")
    assert r.output == "plain\n"


async def test_sparse_file_download_is_refused(box: Any, tmp_path: Path) -> None:
    await box.run("truncate -s 4G /tmp/sparse && echo x > /tmp/small")
    with pytest.raises(ArchiveTooLargeError) as err:
        await box.download("/tmp/sparse", tmp_path)
    assert "/tmp/sparse is a sparse file (4.0 GiB apparent, 0 B allocated)" in str(err.value)
    assert sum(f.stat().st_size for f in tmp_path.rglob("*") if f.is_file()) == 0
    # a cap on a download of real bytes, checked before a member is sent
    await box.run("head -c 3000000 /dev/urandom > /tmp/big")
    received: list[bytes] = []

    async def on_chunk(data: bytes) -> None:
        received.append(data)

    with pytest.raises(ArchiveTooLargeError, match=r"exceeds max_bytes: 2\.9 MiB"):
        await box.rpc.call(
            "tar.get",
            {"paths": ["small", "big"], "base": "/tmp", "max_bytes": 1 << 20},
            on_chunk=on_chunk,
        )
    assert sum(map(len, received)) < 1 << 20
    assert (await box.download("/tmp/small", tmp_path)).read_text() == "x\n"


@pytest.mark.parametrize(
    ("variable", "plant"),
    [
        ("__ag_c", "mkfifo"),  # the command file: the agent itself would block opening it
        ("__ag_state", "mkfifo"),  # bash's saved state: bash blocks saving, and each restart
        ("__ag_tf", "mkfifo"),  # sourced it again; the traps file: read/written every call
        ("__ag_c", "ln -s /tmp/target"),  # a symlink would redirect the agent's writes
        ("__ag_state", "mkdir"),
        ("__ag_state", 'rm -rf "$(dirname "$__ag_state")"; true'),  # the whole directory
    ],
)
async def test_a_command_cannot_wedge_the_session_through_the_wrappers_files(
    box: Any, variable: str, plant: str
) -> None:
    """The wrapper's private files are reachable by the commands (same uid). A FIFO, symlink
    or directory put in their place costs at most one timed-out call; the session then answers
    normally, with no wrapper noise, and keeps its state (unless the command destroyed the
    saved state itself); other sessions are never affected; no write goes through a link."""
    await box.run("export KEEP=kept; echo original > /tmp/target")
    keep = "" if variable == "__ag_state" else " kept"  # `rm "$__ag_state"` drops the state
    r = await box.run(f'rm -f "${variable}"; {plant} "${variable}"; echo planted', timeout=3)
    assert r.output in ("planted\n", ""), r
    timed_out = int(r.timed_out)
    for word in ("one", "two", "three"):
        r = await asyncio.wait_for(box.run(f"echo {word} $KEEP", timeout=3), 30)
        if r.timed_out:
            timed_out += 1
            continue
        assert r.output in (f"{word} kept\n", f"{word}{keep}\n") and r.exit_code == 0, r
    assert timed_out <= 1, f"{timed_out} calls timed out after {plant} {variable}"
    assert r.output in ("three kept\n", f"three{keep}\n"), r
    assert (await box.run("echo other", session="other", timeout=5)).output == "other\n"
    assert (await box.read_text("/tmp/target")) == "original\n"
