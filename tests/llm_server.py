"""A scripted OpenAI/Anthropic-compatible HTTP server on 127.0.0.1 (a real server, real SDKs).

Each request takes the next behaviour from the script: an HTTP status with an error body, a
hang longer than the client's timeout, garbage, or a real completion.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def openai_completion(
    content: str | None = "ok", tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def anthropic_message(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": blocks,
        "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 13, "output_tokens": 5},
    }


#: the top-level keys each API accepts in a request body (what a strict server checks)
ANTHROPIC_MESSAGES_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
    }
)
OPENAI_CHAT_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "n",
        "stream",
    }
)


def strict_body(allowed: frozenset[str], required: tuple[str, ...]) -> Any:
    """A body check: unknown or missing top-level keys are refused with a 400, as the real
    APIs do; returns None when the body is acceptable."""

    def check(body: dict[str, Any]) -> str | None:
        unknown = sorted(set(body) - allowed)
        missing = [k for k in required if k not in body]
        if unknown:
            return f"unknown keys: {unknown}"
        if missing:
            return f"missing keys: {missing}"
        return None

    return check


class ScriptedServer:
    def __init__(self, script: list[tuple[str, Any]], *, check: Any = None) -> None:
        self.script = list(script)
        #: (body) -> None or an error message: a refused body gets a 400 and uses no script item
        self.check = check
        self.refused: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def root_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def next(self) -> tuple[str, Any]:
        with self._lock:
            return self.script.pop(0) if self.script else ("status", 503)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                outer.requests.append({"path": self.path, "body": body})
                problem = outer.check(body) if outer.check is not None else None
                if problem is not None:
                    outer.refused.append(problem)
                    kind, arg = "status", 400
                else:
                    kind, arg = outer.next()
                if kind == "hang":
                    time.sleep(arg)
                    kind, arg = "status", 504
                if kind == "status":
                    message = problem if problem is not None else f"scripted {arg}"
                    payload = json.dumps(
                        {"error": {"message": message, "type": "scripted"}}
                    ).encode()
                    self.send_response(arg)
                elif kind == "garbage":
                    payload = b"<html>definitely not json"
                    self.send_response(200)
                else:
                    payload = json.dumps(arg).encode()
                    self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def __enter__(self) -> ScriptedServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def scripted_server(
    script: list[tuple[str, Any]], *, check: Any = None
) -> Iterator[ScriptedServer]:
    with ScriptedServer(script, check=check) as server:
        yield server
