"""Tool registries: name -> tool, schema export, and per-run copies.

A registry remembers how each tool was made (class + config), so ``fork()`` builds a fresh set
of instances for one run or one trajectory: editor undo history and calculator history never
leak between runs. The global registry is created on first use (nothing happens at import).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.exceptions import ConfigError
from orchestrator.validation import describe_errors
from tools.base import AgenticBaseTool, ToolContext, ToolResult
from tools.bash import BashExecutorTool
from tools.calculator import CalculatorTool
from tools.editor import FileEditorTool
from tools.search import SearchTool
from tools.submit import SubmitTool

ToolSpec = tuple[type[AgenticBaseTool], dict[str, Any]]


class ToolRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, ToolSpec] = {}
        self._tools: dict[str, AgenticBaseTool] = {}

    def register(
        self,
        tool: type[AgenticBaseTool] | AgenticBaseTool,
        config: dict[str, Any] | BaseModel | None = None,
        *,
        name: str | None = None,
    ) -> AgenticBaseTool:
        """Add a tool (a class with its config, or an instance); the same name replaces."""
        if isinstance(tool, AgenticBaseTool):
            if config is not None:
                raise ConfigError("pass a config with a tool class, not with a tool instance")
            instance = tool
            spec_config = dict(instance.config)
        elif isinstance(tool, type) and issubclass(tool, AgenticBaseTool):
            spec_config = (
                config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
            )
            instance = tool(spec_config)
        else:
            raise ConfigError(f"register_tool needs an AgenticBaseTool subclass, got {tool!r}")
        key = name or instance.tool_name
        if not key:
            raise ConfigError(f"tool {type(instance).__name__} has no name")
        self._specs[key] = (type(instance), spec_config)
        self._tools[key] = instance
        return instance

    def unregister(self, name: str) -> None:
        self._specs.pop(name, None)
        self._tools.pop(name, None)

    def get(self, name: str) -> AgenticBaseTool:
        try:
            return self._tools[name]
        except KeyError:
            raise ConfigError(
                f"no tool named {name!r}; registered: {', '.join(self.names()) or 'none'}"
            ) from None

    def get_tool(self, name: str) -> AgenticBaseTool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[AgenticBaseTool]:
        return iter(self._tools[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._tools)

    def fork(
        self,
        overrides: dict[str, dict[str, Any]] | None = None,
        *,
        only: list[str] | None = None,
    ) -> ToolRegistry:
        """Fresh instances of the registered tools, optionally with per-tool config overrides
        (``{"bash": {"timeout": 30}}``) and restricted to some names."""
        overrides = overrides or {}
        unknown = set(overrides) - set(self._specs)
        if unknown:
            raise ConfigError(
                f"tools_config names unregistered tools: {', '.join(sorted(unknown))}; "
                f"registered: {', '.join(self.names()) or 'none'}"
            )
        new = ToolRegistry()
        for key, (cls, config) in self._specs.items():
            if only is not None and key not in only:
                continue
            new.register(cls, {**config, **overrides.get(key, {})}, name=key)
        return new

    def openai_schemas(self) -> list[dict[str, Any]]:
        return [self._named(t.get_openai_tool_schema(), n) for n, t in sorted(self._tools.items())]

    def anthropic_schemas(self) -> list[dict[str, Any]]:
        out = []
        for name, tool in sorted(self._tools.items()):
            schema = tool.get_anthropic_tool_schema()
            out.append({**schema, "name": name})
        return out

    @staticmethod
    def _named(schema: dict[str, Any], name: str) -> dict[str, Any]:
        return {**schema, "function": {**schema["function"], "name": name}}

    async def execute(self, name: str, args: Any, context: ToolContext | None = None) -> ToolResult:
        """Run a tool by name; an unknown name is a result the model can read, not an error."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult.fail(
                f"Unknown tool `{name}`. Available tools: {', '.join(self.names()) or 'none'}."
            )
        return await tool.execute(args, context)


_global_lock = threading.Lock()
_global: ToolRegistry | None = None


def get_global_tool_registry() -> ToolRegistry:
    global _global
    with _global_lock:
        if _global is None:
            _global = ToolRegistry()
        return _global


def register_tool(
    tool: type[AgenticBaseTool] | AgenticBaseTool,
    config: dict[str, Any] | BaseModel | None = None,
    *,
    name: str | None = None,
) -> AgenticBaseTool:
    """Register a tool in the global registry (runs fork it, so runs do not share state)."""
    return get_global_tool_registry().register(tool, config, name=name)


def default_registry(**configs: dict[str, Any]) -> ToolRegistry:
    """A registry with the built-in tools: bash, str_replace_editor, search, calculator, submit."""
    registry = ToolRegistry()
    for cls in builtin_tool_classes().values():
        registry.register(cls, configs.get(cls.name, {}))
    unknown = set(configs) - set(registry.names())
    if unknown:
        raise ConfigError(f"no built-in tools named {', '.join(sorted(unknown))}")
    return registry


def builtin_tool_classes() -> dict[str, type[AgenticBaseTool]]:
    """The built-in tools by name (imported here, not at module import)."""

    classes = (BashExecutorTool, FileEditorTool, SearchTool, CalculatorTool, SubmitTool)
    return {cls.name: cls for cls in classes}


class ToolsSettings(BaseModel):
    """The ``tools`` section of a run config: which tools the agent gets and their settings.

    Given flat as in the seed too: ``tools=["bash", ...]`` sets ``names`` and
    ``tools_config={...}`` sets ``config`` (``orchestrator.config.SEED_FIELDS``). Compares equal
    to the list of its names (``config.tools == ["bash"]``), as when it was that list.
    """

    model_config = ConfigDict(extra="forbid")

    #: which tools (names) the agent gets; None: all registered (or the built-ins)
    names: list[str] | None = None
    #: per-tool settings, e.g. {"bash": {"timeout": 30}}; built-in tools' are checked when the
    #: config is read, tools registered by the user when the rollout builds its registry
    config: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _names_as_a_list(cls, data: Any) -> Any:
        return {"names": data} if data is None or isinstance(data, (list, tuple)) else data

    @model_validator(mode="after")
    def _builtin_settings_typed(self) -> ToolsSettings:
        check_builtin_tools_config(self.config)
        return self

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple)):
            return self.names is not None and self.names == list(other)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, as any pydantic model


def check_builtin_tools_config(tools_config: dict[str, dict[str, Any]]) -> None:
    """Validate the settings given for built-in tools (a run config's ``tools_config``) now:
    ConfigError with ``tools_config.NAME.KEY`` and a did-you-mean. A name the user registered
    their own tool under is theirs (checked when the run builds its registry)."""
    builtins = builtin_tool_classes()
    user = get_global_tool_registry()
    for name, settings in tools_config.items():
        cls = builtins.get(name)
        if cls is None or cls.config_model is None or name in user:
            continue
        try:
            cls.config_model.model_validate(settings)
        except ValidationError as exc:
            problems = describe_errors(exc, cls.config_model, f"tools_config.{name}.")
            raise ConfigError(f"invalid settings for tool {name}:\n  {problems}") from None
