"""Sandboxes: one isolated environment per trajectory, reached through the in-sandbox agent.

Backends are chosen by short name or by ``"package.module:ConfigClass"`` and imported lazily;
nothing registers itself on import::

    from orchestrator.sandbox import sandbox_config
    async with sandbox_config({"type": "docker", "image": "python:3.12"}).build() as sb:
        print((await sb.run("python3 --version")).output)
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

from orchestrator.exceptions import ConfigError
from orchestrator.sandbox.base import Sandbox
from orchestrator.sandbox.fork import Snapshot, SnapshotConfig
from orchestrator.sandbox.handle import (
    CommandResult,
    ExecResult,
    FileStat,
    SearchMatch,
    SearchResult,
)

#: short name -> "module:ConfigClass"
BACKENDS: dict[str, str] = {
    "docker": "orchestrator.sandbox.docker:DockerSandboxConfig",
    "local": "orchestrator.sandbox.local:LocalSandboxConfig",
    "kubernetes": "orchestrator.sandbox.kubernetes:KubernetesSandboxConfig",
    "kodo": "orchestrator.sandbox.kodo:KodoSandboxConfig",
    "agent-sandbox": "orchestrator.sandbox.agent_sandbox:AgentSandboxConfig",
}


class SandboxConfig(Protocol):
    """What every backend config provides: a ``type`` and a ``build()`` factory."""

    type: str

    def build(self, **overrides: Any) -> Sandbox: ...


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"backend path {spec!r} must look like 'package.module:ConfigClass'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load sandbox backend {spec!r}: {exc}") from exc


def backend_class(kind: str) -> Any:
    """The config class of backend ``kind`` (a short name or ``package.module:ConfigClass``)."""
    spec = BACKENDS.get(kind, kind if ":" in kind else None)
    if spec is None:
        raise ConfigError(
            f"unknown sandbox backend {kind!r}; known: {', '.join(sorted(BACKENDS))} "
            "or an import path 'package.module:ConfigClass'"
        )
    return _load(spec)


def sandbox_config(
    data: dict[str, Any] | SandboxConfig | None = None, **kwargs: Any
) -> SandboxConfig:
    """Build a backend config from a dict (``type`` picks the backend; default docker).

    ``from_snapshot=snap`` (a :class:`~orchestrator.sandbox.fork.Snapshot`): sandboxes start
    from the snapshot, with the snapshot's backend config and the given keys over it.
    """
    if data is not None and not isinstance(data, dict):
        return data
    values = {**(data or {}), **kwargs}
    snapshot = values.pop("from_snapshot", None)
    if snapshot is not None:
        if not isinstance(snapshot, Snapshot):
            raise ConfigError(
                "from_snapshot takes a Snapshot (sandbox.snapshot()), got "
                f"{type(snapshot).__name__}"
            )
        # its build() runs the snapshot's own backend config: the sandbox is a Sandbox
        return cast(SandboxConfig, SnapshotConfig(snapshot, values))
    kind = str(values.get("type", "docker"))
    cls = backend_class(kind)
    if ":" in kind:
        values.pop("type")
    from pydantic import ValidationError

    try:
        config: SandboxConfig = cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"invalid {kind} sandbox config: {exc}") from exc
    return config


__all__ = [
    "BACKENDS",
    "CommandResult",
    "ExecResult",
    "FileStat",
    "Sandbox",
    "SandboxConfig",
    "SearchMatch",
    "SearchResult",
    "Snapshot",
    "backend_class",
    "sandbox_config",
]
