"""``str_replace_editor`` against a conformance table of Anthropic's reference tool.

The table is written from the reference's documented behaviour (its ``edit.py``: checks and
their order, messages, ``cat -n`` rendering, ``pathlib`` path names, ``find``-style listing,
clipping at 16000 characters, tab expansion and text-mode newline translation). Each call has
the expected observation, and each case the expected file bytes afterwards; where the two modes
differ on purpose the entry is a pair ``(preserve, reference)`` - every such pair is listed in
docs/tools.md. Both modes run against a real sandbox (local for speed, Docker for the claim).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.sandbox.local import LocalSandboxConfig
from tools import FileEditorTool, ToolContext

from .conftest import docker_config

Expect = str | tuple[str, str]  # one value, or (preserve, reference)
ExpectBytes = bytes | tuple[bytes, bytes]

CAT = "Here's the result of running `cat -n` on "
EDITED = "Review the changes and make sure they are as expected. Edit the file again if necessary."
INSERTED = (
    "Review the changes and make sure they are as expected (correct indentation, no duplicate "
    "lines, etc). Edit the file again if necessary."
)
RANGE_TYPE = "Invalid `view_range`. It should be a list of two integers."
CLIPPED = (
    "<response clipped><NOTE>To save on context only part of this file has been shown to you. "
    "You should retry this tool after you have searched inside the file with `grep -n` in order "
    "to find the line numbers of what you are looking for.</NOTE>"
)
LISTING = (
    "Here's the files and directories up to 2 levels deep in {d}{sub}, excluding hidden items:\n"
)


@dataclass
class Call:
    args: dict[str, Any]
    out: Expect
    ok: bool | tuple[bool, bool] = True


@dataclass
class Case:
    name: str
    files: dict[str, bytes]
    calls: list[Call]
    final: dict[str, ExpectBytes] = field(default_factory=dict)


def view(path: str, **kw: Any) -> dict[str, Any]:
    return {"command": "view", "path": path, **kw}


def rep(path: str, old: str | None, new: str | None = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"command": "str_replace", "path": path, **kw}
    if old is not None:
        args["old_str"] = old
    if new is not None:
        args["new_str"] = new
    return args


def undo(path: str) -> dict[str, Any]:
    return {"command": "undo_edit", "path": path}


S_LINES = "\n".join(f"line{i}" for i in range(1, 13)) + "\n"

CASES: list[Case] = [
    Case(
        "view",
        {"a.txt": b"one\ntwo\n\tthree\n"},
        [
            Call(
                view("{d}/a.txt"),
                CAT + "{d}/a.txt:\n     1\tone\n     2\ttwo\n     3\t        three\n     4\t\n",
            ),
            Call(
                view("{d}/a.txt", view_range=[2, 3]),
                CAT + "{d}/a.txt:\n     2\ttwo\n     3\t        three\n",
            ),
            Call(
                view("{d}/a.txt", view_range=[3, -1]),
                CAT + "{d}/a.txt:\n     3\t        three\n     4\t\n",
            ),
            # an empty or null range is no range (the reference tests it for truth)
            Call(
                view("{d}/a.txt", view_range=[]),
                CAT + "{d}/a.txt:\n     1\tone\n     2\ttwo\n     3\t        three\n     4\t\n",
            ),
            Call(
                view("{d}/a.txt", view_range=None),
                CAT + "{d}/a.txt:\n     1\tone\n     2\ttwo\n     3\t        three\n     4\t\n",
            ),
            Call(view("{d}/a.txt", view_range="1,2"), RANGE_TYPE, ok=False),
            Call(view("{d}/a.txt", view_range=[1]), RANGE_TYPE, ok=False),
            Call(view("{d}/a.txt", view_range=[1, "2"]), RANGE_TYPE, ok=False),
            Call(view("{d}/a.txt", view_range={"a": 1, "b": 2}), RANGE_TYPE, ok=False),
            Call(
                view("{d}/a.txt", view_range=[0, 2]),
                "Invalid `view_range`: [0, 2]. Its first element `0` should be within the range "
                "of lines of the file: [1, 4]",
                ok=False,
            ),
            Call(
                view("{d}/a.txt", view_range=[2, 9]),
                "Invalid `view_range`: [2, 9]. Its second element `9` should be smaller than the "
                "number of lines in the file: `4`",
                ok=False,
            ),
            Call(
                view("{d}/a.txt", view_range=[3, 2]),
                "Invalid `view_range`: [3, 2]. Its second element `2` should be larger or equal "
                "than its first `3`",
                ok=False,
            ),
            # keys the tool does not know are ignored, as the reference's **kwargs ignores them
            Call(
                view("{d}/a.txt", view_range=[1, 1], bogus=1, file_text="ignored"),
                CAT + "{d}/a.txt:\n     1\tone\n",
            ),
        ],
    ),
    Case(
        "listing",
        {
            "pkg/mod.py": b"x",
            "pkg/.secret": b"x",
            "pkg/deep/x.py": b"x",
            "pkg/deep/deeper/y.py": b"x",
            ".hid/z": b"x",
            "top.txt": b"x",
        },
        [
            Call(
                view("{d}"),
                LISTING.format(d="{d}", sub="")
                + "{d}\n{d}/pkg\n{d}/pkg/deep\n{d}/pkg/mod.py\n{d}/top.txt\n\n",
            ),
            Call(
                view("{d}//pkg/./"),
                LISTING.format(d="{d}", sub="/pkg")
                + "{d}/pkg\n{d}/pkg/deep\n{d}/pkg/deep/deeper\n{d}/pkg/deep/x.py\n{d}/pkg/mod.py\n\n",
            ),
            # find's filter `-not -path '*/\.*'` drops a hidden directory's whole listing
            Call(view("{d}/.hid"), LISTING.format(d="{d}", sub="/.hid") + "\n"),
            Call(
                view("{d}", view_range=[]),
                LISTING.format(d="{d}", sub="")
                + "{d}\n{d}/pkg\n{d}/pkg/deep\n{d}/pkg/mod.py\n{d}/top.txt\n\n",
            ),
            Call(
                view("{d}", view_range=[1, 2]),
                "The `view_range` parameter is not allowed when `path` points to a directory.",
                ok=False,
            ),
            Call(
                rep("{d}/pkg", "a"),
                "The path {d}/pkg is a directory and only the `view` command can be used on "
                "directories",
                ok=False,
            ),
        ],
    ),
    Case(
        "create",
        {},
        [
            Call(
                {"command": "create", "path": "{d}/new.txt", "file_text": "hello\n"},
                "File created successfully at: {d}/new.txt",
            ),
            Call(
                {"command": "create", "path": "{d}/new.txt", "file_text": "again"},
                "File already exists at: {d}/new.txt. Cannot overwrite files using command "
                "`create`.",
                ok=False,
            ),
            Call(
                {"command": "create", "path": "{d}/other.txt"},
                "Parameter `file_text` is required for command: create",
                ok=False,
            ),
            # the reference keeps the created text as the first history entry
            Call(
                undo("{d}/new.txt"),
                "Last edit to {d}/new.txt undone successfully. "
                + CAT
                + "{d}/new.txt:\n     1\thello\n     2\t\n",
            ),
            Call(undo("{d}/new.txt"), "No edit history found for {d}/new.txt.", ok=False),
        ],
        {"new.txt": b"hello\n"},
    ),
    Case(
        "str_replace",
        {"s.py": S_LINES.encode()},
        [
            Call(
                rep("{d}/s.py", "line6\n", "six\nSIX\n"),
                "The file {d}/s.py has been edited. " + CAT + "a snippet of {d}/s.py:\n"
                "     2\tline2\n     3\tline3\n     4\tline4\n     5\tline5\n     6\tsix\n"
                "     7\tSIX\n     8\tline7\n     9\tline8\n    10\tline9\n    11\tline10\n"
                "    12\tline11\n" + EDITED,
            ),
            Call(
                rep("{d}/s.py", "nope"),
                "No replacement was performed, old_str `nope` did not appear verbatim in {d}/s.py.",
                ok=False,
            ),
            Call(
                rep("{d}/s.py", "line1"),
                "No replacement was performed. Multiple occurrences of old_str `line1` in lines "
                "[1, 11, 12, 13]. Please ensure it is unique",
                ok=False,
            ),
            # an empty old_str occurs everywhere: every line is listed
            Call(
                rep("{d}/s.py", "", "x"),
                "No replacement was performed. Multiple occurrences of old_str `` in lines "
                f"{list(range(1, 15))}. Please ensure it is unique",
                ok=False,
            ),
            Call(
                rep("{d}/s.py", None),
                "Parameter `old_str` is required for command: str_replace",
                ok=False,
            ),
        ],
        {"s.py": S_LINES.replace("line6\n", "six\nSIX\n").encode()},
    ),
    Case(
        "str_replace_edges",
        {"m.txt": b"a\nb\na\nb\n", "e.txt": b"", "same.txt": b"keep\n", "d.txt": b"x = 1\ny = 2\n"},
        [
            # a multi-line old_str found twice: the reference lists the lines containing it
            # whole, i.e. none
            Call(
                rep("{d}/m.txt", "a\nb", "c"),
                "No replacement was performed. Multiple occurrences of old_str `a\nb` in lines "
                "[]. Please ensure it is unique",
                ok=False,
            ),
            # in an empty file the empty string occurs once: the replacement happens
            Call(
                rep("{d}/e.txt", "", "filled"),
                "The file {d}/e.txt has been edited. " + CAT + "a snippet of {d}/e.txt:\n"
                "     1\tfilled\n" + EDITED,
            ),
            # old_str == new_str: done (a no-op write), and undoable
            Call(
                rep("{d}/same.txt", "keep", "keep"),
                "The file {d}/same.txt has been edited. " + CAT + "a snippet of {d}/same.txt:\n"
                "     1\tkeep\n     2\t\n" + EDITED,
            ),
            Call(
                undo("{d}/same.txt"),
                "Last edit to {d}/same.txt undone successfully. " + CAT + "{d}/same.txt:\n"
                "     1\tkeep\n     2\t\n",
            ),
            # new_str omitted deletes
            Call(
                rep("{d}/d.txt", "y = 2\n"),
                "The file {d}/d.txt has been edited. " + CAT + "a snippet of {d}/d.txt:\n"
                "     1\tx = 1\n     2\t\n" + EDITED,
            ),
        ],
        {"m.txt": b"a\nb\na\nb\n", "e.txt": b"filled", "same.txt": b"keep\n", "d.txt": b"x = 1\n"},
    ),
    Case(
        "insert",
        {"i.txt": b"l1\nl2\nl3\n"},
        [
            Call(
                {"command": "insert", "path": "{d}/i.txt", "insert_line": 0, "new_str": "top"},
                "The file {d}/i.txt has been edited. " + CAT + "a snippet of the edited file:\n"
                "     1\ttop\n     2\tl1\n     3\tl2\n     4\tl3\n     5\t\n" + INSERTED,
            ),
            Call(
                {"command": "insert", "path": "{d}/i.txt", "insert_line": 5, "new_str": "end"},
                "The file {d}/i.txt has been edited. " + CAT + "a snippet of the edited file:\n"
                "     2\tl1\n     3\tl2\n     4\tl3\n     5\t\n     6\tend\n" + INSERTED,
            ),
            Call(
                {"command": "insert", "path": "{d}/i.txt", "insert_line": 9, "new_str": "x"},
                "Invalid `insert_line` parameter: 9. It should be within the range of lines of "
                "the file: [0, 6]",
                ok=False,
            ),
            Call(
                {"command": "insert", "path": "{d}/i.txt", "insert_line": -1, "new_str": "x"},
                "Invalid `insert_line` parameter: -1. It should be within the range of lines of "
                "the file: [0, 6]",
                ok=False,
            ),
            Call(
                {"command": "insert", "path": "{d}/i.txt", "new_str": "x"},
                "Parameter `insert_line` is required for command: insert",
                ok=False,
            ),
            Call(
                {"command": "insert", "path": "{d}/i.txt", "insert_line": 1},
                "Parameter `new_str` is required for command: insert",
                ok=False,
            ),
            Call(
                undo("{d}/i.txt"),
                "Last edit to {d}/i.txt undone successfully. " + CAT + "{d}/i.txt:\n"
                "     1\ttop\n     2\tl1\n     3\tl2\n     4\tl3\n     5\t\n",
            ),
        ],
        {"i.txt": b"top\nl1\nl2\nl3\n"},
    ),
    Case(
        "paths",
        {"n.txt": b"v = 1\n"},
        [
            Call(
                view("n.txt"),
                "The path n.txt is not an absolute path, it should start with `/`. Maybe you "
                "meant n.txt?",
                ok=False,
            ),
            Call(
                view("./x//y/"),
                "The path x/y is not an absolute path, it should start with `/`. Maybe you meant "
                "x/y?",
                ok=False,
            ),
            Call(
                view("{d}/missing"),
                "The path {d}/missing does not exist. Please provide a valid path.",
                ok=False,
            ),
            # the path is checked before the command, as in the reference
            Call(
                {"command": "delete", "path": "{d}/missing"},
                "The path {d}/missing does not exist. Please provide a valid path.",
                ok=False,
            ),
            Call(
                {"command": "delete", "path": "{d}/n.txt"},
                "Unrecognized command delete. The allowed commands for the str_replace_editor "
                "tool are: view, create, str_replace, insert, undo_edit",
                ok=False,
            ),
            Call(view("{d}/n.txt/"), CAT + "{d}/n.txt:\n     1\tv = 1\n     2\t\n"),
            # `//`, `/./` and a trailing `/` name the same file, in messages and for undo
            Call(
                rep("{d}//n.txt", "1", "2"),
                "The file {d}/n.txt has been edited. " + CAT + "a snippet of {d}/n.txt:\n"
                "     1\tv = 2\n     2\t\n" + EDITED,
            ),
            Call(
                undo("{d}/./n.txt/"),
                "Last edit to {d}/n.txt undone successfully. " + CAT + "{d}/n.txt:\n"
                "     1\tv = 1\n     2\t\n",
            ),
        ],
        {"n.txt": b"v = 1\n"},
    ),
    Case(
        "clipping",
        {
            "big.txt": b"x" * 16000 + b"\nmore",
            "exact.txt": b"y" * 16000,
            "uni.txt": "é".encode() * 16001,
            "tabs.txt": b"\t" * 16001,
        },
        [
            # the content is clipped before numbering, so a cut mid-file keeps line 1 only
            Call(
                view("{d}/big.txt"), CAT + "{d}/big.txt:\n     1\t" + "x" * 16000 + CLIPPED + "\n"
            ),
            Call(view("{d}/exact.txt"), CAT + "{d}/exact.txt:\n     1\t" + "y" * 16000 + "\n"),
            # characters, not bytes
            Call(
                view("{d}/uni.txt"), CAT + "{d}/uni.txt:\n     1\t" + "é" * 16000 + CLIPPED + "\n"
            ),
            # clipped before tabs are expanded
            Call(
                view("{d}/tabs.txt"),
                CAT + "{d}/tabs.txt:\n     1\t" + " " * 128000 + CLIPPED + "\n",
            ),
        ],
    ),
    Case(
        "tabs",
        {"t.py": b"k = 1\n\tindented\n"},
        [
            Call(
                view("{d}/t.py"),
                CAT + "{d}/t.py:\n     1\tk = 1\n     2\t        indented\n     3\t\n",
            ),
            Call(
                rep("{d}/t.py", "k = 1", "k = 2"),
                "The file {d}/t.py has been edited. " + CAT + "a snippet of {d}/t.py:\n"
                "     1\tk = 2\n     2\t        indented\n     3\t\n" + EDITED,
            ),
            Call(
                rep("{d}/t.py", "\tindented", "\tdone"),
                "The file {d}/t.py has been edited. " + CAT + "a snippet of {d}/t.py:\n"
                "     1\tk = 2\n     2\t        done\n     3\t\n" + EDITED,
            ),
            Call(
                {"command": "insert", "path": "{d}/t.py", "insert_line": 3, "new_str": "\tz"},
                "The file {d}/t.py has been edited. " + CAT + "a snippet of the edited file:\n"
                "     1\tk = 2\n     2\t        done\n     3\t\n     4\t        z\n" + INSERTED,
            ),
            # undo restores what the edit started from: the exact bytes (preserve) or the
            # reference's tab-expanded text
            Call(
                undo("{d}/t.py"),
                "Last edit to {d}/t.py undone successfully. " + CAT + "{d}/t.py:\n"
                "     1\tk = 2\n     2\t        done\n     3\t\n",
            ),
        ],
        {"t.py": (b"k = 2\n\tdone\n", b"k = 2\n        done\n")},
    ),
    Case(
        "tabs_typed_as_spaces",
        {"t.py": b"\tx = 1\n"},
        [
            # the model copies what view showed (spaces); the file has a tab
            Call(
                rep("{d}/t.py", "        x = 1", "        x = 2"),
                (
                    "No replacement was performed, old_str `        x = 1` did not appear "
                    "verbatim in {d}/t.py. The file has tabs, which `view` shows as spaces: write "
                    "them as tabs in `old_str`.",
                    "The file {d}/t.py has been edited. " + CAT + "a snippet of {d}/t.py:\n"
                    "     1\t        x = 2\n     2\t\n" + EDITED,
                ),
                ok=(False, True),
            ),
            # the hint is right: with the tab, preserve mode edits
            Call(
                rep("{d}/t.py", "\tx = 1", "\tx = 3"),
                (
                    "The file {d}/t.py has been edited. " + CAT + "a snippet of {d}/t.py:\n"
                    "     1\t        x = 3\n     2\t\n" + EDITED,
                    "No replacement was performed, old_str `        x = 1` did not appear verbatim "
                    "in {d}/t.py.",
                ),
                ok=(True, False),
            ),
        ],
        {"t.py": (b"\tx = 3\n", b"        x = 2\n")},
    ),
    Case(
        "crlf",
        {"w.txt": b"a\r\nb\r\n"},
        [
            Call(view("{d}/w.txt"), CAT + "{d}/w.txt:\n     1\ta\n     2\tb\n     3\t\n"),
            Call(
                rep("{d}/w.txt", "a\nb", "z\nb"),
                "The file {d}/w.txt has been edited. " + CAT + "a snippet of {d}/w.txt:\n"
                "     1\tz\n     2\tb\n     3\t\n" + EDITED,
            ),
            # an old_str written with CRLF: the reference compares it with LF text
            Call(
                rep("{d}/w.txt", "z\r\nb", "y\r\nb"),
                (
                    "The file {d}/w.txt has been edited. " + CAT + "a snippet of {d}/w.txt:\n"
                    "     1\ty\n     2\tb\n     3\t\n" + EDITED,
                    "No replacement was performed, old_str `z\r\nb` did not appear verbatim in "
                    "{d}/w.txt.",
                ),
                ok=(True, False),
            ),
        ],
        {"w.txt": (b"y\r\nb\r\n", b"z\nb\n")},
    ),
    Case(
        "mixed_newlines",
        {"m.txt": b"a\r\nb\n", "cr.txt": b"a\rb"},
        [
            Call(
                view("{d}/m.txt"),
                (
                    CAT + "{d}/m.txt:\n     1\ta\r\n     2\tb\n     3\t\n",
                    CAT + "{d}/m.txt:\n     1\ta\n     2\tb\n     3\t\n",
                ),
            ),
            Call(
                view("{d}/cr.txt"),
                (CAT + "{d}/cr.txt:\n     1\ta\rb\n", CAT + "{d}/cr.txt:\n     1\ta\n     2\tb\n"),
            ),
            Call(
                {"command": "insert", "path": "{d}/m.txt", "insert_line": 0, "new_str": "top"},
                (
                    "The file {d}/m.txt has been edited. " + CAT + "a snippet of the edited "
                    "file:\n     1\ttop\n     2\ta\r\n     3\tb\n     4\t\n" + INSERTED,
                    "The file {d}/m.txt has been edited. " + CAT + "a snippet of the edited "
                    "file:\n     1\ttop\n     2\ta\n     3\tb\n     4\t\n" + INSERTED,
                ),
            ),
        ],
        {"m.txt": (b"top\na\r\nb\n", b"top\na\nb\n"), "cr.txt": b"a\rb"},
    ),
    Case(
        "unicode",
        {"u.txt": "héllo wörld ✓\nzwei\n".encode()},
        [
            Call(
                rep("{d}/u.txt", "wörld", "мир"),
                "The file {d}/u.txt has been edited. " + CAT + "a snippet of {d}/u.txt:\n"
                "     1\théllo мир ✓\n     2\tzwei\n     3\t\n" + EDITED,
            ),
            Call(view("{d}/u.txt", view_range=[2, 2]), CAT + "{d}/u.txt:\n     2\tzwei\n"),
        ],
        {"u.txt": "héllo мир ✓\nzwei\n".encode()},
    ),
]


def _fill(value: Any, d: str) -> Any:
    if isinstance(value, str):
        return value.replace("{d}", d)
    if isinstance(value, list):
        return [_fill(v, d) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, d) for k, v in value.items()}
    return value


def _pick(value: Any, mode: str) -> Any:
    return value[mode == "reference"] if isinstance(value, tuple) else value


async def _conform(sandbox: Any, mode: str) -> None:
    root = f"{(await sandbox.info())['cwd']}/conformance-{uuid.uuid4().hex[:8]}"
    failures: list[str] = []
    for case in CASES:
        d = f"{root}/{case.name}"
        await sandbox.mkdir(d)
        for rel, data in case.files.items():
            await sandbox.write_file(f"{d}/{rel}", data)
        editor = FileEditorTool({"semantics": mode})  # one tool per case: its own history
        ctx = ToolContext(sandbox=sandbox)
        for i, call in enumerate(case.calls):
            result = await editor.execute(_fill(call.args, d), ctx)
            want = _fill(_pick(call.out, mode), d)
            if result.output != want or result.success != _pick(call.ok, mode):
                failures.append(
                    f"{case.name}[{i}] {call.args}: success={result.success}\n"
                    f"  got:  {result.output[:300]!r}\n  want: {want[:300]!r}"
                )
        for rel, data in case.final.items():
            got = await sandbox.read_file(f"{d}/{rel}")
            if got != _pick(data, mode):
                failures.append(f"{case.name}: {rel} holds {got!r}, want {_pick(data, mode)!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("mode", ["preserve", "reference"])
async def test_editor_conformance_local(mode: str) -> None:
    async with LocalSandboxConfig().build() as sandbox:
        await _conform(sandbox, mode)


@pytest.mark.docker
@pytest.mark.parametrize("mode", ["preserve", "reference"])
async def test_editor_conformance_docker(mode: str) -> None:
    async with docker_config().build() as sandbox:
        await _conform(sandbox, mode)


@pytest.mark.docker
async def test_editor_refuses_a_fifo_instead_of_blocking() -> None:
    async with docker_config().build() as sandbox:
        root = (await sandbox.info())["cwd"]
        await sandbox.run(f"mkfifo {root}/pipe")
        ctx = ToolContext(sandbox=sandbox)
        for args in (
            view(f"{root}/pipe"),
            rep(f"{root}/pipe", "a", "b"),
            {"command": "insert", "path": f"{root}/pipe", "insert_line": 0, "new_str": "x"},
        ):
            result = await FileEditorTool().execute(args, ctx)
            assert not result.success and result.output == (
                f"The path {root}/pipe is not a regular file (a FIFO, socket or device); "
                "`str_replace_editor` only works on regular files and directories."
            )
