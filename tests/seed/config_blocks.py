"""Seed README, "配置", "性能优化", "调试" and the VERL rollout_config block: every config the
seed shows is accepted with the meaning it gives, and the first one drives a rollout."""

import asyncio
import json
import logging
from pathlib import Path

from orchestrator import AgenticRollout, AgenticRolloutConfig
from tests.seed.models import call, scripted

llm_func = scripted(
    {"1/3": [call("calculator", '{"expression": "1/3"}'), "Final Answer: 0.3333333333"]}
)


async def main() -> None:
    config = AgenticRolloutConfig(
        # 智能体设置
        agent_type="react",                    # 智能体类型: "react", "coding", "tool"
        max_steps=10,                         # 最大轨迹步数
        max_tokens_per_step=512,              # 每步最大token数
        temperature=0.7,                      # LLM采样温度

        # 工具配置
        tools_config={                        # 工具特定设置
            "calculator": {"precision": 10},
            "search": {"max_results": 5}
        },

        # 性能设置
        batch_size=1,                         # 批处理大小
        concurrent_requests=4,                # 并发请求限制

        # 输出设置
        include_trajectory_in_output=True,    # 输出中包含完整轨迹
        save_trajectories=True,               # 保存轨迹到磁盘
        trajectory_save_path="./trajectories" # 保存位置
    )  # fmt: skip
    rollout = AgenticRollout(config=config, llm_generate_func=llm_func)
    trajectory = await rollout.agent.run_trajectory(
        prompt={"content": "What is 1/3?"}, llm_generate_func=llm_func, request_id="third"
    )
    print("calculator:", trajectory.get_tool_results()[0].content)
    stored = [
        json.loads(line)["request_id"]
        # the seed's trajectory_save_path is a directory: trajectories.jsonl is written in it
        for line in (Path("trajectories") / "trajectories.jsonl").read_text().splitlines()
    ]
    print("stored:", stored)

    # 并发设置
    config = AgenticRolloutConfig(
        concurrent_requests=4,      # 并发请求数
        max_steps=10,              # 限制步数防止无限循环
        max_tokens_per_step=512,   # 控制生成长度
        batch_size=2               # 批处理大小
    )  # fmt: skip
    print("concurrency:", config.concurrent_requests, config.batch_size)

    # 内存管理
    config = AgenticRolloutConfig(
        save_trajectories=False,           # 不保存到磁盘节省空间
        include_trajectory_in_output=True, # 仅在内存中保持轨迹
        trajectory_save_path=None          # 禁用文件保存
    )  # fmt: skip
    print("memory: store", AgenticRollout(config=config, llm_generate_func=llm_func).store)

    # 调试
    logging.basicConfig(level=logging.DEBUG)
    # 或只为特定组件启用
    logging.getLogger("workers.tools").setLevel(logging.DEBUG)
    config = AgenticRolloutConfig(
        save_trajectories=True, trajectory_save_path="./debug_trajectories"
    )
    print("debug:", AgenticRollout(config=config, llm_generate_func=llm_func).store.path)  # type: ignore[union-attr]

    # VERL: the rollout_config dict's agent_config is an AgenticRolloutConfig
    rollout_config = {
        "rollout_type": "agentic",
        "agent_config": {"agent_type": "react", "max_steps": 10},
    }
    verl = AgenticRolloutConfig(**rollout_config["agent_config"])  # type: ignore[arg-type]
    print("verl:", verl.agent_type, verl.max_steps)


if __name__ == "__main__":
    asyncio.run(main())
