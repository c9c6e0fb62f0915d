"""``calculator``: exact and scientific arithmetic on the host, by safe AST evaluation.

Only literals, arithmetic operators, list literals and whitelisted functions/constants are
evaluated; names, attributes, subscripts, comprehensions, lambdas and keyword tricks are
refused. Integer powers and factorials are checked *before* they are computed, so ``9**9**9``
is an error message, not a hung process. No sandbox is needed.
"""

from __future__ import annotations

import ast
import math
import operator
import statistics
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from tools.base import AgenticBaseTool, ToolConfig, ToolContext, ToolError, ToolResult

Number = int | float

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp,
    "log": _log,
    "ln": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "hypot": math.hypot,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "trunc": math.trunc,
    "factorial": math.factorial,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "comb": math.comb,
    "perm": math.perm,
    "pow": math.pow,
    "min": min,
    "max": max,
    "sum": sum,
    "mean": statistics.fmean,
    "median": statistics.median,
    "mode": statistics.mode,
    "stdev": statistics.stdev,
    "pstdev": statistics.pstdev,
    "variance": statistics.variance,
    "pvariance": statistics.pvariance,
}


class CalculatorConfig(ToolConfig):
    precision: int = Field(12, ge=1, le=50, description="significant digits shown for floats")
    max_digits: int = Field(10000, gt=0, description="largest integer result, in digits")
    max_expression_length: int = Field(2000, gt=0)
    history_size: int = Field(100, ge=0)


class CalculatorTool(AgenticBaseTool):
    name: ClassVar[str] = "calculator"
    description: ClassVar[str] = (
        "Evaluate a math expression exactly: + - * / // % **, parentheses, constants "
        f"({', '.join(CONSTANTS)}), functions ({', '.join(sorted(FUNCTIONS))}). Lists for "
        "statistics: mean([1, 2, 3]). Example: sqrt(16) + factorial(4)."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. '2 + 3 * 4'"}},
        "required": ["expression"],
        "additionalProperties": False,
    }
    config_model: ClassVar[type[ToolConfig]] = CalculatorConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        #: (expression, formatted result) of this instance's successful evaluations
        self.history: list[tuple[str, str]] = []

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        cfg: CalculatorConfig = self.settings
        expression: str = args["expression"].strip()
        value = evaluate(
            expression, max_digits=cfg.max_digits, max_length=cfg.max_expression_length
        )
        text = format_number(value, cfg.precision)
        if cfg.history_size:
            self.history.append((expression, text))
            del self.history[: max(0, len(self.history) - cfg.history_size)]
        return ToolResult(
            success=True,
            output=f"{expression} = {text}",
            data={"expression": expression, "result": value, "formatted": text},
        )


def format_number(value: Any, precision: int) -> str:
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return format(value, f".{precision}g")
    if isinstance(value, list):
        return "[" + ", ".join(format_number(v, precision) for v in value) + "]"
    return str(value)


def _short(expression: str) -> str:
    return repr(expression if len(expression) <= 60 else expression[:57] + "...")


def evaluate(expression: str, *, max_digits: int = 10000, max_length: int = 2000) -> Any:
    """Evaluate ``expression`` safely; raises ToolError with a message for the model."""
    if not expression:
        raise ToolError("Tool `calculator`: argument `expression` is empty.")
    if len(expression) > max_length:
        raise ToolError(f"Expression too long ({len(expression)} characters; limit {max_length}).")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"Invalid expression {_short(expression)}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ToolError(f"Expression too complex to parse: {_short(expression)}") from None
    try:
        return _Evaluator(max_digits).visit(tree.body)
    except ToolError:
        raise
    except ZeroDivisionError:
        raise ToolError(f"Division by zero in {_short(expression)}.") from None
    except OverflowError:
        raise ToolError(f"Result too large to represent in {_short(expression)}.") from None
    except (ValueError, TypeError, statistics.StatisticsError) as exc:
        raise ToolError(f"Math error in {_short(expression)}: {exc}") from None
    except RecursionError:
        raise ToolError(f"Expression too deeply nested: {_short(expression)}") from None


class _Evaluator:
    def __init__(self, max_digits: int) -> None:
        self.max_digits = max_digits

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ToolError(f"Only numbers are allowed, not {node.value!r}.")
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.visit(node.left), self.visit(node.right)
            self._numbers(left, right)
            if isinstance(node.op, ast.Pow):
                self._check_pow(left, right)
            return self._checked(_BINOPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            operand = self.visit(node.operand)
            self._numbers(operand)
            return _UNARY[type(node.op)](operand)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.visit(e) for e in node.elts]
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise ToolError(f"`{node.id}` is a function: call it, e.g. {node.id}(2).")
            raise ToolError(
                f"Name {node.id!r} is not allowed. Constants: {', '.join(CONSTANTS)}; "
                f"functions: {', '.join(sorted(FUNCTIONS))}."
            )
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ToolError(
                    f"Function {what!r} is not allowed. Allowed: {', '.join(sorted(FUNCTIONS))}."
                )
            if node.keywords:
                raise ToolError("Keyword arguments are not supported.")
            name = node.func.id
            args = [self.visit(a) for a in node.args]
            if name == "factorial" and args and isinstance(args[0], int) and args[0] > 3000:
                raise ToolError(f"factorial({args[0]}) is too large (limit 3000).")
            if (
                name in ("comb", "perm")
                and len(args) == 2
                and isinstance(args[0], int)
                and args[0] > 100000
            ):
                raise ToolError(f"{name}({args[0]}, ...) is too large (limit 100000).")
            return self._checked(FUNCTIONS[name](*args))
        if isinstance(node, ast.Attribute):
            raise ToolError("Attribute access is not allowed.")
        raise ToolError(
            f"Unsupported syntax: {type(node).__name__} is not allowed in an expression."
        )

    @staticmethod
    def _numbers(*values: Any) -> None:
        for v in values:
            if isinstance(v, list):
                raise ToolError("Arithmetic on lists is not supported; use sum(), mean(), ...")

    def _check_pow(self, base: Number, exp: Number) -> None:
        if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
            digits = exp * math.log10(abs(base))
            if digits > self.max_digits:
                raise ToolError(
                    f"Exponent too large: {base} ** {exp} would have about {int(digits) + 1} "
                    f"digits (limit {self.max_digits})."
                )

    def _checked(self, value: Any) -> Any:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value.bit_length() > self.max_digits * 3.33
        ):
            raise ToolError(f"Result too large: more than {self.max_digits} digits.")
        if isinstance(value, complex):
            raise ToolError("The result is a complex number, which is not supported.")
        return value
