"""The direct transport on Docker: a unix socket in a per-sandbox host directory.

Real dockerd, real containers, real sockets: the channel is used by default, a command in the
sandbox can neither connect to it nor add anything beside it, a stranger on the host side
cannot hold or forge it, it works on a read-only root filesystem and with big outputs, the
directory is removed with the sandbox, and where the channel cannot be made or reached the
sandbox falls back to the attach stream and says so once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import textwrap
from pathlib import Path

import pytest

from orchestrator.exceptions import SandboxStartError
from orchestrator.sandbox import docker as docker_backend
from orchestrator.sandbox.docker import DockerSandbox
from orchestrator.sandbox.transport import (
    CHANNEL_MOUNT,
    SECRET_CHARS,
    ChannelError,
    UnixChannel,
    runtime_root,
)
from tests.conftest import docker_config

pytestmark = pytest.mark.docker

#: Run inside the sandbox: what a command can do to the channel directory. Prints JSON.
PROBE = textwrap.dedent(
    """
    import errno, json, os, socket
    out = {"listing": None, "entries": {}}
    try:
        out["listing"] = sorted(os.listdir("/.agentic-rollout"))
    except OSError as exc:
        out["listing"] = errno.errorcode[exc.errno]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("/.agentic-rollout/rpc.sock")
        out["connect"] = "connected"
    except OSError as exc:
        out["connect"] = errno.errorcode[exc.errno]
    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        b.bind("/.agentic-rollout/rpc.sock")
        out["bind"] = "bound"
    except OSError as exc:
        out["bind"] = errno.errorcode[exc.errno]
    try:
        open("/.agentic-rollout/x", "w")
        out["create"] = "created"
    except OSError as exc:
        out["create"] = errno.errorcode[exc.errno]
    print(json.dumps(out))
    """
)


def _clear_warnings() -> None:
    docker_backend._fallbacks_warned.clear()


async def test_direct_socket_is_the_default_and_unreachable_from_commands() -> None:
    sandbox = docker_config().build()
    async with sandbox:
        info = await sandbox.info()
        assert info["transport"] == "socket" and "transport_note" not in info
        channel = sandbox._channel
        assert channel is not None
        # the host stopped listening once the agent proved itself: nothing left to connect to
        assert channel.dir.is_dir() and not channel.path.exists()
        assert (await sandbox.run("echo over-the-socket")).output == "over-the-socket\n"
        await sandbox.write_file("/tmp/probe.py", PROBE)
        seen = json.loads((await sandbox.run("python3 /tmp/probe.py")).output)
        assert seen == {
            "listing": [],
            "entries": {},
            "connect": "ENOENT",  # unlinked on the host
            "bind": "EROFS",  # a command cannot plant a socket of its own for the agent
            "create": "EROFS",
        }, seen
        # the agent's end of the socket is not open to a command (not dumpable, close-on-exec)
        r = await sandbox.run(
            "python3 -c 'import os; print(sorted(os.listdir(\"/proc/self/fd\")))'; "
            "ls -l /proc/1/fd/ 2>&1 | head -1"
        )
        assert r.output.splitlines()[0] == "['0', '1', '2', '3']", r.output
        assert "Permission denied" in r.output, r.output
    assert not channel.dir.exists()  # close() removed the host directory


async def test_big_outputs_over_the_socket() -> None:
    async with docker_config().build() as sandbox:
        assert (await sandbox.info())["transport"] == "socket"
        r = await sandbox.run("head -c 1000000 /dev/zero | tr '\\0' a", max_output=2_000_000)
        assert r.output == "a" * 1_000_000 and r.exit_code == 0
        # 40 MB file: several 16 MiB file.read calls, each a frame over the limit of a pipe
        await sandbox.run("head -c 40000000 /dev/urandom > /tmp/big")
        digest = (await sandbox.exec(["sha256sum", "/tmp/big"])).stdout.split()[0]
        data = await sandbox.read_file("/tmp/big")
        assert len(data) == 40_000_000 and hashlib.sha256(data).hexdigest() == digest
        assert (await sandbox.run("echo still")).output == "still\n"


async def test_read_only_rootfs_uses_the_socket() -> None:
    async with docker_config(read_only=True, workdir="/work").build() as sandbox:
        assert (await sandbox.info())["transport"] == "socket"
        r = await sandbox.run("touch /nope 2>&1; echo ok > /work/f; cat /work/f")
        assert "Read-only file system" in r.output and r.output.endswith("ok\n"), r.output


async def test_fallback_when_the_directory_cannot_be_made(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _clear_warnings()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    caplog.set_level(logging.WARNING, logger="orchestrator.sandbox.docker")
    for _ in range(2):
        sandbox = docker_config(runtime_dir=str(blocker / "rt")).build()
        async with sandbox:
            info = await sandbox.info()
            assert info["transport"] == "attach"
            assert "cannot create the socket directory" in info["transport_note"]
            assert (await sandbox.run("echo via-attach")).output == "via-attach\n"
            assert (await sandbox.run("ls /.agentic-rollout 2>&1")).exit_code != 0
    warnings = [r for r in caplog.records if "attach stream instead" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # said once
    assert "Not a directory" in warnings[0].getMessage()


async def test_fallback_when_the_runtime_dir_is_open_to_others(tmp_path: Path) -> None:
    _clear_warnings()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(ChannelError, match="mode 0700"):
        runtime_root(str(shared))
    async with docker_config(runtime_dir=str(shared)).build() as sandbox:
        info = await sandbox.info()
        assert info["transport"] == "attach" and "mode 0700" in info["transport_note"]
    assert list(shared.iterdir()) == []  # nothing made in a directory others can enter


class _Unreachable(DockerSandbox):
    """The daemon mounts a directory where the agent finds no socket (as a daemon that sees
    another filesystem would): the agent says so on the attach stream."""

    def _make_channel(self) -> UnixChannel | None:
        channel = super()._make_channel()
        if channel is not None:
            channel.stop_listening()  # the directory stays (and is mounted), the socket is gone
        return channel


async def test_fallback_when_the_agent_cannot_reach_the_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _clear_warnings()
    caplog.set_level(logging.WARNING, logger="orchestrator.sandbox.docker")
    sandbox = _Unreachable(docker_config())
    async with sandbox:
        info = await sandbox.info()
        assert info["transport"] == "attach"
        assert "the agent could not connect" in info["transport_note"]
        assert f"{CHANNEL_MOUNT}/rpc.sock" in info["transport_note"]
        assert (await sandbox.run("echo fine")).output == "fine\n"
        channel_dir = Path(sandbox.config.runtime_dir or runtime_root()) / sandbox.name
    assert any("could not connect" in r.getMessage() for r in caplog.records)
    assert not channel_dir.exists()


async def test_failed_start_leaves_no_directory() -> None:
    sandbox = docker_config(image="agentic-rollout/no-such-image:never").build()
    with pytest.raises(SandboxStartError, match="not found"):
        await sandbox.start()
    assert not (runtime_root() / sandbox.name).exists()


# ---- the host end against strangers (real sockets, no Docker needed)


async def test_channel_rejects_strangers_and_serves_the_secret(tmp_path: Path) -> None:
    root = tmp_path / "rt"
    channel = UnixChannel(runtime_root(str(root)), "sb")
    assert oct(os.stat(root).st_mode & 0o777) == "0o700"
    loop = asyncio.get_running_loop()

    def connect(payload: bytes | None) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(channel.path))
        if payload is not None:
            s.sendall(payload)
        return s

    holder = connect(None)  # connects and says nothing: must not hold the channel
    forger = connect(b"0" * SECRET_CHARS + b"\n")  # the wrong secret
    agent = connect(channel.secret_line + b'{"id": 1}\n')
    accepted = loop.create_task(channel.accept(timeout=10.0))
    reader, writer = await accepted
    # the bytes after the proof are the RPC stream, untouched
    assert await reader.readline() == b'{"id": 1}\n'
    assert not channel.path.exists()  # no longer listening
    for stranger in (holder, forger):
        stranger.settimeout(5)
        assert stranger.recv(10) == b""  # closed by the host, never served
        stranger.close()
    with pytest.raises(FileNotFoundError):
        connect(None)
    writer.close()
    agent.close()
    channel.close()
    assert not channel.dir.exists()


async def test_channel_times_out_without_a_proof(tmp_path: Path) -> None:
    channel = UnixChannel(runtime_root(str(tmp_path / "rt")), "sb")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(channel.path))
    with pytest.raises(TimeoutError):
        await channel.accept(timeout=1.5)
    s.close()
    channel.close()
    assert not channel.dir.exists()


async def test_a_sandbox_uid_other_than_ours_reaches_the_socket() -> None:
    # the directory is 0711 and the socket 0666: a non-root sandbox user connects too, while
    # the runtime directory above stays 0700
    async with docker_config(user="1000:1000").build() as sandbox:
        info = await sandbox.info()
        assert info["transport"] == "socket" and info["uid"] == 1000
        assert (await sandbox.run("id -u")).output == "1000\n"
