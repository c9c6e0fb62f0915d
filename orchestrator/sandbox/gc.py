"""The reaper: remove sandboxes that nobody will remove, found by label.

A container is garbage when it is stopped (our containers only stop when their agent has
exited), past its ``expires`` label, or orphaned: started by an orchestrator process on this
host that no longer exists (checked by pid *and* process start time, so a reused pid does not
keep garbage alive). This is what cleans up after an orchestrator that was SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.sandbox.docker import (
    LABEL_EXPIRES,
    LABEL_HOST,
    LABEL_MANAGED,
    LABEL_PID,
    LABEL_PID_START,
    LABEL_RUN,
    docker_api,
    process_start_ticks,
)


@dataclass(frozen=True)
class Reaped:
    container_id: str
    name: str
    reason: str
    removed: bool


def orchestrator_alive(labels: dict[str, str]) -> bool:
    if labels.get(LABEL_HOST) != socket.gethostname():
        return True  # another machine's orchestrator: only expiry applies
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    if not os.path.exists(f"/proc/{pid}"):
        return False
    started = labels.get(LABEL_PID_START, "")
    return not started or process_start_ticks(pid) == started


def garbage_reason(
    info: dict[str, Any], *, now: float, run_id: str | None = None, everything: bool = False
) -> str | None:
    labels: dict[str, str] = info.get("Labels") or {}
    if everything:
        return "--all"
    if run_id is not None:
        return "run matches" if labels.get(LABEL_RUN) == run_id else None
    if info.get("State") != "running":
        return f"not running ({info.get('State')})"
    try:
        if float(labels.get(LABEL_EXPIRES, "inf")) < now:
            return "expired"
    except ValueError:
        return "unreadable expiry label"
    if not orchestrator_alive(labels):
        return "orphaned: its orchestrator process is gone"
    return None


def reap_docker(
    *,
    docker_host: str | None = None,
    run_id: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> list[Reaped]:
    """Remove garbage sandboxes (blocking; see :func:`areap_docker`)."""
    import docker.errors

    api = docker_api(docker_host)
    try:
        found: list[Reaped] = []
        now = time.time()
        for info in api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1"}):
            reason = garbage_reason(info, now=now, run_id=run_id, everything=everything)
            if reason is None:
                continue
            name = (info.get("Names") or ["?"])[0].lstrip("/")
            removed = False
            if not dry_run:
                try:
                    api.remove_container(info["Id"], force=True, v=True)
                    removed = True
                except docker.errors.NotFound:
                    removed = True
                except docker.errors.APIError:
                    removed = False
            found.append(Reaped(info["Id"][:12], name, reason, removed))
        from orchestrator import metrics

        metrics.sandboxes_reaped("docker", sum(r.removed for r in found))
        return found
    finally:
        api.close()


async def areap_docker(**kwargs: Any) -> list[Reaped]:
    return await asyncio.to_thread(reap_docker, **kwargs)
