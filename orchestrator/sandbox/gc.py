"""The reaper: remove sandboxes that nobody will remove, found by label (Docker and Kubernetes).

A container is garbage when it is stopped (our containers only stop when their agent has
exited), past its ``expires`` label, or orphaned: started by an orchestrator process on this
host that no longer exists (checked by pid *and* process start time, so a reused pid does not
keep garbage alive). This is what cleans up after an orchestrator that was SIGKILLed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from orchestrator import metrics
from orchestrator.exceptions import SandboxError
from orchestrator.sandbox.agent_sandbox import EXT_GROUP, GROUP, VERSION
from orchestrator.sandbox.docker import docker_api
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig, api_client
from orchestrator.sandbox.labels import (
    LABEL_EXPIRES,
    LABEL_KIND,
    LABEL_MANAGED,
    LABEL_RUN,
    label_value,
    orchestrator_alive,
)
from orchestrator.sandbox.transport import CHANNEL_SOCKET, ChannelError, runtime_root


@dataclass(frozen=True)
class Reaped:
    container_id: str
    name: str
    reason: str
    removed: bool


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
    runtime_dir: str | None = None,
) -> list[Reaped]:
    """Remove garbage sandboxes (blocking; see :func:`areap_docker`).

    Afterwards the direct-transport channel directories (``runtime_dir``, default the
    backend's) of sandboxes that no longer exist are removed too: a SIGKILLed orchestrator
    leaves them behind.
    """
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
        # after the containers: a snapshot image is removable once nothing runs from it
        found += reap_snapshot_images(
            api, now=now, run_id=run_id, everything=everything, dry_run=dry_run
        )
        if not dry_run:
            names = {
                name.lstrip("/")
                for info in api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=1"})
                for name in info.get("Names") or []
            }
            sweep_channel_dirs(names, runtime_dir=runtime_dir, now=now)

        metrics.sandboxes_reaped("docker", sum(r.removed for r in found))
        return found
    finally:
        api.close()


#: a channel directory still holding its socket belongs to a sandbox being started: its
#: container may not exist yet, so it is only garbage once no start could still be going on
STARTING_GRACE_S = 3600.0


def sweep_channel_dirs(
    live_names: set[str], *, runtime_dir: str | None = None, now: float | None = None
) -> list[str]:
    """Remove the channel directories of sandboxes that no longer exist; return their names.

    A directory is garbage when no managed container has its name and its socket is gone (the
    socket only exists between the directory's creation and the agent's connection), or,
    still holding a socket, when it is older than :data:`STARTING_GRACE_S`.
    """
    try:
        root = runtime_root(runtime_dir)
    except (ChannelError, OSError):
        return []  # no usable runtime directory: no direct transport was ever used from here
    now = time.time() if now is None else now
    removed: list[str] = []
    for entry in os.scandir(root):
        if entry.name in live_names or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            starting = os.path.lexists(os.path.join(entry.path, CHANNEL_SOCKET))
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if starting and age < STARTING_GRACE_S:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.name)
    return removed


async def areap_docker(**kwargs: Any) -> list[Reaped]:
    return await asyncio.to_thread(reap_docker, **kwargs)


def _k8s_reason(
    notes: dict[str, str], *, now: float, run_id: str | None, everything: bool
) -> str | None:
    """Why a labelled Kubernetes object (a pod, a claim) is garbage, from its annotations."""
    if everything or run_id:
        return "--all" if everything else "run matches"
    try:
        if float(notes.get(LABEL_EXPIRES, "inf")) < now:
            return "expired"
    except ValueError:
        return "unreadable expiry annotation"
    if not orchestrator_alive(notes):
        return "orphaned: its orchestrator process is gone"
    return None


def reap_kubernetes(
    config: KubernetesSandboxConfig,
    *,
    run_id: str | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> list[tuple[str, str]]:
    """Delete what nobody will delete: sandbox pods (finished, expired, orphaned) and the
    agent-sandbox backend's SandboxClaims and Sandboxes (expired, orphaned; where the CRDs
    are installed). (name, reason) each; claims and Sandboxes named ``plural/name``."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = api_client(config)
    try:
        core = client.CoreV1Api(api)
        selector = f"{LABEL_MANAGED}=1" + (f",{LABEL_RUN}={label_value(run_id)}" if run_id else "")
        reaped = []
        now = time.time()
        for pod in core.list_namespaced_pod(config.namespace, label_selector=selector).items:
            meta = pod.metadata
            if meta is None or meta.name is None:
                continue
            name: str = meta.name
            if pod.status and pod.status.phase in ("Succeeded", "Failed") and not run_id:
                reason: str | None = f"finished ({pod.status.phase})"
            else:
                reason = _k8s_reason(
                    dict(meta.annotations or {}), now=now, run_id=run_id, everything=everything
                )
            if reason is None:
                continue
            if not dry_run:
                try:
                    core.delete_namespaced_pod(name, config.namespace, grace_period_seconds=0)
                except ApiException as exc:
                    if exc.status != 404:
                        raise SandboxError(f"cannot delete pod {name}: {exc.reason}") from exc
            reaped.append((name, reason))
        reaped += _reap_claims(
            api,
            config.namespace,
            selector,
            now=now,
            run_id=run_id,
            everything=everything,
            dry_run=dry_run,
        )
        if not dry_run:
            metrics.sandboxes_reaped("kubernetes", len(reaped))
        return reaped
    finally:
        api.close()


def reap_snapshot_images(
    api: Any, *, now: float, run_id: str | None, everything: bool, dry_run: bool
) -> list[Reaped]:
    """Snapshot images (orchestrator/sandbox/fork.py) past their expiry or whose orchestrator
    is gone; one still used by a container is left (reported ``removed=False``)."""
    import docker.errors

    found: list[Reaped] = []
    images = api.images(filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_KIND}=snapshot"]})
    # newest first: a fork of a fork is committed on top of the older snapshot, which can
    # only be removed after it
    for info in sorted(images, key=lambda i: -int(i.get("Created") or 0)):
        labels: dict[str, str] = info.get("Labels") or {}
        reason = garbage_reason(
            {"Labels": labels, "State": "running"}, now=now, run_id=run_id, everything=everything
        )
        if reason is None:
            continue
        removed = False
        if not dry_run:
            try:
                api.remove_image(info["Id"], force=False, noprune=False)
                removed = True
            except docker.errors.NotFound:
                removed = True
            except docker.errors.APIError:  # still used by a container
                removed = False
        image_id = str(info["Id"]).removeprefix("sha256:")[:12]
        found.append(Reaped(image_id, f"snapshot {image_id}", reason, removed))
    return found


def _reap_claims(
    api: Any,
    namespace: str,
    selector: str,
    *,
    now: float,
    run_id: str | None,
    everything: bool,
    dry_run: bool,
) -> list[tuple[str, str]]:
    """The agent-sandbox objects we create (their controller deletes the pods)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    custom = client.CustomObjectsApi(api)
    reaped = []
    for group, plural in ((EXT_GROUP, "sandboxclaims"), (GROUP, "sandboxes")):
        try:
            listing: Any = custom.list_namespaced_custom_object(
                group, VERSION, namespace, plural, label_selector=selector
            )
        except ApiException as exc:
            if exc.status == 404:  # the CRDs are not installed: nothing of ours to find
                continue
            raise SandboxError(f"cannot list {plural}: {exc.reason}") from exc
        for item in listing.get("items", []):
            meta = item.get("metadata") or {}
            name = str(meta.get("name", ""))
            reason = _k8s_reason(
                dict(meta.get("annotations") or {}), now=now, run_id=run_id, everything=everything
            )
            if not name or reason is None:
                continue
            if not dry_run:
                try:
                    custom.delete_namespaced_custom_object(group, VERSION, namespace, plural, name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise SandboxError(f"cannot delete {plural}/{name}: {exc.reason}") from exc
            reaped.append((f"{plural}/{name}", reason))
    return reaped
