# ruff: noqa: RUF003
"""Seed README, "基础使用示例": unchanged apart from imports, ``asyncio.run`` around the
top-level ``await``s, and a scripted model in the ``llm_generate_func`` placeholder."""

import asyncio

from orchestrator import AgenticRollout, AgenticRolloutConfig
from tests.seed.models import call, scripted
from tools import CalculatorTool, get_global_tool_registry, register_tool

MODEL = scripted(
    {"15 * 24": [call("calculator", '{"expression": "15 * 24"}'), "Final Answer: 360"]}
)


async def main() -> None:
    # 创建配置
    config = AgenticRolloutConfig(
        agent_type="react", max_steps=10, max_tokens_per_step=512, temperature=0.7
    )

    # 定义你的LLM函数（OpenAI SDK兼容）
    async def llm_generate_func(messages, max_tokens=512, temperature=0.7, **kwargs):  # type: ignore[no-untyped-def]
        # 你的LLM实现代码
        return await MODEL(messages, max_tokens=max_tokens, temperature=temperature, **kwargs)

    # 注册工具
    register_tool(CalculatorTool, {"debug": True})

    # 创建rollout实例
    rollout = AgenticRollout(config=config, llm_generate_func=llm_generate_func)

    # 运行轨迹
    prompt_data = {"content": "计算15 * 24的结果是什么？"}
    trajectory = await rollout.agent.run_trajectory(
        prompt=prompt_data, llm_generate_func=llm_generate_func, request_id="math_example"
    )

    print(f"最终响应: {trajectory.get_final_response()}")
    print(f"总步数: {len(trajectory.steps)}")
    print(f"tools: {get_global_tool_registry().names()} sandbox: {trajectory.metadata['sandbox']}")


if __name__ == "__main__":
    asyncio.run(main())
