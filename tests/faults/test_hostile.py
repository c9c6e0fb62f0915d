"""Hostile commands through the real bash tool in real Docker sandboxes.

For each: the call returns within its timeout (plus a small margin), the observation says what
happened, and the sandbox is usable afterwards (or the session is cleanly replaced). The host is
never touched: no network, no Docker socket, no host paths.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import docker_config
from tools import BashExecutorTool, ToolContext

pytestmark = pytest.mark.docker


@pytest.fixture
async def box() -> AsyncIterator[Any]:
    config = docker_config(pids_limit=128, memory="256m", tmpfs={"/workspace": "rw,size=64m"})
    async with config.build() as sandbox:
        yield sandbox


async def bash(sandbox: Any, command: str, timeout: float = 5, limit: float | None = None) -> Any:
    tool = BashExecutorTool({"max_output": 4000})
    t0 = time.monotonic()
    result = await tool.execute(
        {"command": command, "timeout": timeout}, ToolContext(sandbox=sandbox)
    )
    assert time.monotonic() - t0 < (limit or timeout + 5), f"{command!r} overran its timeout"
    return result


async def usable(sandbox: Any) -> None:
    r = await bash(sandbox, "ls / >/dev/null && echo usable")
    assert "usable\n" in r.output and r.output.endswith("[exit code: 0]"), r.output


async def test_fork_bomb_foreground(box: Any) -> None:
    r = await bash(box, "bomb() { bomb | bomb; }; bomb", timeout=30)
    # ended at the pids limit by the agent's pids guard, long before the timeout
    assert "pids limit reached (128 processes)" in r.output, r.output
    await usable(box)


async def test_fork_bomb_background_then_session_replaced(box: Any) -> None:
    r = await bash(box, ":(){ :|:& };:", timeout=3)
    assert "[exit code:" in r.output or "timed out" in r.output
    await box.ping()  # the agent (PID 1) keeps answering at the pids limit
    assert await box.close_session()  # kills the session id: the bomb and all its orphans
    await usable(box)


async def test_memory_hog(box: Any) -> None:
    r = await bash(box, "python3 -c \"s = 'x' * (1 << 30)\"", timeout=60)
    assert (
        "killed by the kernel OOM killer: the sandbox ran out of memory (limit 256 MiB)" in r.output
    )
    assert "[exit code: 137]" in r.output
    await usable(box)


async def test_disk_filler(box: Any) -> None:
    r = await bash(box, "dd if=/dev/zero of=/workspace/fill bs=1M count=1000", timeout=30)
    assert "No space left on device" in r.output and "[exit code: 1]" in r.output
    assert (await bash(box, "rm /workspace/fill && echo freed")).output.startswith("freed")


async def test_infinite_output(box: Any) -> None:
    r = await bash(box, "yes", timeout=2)
    assert "bytes elided ...]" in r.output and "[command timed out after 2s" in r.output
    assert len(r.output) < 5000
    await usable(box)


async def test_binary_and_invalid_utf8_output(box: Any) -> None:
    r = await bash(box, "head -c 100000 /dev/urandom; printf '\\xff\\xfe\\xfd'")
    assert r.success and "\ufffd" in r.output and len(r.output) < 5000
    await usable(box)


async def test_process_ignoring_sigterm(box: Any) -> None:
    r = await bash(
        box,
        "python3 -c 'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)'",
        timeout=2,
    )
    assert "[command timed out after 2s" in r.output
    assert (await bash(box, "pgrep -f SIG_IGN || echo gone")).output.startswith("gone")


async def test_double_forked_daemon_does_not_block(box: Any) -> None:
    r = await bash(
        box, "setsid sh -c 'sleep 1000 > /dev/null 2>&1 &'; echo started", timeout=5, limit=4
    )
    assert r.output.startswith("started")
    await usable(box)


async def test_kill_minus_one(box: Any) -> None:
    await box.run("sleep 500 &", session="victim")
    r = await bash(box, "kill -9 -1; echo after-kill", timeout=5)
    assert r.output.startswith("after-kill")
    assert (await box.info())["pid"] == 1  # the agent is init: kill -1 cannot reach it
    assert (await box.run("echo new", session="victim")).output == "new\n"  # a fresh shell
    gone = await bash(box, "sleep 2; pgrep -x sleep || echo none")
    assert gone.output.startswith("none")
    await usable(box)


async def test_reading_stdin(box: Any) -> None:
    r = await bash(box, 'cat /dev/stdin; read line; echo "read=$?"', timeout=5, limit=4)
    assert r.output.startswith("read=1")


async def test_exec_bash(box: Any) -> None:
    r = await bash(box, "exec bash", timeout=5)
    assert "[the shell exited; a fresh session starts with the next command]" in r.output
    await usable(box)


async def test_changed_prompt_and_traps(box: Any) -> None:
    await bash(
        box,
        "cd /tmp; PS1='evil> '; PROMPT_COMMAND='echo hi'; trap 'echo trapped' EXIT DEBUG; trap '' INT",
    )
    r = await bash(box, "sleep 100", timeout=1)
    assert "[command timed out after 1s" in r.output
    r = await bash(box, "pwd")
    assert "/tmp" in r.output
    await usable(box)


async def test_set_e_and_a_failing_command(box: Any) -> None:
    r = await bash(box, "set -e; false; echo unreachable")
    assert "unreachable" not in r.output and "[exit code: 1]" in r.output
    await usable(box)


async def test_very_long_command_line(box: Any) -> None:
    r = await bash(
        box, "x=" + "a" * 3_000_000 + '; echo ${#x}; /bin/echo "$x" > /dev/null', timeout=20
    )
    assert r.output.startswith("3000000\n") and "Argument list too long" in r.output
    await usable(box)


async def test_network_is_unreachable(box: Any) -> None:
    r = await bash(
        box,
        "python3 -c \"import socket; socket.create_connection(('198.51.100.1', 80), 3)\"; "
        "getent hosts pypi.org || echo no-dns",
        timeout=10,
    )
    assert "Network is unreachable" in r.output and "no-dns" in r.output


async def test_no_docker_socket_or_host_paths(box: Any) -> None:
    r = await bash(
        box,
        "find / -xdev -name 'docker.sock' 2>/dev/null | head; awk '{print $5}' /proc/self/mountinfo",
    )
    mounts = r.output.split("\n[exit code")[0].split()
    assert "docker.sock" not in r.output
    allowed = {
        "/",
        "/workspace",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/etc/hosts",
        "/.agentic-rollout",  # the direct transport's channel directory: checked below
    }
    unexpected = [
        m for m in mounts if m not in allowed and not m.startswith(("/proc", "/sys", "/dev"))
    ]
    assert unexpected == [], f"host paths mounted into the sandbox: {unexpected}"
    # the direct transport's channel: this sandbox's own directory, read-only, and empty once
    # the agent connected (the socket is unlinked, so nothing in it to connect to or replace)
    channel = await bash(
        box,
        "grep ' /.agentic-rollout ' /proc/self/mountinfo; ls -A /.agentic-rollout; "
        "touch /.agentic-rollout/x",
    )
    assert " ro," in channel.output or " ro " in channel.output, channel.output
    assert "rpc.sock" not in channel.output
    assert "Read-only file system" in channel.output, channel.output
