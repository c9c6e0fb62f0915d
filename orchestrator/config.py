"""``AgenticRolloutConfig``: the seed's fields, plus sandbox, LLM and retry settings.

The seed's environment variables keep their meaning: ``AGENTIC_SAVE_TRAJECTORIES`` sets the
default of ``save_trajectories``; ``AGENTIC_LOG_LEVEL`` is read by :func:`configure_logging`;
``OPENAI_*`` / ``ANTHROPIC_*`` are read by the LLM clients.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.admission import AdmissionSettings, merge_admission_defaults
from orchestrator.exceptions import ConfigError
from orchestrator.llm import RetryPolicy
from orchestrator.trajectory import Outcome


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


class LLMSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["openai", "anthropic"] = "openai"
    model: str = "default"
    base_url: str | None = None
    api_key: str | None = None
    timeout: float = Field(120.0, gt=0)


class AgenticRolloutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # ---- the seed's fields
    agent_type: str = "react"
    max_steps: int = Field(10, ge=1)
    max_tokens_per_step: int = Field(512, ge=1)
    temperature: float = Field(0.7, ge=0)
    #: per-tool config overrides, e.g. {"bash": {"timeout": 30}}
    tools_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: tasks handed to the scheduler at a time (results are saved as each trajectory ends)
    batch_size: int = Field(32, ge=1)
    #: trajectories (and so sandboxes) alive at once
    concurrent_requests: int = Field(4, ge=1)
    include_trajectory_in_output: bool = True
    save_trajectories: bool = Field(
        default_factory=lambda: _env_flag("AGENTIC_SAVE_TRAJECTORIES", True)
    )
    #: a ``.jsonl``/``.json`` file, or (the seed's meaning) a directory - an existing one, one
    #: ending in ``/``, or a path without a suffix - holding ``trajectories.jsonl``; None: do
    #: not save (as the seed)
    trajectory_save_path: str | None = "./trajectories/trajectories.jsonl"

    # ---- additions
    #: which tools (names) the agent gets; None: all registered (or the built-ins)
    tools: list[str] | None = None
    #: sandbox backend settings; {"type": "none"} runs without a sandbox
    sandbox: dict[str, Any] = Field(default_factory=lambda: {"type": "docker"})
    #: sandboxes kept started ahead of time per sandbox config (0: start each on demand); see
    #: orchestrator.sandbox.pool - a sandbox is still never reused across trajectories
    warm_pool: int = Field(0, ge=0)
    #: samples per task (GRPO's n): task "x" runs as "x#0".."x#{n-1}"; a task with ``setup``
    #: runs it once in one sandbox that is then forked n times (each sample in its own fork);
    #: a group counts as one of ``concurrent_requests``
    group_size: int = Field(1, ge=1)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    trajectory_timeout: float = Field(1800.0, gt=0, description="seconds per trajectory")
    max_consecutive_format_errors: int = Field(3, ge=1)
    system_prompt: str | None = None
    #: process-wide admission limits per backend type, e.g. {"docker": {"max_live": 32}}:
    #: fields not given keep that backend's defaults (orchestrator.admission.DEFAULTS); shared
    #: by every AgenticRollout, warm pool and VERL loop of the process
    admission: dict[str, AdmissionSettings] = Field(default_factory=dict)
    #: "auto" (the agent's default), "react", "json" (schema-constrained, for small local
    #: models), "native" (function calling) or "hermes" (<tool_call> tags in the text)
    tool_format: Literal["auto", "react", "json", "native", "hermes"] = "auto"
    #: check the whole setup (sandbox image, LLM endpoint, agent/LLM fit, output writable)
    #: before the first sandbox starts; see orchestrator.preflight
    preflight: bool = True
    #: which stored outcomes a rerun runs again: "infra" (default: infrastructure failures),
    #: "failed" (every outcome but completed), "all", "none", or a list of outcome names
    #: (infra_error, task_error, format_error, timeout, max_steps, truncated, completed)
    retry_outcomes: str | list[str] = "infra"

    @field_validator("sandbox")
    @classmethod
    def _typed_sandbox(cls, value: dict[str, Any]) -> dict[str, Any]:
        # typed per backend now, not when the first trajectory starts (the dict is kept: tasks
        # override keys of it)
        from orchestrator.sandbox.config import validate_sandbox

        validate_sandbox(value)
        return value

    @field_validator("retry_outcomes")
    @classmethod
    def _known_outcomes(cls, value: str | list[str]) -> str | list[str]:
        resolve_retry(value)
        return value

    @property
    def trajectory_file(self) -> Path | None:
        """Where trajectories go, or None when they are not saved."""
        if not self.save_trajectories or self.trajectory_save_path is None:
            return None
        raw = self.trajectory_save_path
        path = Path(raw)
        if path.is_file():
            return path
        if path.is_dir() or raw.endswith(("/", os.sep)) or not path.suffix:
            return path / "trajectories.jsonl"
        return path

    @model_validator(mode="before")
    @classmethod
    def _no_save_path(cls, data: Any) -> Any:
        """The seed's ``trajectory_save_path=None`` ("no file saving") means not saving."""
        if isinstance(data, dict) and data.get("trajectory_save_path", "") is None:
            data = {k: v for k, v in data.items() if k != "trajectory_save_path"}
            data["save_trajectories"] = False
        return data

    @field_validator("admission", mode="before")
    @classmethod
    def _admission_over_defaults(cls, value: Any) -> Any:
        return merge_admission_defaults(value)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, **overrides: Any
    ) -> AgenticRolloutConfig:
        """From a YAML (or JSON) file, with keyword overrides on top (dotted keys allowed)."""
        data: dict[str, Any] = {}
        if path is not None:
            import yaml

            try:
                loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"config {path} must be a mapping, got {type(loaded).__name__}")
            data = loaded or {}
        for key, value in overrides.items():
            if value is None:
                continue
            target = data
            *parents, leaf = key.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            from orchestrator.sandbox.config import describe_errors

            where = f" ({path})" if path is not None else ""
            raise ConfigError(
                f"invalid configuration{where}:\n  {describe_errors(exc, cls)}"
            ) from None

    def agent_config(self) -> Any:
        from agents.base import AgentConfig

        return AgentConfig(
            max_steps=self.max_steps,
            max_tokens_per_step=self.max_tokens_per_step,
            temperature=self.temperature,
            max_consecutive_format_errors=self.max_consecutive_format_errors,
            system_prompt=self.system_prompt,
            tool_format=self.tool_format,
            retry=self.retry,
        )

    @property
    def uses_sandbox(self) -> bool:
        return str(self.sandbox.get("type", "docker")) != "none"


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: every outcome name, for retry_outcomes (the values of trajectory.Outcome)
OUTCOME_NAMES = tuple(o.value for o in Outcome)
_RETRY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "infra": ("infra_error",),
    "none": (),
    "failed": tuple(o for o in OUTCOME_NAMES if o != "completed"),
    "all": OUTCOME_NAMES,
}


def resolve_retry(value: str | list[str]) -> frozenset[str]:
    """The outcome names a rerun runs again; ConfigError naming the bad word otherwise."""
    words = value.split(",") if isinstance(value, str) else list(value)
    out: set[str] = set()
    for word in (w.strip() for w in words):
        if not word:
            continue
        if word in _RETRY_KEYWORDS:
            out.update(_RETRY_KEYWORDS[word])
        elif word in OUTCOME_NAMES:
            out.add(word)
        else:
            from orchestrator.sandbox.config import did_you_mean

            choices = [*_RETRY_KEYWORDS, *OUTCOME_NAMES]
            raise ConfigError(
                f"unknown retry choice {word!r}{did_you_mean(word, choices)}; use "
                f"{', '.join(_RETRY_KEYWORDS)} or outcome names ({', '.join(OUTCOME_NAMES)})"
            )
    return frozenset(out)


def log_level(default: str = "WARNING") -> int:
    """``AGENTIC_LOG_LEVEL`` (the seed's variable) as a logging level; ConfigError if unknown."""
    raw = os.environ.get("AGENTIC_LOG_LEVEL", default)
    level = raw.strip().upper()
    if level.isdigit():
        return int(level)
    if level not in _LEVELS:
        raise ConfigError(
            f"AGENTIC_LOG_LEVEL={raw!r} is not a log level; use one of {', '.join(_LEVELS)}"
        )
    return int(getattr(logging, level))


def configure_logging(default: str = "WARNING") -> None:
    logging.basicConfig(
        level=log_level(default),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
