"""``str_replace_editor``: view, create and edit files in the sandbox.

Behaviour and messages follow Anthropic's reference ``str_replace_editor`` (the computer-use
``edit.py``), so a model trained on it loses no turn here: ``cat -n`` rendering, clipping at
16000 characters, absolute paths named as ``pathlib`` names them, unique ``old_str``, ±4-line
snippets, ``insert_line`` = insert after that line, per-file undo (``create`` included), extra
argument keys ignored, the reference's checks in its order and its wording.

Two settings of ``semantics``:

* ``preserve`` (default): files keep their bytes outside the edited text. The reference
  expands tabs in the whole file on every edit (silently rewriting Makefiles and tab-indented
  code) and turns CRLF into LF; here tabs are expanded only for display, and a file whose lines
  all end in CRLF is shown and edited with LF, as the reference shows it, and written back with
  CRLF. Undo restores the exact bytes.
* ``reference``: the reference's tab expansion and newline translation, byte for byte (for
  harnesses that grade against it).

``docs/tools.md`` has the conformance table and the remaining deliberate differences. Every read
and write goes through the sandbox's RPC primitives; writes are atomic (temp file + rename in
the agent), so a file is never left half-written.
"""

from __future__ import annotations

import copy
import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator.exceptions import RemoteError
from orchestrator.sandbox.base import FileStat
from tools.base import AgenticBaseTool, ToolConfig, ToolContext, ToolError, ToolResult

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
    semantics: Literal["preserve", "reference"] = Field(
        "preserve",
        description="'preserve': files keep their bytes (tabs, CRLF) outside the edited text; "
        "'reference': the reference tool's tab expansion and newline translation, byte for byte",
    )


def maybe_truncate(content: str, limit: int = MAX_RESPONSE_LEN) -> str:
    return content if len(content) <= limit else content[:limit] + TRUNCATED_MESSAGE


def make_output(
    content: str, descriptor: str, init_line: int = 1, limit: int = MAX_RESPONSE_LEN
) -> str:
    content = maybe_truncate(content, limit).expandtabs()
    numbered = "\n".join(f"{i + init_line:6}\t{line}" for i, line in enumerate(content.split("\n")))
    return f"Here's the result of running `cat -n` on {descriptor}:\n" + numbered + "\n"


def reference_path(path: str) -> str:
    """The path as the reference tool names it (``pathlib``): repeated ``/`` and ``.`` parts
    removed, no trailing ``/``, ``..`` kept. Used in every message and as the undo key."""
    return str(PurePosixPath(path))


def universal_newlines(text: str) -> str:
    """What Python's text-mode read (the reference's ``read_text``) does to line ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_crlf(text: str) -> bool:
    """Every line ends with CRLF (and no lone CR): such a file is shown and edited with LF, as
    the reference tool shows it, and written back with CRLF."""
    crlf = text.count("\r\n")
    return crlf > 0 and crlf == text.count("\n") == text.count("\r")


@dataclass
class _Doc:
    """A file as the commands work on it: ``text`` (newlines as the model sees them), ``raw``
    (its bytes), ``crlf`` (write back with CRLF)."""

    text: str
    raw: bytes
    crlf: bool = False


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
    }
    config_model: ClassVar[type[ToolConfig]] = EditorConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        #: undo history per path (as the reference names it): bytes to write back
        self.history: dict[str, list[bytes]] = {}

    def _schema(self) -> dict[str, Any]:
        """What arguments are checked against before ``run``: the advertised schema, minus what
        the reference tool checks itself later and words its own way (an unknown command is
        reported after the path checks; a ``view_range`` that is not two integers gets the
        reference's message). Keys the schema does not name are ignored, as the reference
        ignores them (models send them)."""
        schema = copy.deepcopy(super()._schema())
        schema["properties"]["command"].pop("enum", None)
        schema["properties"]["view_range"] = {}
        return schema

    @property
    def _reference(self) -> bool:
        return bool(self.settings.semantics == "reference")

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        command: str = args["command"]
        self._stats = {}  # this call's stats: one RPC per path
        path = await self._validate_path(command, args["path"], ctx)
        if command == "view":
            return await self._view(path, args.get("view_range"), ctx)
        if command == "create":
            file_text = args.get("file_text")
            if file_text is None:
                raise ToolError("Parameter `file_text` is required for command: create")
            self._check_extension(path)
            data = file_text.encode("utf-8")
            await self._sandbox_write(path, data, ctx, exclusive=True)
            self._push(path, data)  # as the reference: undo after create writes the text back
            return ToolResult(success=True, output=f"File created successfully at: {path}")
        if command == "str_replace":
            if args.get("old_str") is None:
                raise ToolError("Parameter `old_str` is required for command: str_replace")
            return await self._str_replace(path, args["old_str"], args.get("new_str"), ctx)
        if command == "insert":
            if args.get("insert_line") is None:
                raise ToolError("Parameter `insert_line` is required for command: insert")
            if args.get("new_str") is None:
                raise ToolError("Parameter `new_str` is required for command: insert")
            return await self._insert(path, int(args["insert_line"]), args["new_str"], ctx)
        if command == "undo_edit":
            return await self._undo(path, ctx)
        raise ToolError(
            f"Unrecognized command {command}. The allowed commands for the {self.name} tool are: "
            f"{', '.join(COMMANDS)}"
        )

    # ---- paths

    def _workspace(self, ctx: ToolContext) -> str | None:
        cfg: EditorConfig = self.settings
        root = cfg.workspace or ctx.workspace
        return posixpath.normpath(root) if root else None

    async def _validate_path(self, command: str, raw_path: str, ctx: ToolContext) -> str:
        """The reference's checks in its order (absolute, exists, not for create, directory
        only for view), plus the workspace boundary. Returns the path as the reference names
        it."""
        path = reference_path(raw_path)
        if not path.startswith("/"):
            raise ToolError(
                f"The path {path} is not an absolute path, it should start with `/`. "
                f"Maybe you meant {path}?"
            )
        root = self._workspace(ctx)
        resolved = posixpath.normpath(path)
        if root is not None and not _inside(resolved, root):
            raise ToolError(
                f"The path {resolved} is outside the workspace {root}; only paths under it can "
                "be used."
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
        if st is not None and st.type == "other" and command in COMMANDS:
            # a FIFO would block the read forever, a device could be endless
            raise ToolError(
                f"The path {path} is not a regular file (a FIFO, socket or device); "
                f"`{self.name}` only works on regular files and directories."
            )
        if command == "create" and st is None and root is not None:
            # a parent symlinked out of the workspace is refused too
            parent = posixpath.dirname(path)
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

    async def _read(self, path: str, ctx: ToolContext) -> _Doc:
        cfg: EditorConfig = self.settings
        sandbox = ctx.require_sandbox()
        st = await self._stat(path, ctx)
        if st.size > cfg.max_file_size:
            raise ToolError(
                f"The file {path} is too large ({st.size} bytes; the limit is "
                f"{cfg.max_file_size} bytes). Use `bash` with `grep -n`, `head` or `sed -n` to "
                "read parts of it."
            )
        try:
            raw = await sandbox.read_file(path)
        except RemoteError as exc:  # the reference's wording for a failed read
            raise ToolError(f"Ran into {exc.message} while trying to read {path}") from None
        if b"\x00" in raw[:8192]:
            raise ToolError(
                f"The file {path} appears to be binary ({len(raw)} bytes); `{self.name}` only "
                "works on text files."
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError(
                f"The file {path} is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start}); `{self.name}` only works on UTF-8 files. Use `bash` (e.g. "
                "`iconv` or `sed`) for other encodings."
            ) from None
        if self._reference:
            return _Doc(universal_newlines(text), raw)
        if is_crlf(text):
            return _Doc(text.replace("\r\n", "\n"), raw, crlf=True)
        return _Doc(text, raw)

    async def _sandbox_write(
        self, path: str, data: bytes, ctx: ToolContext, *, exclusive: bool = False
    ) -> None:
        try:
            await ctx.require_sandbox().write_file(path, data, exclusive=exclusive)
        except RemoteError as exc:  # the reference's wording for a failed write
            raise ToolError(f"Ran into {exc.message} while trying to write to {path}") from None

    async def _write(self, path: str, doc: _Doc, text: str, ctx: ToolContext) -> None:
        if doc.crlf:
            text = text.replace("\n", "\r\n")
        await self._sandbox_write(path, text.encode("utf-8"), ctx)

    def _push(self, path: str, previous: bytes) -> None:
        cfg: EditorConfig = self.settings
        stack = self.history.setdefault(path, [])
        stack.append(previous)
        del stack[: max(0, len(stack) - cfg.max_undo)]

    def _edit_input(self, doc: _Doc, *texts: str) -> tuple[str, ...]:
        """The file text and the model's strings as the edit compares them: tab-expanded in
        reference mode (as the reference does), CRLF turned to LF for a CRLF file."""
        if self._reference:
            return tuple(t.expandtabs() for t in (doc.text, *texts))
        if doc.crlf:
            return (doc.text, *(t.replace("\r\n", "\n") for t in texts))
        return (doc.text, *texts)

    def _history_entry(self, doc: _Doc, text: str) -> bytes:
        # the reference keeps the text it edited (tab-expanded, LF); we keep the exact bytes
        return text.encode("utf-8") if self._reference else doc.raw

    # ---- commands

    async def _view(self, path: str, view_range: Any, ctx: ToolContext) -> ToolResult:
        cfg: EditorConfig = self.settings
        sandbox = ctx.require_sandbox()
        st = await self._stat(path, ctx)
        if st.type == "directory":
            if view_range:
                raise ToolError(
                    "The `view_range` parameter is not allowed when `path` points to a directory."
                )
            # the reference runs `find PATH -maxdepth 2 -not -path '*/\.*'`: any path with a
            # part starting with "." is left out, the directory itself included
            hidden = "/." in path
            entries = [] if hidden else await sandbox.list_dir(path, depth=2, include_hidden=False)
            names = [] if hidden else [path, *(e.path for e in entries)]
            listing = "".join(f"{name}\n" for name in names)
            return ToolResult(
                success=True,
                output=f"Here's the files and directories up to 2 levels deep in {path}, "
                f"excluding hidden items:\n{listing}\n",
                data={"entries": [e.path for e in entries]},
            )
        self._stats[path] = st  # _read below needs it again
        content = (await self._read(path, ctx)).text
        init_line = 1
        if view_range:
            if (
                not isinstance(view_range, list)
                or len(view_range) != 2
                or not all(isinstance(i, int) for i in view_range)
            ):
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
        self, path: str, old_str: str, new_str: str | None, ctx: ToolContext
    ) -> ToolResult:
        cfg: EditorConfig = self.settings
        self._check_extension(path)
        doc = await self._read(path, ctx)
        content, old_str, new_str = self._edit_input(doc, old_str, new_str or "")
        occurrences = content.count(old_str)
        if occurrences == 0:
            hint = ""
            if "\t" in content and "\t" not in old_str and old_str in content.expandtabs():
                # the model typed what view showed; the reference would have matched it
                hint = (
                    " The file has tabs, which `view` shows as spaces: write them as tabs in "
                    "`old_str`."
                )
            raise ToolError(
                f"No replacement was performed, old_str `{old_str}` did not appear verbatim in "
                f"{path}.{hint}"
            )
        if occurrences > 1:
            # as the reference: the lines that contain old_str whole (none for a multi-line one)
            lines = [i + 1 for i, line in enumerate(content.split("\n")) if old_str in line]
            raise ToolError(
                f"No replacement was performed. Multiple occurrences of old_str `{old_str}` in "
                f"lines {lines}. Please ensure it is unique"
            )
        new_content = content.replace(old_str, new_str)
        await self._write(path, doc, new_content, ctx)
        self._push(path, self._history_entry(doc, content))
        # the reference crashes here (ValueError: empty separator) after writing, when an
        # empty old_str replaced the empty file's one occurrence; it edited line 1
        replacement_line = content.split(old_str)[0].count("\n") if old_str else 0
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
        doc = await self._read(path, ctx)
        content, new_str = self._edit_input(doc, new_str)
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
        await self._write(path, doc, new_content, ctx)
        self._push(path, self._history_entry(doc, content))
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
        await self._sandbox_write(path, previous, ctx)
        text = previous.decode("utf-8", "replace")
        if is_crlf(text) and not self._reference:
            text = text.replace("\r\n", "\n")  # shown as view shows it
        return ToolResult(
            success=True,
            output=f"Last edit to {path} undone successfully. "
            + make_output(text, path, 1, cfg.max_response_len),
        )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")
