"""``agentic-rollout`` command line.

Subcommands import what they need when they run, so ``--help`` works without Docker installed.
Logging is configured here (AGENTIC_LOG_LEVEL), never at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.exceptions import AgenticRolloutError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _setup_logging() -> None:
    level = os.environ.get("AGENTIC_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _cmd_gc(args: argparse.Namespace) -> int:
    from orchestrator.sandbox.gc import reap_docker

    reaped = reap_docker(
        docker_host=args.docker_host, run_id=args.run, everything=args.all, dry_run=args.dry_run
    )
    for r in reaped:
        verb = "would remove" if args.dry_run else ("removed" if r.removed else "FAILED to remove")
        print(f"{verb} {r.container_id} {r.name}: {r.reason}")
    print(f"reaped={sum(r.removed for r in reaped)} found={len(reaped)}")
    return 0 if all(r.removed or args.dry_run for r in reaped) else 1


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.name == "rpc":
        from bench import rpc

        result: dict[str, Any] = asyncio.run(
            rpc.run(
                image=args.image,
                calls=args.calls,
                exec_calls=args.exec_calls,
                starts=args.starts,
                docker_host=args.docker_host,
            )
        )
        lines = rpc.summary_lines(result)
    else:  # argparse restricts the choices
        raise AgenticRolloutError(f"unknown benchmark {args.name!r}")
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    for line in lines:
        print(line)
    return 0


def _cmd_build_images(args: argparse.Namespace) -> int:
    script = REPO_ROOT / "sandbox_images" / "build.sh"
    if not script.exists():
        raise AgenticRolloutError(
            f"{script} not found: build-images needs a source checkout of agentic-rollout"
        )
    return subprocess.call(["bash", str(script)])


def _cmd_shell(args: argparse.Namespace) -> int:
    from orchestrator.sandbox import sandbox_config

    values: dict[str, Any] = {"type": args.backend}
    if args.backend == "docker":
        values["image"] = args.image

    async def loop() -> None:
        async with sandbox_config(values).build() as sandbox:
            print(
                f"# {sandbox.describe()} ready in {sandbox.ready_seconds:.3f}s; "
                "commands run in one persistent bash session; Ctrl-D exits",
                file=sys.stderr,
            )
            while True:
                try:
                    line = await asyncio.to_thread(input, "sandbox$ ")
                except EOFError:
                    return
                result = await sandbox.run(line, timeout=args.timeout)
                sys.stdout.write(result.output)
                if result.timed_out:
                    print(f"[timed out after {args.timeout}s]")
                elif result.exit_code:
                    print(f"[exit {result.exit_code}]")

    asyncio.run(loop())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentic-rollout", description="LLM agent rollouts with one sandbox per trajectory."
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    gc.set_defaults(func=_cmd_gc)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark; prints JSON then key=value lines",
        description="Benchmarks. rpc: our RPC vs docker exec per call, and "
        "sandbox ready time vs raw container create+start.",
    )
    bench.add_argument("name", choices=["rpc"])
    bench.add_argument("--image", default="agentic-rollout/sandbox:latest")
    bench.add_argument("--calls", type=int, default=400, help="RPC calls (rpc)")
    bench.add_argument("--exec-calls", type=int, default=40, help="docker exec calls (rpc)")
    bench.add_argument("--starts", type=int, default=7, help="sandbox starts (rpc)")
    bench.add_argument("--docker-host")
    bench.add_argument("--json", metavar="PATH", help="also write the JSON result here")
    bench.set_defaults(func=_cmd_bench)

    images = sub.add_parser(
        "build-images",
        help="build the sandbox images offline",
        description="debootstrap a Debian base from the configured apt "
        "mirror, docker import it, docker build the sandbox image on top. "
        "Steps whose image tag exists are skipped.",
    )
    images.set_defaults(func=_cmd_build_images)

    shell = sub.add_parser("shell", help="open an interactive shell in a fresh sandbox")
    shell.add_argument("--backend", choices=["docker", "local"], default="docker")
    shell.add_argument("--image", default="agentic-rollout/sandbox:latest")
    shell.add_argument("--timeout", type=float, default=120.0, help="per-command timeout (s)")
    shell.set_defaults(func=_cmd_shell)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        code: int = args.func(args)
    except AgenticRolloutError as exc:
        print(f"agentic-rollout: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
