"""``agentic-rollout build-images``: the sandbox images, built offline (sandbox_images/build.sh)."""

from __future__ import annotations

import argparse
import subprocess
from typing import Any

from orchestrator.cli.common import REPO_ROOT
from orchestrator.exceptions import AgenticRolloutError


def add_parser(sub: Any) -> None:
    images = sub.add_parser(
        "build-images",
        help="build the sandbox images offline",
        description="debootstrap a Debian base from the configured apt "
        "mirror, docker import it, docker build the sandbox image on top. "
        "Steps whose image tag exists are skipped.",
    )
    images.set_defaults(func=cmd_build_images)


def cmd_build_images(args: argparse.Namespace) -> int:
    script = REPO_ROOT / "sandbox_images" / "build.sh"
    if not script.exists():
        raise AgenticRolloutError(
            f"{script} not found: build-images needs a source checkout of agentic-rollout"
        )
    return subprocess.call(["bash", str(script)])
