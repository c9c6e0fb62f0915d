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

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestrator.exceptions import ConfigError
from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig
from orchestrator.sandbox.docker import DockerSandboxConfig
from orchestrator.sandbox.kodo import KodoSandboxConfig
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig
from orchestrator.sandbox.local import LocalSandboxConfig


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


def did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def describe_errors(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """pydantic's errors as ``prefix+key: problem`` lines, with a did-you-mean for unknown
    keys."""
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        # a discriminated union puts the chosen tag first in loc: drop it
        if loc and loc[0] in _BY_TYPE:
            loc = loc[1:]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden" and loc:
            hint = did_you_mean(loc[-1], sorted(_model_at(model, loc[:-1]).model_fields))
            lines.append(f"{prefix}{key}: unknown key{hint}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if msg.startswith("invalid ") and "\n" in msg:  # a nested validator's own report
                lines.append(msg.split("\n", 1)[1].strip())
            else:
                lines.append(f"{prefix}{key}: {msg}" if key else f"{prefix.rstrip('.')}: {msg}")
    return "\n  ".join(lines)


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel]:
    """The nested model a location points into (``llm`` -> LLMSettings), for did-you-mean."""
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    return model


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
        from orchestrator.sandbox import sandbox_config

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


__all__ = ["NoSandboxConfig", "SandboxSettings", "describe_errors", "validate_sandbox"]
