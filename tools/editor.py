"""``str_replace_editor``: view, create and edit files in the sandbox.

Semantics and messages follow Anthropic's reference ``str_replace_editor`` (the computer-use
``edit.py``): ``cat -n`` rendering, absolute paths only, unique ``old_str``, ±4-line snippets,
``insert_line`` = insert after that line, per-file undo. One deliberate difference: the
reference expands tabs in the whole file on every edit, which silently rewrites Makefiles and
tab-indented code; here file bytes are kept and tabs are expanded only for display.

Every read and write goes through the sandbox's RPC primitives; writes are atomic (temp file +
rename in the agent), so a file is never left half-written.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from tools.base import AgenticBaseTool, ToolConfig, ToolContext, ToolError, ToolResult

if TYPE_CHECKING:
    from orchestrator.sandbox.base import FileStat

SNIPPET_LINES = 4
MAX_RESPONSE_LEN = 16000
TRUNCATED_MESSAGE = (
    "<response clipped><NOTE>To save on context only part of this file has been shown to you. "
    "You should retry this tool after you have searched inside the file with `grep -n` in order "
    "to find the line numbers of what you are looking for.</NOTE>"
)
COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")


class EditorConfig(ToolConfig):
    max_file_size: int = Field(10 * 1024 * 1024, gt=0, description="bytes; larger files refused")
    allowed_extensions: list[str] | None = Field(
        None, description="e.g. ['.py', '.md']; None allows every extension"
    )
    workspace: str | None = Field(
        None, description="paths outside this directory are refused (default: the context's)"
    )
    max_response_len: int = Field(MAX_RESPONSE_LEN, gt=100)
    max_undo: int = Field(50, gt=0, description="undo steps kept per file")


def maybe_truncate(content: str, limit: int = MAX_RESPONSE_LEN) -> str:
    return content if len(content) <= limit else content[:limit] + TRUNCATED_MESSAGE


def make_output(
    content: str, descriptor: str, init_line: int = 1, limit: int = MAX_RESPONSE_LEN
) -> str:
    content = maybe_truncate(content, limit).expandtabs()
    numbered = "\n".join(f"{i + init_line:6}\t{line}" for i, line in enumerate(content.split("\n")))
    return f"Here's the result of running `cat -n` on {descriptor}:\n" + numbered + "\n"


class FileEditorTool(AgenticBaseTool):
    _stats: dict[str, FileStat | None]
    name: ClassVar[str] = "str_replace_editor"
    description: ClassVar[str] = (
        "Custom editing tool for viewing, creating and editing files.\n"
        "* State is persistent across command calls and discussions with the user\n"
        "* If `path` is a file, `view` displays the result of applying `cat -n`. If `path` is a "
        "directory, `view` lists non-hidden files and directories up to 2 levels deep\n"
        "* The `create` command cannot be used if the specified `path` already exists as a file\n"
        "* If a `command` generates a long output, it will be truncated and marked with "
        "`<response clipped>`\n"
        "* The `undo_edit` command will revert the last edit made to the file at `path`\n\n"
        "Notes for using the `str_replace` command:\n"
        "* The `old_str` parameter should match EXACTLY one or more consecutive lines from the "
        "original file. Be mindful of whitespaces!\n"
        "* If the `old_str` parameter is not unique in the file, the replacement will not be "
        "performed. Make sure to include enough context in `old_str` to make it unique\n"
        "* The `new_str` parameter should contain the edited lines that should replace the "
        "`old_str`"
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "command": {
                "type": "string",
                "enum": list(COMMANDS),
                "description": "The command to run: view, create, str_replace, insert, undo_edit.",
            },
            "path": {
                "type": "string",
                "description": "Absolute path to file or directory, e.g. `/repo/file.py` or "
                "`/repo`.",
            },
            "file_text": {
                "type": "string",
                "description": "Required for `create`: the content of the file to be created.",
            },
            "old_str": {
                "type": "string",
                "description": "Required for `str_replace`: the string in `path` to replace.",
            },
            "new_str": {
                "type": "string",
                "description": "For `str_replace`: the new string (default: empty, i.e. delete). "
                "Required for `insert`: the string to insert.",
            },
            "insert_line": {
                "type": "integer",
                "description": "Required for `insert`: `new_str` is inserted AFTER this line "
                "(0 inserts at the top).",
            },
            "view_range": {
                "type": "array",
                "items": {"type": "integer"},
                "description": "Optional for `view` of a file: [start, end] line numbers, 1-based; "
                "end -1 means to the end of the file.",
            },
        },
        "required": ["command", "path"],
        "additionalProperties": False,
    }
    config_model: ClassVar[type[ToolConfig]] = EditorConfig

    def __init__(self, config: Any = None) -> None:
        # enum checking happens here, with the reference tool's own message
        super().__init__(config)
        self.history: dict[str, list[bytes]] = {}

    async def execute(self, args: Any, context: ToolContext | None = None) -> ToolResult:
        if isinstance(args, dict) and isinstance(args.get("command"), str):
            command = args["command"]
            if command not in COMMANDS:
                return ToolResult.fail(
                    f"Unrecognized command {command}. The allowed commands for the {self.name} "
                    f"tool are: {', '.join(COMMANDS)}"
                )
        return await super().execute(args, context)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        command: str = args["command"]
        self._stats = {}  # this call's stats: one RPC per path
        path = await self._validate_path(command, args["path"], ctx)
        if command == "view":
            return await self._view(path, args.get("view_range"), ctx)
        if command == "create":
            if args.get("file_text") is None:
                raise ToolError("Parameter `file_text` is required for command: create")
            self._check_extension(path)
            await ctx.require_sandbox().write_file(path, args["file_text"], exclusive=True)
            return ToolResult(success=True, output=f"File created successfully at: {path}")
        if command == "str_replace":
            if args.get("old_str") is None:
                raise ToolError("Parameter `old_str` is required for command: str_replace")
            return await self._str_replace(path, args["old_str"], args.get("new_str") or "", ctx)
        if command == "insert":
            if args.get("insert_line") is None:
                raise ToolError("Parameter `insert_line` is required for command: insert")
            if args.get("new_str") is None:
                raise ToolError("Parameter `new_str` is required for command: insert")
            return await self._insert(path, int(args["insert_line"]), args["new_str"], ctx)
        return await self._undo(path, ctx)  # undo_edit (commands are checked in execute)

    # ---- paths

    def _workspace(self, ctx: ToolContext) -> str | None:
        cfg: EditorConfig = self.settings
        root = cfg.workspace or ctx.workspace
        return posixpath.normpath(root) if root else None

    async def _validate_path(self, command: str, path: str, ctx: ToolContext) -> str:
        root = self._workspace(ctx)
        if not path.startswith("/"):
            suggestion = posixpath.join(root or "/", path)
            raise ToolError(
                f"The path {path} is not an absolute path, it should start with `/`. "
                f"Maybe you meant {suggestion}?"
            )
        path = posixpath.normpath(path)
        if root is not None and not _inside(path, root):
            raise ToolError(
                f"The path {path} is outside the workspace {root}; only paths under it can be used."
            )
        sandbox = ctx.require_sandbox()
        try:
            st = await sandbox.stat(path)
        except FileNotFoundError:
            st = None
        self._stats[path] = st
        if st is not None and root is not None and st.realpath and not _inside(st.realpath, root):
            raise ToolError(
                f"The path {path} resolves to {st.realpath}, outside the workspace {root} "
                "(a symlink pointing out of it); only paths under it can be used."
            )
        if st is None and command != "create":
            raise ToolError(f"The path {path} does not exist. Please provide a valid path.")
        if st is not None and command == "create":
            raise ToolError(
                f"File already exists at: {path}. Cannot overwrite files using command `create`."
            )
        if st is not None and st.type == "directory" and command != "view":
            raise ToolError(
                f"The path {path} is a directory and only the `view` command can be used on "
                "directories"
            )
        if command == "create" and st is None:
            parent = posixpath.dirname(path)
            if root is not None:
                # a parent symlinked out of the workspace is refused too
                try:
                    pst = await sandbox.stat(parent)
                except FileNotFoundError:
                    pst = None
                if pst is not None and pst.realpath and not _inside(pst.realpath, root):
                    raise ToolError(
                        f"The path {path} resolves outside the workspace {root} (its directory "
                        f"{parent} is a symlink to {pst.realpath})."
                    )
        return path

    def _check_extension(self, path: str) -> None:
        cfg: EditorConfig = self.settings
        if cfg.allowed_extensions is None:
            return
        ext = posixpath.splitext(path)[1]
        if ext not in cfg.allowed_extensions:
            raise ToolError(
                f"Files with extension `{ext or '(none)'}` cannot be edited with this tool: "
                f"{path}. "
                f"Allowed extensions: {', '.join(cfg.allowed_extensions)}."
            )

    # ---- file content

    async def _stat(self, path: str, ctx: ToolContext) -> FileStat:
        """The stat taken when the path was validated in this call, else a fresh one."""
        st = getattr(self, "_stats", {}).pop(path, None)
        return st if st is not None else await ctx.require_sandbox().stat(path)

    async def _read(self, path: str, ctx: ToolContext) -> tuple[str, bytes]:
        cfg: EditorConfig = self.settings
        sandbox = ctx.require_sandbox()
        st = await self._stat(path, ctx)
        if st.size > cfg.max_file_size:
            raise ToolError(
                f"The file {path} is too large ({st.size} bytes; the limit is "
                f"{cfg.max_file_size} bytes). Use `bash` with `grep -n`, `head` or `sed -n` to "
                "read parts of it."
            )
        raw = await sandbox.read_file(path)
        if b"\x00" in raw[:8192]:
            raise ToolError(
                f"The file {path} appears to be binary ({len(raw)} bytes); `{self.name}` only "
                "works on text files."
            )
        try:
            return raw.decode("utf-8"), raw
        except UnicodeDecodeError as exc:
            raise ToolError(
                f"The file {path} is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start}); `{self.name}` only works on UTF-8 files. Use `bash` (e.g. "
                "`iconv` or `sed`) for other encodings."
            ) from None

    async def _write(self, path: str, text: str, ctx: ToolContext) -> None:
        await ctx.require_sandbox().write_file(path, text.encode("utf-8"))

    def _push(self, path: str, previous: bytes) -> None:
        cfg: EditorConfig = self.settings
        stack = self.history.setdefault(path, [])
        stack.append(previous)
        del stack[: max(0, len(stack) - cfg.max_undo)]

    # ---- commands

    async def _view(self, path: str, view_range: list[int] | None, ctx: ToolContext) -> ToolResult:
        cfg: EditorConfig = self.settings
        sandbox = ctx.require_sandbox()
        st = await self._stat(path, ctx)
        if st.type == "directory":
            if view_range:
                raise ToolError(
                    "The `view_range` parameter is not allowed when `path` points to a directory."
                )
            entries = await sandbox.list_dir(path, depth=2, include_hidden=False)
            listing = "\n".join([path, *(e.path for e in entries)])
            return ToolResult(
                success=True,
                output=f"Here's the files and directories up to 2 levels deep in {path}, "
                f"excluding hidden items:\n{listing}\n",
                data={"entries": [e.path for e in entries]},
            )
        self._stats[path] = st  # _read below needs it again
        content, _raw = await self._read(path, ctx)
        init_line = 1
        if view_range is not None:
            if len(view_range) != 2:
                raise ToolError("Invalid `view_range`. It should be a list of two integers.")
            lines = content.split("\n")
            n_lines = len(lines)
            init_line, final_line = view_range
            if init_line < 1 or init_line > n_lines:
                raise ToolError(
                    f"Invalid `view_range`: {view_range}. Its first element `{init_line}` should "
                    f"be within the range of lines of the file: {[1, n_lines]}"
                )
            if final_line > n_lines:
                raise ToolError(
                    f"Invalid `view_range`: {view_range}. Its second element `{final_line}` "
                    f"should be smaller than the number of lines in the file: `{n_lines}`"
                )
            if final_line != -1 and final_line < init_line:
                raise ToolError(
                    f"Invalid `view_range`: {view_range}. Its second element `{final_line}` "
                    f"should be larger or equal than its first `{init_line}`"
                )
            selected = (
                lines[init_line - 1 :] if final_line == -1 else lines[init_line - 1 : final_line]
            )
            content = "\n".join(selected)
        return ToolResult(
            success=True,
            output=make_output(content, path, init_line, cfg.max_response_len),
        )

    async def _str_replace(
        self, path: str, old_str: str, new_str: str, ctx: ToolContext
    ) -> ToolResult:
        cfg: EditorConfig = self.settings
        self._check_extension(path)
        if old_str == "":
            raise ToolError(
                "Parameter `old_str` must not be empty: it has to match text in the file. To add "
                "text use `insert`; to write a new file use `create`."
            )
        if old_str == new_str:
            raise ToolError("No replacement was performed: `old_str` and `new_str` are identical.")
        content, raw = await self._read(path, ctx)
        occurrences = content.count(old_str)
        if occurrences == 0:
            raise ToolError(
                f"No replacement was performed, old_str `{old_str}` did not appear verbatim in "
                f"{path}."
            )
        if occurrences > 1:
            lines = [i + 1 for i, line in enumerate(content.split("\n")) if old_str in line]
            if not lines:  # a multi-line old_str: report where each occurrence starts
                lines, start = [], 0
                while (pos := content.find(old_str, start)) >= 0:
                    lines.append(content.count("\n", 0, pos) + 1)
                    start = pos + 1
            raise ToolError(
                f"No replacement was performed. Multiple occurrences of old_str `{old_str}` in "
                f"lines {lines}. Please ensure it is unique"
            )
        new_content = content.replace(old_str, new_str)
        await self._write(path, new_content, ctx)
        self._push(path, raw)
        replacement_line = content.split(old_str)[0].count("\n")
        start_line = max(0, replacement_line - SNIPPET_LINES)
        end_line = replacement_line + SNIPPET_LINES + new_str.count("\n")
        snippet = "\n".join(new_content.split("\n")[start_line : end_line + 1])
        return ToolResult(
            success=True,
            output=f"The file {path} has been edited. "
            + make_output(snippet, f"a snippet of {path}", start_line + 1, cfg.max_response_len)
            + "Review the changes and make sure they are as expected. Edit the file again if "
            "necessary.",
        )

    async def _insert(
        self, path: str, insert_line: int, new_str: str, ctx: ToolContext
    ) -> ToolResult:
        cfg: EditorConfig = self.settings
        self._check_extension(path)
        content, raw = await self._read(path, ctx)
        lines = content.split("\n")
        n_lines = len(lines)
        if insert_line < 0 or insert_line > n_lines:
            raise ToolError(
                f"Invalid `insert_line` parameter: {insert_line}. It should be within the range "
                f"of lines of the file: {[0, n_lines]}"
            )
        new_lines = new_str.split("\n")
        new_content = "\n".join(lines[:insert_line] + new_lines + lines[insert_line:])
        snippet_lines = (
            lines[max(0, insert_line - SNIPPET_LINES) : insert_line]
            + new_lines
            + lines[insert_line : insert_line + SNIPPET_LINES]
        )
        await self._write(path, new_content, ctx)
        self._push(path, raw)
        return ToolResult(
            success=True,
            output=f"The file {path} has been edited. "
            + make_output(
                "\n".join(snippet_lines),
                "a snippet of the edited file",
                max(1, insert_line - SNIPPET_LINES + 1),
                cfg.max_response_len,
            )
            + "Review the changes and make sure they are as expected (correct indentation, no "
            "duplicate lines, etc). Edit the file again if necessary.",
        )

    async def _undo(self, path: str, ctx: ToolContext) -> ToolResult:
        cfg: EditorConfig = self.settings
        stack = self.history.get(path)
        if not stack:
            raise ToolError(f"No edit history found for {path}.")
        previous = stack.pop()
        await ctx.require_sandbox().write_file(path, previous)
        return ToolResult(
            success=True,
            output=f"Last edit to {path} undone successfully. "
            + make_output(previous.decode("utf-8", "replace"), path, 1, cfg.max_response_len),
        )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
