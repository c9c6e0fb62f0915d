"""``agentic-rollout k8s check``: the live-cluster checklist (see :mod:`orchestrator.k8s_check`);
imports no Kubernetes client until a check runs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig


def add_parser(sub: Any) -> None:
    k8s = sub.add_parser("k8s", help="Kubernetes tools (k8s check: verify a live cluster)")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True)
    check = k8s_sub.add_parser(
        "check",
        help="run the live-cluster checklist and write a report",
        description="Verify the Kubernetes backend on your cluster: versions, RBAC, a smoke "
        "trajectory, large writes, isolation, idle streams, the pod TTL. Writes a JSON report; "
        "exit 0 when every required check passed. Send us the report when it fails.",
    )
    check.add_argument("--namespace", default="agentic-rollout")
    check.add_argument("--kubeconfig", help="default: KUBECONFIG / ~/.kube/config")
    check.add_argument("--context")
    check.add_argument("--in-cluster", action="store_true")
    check.add_argument("--image", default="agentic-rollout/sandbox:latest")
    check.add_argument("--connect", choices=["exec", "tcp"], default="exec")
    check.add_argument("--report", default="k8s-check-report.json", help="where the report goes")
    check.add_argument("--transfer-mb", type=int, default=100, help="size of the transfer test")
    check.add_argument("--idle", type=float, default=360.0, help="idle seconds (past 300 s LBs)")
    check.add_argument("--ttl", type=int, default=30, help="TTL test seconds (0: skip)")
    check.add_argument("--disruption", action="store_true", help="delete a pod mid-call too")
    check.add_argument("--startup-timeout", type=float, default=300.0)
    check.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='any sandbox config field, e.g. --set \'node_selector={"pool":"rl"}\'',
    )
    check.add_argument("--verbose", action="store_true")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    import tempfile

    # import cost: an integration module loaded only by the subcommand that uses it
    from orchestrator.k8s_check import Checker

    extra: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    config = KubernetesSandboxConfig(
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=args.in_cluster,
        image=args.image,
        connect=args.connect,
        startup_timeout=args.startup_timeout,
        run_id=f"k8s-check-{int(time.time())}",
        **extra,
    )
    with tempfile.TemporaryDirectory(prefix="k8s-check-") as workdir:
        args.workdir = workdir
        report = asyncio.run(Checker(config, args).run())
    data = asdict(report)
    data["ok"] = report.ok
    Path(args.report).write_text(json.dumps(data, indent=2, default=str) + "\n")
    failed = [c.name for c in report.checks if c.required and not c.ok]
    print(
        f"k8s check: {'PASSED' if report.ok else 'FAILED (' + ', '.join(failed) + ')'}; "
        f"report: {args.report}",
        file=sys.stdout,
    )
    return 0 if report.ok else 1
