"""The runner: concurrent batches, one sandbox each, JSONL store, resume, failures contained."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import ConfigError, TaskError
from orchestrator.runner import AgenticRollout
from orchestrator.store import TrajectoryStore, read_trajectories
from orchestrator.tasks import Task, load_tasks
from orchestrator.testing import ScriptedLLM, tool_call
from orchestrator.trajectory import Trajectory, TrajectoryStatus

from .conftest import SANDBOX_IMAGE, TEST_RUN_ID
from .llm_server import openai_completion, scripted_server

ROOT = Path(__file__).resolve().parent.parent


def pwd_script(n: int) -> dict[str, list[Any]]:
    """Task i: run `pwd; hostname` in bash, then answer with what it saw."""
    return {
        f"task number {i}:": [
            tool_call("bash", {"command": "echo $HOSTNAME; cat /proc/sys/kernel/hostname"}),
            lambda messages: messages[-1]["content"].split("\n")[0],
        ]
        for i in range(n)
    }


def config(tmp_path: Path, **kw: Any) -> AgenticRolloutConfig:
    values: dict[str, Any] = {
        "agent_type": "tool",
        "concurrent_requests": 3,
        "trajectory_save_path": str(tmp_path / "out.jsonl"),
        "sandbox": {"type": "docker", "image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID},
    }
    values.update(kw)
    return AgenticRolloutConfig(**values)


def live_containers(run_id: str = TEST_RUN_ID, pid: int | None = None) -> list[dict[str, Any]]:
    """Containers of a run (one list call: no per-container lookup that races a removal)."""
    labels = [f"agentic-rollout.run={run_id}"]
    if pid is not None:
        labels.append(f"agentic-rollout.pid={pid}")
    client = docker.from_env()
    try:
        found: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": labels})
    finally:
        client.close()
    return found


@pytest.mark.docker
async def test_batch_runs_concurrently_one_sandbox_each(tmp_path: Path) -> None:
    llm = ScriptedLLM.by_prompt(pwd_script(6), delay=0.3)
    rollout = AgenticRollout(config(tmp_path), llm_client=llm)
    tasks = [Task(id=f"t{i}", prompt=f"task number {i}: where am I?") for i in range(6)]
    live: list[int] = []
    peak = 0

    def on_event(kind: str, task: Task, traj: Trajectory | None) -> None:
        nonlocal peak
        live.append(1 if kind == "started" else -1)
        peak = max(peak, sum(live))

    summary = await rollout.run(tasks, on_event=on_event)
    assert [t.request_id for t in summary.trajectories] == [f"t{i}" for i in range(6)]
    assert all(t.status == TrajectoryStatus.COMPLETED for t in summary.trajectories)
    hostnames = {t.final_response for t in summary.trajectories}
    assert len(hostnames) == 6  # six different containers
    assert {t.metadata["sandbox"] for t in summary.trajectories} != set()
    assert peak == 3  # concurrent_requests bounds live trajectories
    stored = list(read_trajectories(tmp_path / "out.jsonl"))
    assert sorted(t.request_id for t in stored) == [f"t{i}" for i in range(6)]
    assert stored[0].to_messages()[0]["role"] == "system"
    assert live_containers() == []


@pytest.mark.docker
async def test_rerun_resumes_and_never_writes_twice(tmp_path: Path) -> None:
    tasks = [Task(id=f"r{i}", prompt=f"task number {i}: go") for i in range(4)]
    first = AgenticRollout(config(tmp_path), llm_client=ScriptedLLM.by_prompt(pwd_script(4)))
    await first.run(tasks[:2])
    second_llm = ScriptedLLM.by_prompt(pwd_script(4))
    summary = await AgenticRollout(config(tmp_path), llm_client=second_llm).run(tasks)
    assert summary.skipped == ["r0", "r1"]
    assert [t.request_id for t in summary.trajectories] == ["r2", "r3"]
    assert len(second_llm.calls) == 4  # two trajectories, two turns each
    ids = [
        json.loads(line)["request_id"] for line in (tmp_path / "out.jsonl").read_text().splitlines()
    ]
    assert sorted(ids) == ["r0", "r1", "r2", "r3"]
    store = TrajectoryStore(tmp_path / "out.jsonl")
    assert store.append(Trajectory(request_id="r0")) is False


@pytest.mark.docker
async def test_failures_stay_inside_their_trajectory(tmp_path: Path) -> None:
    scripts = pwd_script(3)
    scripts["slow one"] = [tool_call("bash", {"command": "sleep 30"})]
    rollout = AgenticRollout(
        config(tmp_path, trajectory_timeout=4), llm_client=ScriptedLLM.by_prompt(scripts)
    )
    tasks = [
        Task(id="ok0", prompt="task number 0: x"),
        Task(
            id="bad-image", prompt="task number 1: x", sandbox={"image": "agentic-rollout/nope:1"}
        ),
        Task(id="bad-setup", prompt="task number 2: x", setup=["exit 7"]),
        Task(id="slow", prompt="slow one"),
    ]
    # without the preflight, which would refuse the missing image before anything starts
    summary = await rollout.run(tasks, preflight=False)
    by_id = {t.request_id: t for t in summary.trajectories}
    assert by_id["ok0"].status == TrajectoryStatus.COMPLETED
    assert by_id["bad-image"].status == TrajectoryStatus.ERROR
    assert by_id["bad-image"].errors[0].type == "SandboxStartError"
    assert "agentic-rollout/nope:1" in by_id["bad-image"].errors[0].message
    assert by_id["bad-setup"].errors[0].type == "TaskError"
    assert by_id["bad-setup"].errors[0].message.startswith("setup command failed (exit 7): exit 7")
    assert by_id["slow"].status == TrajectoryStatus.TIMEOUT
    assert by_id["slow"].errors[0].message == "trajectory exceeded 4s"
    assert len(list(read_trajectories(tmp_path / "out.jsonl"))) == 4
    assert live_containers() == []


async def test_no_sandbox_mode_and_seed_api(tmp_path: Path) -> None:
    cfg = AgenticRolloutConfig(
        agent_type="react", sandbox={"type": "none"}, trajectory_save_path=str(tmp_path / "x.jsonl")
    )
    replies = iter(
        ['Action: calculator\nAction Input: {"expression": "15 * 24"}', "Final Answer: 360"]
    )

    async def llm_generate_func(messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return next(replies)

    rollout = AgenticRollout(config=cfg, llm_generate_func=llm_generate_func)
    traj = await rollout.agent.run_trajectory(
        prompt={"content": "15*24?", "answer": "360"},
        llm_generate_func=llm_generate_func,
        request_id="math_example",
    )
    assert traj.request_id == "math_example" and traj.get_final_response() == "360"
    assert traj.get_total_reward() == 1.0 and len(traj.get_tool_calls()) == 1


async def test_env_var_and_output_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIC_SAVE_TRAJECTORIES", "false")
    assert AgenticRolloutConfig().save_trajectories is False
    monkeypatch.setenv("AGENTIC_SAVE_TRAJECTORIES", "true")
    cfg = AgenticRolloutConfig(
        sandbox={"type": "none"},
        include_trajectory_in_output=False,
        trajectory_save_path=str(tmp_path / "y.jsonl"),
        agent_type="react",
    )
    traj = await AgenticRollout(cfg, llm_client=ScriptedLLM(["Final Answer: 1"])).run_one("q")
    assert traj.steps == [] and traj.final_response == "1"
    assert (tmp_path / "y.jsonl").exists()


def test_config_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown agent type 'nope'"):
        AgenticRollout(AgenticRolloutConfig(agent_type="nope"))
    with pytest.raises(ConfigError, match=r"config\.tools names unknown tools: teleport"):
        AgenticRollout(AgenticRolloutConfig(tools=["teleport"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: [1\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        AgenticRolloutConfig.load(bad)
    with pytest.raises(ConfigError, match="invalid configuration"):
        AgenticRolloutConfig.load(None, max_stepz=3)
    cfg = AgenticRolloutConfig.load(
        ROOT / "examples" / "config" / "demo.yaml", **{"llm.model": "m2"}
    )
    assert cfg.llm.model == "m2" and cfg.tool_format == "json"
    for name in ("openai.yaml", "anthropic.yaml", "coding.yaml"):
        AgenticRolloutConfig.load(ROOT / "examples" / "config" / name)


async def test_duplicate_ids_rejected() -> None:
    rollout = AgenticRollout(
        AgenticRolloutConfig(sandbox={"type": "none"}, save_trajectories=False),
        llm_client=ScriptedLLM([]),
    )
    with pytest.raises(TaskError, match="duplicate task ids: a"):
        await rollout.run([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])


def test_task_file_with_broken_lines(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "one"}\n{"id": "b", "prompt": \n\n{"content": "seed style"}\n'
        '{"id": "c"}\n["not", "an", "object"]\n{"id": "a", "prompt": "again"}\n'
    )
    tasks, errors = load_tasks(path)
    assert [t.id for t in tasks] == ["a", Task.from_any({"content": "seed style"}).id]
    assert [(e.line, e.message.split(":")[0]) for e in errors] == [
        (2, "not valid JSON"),
        (5, "task has no prompt (expected 'prompt', 'content' or 'messages')"),
        (6, "a task must be a JSON object or a string, got list"),
        (7, "duplicate task id 'a' (first on line 1)"),
    ]


def test_store_repairs_a_partial_last_line_and_survives_disk_full(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    good = Trajectory(request_id="x").to_json() + "\n"
    path.write_text(good + '{"request_id": "half')
    store = TrajectoryStore(path)
    assert store.done_ids() == {"x"} and store.partial_tail == len('{"request_id": "half')
    assert path.read_text().endswith("half")  # opening writes nothing
    store.acquire()  # the writer repairs it
    store.release()
    assert path.read_text() == good
    if os.path.exists("/dev/full"):
        from orchestrator.store import StoreError

        full = TrajectoryStore(tmp_path / "other.jsonl")
        full.path = Path("/dev/full")  # the lock stays in tmp_path
        with pytest.raises(StoreError, match="No space left on device"):
            full.append(Trajectory(request_id="y"))


_KILL_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {root!r})
from orchestrator.config import AgenticRolloutConfig
from orchestrator.runner import AgenticRollout
from orchestrator.testing import ScriptedLLM, tool_call
scripts = {{f"job {{i}}:": [tool_call("bash", {{"command": "sleep 0.5; echo hi"}}), "done"] for i in range(8)}}
cfg = AgenticRolloutConfig(agent_type="tool", concurrent_requests=2, trajectory_save_path={out!r},
                           sandbox={{"type": "docker", "image": {image!r}, "run_id": {run!r}}})
tasks = [{{"id": f"k{{i}}", "prompt": f"job {{i}}: go"}} for i in range(8)]
asyncio.run(AgenticRollout(cfg, llm_client=ScriptedLLM.by_prompt(scripts)).run(tasks))
"""


@pytest.mark.docker
async def test_resume_after_sigkill_loses_nothing_duplicates_nothing_leaks_nothing(
    tmp_path: Path,
) -> None:
    from orchestrator.sandbox.gc import reap_docker

    out = str(tmp_path / "k.jsonl")
    script = _KILL_SCRIPT.format(root=str(ROOT), out=out, image=SANDBOX_IMAGE, run=TEST_RUN_ID)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # kill mid-run: two trajectories stored and the next ones' sandboxes up (between
        # trajectories no sandbox may exist at all, and there would be nothing to reap)
        if (
            os.path.exists(out)
            and len(Path(out).read_text().splitlines()) >= 2
            and reap_docker(run_id=TEST_RUN_ID, dry_run=True)
        ):
            break
        await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {json.loads(line)["request_id"] for line in Path(out).read_text().splitlines()}
    assert 2 <= len(done_before) < 8
    # the killed run's sandboxes are orphans now: the reaper removes them
    reaped = await asyncio.to_thread(reap_docker, run_id=TEST_RUN_ID)
    assert reaped, "the SIGKILLed run left sandboxes to reap"
    killed = proc.pid
    proc = subprocess.Popen([sys.executable, "-c", script])
    assert await asyncio.to_thread(proc.wait, 180) == 0
    ids = [json.loads(line)["request_id"] for line in Path(out).read_text().splitlines()]
    assert sorted(ids) == [f"k{i}" for i in range(8)]  # none lost, none twice
    assert live_containers(pid=proc.pid) == []  # the resumed run leaks nothing
    # a create the killed run had sent may have completed in dockerd after the first reap
    # (its client was gone): such a straggler is an orphan, and the reaper takes it
    await asyncio.to_thread(reap_docker, run_id=TEST_RUN_ID)
    assert live_containers(pid=killed) == [] and live_containers() == []


def test_cli_run_reports_bad_lines_and_runs_the_rest(tmp_path: Path) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"id": "a", "prompt": "x"}\nnot json\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "run",
            str(tasks),
            "--backend",
            "none",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--output",
            str(tmp_path / "o"),
            "--no-progress",
            "--set",
            "retry.max_attempts=1",
            "--set",
            "llm.api_key=k",
            "--no-preflight",  # else the dead endpoint stops the run before it starts
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{tasks}:2: skipped: not valid JSON" in proc.stderr
    stored = list(read_trajectories(tmp_path / "o" / "trajectories.jsonl"))
    assert [t.request_id for t in stored] == ["a"] and stored[0].errors[
        0
    ].type == "LLMConnectionError"
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "show",
            str(tmp_path / "o" / "trajectories.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0 and "LLMConnectionError" in shown.stdout


def test_tools_config_naming_an_unknown_tool_fails_at_construction() -> None:
    from orchestrator import AgenticRollout, AgenticRolloutConfig
    from orchestrator.exceptions import ConfigError

    config = AgenticRolloutConfig(tools_config={"bsh": {"timeout": 5}}, save_trajectories=False)
    with pytest.raises(ConfigError, match="tools_config names unregistered tools: bsh"):
        AgenticRollout(config, lambda messages, **kw: "Final Answer: x")


@contextlib.contextmanager
def _reaped(run_id: str) -> Iterator[None]:
    """Whatever a failed test leaves under ``run_id`` is removed (the session's leak check
    only looks at TEST_RUN_ID)."""
    from orchestrator.sandbox.gc import reap_docker

    try:
        yield
    finally:
        reap_docker(run_id=run_id)


def _slow_tool_call() -> dict[str, Any]:
    return openai_completion(
        None,
        [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": "sleep 60"})},
            }
        ],
    )


@pytest.mark.docker
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_stops_the_run_and_leaves_no_container(tmp_path: Path, sig: int) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("".join(json.dumps({"prompt": f"job {i}"}) + "\n" for i in range(4)))
    out = tmp_path / "o"
    run_id = f"{TEST_RUN_ID}-sig{sig}"  # this run's containers only
    script = [("ok", openai_completion("pong"))] + [("ok", _slow_tool_call())] * 4
    with scripted_server(script) as server, _reaped(run_id):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestrator.cli",
                "run",
                str(tasks),
                "--agent",
                "tool",
                "--backend",
                "docker",
                "--image",
                SANDBOX_IMAGE,
                "--base-url",
                server.base_url,
                "--concurrency",
                "2",
                "--output",
                str(out),
                "--no-progress",
                "--set",
                "llm.api_key=k",
                "--set",
                f"sandbox.run_id={run_id}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        # both trajectories are inside their `sleep 60` tool call, in live containers
        try:
            while time.monotonic() < deadline and not (
                len(server.requests) >= 3 and len(live_containers(run_id)) == 2
            ):
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.2)
            assert len(live_containers(run_id)) == 2
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + sig, stderr
    assert f"agentic-rollout: run {run_id}: 4 task(s)" in stderr
    assert f"agentic-rollout gc --run {run_id}" in stderr
    assert live_containers(run_id) == []
    # nothing half-done was stored: a rerun runs all four
    assert list(read_trajectories(out / "trajectories.jsonl")) == []
    assert not (out / "trajectories.jsonl.compact.tmp").exists()


@pytest.mark.docker
async def test_an_exception_escaping_the_run_stops_the_others_and_removes_containers(
    tmp_path: Path,
) -> None:
    scripts = {
        "fast": ["Final Answer: done"],
        "slow": [tool_call("bash", {"command": "sleep 60"})],
    }
    rollout = AgenticRollout(
        config(tmp_path),
        llm_client=ScriptedLLM.by_prompt(scripts, delay=0.2),
    )

    def on_event(kind: str, task: Task, traj: Trajectory | None) -> None:
        if kind == "finished" and task.id == "f":
            raise RuntimeError("a hook failed")

    tasks = [Task(id="s1", prompt="slow 1"), Task(id="s2", prompt="slow 2")]
    tasks.append(Task(id="f", prompt="fast"))
    with pytest.raises(RuntimeError, match="a hook failed"):
        await rollout.run(tasks, on_event=on_event)
    # the slow ones were cancelled (not left running in the background) and their sandboxes
    # removed before run() raised
    assert live_containers() == []
    stored = [t.request_id for t in read_trajectories(tmp_path / "out.jsonl")]
    assert stored == ["f"]


async def test_seed_batch_size_does_not_cap_concurrency(tmp_path: Path) -> None:
    cfg = AgenticRolloutConfig(
        agent_type="react",
        sandbox={"type": "none"},
        batch_size=1,
        concurrent_requests=4,
        save_trajectories=False,
    )
    live: list[int] = []
    peak = 0

    def on_event(kind: str, task: Task, traj: Trajectory | None) -> None:
        nonlocal peak
        live.append(1 if kind == "started" else -1)
        peak = max(peak, sum(live))

    llm = ScriptedLLM.by_prompt({"": ["Final Answer: x"]}, delay=0.3)
    await AgenticRollout(cfg, llm_client=llm).run([f"q{i}" for i in range(8)], on_event=on_event)
    assert peak == 4


async def test_trajectory_save_path_as_the_seed_means_it(tmp_path: Path) -> None:
    llm = ScriptedLLM.by_prompt({"": ["Final Answer: x"]})
    base: dict[str, Any] = {"agent_type": "react", "sandbox": {"type": "none"}}
    existing = tmp_path / "existing"
    existing.mkdir()
    for given, expected in (
        (str(existing), existing / "trajectories.jsonl"),
        (str(tmp_path / "new_dir") + "/", tmp_path / "new_dir" / "trajectories.jsonl"),
        (
            str(tmp_path / "debug_trajectories"),
            tmp_path / "debug_trajectories" / "trajectories.jsonl",
        ),
        (str(tmp_path / "f.jsonl"), tmp_path / "f.jsonl"),
    ):
        cfg = AgenticRolloutConfig(**base, trajectory_save_path=given)
        assert cfg.trajectory_file == expected
        await AgenticRollout(cfg, llm_client=llm).run(["q"])
        assert [t.request_id for t in read_trajectories(expected)] == [Task.from_any("q").id]
    # None: the seed's "do not save"
    cfg = AgenticRolloutConfig(**base, trajectory_save_path=None)
    rollout = AgenticRollout(cfg, llm_client=llm)
    assert rollout.store is None and cfg.trajectory_file is None
    assert len((await rollout.run(["q"])).trajectories) == 1


async def test_the_library_logs_at_debug_during_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = AgenticRolloutConfig(
        agent_type="react", sandbox={"type": "none"}, save_trajectories=False
    )
    with caplog.at_level(logging.DEBUG, logger="orchestrator"):
        await AgenticRollout(cfg, llm_client=ScriptedLLM(["Final Answer: 1"])).run(
            [{"id": "d", "prompt": "q"}]
        )
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith("run ") and "1 task(s)" in m for m in messages)
    assert "trajectory d: start (attempt 1)" in messages
    assert any(m.startswith("trajectory d: completed (completed)") for m in messages)
