"""``AgenticRolloutConfig``: one run's configuration, composed of the layers' own models.

* ``agent``: :class:`agents.config.AgentConfig` (turns, tokens per step, temperature, tool
  format, LLM retry policy, system prompt) - the one definition of those fields;
* ``llm``: :class:`LLMSettings`;
* ``sandbox``: the backend's typed settings, the discriminated union
  :data:`orchestrator.sandbox.config.SandboxSettings` (by ``type``) validated when the config
  is read; it also reads and serialises as the mapping that was given;
* ``tools``: :class:`tools.registry.ToolsSettings`, which tools (``names``) and their settings
  (``config``; built-in tools' settings are checked when the config is read too);
* the run's own fields (concurrency, saving, timeouts, admission, retry of stored outcomes).

The seed's flat names (``max_steps=8``, ``temperature``, ``tool_format`` ...) keep working, as
constructor/YAML keys and as attributes, through the one mapping :data:`SEED_FIELDS`.
Integrations (SWE, VERL, Harbor) derive their configs with :meth:`AgenticRolloutConfig.preset`.

The seed's environment variables keep their meaning: ``AGENTIC_SAVE_TRAJECTORIES`` sets the
default of ``save_trajectories``; ``AGENTIC_LOG_LEVEL`` is read by :func:`configure_logging`;
``OPENAI_*`` / ``ANTHROPIC_*`` are read by the LLM clients.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)

from orchestrator.admission import AdmissionSettings, merge_admission_defaults
from orchestrator.agent_settings import AgentConfig
from orchestrator.exceptions import ConfigError
from orchestrator.sandbox.config import AnySandboxSettings, sandbox_settings
from orchestrator.trajectory import Outcome
from orchestrator.validation import describe_errors, did_you_mean
from tools.registry import ToolsSettings


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

    def __init__(self, **data: Any) -> None:
        # spelled out so type checkers accept the seed's flat names (SEED_FIELDS) as keywords
        super().__init__(**data)

    # ---- the seed's fields
    agent_type: str = "react"
    #: the agent's loop settings; the seed's flat names (max_steps, temperature...) map here
    agent: AgentConfig = Field(default_factory=AgentConfig)
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
    #: which tools the agent gets (``names``) and their settings (``config``); the seed's
    #: ``tools_config`` and a list given as ``tools`` map here
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    #: sandbox backend settings, typed by ``type`` (docker, kubernetes, agent-sandbox, kodo,
    #: local, none, or "package.module:ConfigClass"); {"type": "none"} runs without a sandbox.
    #: Given as a mapping; reads as typed attributes and as that mapping (SandboxSettingsBase)
    sandbox: AnySandboxSettings = Field(
        default_factory=lambda: sandbox_settings({"type": "docker"})
    )
    #: sandboxes kept started ahead of time per sandbox config (0: start each on demand); see
    #: orchestrator.sandbox.pool - a sandbox is still never reused across trajectories
    warm_pool: int = Field(0, ge=0)
    #: samples per task (GRPO's n): task "x" runs as "x#0".."x#{n-1}"; a task with ``setup``
    #: runs it once in one sandbox that is then forked n times (each sample in its own fork);
    #: a group counts as one of ``concurrent_requests``. In the VERL agent loop VERL makes the
    #: samples; those of a row with ``setup`` share it through one snapshot (orchestrator/groups.py)
    group_size: int = Field(1, ge=1)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    trajectory_timeout: float = Field(1800.0, gt=0, description="seconds per trajectory")
    #: process-wide admission limits per backend type, e.g. {"docker": {"max_live": 32}}:
    #: fields not given keep that backend's defaults (orchestrator.admission.DEFAULTS); shared
    #: by every AgenticRollout, warm pool and VERL loop of the process
    admission: dict[str, AdmissionSettings] = Field(default_factory=dict)
    #: check the whole setup (sandbox image, LLM endpoint, agent/LLM fit, output writable)
    #: before the first sandbox starts; see orchestrator.preflight
    preflight: bool = True
    #: which stored outcomes a rerun runs again: "infra" (default: infrastructure failures),
    #: "failed" (every outcome but completed), "all", "none", or a list of outcome names
    #: (infra_error, task_error, format_error, timeout, max_steps, truncated, completed)
    retry_outcomes: str | list[str] = "infra"

    @field_validator("sandbox", mode="wrap")
    @classmethod
    def _typed_sandbox(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # typed per backend when the config is read, not when the first trajectory starts;
        # sandbox_settings' ConfigError names the dotted path (pydantic's union errors would
        # list every backend's)
        return sandbox_settings(value)

    def __setattr__(self, name: str, value: Any) -> None:
        # ``config.sandbox = {...}`` (as when it was a dict): typed like a loaded section
        super().__setattr__(name, sandbox_settings(value) if name == "sandbox" else value)

    def model_copy(
        self, *, update: Mapping[str, Any] | None = None, deep: bool = False
    ) -> AgenticRolloutConfig:
        # pydantic's copy does not validate ``update``: a sandbox given there as a mapping (as
        # when the section was a dict) is typed like a loaded one
        if update and "sandbox" in update:
            update = {**update, "sandbox": sandbox_settings(update["sandbox"])}
        return super().model_copy(update=update, deep=deep)

    @field_serializer("sandbox")
    def _sandbox_as_given(self, value: AnySandboxSettings, info: SerializationInfo) -> Any:
        # the mapping that was given, as before the section was typed (not every default)
        return value.as_dict(mode="json" if info.mode_is_json() else "python")

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
    def _seed_names(cls, data: Any) -> Any:
        """The seed's flat names into their sections (:data:`SEED_FIELDS`), and the seed's
        ``trajectory_save_path=None`` ("no file saving") as not saving."""
        if not isinstance(data, dict):
            return data
        data = nest_seed_fields(data)
        if data.get("trajectory_save_path", "") is None:
            data = {k: v for k, v in data.items() if k != "trajectory_save_path"}
            data["save_trajectories"] = False
        return data

    def preset(self, **changes: Any) -> AgenticRolloutConfig:
        """A copy with ``changes`` applied (flat seed names and dotted keys allowed), validated
        like a loaded config: how SWE, VERL and Harbor set their presets on a user's config."""
        data = self.model_dump()
        for key, value in changes.items():
            set_dotted(data, config_key(key, value), value)
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            problems = describe_errors(exc, type(self), aliases=SEED_FIELDS)
            raise ConfigError(f"invalid configuration:\n  {problems}") from None

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
        data = nest_seed_fields(data)  # so an override of either spelling replaces it
        for key, value in overrides.items():
            if value is not None:
                set_dotted(data, config_key(key, value), value)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            where = f" ({path})" if path is not None else ""
            raise ConfigError(
                f"invalid configuration{where}:\n  {describe_errors(exc, cls, aliases=SEED_FIELDS)}"
            ) from None

    def agent_config(self) -> AgentConfig:
        """The agent's settings (the ``agent`` section; kept as a method for callers of the
        previous versions)."""
        return self.agent

    @property
    def uses_sandbox(self) -> bool:
        return self.sandbox.type != "none"


#: THE compatibility mapping: the seed's flat field names -> where they live now. Accepted as
#: constructor / YAML / ``--set`` keys and readable and writable as attributes.
SEED_FIELDS: dict[str, str] = {
    **{
        name: f"agent.{name}"
        for name in (
            "max_steps",
            "max_tokens_per_step",
            "temperature",
            "max_consecutive_format_errors",
            "system_prompt",
            "tool_format",
            "retry",
        )
    },
    "tools_config": "tools.config",
}


def config_key(key: str, value: Any) -> str:
    """Where a key given to ``load``/``preset`` goes: a seed name to its section, and ``tools``
    given as a list of names (as before the section) to ``tools.names``."""
    if key == "tools" and (value is None or isinstance(value, (list, tuple))):
        return "tools.names"
    return SEED_FIELDS.get(key, key)


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``key="a.b"`` (creating the sections on the way)."""
    target = data
    *parents, leaf = key.split(".")
    for part in parents:
        nested = target.get(part)
        if not isinstance(nested, dict):
            nested = target[part] = dict(nested) if nested else {}
        target = nested
    target[leaf] = value


def nest_seed_fields(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the seed's flat names moved to their sections; a setting given both ways
    is refused rather than one silently winning."""
    tools = data.get("tools")
    if (tools is None and "tools" in data) or isinstance(tools, (list, tuple)):
        data = {**data, "tools": {"names": tools}}  # the list form, before its settings join it
    if not any(key in SEED_FIELDS for key in data):
        return data
    out = {k: v for k, v in data.items() if k not in SEED_FIELDS}
    for key, value in data.items():
        if key in SEED_FIELDS:
            section, _, leaf = SEED_FIELDS[key].partition(".")
            given = out.get(section)
            if isinstance(given, dict) and leaf in given:
                raise ConfigError(f"{key} is given twice: as {key} and as {SEED_FIELDS[key]}")
            set_dotted(out, SEED_FIELDS[key], value)
    return out


def _seed_attribute(path: str) -> property:
    section, _, leaf = path.partition(".")

    def get(self: AgenticRolloutConfig) -> Any:
        return getattr(getattr(self, section), leaf)

    def set_(self: AgenticRolloutConfig, value: Any) -> None:
        setattr(getattr(self, section), leaf, value)

    return property(get, set_, doc=f"the seed's name for ``{path}``")


for _name, _path in SEED_FIELDS.items():
    setattr(AgenticRolloutConfig, _name, _seed_attribute(_path))


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
