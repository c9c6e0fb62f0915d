"""Tools the model calls: bash, str_replace_editor, search, calculator, submit/finish.

Tools are composed on the host from the sandbox's RPC primitives, so changing a tool never
touches an image. Importing this package registers nothing; ``register_tool`` does, explicitly.
"""

# This import comes first on purpose: see ``agents/__init__.py`` (Python initialises the package
# ``orchestrator``, whose ``__init__`` re-exports the runner, before any ``orchestrator.*``
# module; loading it before any submodule of ``tools`` means none is seen half-initialised).
import orchestrator.exceptions  # noqa: F401  (isort keeps ``import`` lines before ``from`` lines)
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
