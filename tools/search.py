"""``search``: find text and files in the sandbox, with SWE-agent's output conventions.

Commands: ``search_dir`` (matches per file), ``search_file`` (matching lines of one file),
``find_file`` (names matching a glob) and ``grep`` (matching lines with context across a tree).
The engine is ripgrep when the sandbox has ``rg`` (fast; parsed from ``rg --json``) and the
in-sandbox agent's pure-Python search otherwise, so it works in images without grep or rg.
Patterns are regular expressions; the common syntax is the same for both engines, and a
pattern is validated on the host first so a bad one gets one clear message whichever engine runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator.sandbox.base import ExecResult, Sandbox
from tools.base import AgenticBaseTool, ToolConfig, ToolContext, ToolError, ToolResult

COMMANDS = ("search_dir", "search_file", "find_file", "grep")
#: skipped by both engines (the agent's search skips the same directories)
EXCLUDED_DIRS = (".git", "node_modules", "__pycache__", ".venv")


class SearchConfig(ToolConfig):
    max_results: int = Field(100, gt=0, description="files (search_dir) or lines shown at most")
    search_extensions: list[str] | None = Field(
        None, description="only search files with these extensions, e.g. ['.py', '.md']"
    )
    engine: Literal["auto", "rg", "agent"] = "auto"
    context_lines: int = Field(0, ge=0, le=20, description="default context for grep")
    max_line_length: int = Field(300, gt=20, description="longer matching lines are cut")


@dataclass(frozen=True)
class Skipped:
    """A FIFO, socket or device under the searched path: never read (it could block)."""

    path: str
    kind: str


@dataclass
class Query:
    pattern: str
    path: str
    include: list[str]
    ignore_case: bool
    fixed: bool
    context: int
    cap: int
    #: filled by the engine that ran (the first 100, and how many in all)
    skipped: list[Skipped] = field(default_factory=list)
    skipped_count: int = 0


class Match:
    __slots__ = ("after", "before", "line", "path", "text")

    def __init__(
        self, path: str, line: int, text: str, before: list[str], after: list[str]
    ) -> None:
        self.path, self.line, self.text, self.before, self.after = path, line, text, before, after


class SearchTool(AgenticBaseTool):
    name: ClassVar[str] = "search"
    description: ClassVar[str] = (
        "Search the sandbox. Commands:\n"
        "* search_dir: which files under `path` contain `pattern` (regex), with counts\n"
        "* search_file: the lines of file `path` that contain `pattern`\n"
        "* find_file: files under `path` whose name matches the glob `pattern` (e.g. '*.py')\n"
        "* grep: matching lines with line numbers (and `context` lines) across `path`\n"
        "`include` limits files by glob (e.g. ['*.py']); `ignore_case` and `fixed_string` "
        "(no regex) are optional."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "command": {"type": "string", "enum": list(COMMANDS)},
            "pattern": {"type": "string", "description": "regex (glob for find_file)"},
            "path": {"type": "string", "description": "directory or file (default: workspace)"},
            "include": {"type": "array", "items": {"type": "string"}},
            "context": {"type": "integer", "minimum": 0, "maximum": 20},
            "ignore_case": {"type": "boolean"},
            "fixed_string": {"type": "boolean"},
            "max_results": {"type": "integer", "minimum": 1},
        },
        "required": ["command", "pattern"],
        "additionalProperties": False,
    }
    config_model: ClassVar[type[ToolConfig]] = SearchConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._has_rg: dict[int, bool] = {}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        cfg: SearchConfig = self.settings
        sandbox = ctx.require_sandbox()
        command: str = args["command"]
        pattern: str = args["pattern"]
        if not pattern:
            raise ToolError("Tool `search`: argument `pattern` is empty.")
        path = args.get("path") or ctx.workspace or "."
        limit = min(int(args.get("max_results") or cfg.max_results), 10 * cfg.max_results)
        include = list(args.get("include") or [])
        if cfg.search_extensions and not include:
            include = [f"*{ext}" for ext in cfg.search_extensions]
        ignore_case = bool(args.get("ignore_case"))
        fixed = bool(args.get("fixed_string"))
        try:
            st = await sandbox.stat(path)
        except FileNotFoundError:
            raise ToolError(f"Directory {path} not found") from None
        if command == "find_file":
            if st.type != "directory":
                raise ToolError(f"Directory {path} not found")
            return await self._find_file(sandbox, pattern, path, limit)
        if not fixed:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ToolError(f"Invalid regular expression {pattern!r}: {exc}") from None
        if command == "search_file" and st.type == "other":
            raise ToolError(
                f"{_show(path)} is not a regular file (a FIFO, socket or device): not searched, "
                "reading it could block"
            )
        if command == "search_file" and st.type != "file":
            raise ToolError(f"File {path} not found")
        if command == "search_dir" and st.type != "directory":
            raise ToolError(f"Directory {path} not found")
        context = args.get("context")
        query = Query(
            pattern=pattern,
            path=path,
            include=include,
            ignore_case=ignore_case,
            fixed=fixed,
            context=(cfg.context_lines if context is None else int(context))
            if command == "grep"
            else 0,
            cap=max(limit, 1000) * 10,
        )
        if command == "search_dir":
            if await self._use_rg(sandbox):  # counts only: no per-match JSON to parse
                counts = await self._rg_counts(sandbox, query)
            else:
                counts = {}
                for m in (await self._matches(sandbox, query))[0]:
                    counts[m.path] = counts.get(m.path, 0) + 1
            result = self._render_dir(pattern, path, counts, limit)
        else:
            matches = await self._matches(sandbox, query)
            if command == "search_file":
                result = self._render_file(pattern, path, matches, limit)
            else:
                result = self._render_grep(pattern, path, matches, limit)
        if query.skipped_count:
            result.output += _skipped_note(query)
        return result

    # ---- engines

    async def _use_rg(self, sandbox: Sandbox) -> bool:
        cfg: SearchConfig = self.settings
        if cfg.engine != "auto":
            return cfg.engine == "rg"
        key = id(sandbox)
        if key not in self._has_rg:
            probe = await sandbox.exec(["sh", "-c", "command -v rg"], timeout=10)
            self._has_rg[key] = probe.exit_code == 0
        return self._has_rg[key]

    async def _matches(self, sandbox: Sandbox, q: Query) -> tuple[list[Match], bool]:
        if await self._use_rg(sandbox):
            found, truncated = await self._rg(sandbox, q)
        else:
            res = await sandbox.search(
                q.path,
                q.pattern,
                include=q.include,
                context=q.context,
                max_results=q.cap,
                ignore_case=q.ignore_case,
                fixed_string=q.fixed,
            )
            found = [
                Match(m.path, m.line or 0, m.text or "", list(m.before), list(m.after))
                for m in res.matches
            ]
            truncated = res.truncated
            q.skipped.extend(Skipped(str(s["path"]), str(s["kind"])) for s in res.skipped)
            q.skipped_count += res.skipped_count
        found.sort(key=lambda m: (m.path, m.line))  # one order, whichever engine ran
        return found, truncated

    @staticmethod
    def _rg_argv(q: Query, *mode: str) -> list[str]:
        argv = ["rg", *mode, "--no-config", "--hidden", "--no-ignore", "--sort", "path"]
        for excluded in EXCLUDED_DIRS:
            argv += ["--glob", f"!{excluded}"]
        if q.ignore_case:
            argv.append("--ignore-case")
        if q.fixed:
            argv.append("--fixed-strings")
        if q.context:
            argv += ["--context", str(q.context)]
        for glob in q.include:
            argv += ["--glob", glob]
        return [*argv, "-e", q.pattern, "--", q.path]

    @staticmethod
    async def _run_rg(sandbox: Sandbox, argv: list[str], q: Query) -> ExecResult:
        # --debug: rg skips FIFOs, sockets and devices while walking and says so only there
        res = await sandbox.exec(
            [argv[0], "--debug", *argv[1:]], timeout=300, max_output=64 * 1024 * 1024
        )
        if res.exit_code not in (0, 1):  # 1: no match
            errors = "\n".join(x for x in res.stderr.splitlines() if not x.startswith("DEBUG|"))
            raise ToolError(f"search failed: {_show(errors.strip()[:500])}")
        for m in _RG_SKIPPED.finditer(res.stderr):
            q.skipped_count += 1
            if len(q.skipped) < 100:
                q.skipped.append(Skipped(m.group(1), _RG_KINDS.get(int(m.group(2)), "other")))
        return res

    async def _rg_counts(self, sandbox: Sandbox, q: Query) -> dict[str, int]:
        """Matching lines per file (``rg --count``; NUL after each path)."""
        argv = self._rg_argv(q, "--count", "--with-filename", "--null")
        res = await self._run_rg(sandbox, argv, q)
        # "path\0count\n" per file; a path may hold newlines (never NUL): split on NUL first
        counts: dict[str, int] = {}
        parts = res.stdout.split("\0")
        for k in range(1, len(parts)):
            number, _, _next = parts[k].partition("\n")
            name = parts[k - 1] if k == 1 else parts[k - 1].partition("\n")[2]
            if number.isdigit():
                counts[name] = int(number)
        return counts

    async def _rg(self, sandbox: Sandbox, q: Query) -> tuple[list[Match], bool]:
        argv = self._rg_argv(q, "--json")
        res = await self._run_rg(sandbox, argv, q)
        matches: list[Match] = []
        before: list[str] = []
        last: Match | None = None
        for line in res.stdout.split("\n"):  # not splitlines: JSON may hold U+2028 raw
            try:
                event = json.loads(line)
            except ValueError:
                continue
            kind, data = event.get("type"), event.get("data", {})
            if kind == "begin":
                before, last = [], None
            elif kind == "match":
                text = _rg_text(data.get("lines", {})).rstrip("\n")
                ctx_before = before[-q.context :] if q.context else []
                last = Match(_rg_text(data["path"]), data["line_number"], text, ctx_before, [])
                matches.append(last)
                before = []
                if len(matches) >= q.cap:
                    return matches, True
            elif kind == "context":
                text = _rg_text(data.get("lines", {})).rstrip("\n")
                number = data["line_number"]
                if (
                    last is not None
                    and len(last.after) < q.context
                    and number <= last.line + q.context
                ):
                    last.after.append(text)
                else:
                    before.append(text)
        return matches, res.elided_bytes > 0

    # ---- rendering (SWE-agent's conventions)

    async def _find_file(self, sandbox: Sandbox, pattern: str, path: str, limit: int) -> ToolResult:
        res = await sandbox.search(path, pattern, mode="files", max_results=limit * 10)
        paths = [m.path for m in res.matches]
        if not paths:
            return ToolResult(
                success=True,
                output=f'No matches found for "{pattern}" in {path}',
                data={"files": []},
            )
        shown = [_show(p) for p in paths[:limit]]
        more = (
            f"\n[{len(paths) - limit} more not shown; narrow the pattern]"
            if len(paths) > limit
            else ""
        )
        return ToolResult(
            success=True,
            output=f'Found {len(paths)}{"+" if res.truncated else ""} matches for "{pattern}" '
            f"in {path}:\n" + "\n".join(shown) + more,
            data={"files": paths},
        )

    def _render_dir(
        self, pattern: str, path: str, counts: dict[str, int], limit: int
    ) -> ToolResult:
        if not counts:
            return ToolResult(
                success=True,
                output=f'No matches found for "{pattern}" in {path}',
                data={"files": {}},
            )
        if len(counts) > limit:
            return ToolResult(
                success=True,
                output=f'More than {limit} files matched for "{pattern}" in {path}. Please narrow '
                "your search.",
                data={"files": counts},
            )
        body = "\n".join(f"{_show(p)} ({n} matches)" for p, n in sorted(counts.items()))
        total = sum(counts.values())
        return ToolResult(
            success=True,
            output=f'Found {total} matches for "{pattern}" in {path}:\n{body}\n'
            f'End of matches for "{pattern}" in {path}',
            data={"files": counts},
        )

    def _render_file(
        self, pattern: str, path: str, found: tuple[list[Match], bool], limit: int
    ) -> ToolResult:
        cfg: SearchConfig = self.settings
        matches, _truncated = found
        if not matches:
            return ToolResult(
                success=True,
                output=f'No matches found for "{pattern}" in {path}',
                data={"lines": []},
            )
        if len(matches) > limit:
            return ToolResult(
                success=True,
                output=f'More than {limit} lines matched for "{pattern}" in {path}. Please narrow '
                "your search.",
                data={"lines": [m.line for m in matches]},
            )
        body = "\n".join(f"Line {m.line}:{_cut(m.text, cfg.max_line_length)}" for m in matches)
        return ToolResult(
            success=True,
            output=f'Found {len(matches)} matches for "{pattern}" in {path}:\n{body}\n'
            f'End of matches for "{pattern}" in {path}',
            data={"lines": [m.line for m in matches]},
        )

    def _render_grep(
        self, pattern: str, path: str, found: tuple[list[Match], bool], limit: int
    ) -> ToolResult:
        cfg: SearchConfig = self.settings
        matches, truncated = found
        if not matches:
            return ToolResult(
                success=True,
                output=f'No matches found for "{pattern}" in {path}',
                data={"matches": []},
            )
        out: list[str] = []
        last: tuple[str, int] | None = None  # (path, line) printed last
        for m in matches[:limit]:
            shown_path = _show(m.path)
            first = m.line - len(m.before)
            if last is not None and (last[0] != m.path or first > last[1] + 1):
                out.append("--")  # like grep: separate only blocks that are not contiguous
            for k, text in enumerate(m.before):
                number = first + k
                if last is None or last[0] != m.path or number > last[1]:
                    out.append(f"{shown_path}-{number}-{_cut(text, cfg.max_line_length)}")
            out.append(f"{shown_path}:{m.line}:{_cut(m.text, cfg.max_line_length)}")
            for k, text in enumerate(m.after):
                out.append(f"{shown_path}-{m.line + 1 + k}-{_cut(text, cfg.max_line_length)}")
            last = (m.path, m.line + len(m.after))
        shown = min(limit, len(matches))
        more = len(matches) - shown
        tail = (
            f"\n[{more}{'+' if truncated else ''} more matches not shown; narrow the search]"
            if more or truncated
            else ""
        )
        return ToolResult(
            success=True,
            output=f'Found {len(matches)}{"+" if truncated else ""} matches for "{pattern}" '
            f"in {path}:\n" + "\n".join(out) + tail,
            data={"matches": [{"path": m.path, "line": m.line, "text": m.text} for m in matches]},
        )


def _rg_text(obj: dict[str, Any]) -> str:
    if "text" in obj:
        return str(obj["text"])
    import base64

    return base64.b64decode(obj.get("bytes", "")).decode("utf-8", "replace")


def _cut(text: str, limit: int) -> str:
    """A line as shown: control characters escaped, cut at ``limit``."""
    text = _show(text)
    return text if len(text) <= limit else text[:limit] + " [...]"


#: every character that could end or rewrite a line of our output (tab is harmless)
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\x1b": "\\e"}


def _show(text: str) -> str:
    """``text`` with control characters escaped: a file named ``"a\\nb.py:1:FORGED"`` or a line
    holding ``\\r`` or terminal escapes cannot make up lines of the result."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(
        lambda m: (
            _ESCAPES.get(m.group(), "\\x%02x" % ord(m.group()))
            if ord(m.group()) < 0x100
            else "\\u%04x" % ord(m.group())
        ),
        text,
    )


def _skipped_note(q: Query) -> str:
    names = ", ".join(f"{_show(s.path)} ({s.kind})" for s in q.skipped[:10])
    more = f" and {q.skipped_count - 10} more" if q.skipped_count > 10 else ""
    return (
        f"\n[skipped {q.skipped_count} non-regular file{'s' if q.skipped_count != 1 else ''} "
        f"(FIFO, socket or device; never read, it could block): {names}{more}]"
    )


#: rg --debug's line for a file it does not search because it is not a regular file
_RG_SKIPPED = re.compile(
    r"\|[^|\n]*: ignoring ((?:(?!\nDEBUG\|).)*?): failed to pass subject filter: file type: "
    r"Some\(FileType\(FileType \{ mode: (\d+) \}\)\)",
    re.DOTALL,
)
_RG_KINDS = {
    0o010000: "fifo",
    0o140000: "socket",
    0o020000: "char-device",
    0o060000: "block-device",
}
