"""``coding``: a SWE-style agent working in a repository; it ends by submitting a patch.

The tools are bash, str_replace_editor, search and submit (patch mode) unless the run supplies
others. Tool calls are native when the client supports them, ReAct text otherwise. The
trajectory's ``final_response`` is the patch (``git diff`` of the workspace), also kept in
``Trajectory.patch`` (stored as ``metadata["patch"]``).
"""

from __future__ import annotations

from typing import ClassVar

from agents.base import BaseAgent, ToolFormat, submitted_data, tool_context
from agents.formats import NativeFormat, ReActFormat
from orchestrator.llm import LLMClient
from orchestrator.sandbox.base import Sandbox
from orchestrator.tasks import Task
from orchestrator.trajectory import Trajectory, TrajectoryStatus
from tools.base import ToolContext
from tools.registry import ToolRegistry
from tools.submit import workspace_patch

SWE_SYSTEM_PROMPT = """You are an autonomous software engineer working in a repository at
{workspace}. Resolve the issue described by the user by editing the code.

How to work:
1. Explore the repository to find the relevant code (search, str_replace_editor view).
2. Reproduce the problem with a small script and run it with bash.
3. Edit the source to fix it (str_replace_editor). Keep changes minimal; do not edit tests.
4. Rerun your script to confirm the fix, and think about edge cases.
5. When you are done, call submit. Your changes are submitted as a patch.

Paths given to str_replace_editor must be absolute. Commands run in a persistent bash session
with stdin closed: do not start interactive programs."""


class CodingAgent(BaseAgent):
    name: ClassVar[str] = "coding"
    default_system_prompt: ClassVar[str] = SWE_SYSTEM_PROMPT

    def default_tool_format(self, llm: LLMClient | None) -> ToolFormat:
        return NativeFormat() if getattr(llm, "supports_tools", False) else ReActFormat()

    def system_prompt(self, task: Task, tools: ToolRegistry, fmt: ToolFormat) -> str:
        text = super().system_prompt(task, tools, fmt)
        return text.replace("{workspace}", task.workspace or "the working directory")

    def finalize_trajectory(self, trajectory: Trajectory) -> None:
        super().finalize_trajectory(trajectory)
        data = submitted_data(trajectory)
        if data is not None and isinstance(data.get("patch"), str):
            trajectory.patch = data["patch"]
            trajectory.final_response = data["patch"]

    async def run(
        self,
        task: Task,
        llm: LLMClient,
        tools: ToolRegistry,
        sandbox: Sandbox | None = None,
        *,
        trajectory: Trajectory | None = None,
    ) -> Trajectory:
        traj = await super().run(task, llm, tools, sandbox, trajectory=trajectory)
        if traj.patch is None and sandbox is not None and not sandbox.rpc.closed:
            # no submit: the workspace diff is still the result (SWE-agent's autosubmit)
            patch = await self._workspace_patch(traj, tool_context(task, sandbox))
            if patch is not None:
                traj.patch = patch
                if traj.status == TrajectoryStatus.COMPLETED:  # ended with a text answer
                    traj.final_response = patch
                else:  # max_steps or a format-error stop
                    traj.metadata["autosubmitted"] = True
        return traj

    @staticmethod
    async def _workspace_patch(trajectory: Trajectory, ctx: ToolContext) -> str | None:
        if ctx.sandbox is None or not ctx.workspace:
            return None
        try:
            return await workspace_patch(
                ctx, ctx.workspace, ctx.extra.get("base_commit"), 120.0, ctx.extra.get("exclude")
            )
        except Exception as exc:  # no git repo: keep the text answer, note why
            trajectory.metadata["patch_error"] = str(exc)
            return None
