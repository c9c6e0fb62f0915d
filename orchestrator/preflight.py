"""Checks before a run's first sandbox: every configuration error shows once, up front.

What a run needs is checked in one pass and every problem is reported together
(:class:`~orchestrator.exceptions.PreflightError`):

* each distinct sandbox setting (the config's, merged with each task's overrides) is valid for
  its backend (unknown keys with a did-you-mean);
* each Docker image exists on its engine (no pull: the sandboxes never pull either);
* the LLM endpoint answers one cheap request (``max_tokens=1``), the URL in the error;
* the agent can work with the LLM client (e.g. ``tool`` needs native tool calling);
* the output file's directory is writable.

Nothing here writes a file or starts a container. Depends on the runner's parts, never on the
runner itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.exceptions import AgenticRolloutError, ConfigError, PreflightError
from orchestrator.sandbox.config import validate_sandbox
from orchestrator.sandbox.docker import daemon_url, docker_api
from orchestrator.tasks import Task

log = logging.getLogger(__name__)


def sandbox_settings(base: dict[str, Any], tasks: Sequence[Task]) -> list[dict[str, Any]]:
    """The distinct merged sandbox settings the tasks will use."""
    seen: dict[str, dict[str, Any]] = {}
    for values in [base] if not tasks else [{**base, **t.sandbox} for t in tasks]:
        seen.setdefault(json.dumps(values, sort_keys=True, default=str), values)
    return list(seen.values())


def check_sandboxes(base: dict[str, Any], tasks: Sequence[Task]) -> list[str]:

    problems: list[str] = []
    images: dict[tuple[str | None, str], None] = {}
    for values in sandbox_settings(base, tasks):
        try:
            typed = validate_sandbox(values)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        if getattr(typed, "type", None) == "docker":
            images[(getattr(typed, "docker_host", None), str(getattr(typed, "image", "")))] = None
    for host, image in images:
        problem = docker_image_problem(image, host)
        if problem:
            problems.append(problem)
    return problems


def docker_image_problem(image: str, docker_host: str | None) -> str | None:
    """None if ``image`` exists on the engine, else what is wrong (blocking)."""
    import docker.errors

    url = daemon_url(docker_host)
    try:
        api = docker_api(docker_host, timeout=30)
    except Exception as exc:
        return f"Docker engine at {url} does not answer: {exc}"
    try:
        api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return (
            f"sandbox image {image!r} does not exist on the Docker engine at {url} (sandboxes "
            "never pull); build it (agentic-rollout build-images) or name an existing image"
        )
    except Exception as exc:
        return f"cannot inspect sandbox image {image!r} on the Docker engine at {url}: {exc}"
    finally:
        api.close()
    return None


def check_output(path: Path | None) -> list[str]:
    """The trajectory file can be created or appended to (probing only, writing nothing)."""
    if path is None:
        return []
    if path.is_dir():
        return [f"trajectory file {path} is a directory"]
    if path.exists():
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            return []  # (the directory too: the lock file and compaction live there)
        reason = "read-only file system" if _read_only_fs(path) else "permission denied"
        return [f"trajectory file {path} is not writable ({reason})"]
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [f"output directory for {path}: {parent} is not a directory"]
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_fs(parent) else "permission denied"
        return [f"output directory {parent} is not writable ({reason}): {path} cannot be created"]
    return []


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_agent(agent: Any, llm: Any) -> list[str]:
    """The agent accepts this LLM client (asks the agent's own ``tool_format``, if it has one)."""
    choose = getattr(agent, "tool_format", None)
    if not callable(choose):
        return []
    try:
        choose(llm)
    except ConfigError as exc:
        return [f"agent {getattr(agent, 'name', type(agent).__name__)!r}: {exc}"]
    except NotImplementedError:
        return []
    return []


async def check_llm(llm: Any) -> list[str]:
    """One cheap request to the endpoint, for clients that can make one (``check()``)."""
    check = getattr(llm, "check", None)
    if not callable(check):
        return []
    try:
        await check()
    except AgenticRolloutError as exc:
        return [str(exc)]
    return []


async def run_preflight(
    *,
    sandbox: dict[str, Any] | None,
    tasks: Sequence[Task],
    agent: Any,
    llm: Any,
    output: Path | None,
) -> None:
    """Every check; PreflightError listing every problem found."""
    problems: list[str] = []
    problems += check_output(output)
    problems += check_agent(agent, llm)
    llm_check = asyncio.create_task(check_llm(llm))
    if sandbox is not None:
        problems += await asyncio.to_thread(check_sandboxes, sandbox, tasks)
    problems += await llm_check
    if problems:
        raise PreflightError(problems)
    log.debug("preflight passed (%d task(s))", len(tasks))
