"""bash, str_replace_editor, search and submit against real sandboxes (local and Docker).

Messages are asserted exactly: they are what the model reads.
"""

from __future__ import annotations

import posixpath
from typing import Any

import pytest

from tools import (
    BashExecutorTool,
    FileEditorTool,
    SearchTool,
    SubmitTool,
    ToolContext,
    ToolResult,
)


@pytest.fixture
def ctx(sandbox: Any, scratch: str) -> ToolContext:
    return ToolContext(sandbox=sandbox, workspace=scratch)


async def _ok(tool: Any, ctx: ToolContext, **args: Any) -> ToolResult:
    result: ToolResult = await tool.execute(args, ctx)
    assert result.success, result.output
    return result


async def _fail(tool: Any, ctx: ToolContext, **args: Any) -> str:
    result: ToolResult = await tool.execute(args, ctx)
    assert not result.success, result.output
    return result.output


# ---- bash


async def test_bash_output_exit_code_and_persistence(ctx: ToolContext) -> None:
    bash = BashExecutorTool()
    r = await _ok(bash, ctx, command=f"cd {ctx.workspace} && export A=1 && echo hi")
    assert r.output == "hi\n[exit code: 0]"
    r = await bash.execute({"command": "echo $A; pwd; false"}, ctx)
    assert not r.success and r.output == f"1\n{ctx.workspace}\n[exit code: 1]"
    assert r.data["exit_code"] == 1
    assert (await _ok(bash, ctx, command="true")).output == "(no output)\n[exit code: 0]"


async def test_bash_timeout_line_partial_output_and_recovery(ctx: ToolContext) -> None:
    bash = BashExecutorTool({"timeout": 1})
    r = await bash.execute({"command": "echo partial; sleep 100"}, ctx)
    assert not r.success
    assert r.output.startswith("partial\n")
    assert r.output.endswith(
        "[command timed out after 1s and was killed; output above is partial; the shell session "
        "is still usable (cwd and environment kept)]"
    )
    assert (await _ok(bash, ctx, command="echo back")).output == "back\n[exit code: 0]"


async def test_bash_timeout_argument_is_capped(ctx: ToolContext) -> None:
    bash = BashExecutorTool({"max_timeout": 2})
    r = await bash.execute({"command": "sleep 100", "timeout": 999}, ctx)
    assert r.output.startswith("[timeout 999s exceeds the maximum; using 2s]\n")
    assert r.data["timed_out"]


async def test_bash_output_capped_head_and_tail(ctx: ToolContext) -> None:
    bash = BashExecutorTool({"max_output": 1000})
    r = await _ok(bash, ctx, command="seq 1 100000")
    head, _, rest = r.output.partition("\n[... ")
    assert head.startswith("1\n2\n3\n") and len(head) == 500
    elided, _, tail = rest.partition(" bytes elided ...]\n")
    assert int(elided) == len("".join(f"{i}\n" for i in range(1, 100001))) - 1000
    assert tail.endswith("99999\n100000\n[exit code: 0]") and len(tail) == 500 + len(
        "[exit code: 0]"
    )
    assert r.data["elided_bytes"] == int(elided)


async def test_bash_blocked_commands_by_command_word(ctx: ToolContext) -> None:
    bash = BashExecutorTool({"blocked_commands": ["rm", "sudo"]})
    for command in ("rm -rf x", "ls; /bin/rm x", "echo $(rm x)", "bash -c 'rm x'", "sudo ls"):
        out = await _fail(bash, ctx, command=command)
        assert (
            out.startswith("Command refused: `")
            and "is blocked by this tool's configuration" in out
        )
        assert out.endswith(
            "(blocked_commands: rm, sudo). Nothing was run; use a different approach."
        )
    await _ok(bash, ctx, command=f"touch {ctx.workspace}/keep")
    await _fail(bash, ctx, command=f"rm {ctx.workspace}/keep")
    assert (await _ok(bash, ctx, command=f"ls {ctx.workspace}")).output == "keep\n[exit code: 0]"
    # words that only contain the blocked name are fine
    assert (
        await _ok(bash, ctx, command="echo rm; echo sudo-like")
    ).output == "rm\nsudo-like\n[exit code: 0]"


async def test_bash_bad_input(ctx: ToolContext) -> None:
    bash = BashExecutorTool()
    assert await _fail(bash, ctx, command="   ") == "Tool `bash`: argument `command` is empty."
    assert await _fail(bash, ctx) == "Tool `bash`: missing required argument `command`."
    assert await _fail(bash, ctx, command=["ls"]) == (
        'Tool `bash`: argument `command` must be string, got array ["ls"].'
    )
    r = await bash.execute({"command": "exit 4"}, ctx)
    assert r.output == (
        "(no output)\n[exit code: 4] [the shell exited; a fresh session starts with "
        "the next command]"
    )
    assert (await _ok(bash, ctx, command="echo fresh")).output == "fresh\n[exit code: 0]"


# ---- str_replace_editor


async def test_editor_view_file_and_range(ctx: ToolContext) -> None:
    ed = FileEditorTool()
    path = f"{ctx.workspace}/a.py"
    await _ok(ed, ctx, command="create", path=path, file_text="one\ntwo\n\tthree\nfour\n")
    r = await _ok(ed, ctx, command="view", path=path)
    assert r.output == (
        f"Here's the result of running `cat -n` on {path}:\n"
        "     1\tone\n     2\ttwo\n     3\t        three\n     4\tfour\n     5\t\n"
    )
    r = await _ok(ed, ctx, command="view", path=path, view_range=[2, 3])
    assert r.output == (
        f"Here's the result of running `cat -n` on {path}:\n     2\ttwo\n     3\t        three\n"
    )
    r = await _ok(ed, ctx, command="view", path=path, view_range=[4, -1])
    assert r.output.endswith("     4\tfour\n     5\t\n")
    assert await _fail(ed, ctx, command="view", path=path, view_range=[0, 2]) == (
        "Invalid `view_range`: [0, 2]. Its first element `0` should be within the range of lines "
        "of the file: [1, 5]"
    )
    assert await _fail(ed, ctx, command="view", path=path, view_range=[2, 9]) == (
        "Invalid `view_range`: [2, 9]. Its second element `9` should be smaller than the number of "
        "lines in the file: `5`"
    )
    assert await _fail(ed, ctx, command="view", path=path, view_range=[3, 2]) == (
        "Invalid `view_range`: [3, 2]. Its second element `2` should be larger or equal than its "
        "first `3`"
    )
    assert await _fail(ed, ctx, command="view", path=path, view_range=[1]) == (
        "Invalid `view_range`. It should be a list of two integers."
    )
    # tabs are expanded for display only: the file keeps its tab
    assert (await ctx.require_sandbox().read_file(path)).count(b"\t") == 1


async def test_editor_view_directory(ctx: ToolContext) -> None:
    ed = FileEditorTool()
    root = ctx.workspace
    sandbox = ctx.require_sandbox()
    for rel in ("pkg/mod.py", "pkg/deep/x.py", "pkg/deep/deeper/y.py", ".hidden/z", "top.txt"):
        await sandbox.write_file(f"{root}/{rel}", "x")
    r = await _ok(ed, ctx, command="view", path=root)
    assert r.output == (
        f"Here's the files and directories up to 2 levels deep in {root}, excluding hidden items:\n"
        f"{root}\n{root}/pkg\n{root}/pkg/deep\n{root}/pkg/mod.py\n{root}/top.txt\n\n"
    )
    assert await _fail(ed, ctx, command="view", path=root, view_range=[1, 2]) == (
        "The `view_range` parameter is not allowed when `path` points to a directory."
    )


async def test_editor_create_and_path_rules(ctx: ToolContext) -> None:
    ed = FileEditorTool()
    root = ctx.workspace
    path = f"{root}/new/dir/file.txt"
    assert (await _ok(ed, ctx, command="create", path=path, file_text="hello")).output == (
        f"File created successfully at: {path}"
    )
    assert await _fail(ed, ctx, command="create", path=path, file_text="again") == (
        f"File already exists at: {path}. Cannot overwrite files using command `create`."
    )
    assert await _fail(ed, ctx, command="create", path=f"{root}/x") == (
        "Parameter `file_text` is required for command: create"
    )
    assert await _fail(ed, ctx, command="view", path="new/dir/file.txt") == (
        "The path new/dir/file.txt is not an absolute path, it should start with `/`. Maybe you "
        "meant new/dir/file.txt?"
    )
    assert await _fail(ed, ctx, command="view", path=f"{root}/missing") == (
        f"The path {root}/missing does not exist. Please provide a valid path."
    )
    assert await _fail(ed, ctx, command="str_replace", path=f"{root}/new", old_str="a") == (
        f"The path {root}/new is a directory and only the `view` command can be used on directories"
    )
    assert await _fail(ed, ctx, command="delete", path=path) == (
        "Unrecognized command delete. The allowed commands for the str_replace_editor tool are: "
        "view, create, str_replace, insert, undo_edit"
    )


async def test_editor_workspace_boundary_and_symlinks(ctx: ToolContext) -> None:
    ed = FileEditorTool()
    root = ctx.workspace
    assert await _fail(ed, ctx, command="view", path="/etc/passwd") == (
        f"The path /etc/passwd is outside the workspace {root}; only paths under it can be used."
    )
    escaped = posixpath.normpath(f"{root}/../../etc/passwd")
    assert await _fail(ed, ctx, command="view", path=f"{root}/../../etc/passwd") == (
        f"The path {escaped} is outside the workspace {root}; only paths under it can be used."
    )
    sandbox = ctx.require_sandbox()
    await sandbox.run(f"ln -s /etc {root}/etc-link && ln -s /etc/hostname {root}/host-link")
    assert await _fail(ed, ctx, command="view", path=f"{root}/host-link") == (
        f"The path {root}/host-link resolves to /etc/hostname, outside the workspace {root} "
        "(a symlink pointing out of it); only paths under it can be used."
    )
    assert await _fail(ed, ctx, command="create", path=f"{root}/etc-link/evil", file_text="x") == (
        f"The path {root}/etc-link/evil resolves outside the workspace {root} (its directory "
        f"{root}/etc-link is a symlink to /etc)."
    )
    assert not await sandbox.exists("/etc/evil")


async def test_editor_str_replace(ctx: ToolContext) -> None:
    ed = FileEditorTool()
    path = f"{ctx.workspace}/s.py"
    lines = [f"line{i}" for i in range(1, 13)]
    await _ok(ed, ctx, command="create", path=path, file_text="\n".join(lines) + "\n")
    r = await _ok(
        ed, ctx, command="str_replace", path=path, old_str="line6\n", new_str="six\nSIX\n"
    )
    assert r.output == (
        f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
        f"{path}:\n     2\tline2\n     3\tline3\n     4\tline4\n     5\tline5\n     6\tsix\n"
        "     7\tSIX\n     8\tline7\n     9\tline8\n    10\tline9\n    11\tline10\n"
        "    12\tline11\n"
        "Review the changes and make sure they are as expected. Edit the file again if necessary."
    )
    assert await _fail(ed, ctx, command="str_replace", path=path, old_str="nope") == (
        f"No replacement was performed, old_str `nope` did not appear verbatim in {path}."
    )
    assert await _fail(ed, ctx, command="str_replace", path=path, old_str="line1") == (
        "No replacement was performed. Multiple occurrences of old_str `line1` in lines "
        "[1, 11, 12, 13]. Please ensure it is unique"
    )
    assert await _fail(ed, ctx, command="str_replace", path=path) == (
        "Parameter `old_str` is required for command: str_replace"
    )
    # new_str omitted deletes
    await _ok(ed, ctx, command="str_replace", path=path, old_str="SIX\n")
    assert b"SIX" not in await ctx.require_sandbox().read_file(path)


async def test_editor_insert_and_undo(ctx: ToolContext) -> None:
    ed = FileEditorTool()
    path = f"{ctx.workspace}/i.txt"
    await _ok(ed, ctx, command="create", path=path, file_text="a\nb\nc")
    r = await _ok(ed, ctx, command="insert", path=path, insert_line=0, new_str="top")
    assert r.output == (
        f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
        "the edited file:\n     1\ttop\n     2\ta\n     3\tb\n     4\tc\n"
        "Review the changes and make sure they are as expected (correct indentation, no "
        "duplicate lines, etc). Edit the file again if necessary."
    )
    await _ok(ed, ctx, command="insert", path=path, insert_line=4, new_str="end")
    assert await ctx.require_sandbox().read_file(path) == b"top\na\nb\nc\nend"
    assert await _fail(ed, ctx, command="insert", path=path, insert_line=9, new_str="x") == (
        "Invalid `insert_line` parameter: 9. It should be within the range of lines of the file: "
        "[0, 5]"
    )
    assert await _fail(ed, ctx, command="insert", path=path, new_str="x") == (
        "Parameter `insert_line` is required for command: insert"
    )
    assert await _fail(ed, ctx, command="insert", path=path, insert_line=1) == (
        "Parameter `new_str` is required for command: insert"
    )
    r = await _ok(ed, ctx, command="undo_edit", path=path)
    assert r.output == (
        f"Last edit to {path} undone successfully. Here's the result of running "
        f"`cat -n` on {path}:\n     1\ttop\n     2\ta\n     3\tb\n     4\tc\n"
    )
    await _ok(ed, ctx, command="undo_edit", path=path)
    assert await ctx.require_sandbox().read_file(path) == b"a\nb\nc"
    # as in the reference, create is the first history entry: undo writes the created text
    await _ok(ed, ctx, command="undo_edit", path=path)
    assert await ctx.require_sandbox().read_file(path) == b"a\nb\nc"
    assert await _fail(ed, ctx, command="undo_edit", path=path) == (
        f"No edit history found for {path}."
    )


async def test_editor_refuses_binary_non_utf8_large_and_extensions(ctx: ToolContext) -> None:
    sandbox = ctx.require_sandbox()
    root = ctx.workspace
    await sandbox.write_file(f"{root}/bin.dat", b"\x7fELF\x00\x01\x02")
    await sandbox.write_file(f"{root}/latin.txt", "café\n".encode("latin-1"))
    await sandbox.run(f"head -c 50000000 /dev/zero | tr '\\0' 'a' > {root}/big.txt")
    ed = FileEditorTool({"max_file_size": 10_000_000, "allowed_extensions": [".py", ".txt"]})
    assert await _fail(ed, ctx, command="view", path=f"{root}/bin.dat") == (
        f"The file {root}/bin.dat appears to be binary (7 bytes); `str_replace_editor` only works "
        "on text files."
    )
    assert await _fail(ed, ctx, command="str_replace", path=f"{root}/latin.txt", old_str="caf") == (
        f"The file {root}/latin.txt is not valid UTF-8 text (byte 0xe9 at offset 3); "
        "`str_replace_editor` only works on UTF-8 files. Use `bash` (e.g. `iconv` or `sed`) for "
        "other encodings."
    )
    assert await _fail(ed, ctx, command="view", path=f"{root}/big.txt") == (
        f"The file {root}/big.txt is too large (50000000 bytes; the limit is 10000000 bytes). Use "
        "`bash` with `grep -n`, `head` or `sed -n` to read parts of it."
    )
    assert await _fail(ed, ctx, command="create", path=f"{root}/x.sh", file_text="x") == (
        f"Files with extension `.sh` cannot be edited with this tool: {root}/x.sh. Allowed "
        "extensions: .py, .txt."
    )
    # and the sandbox keeps going
    assert (
        await ed.execute({"command": "create", "path": f"{root}/ok.py", "file_text": ""}, ctx)
    ).success


async def test_editor_clips_long_responses(ctx: ToolContext) -> None:
    ed = FileEditorTool({"max_response_len": 200})
    path = f"{ctx.workspace}/long.txt"
    await _ok(ed, ctx, command="create", path=path, file_text="x" * 1000)
    r = await _ok(ed, ctx, command="view", path=path)
    assert r.output.endswith(
        "<response clipped><NOTE>To save on context only part of this file has been shown to you. "
        "You should retry this tool after you have searched inside the file with `grep -n` in "
        "order to find the line numbers of what you are looking for.</NOTE>\n"
    )


# ---- search


async def _tree(ctx: ToolContext) -> str:
    root = str(ctx.workspace)
    sandbox = ctx.require_sandbox()
    await sandbox.write_file(
        f"{root}/src/app.py", "import os\n\ndef main():\n    return os.getcwd()\n"
    )
    await sandbox.write_file(
        f"{root}/src/util.py", "def helper():\n    pass\n\ndef main_helper():\n    pass\n"
    )
    await sandbox.write_file(f"{root}/README.md", "call main() to start\n")
    await sandbox.write_file(f"{root}/.git/config", "main\n")
    await sandbox.write_file(f"{root}/data.bin", b"main\x00\x01")
    return root


@pytest.mark.parametrize("engine", ["agent", "rg"])
async def test_search_commands(ctx: ToolContext, engine: str) -> None:
    root = await _tree(ctx)
    s = SearchTool({"engine": engine})
    r = await _ok(s, ctx, command="search_dir", pattern=r"def main", path=root)
    assert r.output == (
        f'Found 2 matches for "def main" in {root}:\n{root}/src/app.py (1 matches)\n'
        f'{root}/src/util.py (1 matches)\nEnd of matches for "def main" in {root}'
    )
    r = await _ok(s, ctx, command="search_file", pattern="pass", path=f"{root}/src/util.py")
    assert r.output == (
        f'Found 2 matches for "pass" in {root}/src/util.py:\nLine 2:    pass\n'
        f'Line 5:    pass\nEnd of matches for "pass" in {root}/src/util.py'
    )
    r = await _ok(s, ctx, command="grep", pattern=r"main\(", path=root, context=1)
    assert r.output == (
        f'Found 2 matches for "main\\(" in {root}:\n'
        f"{root}/README.md:1:call main() to start\n--\n"
        f"{root}/src/app.py-2-\n{root}/src/app.py:3:def main():\n"
        f"{root}/src/app.py-4-    return os.getcwd()"
    )
    r = await _ok(
        s, ctx, command="grep", pattern="MAIN", path=root, include=["*.md"], ignore_case=True
    )
    assert (
        r.output
        == f'Found 1 matches for "MAIN" in {root}:\n{root}/README.md:1:call main() to start'
    )
    r = await _ok(s, ctx, command="search_dir", pattern="main()", path=root, fixed_string=True)
    assert r.output.startswith(
        f'Found 2 matches for "main()" in {root}:\n{root}/README.md (1 matches)'
    )
    r = await _ok(s, ctx, command="search_dir", pattern="zzz_nothing", path=root)
    assert r.output == f'No matches found for "zzz_nothing" in {root}'
    r = await _ok(s, ctx, command="search_dir", pattern="main", path=root, max_results=1)
    assert r.output == f'More than 1 files matched for "main" in {root}. Please narrow your search.'


async def test_search_find_file_and_errors(ctx: ToolContext) -> None:
    root = await _tree(ctx)
    s = SearchTool()
    r = await _ok(s, ctx, command="find_file", pattern="*.py", path=root)
    assert (
        r.output == f'Found 2 matches for "*.py" in {root}:\n{root}/src/app.py\n{root}/src/util.py'
    )
    r = await _ok(s, ctx, command="find_file", pattern="*.rs", path=root)
    assert r.output == f'No matches found for "*.rs" in {root}'
    assert await _fail(s, ctx, command="grep", pattern="(unclosed", path=root) == (
        "Invalid regular expression '(unclosed': missing ), unterminated subpattern at position 0"
    )
    assert await _fail(s, ctx, command="search_dir", pattern="x", path=f"{root}/nope") == (
        f"Directory {root}/nope not found"
    )
    assert await _fail(s, ctx, command="search_file", pattern="x", path=f"{root}/src") == (
        f"File {root}/src not found"
    )
    assert await _fail(s, ctx, command="nope", pattern="x") == (
        'Tool `search`: argument `command` must be one of "search_dir", "search_file", '
        '"find_file", "grep", got "nope".'
    )


async def test_search_extensions_config(ctx: ToolContext) -> None:
    root = await _tree(ctx)
    s = SearchTool({"search_extensions": [".md"]})
    r = await _ok(s, ctx, command="search_dir", pattern="main", path=root)
    assert r.output.splitlines()[1:] == [
        f"{root}/README.md (1 matches)",
        f'End of matches for "main" in {root}',
    ]


# ---- submit


async def test_submit_answer_and_patch(ctx: ToolContext) -> None:
    sandbox = ctx.require_sandbox()
    root = ctx.workspace
    r = await _ok(SubmitTool(), ctx, answer="42")
    assert r.terminate and r.output == "Submitted final answer: 42" and r.data == {"answer": "42"}
    assert await _fail(SubmitTool(), ctx) == "Tool `submit`: missing required argument `answer`."
    await sandbox.run(
        f"cd {root} && git init -q && printf 'a\\nb\\n' > keep.txt && printf 'x\\n' > gone.txt && "
        "git add -A && git -c user.email=t@t -c user.name=t commit -qm base"
    )
    await sandbox.run(
        f"cd {root} && printf 'a\\nB\\n' > keep.txt && rm gone.txt && "
        "printf 'new\\n' > new.txt && printf '\\x00\\x01\\x02' > blob.bin"
    )
    status_before = (await sandbox.run(f"cd {root} && git status --porcelain")).output
    r = await _ok(SubmitTool({"mode": "patch", "workdir": root}), ctx)
    assert r.terminate and r.output.startswith("Submitted a patch: 4 file(s) changed")
    patch = r.data["patch"]
    assert "+B" in patch and "deleted file mode" in patch and "new.txt" in patch
    assert "GIT binary patch" in patch
    # the repository's index is untouched
    assert (await sandbox.run(f"cd {root} && git status --porcelain")).output == status_before
    # and the patch reproduces the change on a clean checkout
    await sandbox.write_file(f"{root}/../p.diff", patch)
    check = await sandbox.run(
        f"cd {root} && git stash -u -q && git apply ../p.diff && git status --porcelain | sort"
    )
    assert check.output.split("\n")[:4] == [
        " D gone.txt",
        " M keep.txt",
        "?? blob.bin",
        "?? new.txt",
    ]


async def test_submit_patch_outside_git(ctx: ToolContext) -> None:
    out = await _fail(SubmitTool({"mode": "patch", "workdir": ctx.workspace}), ctx)
    assert out.startswith(
        f"Cannot build the patch: {ctx.workspace} is not a usable git repository (git says: "
    )
