"""The examples run as documented (so they cannot rot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_custom_tool_example() -> None:
    out = _run("custom_tool_web_search.py")
    assert '"found": 1' in out
    assert "Tool `web_search`: missing required argument `query`." in out


@pytest.mark.docker
def test_core_tools_demo_on_docker() -> None:
    out = _run("core_tools_demo.py")
    assert "sqrt(16) + factorial(4) = 28" in out
    assert "     2\t    return a + b" in out
    assert out.rstrip().endswith("Submitted a patch: 1 file(s) changed, 175 bytes.")


@pytest.mark.docker
def test_sandbox_quickstart_on_docker() -> None:
    out = _run("sandbox_quickstart.py")
    assert "hello from /workspace/demo" in out and "session still usable: hello" in out
