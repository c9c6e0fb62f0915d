"""The in-sandbox agent is out of the commands' reach, and dies with its orchestrator.

Each test runs the attack as a model's command would, inside a real Docker sandbox (root, no
capabilities: the default), and asserts what the attacker got.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import SANDBOX_IMAGE, TEST_RUN_ID, docker_config

pytestmark = pytest.mark.docker

#: Everything a process of the agent's uid used to be able to do to it: open its pipes through
#: /proc/1/fd, read or write its memory, trace it. Prints one JSON object of outcomes.
PROBE = textwrap.dedent(
    """
    import ctypes, errno, json, os
    out = {"fds": {}, "readlink": {}}
    for fd in range(0, 8):
        path = "/proc/1/fd/%d" % fd
        try:
            os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))
            out["fds"][fd] = "opened"
        except OSError as exc:
            out["fds"][fd] = errno.errorcode.get(exc.errno, str(exc.errno))
        try:
            out["readlink"][fd] = os.readlink(path)
        except OSError as exc:
            out["readlink"][fd] = errno.errorcode.get(exc.errno, str(exc.errno))
    for name in ("mem", "environ", "maps"):
        try:
            open("/proc/1/" + name, "rb").read(1)
            out[name] = "read"
        except OSError as exc:
            out[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    libc = ctypes.CDLL(None, use_errno=True)
    PTRACE_SEIZE = 0x4206
    rc = libc.ptrace(PTRACE_SEIZE, 1, None, None)
    out["ptrace"] = "attached" if rc == 0 else errno.errorcode[ctypes.get_errno()]
    print(json.dumps(out))
    """
)

#: The forged-result attack of issue #13: a process left running by one command waits for the
#: agent's next request on its stdin pipe, steals it, and answers it itself on the agent's
#: stdout pipe before the real command could. Logs what it managed to do.
ATTACKER = textwrap.dedent(
    """
    import json, os, select, time
    log = open("/tmp/attacker.log", "w", buffering=1)
    ins, outs = [], []
    for fd in range(0, 8):
        for flags, bucket in ((os.O_RDONLY, ins), (os.O_WRONLY, outs)):
            try:
                bucket.append(os.open("/proc/1/fd/%d" % fd, flags | os.O_NONBLOCK))
                log.write("opened fd %d flags %d\\n" % (fd, flags))
            except OSError as exc:
                log.write("fd %d flags %d: %s\\n" % (fd, flags, exc.strerror))
    log.write("ready\\n")
    deadline = time.time() + 20
    while ins and time.time() < deadline:
        ready, _, _ = select.select(ins, [], [], 0.5)
        for fd in ready:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                continue
            for line in data.splitlines():
                try:
                    rid = json.loads(line)["id"]
                except Exception:
                    continue
                log.write("stole request %r\\n" % (rid,))
                forged = {"id": rid, "result": {"output": "FORGED: 42 passed\\n", "exit_code": 0}}
                for out in outs:
                    try:
                        os.write(out, (json.dumps(forged) + "\\n").encode())
                    except OSError:
                        pass
    log.write("done\\n")
    """
)


@pytest.fixture
async def box() -> AsyncIterator[Any]:
    async with docker_config(pids_limit=128, memory="256m").build() as sandbox:
        yield sandbox


async def test_commands_cannot_open_trace_or_read_the_agent(box: Any) -> None:
    await box.write_file("/tmp/probe.py", PROBE)
    r = await box.run("python3 /tmp/probe.py")
    assert r.exit_code == 0, r.output
    seen = json.loads(r.output)
    assert set(seen["fds"].values()) <= {"EACCES", "EPERM", "ENOENT"}, seen["fds"]
    assert set(seen["readlink"].values()) <= {"EACCES", "EPERM", "ENOENT"}, seen["readlink"]
    assert seen["mem"] in ("EACCES", "EPERM") and seen["environ"] in ("EACCES", "EPERM")
    assert seen["ptrace"] == "EPERM"
    info = await box.info()
    assert info["pid"] == 1 and info["hardening"] == {"dumpable": False, "note": None}


async def test_forged_reply_from_a_leftover_process_is_impossible(box: Any) -> None:
    await box.write_file("/tmp/attacker.py", ATTACKER)
    await box.run("setsid python3 /tmp/attacker.py >/dev/null 2>&1 &", session="attack")
    log = ""
    for _ in range(100):  # until the attacker has tried every fd
        log = (await box.exec("cat /tmp/attacker.log")).stdout
        if "ready" in log:
            break
        time.sleep(0.1)
    r = await box.run("sleep 2; echo REAL-OUTPUT; exit 1", session="grader")
    assert r.output == "REAL-OUTPUT\n" and r.exit_code == 1, r
    log = (await box.exec("cat /tmp/attacker.log")).stdout
    assert "opened" not in log and "stole" not in log, log
    tries = [x for x in log.splitlines() if x.startswith("fd ")]
    assert len(tries) == 16, log  # 8 descriptor numbers, for reading and for writing
    assert all(x.endswith(("Permission denied", "No such file or directory")) for x in tries)
    assert log.count("Permission denied") >= 10, log  # 0-4 at least are open in the agent
    assert (await box.exec(["echo", "still-served"])).stdout == "still-served\n"


async def test_commands_cannot_signal_the_agent(box: Any) -> None:
    # Python's SIGINT handler used to turn `kill -INT 1` into a KeyboardInterrupt in the reader
    r = await box.run(
        "for s in INT TERM HUP QUIT USR1 USR2 PIPE ALRM STOP KILL; do kill -$s 1; done; echo sent"
    )
    assert r.output == "sent\n", r.output
    time.sleep(0.5)
    assert (await box.run("echo alive")).output == "alive\n"
    assert (await box.info())["pid"] == 1


LIST_FDS = "python3 -c 'import os; print(sorted(int(f) for f in os.listdir(\"/proc/self/fd\")))'"


async def test_commands_inherit_no_descriptor_of_the_agent(box: Any) -> None:
    # 0-2 and the listdir's own descriptor: nothing of the agent's channel, in a session, in a
    # background job of a session, or in a one-shot exec
    assert (await box.run(LIST_FDS)).output == "[0, 1, 2, 3]\n"
    assert (await box.run(f"{LIST_FDS} & wait")).output == "[0, 1, 2, 3]\n"
    assert (await box.exec(LIST_FDS)).stdout == "[0, 1, 2, 3]\n"


ORCHESTRATOR = textwrap.dedent(
    """
    import asyncio, sys
    from orchestrator.sandbox.docker import DockerSandboxConfig

    async def main():
        config = DockerSandboxConfig(
            image=sys.argv[2], run_id=sys.argv[1], pids_limit=64, memory="128m"
        )
        sandbox = config.build()
        await sandbox.start()
        # a command that keeps everything it can: a background job holding its own pipes, and
        # a read-write open of the agent's stdin, which would keep a writer on it (refused now)
        await sandbox.run(
            "sleep 1000 & (exec 9<>/proc/1/fd/3; sleep 1000) 2>/dev/null &"
        )
        print(sandbox.container_id, flush=True)
        await asyncio.sleep(1000)

    asyncio.run(main())
    """
)


def test_sandbox_stops_when_its_orchestrator_is_sigkilled(tmp_path: Any) -> None:
    import docker

    script = tmp_path / "rollout_main.py"  # not orchestrator.py: it would shadow the package
    script.write_text(ORCHESTRATOR)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, str(script), TEST_RUN_ID, SANDBOX_IMAGE],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    client = docker.from_env()
    container_id = ""
    try:
        assert proc.stdout is not None
        container_id = proc.stdout.readline().strip()
        assert container_id, "the orchestrator did not start its sandbox"
        container = client.containers.get(container_id)
        assert container.status == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        stopped_after = None
        for _ in range(600):  # generous: 60 s, far above what it takes
            container.reload()
            if container.status != "running":
                stopped_after = time.monotonic() - killed
                break
            time.sleep(0.1)
        assert stopped_after is not None, "the sandbox outlived its orchestrator by 60 s"
        print(f"sandbox stopped {stopped_after:.2f} s after the orchestrator's SIGKILL")
        assert container.attrs["State"]["ExitCode"] == 0  # the agent's own exit on EOF
    finally:
        if proc.poll() is None:
            proc.kill()
        if container_id:
            client.api.remove_container(container_id, force=True)
        client.close()
