"""The one exception root of Agentic Rollout, and the map from in-sandbox error types.

::

    AgenticRolloutError
    ├── ConfigError (ValueError)              bad configuration or argument, found on the host
    │   ├── PreflightError                    a run's setup failed its checks; nothing started
    │   └── FilterError                       an ``export --where`` filter that does not parse
    ├── TaskError (ValueError)                a task (file line, row) that cannot be run
    ├── AgentError                            an agent broke its contract (garbage from
    │   │                                     parse_llm_output, an exception in execute_tool_call)
    │   └── StepLimitExceeded                 an agent kept going past ``max_steps``
    ├── ToolError                             a tool refuses or fails: the model reads it
    ├── TokenizationError                     messages cannot be tokenized consistently
    ├── StoreError (OSError)                  the trajectory file cannot be written
    │   └── StoreLockedError                  another run is writing to the same file
    ├── LLMError                              a model call failed
    │   ├── LLMRequestError                   the endpoint refused the request (4xx): not retried
    │   ├── TokenBudgetExceeded               the trajectory used its whole token budget
    │   └── LLMRetryableError                 retried with backoff, then raised
    │       ├── LLMRateLimitError             429
    │       ├── LLMServerError                5xx
    │       ├── LLMTimeoutError (TimeoutError)
    │       ├── LLMConnectionError (ConnectionError)
    │       └── LLMResponseError              a reply that is not a valid completion
    └── SandboxError                          anything about a sandbox
        ├── SandboxStartError                 image missing, no python3, agent never answered
        │   ├── SandboxAdmissionError         queued past the backend's admission queue_timeout
        │   └── SandboxClaimError             an agent-sandbox claim never bound (empty or
        │                                     deleted warm pool, unknown template, RBAC)
        ├── SandboxConnectionError (ConnectionError)
        │   │                                 the stream died: container killed, agent crashed
        │   └── SandboxProtocolError          the sandbox broke the protocol or a host-side
        │                                     limit (a 1 GiB line, a reply for an unknown id):
        │                                     the host closed it
        ├── DownloadTooLargeError             a download out of the sandbox passed its byte cap
        ├── ForkError                         fork/snapshot impossible: n < 1, a dead or
        │   │                                 unstarted parent, a child that did not start
        │   └── SnapshotTooLargeError         the portable snapshot's work directory is over
        │                                     its size cap (measured before any byte moves)
        ├── RpcTimeoutError (TimeoutError)    no reply within the host-side deadline
        └── RemoteError                       a structured error replied by the in-sandbox agent
            ├── MalformedFrameError           the agent could not parse a frame we sent
            ├── InvalidRequestError
            ├── MethodNotFoundError
            ├── InvalidParamsError (ValueError)
            ├── DuplicateRequestError         a request id was already executed
            ├── RemoteFileNotFoundError (FileNotFoundError)
            ├── RemotePermissionError (PermissionError)
            ├── RemoteIsADirectoryError (IsADirectoryError)
            ├── RemoteNotADirectoryError (NotADirectoryError)
            ├── RemoteFileExistsError (FileExistsError)
            ├── NoSpaceError (OSError)
            ├── ResourceExhaustedError
            ├── UnsafeArchiveError (ValueError)
            ├── NotARegularFileError (OSError)  a FIFO, socket or device the agent won't open
            ├── ArchiveTooLargeError          a download refused: sparse file or over max_bytes
            └── RemoteInternalError

Errors cross the RPC boundary as ``{"code", "type", "message", "data"}`` and are raised on the
host as the class registered for ``type`` (unknown types raise plain :class:`RemoteError`).
This module depends on nothing but the standard library.
"""

from __future__ import annotations

from typing import Any


class AgenticRolloutError(Exception):
    """Root of every exception this package raises on purpose."""


class ConfigError(AgenticRolloutError, ValueError):
    """A configuration value or argument is invalid."""


class PreflightError(ConfigError):
    """The checks before a run's first sandbox failed (every problem listed); nothing was
    started and nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            "preflight failed; nothing was started or written (--no-preflight skips these "
            "checks):\n  - " + "\n  - ".join(self.problems)
        )


class FilterError(ConfigError):
    """``export --where`` does not parse, or names an unknown field."""


class TaskError(AgenticRolloutError, ValueError):
    """A task cannot be run (bad JSONL line, missing prompt...)."""


class AgentError(AgenticRolloutError):
    """An agent broke the ``BaseAgent`` contract: a method returned the wrong kind of value or
    raised. It ends that trajectory (status ``error``) with this message; others go on."""


class StepLimitExceeded(AgentError):
    """An agent asked for more model turns (or tool calls) than ``max_steps`` allows, i.e. its
    loop ignored ``should_continue``; the trajectory ends as ``max_steps``."""


class ToolError(AgenticRolloutError):
    """A tool refuses or fails; its message is what the model sees. Never leaves ``execute``."""


class StoreError(AgenticRolloutError, OSError):
    """The trajectory file could not be written; what was already in it is intact."""


class StoreLockedError(StoreError):
    """Another run is writing to the same trajectory file (the message names it)."""


class LLMError(AgenticRolloutError):
    """A model call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LLMRequestError(LLMError):
    """The endpoint refused the request (bad request, auth, not found): retrying cannot help."""


class LLMRetryableError(LLMError):
    """A transient failure: retried with exponential backoff and jitter."""


class LLMRateLimitError(LLMRetryableError):
    """429 Too Many Requests."""


class LLMServerError(LLMRetryableError):
    """5xx from the endpoint."""


class LLMTimeoutError(LLMRetryableError, TimeoutError):
    """No response within the client timeout."""


class LLMConnectionError(LLMRetryableError, ConnectionError):
    """The endpoint could not be reached."""


class LLMResponseError(LLMRetryableError):
    """The endpoint answered with something that is not a completion (garbage, no choices)."""


class TokenBudgetExceeded(LLMError):
    """The trajectory used its whole token budget (VERL's ``response_length``): it ends as
    ``truncated``; retrying cannot help."""


class TokenizationError(AgenticRolloutError):
    """Messages cannot be turned into tokens consistently (a chat template that rewrites
    earlier turns, a tokenizer without a chat template)."""


class SandboxError(AgenticRolloutError):
    """Something went wrong with a sandbox."""


class SandboxStartError(SandboxError):
    """The sandbox could not be started or its agent never became ready."""


class SandboxAdmissionError(SandboxStartError):
    """The process-wide admission controller did not admit the start in time."""


class SandboxClaimError(SandboxStartError):
    """A kubernetes-sigs agent-sandbox claim did not bind to a ready sandbox."""


class SandboxConnectionError(SandboxError, ConnectionError):
    """The byte stream to the in-sandbox agent is closed; pending and later calls fail."""


class SandboxProtocolError(SandboxConnectionError):
    """The sandbox sent bytes the host refuses (a frame over a limit, a reply to no request, a
    forged chunk...): the host closed that sandbox, and every pending and later call fails
    with this error. ``limit`` names the config value that was exceeded, when one was."""

    def __init__(self, message: str, *, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class DownloadTooLargeError(SandboxError):
    """A download out of the sandbox passed its byte cap (``max_download_bytes``)."""


class ForkError(SandboxError):
    """A fork or snapshot cannot be made (bad n, a parent that is not running, a child that
    failed to start: the children already made are removed)."""


class SnapshotTooLargeError(ForkError):
    """The work directory a portable snapshot would stream is over its size cap."""


class RpcTimeoutError(SandboxError, TimeoutError):
    """A call got no reply within its host-side deadline (the call was cancelled remotely)."""


class RemoteError(SandboxError):
    """A structured error reply from the in-sandbox agent."""

    def __init__(
        self, message: str, *, code: int = -32000, type: str = "RemoteError", data: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.type = type
        self.data = data


class MalformedFrameError(RemoteError):
    """The agent received a frame that is not a UTF-8 JSON object."""


class InvalidRequestError(RemoteError):
    """The frame was JSON but not a valid request."""


class MethodNotFoundError(RemoteError):
    """The agent has no such method."""


class InvalidParamsError(RemoteError, ValueError):
    """A parameter is missing or has the wrong type."""


class DuplicateRequestError(RemoteError):
    """The request id was already executed and its reply is no longer cached."""


class RemoteFileNotFoundError(RemoteError, FileNotFoundError):
    """A path does not exist inside the sandbox."""


class RemotePermissionError(RemoteError, PermissionError):
    """Permission denied inside the sandbox."""


class RemoteIsADirectoryError(RemoteError, IsADirectoryError):
    """A file operation was given a directory."""


class RemoteNotADirectoryError(RemoteError, NotADirectoryError):
    """A directory operation was given something else."""


class RemoteFileExistsError(RemoteError, FileExistsError):
    """The path exists and the operation refuses to overwrite it."""


class NoSpaceError(RemoteError, OSError):
    """The sandbox's disk is full."""


class ResourceExhaustedError(RemoteError):
    """The sandbox ran out of processes, memory or threads."""


class UnsafeArchiveError(RemoteError, ValueError):
    """An uploaded archive has members that escape the destination."""


class NotARegularFileError(RemoteError, OSError):
    """A file read or append hit a FIFO, socket or device: refused instead of blocking."""


class ArchiveTooLargeError(RemoteError, DownloadTooLargeError):
    """A download was refused by the agent at the source: a sparse file (its holes would
    cross as zeros) or more bytes than the request's ``max_bytes`` (the host passes its
    ``max_download_bytes``). A :class:`DownloadTooLargeError`, like the host's own stop."""


class RemoteInternalError(RemoteError):
    """The agent hit a bug while handling the request (it keeps running)."""


REMOTE_ERROR_TYPES: dict[str, type[RemoteError]] = {
    "MalformedFrame": MalformedFrameError,
    "FrameTooLarge": MalformedFrameError,
    "InvalidRequest": InvalidRequestError,
    "MethodNotFound": MethodNotFoundError,
    "InvalidParams": InvalidParamsError,
    "InvalidArchive": InvalidParamsError,
    "DuplicateRequest": DuplicateRequestError,
    "FileNotFound": RemoteFileNotFoundError,
    "PermissionDenied": RemotePermissionError,
    "IsADirectory": RemoteIsADirectoryError,
    "NotADirectory": RemoteNotADirectoryError,
    "FileExists": RemoteFileExistsError,
    "NoSpace": NoSpaceError,
    "ResourceExhausted": ResourceExhaustedError,
    "UnsafeArchive": UnsafeArchiveError,
    "NotARegularFile": NotARegularFileError,
    "ArchiveTooLarge": ArchiveTooLargeError,
    "InternalError": RemoteInternalError,
}


def remote_error_from_wire(error: Any) -> RemoteError:
    """Build the host exception for an ``error`` object of a reply (tolerates garbage)."""
    if not isinstance(error, dict):
        return RemoteError(f"malformed error reply: {error!r}")
    type_ = str(error.get("type", "RemoteError"))
    message = str(error.get("message", "remote error"))
    code = error.get("code", -32000)
    cls = REMOTE_ERROR_TYPES.get(type_, RemoteError)
    return cls(
        message, code=code if isinstance(code, int) else -32000, type=type_, data=error.get("data")
    )
