"""``agentic-rollout shell``: an interactive bash session in a fresh sandbox."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from orchestrator.cli.common import run_async
from orchestrator.sandbox import sandbox_config


def add_parser(sub: Any) -> None:
    shell = sub.add_parser("shell", help="open an interactive shell in a fresh sandbox")
    shell.add_argument("--backend", choices=["docker", "local"], default="docker")
    shell.add_argument("--image", default="agentic-rollout/sandbox:latest")
    shell.add_argument("--timeout", type=float, default=120.0, help="per-command timeout (s)")
    shell.set_defaults(func=cmd_shell)


def cmd_shell(args: argparse.Namespace) -> int:

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

    run_async(loop())
    return 0
