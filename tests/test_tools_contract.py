"""The tool contract, registry and schemas; the calculator (host-side, no sandbox)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from orchestrator.exceptions import ConfigError, SandboxConnectionError
from tools import (
    AgenticBaseTool,
    BashExecutorTool,
    CalculatorTool,
    FileEditorTool,
    SearchTool,
    SubmitTool,
    ToolContext,
    ToolRegistry,
    ToolResult,
    create_openai_tool_schema,
    default_registry,
    get_global_tool_registry,
    register_tool,
)

# ---- a seed-style custom tool works unchanged


class WebSearchTool(AgenticBaseTool):
    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.api_key = self.config.get("api_key")

    def get_openai_tool_schema(self) -> dict[str, Any]:
        return create_openai_tool_schema(
            name="web_search",
            description="Search the web",
            parameters={
                "query": {"type": "string", "description": "query"},
                "max_results": {"type": "integer", "description": "max", "default": 5},
            },
            required=["query"],
        )

    async def execute_tool(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> Any:
        return ToolResult(success=True, result={"query": parameters["query"], "key": self.api_key})


async def test_seed_style_tool_registers_and_runs() -> None:
    registry = ToolRegistry()
    registry.register(WebSearchTool, {"api_key": "k"})
    assert registry.names() == ["web_search"]
    result = await registry.execute("web_search", {"query": "q"})
    assert result.success and result.result == {"query": "q", "key": "k"}
    assert result.observation() == '{"query": "q", "key": "k"}'
    bad = await registry.execute("web_search", {"query": 3})
    assert bad.output == "Tool `web_search`: argument `query` must be string, got integer 3."


def test_schemas_in_openai_and_anthropic_formats() -> None:
    registry = default_registry()
    assert registry.names() == ["bash", "calculator", "search", "str_replace_editor", "submit"]
    openai = {s["function"]["name"]: s for s in registry.openai_schemas()}
    assert openai["bash"]["type"] == "function"
    assert openai["bash"]["function"]["parameters"]["required"] == ["command"]
    anthropic = {s["name"]: s for s in registry.anthropic_schemas()}
    assert set(anthropic["str_replace_editor"]) == {"name", "description", "input_schema"}
    assert anthropic["str_replace_editor"]["input_schema"]["properties"]["command"]["enum"] == [
        "view",
        "create",
        "str_replace",
        "insert",
        "undo_edit",
    ]


async def test_argument_validation_names_the_argument() -> None:
    calc = CalculatorTool()
    cases = {
        "missing": ({}, "Tool `calculator`: missing required argument `expression`."),
        "type": (
            {"expression": 5},
            "Tool `calculator`: argument `expression` must be string, got integer 5.",
        ),
        "unknown": (
            {"expression": "1", "x": 1},
            "Tool `calculator`: unknown argument `x`; accepted: expression.",
        ),
    }
    for name, (args, message) in cases.items():
        result = await calc.execute(args)
        assert not result.success and result.output == message, name
    assert (await calc.execute("not json")).output.startswith(
        "Tool `calculator`: arguments are not valid JSON"
    )
    assert (await calc.execute('{"expression": "1+1"}')).output == "1+1 = 2"
    assert (
        await calc.execute([1])
    ).output == "Tool `calculator`: arguments must be a JSON object, got list."
    # the editor follows the reference tool instead: extra keys are ignored, and view_range and
    # the command are checked after the path, in its words (tests/test_editor_conformance.py)
    editor = FileEditorTool()
    r = await editor.execute({"command": "view", "path": "/x", "view_range": "1,2", "extra": 1})
    assert r.output == "This tool needs a sandbox, and none is attached to this run."
    r = await editor.execute({"command": 5, "path": "/x"})
    assert (
        r.output == "Tool `str_replace_editor`: argument `command` must be string, got integer 5."
    )


async def test_unknown_tool_is_a_result() -> None:
    r = await default_registry().execute("rm_rf", {})
    assert not r.success
    assert r.output == (
        "Unknown tool `rm_rf`. Available tools: bash, calculator, search, "
        "str_replace_editor, submit."
    )


async def test_tool_bug_is_a_result_but_infrastructure_failure_raises() -> None:
    class Buggy(AgenticBaseTool):
        name: ClassVar[str] = "buggy"
        parameters: ClassVar[dict[str, Any]] = {
            "type": "object",
            "properties": {"how": {"type": "string"}},
        }

        async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
            if args.get("how") == "infra":
                raise SandboxConnectionError("sandbox x is gone")
            raise KeyError("oops")

    r = await Buggy().execute({})
    assert not r.success and r.output == "Tool `buggy` raised KeyError: 'oops'"
    with pytest.raises(SandboxConnectionError):
        await Buggy().execute({"how": "infra"})


async def test_tools_needing_a_sandbox_say_so() -> None:
    r = await BashExecutorTool().execute({"command": "ls"})
    assert r.output == "This tool needs a sandbox, and none is attached to this run."


def test_registry_fork_gives_fresh_state_and_overrides() -> None:
    base = ToolRegistry()
    base.register(CalculatorTool, {"precision": 4})
    base.register(BashExecutorTool, {"timeout": 10})
    run1 = base.fork({"bash": {"timeout": 30}})
    run2 = base.fork()
    assert run1.get("bash").config["timeout"] == 30 and run2.get("bash").config["timeout"] == 10
    assert run1.get("calculator") is not run2.get("calculator")
    assert base.fork(only=["bash"]).names() == ["bash"]
    with pytest.raises(ConfigError, match="tools_config names unregistered tools: nope"):
        base.fork({"nope": {}})
    with pytest.raises(ConfigError, match="no tool named 'zzz'; registered: bash, calculator"):
        base.get("zzz")


async def test_calculator_history_does_not_leak_between_forks() -> None:
    base = ToolRegistry()
    base.register(CalculatorTool)
    a, b = base.fork(), base.fork()
    await a.execute("calculator", {"expression": "1+1"})
    calc_a = a.get("calculator")
    calc_b = b.get("calculator")
    assert isinstance(calc_a, CalculatorTool) and isinstance(calc_b, CalculatorTool)
    assert calc_a.history == [("1+1", "2")] and calc_b.history == []


def test_global_registry_and_config_errors() -> None:
    registry = get_global_tool_registry()
    assert registry is get_global_tool_registry()
    register_tool(CalculatorTool, {"precision": 5})
    try:
        assert registry.get("calculator").config["precision"] == 5
    finally:
        registry.unregister("calculator")
    with pytest.raises(ConfigError, match="invalid config for tool BashExecutorTool"):
        BashExecutorTool({"timeuot": 3})
    with pytest.raises(ConfigError, match="needs an AgenticBaseTool subclass"):
        ToolRegistry().register(dict)  # type: ignore[arg-type]
    assert isinstance(SearchTool(), SearchTool) and isinstance(SubmitTool(), SubmitTool)


# ---- calculator


@pytest.mark.parametrize(
    ("expression", "output"),
    [
        ("2 + 3 * 4", "2 + 3 * 4 = 14"),
        ("sqrt(16) + factorial(4)", "sqrt(16) + factorial(4) = 28"),
        ("sin(pi/2)", "sin(pi/2) = 1"),
        ("2**100", "2**100 = 1267650600228229401496703205376"),
        ("7 // 2, 7 % 2", "7 // 2, 7 % 2 = [3, 1]"),
        ("mean([1, 2, 3, 4])", "mean([1, 2, 3, 4]) = 2.5"),
        ("median([5, 1, 3])", "median([5, 1, 3]) = 3"),
        ("stdev([2, 4, 4, 4, 5, 5, 7, 9])", "stdev([2, 4, 4, 4, 5, 5, 7, 9]) = 2.1380899353"),
        ("log(8, 2)", "log(8, 2) = 3"),
        ("1/3", "1/3 = 0.333333333333"),
        ("-(-2) ** 2", "-(-2) ** 2 = -4"),
    ],
)
async def test_calculator_values(expression: str, output: str) -> None:
    r = await CalculatorTool().execute({"expression": expression})
    assert r.success and r.output == output


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "9**9**9",
            "Exponent too large: 9 ** 387420489 would have about 369693100 digits (limit 10000).",
        ),
        ("__import__('os')", "Function '__import__' is not allowed. Allowed: abs, acos,"),
        ("().__class__", "Attribute access is not allowed."),
        ("x + 1", "Name 'x' is not allowed. Constants: pi, e, tau, inf;"),
        ("1/0", "Division by zero in '1/0'."),
        ("sqrt(-1)", "Math error in 'sqrt(-1)': math domain error"),
        ("factorial(100000)", "factorial(100000) is too large (limit 3000)."),
        ("2 +", "Invalid expression '2 +': invalid syntax"),
        ("'a' * 3", "Only numbers are allowed, not 'a'."),
        ("[x for x in (1,)]", "Unsupported syntax: ListComp is not allowed in an expression."),
        ("sqrt", "`sqrt` is a function: call it, e.g. sqrt(2)."),
        (
            "(" * 500 + "1" + ")" * 500,
            "Invalid expression '(((((((((((((((((((((((((((((((((((((((((((((((((((((((((...': "
            "too many nested parentheses",
        ),
        ("10.0 ** 400", "Result too large to represent in '10.0 ** 400'."),
    ],
)
async def test_calculator_refusals(expression: str, message: str) -> None:
    calc = CalculatorTool()
    r = await calc.execute({"expression": expression})
    assert not r.success and r.output.startswith(message), r.output
    assert calc.history == []
    assert (await calc.execute({"expression": "1+1"})).output == "1+1 = 2"  # still usable


async def test_calculator_precision_and_history() -> None:
    calc = CalculatorTool({"precision": 3, "history_size": 2})
    assert (await calc.execute({"expression": "pi"})).output == "pi = 3.14"
    await calc.execute({"expression": "2*2"})
    await calc.execute({"expression": "3*3"})
    assert calc.history == [("2*2", "4"), ("3*3", "9")]
