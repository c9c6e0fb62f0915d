"""Tools the model calls: bash, str_replace_editor, search, calculator, submit/finish.

Tools are composed on the host from the sandbox's RPC primitives, so changing a tool never
touches an image. Importing this package registers nothing; ``register_tool`` does, explicitly.
"""

from tools.base import (
    AgenticBaseTool,
    ToolConfig,
    ToolContext,
    ToolError,
    ToolResult,
    create_openai_tool_schema,
)
from tools.bash import BashExecutorTool
from tools.calculator import CalculatorTool
from tools.editor import FileEditorTool
from tools.registry import (
    ToolRegistry,
    default_registry,
    get_global_tool_registry,
    register_tool,
)
from tools.search import SearchTool
from tools.submit import FinishTool, SubmitTool

__all__ = [
    "AgenticBaseTool",
    "BashExecutorTool",
    "CalculatorTool",
    "FileEditorTool",
    "FinishTool",
    "SearchTool",
    "SubmitTool",
    "ToolConfig",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "ToolResult",
    "create_openai_tool_schema",
    "default_registry",
    "get_global_tool_registry",
    "register_tool",
]
