"""``submit`` / ``finish``: end the trajectory with a final answer or, for coding, a patch.

In ``patch`` mode the submission is the diff of the workspace against ``base_commit`` (default
HEAD), new and binary files included. It is computed with a temporary git index, so the
repository's own index and working tree are left exactly as the model left them.
"""

from __future__ import annotations

import shlex
from typing import Any, ClassVar, Literal

from pydantic import Field

from tools.base import AgenticBaseTool, ToolConfig, ToolContext, ToolError, ToolResult

#: Largest patch submitted. A patch is stored up to three times in a trajectory (final response,
#: metadata, tool result) and JSON can escape a byte into 6 (a control character as \u0001):
#: the cap bounds the stored line at ~18x this. SWE-bench gold patches are a few KB.
DEFAULT_MAX_PATCH_BYTES = 2 * 1024 * 1024


class SubmitConfig(ToolConfig):
    #: "auto": a patch when the run's context names a base commit (SWE tasks), else an answer
    mode: Literal["answer", "patch", "auto"] = "answer"
    workdir: str | None = Field(
        None, description="git repository (default: the context's workspace)"
    )
    base_commit: str | None = Field(None, description="diff against this commit (default HEAD)")
    timeout: float = Field(120.0, gt=0)
    max_patch_bytes: int = Field(
        DEFAULT_MAX_PATCH_BYTES, gt=0, description="a larger patch is refused, with a note"
    )


async def workspace_patch(
    ctx: ToolContext,
    workdir: str,
    base: str | None,
    timeout: float,
    exclude: list[str] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_PATCH_BYTES,
) -> str:
    """``git diff --binary`` of everything in ``workdir`` (tracked, new, deleted) vs ``base``.

    ``exclude``: paths left out (SWE tasks exclude the test files their test patch replaces).
    """
    sandbox = ctx.require_sandbox()
    pathspec = " -- ." + "".join(f" {shlex.quote(':(exclude)' + p)}" for p in exclude or [])
    script = (
        "set -e; cd " + shlex.quote(workdir) + "; git rev-parse --is-inside-work-tree >/dev/null; "
        'idx=$(mktemp); trap \'rm -f "$idx"\' EXIT; export GIT_INDEX_FILE="$idx"; '
        "git read-tree HEAD; git add -A; git diff --cached --binary "
        + shlex.quote(base or "HEAD")
        + pathspec
    )
    res = await sandbox.exec(["bash", "-c", script], timeout=timeout, max_output=max_bytes + 1)
    if res.exit_code != 0:
        raise ToolError(
            f"Cannot build the patch: {workdir} is not a usable git repository "
            f"(git says: {res.stderr.strip()[:300] or res.stdout.strip()[:300]})."
        )
    if res.elided_bytes or res.total_bytes > max_bytes:
        raise ToolError(
            f"The patch is {res.total_bytes} bytes, over the limit of {max_bytes} bytes "
            "(max_patch_bytes); nothing was submitted. Remove generated, binary or data files "
            "from the workspace and submit again."
        )
    return res.stdout


class SubmitTool(AgenticBaseTool):
    name: ClassVar[str] = "submit"
    description: ClassVar[str] = (
        "Finish the task. Give your final answer in `answer`. For coding tasks, call it when "
        "your changes are complete: the changes in the workspace are submitted as a patch."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"answer": {"type": "string", "description": "the final answer or summary"}},
        "required": [],
        "additionalProperties": False,
    }
    config_model: ClassVar[type[ToolConfig]] = SubmitConfig

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        cfg: SubmitConfig = self.settings
        answer = args.get("answer")
        mode = cfg.mode
        if mode == "auto":
            mode = "patch" if ctx.extra.get("base_commit") else "answer"
        if mode == "answer":
            if not answer or not str(answer).strip():
                raise ToolError(f"Tool `{self.tool_name}`: missing required argument `answer`.")
            return ToolResult(
                success=True,
                output=f"Submitted final answer: {answer}",
                data={"answer": answer},
                terminate=True,
            )
        workdir = cfg.workdir or ctx.workspace
        if not workdir:
            raise ToolError("Cannot build the patch: no workspace directory is configured.")
        # a task may name its base commit and excluded paths (SWE tasks do, via the context)
        base = cfg.base_commit or ctx.extra.get("base_commit")
        patch = await workspace_patch(
            ctx, workdir, base, cfg.timeout, ctx.extra.get("exclude"), max_bytes=cfg.max_patch_bytes
        )
        files = sum(1 for line in patch.splitlines() if line.startswith("diff --git "))
        summary = f"Submitted a patch: {files} file(s) changed, {len(patch)} bytes."
        if not patch:
            summary = "Submitted an empty patch: the workspace has no changes."
        return ToolResult(
            success=True, output=summary, data={"answer": answer, "patch": patch}, terminate=True
        )


class FinishTool(SubmitTool):
    """``finish``: the seed's name for ending with an answer."""

    name: ClassVar[str] = "finish"
    parameters: ClassVar[dict[str, Any]] = {
        **SubmitTool.parameters,
        "required": ["answer"],
    }
