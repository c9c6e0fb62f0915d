"""Seed README, "应用场景", "轨迹分析" and "批处理": ``agent.run_trajectory(prompt=...,
llm_generate_func=...)`` (no request_id) for the four scenarios, the trajectory statistics and
JSON export, and the batch loop - each trajectory in its own Docker sandbox."""

import asyncio
import json

from orchestrator import AgenticRollout, AgenticRolloutConfig
from tests.seed.models import call, scripted

SORT = "print(sorted([3, 1, 2]))\n"
llm_func = scripted(
    {
        "置信区间": [
            call("calculator", '{"expression": "100 - 1.96 * 15"}'),
            "Final Answer: [70.6, 129.4]",
        ],
        "快速排序": [
            call(
                "str_replace_editor",
                json.dumps({"command": "create", "path": "/tmp/qs.py", "file_text": SORT}),
            ),
            call("bash", '{"command": "python3 /tmp/qs.py"}'),
            "Final Answer: written and tested",
        ],
        "导入依赖": [
            call("bash", '{"command": "python3 -c \\"import sys; print(sys.version_info[0])\\""}'),
            "Final Answer: stdlib only",
        ],
        "磁盘": [
            call("bash", '{"command": "test -d /tmp && echo checked"}'),
            "Final Answer: below 80%",
        ],
        "15 * 24": ["Final Answer: 360"],
        "排序": ["Final Answer: sorted(xs)"],
        "量子": ["Final Answer: qubits"],
    }
)


async def main() -> None:
    config = AgenticRolloutConfig(agent_type="react", max_steps=10)
    agent = AgenticRollout(config=config, llm_generate_func=llm_func).agent

    # 数学和科学计算 / 代码开发和测试 / 文件处理和分析 / 系统管理自动化
    for content in (
        "计算正态分布的95%置信区间，均值为100，标准差为15",
        "创建一个快速排序算法的Python实现并编写单元测试",
        "分析这个项目目录，找出所有Python文件的导入依赖关系",
        "检查系统磁盘使用情况，如果超过80%使用率则清理临时文件",
    ):
        trajectory = await agent.run_trajectory(
            prompt={"content": content}, llm_generate_func=llm_func
        )
        print(trajectory.status.value, [s.content for s in trajectory.get_tool_results()])
        for error in trajectory.errors:  # what went wrong, if anything
            print("  error:", error.type, error.message[:300])

    # 分析轨迹性能 (the last one)
    print(f"总步数: {len(trajectory.steps)}")
    print(f"工具调用: {len(trajectory.get_tool_calls())}")
    print(f"最终奖励: {trajectory.get_total_reward()}")
    trajectory_dict = trajectory.to_dict()
    with open("trajectory.json", "w", encoding="utf-8") as f:
        json.dump(trajectory_dict, f, indent=2, ensure_ascii=False)

    # 并发处理多个提示
    prompts = [
        {"content": "解决数学问题: 15 * 24"},
        {"content": "编写Python代码对列表进行排序"},
        {"content": "解释量子计算的基本原理"},
    ]
    config = AgenticRolloutConfig(concurrent_requests=3, sandbox={"type": "none"})  # no tools used
    rollout = AgenticRollout(config=config, llm_generate_func=llm_func)
    trajectories = []
    for i, prompt in enumerate(prompts):
        trajectory = await rollout.agent.run_trajectory(
            prompt=prompt, llm_generate_func=llm_func, request_id=f"batch_{i}"
        )
        trajectories.append(trajectory)
    print([(t.request_id, t.get_final_response()) for t in trajectories])


if __name__ == "__main__":
    asyncio.run(main())
