"""`agentic-rollout view`: the HTML report, read in a real headless Chromium.

The trajectories come from real rollouts (scripted model, local sandbox, real bash), plus one
with a patch and a corrupt line, as a run folder holds them. The browser is Debian's
``chromium`` driven by Playwright (never Playwright's own downloaded browsers); under CI=true a
missing browser is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.config import AgenticRolloutConfig
from orchestrator.exceptions import LLMRequestError
from orchestrator.runner import AgenticRollout
from orchestrator.store import TrajectoryStore
from orchestrator.testing import ScriptedLLM, tool_call
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus, TrajectoryStep
from orchestrator.viewer import load_run, render_html

from .conftest import IN_CI

CHROMIUM = os.environ.get("AGENTIC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

PATCH = """diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""


async def _make_run(folder: Path) -> Path:
    """Three real trajectories, one hand-made with a patch, and a corrupt line 3."""
    config = AgenticRolloutConfig(
        agent_type="tool",
        tools=["bash"],
        sandbox={"type": "local"},
        trajectory_save_path=str(folder / "trajectories.jsonl"),
    )
    llm = ScriptedLLM.by_prompt(
        {
            "count": [tool_call("bash", {"command": "seq 1 300"}), "300."],
            "echo": [tool_call("bash", {"command": "echo needle-in-output"}), "said it"],
            "broken": [LLMRequestError("401 invalid api key for this endpoint", status=401)],
        }
    )
    rollout = AgenticRollout(config, llm_client=llm)
    await rollout.run(
        [
            {"id": "count-lines", "prompt": "count to 300", "answer": "300"},
            {"id": "echo-needle", "prompt": "echo something", "answer": "nothing like it"},
        ]
    )
    path = folder / "trajectories.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"request_id": "half-written", "steps": [\n')  # line 3: corrupt
    rollout2 = AgenticRollout(config, llm_client=llm)
    await rollout2.run([{"id": "llm-down", "prompt": "broken"}])
    patched = Trajectory(request_id="fix-calc", agent_type="coding")
    patched.add_step(TrajectoryStep(step_type=StepType.OBSERVATION, content="fix add()"))
    patched.metadata["patch"] = PATCH
    patched.reward = 1.0
    patched.reward_details = {"resolved": True, "fail_to_pass": 1.0}
    patched.finish(TrajectoryStatus.COMPLETED, "fixed")
    TrajectoryStore(path).append(patched)
    return path


async def test_load_run_keeps_the_good_lines_and_names_the_corrupt_one(tmp_path: Path) -> None:
    path = await _make_run(tmp_path)
    run = load_run(tmp_path)  # a run folder works as well as the file
    ids = [t.request_id for t in run.trajectories]
    assert sorted(ids[:2]) == ["count-lines", "echo-needle"] and ids[2:] == ["llm-down", "fix-calc"]
    assert len(run.bad_lines) == 1
    file, line, reason = run.bad_lines[0]
    assert (file, line) == ("trajectories.jsonl", 3) and "not valid JSON" in reason
    page = render_html(load_run(path))
    # self-contained: no external resource of any kind
    for needle in ("http://", "https://", "src=", "<link", "@import"):
        assert needle not in page.replace(str(tmp_path), ""), needle


def test_model_output_cannot_script_the_report(tmp_path: Path) -> None:
    traj = Trajectory(request_id="x</script><script>alert(1)</script>")
    traj.finish(TrajectoryStatus.COMPLETED, "<img src=x onerror=alert(2)>")
    TrajectoryStore(tmp_path / "t.jsonl").append(traj)
    page = render_html(load_run(tmp_path / "t.jsonl"))
    assert "</script><script>alert(1)" not in page
    assert page.count("</script>") == 2  # the data element's and the program's own


def test_view_cli_writes_the_report_and_names_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.jsonl").write_text('{"request_id": "a"}\nnot json\n')
    assert main(["view", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "t.jsonl:2: unreadable" in out and "1 trajectories, 1 unreadable" in out
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["view", str(tmp_path / "missing"), "-o", str(tmp_path / "x.html")]) == 2


def _browser() -> Any:
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} missing: apt-get install -y chromium (scripts/setup.sh does)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (pip install playwright)")
        pytest.skip("playwright is not installed")
    return sync_playwright


async def test_report_in_headless_chromium(tmp_path: Path) -> None:
    sync_playwright = _browser()
    await _make_run(tmp_path / "run")
    report = tmp_path / "report.html"
    assert main(["view", str(tmp_path / "run"), "-o", str(report)]) == 0
    shot = tmp_path / "report.png"
    import asyncio

    # Playwright's sync API refuses to run inside an event loop: give it a thread
    await asyncio.to_thread(_drive, sync_playwright, report, shot)
    assert shot.stat().st_size > 10_000
    art = os.environ.get("AGENTIC_ARTIFACTS")
    if art:  # CI keeps the screenshot
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(art) / "viewer.png")


def _drive(sync_playwright: Any, report: Path, shot: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            rows = page.locator("#runs tbody tr")
            assert rows.count() == 4
            # the corrupt line is named, the others are shown
            bad = page.locator("#bad-lines")
            assert bad.is_visible() and "trajectories.jsonl line 3" in bad.inner_text()
            # filter by status
            page.select_option("#status", "error")
            assert rows.count() == 1 and rows.first.get_attribute("data-id") == "llm-down"
            page.select_option("#status", "")
            # filter by reward, then search the trajectories' text
            page.select_option("#reward", "one")
            assert sorted(r.get_attribute("data-id") for r in rows.all()) == [
                "count-lines",
                "fix-calc",
            ]
            page.select_option("#reward", "")
            page.fill("#search", "needle-in-output")
            assert rows.count() == 1 and rows.first.get_attribute("data-id") == "echo-needle"
            page.fill("#search", "")
            assert page.locator("#shown").inner_text() == "showing 4 of 4"
            # open a trajectory: tool call with its arguments, the long output folded
            page.locator('#runs tr[data-id="count-lines"]').click()
            assert page.locator("#detail-title").inner_text() == "count-lines"
            detail = page.locator("#detail")
            call = page.locator(".step.k-tool_call").first
            assert "bash" in call.inner_text() and '"command": "seq 1 300"' in call.inner_text()
            fold = page.locator(".step.k-tool_result details.fold").first
            # 300 numbers and the tool's "[exit code: 0]" line
            assert "301 lines" in fold.locator("summary").inner_text()
            assert not fold.locator("pre").is_visible()
            fold.locator("summary").click()
            assert (
                fold.locator("pre").is_visible() and "\n299\n" in fold.locator("pre").inner_text()
            )
            assert "300." in detail.inner_text()  # the final answer (exact match drops the period)
            assert "status\ncompleted\nreward\n1\n" in detail.inner_text()
            # the error of the failed one
            page.locator('#runs tr[data-id="llm-down"]').click()
            assert "401 invalid api key" in page.locator("#detail ul.errors").inner_text()
            # the patch as a coloured diff, and the reward details
            page.locator('#runs tr[data-id="fix-calc"]').click()
            added = page.locator(".diff .add").first
            removed = page.locator(".diff .del").first
            assert added.inner_text() == "+    return a + b"
            assert removed.inner_text() == "-    return a - b"
            green = added.evaluate("e => getComputedStyle(e).backgroundColor")
            red = removed.evaluate("e => getComputedStyle(e).backgroundColor")
            assert green == "rgb(218, 251, 225)" and red == "rgb(255, 235, 233)"
            assert "fail_to_pass" in page.locator("#detail").inner_text()
            page.screenshot(path=str(shot), full_page=True)
            # nothing but the file itself was fetched
            assert all(u.startswith("file://") for u in requests), requests
            assert not errors, errors
        finally:
            browser.close()


def test_report_payload_is_valid_json(tmp_path: Path) -> None:
    traj = Trajectory(request_id="a")
    traj.finish(TrajectoryStatus.COMPLETED, "x" * 10)
    TrajectoryStore(tmp_path / "t.jsonl").append(traj)
    page = render_html(load_run(tmp_path / "t.jsonl"))
    start = page.index('<script id="data" type="application/json">') + len(
        '<script id="data" type="application/json">'
    )
    data = json.loads(page[start : page.index("</script>", start)])
    assert data["rows"][0]["id"] == "a" and data["rows"][0]["status"] == "completed"
