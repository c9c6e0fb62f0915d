"""Host-side bounds on every byte out of a sandbox, attacked from inside real Docker sandboxes.

Each attack is a shell command run through ``Sandbox.run`` in a sandbox whose agent hands its
stream to commands (``host_helpers.compromised``: what item 1 of issue 13 prevents, assumed to
have failed). The bytes go through dockerd, the real ``DockerAttachTransport`` and the real
``RpcClient``. For each: the sandbox is closed with an error naming the limit and what was seen,
pending and later calls fail at once with it, the host's peak RSS stays under a stated bound
(measured, printed), and a bystander sandbox in the same process keeps working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from orchestrator.exceptions import SandboxConnectionError, SandboxProtocolError
from orchestrator.sandbox.docker import DockerSandbox
from tests.conftest import docker_config
from tests.hostile.host_helpers import PeakRss, compromised, wait_for

# one event loop for the module: the bystander is one sandbox living through every attack,
# as another trajectory of the same orchestrator would
pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]

#: Stated bound on the host's RSS growth under each attack with the default limits: the
#: 64 MiB frame limit, plus one join of a partial frame and the transport's buffers.
RSS_BOUND = 256 << 20
#: Stated fairness bound: during a flood a bystander keeps at least this share of its idle
#: call rate (without the reader budget it kept 1/35).
BYSTANDER_FACTOR = 1 / 8


@pytest_asyncio.fixture(loop_scope="module")
async def evil() -> AsyncIterator[DockerSandbox]:
    async with compromised(docker_config(startup_timeout=300).build()) as sb:
        yield sb  # type: ignore[misc]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bystander() -> AsyncIterator[DockerSandbox]:
    async with docker_config(startup_timeout=300).build() as sb:
        yield sb


async def attack(sb: DockerSandbox, command: str, timeout: float = 120) -> SandboxProtocolError:
    """Run ``command`` in the sandbox; it must end the sandbox with a protocol error."""
    t0 = time.monotonic()
    with pytest.raises(SandboxProtocolError) as info:
        await sb.run(command, timeout=timeout)
    # later calls fail at once, with the same cause
    t1 = time.monotonic()
    with pytest.raises(SandboxProtocolError) as later:
        await sb.ping()
    assert time.monotonic() - t1 < 0.5
    assert str(later.value) == str(info.value)
    print(f"\n  {time.monotonic() - t0:.2f}s: {info.value}")
    return info.value


async def still_serves(sb: DockerSandbox) -> None:
    assert (await sb.run("echo alive")).output == "alive\n"


async def test_host_line_without_newline_1gib(evil: DockerSandbox, bystander: Any) -> None:
    async with PeakRss() as rss:
        err = await attack(evil, "head -c 1073741824 /dev/zero | tr '\\0' x > .agent-out")
    print(f"  host RSS, 1 GiB without a newline: {rss}")
    assert "sent more than 64.0 MiB without a newline" in str(err)
    assert "limit 64.0 MiB (max_frame_bytes)" in str(err) and err.limit == "max_frame_bytes"
    assert rss.growth < RSS_BOUND
    await still_serves(bystander)


async def test_host_five_200mb_error_frames(evil: DockerSandbox, bystander: Any) -> None:
    frames = (
        "python3 -c \"import sys; w = sys.stdout.buffer.write; m = b'x' * (200 << 20)\n"
        'for _ in range(5): w(b\'{\\"id\\":null,\\"error\\":{\\"message\\":\\"\'); w(m); '
        "w(b'\\\"}}\\n')\" > .agent-out"
    )
    async with PeakRss() as rss:
        err = await attack(evil, frames)
    print(f"  host RSS, 5 x 200 MB error frames: {rss}")
    assert "without a newline" in str(err) and err.limit == "max_frame_bytes"
    assert rss.growth < RSS_BOUND
    await still_serves(bystander)


async def test_host_error_frames_under_the_frame_limit_are_kept_clipped(
    evil: DockerSandbox,
) -> None:
    # Written in the background, two seconds after the command's reply: the relay into the
    # agent's stdout is 1 MiB at a time and not atomic, so a reply written meanwhile (the
    # command's, were it still relaying when the command ends) would land inside a frame.
    frames = (
        "(sleep 2; python3 -c \"import sys; w = sys.stdout.buffer.write; m = b'y' * (20 << 20)\n"
        'for _ in range(5): w(b\'{\\"id\\":null,\\"error\\":{\\"message\\":\\"\'); w(m); '
        "w(b'\\\"}}\\n')\" > .agent-out) </dev/null >/dev/null 2>&1 &"
    )
    async with PeakRss() as rss:
        await evil.run(frames, timeout=60)
        await wait_for(lambda: evil.rpc.unsolicited_count == 5)
    print(f"  host RSS, 5 x 20 MB error frames: {rss}")
    kept = list(evil.rpc.unsolicited)
    assert len(kept) == 5 and all(len(e.message) < 600 for e in kept)
    assert kept[0].message.startswith("yyyy") and "more characters]" in kept[0].message
    assert rss.growth < RSS_BOUND
    await still_serves(evil)  # tolerated: the protocol allows errors without an id


async def test_host_unsolicited_flood_closes_at_the_limit(evil: DockerSandbox) -> None:
    err = await attack(
        evil, 'yes \'{"id":null,"error":{"message":"junk"}}\' | head -n 5000 > .agent-out'
    )
    assert "sent 1001 error frames without a request id" in str(err)
    assert err.limit == "max_unsolicited_frames"
    assert len(evil.rpc.unsolicited) == 32  # unsolicited_kept


async def test_host_junk_frame_flood(evil: DockerSandbox, bystander: Any) -> None:
    async with PeakRss() as rss:
        err = await attack(evil, "yes '{\"junk\":1}' | head -n 2200000 > .agent-out")
    print(f"  host RSS, 2.2M junk frames: {rss}")
    assert "sent a frame without a valid id: b'{\"junk\":1}'" in str(err)
    assert rss.growth < RSS_BOUND
    await still_serves(bystander)


async def _rate(sb: DockerSandbox, seconds: float) -> float:
    """Round trips per second through the orchestrator's event loop and dockerd (pings: a
    command would measure the shared CPUs of this machine rather than the reader)."""
    calls = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await sb.ping()
        calls += 1
    return calls / (time.monotonic() - t0)


async def test_host_bystander_keeps_pace_while_another_sandbox_floods(bystander: Any) -> None:
    """A flood the protocol allows (error frames without an id, the count limit lifted for
    this sandbox) can only slow the flooder: its reader keeps to its CPU share."""
    flood_cfg = docker_config(startup_timeout=300, limits={"max_unsolicited_frames": 10**9})
    async with compromised(flood_cfg.build()) as flooder:
        idle = await _rate(bystander, 5.0)
        async with PeakRss() as rss:
            await flooder.run(
                'nohup python3 -c "import sys; b = b\'{\\"id\\":null,\\"error\\":{}}\\n\' '
                '* 50000\nwhile True: sys.stdout.buffer.write(b)" > .agent-out 2>/dev/null &'
            )
            rpc = flooder.rpc
            await wait_for(lambda: rpc.unsolicited_count > 100_000)
            n0, cpu0, t0 = rpc.unsolicited_count, rpc.reader_cpu_seconds, time.monotonic()
            during = await _rate(bystander, 5.0)
            frames = rpc.unsolicited_count - n0
            share = (rpc.reader_cpu_seconds - cpu0) / (time.monotonic() - t0)
        print(
            f"\n  bystander pings/s: idle {idle:.0f}, during flood {during:.0f} "
            f"({during / idle:.2f}x); flooder: {frames / 5:.0f} frames/s, reader CPU share "
            f"{share:.2f}, paused {rpc.reader_paused_seconds:.1f}s; "
            f"host RSS {rss}"
        )
        assert rpc.reader_paused_seconds > 0  # the budget held the flooder back
        assert during >= idle * BYSTANDER_FACTOR
        assert rss.growth < RSS_BOUND
        # a flood within the protocol is slowed, not fatal (its own replies now queue behind
        # its flood: that is the flooder's problem)
        assert not rpc.closed


async def test_host_unknown_request_id(evil: DockerSandbox, bystander: Any) -> None:
    err = await attack(evil, 'echo \'{"id":"nobody-7","result":{}}\' > .agent-out; sleep 5')
    assert "sent a reply for an unknown request id nobody-7" in str(err)
    await still_serves(bystander)


OWN_ID = (
    'rid=$(grep -o \'"id":"[^"]*","method":"session.run"\' .agent-in | tail -1 | cut -d\'"\' -f4)'
)


async def test_host_second_reply_to_one_id(evil: DockerSandbox, bystander: Any) -> None:
    # the command answers its own request before the agent does: the forgery itself is what
    # item 1 prevents; the host sees the agent's real reply as a second one and closes
    forged = (
        f'{OWN_ID}; printf \'{{"id":"%s","result":{{"output":"FORGED\\\\n",'
        '"exit_code":0}}\\n\' "$rid" > .agent-out; sleep 0.5'
    )
    result = await evil.run(forged)
    assert result.output == "FORGED\n"
    await wait_for(lambda: evil.rpc.closed, timeout=10)
    with pytest.raises(
        SandboxProtocolError, match=r"sent a reply for request \w+-\d+, which was already answered"
    ):
        await evil.ping()
    await still_serves(bystander)


async def test_host_reply_over_the_requests_cap(evil: DockerSandbox, bystander: Any) -> None:
    big = (
        f'{OWN_ID}; python3 -c "import sys; sys.stdout.write(\'{{\\"id\\":\\"%s\\",'
        '\\"result\\":{\\"output\\":\\"%s\\",\\"exit_code\\":0}}\\n\' % '
        '(sys.argv[1], \'x\' * 200000))" "$rid" > .agent-out; sleep 5'
    )
    with pytest.raises(SandboxProtocolError) as info:
        await evil.run(big, max_output=1000)
    assert "reply to session.run" in str(info.value)
    assert "that request's cap is 69.9 KiB" in str(info.value)
    await still_serves(bystander)


async def test_host_nested_json_closes_instead_of_killing_the_reader(
    evil: DockerSandbox, bystander: Any
) -> None:
    err = await attack(evil, "python3 -c \"print('[' * 200000 + ']' * 200000)\" > .agent-out")
    assert "sent a frame nested too deeply to parse" in str(err)
    await still_serves(bystander)


async def test_host_forged_chunk(evil: DockerSandbox, bystander: Any) -> None:
    # a download the compromised agent holds (never answers), and a forged chunk for it
    got: list[bytes] = []
    download = asyncio.create_task(
        evil.rpc.call("tar.get", {"paths": ["/evil/hold"], "base": "/"}, on_chunk=got.append)
    )
    forge = (
        'for i in $(seq 100); do rid=$(grep -o \'"id":"[^"]*","method":"tar.get"\' '
        '.agent-in | cut -d\'"\' -f4); [ -n "$rid" ] && break; sleep 0.05; done; '
        'printf \'{"id":"%s","chunk":"@@not base64@@"}\\n\' "$rid" > .agent-out; sleep 5'
    )
    err = await attack(evil, forge)
    assert "sent a data chunk that is not base64 for tar.get" in str(err)
    with pytest.raises(SandboxProtocolError, match="not base64"):
        await download  # the pending download failed at once too, with the same cause
    assert got == []
    await still_serves(bystander)


async def test_host_chunk_for_a_call_that_does_not_stream(evil: DockerSandbox) -> None:
    err = await attack(
        evil, f'{OWN_ID}; printf \'{{"id":"%s","chunk":"AAAA"}}\\n\' "$rid" > .agent-out'
    )
    assert "sent a data chunk for session.run" in str(err) and "which does not stream" in str(err)


async def test_host_stderr_flood_is_bounded(evil: DockerSandbox) -> None:
    """What the agent writes to stderr: the host keeps a 4 KiB tail, dockerd's log 1 MiB."""
    command = "head -c 104857600 /dev/zero | tr '\\0' e > .agent-err"
    async with PeakRss() as rss:
        r = await evil.run(command, timeout=120)
    assert r.exit_code == 0, r.output
    assert len(evil.rpc._transport.stderr_tail()) == 4096
    assert rss.growth < RSS_BOUND
    logs = await asyncio.to_thread(evil._api.logs, evil.container_id, stdout=True, stderr=True)
    print(f"\n  100 MB to the agent's stderr: dockerd kept {len(logs)} bytes of log")
    assert len(logs) <= 2 << 20
    await still_serves(evil)


async def test_host_stream_closed_and_reopened() -> None:
    """A peer that answers, closes the stream, and would answer again on a new connection: the
    client fails pending and later calls at once and never reads again (a fake agent on a
    real loopback socket; a container cannot reopen its attach stream)."""
    from orchestrator.sandbox.rpc import RpcClient
    from orchestrator.sandbox.transport import StreamTransport

    connections = 0

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        line = await reader.readline()
        rid = line.split(b'"id":"')[1].split(b'"')[0]
        writer.write(b'{"id":"' + rid + b'","result":{"pong":true}}\n')
        await writer.drain()
        await reader.readline()  # the next request: close instead of answering
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RpcClient(StreamTransport(reader, writer), name="fake")
    try:
        assert await client.call("ping", timeout=5) == {"pong": True}
        t0 = time.monotonic()
        with pytest.raises(SandboxConnectionError, match="the agent's stream ended"):
            await client.call("session.run", {"command": "sleep 100", "timeout": 100})
        assert time.monotonic() - t0 < 1
        with pytest.raises(SandboxConnectionError, match="the agent's stream ended"):
            await client.call("ping", timeout=5)
        assert connections == 1  # never reconnected, never read again
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
