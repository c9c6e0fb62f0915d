"""Fault injection against real Docker: each fault ends the affected trajectory with a specific
status and error, the others finish, nothing is lost or written twice, no container is left.

(The orchestrator SIGKILLed mid-batch and rerun: tests/test_runner.py::test_resume_after_sigkill...)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import SandboxConnectionError
from orchestrator.runner import AgenticRollout
from orchestrator.sandbox.gc import reap_docker
from orchestrator.testing import ScriptedLLM, tool_call
from orchestrator.trajectory import TrajectoryStatus
from tests.conftest import IN_CI, SANDBOX_IMAGE, TEST_RUN_ID, docker_config
from tests.llm_server import openai_completion

pytestmark = pytest.mark.docker


def leftover() -> list[Any]:
    client = docker.from_env()
    try:
        return client.containers.list(
            all=True, filters={"label": f"agentic-rollout.run={TEST_RUN_ID}"}
        )
    finally:
        client.close()


def container_of(mark: str) -> Any:
    client = docker.from_env()
    for c in client.containers.list(filters={"label": f"agentic-rollout.run={TEST_RUN_ID}"}):
        if f"TASK_MARK={mark}" in (c.attrs["Config"]["Env"] or []):
            return c
    raise AssertionError(f"no running sandbox for {mark}")


def rollout_config(tmp_path: Path, **kw: Any) -> AgenticRolloutConfig:
    values: dict[str, Any] = {
        "agent_type": "tool",
        "concurrent_requests": 4,
        "trajectory_save_path": str(tmp_path / "out.jsonl"),
        "sandbox": {"type": "docker", "image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID},
        "retry": {"max_attempts": 4, "initial_wait": 0.01, "max_wait": 0.05},
    }
    values.update(kw)
    return AgenticRolloutConfig(**values)


def tasks_with_marks(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"f{i}", "prompt": f"job f{i}: work", "sandbox": {"env": {"TASK_MARK": f"f{i}"}}}
        for i in range(n)
    ]


def normal_script() -> list[Any]:
    return [tool_call("bash", {"command": "echo working"}), "done"]


def stored_ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("how", ["container", "agent"])
async def test_killed_mid_trajectory_the_others_finish(tmp_path: Path, how: str) -> None:
    def kill_then_call(messages: list[dict[str, Any]]) -> Any:
        container = container_of("f1")
        if how == "container":
            container.kill()
        else:  # the agent is PID 1: a crash of the agent process, seen from the host
            os.kill(container.attrs["State"]["Pid"], signal.SIGKILL)
        return tool_call("bash", {"command": "echo never"})

    scripts = {f"job f{i}:": normal_script() for i in range(4)}
    scripts["job f1:"] = [kill_then_call, "unreachable"]
    summary = await AgenticRollout(
        rollout_config(tmp_path), llm_client=ScriptedLLM.by_prompt(scripts)
    ).run(tasks_with_marks(4))
    by_id = {t.request_id: t for t in summary.trajectories}
    victim = by_id.pop("f1")
    assert victim.status == TrajectoryStatus.ERROR
    assert (
        victim.errors[-1].type == "SandboxConnectionError"
        and "is not running" in victim.errors[-1].message
    )
    assert all(t.status == TrajectoryStatus.COMPLETED for t in by_id.values())
    assert sorted(stored_ids(tmp_path / "out.jsonl")) == ["f0", "f1", "f2", "f3"]
    assert leftover() == []


async def test_stream_closed_mid_call() -> None:
    async with docker_config().build() as sandbox:
        pending = asyncio.create_task(sandbox.run("sleep 100", timeout=100))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await sandbox.rpc._transport.close()  # the host side of the one byte stream goes away
        with pytest.raises(SandboxConnectionError):
            await pending
        assert time.monotonic() - t0 < 1.0
    assert leftover() == []


class FaultyLLM:
    """An OpenAI-compatible server on 127.0.0.1 whose answer depends on the prompt: "flaky"
    prompts get 429, 500, a hang and garbage before a real answer; "doomed" ones only garbage."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
                n = outer.attempts[prompt] = outer.attempts.get(prompt, 0) + 1
                if "doomed" in prompt or ("flaky" in prompt and n == 4):
                    self._send(200, b"<html>not json")
                elif "flaky" in prompt and n == 3:
                    time.sleep(3)  # longer than the client timeout
                    self._send(504, b"{}")
                elif "flaky" in prompt and n in (1, 2):
                    self._send(429 if n == 1 else 500, b'{"error": {"message": "scripted"}}')
                else:
                    self._send(200, json.dumps(openai_completion("Final Answer: ok")).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def __enter__(self) -> str:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_llm_endpoint_faults_in_a_batch(tmp_path: Path) -> None:
    with FaultyLLM() as base_url:
        config = rollout_config(
            tmp_path,
            agent_type="react",
            retry={"max_attempts": 6, "initial_wait": 0.01, "max_wait": 0.05},
            llm={"base_url": base_url, "api_key": "k", "timeout": 1},
        )
        tasks = [
            {"id": "flaky", "prompt": "flaky task"},
            {"id": "doomed", "prompt": "doomed task"},
            {"id": "fine", "prompt": "fine task"},
        ]
        summary = await AgenticRollout(config).run(tasks)
    by_id = {t.request_id: t for t in summary.trajectories}
    assert (
        by_id["flaky"].status == TrajectoryStatus.COMPLETED
        and by_id["flaky"].final_response == "ok"
    )
    assert [r.error.split(":")[0] for r in by_id["flaky"].retries] == [
        "LLMRateLimitError",
        "LLMServerError",
        "LLMTimeoutError",
        "LLMResponseError",
    ]
    assert by_id["doomed"].status == TrajectoryStatus.ERROR
    assert (
        by_id["doomed"].errors[-1].type == "LLMResponseError" and len(by_id["doomed"].retries) == 5
    )
    assert by_id["fine"].status == TrajectoryStatus.COMPLETED and by_id["fine"].retries == []
    assert sorted(stored_ids(tmp_path / "out.jsonl")) == ["doomed", "fine", "flaky"]
    assert leftover() == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        if IN_CI:
            pytest.fail(
                f"cannot mount a tmpfs for the disk-full test: {done.stderr}", pytrace=False
            )
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


async def test_disk_full_in_the_trajectory_directory(small_disk: Path) -> None:
    config = AgenticRolloutConfig(
        agent_type="react",
        sandbox={"type": "none"},
        concurrent_requests=1,
        trajectory_save_path=str(small_disk / "t.jsonl"),
    )
    answer = "Final Answer: " + "x" * 9000
    tasks = [{"id": f"d{i}", "prompt": f"task d{i}"} for i in range(12)]
    summary = await AgenticRollout(
        config, llm_client=ScriptedLLM.by_prompt({f"task d{i}": [answer] for i in range(12)})
    ).run(tasks)
    written = stored_ids(small_disk / "t.jsonl")  # every line parses: no half line was left
    unsaved = [t.request_id for t in summary.unsaved]
    assert written and unsaved and sorted(written + unsaved) == sorted(t["id"] for t in tasks)
    assert "No space left on device" in summary.unsaved[0].metadata["save_error"]
    # more room, rerun: only the unsaved ones are redone, none is written twice
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_disk)], check=True)
    again = await AgenticRollout(
        config, llm_client=ScriptedLLM.by_prompt({f"task d{i}": [answer] for i in range(12)})
    ).run(tasks)
    assert sorted(again.skipped) == sorted(written) and again.unsaved == []
    assert sorted(stored_ids(small_disk / "t.jsonl")) == sorted(t["id"] for t in tasks)


def _dockerd_cmdline() -> list[str] | None:
    out = subprocess.run(
        ["pgrep", "-x", "dockerd"], capture_output=True, text=True, check=False
    ).stdout.split()
    if len(out) != 1:
        return None
    raw = Path(f"/proc/{out[0]}/cmdline").read_bytes()
    return [a.decode() for a in raw.split(b"\0") if a]


def _flag(cmdline: list[str], name: str) -> str | None:
    for i, arg in enumerate(cmdline):
        if arg == name and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _restart_dockerd(cmdline: list[str]) -> None:
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
    for _ in range(300):
        if (
            subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, check=False).returncode
            != 0
        ):
            break
        time.sleep(0.1)
    # dockerd 20.10's btrfs driver turns quotas off when it stops; the sandboxes' disk limit
    # needs simple quotas back before it starts (what scripts/setup.sh does after a restart)
    squota = Path(__file__).resolve().parents[2] / "scripts" / "btrfs_squota.py"
    data_root = _flag(cmdline, "--data-root")
    if data_root is not None and "btrfs" in cmdline:
        subprocess.run([sys.executable, str(squota), data_root], check=True)
    with open("/var/log/agentic-dockerd.log", "ab") as log:
        subprocess.Popen(
            cmdline, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    for _ in range(600):
        if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0:
            if data_root is not None and "btrfs" in cmdline:  # and once it is up, as setup.sh
                subprocess.run([sys.executable, str(squota), data_root], check=True)
            return
        time.sleep(0.1)
    raise AssertionError("dockerd did not come back")


@pytest.mark.restarts_dockerd
async def test_dockerd_restarted_during_a_batch(tmp_path: Path) -> None:
    cmdline = _dockerd_cmdline()
    if cmdline is None or shutil.which("dockerd") is None:
        if IN_CI:
            pytest.fail("CI=true but no single dockerd process to restart", pytrace=False)
        pytest.skip("dockerd is not a process this test can restart")
    slow = [tool_call("bash", {"command": "echo working"}), "done"]
    llm = ScriptedLLM.by_prompt({f"job f{i}:": slow for i in range(6)}, delay=1.0)
    rollout = AgenticRollout(rollout_config(tmp_path, concurrent_requests=3), llm_client=llm)
    run = asyncio.create_task(rollout.run(tasks_with_marks(6)))
    await asyncio.sleep(1.5)
    await asyncio.to_thread(_restart_dockerd, cmdline)
    summary = await asyncio.wait_for(run, 300)
    statuses = {t.request_id: t.status for t in summary.trajectories}
    failed = [t for t in summary.trajectories if t.status != TrajectoryStatus.COMPLETED]
    assert failed, f"the restart hit no trajectory: {statuses}"
    for t in failed:
        assert t.status == TrajectoryStatus.ERROR
        assert t.errors[-1].type in ("SandboxConnectionError", "SandboxStartError") or (
            # a start in the moment between dockerd's return and its quotas' (simple quotas are
            # put back once it answers): refused rather than run without its disk limit
            t.errors[-1].type == "ConfigError" and "btrfs quotas" in t.errors[-1].message
        ), t.errors
    assert sorted(stored_ids(tmp_path / "out.jsonl")) == [f"f{i}" for i in range(6)]  # once each
    await asyncio.to_thread(reap_docker, run_id=TEST_RUN_ID)  # what the restart stopped
    assert leftover() == []
