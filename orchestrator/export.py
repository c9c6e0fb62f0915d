"""``agentic-rollout export``: trajectories as SFT data, filtered by outcome.

Formats (one row per trajectory):

* ``messages`` - JSONL ``{"id", "messages", "tools", "reward", "status"}``: OpenAI chat messages
  in the shape Hugging Face chat templates and TRL's SFTTrainer take: assistant
  ``tool_calls=[{"id", "type": "function", "function": {"name", "arguments": {...}}}]`` with the
  arguments as an object, tool results as ``{"role": "tool", "tool_call_id", "name",
  "content"}``, and ``tools`` as the JSON schemas the model was offered.
* ``sharegpt`` - JSONL ``{"conversations": [{"from", "value"}], "system", "tools"}`` with
  LLaMA-Factory's roles ``human``/``gpt``/``function_call``/``observation``.
* ``parquet`` - the ``messages`` rows written by the ``datasets`` library. Arrow needs one
  schema for every row, so here tool-call arguments (and ``tools``) are JSON strings - the
  OpenAI wire form, which chat templates also accept.

``--where "status=completed and reward>=1"`` keeps the trajectories that match: comparisons
``= == != > >= < <=`` on ``status, reward, turns, tokens, tool_calls, errors, agent, id,
duration`` (and ``metadata.KEY``), joined by ``and`` / ``or`` / ``not`` and parentheses.
A filter that does not parse is refused with the column where it fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.exceptions import ConfigError
from orchestrator.exceptions import FilterError as FilterError  # noqa: PLC0414 - defined here before
from orchestrator.trajectory import Trajectory
from orchestrator.viewer import load_run
from tools.registry import default_registry

FORMATS = ("messages", "sharegpt", "parquet")

# ---- the filter language


FIELDS = {
    "status": lambda t: t.status.value,
    "reward": lambda t: t.reward,
    "turns": lambda t: t.turns,
    "tokens": lambda t: t.usage.total_tokens,
    "tool_calls": lambda t: len(t.get_tool_calls()),
    "errors": lambda t: len(t.errors),
    "agent": lambda t: t.agent_type,
    "id": lambda t: t.request_id,
    "duration": lambda t: t.duration,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<op>==|!=|>=|<=|=|>|<)|(?P<paren>[()])|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<word>[A-Za-z0-9_.\-+]+))"
)
Predicate = Callable[[Trajectory], bool]


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokens(expr: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        if expr[pos:].strip() == "":
            break
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            start = len(expr) - len(expr[pos:].lstrip())
            raise FilterError(_where_msg(expr, start, f"unexpected character {expr[start]!r}"))
        kind = m.lastgroup or "word"
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


def _where_msg(expr: str, pos: int, why: str) -> str:
    return f"--where does not parse at column {pos + 1}: {why}\n  {expr}\n  {' ' * pos}^"


class _Parser:
    """expr := term ('or' term)* ; term := factor ('and' factor)* ;
    factor := 'not' factor | '(' expr ')' | FIELD OP VALUE"""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.toks = _tokens(expr)
        self.i = 0

    def fail(self, why: str) -> FilterError:
        pos = self.toks[self.i].pos if self.i < len(self.toks) else len(self.expr)
        return FilterError(_where_msg(self.expr, pos, why))

    def peek_word(self, word: str) -> bool:
        return (
            self.i < len(self.toks)
            and self.toks[self.i].kind == "word"
            and self.toks[self.i].text.lower() == word
        )

    def parse(self) -> Predicate:
        if not self.toks:
            raise self.fail("the filter is empty")
        pred = self.or_()
        if self.i < len(self.toks):
            raise self.fail(f"expected 'and', 'or' or the end, got {self.toks[self.i].text!r}")
        return pred

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.peek_word("or"):
            self.i += 1
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else (lambda t: any(p(t) for p in parts))

    def and_(self) -> Predicate:
        parts = [self.factor()]
        while self.peek_word("and"):
            self.i += 1
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda t: all(p(t) for p in parts))

    def factor(self) -> Predicate:
        if self.i >= len(self.toks):
            raise self.fail("expected a comparison such as reward>=1")
        tok = self.toks[self.i]
        if self.peek_word("not"):
            self.i += 1
            inner = self.factor()
            return lambda t: not inner(t)
        if tok.kind == "paren" and tok.text == "(":
            self.i += 1
            inner = self.or_()
            if self.i >= len(self.toks) or self.toks[self.i].text != ")":
                raise self.fail("expected ')'")
            self.i += 1
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        tok = self.toks[self.i]
        if tok.kind != "word":
            raise self.fail(f"expected a field name, got {tok.text!r}")
        getter = _getter(tok.text)
        if getter is None:
            raise self.fail(
                f"unknown field {tok.text!r}; fields: {', '.join(FIELDS)}, metadata.KEY"
            )
        self.i += 1
        if self.i >= len(self.toks) or self.toks[self.i].kind != "op":
            raise self.fail(f"expected an operator (= != > >= < <=) after {tok.text!r}")
        op = self.toks[self.i].text
        self.i += 1
        if self.i >= len(self.toks) or self.toks[self.i].kind not in ("word", "str"):
            raise self.fail(f"expected a value after {op!r}")
        raw = self.toks[self.i]
        self.i += 1
        value = _value(raw)
        return _compare(getter, op, value)


def _getter(name: str) -> Callable[[Trajectory], Any] | None:
    if name in FIELDS:
        return FIELDS[name]
    if name.startswith("metadata.") and len(name) > len("metadata."):
        key = name[len("metadata.") :]
        return lambda t: t.metadata.get(key)
    return None


def _value(tok: _Tok) -> Any:
    if tok.kind == "str":
        return tok.text[1:-1]
    if tok.text.lower() in ("none", "null"):
        return None
    if tok.text.lower() in ("true", "false"):
        return tok.text.lower() == "true"
    try:
        return float(tok.text)
    except ValueError:
        return tok.text


def _compare(getter: Callable[[Trajectory], Any], op: str, value: Any) -> Predicate:
    def pred(t: Trajectory) -> bool:
        left = getter(t)
        if op in ("=", "=="):
            return bool(left == value or (left is not None and str(left) == str(value)))
        if op == "!=":
            return not (left == value or (left is not None and str(left) == str(value)))
        if left is None or value is None:
            return False  # no reward is neither above nor below a threshold
        a: float | str
        b: float | str
        try:
            a, b = float(left), float(value)
        except (TypeError, ValueError):
            a, b = str(left), str(value)  # compared as text, e.g. ids
        return bool(
            {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]  # type: ignore[operator]
        )

    return pred


def parse_where(expr: str | None) -> Predicate:
    """The predicate of a ``--where`` expression (everything when ``expr`` is empty/None)."""
    if expr is None or not expr.strip():
        return lambda t: True
    return _Parser(expr).parse()


# ---- rows


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def sft_messages(traj: Trajectory, *, arguments_as_json: bool = False) -> list[dict[str, Any]]:
    """The conversation in chat-template form: every tool call has an id, every tool result
    names its call and its tool, arguments are objects (or JSON strings when asked)."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(traj.to_messages()):
        msg: dict[str, Any] = {"role": m.get("role"), "content": m.get("content")}
        if msg["content"] is not None and not isinstance(msg["content"], str):
            msg["content"] = json.dumps(msg["content"], ensure_ascii=False)
        if m.get("tool_calls"):
            calls = []
            for j, c in enumerate(m["tool_calls"]):
                fn = c.get("function") or {}
                cid = c.get("id") or f"call_{i}_{j}"
                names[cid] = str(fn.get("name"))
                args = _arguments(fn.get("arguments"))
                if arguments_as_json:
                    args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
                calls.append(
                    {
                        "id": cid,
                        "type": "function",
                        "function": {"name": fn.get("name"), "arguments": args},
                    }
                )
            msg["tool_calls"] = calls
        if msg["role"] == "tool":
            cid = m.get("tool_call_id") or ""
            msg["tool_call_id"] = cid
            msg["name"] = m.get("name") or names.get(cid, "")
        out.append(msg)
    return out


def _tools(traj: Trajectory) -> list[dict[str, Any]]:
    """The tool schemas: the ones recorded on the trajectory, else the built-in schemas of the
    tools it called (a chat template renders them into the system turn)."""
    tools = traj.metadata.get("tools")
    if isinstance(tools, list):
        return list(tools)

    registry = default_registry()
    used = sorted(
        {s.tool_name for s in traj.get_tool_calls() if s.tool_name and s.tool_name in registry}
    )
    by_name = {s["function"]["name"]: s for s in registry.openai_schemas()}
    return [by_name[n] for n in used if n in by_name]


def messages_row(traj: Trajectory, *, arguments_as_json: bool = False) -> dict[str, Any]:
    tools: Any = _tools(traj)
    if arguments_as_json:
        tools = json.dumps(tools, ensure_ascii=False)
    return {
        "id": traj.request_id,
        "messages": sft_messages(traj, arguments_as_json=arguments_as_json),
        "tools": tools,
        "reward": traj.reward,
        "status": traj.status.value,
    }


def _normalise_for_arrow(row: dict[str, Any]) -> dict[str, Any]:
    """Every message with the same keys, so one Arrow schema fits every row."""
    msgs = []
    for m in row["messages"]:
        msgs.append(
            {
                "role": m["role"],
                "content": m.get("content"),
                "tool_calls": m.get("tool_calls"),
                "tool_call_id": m.get("tool_call_id"),
                "name": m.get("name"),
            }
        )
    return {**row, "messages": msgs, "reward": None if row["reward"] is None else row["reward"]}


SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation"}


def sharegpt_row(traj: Trajectory) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT: one ``function_call`` turn per call, ``observation`` results."""
    system = ""
    turns: list[dict[str, str]] = []
    for m in sft_messages(traj):
        role = m["role"]
        if role == "system":
            system = m["content"] or ""
            continue
        if role == "assistant" and m.get("tool_calls"):
            if m.get("content"):
                turns.append({"from": "gpt", "value": m["content"]})
            for c in m["tool_calls"]:
                turns.append(
                    {
                        "from": "function_call",
                        "value": json.dumps(
                            c["function"],
                            ensure_ascii=False,
                        ),
                    }
                )
            continue
        turns.append({"from": SHAREGPT_ROLES.get(role, "human"), "value": m["content"] or ""})
    return {
        "id": traj.request_id,
        "conversations": turns,
        "system": system,
        "tools": json.dumps(_tools(traj), ensure_ascii=False),
        "reward": traj.reward,
        "status": traj.status.value,
    }


@dataclass
class ExportResult:
    written: int
    skipped: int
    bad_lines: int
    output: Path


def export(
    source: str | Path, output: str | Path, *, fmt: str = "messages", where: str | None = None
) -> ExportResult:
    """Write the trajectories of ``source`` (a run folder or JSONL) matching ``where``."""

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    keep = parse_where(where)  # before reading anything: a bad filter fails fast
    run = load_run(source)
    chosen = [t for t in run.trajectories if keep(t)]
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        try:
            import datasets
        except ImportError:
            raise ConfigError(
                "--format parquet needs the `datasets` library: "
                "pip install 'agentic-rollout[datasets]'"
            ) from None
        rows = [_normalise_for_arrow(messages_row(t, arguments_as_json=True)) for t in chosen]
        datasets.Dataset.from_list(rows).to_parquet(str(out))
    else:
        make = messages_row if fmt == "messages" else sharegpt_row
        with open(out, "w", encoding="utf-8") as f:
            for t in chosen:
                f.write(json.dumps(make(t), ensure_ascii=False) + "\n")
    return ExportResult(
        written=len(chosen),
        skipped=len(run.trajectories) - len(chosen),
        bad_lines=len(run.bad_lines),
        output=out,
    )
