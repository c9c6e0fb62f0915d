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
    trajectory_save_path: str = "./trajectories/trajectories.jsonl"

    # ---- additions
    #: which tools (names) the agent gets; None: all registered (or the built-ins)
    tools: list[str] | None = None
    #: sandbox backend settings; {"type": "none"} runs without a sandbox
    sandbox: dict[str, Any] = Field(default_factory=lambda: {"type": "docker"})
    #: sandboxes kept started ahead of time per sandbox config (0: start each on demand); see
    #: orchestrator.sandbox.pool - a sandbox is still never reused across trajectories
    warm_pool: int = Field(0, ge=0)
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
            raise ConfigError(f"invalid configuration: {exc}") from None

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


def configure_logging(default: str = "WARNING") -> None:
    level = os.environ.get("AGENTIC_LOG_LEVEL", default).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
