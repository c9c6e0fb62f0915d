"""``agentic-rollout k8s check`` end to end against the API double: the real CLI in a subprocess,
the real client, pods backed by Docker; the report it writes, passing and failing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import SANDBOX_IMAGE

pytestmark = pytest.mark.docker


def run_check(double: Any, report: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "k8s",
            "check",
            "--kubeconfig",
            str(double.kubeconfig_path),
            "--image",
            SANDBOX_IMAGE,
            "--report",
            str(report),
            "--transfer-mb",
            "8",
            "--idle",
            "1",
            "--startup-timeout",
            "300",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_k8s_check_end_to_end_on_the_double(kube_double: Any, tmp_path: Path) -> None:
    kube_double.reset()
    report_path = tmp_path / "report.json"
    proc = run_check(kube_double, report_path, "--ttl", "3", "--disruption")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(report_path.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True and all(c["ok"] for c in checks.values()), checks
    assert set(checks) == {
        "versions",
        "rbac: needed verbs allowed",
        "rbac: secrets refused",
        "sandbox start",
        "smoke trajectory",
        "writes around the frame limit",
        "isolation probes",
        "idle period",
        "pod TTL ends the pod",
        "pod deleted mid-call",
    }
    env = report["environment"]
    assert env["server"] == "v1.30.0-double"
    assert env["exec_protocol"] in ("v5.channel.k8s.io", "v4.channel.k8s.io")
    assert checks["rbac: needed verbs allowed"]["detail"]["create pods/exec"] is True
    assert checks["rbac: secrets refused"]["detail"] == {
        "get secrets": False,
        "list secrets": False,
    }
    assert checks["writes around the frame limit"]["detail"]["40MiB"].startswith("written")
    probes = checks["isolation probes"]["detail"]
    assert probes["service_account_token"] is False
    assert probes["cloud_metadata"].startswith("unreachable")
    assert "PASSED" in proc.stdout.splitlines()[-1]
    assert not [k for k in kube_double.pods if k[0] == "agentic-rollout"]  # nothing left


def test_k8s_check_names_the_missing_verb_and_fails(kube_double: Any, tmp_path: Path) -> None:
    kube_double.reset()
    kube_double.forbidden.add(("create", "pods/exec"))
    try:
        report_path = tmp_path / "report.json"
        proc = run_check(kube_double, report_path, "--ttl", "0")
    finally:
        kube_double.reset()
    assert proc.returncode == 1
    report = json.loads(report_path.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert "missing RBAC: create pods/exec" in checks["rbac: needed verbs allowed"]["detail"]
    assert "may not create pods/exec" in checks["sandbox start"]["detail"]
    assert "FAILED (rbac: needed verbs allowed, sandbox start)" in proc.stdout
    assert not [k for k in kube_double.pods if k[0] == "agentic-rollout"]


def test_k8s_check_with_a_kubeconfig_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("{not yaml: [")
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "k8s",
            "check",
            "--kubeconfig",
            str(bad),
            "--report",
            str(report_path),
            "--ttl",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    report = json.loads(report_path.read_text())
    assert "cannot load the Kubernetes configuration from" in report["checks"][0]["detail"]
