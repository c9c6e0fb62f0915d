"""Run every built-in tool against a live sandbox and print exactly what a model would see.

.venv/bin/python examples/core_tools_demo.py [--backend docker|local]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from orchestrator import sandbox_config
from tools import ToolContext, default_registry


async def main(backend: str) -> None:
    registry = default_registry(bash={"blocked_commands": ["sudo"]})
    async with sandbox_config(type=backend).build() as sandbox:
        root = f"{(await sandbox.info())['cwd']}/proj"
        ctx = ToolContext(sandbox=sandbox, workspace=root)
        registry_patch = default_registry(submit={"mode": "patch", "workdir": root})

        async def call(name: str, **args: Any) -> None:
            tools = registry_patch if name == "submit" else registry
            result = await tools.execute(name, args, ctx)
            print(f"\n>>> {name}({', '.join(f'{k}={v!r}' for k, v in args.items())})")
            print(result.observation())

        await call(
            "bash",
            command=f"mkdir -p {root} && cd {root} && git init -q && "
            "git -c user.email=d@d -c user.name=d commit -q --allow-empty -m init && echo ready",
        )
        await call(
            "str_replace_editor",
            command="create",
            path=f"{root}/calc.py",
            file_text="def add(a, b):\n    return a - b\n\n\nprint(add(2, 3))\n",
        )
        await call("str_replace_editor", command="view", path=f"{root}/calc.py")
        await call("search", command="grep", pattern=r"return a \W b", path=root)
        await call(
            "str_replace_editor",
            command="str_replace",
            path=f"{root}/calc.py",
            old_str="return a - b",
            new_str="return a + b",
        )
        await call("bash", command="python3 calc.py")
        await call(
            "str_replace_editor",
            command="insert",
            path=f"{root}/calc.py",
            insert_line=0,
            new_str='"""Tiny calculator."""',
        )
        await call("str_replace_editor", command="undo_edit", path=f"{root}/calc.py")
        await call("search", command="find_file", pattern="*.py", path=root)
        await call("search", command="search_dir", pattern="add", path=root)
        await call("calculator", expression="sqrt(16) + factorial(4)")
        await call("calculator", expression="9**9**9")
        await call("bash", command="sudo rm -rf /")
        await call("bash", command="sleep 30", timeout=1)
        await call("str_replace_editor", command="view", path="calc.py")
        await call("submit", answer="fixed add()")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="docker", choices=["docker", "local"])
    asyncio.run(main(parser.parse_args().backend))
