"""The tool contract: a name, a description, JSON-schema parameters, and ``execute``.

``await tool.execute(args, context)`` always returns a :class:`ToolResult`. Bad arguments, a
missing file, a failing command: the result says so in text the model reads. Only
infrastructure failures (the sandbox died, an RPC timed out) raise, as
:class:`~orchestrator.exceptions.SandboxError`; the orchestrator records those on the trajectory.

Writing a tool (the seed's style still works)::

    class Echo(AgenticBaseTool):
        name = "echo"
        description = "Repeat the text."
        parameters = {"type": "object", "properties": {"text": {"type": "string"}},
                      "required": ["text"]}

        async def run(self, args, ctx):
            return ToolResult(success=True, output=args["text"])

Tools run on the host and reach the sandbox through ``ctx.sandbox`` (RPC primitives); changing a
tool never needs an image rebuild. This module depends on pydantic and the exception tree only.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.exceptions import ConfigError, RemoteError, SandboxError
from orchestrator.exceptions import ToolError as ToolError  # noqa: PLC0414 - defined here before
from orchestrator.sandbox.base import Sandbox


class ToolResult(BaseModel):
    """What a tool call produced. ``output`` is the observation text for the model."""

    model_config = ConfigDict(populate_by_name=True)

    success: bool
    output: str = ""
    #: structured data for programs (the seed called this ``result``)
    data: Any = Field(default=None, alias="result")
    #: the message when ``success`` is false
    error: str | None = None
    #: the agent loop should stop after this call (submit / finish)
    terminate: bool = False

    @property
    def is_error(self) -> bool:
        return not self.success

    @property
    def result(self) -> Any:
        return self.data

    def observation(self) -> str:
        """Text for the model: the output, or the data as JSON, or the error."""
        if self.output:
            return self.output
        if self.data is not None:
            return json.dumps(self.data, ensure_ascii=False, default=str)
        return self.error or ("(no output)" if self.success else "Error")

    @classmethod
    def fail(cls, message: str, **data: Any) -> ToolResult:
        return cls(success=False, output=message, error=message, data=data or None)


class ToolContext(BaseModel):
    """Per-call context: which sandbox, which trajectory, which shell session."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sandbox: Sandbox | None = None
    instance_id: str = "default"
    session: str = "default"
    #: root under which file tools may work (None: anywhere)
    workspace: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    def require_sandbox(self) -> Sandbox:
        if self.sandbox is None:
            raise ToolError("This tool needs a sandbox, and none is attached to this run.")
        return self.sandbox


class ToolConfig(BaseModel):
    """Base of tool configs; unknown keys are refused so a typo does not pass silently."""

    model_config = ConfigDict(extra="forbid")

    debug: bool = False


def create_openai_tool_schema(
    name: str,
    description: str,
    parameters: dict[str, Any],
    required: list[str] | None = None,
) -> dict[str, Any]:
    """The seed's helper: ``parameters`` maps argument names to their JSON schemas."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": parameters,
                "required": list(required or []),
            },
        },
    }


def openai_to_anthropic(schema: dict[str, Any]) -> dict[str, Any]:
    fn = schema["function"]
    return {
        "name": fn["name"],
        "description": fn.get("description", ""),
        "input_schema": fn.get("parameters", {"type": "object", "properties": {}}),
    }


#: Most characters of a tool's output kept (a bound on what a sandbox can make the host hold,
#: escape and store per call; the agent's own ``max_observation_chars`` is usually lower).
MAX_RESULT_CHARS = 1 << 20


def cap_text(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """``text`` with its middle elided to ``limit`` characters, saying so."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return (
        f"{text[:half]}\n[... {len(text) - 2 * half} characters elided: the tool's output is "
        f"capped at {limit} characters ...]\n{text[-half:]}"
    )


class AgenticBaseTool:
    """Base class of every tool. Subclasses set ``name``/``description``/``parameters`` and
    implement ``run(args, ctx)``; seed-style tools may instead override
    ``get_openai_tool_schema()`` and ``execute_tool(instance_id, parameters, **kwargs)``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    config_model: ClassVar[type[ToolConfig] | None] = None

    def __init__(self, config: dict[str, Any] | BaseModel | None = None) -> None:
        raw = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
        #: the config as a dict (seed style: ``self.config.get("api_key")``)
        self.config: dict[str, Any] = raw
        self.settings: Any = None
        if self.config_model is not None:
            try:
                self.settings = self.config_model.model_validate(raw)
            except ValidationError as exc:
                raise ConfigError(f"invalid config for tool {type(self).__name__}: {exc}") from exc
            self.config = self.settings.model_dump()

    # ---- schema

    def get_openai_tool_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def get_anthropic_tool_schema(self) -> dict[str, Any]:
        return openai_to_anthropic(self.get_openai_tool_schema())

    @property
    def tool_name(self) -> str:
        return str(self.get_openai_tool_schema()["function"]["name"])

    def _schema(self) -> dict[str, Any]:
        params: dict[str, Any] = self.get_openai_tool_schema()["function"].get("parameters", {})
        return params

    # ---- execution

    async def execute(self, args: Any, context: ToolContext | None = None) -> ToolResult:
        """Validate ``args`` and run the tool; never raises for tool-level failures."""
        context = context or ToolContext()
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError as exc:
                return ToolResult.fail(
                    f"Tool `{self.tool_name}`: arguments are not valid JSON ({exc}). "
                    "Pass a JSON object."
                )
        if not isinstance(args, dict):
            return ToolResult.fail(
                f"Tool `{self.tool_name}`: arguments must be a JSON object, "
                f"got {type(args).__name__}."
            )
        problem = validate_arguments(self.tool_name, self._schema(), args)
        if problem is not None:
            return ToolResult.fail(problem)
        try:
            result = await self.execute_tool(context.instance_id, args, context=context)
        except ToolError as exc:
            return ToolResult.fail(str(exc))
        except RemoteError as exc:
            return ToolResult.fail(f"Tool `{self.tool_name}` failed: {exc.message}")
        except SandboxError:
            raise  # infrastructure: the orchestrator records it on the trajectory
        except Exception as exc:  # a bug in the tool must not kill the trajectory
            return ToolResult.fail(f"Tool `{self.tool_name}` raised {type(exc).__name__}: {exc}")
        if isinstance(result, str):
            return ToolResult(success=True, output=cap_text(result))
        if len(result.output) > MAX_RESULT_CHARS:
            result.output = cap_text(result.output)
        if result.error is not None and len(result.error) > MAX_RESULT_CHARS:
            result.error = cap_text(result.error)
        return result

    async def execute_tool(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> ToolResult | str:
        """Seed-compatible entry point; the default calls :meth:`run`."""
        context = kwargs.get("context")
        if not isinstance(context, ToolContext):
            context = ToolContext(instance_id=instance_id)
        return await self.run(parameters, context)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult | str:
        raise NotImplementedError(f"{type(self).__name__} implements neither run nor execute_tool")


# ---- argument validation (the JSON-schema subset tool schemas use)

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _check(name: str, schema: dict[str, Any], value: Any) -> str | None:
    where = f"argument `{name}`"
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_type_ok(value, k) for k in kinds):
        want = " or ".join(kinds)
        if schema.get("type") == "array" and "items" in schema:
            want = f"array of {schema['items'].get('type', 'values')}"
        return (
            f"{where} must be {want}, got {_describe(value)} {json.dumps(value, default=str)[:80]}"
        )
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(v) for v in schema["enum"])
        return f"{where} must be one of {allowed}, got {json.dumps(value, default=str)[:80]}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{where} must be >= {schema['minimum']}, got {value}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{where} must be <= {schema['maximum']}, got {value}"
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            problem = _check(f"{name}[{i}]", schema["items"], item)
            if problem:
                return problem
    return None


def validate_arguments(tool: str, schema: dict[str, Any], args: dict[str, Any]) -> str | None:
    """The first problem with ``args`` as a message naming the argument, or None."""
    props: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in args or args[name] is None:
            return f"Tool `{tool}`: missing required argument `{name}`."
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(args) - set(props))
        if unknown:
            return (
                f"Tool `{tool}`: unknown argument `{unknown[0]}`; "
                f"accepted: {', '.join(props) or 'none'}."
            )
    for name, value in args.items():
        if name in props and value is not None:
            problem = _check(name, props[name], value)
            if problem:
                return f"Tool `{tool}`: {problem}."
    return None
