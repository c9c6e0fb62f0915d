"""RPC client behaviour that does not depend on the backend (runs on the local backend)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from typing import NoReturn

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.exceptions import ConfigError, RpcTimeoutError, SandboxConnectionError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.local import LocalSandbox
from orchestrator.sandbox.rpc import LineFramer


async def test_dead_agent_fails_every_pending_call_within_a_second(
    local_sandbox: LocalSandbox,
) -> None:
    pid = (await local_sandbox.info())["pid"]
    pending = [
        asyncio.create_task(local_sandbox.run("sleep 100", session=f"s{i}", timeout=100))
        for i in range(5)
    ]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert time.monotonic() - t0 < 1.0
    assert all(isinstance(r, SandboxConnectionError) for r in results)
    assert "exited with code -9" in str(results[0])
    with pytest.raises(SandboxConnectionError):
        await local_sandbox.ping()


async def test_host_side_deadline_raises_and_cancels_remotely(local_sandbox: LocalSandbox) -> None:
    rpc = local_sandbox.rpc
    with pytest.raises(RpcTimeoutError, match=r"no reply within 0\.5s"):
        await rpc.call(
            "session.run",
            {"command": "sleep 30; echo done > /tmp/never-$$", "timeout": 60},
            timeout=0.5,
        )
    # the cancel reached the agent: the session is free again quickly
    t0 = time.monotonic()
    assert (await local_sandbox.run("echo free")).output == "free\n"
    assert time.monotonic() - t0 < 3


async def test_latency_is_recorded(local_sandbox: LocalSandbox) -> None:
    for _ in range(5):
        await local_sandbox.run("true")
    stats = local_sandbox.rpc.latency_stats("session.run")
    assert stats["count"] == 5 and 0 < stats["p50_ms"] <= stats["p99_ms"]


async def test_not_started_sandbox_says_so() -> None:
    from orchestrator.exceptions import SandboxError

    sb = sandbox_config(type="local").build()
    with pytest.raises(SandboxError, match="not started"):
        await sb.run("true")


def test_backend_selection_errors_are_specific() -> None:
    with pytest.raises(ConfigError, match="unknown sandbox backend 'nope'"):
        sandbox_config(type="nope")
    with pytest.raises(ConfigError, match="invalid docker sandbox config"):
        sandbox_config(type="docker", memroy="1g")
    with pytest.raises(ConfigError, match="cannot load sandbox backend"):
        sandbox_config(type="no.such.module:Config")
    cfg = sandbox_config(type="orchestrator.sandbox.local:LocalSandboxConfig")
    assert cfg.type == "local"


async def test_a_retry_with_the_same_id_gets_the_reply_when_the_first_caller_is_cancelled(
    local_sandbox: LocalSandbox,
) -> None:
    rpc = local_sandbox.rpc
    rid = rpc.new_id()
    params = {"command": "sleep 0.5; echo once", "timeout": 10}
    first = asyncio.create_task(rpc.call("session.run", params, request_id=rid))
    await asyncio.sleep(0.1)
    retry = asyncio.create_task(rpc.call("session.run", params, request_id=rid, timeout=5))
    await asyncio.sleep(0.1)
    first.cancel()
    result = await retry
    assert result["output"] == "once\n"
    with pytest.raises(asyncio.CancelledError):
        await first
    # nobody waits any more: nothing is kept per call
    assert not rpc._waiters and rid not in rpc._pending


class _TooLarge(Exception):
    pass


def _refuse(what: str) -> NoReturn:
    raise _TooLarge(what)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20),
)
def test_the_framer_gives_the_same_lines_however_the_stream_is_cut(
    lines: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    framer = LineFramer(64, _refuse)
    got: list[bytes] = []
    edges = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for a, b in itertools.pairwise(edges):
        got += framer.feed(stream[a:b])
    assert got == lines
    assert framer.buffered == 0 and framer.parts == []


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([b"x" * 40, b"y" * 40], "sent more than 64 bytes without a newline (80 bytes buffered)"),
        ([b"x" * 40, b"y" * 30 + b"\nok\n"], "sent a 70 bytes line"),
        ([b"ok\n" + b"z" * 65 + b"\n"], "sent a 65 bytes line"),
        ([b"ok\n" + b"z" * 65], "sent more than 64 bytes without a newline"),
    ],
)
def test_the_framer_refuses_a_line_over_the_limit_complete_or_not(
    chunks: list[bytes], message: str
) -> None:
    framer = LineFramer(64, _refuse)
    with pytest.raises(_TooLarge) as info:
        for chunk in chunks:
            framer.feed(chunk)
    assert str(info.value) == message
