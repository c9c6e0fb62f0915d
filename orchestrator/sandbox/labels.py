"""Labels every managed sandbox carries, whatever its backend, and what the reaper reads from them.

One module for all backends and ``gc`` so no backend imports another for them: a Docker
container carries them all as labels; a Kubernetes pod carries the selectable ones
(managed/owner/run) as labels and the rest as annotations (label values are restricted).
"""

from __future__ import annotations

import functools
import getpass
import os
import socket

LABEL_PREFIX = "agentic-rollout"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_OWNER = f"{LABEL_PREFIX}.owner"
LABEL_RUN = f"{LABEL_PREFIX}.run"
LABEL_EXPIRES = f"{LABEL_PREFIX}.expires"
LABEL_HOST = f"{LABEL_PREFIX}.host"
LABEL_PID = f"{LABEL_PREFIX}.pid"
LABEL_PID_START = f"{LABEL_PREFIX}.pid-start"
#: what a managed object is when it is not a sandbox (``snapshot``: a fork's image, fork.py)
LABEL_KIND = f"{LABEL_PREFIX}.kind"


@functools.cache  # a passwd lookup per sandbox config cost ~3 ms
def default_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def process_start_ticks(pid: int) -> str:
    """Start time of a process (to tell a live orchestrator from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return raw[raw.rfind(b")") + 2 :].split()[19].decode()
    except (OSError, IndexError):
        return ""


def label_value(value: str) -> str:
    """``value`` made a valid Kubernetes label value (63 chars, alphanumerics and ``-_.``)."""
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63].strip("-_.")
    return clean or "unknown"


def owner_process_labels() -> dict[str, str]:
    """Who started the sandbox: host, pid, the pid's start time (:func:`orchestrator_alive`)."""
    pid = os.getpid()
    return {
        LABEL_HOST: socket.gethostname(),
        LABEL_PID: str(pid),
        LABEL_PID_START: process_start_ticks(pid),
    }


def orchestrator_alive(labels: dict[str, str]) -> bool:
    """Whether the orchestrator process that started a sandbox with these labels still runs.

    Checked by pid *and* process start time, so a reused pid does not keep garbage alive; a
    sandbox started on another machine counts as alive (only its expiry applies)."""
    if labels.get(LABEL_HOST) != socket.gethostname():
        return True
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    if not os.path.exists(f"/proc/{pid}"):
        return False
    started = labels.get(LABEL_PID_START, "")
    return not started or process_start_ticks(pid) == started


__all__ = [
    "LABEL_EXPIRES",
    "LABEL_HOST",
    "LABEL_MANAGED",
    "LABEL_OWNER",
    "LABEL_PID",
    "LABEL_PID_START",
    "LABEL_PREFIX",
    "LABEL_RUN",
    "default_owner",
    "label_value",
    "orchestrator_alive",
    "owner_process_labels",
    "process_start_ticks",
]
