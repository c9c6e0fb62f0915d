"""A custom tool in a few lines, written the seed's way (works unchanged).

The search backend is pluggable; this example ships an offline in-memory index so it runs with
no network. Swap ``LocalIndex`` for a real client (with an API key from the tool config).

    .venv/bin/python examples/custom_tool_web_search.py
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from tools import AgenticBaseTool, ToolResult, create_openai_tool_schema, register_tool
from tools.registry import get_global_tool_registry


class LocalIndex:
    """Stands in for a web search API."""

    DOCS: ClassVar[dict[str, str]] = {
        "https://docs.python.org/3/library/asyncio.html": "asyncio — Asynchronous I/O",
        "https://docs.docker.com/engine/": "Docker Engine overview",
        "https://kubernetes.io/docs/concepts/workloads/pods/": "Pods | Kubernetes",
    }

    async def search(self, query: str) -> list[dict[str, str]]:
        words = query.lower().split()
        return [
            {"url": url, "title": title}
            for url, title in self.DOCS.items()
            if any(w in title.lower() or w in url for w in words)
        ]


class WebSearchTool(AgenticBaseTool):
    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.api_key = self.config.get("api_key")
        self.backend = LocalIndex()

    def get_openai_tool_schema(self) -> dict[str, Any]:
        return create_openai_tool_schema(
            name="web_search",
            description="Search the web for information",
            parameters={
                "query": {"type": "string", "description": "search query"},
                "max_results": {"type": "integer", "description": "max results", "default": 5},
            },
            required=["query"],
        )

    async def execute_tool(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> ToolResult:
        query = parameters["query"]
        results = await self.backend.search(query)
        return ToolResult(
            success=True,
            result={
                "query": query,
                "results": results[: parameters.get("max_results", 5)],
                "found": len(results),
            },
        )


async def main() -> None:
    register_tool(WebSearchTool, {"api_key": "your-key"})
    registry = get_global_tool_registry().fork()  # a per-run copy
    print(registry.anthropic_schemas()[0])
    for args in ({"query": "docker engine"}, {"query": 42}, {}):
        result = await registry.execute("web_search", args)
        print(f"{args} -> success={result.success}: {result.observation()}")


if __name__ == "__main__":
    asyncio.run(main())
