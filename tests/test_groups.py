"""SnapshotGroups (orchestrator/groups.py): one prepare per group of ``size`` samples; the
snapshot goes after every member released it, or ``linger`` seconds after the last joined."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestrator.exceptions import ConfigError, TaskError
from orchestrator.groups import SnapshotGroups
from orchestrator.sandbox.fork import Snapshot
from orchestrator.sandbox.local import LocalSandboxConfig


def _snapshot(tmp_path: Path, name: str) -> Snapshot:
    archive = tmp_path / f"{name}.tar"
    archive.write_bytes(b"x")
    return Snapshot(
        id=name, backend="local", kind="diff", config=LocalSandboxConfig(), archive=str(archive)
    )


async def test_one_prepare_per_group_and_deleted_after_all_released(tmp_path: Path) -> None:
    groups = SnapshotGroups(linger=60)
    calls: list[str] = []

    async def prepare() -> Snapshot:
        calls.append("p")
        name = f"s{len(calls)}"
        await asyncio.sleep(0.05)
        return _snapshot(tmp_path, name)

    members = [groups.join("k", 3, prepare) for _ in range(4)]  # the 4th opens a new group
    snaps = [await m.snapshot() for m in members]
    assert calls == ["p", "p"] and [m.index for m in members] == [0, 1, 2, 0]
    assert snaps[0] is snaps[1] is snaps[2] and snaps[3] is not snaps[0]
    for m in members[:2]:
        await m.release()
        await m.release()  # idempotent: counts once
    assert Path(str(snaps[0].archive)).exists()
    await members[2].release()
    assert not Path(str(snaps[0].archive)).exists() and snaps[0].deleted
    assert members[0].info["size"] == 3 and members[0].info["snapshot"] == "s1"


async def test_incomplete_group_is_deleted_after_linger(tmp_path: Path) -> None:
    groups = SnapshotGroups(linger=0.2)

    async def prepare() -> Snapshot:
        return _snapshot(tmp_path, "lonely")

    member = groups.join("k", 4, prepare)  # the other 3 samples went to another process
    snap = await member.snapshot()
    await member.release()
    await asyncio.sleep(0.5)
    assert snap.deleted and not Path(str(snap.archive)).exists()


async def test_failed_prepare_reaches_every_member_and_the_next_sample_retries() -> None:
    groups = SnapshotGroups(linger=60)
    attempts = 0

    async def prepare() -> Snapshot:
        nonlocal attempts
        attempts += 1
        raise TaskError("setup command failed (exit 7)")

    a, b = groups.join("k", 3, prepare), groups.join("k", 3, prepare)
    for m in (a, b):
        with pytest.raises(TaskError, match="exit 7"):
            await m.snapshot()
    c = groups.join("k", 3, prepare)
    with pytest.raises(TaskError):
        await c.snapshot()
    assert attempts == 2
    with pytest.raises(ConfigError):
        groups.join("k", 0, prepare)
    with pytest.raises(ConfigError):
        SnapshotGroups(linger=0)
