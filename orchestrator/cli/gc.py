"""``agentic-rollout gc``: remove leaked sandboxes (Docker containers or Kubernetes pods)."""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.sandbox.gc import reap_docker, reap_kubernetes
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig


def add_parser(sub: Any) -> None:
    gc = sub.add_parser(
        "gc",
        help="remove leaked sandboxes (stopped, expired or orphaned)",
        description="Remove sandbox containers nobody will remove: stopped, "
        "past their expiry label, or whose orchestrator process is gone "
        "(e.g. after a SIGKILL).",
    )
    gc.add_argument("--all", action="store_true", help="remove every agentic-rollout sandbox")
    gc.add_argument("--run", metavar="RUN_ID", help="remove the sandboxes of one run")
    gc.add_argument("--dry-run", action="store_true", help="list, do not remove")
    gc.add_argument("--docker-host", help="daemon URL (default: DOCKER_HOST or the local socket)")
    gc.add_argument("--kubernetes", action="store_true", help="reap sandbox pods instead")
    gc.add_argument("--namespace", default="agentic-rollout", help="with --kubernetes")
    gc.add_argument("--kubeconfig", help="with --kubernetes (default: KUBECONFIG / ~/.kube/config)")
    gc.add_argument(
        "--in-cluster", action="store_true", help="with --kubernetes, from inside a pod"
    )
    gc.set_defaults(func=cmd_gc)


def cmd_gc(args: argparse.Namespace) -> int:
    if args.kubernetes:
        config = KubernetesSandboxConfig(
            namespace=args.namespace, kubeconfig=args.kubeconfig, in_cluster=args.in_cluster
        )
        pods = reap_kubernetes(config, run_id=args.run, everything=args.all, dry_run=args.dry_run)
        for name, reason in pods:
            what = name if "/" in name else f"pod {name}"  # claims come as plural/name
            print(f"{'would delete' if args.dry_run else 'deleted'} {what}: {reason}")
        print(f"reaped={0 if args.dry_run else len(pods)} found={len(pods)}")
        return 0

    reaped = reap_docker(
        docker_host=args.docker_host, run_id=args.run, everything=args.all, dry_run=args.dry_run
    )
    for r in reaped:
        verb = "would remove" if args.dry_run else ("removed" if r.removed else "FAILED to remove")
        print(f"{verb} {r.container_id} {r.name}: {r.reason}")
    print(f"reaped={sum(r.removed for r in reaped)} found={len(reaped)}")
    return 0 if all(r.removed or args.dry_run for r in reaped) else 1
