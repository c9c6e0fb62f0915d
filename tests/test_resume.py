"""Runs never lose, duplicate or poison a trajectory: outcome-aware resume, content ids, one
writer per output, old store lines, bad task files, exact-match rewards."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import ConfigError, LLMConnectionError, StoreLockedError, TaskError
from orchestrator.runner import AgenticRollout, answer_reward, normalize_answer
from orchestrator.store import TrajectoryStore, read_trajectories
from orchestrator.tasks import Task, content_id, load_tasks
from orchestrator.testing import ScriptedLLM
from orchestrator.trajectory import Outcome, Trajectory, TrajectoryStatus

ROOT = Path(__file__).resolve().parent.parent


def cfg(tmp_path: Path, **kw: Any) -> AgenticRolloutConfig:
    values: dict[str, Any] = {
        "agent_type": "react",
        "sandbox": {"type": "none"},
        "trajectory_save_path": str(tmp_path / "out.jsonl"),
        "max_steps": 2,
        "retry": {"max_attempts": 1},
    }
    values.update(kw)
    return AgenticRolloutConfig(**values)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


TASKS = [
    {"id": "ok", "prompt": "say ok", "answer": "ok"},
    {"id": "flaky", "prompt": "flaky endpoint"},
    {"id": "loops", "prompt": "loops forever"},
]


def first_llm() -> ScriptedLLM:
    return ScriptedLLM.by_prompt(
        {
            "say ok": ["Final Answer: ok"],
            "flaky endpoint": [LLMConnectionError("connection refused (http://127.0.0.1:9/v1)")],
            "loops forever": ["Thought: hmm", "Thought: hmm"],
        }
    )


async def test_infra_failures_are_retried_policy_outcomes_are_final(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    first = await AgenticRollout(cfg(tmp_path), llm_client=first_llm()).run(TASKS)
    outcomes = {t.request_id: t.outcome for t in first.trajectories}
    assert (
        outcomes
        == {
            "ok": Outcome.COMPLETED,
            "flaky": Outcome.INFRA_ERROR,
            "loops": Outcome.FORMAT_ERROR,
        }
        or outcomes["loops"] == Outcome.MAX_STEPS
    )
    assert [t.request_id for t in first.infrastructure_failures] == ["flaky"]

    # the endpoint is fixed: a plain rerun runs only the infrastructure failure
    second_llm = ScriptedLLM.by_prompt({"flaky endpoint": ["Final Answer: back"]})
    second = await AgenticRollout(cfg(tmp_path), llm_client=second_llm).run(TASKS)
    assert [t.request_id for t in second.trajectories] == ["flaky"]
    assert second.retried == {"flaky": "infra_error"}
    assert second.skipped == ["ok", "loops"]
    assert second.skipped_outcomes["ok"] == "completed"
    retried = second.trajectories[0]
    assert retried.attempt == 2 and retried.outcome == Outcome.COMPLETED

    # one line per id in the file; the failed attempt kept aside, not lost
    stored = lines(out)
    assert sorted(r["request_id"] for r in stored) == ["flaky", "loops", "ok"]
    assert {r["request_id"]: r["attempt"] for r in stored}["flaky"] == 2
    superseded = lines(tmp_path / "out.superseded.jsonl")
    assert [(r["request_id"], r["outcome"], r["attempt"]) for r in superseded] == [
        ("flaky", "infra_error", 1)
    ]
    assert [t.request_id for t in read_trajectories(out)] == ["ok", "loops", "flaky"]

    # a third run has nothing to do
    third = await AgenticRollout(cfg(tmp_path), llm_client=ScriptedLLM([])).run(TASKS)
    assert third.trajectories == [] and sorted(third.skipped) == ["flaky", "loops", "ok"]


async def test_retry_options_choose_what_runs_again(tmp_path: Path) -> None:
    await AgenticRollout(cfg(tmp_path), llm_client=first_llm()).run(TASKS)
    none = await AgenticRollout(cfg(tmp_path), llm_client=ScriptedLLM([])).run(TASKS, retry="none")
    assert none.trajectories == [] and none.skipped_outcomes["flaky"] == "infra_error"
    again = ScriptedLLM.by_prompt(
        {"flaky endpoint": ["Final Answer: a"], "loops forever": ["Final Answer: b"]}
    )
    failed = await AgenticRollout(cfg(tmp_path, retry_outcomes="failed"), llm_client=again).run(
        TASKS
    )
    assert sorted(t.request_id for t in failed.trajectories) == ["flaky", "loops"]
    assert failed.skipped == ["ok"]
    everything = await AgenticRollout(
        cfg(tmp_path), llm_client=ScriptedLLM.by_prompt({"": ["Final Answer: ok"]})
    ).run(TASKS, retry="all")
    assert len(everything.trajectories) == 3
    stored = lines(tmp_path / "out.jsonl")
    assert len(stored) == 3 and {r["request_id"]: r["attempt"] for r in stored} == {
        "ok": 2,
        "flaky": 3,
        "loops": 3,
    }
    with pytest.raises(ConfigError, match="unknown retry choice 'infar'; did you mean 'infra'"):
        AgenticRolloutConfig.load(None, retry_outcomes="infar")


async def test_version_1_lines_still_load_and_failures_in_them_are_retried(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    v1_failed = {
        "schema_version": 1,
        "request_id": "flaky",
        "agent_type": "react",
        "status": "error",
        "errors": [{"type": "LLMConnectionError", "message": "refused", "at": 1.0}],
        "started_at": 1.0,
        "finished_at": 2.0,
    }
    v1_done = {
        "schema_version": 1,
        "request_id": "ok",
        "status": "completed",
        "final_response": "ok",
        "reward": 1.0,
    }
    v1_format = {
        "schema_version": 1,
        "request_id": "loops",
        "status": "error",
        "errors": [{"type": "FormatError", "message": "3 replies in a row", "at": 1.0}],
    }
    out.write_text("".join(json.dumps(r) + "\n" for r in (v1_done, v1_failed, v1_format)))
    loaded = {t.request_id: t for t in read_trajectories(out)}
    assert loaded["ok"].outcome is None and loaded["ok"].classify() == Outcome.COMPLETED
    assert loaded["flaky"].classify() == Outcome.INFRA_ERROR and loaded["flaky"].attempt == 1
    assert loaded["loops"].classify() == Outcome.FORMAT_ERROR
    store = TrajectoryStore(out)
    assert {k: (r.outcome, r.attempt) for k, r in store.records().items()} == {
        "ok": (Outcome.COMPLETED, 1),
        "flaky": (Outcome.INFRA_ERROR, 1),
        "loops": (Outcome.FORMAT_ERROR, 1),
    }
    llm = ScriptedLLM.by_prompt({"flaky endpoint": ["Final Answer: fine"]})
    summary = await AgenticRollout(cfg(tmp_path), llm_client=llm).run(TASKS)
    assert [(t.request_id, t.attempt) for t in summary.trajectories] == [("flaky", 2)]
    assert [r["request_id"] for r in lines(out)] == ["ok", "loops", "flaky"]
    assert lines(out)[0] == v1_done  # untouched, byte for byte in content


def test_content_ids_are_stable_and_distinct() -> None:
    a = Task.from_any("what is 2+2?")
    assert a.id == Task.from_any({"content": "what is 2+2?"}).id == Task.from_any("what is 2+2?").id
    assert a.id.startswith("task-") and len(a.id) == len("task-") + 12 and a.id_from_content
    assert Task.from_any("what is 2+3?").id != a.id
    # every field of the task is content: same prompt, other answer or image -> other id
    assert Task.from_any({"prompt": "what is 2+2?", "answer": "4"}).id != a.id
    assert Task.from_any({"prompt": "q", "sandbox": {"image": "x"}}).id != Task.from_any("q").id
    explicit = Task.from_any({"id": "mine", "prompt": "q"})
    assert explicit.id == "mine" and not explicit.id_from_content
    assert content_id({"b": 1, "a": 2}) == content_id({"a": 2, "b": 1})


async def test_positional_ids_no_longer_collide_and_identical_tasks_run_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    llm = ScriptedLLM.by_prompt({"": ["Final Answer: x"]})
    rollout = AgenticRollout(cfg(tmp_path), llm_client=llm)
    with caplog.at_level(logging.WARNING, logger="orchestrator.runner"):
        summary = await rollout.run([{"content": "q1"}, {"content": "q2"}, "q1", "q3"])
    assert len(summary.trajectories) == 3 and summary.deduplicated == [Task.from_any("q1").id]
    assert "given more than once with identical content: it runs once" in caplog.text
    # the seed's call without request_id: a new prompt is a new trajectory, not "task-0" again
    t4 = await rollout.agent.run_trajectory(prompt={"content": "q4"})
    t5 = await rollout.agent.run_trajectory(prompt={"content": "q5"})
    assert t4.request_id != t5.request_id
    assert len(lines(tmp_path / "out.jsonl")) == 5
    with pytest.raises(TaskError, match="duplicate task ids: a"):
        await rollout.run([{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {root!r})
    from orchestrator.config import AgenticRolloutConfig
    from orchestrator.exceptions import StoreLockedError
    from orchestrator.runner import AgenticRollout
    from orchestrator.testing import ScriptedLLM
    cfg = AgenticRolloutConfig(agent_type="react", sandbox={{"type": "none"}},
                               trajectory_save_path={out!r}, concurrent_requests=2)
    llm = ScriptedLLM.by_prompt({{"": ["Final Answer: x"]}}, delay={delay})
    tasks = [{{"id": f"w{{i}}", "prompt": f"job {{i}}"}} for i in range(6)]
    try:
        summary = asyncio.run(AgenticRollout(cfg, llm_client=llm).run(tasks))
    except StoreLockedError as exc:
        print("LOCKED", exc, flush=True)
        sys.exit(3)
    print("RAN", len(summary.trajectories), "SKIPPED", len(summary.skipped), flush=True)
    """
)


def test_two_processes_into_one_output_never_write_an_id_twice(tmp_path: Path) -> None:
    out = tmp_path / "o" / "trajectories.jsonl"
    slow = _WRITER.format(root=str(ROOT), out=str(out), delay=1.0)
    first = subprocess.Popen(
        [sys.executable, "-c", slow], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    lock = out.with_name(out.name + ".lock")
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.05)
    second = subprocess.run(
        [sys.executable, "-c", _WRITER.format(root=str(ROOT), out=str(out), delay=0.0)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 3, second.stderr
    assert "LOCKED" in second.stdout and f"pid {first.pid} on " in second.stdout
    assert "is being written by another run" in second.stdout
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert "RAN 6 SKIPPED 0" in stdout
    third = subprocess.run(
        [sys.executable, "-c", _WRITER.format(root=str(ROOT), out=str(out), delay=0.0)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "RAN 0 SKIPPED 6" in third.stdout, third.stderr
    ids = [r["request_id"] for r in lines(out)]
    assert sorted(ids) == [f"w{i}" for i in range(6)]


async def test_lock_in_one_process_names_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    holder = TrajectoryStore(path)
    holder.acquire(run_id="first-run")
    try:
        other = TrajectoryStore(path)
        other.append_lock_wait = 0.3
        with pytest.raises(StoreLockedError, match="run first-run"):
            other.append(Trajectory(request_id="a", status=TrajectoryStatus.COMPLETED))
    finally:
        holder.release()
    assert TrajectoryStore(path).append(Trajectory(request_id="a")) is True


def test_task_file_bad_input_each_specific_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf"  # a UTF-8 BOM: not part of line 1
        + b'{"id": "a", "prompt": "one"}\n'
        + b'{"id": "a", "prompt": "another"}\n'
        + b'{"prompt": "same"}\n'
        + b'{"prompt": "same"}\n'
        + b'{"id": "b", "prompt": "two"}\n'
        + b'{"id": "c", "prom'
    )
    tasks, errors = load_tasks(path)
    assert [t.id for t in tasks] == ["a", Task.from_any("same").id, "b"]
    assert [(e.line, e.level) for e in errors] == [(2, "error"), (4, "warning"), (6, "error")]
    assert errors[0].message.startswith("duplicate task id 'a' (first on line 1)")
    assert errors[1].message.startswith("identical to the task on line 3")
    assert errors[2].message.startswith("truncated last line (no newline at the end")


def test_read_only_output_fails_before_anything_runs_and_loses_nothing(tmp_path: Path) -> None:
    import asyncio

    from orchestrator.exceptions import StoreError

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    try:
        out = mnt / "t.jsonl"
        first = cfg(tmp_path, trajectory_save_path=str(out))
        asyncio.run(AgenticRollout(first, llm_client=first_llm()).run(TASKS[:1]))
        before = out.read_bytes()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        # the stored failure would be retried, the new task run: neither starts
        llm = ScriptedLLM.by_prompt({"": ["Final Answer: x"]})
        rollout = AgenticRollout(first, llm_client=llm)
        with pytest.raises(ConfigError, match=r"t\.jsonl is not writable \(read-only file system"):
            asyncio.run(rollout.run(TASKS))
        # without the preflight the store's lock fails first: still nothing ran
        with pytest.raises(StoreError, match=r"\(Read-only file system\); nothing was run"):
            asyncio.run(rollout.run(TASKS, preflight=False))
        assert llm.calls == [] and out.read_bytes() == before
        # a new output directory under the read-only mount
        elsewhere = cfg(tmp_path, trajectory_save_path=str(mnt / "new" / "t.jsonl"))
        with pytest.raises(ConfigError, match=r"output directory .*/mnt is not writable \(read"):
            asyncio.run(AgenticRollout(elsewhere, llm_client=llm).run(TASKS))
        assert llm.calls == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_exact_match_with_documented_normalisation() -> None:
    def reward(answer: str, final: str | None) -> float | None:
        traj = Trajectory(request_id="r", final_response=final)
        return answer_reward(Task(id="r", prompt="q", answer=answer), traj)

    assert reward("360", "3600") == 0.0  # a substring is not a match
    assert reward("360", "The answer is 360") == 0.0
    assert reward("360", " 360. ") == 1.0
    assert reward("Paris", "paris") == 1.0
    assert reward("New  York", "new york") == 1.0
    assert reward("４２", "42") == 1.0  # NFKC: full-width digits
    assert reward("x", None) == 0.0
    assert answer_reward(Task(id="r", prompt="q"), Trajectory(request_id="r")) is None
    assert normalize_answer("  A\tB \n") == "a b"


async def test_summary_counts_solved_scored_unscored_and_means_over_all(tmp_path: Path) -> None:
    tasks = [{"id": f"s{i}", "prompt": f"q{i}", "answer": "yes"} for i in range(4)]
    tasks.append({"id": "free", "prompt": "no answer to check"})
    replies = {"q0": ["Final Answer: yes"], "": ["Final Answer: no"]}
    summary = await AgenticRollout(cfg(tmp_path), llm_client=ScriptedLLM.by_prompt(replies)).run(
        tasks
    )
    assert len(summary.solved) == 1 and len(summary.scored) == 4 and len(summary.unscored) == 1
    assert summary.mean_reward == pytest.approx(1 / 5)


def test_a_sandbox_that_broke_a_host_bound_is_final_not_retried() -> None:
    """A hostile sandbox's violation (SandboxProtocolError, DownloadTooLargeError) is what the
    policy's commands did: a plain rerun must not run it again and again."""
    from orchestrator.config import resolve_retry
    from orchestrator.exceptions import DownloadTooLargeError, SandboxProtocolError
    from orchestrator.trajectory import Outcome, Trajectory, TrajectoryStatus, infer_outcome

    for exc in (
        SandboxProtocolError("sandbox sent a 1.0 GiB line; limit 64.0 MiB", limit="x"),
        DownloadTooLargeError("download passed its cap"),
    ):
        traj = Trajectory(request_id="t")
        traj.add_error(exc)
        traj.finish(TrajectoryStatus.ERROR)
        assert infer_outcome(traj) == Outcome.SANDBOX_VIOLATION
    assert "sandbox_violation" not in resolve_retry("infra")
    assert "sandbox_violation" in resolve_retry("failed")
    assert resolve_retry("sandbox_violation") == {"sandbox_violation"}
