"""Seed README, "1. 带工具的独立智能体": three registered tools, a react agent, a task that writes
and runs a script (here in the Docker sandbox every trajectory gets)."""

import asyncio
import json

from orchestrator import AgenticRollout, AgenticRolloutConfig
from tests.seed.models import call, scripted
from tools import (
    BashExecutorTool,
    CalculatorTool,
    FileEditorTool,
    get_global_tool_registry,
    register_tool,
)

FIB = "a, b = 0, 1\nfor _ in range(10):\n    print(a)\n    a, b = b, a + b\n"
your_llm_func = scripted(
    {
        "斐波那契": [
            call(
                "str_replace_editor",
                json.dumps({"command": "create", "path": "/tmp/fib.py", "file_text": FIB}),
            ),
            call("bash", '{"command": "python3 /tmp/fib.py"}'),
            "Thought: done\nFinal Answer: 0 1 1 2 3 5 8 13 21 34",
        ]
    }
)


async def main() -> None:
    # 注册多个工具
    register_tool(CalculatorTool, {"precision": 10})
    register_tool(FileEditorTool, {"max_file_size": 1024 * 1024})
    register_tool(BashExecutorTool, {"timeout": 30})

    # 创建智能体配置
    config = AgenticRolloutConfig(agent_type="react", max_steps=8)
    rollout = AgenticRollout(config=config, llm_generate_func=your_llm_func)

    # 运行复杂任务
    result = await rollout.agent.run_trajectory(
        prompt={"content": "创建一个Python脚本来计算斐波那契数列的前10项"},
        llm_generate_func=your_llm_func,
        request_id="fibonacci_task",
    )
    print(sorted(get_global_tool_registry().names()))
    print(result.status.value, result.get_final_response())
    print(repr(result.get_tool_results()[-1].content))


if __name__ == "__main__":
    asyncio.run(main())
