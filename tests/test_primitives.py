"""Behaviour of the in-sandbox agent's primitives, on the local and the Docker backend."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.exceptions import (
    InvalidParamsError,
    MethodNotFoundError,
    RemoteFileExistsError,
    RemoteFileNotFoundError,
    RemoteIsADirectoryError,
    RemoteNotADirectoryError,
    UnsafeArchiveError,
)

# ---- persistent sessions


async def test_session_keeps_cwd_env_and_functions(sandbox: Any, scratch: str) -> None:
    await sandbox.run(
        f"mkdir -p {scratch}/t1 && cd {scratch}/t1 && export FOO=bar && greet() {{ echo hi $1; }}"
    )
    r = await sandbox.run("pwd; echo $FOO; greet you")
    assert r.output == f"{scratch}/t1\nbar\nhi you\n"
    assert r.exit_code == 0 and r.ok


async def test_user_functions_and_nounset_see_nothing_of_the_wrapper(
    sandbox: Any, scratch: str
) -> None:
    # the wrapper was a function taking "$1 $2": `set -u` made it print "$2: unbound
    # variable" after every command, and `declare -f` listed it among the user's functions
    r = await sandbox.run("set -u; echo ok")
    assert r.output == "ok\n" and r.exit_code == 0
    r = await sandbox.run("echo again; declare -F | grep -c __ag; set +u")
    assert r.output == "again\n0\n"


async def test_exit_code_reported(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run("false")
    assert r.exit_code == 1 and not r.ok
    r = await sandbox.run("(exit 42)")
    assert r.exit_code == 42


async def test_stdin_is_dev_null(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run('cat; read x; echo "read=$?"', timeout=5)
    assert not r.timed_out
    assert r.output == "read=1\n"


async def test_timeout_kills_process_group_keeps_partial_output_and_session(
    sandbox: Any, scratch: str
) -> None:
    await sandbox.run("cd /tmp && export KEEP=1")
    t0 = time.monotonic()
    r = await sandbox.run("echo before; sleep 1000 | cat; echo never", timeout=1)
    assert time.monotonic() - t0 < 5
    assert r.timed_out and "before" in r.output and "never" not in r.output
    leftovers = await sandbox.run("pgrep -f 'sleep 1000' || echo none")
    assert leftovers.output.strip() == "none"
    after = await sandbox.run("echo $KEEP; pwd")
    assert after.output == "1\n/tmp\n" and not after.timed_out


async def test_timeout_of_builtin_loop(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run("export X=5; while :; do :; done", timeout=0.5)
    assert r.timed_out
    assert (await sandbox.run("echo ok")).output == "ok\n"


async def test_timeout_when_command_removes_our_trap_restores_state(
    sandbox: Any, scratch: str
) -> None:
    await sandbox.run("cd /tmp && export KEEP=2")
    r = await sandbox.run("trap - INT; sleep 1000", timeout=0.5)
    assert r.timed_out and r.session_restarted
    assert (await sandbox.run("echo $KEEP; pwd")).output == "2\n/tmp\n"


async def test_exit_ends_only_that_session(sandbox: Any, scratch: str) -> None:
    await sandbox.run("export GONE=1", session="a")
    await sandbox.run("export STAYS=1", session="b")
    r = await sandbox.run("exit 3", session="a")
    assert r.exit_code == 3 and r.session_ended
    fresh = await sandbox.run('echo "[$GONE]"', session="a")
    assert fresh.output == "[]\n"
    assert (await sandbox.run("echo $STAYS", session="b")).output == "1\n"


async def test_set_e_failure_ends_session_cleanly(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run("set -e; false; echo unreachable")
    assert r.exit_code == 1 and r.session_ended and "unreachable" not in r.output
    assert (await sandbox.run("echo alive")).output == "alive\n"


async def test_background_job_does_not_block_and_survives(sandbox: Any, scratch: str) -> None:
    t0 = time.monotonic()
    r = await sandbox.run("sleep 30 & echo started")
    assert time.monotonic() - t0 < 5 and r.output == "started\n"
    # a later timeout does not kill the earlier background job
    await sandbox.run("sleep 100", timeout=0.3)
    jobs = await sandbox.run("pgrep -fx 'sleep 30' >/dev/null && echo alive")
    assert jobs.output == "alive\n"


async def test_exec_replaced_shell_is_detected(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run("exec true", timeout=5)
    assert r.session_ended and not r.timed_out
    assert (await sandbox.run("echo back")).output == "back\n"


async def test_output_capped_head_and_tail(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run("seq 1 200000", max_output=1000)
    assert r.total_bytes == len("".join(f"{i}\n" for i in range(1, 200001)))
    assert r.output.startswith("1\n2\n3\n")
    assert r.output.endswith("199999\n200000\n")
    assert r.elided_bytes == r.total_bytes - 1000
    assert f"[... {r.elided_bytes} bytes elided ...]" in r.output


async def test_invalid_utf8_and_binary_output_replaced(sandbox: Any, scratch: str) -> None:
    r = await sandbox.run("printf 'ok\\xff\\xfe\\x00end\\n'; head -c 3000 /dev/urandom")
    assert r.exit_code == 0
    assert r.output.startswith("ok\ufffd\ufffd\x00end\n")


async def test_concurrent_calls_reply_out_of_order(sandbox: Any, scratch: str) -> None:
    slow = asyncio.create_task(sandbox.run("sleep 1; echo slow", session="s1"))
    await asyncio.sleep(0.1)
    fast = await sandbox.run("echo fast", session="s2")
    assert fast.output == "fast\n" and not slow.done()
    assert (await slow).output == "slow\n"


async def test_same_session_calls_are_serialised(sandbox: Any, scratch: str) -> None:
    results = await asyncio.gather(
        *(sandbox.run(f"echo {i} >> {scratch}/serial; sleep 0.05") for i in range(5))
    )
    assert all(r.ok for r in results)
    lines = (await sandbox.run(f"cat {scratch}/serial")).output.split()
    assert sorted(lines) == ["0", "1", "2", "3", "4"]


async def test_cancel_running_call(sandbox: Any, scratch: str) -> None:
    rid = sandbox.rpc.new_id()
    call = asyncio.create_task(
        sandbox.rpc.call("session.run", {"command": "sleep 100", "timeout": 100}, request_id=rid)
    )
    await asyncio.sleep(0.3)
    res = await sandbox.rpc.call("cancel", {"target": rid})
    assert res == {"cancelled": True}
    out = await asyncio.wait_for(call, 5)
    assert out["cancelled"] and not out["timed_out"]


# ---- one-shot exec


async def test_exec_argv_shell_cwd_env_timeout(sandbox: Any, scratch: str) -> None:
    r = await sandbox.exec(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 7)
    r = await sandbox.exec("echo $V $(pwd)", cwd="/tmp", env={"V": "x"})
    assert r.stdout == "x /tmp\n"
    t0 = time.monotonic()
    r = await sandbox.exec(["sleep", "1000"], timeout=0.5)
    assert r.timed_out and time.monotonic() - t0 < 5


async def test_exec_command_not_found(sandbox: Any, scratch: str) -> None:
    from orchestrator.exceptions import RemoteError

    with pytest.raises(RemoteError) as info:
        await sandbox.exec(["definitely-not-a-command-xyz"])
    assert info.value.type == "CommandNotFound"
    assert "definitely-not-a-command-xyz" in str(info.value)


# ---- files


async def test_write_read_stat_list(sandbox: Any, scratch: str) -> None:
    size = await sandbox.write_file(f"{scratch}/f/a/b.txt", "hello\nworld\n", mode=0o600)
    assert size == 12
    assert await sandbox.read_file(f"{scratch}/f/a/b.txt", offset=6, length=5) == b"world"
    st = await sandbox.stat(f"{scratch}/f/a/b.txt")
    assert st.type == "file" and st.size == 12 and st.mode == 0o600
    await sandbox.write_file(f"{scratch}/f/.hidden", b"\x00\x01")
    entries = await sandbox.list_dir(f"{scratch}/f", depth=2, include_hidden=False)
    assert [e.path for e in entries] == [f"{scratch}/f/a", f"{scratch}/f/a/b.txt"]
    entries = await sandbox.list_dir(f"{scratch}/f", depth=1)
    assert [e.name for e in entries] == [".hidden", "a"]
    assert await sandbox.read_file(f"{scratch}/f/.hidden") == b"\x00\x01"


async def test_write_is_atomic_and_keeps_mode(sandbox: Any, scratch: str) -> None:
    await sandbox.write_file(f"{scratch}/m.sh", "#!/bin/sh\n", mode=0o755)
    await sandbox.write_file(f"{scratch}/m.sh", "#!/bin/sh\necho 2\n")
    assert (await sandbox.stat(f"{scratch}/m.sh")).mode == 0o755
    leftovers = await sandbox.run(f"ls -a {scratch} | grep -c '^.agentic-' || true")
    assert leftovers.output.strip() == "0"


async def test_large_file_read_in_chunks(sandbox: Any, scratch: str) -> None:
    await sandbox.run(f"head -c 20000000 /dev/urandom > {scratch}/big")
    data = await sandbox.read_file(f"{scratch}/big")
    assert len(data) == 20_000_000
    digest = (await sandbox.run(f"sha256sum {scratch}/big | cut -c1-64")).output.strip()
    import hashlib

    assert hashlib.sha256(data).hexdigest() == digest


async def test_file_errors_are_specific(sandbox: Any, scratch: str) -> None:
    with pytest.raises(RemoteFileNotFoundError, match="/nope/x"):
        await sandbox.read_file("/nope/x")
    with pytest.raises(FileNotFoundError):  # stdlib mixin
        await sandbox.stat("/nope")
    with pytest.raises(RemoteIsADirectoryError):
        await sandbox.read_file("/tmp")
    await sandbox.write_file(f"{scratch}/excl", "1")
    with pytest.raises(RemoteFileExistsError):
        await sandbox.write_file(f"{scratch}/excl", "2", exclusive=True)
    with pytest.raises(RemoteNotADirectoryError):
        await sandbox.list_dir(f"{scratch}/excl")
    assert not await sandbox.exists("/nope")
    assert await sandbox.exists(f"{scratch}/excl")


# ---- search


async def test_search_content_and_files(sandbox: Any, scratch: str) -> None:
    await sandbox.write_file(f"{scratch}/s/pkg/a.py", "def foo():\n    return 1\n\nfoo()\n")
    await sandbox.write_file(f"{scratch}/s/pkg/b.txt", "foo bar\n")
    await sandbox.write_file(f"{scratch}/s/.git/c.py", "foo\n")
    await sandbox.write_file(f"{scratch}/s/bin.dat", b"foo\x00\x01")
    r = await sandbox.search(f"{scratch}/s", r"foo\(", include=["*.py"], context=1)
    assert [(m.path, m.line) for m in r.matches] == [
        (f"{scratch}/s/pkg/a.py", 1),
        (f"{scratch}/s/pkg/a.py", 4),
    ]
    assert r.matches[0].after == ["    return 1"]
    names = await sandbox.search(f"{scratch}/s", "*.txt", mode="files")
    assert [m.path for m in names.matches] == [f"{scratch}/s/pkg/b.txt"]
    with pytest.raises(InvalidParamsError, match="invalid regular expression"):
        await sandbox.search(f"{scratch}/s", "(unclosed")


# ---- tar streaming


async def test_upload_and_download_tree(sandbox: Any, scratch: str, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    for i in range(30):
        d = src / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(bytes([i]) * (i * 20000))
    (src / "empty").mkdir()
    res = await sandbox.upload(src, f"{scratch}/up")
    assert res["members"] >= 36
    listing = await sandbox.run(
        f"cd {scratch}/up/tree && find . -type f | wc -l && du -sb . | cut -f1"
    )
    count, _ = listing.output.split()
    assert int(count) == 30
    out = tmp_path / "back"
    got = await sandbox.download(f"{scratch}/up/tree", out)
    for f in src.rglob("*"):
        twin = got / f.relative_to(src)
        assert twin.exists()
        if f.is_file():
            assert twin.read_bytes() == f.read_bytes()


async def test_download_streams_in_chunks(sandbox: Any, scratch: str) -> None:
    await sandbox.run(f"mkdir -p {scratch}/dl && head -c 3000000 /dev/urandom > {scratch}/dl/x")
    chunks = [c async for c in sandbox.download_tar(["dl"], base=scratch)]
    assert len(chunks) > 5  # streamed, not one message
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        member = tar.getmember("dl/x")
        assert member.size == 3_000_000


async def test_upload_rejects_path_escape(sandbox: Any, scratch: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))

    async def chunks() -> Any:
        yield buf.getvalue()

    with pytest.raises(UnsafeArchiveError, match="escapes"):
        await sandbox.upload_tar(chunks(), f"{scratch}/safe")
    assert not await sandbox.exists("/escaped")
    assert (await sandbox.run("echo still-ok")).ok


# ---- protocol-level bad input


async def test_unknown_method(sandbox: Any, scratch: str) -> None:
    with pytest.raises(MethodNotFoundError, match="unknown method 'nope'"):
        await sandbox.rpc.call("nope", {})
    assert (await sandbox.run("echo ok")).ok


async def test_wrong_param_types(sandbox: Any, scratch: str) -> None:
    with pytest.raises(InvalidParamsError, match="'command' must be str, got int"):
        await sandbox.rpc.call("session.run", {"command": 5})
    with pytest.raises(InvalidParamsError, match="'timeout' must be float"):
        await sandbox.rpc.call("session.run", {"command": "true", "timeout": "soon"})
    with pytest.raises(InvalidParamsError, match="missing required parameter 'path'"):
        await sandbox.rpc.call("file.read", {})
    assert (await sandbox.run("echo ok")).ok


async def test_malformed_frames_get_errors_and_agent_keeps_serving(
    sandbox: Any, scratch: str
) -> None:
    rpc = sandbox.rpc
    await rpc.send_raw(b"this is not json\n")
    await rpc.send_raw(b"[1, 2, 3]\n")
    await rpc.send_raw(b'{"method": "ping"}\n')
    await rpc.send_raw(b"\xff\xfe\n")
    for _ in range(50):
        if len(rpc.unsolicited) >= 4:
            break
        await asyncio.sleep(0.05)
    types = [e.type for e in rpc.unsolicited]
    assert types == ["MalformedFrame", "InvalidRequest", "InvalidRequest", "MalformedFrame"]
    assert (await sandbox.run("echo ok")).output == "ok\n"


async def test_retried_request_id_is_not_executed_twice(sandbox: Any, scratch: str) -> None:
    rid = sandbox.rpc.new_id()
    params = {"command": f"echo x >> {scratch}/once; wc -l < {scratch}/once"}
    first = await sandbox.rpc.call("session.run", params, request_id=rid)
    again = await sandbox.rpc.call("session.run", params, request_id=rid)
    assert first == again and first["output"] == "1\n"
    assert (await sandbox.run(f"wc -l < {scratch}/once")).output == "1\n"


async def test_duplicate_of_running_request_gets_one_execution(sandbox: Any, scratch: str) -> None:
    rid = sandbox.rpc.new_id()
    params = {"command": f"sleep 0.5; echo y >> {scratch}/once2", "timeout": 10}
    a = asyncio.create_task(sandbox.rpc.call("session.run", params, request_id=rid))
    await asyncio.sleep(0.1)
    b = asyncio.create_task(sandbox.rpc.call("session.run", params, request_id=rid))
    await asyncio.gather(a, b, return_exceptions=True)
    assert (await sandbox.run(f"wc -l < {scratch}/once2")).output == "1\n"


def test_timeout_interrupts_even_when_sigint_was_ignored_by_the_parent() -> None:
    """An orchestrator started as a background job (SIGINT ignored) or from a thread with
    SIGINT blocked passes that on to the local agent and its bash, and bash cannot trap an
    ignored signal: the agent resets both, so a timeout still stops the command line."""
    import signal
    import subprocess
    import sys

    code = (
        "import asyncio\n"
        "from orchestrator.sandbox.local import LocalSandboxConfig\n"
        "async def main():\n"
        "    async with LocalSandboxConfig().build() as sb:\n"
        "        r = await sb.run('echo before; sleep 1000 | cat; echo never', timeout=1)\n"
        "        print(repr(r.output), r.timed_out)\n"
        "asyncio.run(main())\n"
    )
    for setup in ("ignore", "block"):

        def prepare(how: str = setup) -> None:
            if how == "ignore":
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            else:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            preexec_fn=prepare,  # the test is about the inherited signal state
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "before" in out.stdout and "never" not in out.stdout, (setup, out.stdout)
        assert out.stdout.strip().endswith("True")
