"""Seed README, "核心工具详解": the four tools registered with the blocks' configs, each used
once in a Docker sandbox as the block describes (calculator expressions, bash with blocked
commands, the editor with allowed extensions, search by extension)."""

import asyncio

from orchestrator import sandbox_config
from tools import (
    BashExecutorTool,
    CalculatorTool,
    FileEditorTool,
    SearchTool,
    ToolContext,
    get_global_tool_registry,
    register_tool,
)


async def main(image: str, run_id: str) -> None:
    register_tool(CalculatorTool, {"precision": 10})
    # 支持: "2 + 3 * 4", "sqrt(16) + factorial(4)", "sin(pi/2)"
    register_tool(BashExecutorTool, {"timeout": 30, "blocked_commands": ["rm", "sudo"]})
    register_tool(
        FileEditorTool,
        {"max_file_size": 1024 * 1024, "allowed_extensions": [".py", ".txt", ".md"]},
    )
    register_tool(SearchTool, {"max_results": 100, "search_extensions": [".py", ".js", ".md"]})

    registry = get_global_tool_registry()
    async with sandbox_config({"type": "docker", "image": image, "run_id": run_id}).build() as sb:
        ctx = ToolContext(sandbox=sb, workspace="/tmp/w")
        calls = [
            ("calculator", {"expression": "2 + 3 * 4"}),
            ("calculator", {"expression": "sqrt(16) + factorial(4)"}),
            ("calculator", {"expression": "sin(pi/2)"}),
            ("bash", {"command": "mkdir -p /tmp/w && echo ok"}),
            ("bash", {"command": "rm -rf /tmp/w"}),
            (
                "str_replace_editor",
                {"command": "create", "path": "/tmp/w/a.py", "file_text": "x = 1\n"},
            ),
            (
                "str_replace_editor",
                {"command": "create", "path": "/tmp/w/a.sh", "file_text": "ls\n"},
            ),
            (
                "str_replace_editor",
                {"command": "create", "path": "/tmp/w/b.txt", "file_text": "x = 1\n"},
            ),
            ("search", {"command": "search_dir", "pattern": "x = 1", "path": "/tmp/w"}),
        ]
        for name, args in calls:
            result = await registry.execute(name, args, ctx)
            print(f"{name} {result.success}: {result.output}")


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1], sys.argv[2]))
