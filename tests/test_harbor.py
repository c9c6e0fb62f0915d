"""Harbor tasks: reading task folders, and on real Docker building the environment offline,
the agent's view (no tests/, no solution/), the verifier's reward, the oracle and validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import TaskError
from orchestrator.harbor.run import build_images, run_harbor, validate
from orchestrator.harbor.task import HarborTask, load_harbor_task, load_harbor_tasks
from orchestrator.store import read_trajectories
from orchestrator.testing import ScriptedLLM, tool_call

from .conftest import TEST_RUN_ID

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "harbor"


def _copy(tmp_path: Path, name: str = "hello-file") -> Path:
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / name, dest)
    return dest


def _config(tmp_path: Path, **kw: object) -> AgenticRolloutConfig:
    return AgenticRolloutConfig(
        agent_type="tool",
        sandbox={"type": "docker", "run_id": TEST_RUN_ID},
        trajectory_save_path=str(tmp_path / "out" / "trajectories.jsonl"),
        **kw,  # type: ignore[arg-type]
    )


# ---- reading


def test_examples_read_with_their_settings() -> None:
    tasks, errors = load_harbor_tasks(EXAMPLES)
    assert not errors and [t.name for t in tasks] == ["fix-fizzbuzz", "hello-file"]
    fizz, hello = tasks
    assert (hello.agent_timeout, hello.verifier_timeout, hello.memory_mb) == (120.0, 60.0, 512)
    assert fizz.memory_mb == 1024  # Harbor's older memory = "1G"
    assert hello.has_solution and hello.metadata["difficulty"] == "easy"
    task = hello.to_task()
    assert task.prompt.startswith("Create the file `/app/hello.txt`")
    assert task.sandbox["memory"] == "512m" and task.sandbox["cpus"] == 1.0
    assert task.sandbox["disk"] == "1024m"  # storage_mb: the Docker backend's disk limit
    assert task.sandbox["image"].startswith("agentic-rollout/harbor-hello-file:")
    assert "network" not in task.sandbox  # stays the backend's default: none


def test_image_tag_follows_the_environment(tmp_path: Path) -> None:
    task_dir = _copy(tmp_path)
    before = load_harbor_task(task_dir).image_tag()
    assert load_harbor_task(task_dir).image_tag() == before
    (task_dir / "environment" / "Dockerfile").write_text("FROM scratch\n")
    assert load_harbor_task(task_dir).image_tag() != before


def test_bad_task_folders_are_named(tmp_path: Path) -> None:
    no_tests = _copy(tmp_path, "hello-file")
    shutil.rmtree(no_tests / "tests")
    with pytest.raises(TaskError, match=r"hello-file: no tests/ folder"):
        load_harbor_task(no_tests)
    (no_tests / "tests").mkdir()
    with pytest.raises(TaskError, match=r"tests/ has no test.sh"):
        load_harbor_task(no_tests)
    (no_tests / "tests" / "test.sh").write_text("true\n")
    (no_tests / "task.toml").write_text("[agent\n")
    with pytest.raises(TaskError, match=r"task.toml is not valid TOML"):
        load_harbor_task(no_tests)
    (no_tests / "task.toml").write_text('[environment]\nmemory = "lots"\n')
    with pytest.raises(TaskError, match=r"memory = 'lots' is not a size"):
        load_harbor_task(no_tests)
    (no_tests / "task.toml").unlink()
    shutil.rmtree(no_tests / "environment")
    with pytest.raises(TaskError, match=r"no environment/Dockerfile and no \[environment\]"):
        load_harbor_task(no_tests)
    # in a dataset folder the good task still loads, the bad one is reported
    _copy(tmp_path, "fix-fizzbuzz")
    tasks, errors = load_harbor_tasks(tmp_path)
    assert [t.name for t in tasks] == ["fix-fizzbuzz"]
    assert len(errors) == 1 and "hello-file" in errors[0]


# ---- on Docker


async def _built(*dirs: Path) -> list[HarborTask]:
    tasks = [load_harbor_task(d) for d in dirs]
    ok, failed = await build_images(tasks)
    assert not failed, failed
    return ok


@pytest.mark.docker
async def test_validate_examples_oracle_passes_empty_fails(tmp_path: Path) -> None:
    tasks, _ = load_harbor_tasks(EXAMPLES)
    built, failed = await build_images(tasks)
    assert not failed, failed
    rows = await validate(built, _config(tmp_path))
    assert [(r.task, r.oracle, r.empty, r.ok) for r in rows] == [
        ("fix-fizzbuzz", 1.0, 0.0, True),
        ("hello-file", 1.0, 0.0, True),
    ]


@pytest.mark.docker
async def test_agent_sees_neither_tests_nor_solution_and_is_verified(tmp_path: Path) -> None:
    (task,) = await _built(EXAMPLES / "hello-file")
    policy = ScriptedLLM(
        [
            tool_call("bash", {"command": "pwd; ls -a /tests /solution 2>&1; ls /logs 2>&1"}),
            # a reward written by the policy itself must not count
            tool_call(
                "bash",
                {"command": "mkdir -p /logs/verifier && echo 1 > /logs/verifier/reward.txt"},
            ),
            "done",
        ]
    )
    summary = await run_harbor([task], _config(tmp_path), llm_client=policy)
    (traj,) = summary.trajectories
    seen = traj.get_tool_results()[0].content
    assert seen.startswith("/app")
    assert "cannot access '/tests': No such file or directory" in seen
    assert "cannot access '/solution': No such file or directory" in seen
    assert traj.reward == 0.0
    assert traj.reward_details["reward_file"] == "reward.txt"
    assert "FAIL: /app/hello.txt is missing" in traj.reward_details["verifier_output"]
    # stored, with the reward and its details
    (stored,) = list(read_trajectories(tmp_path / "out" / "trajectories.jsonl"))
    assert stored.reward == 0.0 and stored.reward_details["test_exit_code"] == 0


@pytest.mark.docker
async def test_model_that_solves_the_task_gets_reward_1_from_reward_json(tmp_path: Path) -> None:
    (task,) = await _built(EXAMPLES / "fix-fizzbuzz")
    solve = (EXAMPLES / "fix-fizzbuzz" / "solution" / "solve.sh").read_text()
    write_fix = solve[solve.index("cat > /app/fizzbuzz.py") :]  # what a model would run
    policy = ScriptedLLM([tool_call("bash", {"command": write_fix}), "fixed"])
    summary = await run_harbor([task], _config(tmp_path), llm_client=policy)
    (traj,) = summary.trajectories
    assert traj.reward == 1.0, traj.reward_details
    assert traj.reward_details["reward_file"] == "reward.json"


@pytest.mark.docker
async def test_verifier_without_reward_and_with_garbage_reward(tmp_path: Path) -> None:
    silent = _copy(tmp_path, "hello-file")
    (silent / "tests" / "test.sh").write_text("echo checking; exit 3\n")
    garbage = tmp_path / "garbage"
    shutil.copytree(silent, garbage)
    (garbage / "tests" / "test.sh").write_text("echo maybe > /logs/verifier/reward.txt\n")
    tasks = await _built(silent, garbage)
    summary = await run_harbor(tasks, _config(tmp_path), policy="oracle")
    by = {t.request_id: t for t in summary.trajectories}
    quiet = by["hello-file"]
    assert quiet.reward == 0.0
    assert quiet.reward_details["reason"] == (
        "test.sh wrote no reward: neither /logs/verifier/reward.txt nor reward.json exists "
        "(test.sh exit code 3)"
    )
    assert "checking" in quiet.reward_details["verifier_output"]
    assert by["garbage"].reward == 0.0
    assert by["garbage"].reward_details["reason"] == (
        "/logs/verifier/reward.txt: 'maybe' is not a number"
    )


@pytest.mark.docker
async def test_agent_timeout_from_task_toml_still_runs_the_verifier(tmp_path: Path) -> None:
    task_dir = _copy(tmp_path)
    toml = (
        (task_dir / "task.toml")
        .read_text()
        .replace("[agent]\ntimeout_sec = 120.0", "[agent]\ntimeout_sec = 2.0")
    )
    (task_dir / "task.toml").write_text(toml)
    (task,) = await _built(task_dir)
    policy = ScriptedLLM(
        [
            tool_call("bash", {"command": "echo 'Hello, world!' > /app/hello.txt"}),
            tool_call("bash", {"command": "sleep 30"}),
        ]
    )
    summary = await run_harbor([task], _config(tmp_path), llm_client=policy)
    (traj,) = summary.trajectories
    assert traj.status.value == "timeout" and traj.errors[-1].type == "AgentTimeout"
    assert traj.reward == 1.0  # the work done before the timeout is what the verifier sees


@pytest.mark.docker
def test_cli_run_oracle_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "run",
            f"harbor:{EXAMPLES / 'hello-file'}",
            "--oracle",
            "--output",
            str(out),
            "--no-progress",
            "--set",
            f"sandbox.run_id={TEST_RUN_ID}",
        ]
    )
    assert code == 0
    assert "hello-file: completed reward=1.0" in capsys.readouterr().out
    broken = _copy(tmp_path, "hello-file")
    shutil.rmtree(broken / "solution")
    assert main(["harbor", "validate", str(EXAMPLES)]) == 0
    assert "valid=2 invalid=0" in capsys.readouterr().out
    assert main(["harbor", "validate", str(broken)]) == 1
    assert "no solution/solve.sh to validate" in capsys.readouterr().out
