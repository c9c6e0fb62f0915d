"""How tool calls travel between model and agent: ReAct text, or native function calling."""

from __future__ import annotations

import json
import re
from typing import Any

from agents.config import Decision, ParsedCall
from orchestrator.llm import LLMResponse
from tools.base import ToolResult
from tools.registry import ToolRegistry

_FINAL = re.compile(r"Final Answer\s*:\s*(.*)", re.S | re.I)
_ACTION = re.compile(r"Action\s*:\s*`?([A-Za-z0-9_\-.]+)`?", re.I)
_INPUT = re.compile(r"Action Input\s*:\s*(.*)", re.S | re.I)
_THOUGHT = re.compile(r"Thought\s*:\s*(.*?)(?=\n\s*(?:Action|Final Answer)\s*:|\Z)", re.S | re.I)


def _strip_fence(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\n?", "", text)
        text = re.sub(r"\n?```\s*$", "", text)
    return text.strip()


def parse_arguments(
    name: str, raw: str, tools: ToolRegistry
) -> tuple[dict[str, Any] | None, str | None]:
    """JSON object arguments, or (None, message for the model)."""
    text = _strip_fence(raw) if raw else ""
    if not text:
        return {}, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # a tool with one required string argument may be given the bare text (small models do)
        tool = tools.get_tool(name)
        if tool is not None:
            schema = tool.get_openai_tool_schema()["function"].get("parameters", {})
            required = schema.get("required", [])
            props = schema.get("properties", {})
            if len(required) == 1 and props.get(required[0], {}).get("type") == "string":
                return {required[0]: text.strip("'\"")}, None
        return None, (
            f"The arguments for `{name}` are not valid JSON ({exc.msg} at position "
            f'{exc.pos}). Give a JSON object, e.g. {{"key": "value"}}.'
        )
    if not isinstance(value, dict):
        return None, (
            f"The arguments for `{name}` must be a JSON object, got {type(value).__name__}."
        )
    return value, None


class ReActFormat:
    """Thought / Action / Action Input / Observation, as plain text."""

    native = False

    def instructions(self, tools: ToolRegistry) -> str:
        lines = ["You can use these tools:"]
        for schema in tools.openai_schemas():
            fn = schema["function"]
            params = json.dumps(fn.get("parameters", {}).get("properties", {}))
            summary = (fn.get("description") or "").split("\n")[0]
            lines.append(f"- {fn['name']}: {summary} Arguments (JSON): {params}")
        lines += [
            "",
            "Use exactly this format:",
            "Thought: what you think and what to do next",
            "Action: the tool name, one of [" + ", ".join(tools.names()) + "]",
            'Action Input: the tool arguments as a JSON object, e.g. {"command": "ls"}',
            "Observation: (the tool result is given to you here)",
            "... (Thought/Action/Action Input/Observation can repeat)",
            "Thought: I now know the final answer",
            "Final Answer: the answer to the task",
        ]
        return "\n".join(lines)

    def parse(self, response: LLMResponse, tools: ToolRegistry) -> Decision:
        text = (response.content or "").strip()
        if not text:
            return Decision(
                format_error="Your reply was empty. Reply with a Thought and either an "
                "Action with an Action Input, or a Final Answer."
            )
        text = text.split("\nObservation:")[0]  # never trust an observation the model wrote
        thought_m = _THOUGHT.search(text)
        thought = thought_m.group(1).strip() if thought_m else ""
        action_m = _ACTION.search(text)
        final_m = _FINAL.search(text)
        if action_m and (not final_m or action_m.start() < final_m.start()):
            name = action_m.group(1)
            input_m = _INPUT.search(text, action_m.end())
            raw = input_m.group(1).strip() if input_m else ""
            if final_m and input_m and final_m.start() > input_m.start():
                raw = text[input_m.start(1) : final_m.start()].strip()
            args, error = parse_arguments(name, raw, tools)
            return Decision(
                thought=thought,
                calls=[ParsedCall(name=name, arguments=args, raw_arguments=raw, error=error)],
            )
        if final_m:
            return Decision(thought=thought, final_answer=final_m.group(1).strip())
        cut = (
            " Your reply was cut off by the token limit; be shorter."
            if response.finish_reason == "length"
            else ""
        )
        return Decision(
            format_error=(
                "Invalid format: your reply has neither `Action:` (with `Action Input:`) nor "
                f"`Final Answer:`.{cut} Reply again in the required format."
            )
        )

    def assistant_message(self, response: LLMResponse) -> dict[str, Any]:
        return {"role": "assistant", "content": response.content or ""}

    def observation_messages(
        self, decision: Decision, results: list[ToolResult], texts: list[str]
    ) -> list[dict[str, Any]]:
        return [{"role": "user", "content": f"Observation: {t}"} for t in texts]

    def format_error_message(self, error: str) -> dict[str, Any]:
        return {"role": "user", "content": f"Observation: {error}"}

    def stop(self) -> list[str] | None:
        return ["\nObservation:"]


class NativeFormat:
    """OpenAI tool_calls / Anthropic tool_use: the client does the wire format."""

    native = True

    def instructions(self, tools: ToolRegistry) -> str:
        return ""

    def parse(self, response: LLMResponse, tools: ToolRegistry) -> Decision:
        text = (response.content or "").strip()
        if not response.tool_calls:
            if not text:
                return Decision(
                    format_error="Your reply was empty: call a tool or give your final answer."
                )
            return Decision(final_answer=text)
        calls = []
        for i, call in enumerate(response.tool_calls):
            args, error = parse_arguments(call.name, call.arguments, tools)
            if error and response.finish_reason == "length":
                error += " (your reply was cut off by the token limit)"
            calls.append(
                ParsedCall(
                    name=call.name,
                    arguments=args,
                    raw_arguments=call.arguments,
                    id=call.id or f"call_{i}",
                    error=error,
                )
            )
        return Decision(thought=text, calls=calls)

    def assistant_message(self, response: LLMResponse) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": response.content}
        if response.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in response.tool_calls
            ]
        return message

    def observation_messages(
        self, decision: Decision, results: list[ToolResult], texts: list[str]
    ) -> list[dict[str, Any]]:
        out = [
            {"role": "tool", "tool_call_id": call.id, "content": text}
            for call, text in zip(decision.calls, texts, strict=False)
        ]
        # calls after a terminating one were not run; every tool_call still needs a reply
        for call in decision.calls[len(texts) :]:
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": "Not run: the task ended with an earlier call.",
                }
            )
        return out

    def format_error_message(self, error: str) -> dict[str, Any]:
        return {"role": "user", "content": error}

    def stop(self) -> list[str] | None:
        return None


class JsonFormat(ReActFormat):
    """One JSON object per reply, ``{"action", "action_input", "thought"}``, constrained by a
    JSON schema sent as ``response_format`` (llama.cpp, vLLM and SGLang turn it into a grammar).
    Small models that cannot follow ReAct text still produce well-formed tool calls this way.
    Observations travel as in ReAct (user messages "Observation: ..."), hence the base class."""

    native = False

    def instructions(self, tools: ToolRegistry) -> str:
        lines = ["Tools:"]
        for schema in tools.openai_schemas():
            fn = schema["function"]
            summary = (fn.get("description") or "").split("\n")[0]
            params = json.dumps(fn.get("parameters", {}).get("properties", {}))
            lines.append(f"- {fn['name']}: {summary} Arguments: {params}")
        lines.append('- final_answer: give the answer to the task. Arguments: {"answer": string}')
        lines.append(
            'Reply with one JSON object: {"action": tool name, "action_input": '
            'arguments object, "thought": why}.'
        )
        return "\n".join(lines)

    def response_format(self, tools: ToolRegistry) -> dict[str, Any]:
        # One flat object: "action" is an enum of the tools and "action_input" holds the union of
        # their arguments. (llama-cpp-python does not enforce anyOf schemas; a flat one it does.)
        # Keys of other tools that the union lets in are dropped again in parse().
        names = [*tools.names(), "final_answer"]
        union: dict[str, Any] = {"answer": {"type": "string"}}
        for schema in tools.openai_schemas():
            for key, prop in (
                (schema["function"].get("parameters") or {}).get("properties", {}).items()
            ):
                union.setdefault(
                    key, {k: v for k, v in prop.items() if k in ("type", "enum", "items")}
                )
        return {
            "type": "json_object",
            "schema": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": names},
                    "action_input": {"type": "object", "properties": union},
                    "thought": {"type": "string"},
                },
                "required": ["action", "action_input"],
            },
        }

    def parse(self, response: LLMResponse, tools: ToolRegistry) -> Decision:
        text = _strip_fence(response.content or "")
        if not text:
            return Decision(format_error="Your reply was empty. Reply with one JSON object.")
        try:
            # strict=False: grammar-constrained servers (llama.cpp) let raw newlines into strings
            data = json.loads(text, strict=False)
        except json.JSONDecodeError as exc:
            cut = (
                " (cut off by the token limit; be shorter)"
                if response.finish_reason == "length"
                else ""
            )
            return Decision(
                format_error=f"Your reply is not valid JSON{cut}: {exc.msg} at position {exc.pos}."
            )
        if not isinstance(data, dict) or not isinstance(data.get("action"), str):
            return Decision(format_error='Your reply must be a JSON object with a string "action".')
        thought = str(data.get("thought") or "")
        action_input = data.get("action_input")
        if data["action"] == "final_answer":
            answer = action_input.get("answer") if isinstance(action_input, dict) else action_input
            return Decision(thought=thought, final_answer=str(answer if answer is not None else ""))
        tool = tools.get_tool(data["action"])
        if tool is not None and isinstance(action_input, dict):
            accepted = (tool.get_openai_tool_schema()["function"].get("parameters") or {}).get(
                "properties"
            )
            if accepted:  # drop other tools' keys that the union schema let in
                action_input = {k: v for k, v in action_input.items() if k in accepted}
        raw = json.dumps(action_input) if action_input is not None else "{}"
        args, error = parse_arguments(data["action"], raw, tools)
        return Decision(
            thought=thought,
            calls=[ParsedCall(name=data["action"], arguments=args, raw_arguments=raw, error=error)],
        )

    def stop(self) -> list[str] | None:
        return None


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)


class HermesFormat:
    """Tool calls as ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` inside the
    reply text (Hermes / Qwen / most open models' chat templates), results as ``tool`` messages.

    This is the format of token-level rollouts (the VERL agent loop): the text the model wrote
    is kept verbatim as the assistant message, so the tokens trained on are the tokens sampled.
    A reply without a tool call is the final answer.
    """

    native = False

    def instructions(self, tools: ToolRegistry) -> str:
        specs = "\n".join(
            json.dumps(schema, ensure_ascii=False) for schema in tools.openai_schemas()
        )
        return (
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{specs}\n</tools>\n\n"
            "For each function call, return a json object with function name and arguments "
            "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n\n'
            "When you are done, reply with your final answer and no tool call."
        )

    def parse(self, response: LLMResponse, tools: ToolRegistry) -> Decision:
        text = response.content or ""
        blocks = list(_TOOL_CALL_BLOCK.finditer(text))
        if not blocks:
            if not text.strip():
                return Decision(
                    format_error="Your reply was empty: call a tool or give your final answer."
                )
            return Decision(final_answer=text.strip())
        thought = text[: blocks[0].start()].strip()
        calls = []
        for i, match in enumerate(blocks):
            calls.append(self._call(match, i, tools, cut=response.finish_reason == "length"))
        return Decision(thought=thought, calls=calls)

    def _call(
        self, match: re.Match[str], index: int, tools: ToolRegistry, *, cut: bool
    ) -> ParsedCall:
        raw = match.group(1).strip()
        call_id = f"call_{index}"
        closed = match.group(0).endswith("</tool_call>")
        try:
            data = json.loads(_strip_fence(raw))
        except json.JSONDecodeError as exc:
            why = (
                "it is cut off by the token limit"
                if cut and not closed
                else (f"it is not valid JSON ({exc.msg} at position {exc.pos})")
            )
            return ParsedCall(
                name="?",
                arguments=None,
                raw_arguments=raw,
                id=call_id,
                error=f"Tool call {index + 1} could not be read: {why}. Write "
                '<tool_call>{"name": "<tool>", "arguments": {...}}</tool_call>.',
            )
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return ParsedCall(
                name="?",
                arguments=None,
                raw_arguments=raw,
                id=call_id,
                error=f'Tool call {index + 1} must be a JSON object with a string "name" and an '
                '"arguments" object.',
            )
        arguments = data.get("arguments", data.get("parameters", {}))
        raw_args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        args, error = parse_arguments(data["name"], raw_args, tools)
        return ParsedCall(
            name=data["name"], arguments=args, raw_arguments=raw_args, id=call_id, error=error
        )

    def assistant_message(self, response: LLMResponse) -> dict[str, Any]:
        return {"role": "assistant", "content": response.content or ""}

    def observation_messages(
        self, decision: Decision, results: list[ToolResult], texts: list[str]
    ) -> list[dict[str, Any]]:
        out = [{"role": "tool", "content": text} for text in texts]
        # calls after a terminating one were not run; every call still gets an answer
        out += [
            {"role": "tool", "content": "Not run: the task ended with an earlier call."}
            for _ in decision.calls[len(texts) :]
        ]
        return out

    def format_error_message(self, error: str) -> dict[str, Any]:
        return {"role": "user", "content": error}

    def stop(self) -> list[str] | None:
        return None
