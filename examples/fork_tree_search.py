"""Mid-trajectory branching: a custom agent forks its sandbox to try several candidate edits.

At each depth the model proposes ``k`` candidate commands; the agent forks the sandbox ``k``
times (``await sandbox.fork(k)``: each child has the parent's files, cwd and exported env,
and is independent afterwards), runs one candidate per branch, scores each branch by the
number of passing checks, keeps the best branch and closes the rest. The trajectory records
every branch's command and score. Runs offline: the model is a scripted one.

.venv/bin/python examples/fork_tree_search.py [--image IMAGE]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from agents.base import BaseAgent
from orchestrator import AgenticRolloutConfig, Task
from orchestrator.llm import LLMClient
from orchestrator.runner import AgenticRollout
from orchestrator.sandbox.base import Sandbox
from orchestrator.testing import ScriptedLLM
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus, TrajectoryStep
from tools.registry import ToolRegistry

#: three checks against calc.py: each passing one prints "ok"
CHECKS = (
    'python3 -c \'import calc; print("ok" if calc.add(2, 3) == 5 else "no")\'; '
    'python3 -c \'import calc; print("ok" if calc.mul(2, 3) == 6 else "no")\'; '
    'python3 -c \'import calc; print("ok" if calc.neg(2) == -2 else "no")\''
)
SETUP = [
    "mkdir -p /workspace/calc && cd /workspace/calc && export PYTHONDONTWRITEBYTECODE=1 && "
    "printf 'def add(a, b):\\n    return a - b\\n\\ndef mul(a, b):\\n    return a + b\\n"
    "\\ndef neg(a):\\n    return a\\n' > calc.py"
]
#: the model's proposals, one reply per candidate, depth after depth
PROPOSALS = [
    # depth 0
    "sed -i 's/return a - b/return a + b/' calc.py",  # fixes add: 1 check passes
    "sed -i 's/return a - b/return a * b/' calc.py",  # wrong fix: 0
    "rm calc.py",  # 0
    # depth 1 (in the best branch of depth 0)
    "sed -i '5s/a + b/a * b/' calc.py",  # fixes mul: 2
    "sed -i 's/return a$/return -a/' calc.py",  # fixes neg: 2 (a tie: the first wins)
    "true",  # 1
    # depth 2
    "true",
    "sed -i 's/return a$/return -a/' calc.py",  # fixes neg: 3
    "sed -i '2s/+/-/' calc.py",
]


class TreeSearchAgent(BaseAgent):
    """Greedy tree search over sandbox forks: ``width`` branches per depth, best one kept."""

    width = 3
    depth = 3

    async def run(
        self,
        task: Task,
        llm: LLMClient,
        tools: ToolRegistry,
        sandbox: Sandbox | None = None,
        *,
        trajectory: Trajectory | None = None,
    ) -> Trajectory:
        record = trajectory or Trajectory(request_id=task.id, agent_type=self.name)
        assert sandbox is not None, "this agent needs a sandbox"
        current, owned = sandbox, False  # the rollout owns (and closes) the root sandbox
        best_score = await score(current)
        for level in range(self.depth):
            proposals = [
                (await llm.generate([{"role": "user", "content": f"depth {level}"}])).content or ""
                for _ in range(self.width)
            ]
            branches = await current.fork(self.width)
            scores = await asyncio.gather(
                *(attempt(b, p) for b, p in zip(branches, proposals, strict=True))
            )
            for proposal, s in zip(proposals, scores, strict=True):
                record.add_step(
                    TrajectoryStep(
                        step_type=StepType.TOOL_CALL,
                        tool_name="branch",
                        tool_args={"command": proposal},
                        metadata={"depth": level, "score": s},
                        turn=level + 1,
                    )
                )
            winner = max(range(self.width), key=lambda i: scores[i])
            for i, branch in enumerate(branches):
                if i != winner or scores[i] <= best_score:
                    await branch.close()
            if scores[winner] <= best_score:
                continue  # no branch improved: stay where we are
            if owned:
                await current.close()
            current, owned, best_score = branches[winner], True, scores[winner]
        final = (await current.run("cat calc.py")).output
        if owned:
            await current.close()
        record.finish(TrajectoryStatus.COMPLETED, f"score {best_score}/3\n{final}")
        return record


async def score(sandbox: Sandbox) -> int:
    return (await sandbox.run(CHECKS)).output.split().count("ok")


async def attempt(branch: Sandbox, command: str) -> int:
    await branch.run(command)
    return await score(branch)


async def main(image: str) -> None:
    config = AgenticRolloutConfig(
        sandbox={"type": "docker", "image": image, "workdir": "/workspace"},
        save_trajectories=False,
        preflight=False,
    )
    llm: Any = ScriptedLLM(PROPOSALS)
    rollout = AgenticRollout(config, llm_client=llm, agent=TreeSearchAgent(), reward_fn=None)
    summary = await rollout.run([Task(id="calc", prompt="fix calc.py", setup=SETUP)])
    traj = summary.trajectories[0]
    for step in traj.steps:
        print(
            f"depth {step.metadata['depth']}: score {step.metadata['score']} <- "
            f"{step.tool_args['command'] if step.tool_args else ''}"
        )
    print(f"status: {traj.status.value}")
    print(traj.get_final_response())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", default="agentic-rollout/sandbox:latest")
    asyncio.run(main(parser.parse_args().image))
