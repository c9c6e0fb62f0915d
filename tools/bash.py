"""``bash``: run a command in the trajectory's persistent shell session inside the sandbox."""

from __future__ import annotations

import os
import shlex
from typing import Any, ClassVar

from pydantic import Field

from tools.base import AgenticBaseTool, ToolConfig, ToolContext, ToolResult

#: words that run the next word as a command
_WRAPPERS = {
    "sudo",
    "env",
    "nohup",
    "time",
    "command",
    "exec",
    "nice",
    "ionice",
    "xargs",
    "stdbuf",
    "setsid",
    "chroot",
    "doas",
    "builtin",
    "strace",
    "timeout",
    "watch",
}
_SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "eval"}
#: reserved words that keep the parser in command position
_KEYWORDS = {"then", "do", "else", "elif", "if", "while", "until", "!", "{", "}", "time"}
_OPERATOR_CHARS = set(";&|()")
_REDIRECT_CHARS = set("<>&")


class BashConfig(ToolConfig):
    timeout: float = Field(120.0, gt=0, description="default per-call timeout in seconds")
    max_timeout: float = Field(
        600.0,
        gt=0,
        description="largest timeout a call may ask for; a model asking for more gets this, "
        "with a note (the model cannot hold a sandbox longer than the config allows)",
    )
    max_output: int = Field(
        16000, gt=200, description="bytes of output the model sees (head + tail kept)"
    )
    blocked_commands: list[str] = Field(default_factory=list)
    session: str | None = Field(None, description="shell session name (default: the context's)")


def command_words(command: str) -> list[str]:
    """The words of ``command`` that bash would run as commands (best effort, conservative)."""
    text = command.replace("\n", " ; ").replace("$(", " ( ").replace("`", " ` ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: fall back to plain splitting
        tokens = text.split()
    words: list[str] = []
    expect = True  # the next word is in command position
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "`" or set(tok) <= _OPERATOR_CHARS:
            expect = True
        elif set(tok) <= _REDIRECT_CHARS:
            i += 1  # a redirection: skip its target
        elif expect and tok.isdigit() and i < len(tokens) and set(tokens[i]) <= _REDIRECT_CHARS:
            i += 2  # "2>" file
        elif not expect or tok in _KEYWORDS:
            continue
        elif "=" in tok and tok.split("=", 1)[0].isidentifier():
            continue  # VAR=value before the command
        else:
            name = os.path.basename(tok)
            words.append(name)
            expect = False
            rest = tokens[i:]
            if name in _WRAPPERS:
                expect = True
                # the wrapper's options (timeout's duration, env's assignments) are not commands
                while i < len(tokens) and (
                    tokens[i].startswith("-")
                    or (name == "timeout" and tokens[i][:1].isdigit())
                    or (name == "env" and "=" in tokens[i])
                ):
                    i += 1
            elif name == "eval":
                words.extend(command_words(" ".join(rest)))
            elif name in _SHELLS and "-c" in rest and rest.index("-c") + 1 < len(rest):
                words.extend(command_words(rest[rest.index("-c") + 1]))
    return words


class BashExecutorTool(AgenticBaseTool):
    name: ClassVar[str] = "bash"
    description: ClassVar[str] = (
        "Run a bash command in a persistent shell inside the sandbox. The working directory, "
        "environment variables and shell functions persist between calls. stdin is /dev/null "
        "(do not run interactive programs). Long-running servers: start them in the background "
        "with `cmd > log 2>&1 &`. Output is truncated in the middle when it is very long."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "the bash command to run"},
            "timeout": {
                "type": "number",
                "minimum": 0.1,
                "description": "seconds before the command is killed (default from config)",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    }
    config_model: ClassVar[type[ToolConfig]] = BashConfig

    def get_openai_tool_schema(self) -> dict[str, Any]:
        """The schema with this config's timeouts in the words the model reads."""
        cfg: BashConfig = self.settings
        props = self.parameters["properties"]
        timeout = {
            **props["timeout"],
            "description": f"seconds before the command is killed (default {cfg.timeout:g}, "
            f"at most {cfg.max_timeout:g})",
        }
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {**self.parameters, "properties": {**props, "timeout": timeout}},
            },
        }

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        cfg: BashConfig = self.settings
        command: str = args["command"]
        if not command.strip():
            return ToolResult.fail("Tool `bash`: argument `command` is empty.")
        if cfg.blocked_commands:
            blocked = set(cfg.blocked_commands)
            hits = [w for w in command_words(command) if w in blocked]
            if hits:
                return ToolResult.fail(
                    f"Command refused: `{hits[0]}` is blocked by this tool's configuration "
                    f"(blocked_commands: {', '.join(cfg.blocked_commands)}). Nothing was run; "
                    "use a different approach.",
                    blocked=hits[0],
                )
        timeout = float(args.get("timeout") or cfg.timeout)
        note = ""
        if timeout > cfg.max_timeout:
            note = f"[timeout {timeout:g}s exceeds the maximum; using {cfg.max_timeout:g}s]\n"
            timeout = cfg.max_timeout
        sandbox = ctx.require_sandbox()
        result = await sandbox.run(
            command,
            session=cfg.session or ctx.session,
            timeout=timeout,
            max_output=cfg.max_output,  # capped at the source: one elision, an exact count
        )
        body = note + (result.output or "(no output)")
        if not body.endswith("\n"):
            body += "\n"
        if result.timed_out:
            status = [
                f"[command timed out after {timeout:g}s and was killed; output above is partial; "
                "the shell session is still usable (cwd and environment kept)]"
            ]
        elif result.session_ended:
            status = [
                f"[exit code: {result.exit_code}] [the shell exited; a fresh session starts "
                "with the next command]"
            ]
        else:
            status = [f"[exit code: {result.exit_code}]"]
        if result.note:
            status.append(f"[{result.note}]")
        data = result.model_dump()
        data.pop("output")
        return ToolResult(
            success=result.ok,
            output=body + "\n".join(status),
            data=data,
            error=None if result.ok else status[0],
        )
