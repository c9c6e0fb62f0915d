"""The Docker backend against a real dockerd: isolation defaults, lifecycle, bad input, reaper."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import docker
import pytest

from orchestrator.exceptions import (
    RemotePermissionError,
    SandboxConnectionError,
    SandboxStartError,
)
from orchestrator.sandbox.docker import DockerSandbox, parse_memory
from orchestrator.sandbox.gc import reap_docker
from orchestrator.sandbox.labels import (
    LABEL_EXPIRES,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PID,
    LABEL_RUN,
)
from orchestrator.sandbox.transport import runtime_root

from .conftest import NOPYTHON_IMAGE, TEST_RUN_ID, docker_config

pytestmark = pytest.mark.docker


@pytest.fixture
def client() -> Any:
    c = docker.from_env()
    yield c
    c.close()


def _exists(client: Any, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
    except docker.errors.NotFound:
        return False
    return True


async def test_isolation_defaults_are_applied(client: Any) -> None:
    sandbox = docker_config(memory="384m", cpus=0.5, pids_limit=99).build()
    async with sandbox:
        attrs = client.containers.get(sandbox.container_id).attrs
        host = attrs["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["Memory"] == 384 * 2**20 and host["MemorySwap"] == 384 * 2**20
        assert host["NanoCpus"] == 500_000_000
        assert host["PidsLimit"] == 99
        assert host["Init"] is False  # the agent itself is PID 1 (see below)
        # one mount only: the direct channel's directory, read-only
        assert host["Binds"] in (None, [])
        assert [(m["Type"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [
            ("bind", "/.agentic-rollout", False)
        ]
        labels = attrs["Config"]["Labels"]
        assert labels[LABEL_MANAGED] == "1" and labels[LABEL_RUN] == TEST_RUN_ID
        assert labels[LABEL_PID] == str(os.getpid())
        assert float(labels[LABEL_EXPIRES]) > time.time()
        assert labels[LABEL_OWNER]
        # and from inside: no network interface but loopback, no capabilities
        assert (await sandbox.info())["pid"] == 1
        r = await sandbox.run("ls /sys/class/net; grep CapEff /proc/self/status")
        assert r.output.split()[:1] == ["lo"] and "0000000000000000" in r.output
    assert not _exists(client, sandbox.container_id)


async def test_network_is_unreachable_inside() -> None:
    async with docker_config().build() as sandbox:
        r = await sandbox.exec(
            ["python3", "-c", "import socket; socket.create_connection(('198.51.100.1', 80), 2)"],
            timeout=10,
        )
        assert r.exit_code != 0 and "Network is unreachable" in r.stderr


async def test_user_workdir_env_options() -> None:
    config = docker_config(user="1000:1000", workdir="/workspace/proj", env={"MY_VAR": "v1"})
    async with config.build() as sandbox:
        r = await sandbox.run("id -u; pwd; echo $MY_VAR")
        assert r.output == "1000\n/workspace/proj\nv1\n"
        with pytest.raises(RemotePermissionError, match="/etc/forbidden"):
            await sandbox.write_file("/etc/forbidden", "x")
        with pytest.raises(PermissionError):
            await sandbox.read_file("/root/.bashrc")
        assert (await sandbox.run("echo still-up")).ok


async def test_removed_when_body_raises(client: Any) -> None:
    sandbox = docker_config().build()
    with pytest.raises(ZeroDivisionError):
        async with sandbox:
            cid = sandbox.container_id
            assert cid and _exists(client, cid)
            1 / 0  # noqa: B018
    assert not _exists(client, cid)


async def test_image_without_python_is_a_clear_error(client: Any) -> None:
    sandbox = docker_config(image=NOPYTHON_IMAGE).build()
    with pytest.raises(SandboxStartError) as info:
        await sandbox.start()
    message = str(info.value)
    assert NOPYTHON_IMAGE in message and "python3" in message
    assert sandbox.container_id is None or not _exists(client, sandbox.container_id)


async def test_missing_image_is_a_clear_error() -> None:
    sandbox = docker_config(image="agentic-rollout/does-not-exist:1").build()
    with pytest.raises(SandboxStartError, match=r"agentic-rollout/does-not-exist:1.*not found"):
        await sandbox.start()


async def test_agent_that_never_answers_is_a_clear_error(client: Any) -> None:
    sandbox = docker_config(python="false", startup_timeout=10).build()
    t0 = time.monotonic()
    with pytest.raises(SandboxStartError) as info:
        await sandbox.start()
    assert time.monotonic() - t0 < 10
    assert "did not become ready" in str(info.value) and "exit code 1" in str(info.value)
    assert not _exists(client, sandbox.container_id or "none")


async def test_container_killed_mid_call_fails_pending_within_a_second(client: Any) -> None:
    sandbox = docker_config().build()
    async with sandbox:
        pending = asyncio.create_task(sandbox.run("sleep 100", timeout=100))
        await asyncio.sleep(0.3)
        killed_at = time.monotonic()
        await asyncio.to_thread(client.containers.get(sandbox.container_id).kill)
        with pytest.raises(SandboxConnectionError, match="not running") as info:
            await pending
        assert time.monotonic() - killed_at < 1.0
        assert sandbox.name in str(info.value)
        t0 = time.monotonic()
        with pytest.raises(SandboxConnectionError):
            await sandbox.run("echo after")
        assert time.monotonic() - t0 < 1.0  # refused at once, not after a call timeout
    assert not _exists(client, sandbox.container_id)


async def test_agent_killed_fails_pending_calls(client: Any) -> None:
    async with docker_config().build() as sandbox:
        pending = asyncio.create_task(sandbox.run("sleep 100", session="other", timeout=100))
        await asyncio.sleep(0.2)
        # the agent is the container's PID 1: only the host can SIGKILL it (a crash, an OOM kill)
        host_pid = client.containers.get(sandbox.container_id).attrs["State"]["Pid"]
        t0 = time.monotonic()
        os.kill(host_pid, signal.SIGKILL)
        with pytest.raises(SandboxConnectionError, match="exit code 137"):
            await pending
        assert time.monotonic() - t0 < 1.5


async def test_agent_as_init_reaps_orphans_and_survives_kill_minus_one() -> None:
    async with docker_config().build() as sandbox:
        # grandchildren whose parent exits are re-parented to the agent, then exit: zombies
        await sandbox.run("for i in 1 2 3 4 5; do sh -c 'sleep 0.2 &'; done")
        for _ in range(30):
            zombies = await sandbox.exec(
                ["sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l"]
            )
            if zombies.stdout.strip() == "0":
                break
            await asyncio.sleep(0.2)
        assert zombies.stdout.strip() == "0"
        for _ in range(5):  # each round is a fresh race between the SIGKILL and the next call
            await sandbox.run("sleep 300 &", session="victim")
            r = await sandbox.run("kill -9 -1; echo survived", timeout=10)
            assert "survived" in r.output and not r.timed_out
            assert (await sandbox.info())["pid"] == 1
            # the victim's SIGKILL can land after this call's liveness check: its line then
            # stays unread (or meets EPIPE: bash was closing its stdin) and the command runs in
            # a fresh bash, never lost
            victim = await sandbox.run("echo fresh", session="victim")
            assert victim.output == "fresh\n", victim  # its bash was killed; a new one runs it
            assert victim.session_restarted and not victim.session_ended, victim
        # what kill -9 -1 killed is re-parented to the agent as zombies, reaped within seconds
        for _ in range(30):
            left = (await sandbox.run("pgrep -x sleep || echo none")).output.strip()
            if left == "none":
                break
            await asyncio.sleep(0.2)
        assert left == "none"


async def test_one_gigabyte_of_output_is_capped_at_the_source() -> None:
    async with docker_config().build() as sandbox:
        r = await sandbox.run("yes | head -c 1G", timeout=120, max_output=64 * 1024)
        assert r.exit_code == 0 and not r.timed_out
        assert r.total_bytes == 1 << 30
        assert r.elided_bytes == (1 << 30) - 64 * 1024
        assert len(r.output) < 70 * 1024 and r.output.startswith("y\ny\n")
        info = await sandbox.info()
        assert info["rss_bytes"] < 64 * 2**20  # the agent never held the gigabyte


async def _process_count(sandbox: Any, *, below: int | None = None) -> int:
    """Processes in the sandbox; with ``below``, wait (up to 5 s) for killed ones to be reaped."""
    for _ in range(50):
        info = await sandbox.rpc.call("file.list", {"path": "/proc", "depth": 1})
        count = sum(1 for e in info["entries"] if e["name"].isdigit())
        if below is None or count < below:
            return count
        await asyncio.sleep(0.1)
    return count


async def test_background_fork_bomb_hits_pids_limit_and_agent_survives() -> None:
    async with docker_config(pids_limit=128).build() as sandbox:
        before = (await sandbox.info())["pid"]
        await sandbox.run(":(){ :|:& };:", timeout=3)
        await asyncio.sleep(1.5)
        assert await _process_count(sandbox) <= 128  # the limit holds
        assert (await sandbox.info())["pid"] == before  # the agent is alive and answering
        await sandbox.ping()
        assert await sandbox.close_session()  # kills the session's whole tree, bomb included
        assert await _process_count(sandbox, below=20) < 20
        assert (await sandbox.run("echo alive")).output == "alive\n"


async def test_foreground_fork_bomb_is_stopped_and_session_recovers() -> None:
    """The agent's pids watchdog ends the bomb with a note (or, failing that, the timeout
    does); either way the agent survives and the session is clean afterwards."""
    async with docker_config(pids_limit=128).build() as sandbox:
        before = (await sandbox.info())["pid"]
        r = await sandbox.run("bomb() { bomb | bomb; }; bomb", timeout=30)
        assert r.timed_out or (r.note is not None and "pids limit reached" in r.note), r
        assert (await sandbox.info())["pid"] == before
        assert (await sandbox.run("echo alive")).output == "alive\n"
        assert await _process_count(sandbox, below=20) < 20


async def test_memory_hog_is_oom_killed_with_a_clear_note() -> None:
    async with docker_config(memory="256m").build() as sandbox:
        before = (await sandbox.info())["pid"]
        r = await sandbox.run("python3 -c \"s = 'x' * (1 << 30)\"", timeout=60)
        assert r.exit_code == 137
        assert r.oom_killed
        assert r.note is not None and "out of memory" in r.note and "256 MiB" in r.note
        assert (await sandbox.info())["pid"] == before
        assert (await sandbox.run("echo alive")).output == "alive\n"


def test_parse_memory() -> None:
    assert parse_memory("512m") == 512 * 2**20
    assert parse_memory("2g") == 2 * 2**30
    assert parse_memory("1.5GiB") == int(1.5 * 2**30)
    assert parse_memory("1024") == 1024
    from orchestrator.exceptions import ConfigError

    with pytest.raises(ConfigError, match="invalid memory size 'lots'"):
        parse_memory("lots")


# ---- the reaper


_ORPHAN_SCRIPT = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from orchestrator.sandbox.docker import DockerSandboxConfig
async def main():
    sb = DockerSandboxConfig(image={image!r}, run_id={run!r}).build()
    await sb.start()
    print(sb.container_id, sb.name, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_gc_reaps_sandbox_of_a_sigkilled_orchestrator(client: Any) -> None:
    from .conftest import SANDBOX_IMAGE

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = _ORPHAN_SCRIPT.format(root=root, image=SANDBOX_IMAGE, run=TEST_RUN_ID)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    cid, name = (await asyncio.to_thread(proc.stdout.readline)).split()
    assert cid and _exists(client, cid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # the direct transport's channel directory outlived its orchestrator too
    orphan_dir = runtime_root() / name
    assert orphan_dir.is_dir()
    # our own live sandbox in the same run must survive the reaper
    async with docker_config().build() as alive:
        reaped = await asyncio.to_thread(reap_docker)
        ids = {r.container_id for r in reaped}
        assert cid[:12] in ids
        assert alive.container_id is not None and alive.container_id[:12] not in ids
        assert not orphan_dir.exists()
        assert (runtime_root() / alive.name).is_dir()
        assert not _exists(client, cid)
        assert (await alive.run("echo fine")).ok


async def test_gc_reaps_orphan_whose_container_still_runs(client: Any) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = docker_config(labels={LABEL_PID: str(dead.pid)}).build()
    await orphan.start()
    try:
        reaped = await asyncio.to_thread(reap_docker)
        mine = [
            r for r in reaped if orphan.container_id and r.container_id == orphan.container_id[:12]
        ]
        assert mine and mine[0].reason.startswith("orphaned")
        assert not _exists(client, orphan.container_id or "")
    finally:
        await orphan.close()  # already gone: close must not raise


async def test_gc_reaps_expired_and_dry_run_keeps(client: Any) -> None:
    expired = docker_config(labels={LABEL_EXPIRES: "1"}).build()
    await expired.start()
    try:
        assert expired.container_id is not None
        short = expired.container_id[:12]
        dry = await asyncio.to_thread(reap_docker, dry_run=True)
        assert any(r.container_id == short and r.reason == "expired" and not r.removed for r in dry)
        assert _exists(client, expired.container_id)
        real = await asyncio.to_thread(reap_docker)
        assert any(r.container_id == short and r.removed for r in real)
    finally:
        await expired.close()


def test_gc_never_touches_foreign_containers(client: Any) -> None:
    """A container we did not create (run through testcontainers) survives even ``gc --all``."""
    from testcontainers.core.container import DockerContainer

    from .conftest import SANDBOX_IMAGE

    foreign = (
        DockerContainer(SANDBOX_IMAGE)
        .with_command("sleep infinity")
        .with_kwargs(network_mode="none")
    )
    with foreign:
        wrapped = foreign.get_wrapped_container()
        reaped = reap_docker(everything=True)
        assert wrapped.id[:12] not in {r.container_id for r in reaped}
        assert _exists(client, wrapped.id)


def test_sandbox_is_a_docker_sandbox() -> None:
    assert isinstance(docker_config().build(), DockerSandbox)


async def test_read_only_rootfs_with_writable_tmp_and_workdir(client: Any) -> None:
    config = docker_config(read_only=True, workdir="/opt/agentic/agent", tmp_size="64m")
    async with config.build() as sandbox:
        host = client.containers.get(sandbox.container_id).attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
        with pytest.raises(RemotePermissionError, match="Read-only file system: /etc/x"):
            await sandbox.write_file("/etc/x", "1")
        # the workdir keeps the image's content and is writable; /tmp is writable
        r = await sandbox.run(
            "ls agent.py && echo hi > new.txt && cat new.txt && touch /tmp/t && df -h /tmp | tail -1"
        )
        assert r.ok and r.output.startswith("agent.py\nhi\n") and "64M" in r.output
        assert (await sandbox.run("touch /usr/x")).exit_code != 0
        volumes = [
            m["Name"]
            for m in client.containers.get(sandbox.container_id).attrs["Mounts"]
            if m["Type"] == "volume"
        ]
        assert len(volumes) == 1
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(volumes[0])  # removed with the container


async def test_runtime_is_passed_through(client: Any) -> None:
    async with docker_config(runtime="runc").build() as sandbox:
        assert client.containers.get(sandbox.container_id).attrs["HostConfig"]["Runtime"] == "runc"
    with pytest.raises(SandboxStartError, match="runsc-not-installed"):
        await docker_config(runtime="runsc-not-installed").build().start()


def test_sweep_channel_dirs_keeps_live_and_starting_sandboxes(tmp_path: Any) -> None:
    import socket as socketlib

    from orchestrator.sandbox.gc import STARTING_GRACE_S, sweep_channel_dirs

    root = tmp_path / "rt"
    root.mkdir(mode=0o700)
    for name in ("live", "gone", "starting", "stuck"):
        (root / name).mkdir()
    listeners = []
    for name in ("starting", "stuck"):  # a socket: the agent has not connected yet
        sock = socketlib.socket(socketlib.AF_UNIX)
        sock.bind(str(root / name / "rpc.sock"))
        listeners.append(sock)
    old = time.time() - STARTING_GRACE_S - 5
    os.utime(root / "stuck", (old, old))
    (root / "stray-file").write_text("not ours to judge")
    removed = sweep_channel_dirs({"live"}, runtime_dir=str(root))
    assert sorted(removed) == ["gone", "stuck"]
    assert sorted(p.name for p in root.iterdir()) == ["live", "starting", "stray-file"]
    for sock in listeners:
        sock.close()
