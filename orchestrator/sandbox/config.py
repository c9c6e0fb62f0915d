"""The sandbox part of a run config, typed per backend and checked when the config is read.

:data:`SandboxSettings` is a discriminated union (on ``type``) of the backends' own pydantic
config classes plus ``{"type": "none"}``; :func:`validate_sandbox` checks a settings mapping
against it (or against an import-path backend's class) and turns pydantic's errors into one
message per problem, with a did-you-mean for unknown keys (``imagee`` -> ``image``).

The run config keeps the sandbox as a plain mapping (tasks override keys of it), so this module
only validates; :func:`orchestrator.sandbox.sandbox_config` still builds. It imports the
backend config modules, which import no SDK at module level.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestrator import validation
from orchestrator.exceptions import ConfigError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig
from orchestrator.sandbox.docker import DockerSandboxConfig
from orchestrator.sandbox.kodo import KodoSandboxConfig
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig
from orchestrator.sandbox.local import LocalSandboxConfig
from orchestrator.validation import did_you_mean


class NoSandboxConfig(BaseModel):
    """``{"type": "none"}``: tools run nowhere (text-only agents)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none"] = "none"


SandboxSettings = Annotated[
    DockerSandboxConfig
    | LocalSandboxConfig
    | KubernetesSandboxConfig
    | KodoSandboxConfig
    | AgentSandboxConfig
    | NoSandboxConfig,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(SandboxSettings)


def describe_errors(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """:func:`orchestrator.validation.describe_errors` knowing the backend tags."""
    return validation.describe_errors(exc, model, prefix, tags=_BY_TYPE)


_BY_TYPE: dict[str, type[BaseModel]] = {
    "docker": DockerSandboxConfig,
    "local": LocalSandboxConfig,
    "kubernetes": KubernetesSandboxConfig,
    "kodo": KodoSandboxConfig,
    "agent-sandbox": AgentSandboxConfig,
    "none": NoSandboxConfig,
}


def validate_sandbox(values: dict[str, Any], *, where: str = "sandbox") -> BaseModel:
    """The typed backend config for ``values`` (default type docker); ConfigError if invalid."""
    kind = str(values.get("type", "docker"))
    if ":" in kind:  # a backend by import path: its own class validates
        config: BaseModel = sandbox_config(values)  # type: ignore[assignment]
        return config
    model = _BY_TYPE.get(kind)
    if model is None:
        raise ConfigError(
            f"{where}.type: unknown sandbox backend {kind!r}{did_you_mean(kind, list(_BY_TYPE))} "
            f"(known: {', '.join(sorted(_BY_TYPE))} or 'package.module:ConfigClass')"
        )
    try:
        typed: BaseModel = _ADAPTER.validate_python({**values, "type": kind})
    except ValidationError as exc:
        raise ConfigError(
            f"invalid {kind} sandbox settings:\n  {describe_errors(exc, model, where + '.')}"
        ) from None
    return typed


__all__ = [
    "NoSandboxConfig",
    "SandboxSettings",
    "describe_errors",
    "did_you_mean",
    "validate_sandbox",
]
