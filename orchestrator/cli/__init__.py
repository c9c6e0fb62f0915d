"""``agentic-rollout`` command line: one module per subcommand, wired by :data:`COMMANDS`.

Each subcommand module has ``add_parser(sub)`` (its arguments, ``func`` set to its handler) and
imports what it needs only when it runs, so ``--help`` works without Docker installed. Logging
is configured here (AGENTIC_LOG_LEVEL), never at import time. Shared pieces (signal handling,
run options, the summary table) are in :mod:`orchestrator.cli.common`.

Exit codes: the handler's, 2 on a configuration error (any :class:`AgenticRolloutError`),
128 + N on signal N (see :func:`orchestrator.cli.common.run_async`).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

from orchestrator import __version__
from orchestrator.cli import (
    bench,
    build_images,
    demo,
    export,
    gc,
    harbor,
    k8s,
    run,
    shell,
    show,
    swe,
    view,
)
from orchestrator.cli.common import SIGNALS, Interrupted, install_signal_handlers
from orchestrator.config import configure_logging
from orchestrator.exceptions import AgenticRolloutError

#: the subcommands in the order ``--help`` lists them: name -> ``add_parser(sub)``
COMMANDS: dict[str, Callable[[Any], None]] = {
    "gc": gc.add_parser,
    "bench": bench.add_parser,
    "build-images": build_images.add_parser,
    "run": run.add_parser,
    "show": show.add_parser,
    "demo": demo.add_parser,
    "swe": swe.add_parser,
    "view": view.add_parser,
    "export": export.add_parser,
    "harbor": harbor.add_parser,
    "k8s": k8s.add_parser,
    "shell": shell.add_parser,
}


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="agentic-rollout", description="LLM agent rollouts with one sandbox per trajectory."
    )
    parser.add_argument("--version", action="version", version=f"agentic-rollout {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in COMMANDS.values():
        add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    install_signal_handlers()
    try:
        configure_logging()
        code: int = args.func(args)
    except AgenticRolloutError as exc:
        print(f"agentic-rollout: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130
    finally:  # main() called in-process (tests, notebooks) leaves the handlers as they were
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


__all__ = ["COMMANDS", "build_parser", "main"]
