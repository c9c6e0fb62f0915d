"""The sandbox part of a run config, typed per backend and checked when the config is read.

:data:`SandboxSettings` is a discriminated union (on ``type``) of the backends' own pydantic
config classes plus ``{"type": "none"}``; :func:`validate_sandbox` checks a settings mapping
against it (or against an import-path backend's class) and turns pydantic's errors into one
message per problem, with a did-you-mean for unknown keys (``imagee`` -> ``image``).

The run config holds its section as :data:`AnySandboxSettings` (from :func:`sandbox_settings`):
the backend's typed settings, or :class:`CustomSandboxSettings` for a backend given by import
path. Each also reads as the mapping that was given (``SandboxSettingsBase``), into which a
task's ``sandbox`` overrides merge before :func:`orchestrator.sandbox.sandbox_config` builds.
It imports the backend config modules, which import no SDK at module level.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from orchestrator import validation
from orchestrator.exceptions import ConfigError
from orchestrator.sandbox import backend_class, sandbox_config
from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig
from orchestrator.sandbox.base import SandboxSettingsBase
from orchestrator.sandbox.docker import DockerSandboxConfig
from orchestrator.sandbox.kodo import KodoSandboxConfig
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig
from orchestrator.sandbox.local import LocalSandboxConfig
from orchestrator.validation import did_you_mean


class NoSandboxConfig(SandboxSettingsBase):
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


class CustomSandboxSettings(SandboxSettingsBase):
    """``{"type": "package.module:ConfigClass", ...}``: a backend of the user's, kept as the
    given keys (attributes and mapping) and checked against that class when it is created."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(pattern=r"^[\w.]+:\w+$")

    @model_validator(mode="after")
    def _checked_by_its_class(self) -> CustomSandboxSettings:
        sandbox_config(self.as_dict())
        return self


#: what ``AgenticRolloutConfig.sandbox`` holds
AnySandboxSettings = SandboxSettings | CustomSandboxSettings


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
        cls = backend_class(kind)
        try:
            cls.model_validate({k: v for k, v in values.items() if k != "type"})
        except ValidationError as exc:
            problems = validation.describe_errors(exc, cls, where + ".")
            raise ConfigError(f"invalid {kind} sandbox settings:\n  {problems}") from None
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


def sandbox_settings(
    values: dict[str, Any] | SandboxSettingsBase, *, where: str = "sandbox"
) -> AnySandboxSettings:
    """A run config's sandbox section, typed: ConfigError with the dotted path of the bad key
    (and a did-you-mean) if invalid. Settings already typed are taken as they are."""
    if isinstance(values, SandboxSettingsBase):
        if isinstance(values, (*_BY_TYPE.values(), CustomSandboxSettings)):
            return cast(AnySandboxSettings, values)
        values = values.as_dict()
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    if ":" in str(values.get("type", "")):
        validate_sandbox(values, where=where)  # the class's own message on bad input
        return CustomSandboxSettings.model_validate(values)
    return cast(AnySandboxSettings, validate_sandbox(values, where=where))


__all__ = [
    "AnySandboxSettings",
    "CustomSandboxSettings",
    "NoSandboxConfig",
    "SandboxSettings",
    "describe_errors",
    "did_you_mean",
    "sandbox_settings",
    "validate_sandbox",
]
