"""LLM clients behind one small async contract, and retries.

``await client.generate(messages, tools=..., max_tokens=..., temperature=...) -> LLMResponse``
with OpenAI-style ``messages`` and OpenAI-format ``tools``. Implementations:

* :class:`OpenAIClient` - the OpenAI SDK, any ``base_url`` (vLLM, SGLang, llama.cpp, OpenAI);
* :class:`AnthropicClient` - the Anthropic SDK (tool_use / tool_result blocks);
  :class:`ClaudeAPIClient` is the seed's name for it (``ClaudeAPIClient(api_key=...)``);
* :class:`CallableClient` - the seed's ``llm_generate_func(messages, **kwargs) -> str``.

Provider exceptions are mapped at this boundary to :class:`~orchestrator.exceptions.LLMError`
subclasses; :func:`generate_with_retries` retries the transient ones (429, 5xx, timeouts,
connection errors, garbage replies) with exponential backoff and jitter under a cap, records
every retry, and lets 4xx errors through at once. SDKs are imported when a client is built.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from orchestrator.exceptions import (
    ConfigError,
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMResponseError,
    LLMRetryableError,
    LLMServerError,
    LLMTimeoutError,
)
from orchestrator.trajectory import RetryRecord, TokenUsage


class ToolCall(BaseModel):
    id: str
    name: str
    #: the arguments exactly as the model wrote them (may be invalid JSON)
    arguments: str


class LLMResponse(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    finish_reason: str | None = None
    raw: Any = Field(default=None, exclude=True)


@runtime_checkable
class LLMClient(Protocol):
    """What agents need from a model."""

    #: whether ``tools=`` is honoured (native function calling)
    supports_tools: bool

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse: ...


class RetryPolicy(BaseModel):
    """Exponential backoff with full jitter: wait ~U(0, min(max_wait, initial * 2**n))."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(6, ge=1)
    initial_wait: float = Field(1.0, ge=0)
    max_wait: float = Field(30.0, ge=0)
    max_total_seconds: float = Field(300.0, gt=0, description="give up after this long")


async def generate_with_retries(
    client: LLMClient,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    policy: RetryPolicy | None = None,
    on_retry: Callable[[RetryRecord], None] | None = None,
    **sampling: Any,
) -> LLMResponse:
    """``client.generate`` with retries of transient failures; each retry is reported."""
    policy = policy or RetryPolicy()
    # the common case - it works - without building tenacity's machinery (~0.1 ms a call)
    try:
        return await client.generate(messages, tools=tools, **sampling)
    except LLMRetryableError as exc:
        first: LLMRetryableError | None = exc

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is None or state.outcome is None:
            return
        exc = state.outcome.exception()
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        on_retry(
            RetryRecord(
                attempt=state.attempt_number,
                error=f"{type(exc).__name__}: {exc}",
                wait_seconds=float(wait),
            )
        )

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(LLMRetryableError),
        wait=wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait),
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_total_seconds),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if first is not None:  # attempt 1 already ran above: replay its failure
                failed, first = first, None
                raise failed
            return await client.generate(messages, tools=tools, **sampling)
    raise AssertionError("unreachable: tenacity either returns or re-raises")


# ---- classification of foreign exceptions


def classify_exception(exc: BaseException, *, url: str | None = None) -> LLMError:
    """Map an SDK / httpx / builtin exception to our LLMError tree (``url``: named in it)."""
    if isinstance(exc, LLMError):
        return exc
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    text = f"{name}: {exc}" + (f" ({url})" if url else "")
    if isinstance(status, int):
        if status == 429:
            return LLMRateLimitError(text, status=status)
        if status >= 500:
            return LLMServerError(text, status=status)
        return LLMRequestError(text, status=status)
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return LLMTimeoutError(text)
    if "Connection" in name or isinstance(exc, ConnectionError):
        return LLMConnectionError(text)
    if (
        isinstance(exc, (ValueError, KeyError, IndexError))
        or "Validation" in name
        or "Decode" in name
    ):
        return LLMResponseError(text)
    return LLMRequestError(text)


def _sampling_args(sampling: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in sampling.items() if k in allowed and v is not None}


# ---- OpenAI


class _EndpointCheck:
    """``check()`` for the SDK clients: the preflight's one cheap request."""

    model: str

    @property
    def base_url(self) -> str:
        raise NotImplementedError

    async def generate(self, messages: list[dict[str, Any]], **kwargs: Any) -> LLMResponse:
        raise NotImplementedError

    async def check(self) -> None:
        """One cheap request (one token); an LLMError naming the URL and model if it fails."""
        try:
            await self.generate([{"role": "user", "content": "ping"}], max_tokens=1)
        except LLMError as exc:
            raise type(exc)(
                f"LLM endpoint {self.base_url} (model {self.model!r}) did not answer a "
                f"one-token request: {exc}",
                status=exc.status,
            ) from exc


class OpenAIClient(_EndpointCheck):
    """Chat completions through the OpenAI SDK (SDK retries off: we retry, and record it)."""

    supports_tools = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        extra_body: dict[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        self.model = model
        self.extra_body = extra_body
        if client is None:
            import openai

            client = openai.AsyncOpenAI(
                base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
                api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
                timeout=timeout,
                max_retries=0,
            )
        self._client = client

    @property
    def base_url(self) -> str:
        return str(getattr(self._client, "base_url", "") or "")

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        kwargs.update(
            _sampling_args(
                sampling, ("max_tokens", "temperature", "top_p", "stop", "seed", "response_format")
            )
        )
        if tools:
            kwargs["tools"] = tools
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        try:
            resp = await self._client.chat.completions.create(**kwargs)
        except Exception as exc:
            raise classify_exception(exc, url=self.base_url) from exc
        choices = getattr(resp, "choices", None)
        if not choices:
            raise LLMResponseError(f"completion has no choices: {str(resp)[:200]}")
        message = choices[0].message
        calls = [
            ToolCall(
                id=c.id or f"call_{i}", name=c.function.name, arguments=c.function.arguments or ""
            )
            for i, c in enumerate(getattr(message, "tool_calls", None) or [])
        ]
        usage = TokenUsage()
        if resp.usage is not None:
            usage = TokenUsage(
                prompt_tokens=resp.usage.prompt_tokens or 0,
                completion_tokens=resp.usage.completion_tokens or 0,
            )
        return LLMResponse(
            content=message.content,
            tool_calls=calls,
            usage=usage,
            finish_reason=choices[0].finish_reason,
            raw=resp,
        )

    async def close(self) -> None:
        await self._client.close()


# ---- Anthropic


def to_anthropic(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI-style messages -> (system, Anthropic messages with tool_use/tool_result blocks)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role == "system":
            system.append(str(content or ""))
        elif role == "tool":
            push(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id", ""),
                        "content": str(content or ""),
                    }
                ],
            )
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if content:
                blocks.append({"type": "text", "text": str(content)})
            for call in m.get("tool_calls") or []:
                fn = call["function"]
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {"_raw": fn.get("arguments")}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": fn["name"],
                        "input": args if isinstance(args, dict) else {"value": args},
                    }
                )
            push("assistant", blocks or [{"type": "text", "text": ""}])
        else:
            push("user", [{"type": "text", "text": str(content or "")}])
    return ("\n\n".join(system) or None), out


class AnthropicClient(_EndpointCheck):
    """Messages through the Anthropic SDK (SDK retries off: we retry, and record it)."""

    supports_tools = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        client: Any = None,
    ) -> None:
        self.model = model
        if client is None:
            import anthropic

            client = anthropic.AsyncAnthropic(
                base_url=base_url or os.environ.get("ANTHROPIC_BASE_URL"),
                api_key=api_key or os.environ.get("ANTHROPIC_API_KEY") or "EMPTY",
                timeout=timeout,
                max_retries=0,
            )
        self._client = client
        #: the keywords messages.create takes (None: any); looked at on first use
        self._keywords: frozenset[str] | None = None
        self._keywords_known = False

    @property
    def base_url(self) -> str:
        return str(getattr(self._client, "base_url", "") or "")

    def _create_keywords(self) -> frozenset[str] | None:
        """The keywords ``messages.create`` takes (None: it takes any)."""
        if not self._keywords_known:
            self._keywords_known = True
            try:
                params = inspect.signature(self._client.messages.create).parameters
            except (TypeError, ValueError, AttributeError):
                return None
            any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            self._keywords = None if any_kw else frozenset(params)
        return self._keywords

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        system, converted = to_anthropic(messages)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": converted,
            "max_tokens": sampling.get("max_tokens") or 1024,
        }
        # anthropic 2.x dropped temperature/top_p/top_k from create()'s keywords (a TypeError
        # when passed); the Messages API and compatible servers still take them in the body
        accepted = self._create_keywords()
        for key, value in _sampling_args(sampling, ("temperature", "top_p", "top_k")).items():
            if accepted is None or key in accepted:
                kwargs[key] = value
            else:
                kwargs.setdefault("extra_body", {})[key] = value
        if sampling.get("stop"):
            stop = sampling["stop"]
            kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [
                {
                    "name": t["function"]["name"],
                    "description": t["function"].get("description", ""),
                    "input_schema": t["function"].get("parameters", {"type": "object"}),
                }
                for t in tools
            ]
        try:
            resp = await self._client.messages.create(**kwargs)
        except Exception as exc:
            raise classify_exception(exc, url=self.base_url) from exc
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in getattr(resp, "content", None) or []:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                calls.append(
                    ToolCall(id=block.id, name=block.name, arguments=json.dumps(block.input))
                )
        usage = TokenUsage(
            prompt_tokens=resp.usage.input_tokens or 0,
            completion_tokens=resp.usage.output_tokens or 0,
        )
        return LLMResponse(
            content="".join(texts) or None,
            tool_calls=calls,
            usage=usage,
            finish_reason=resp.stop_reason,
            raw=resp,
        )

    async def close(self) -> None:
        await self._client.close()


class ClaudeAPIClient(AnthropicClient):
    """The seed's Claude client: ``ClaudeAPIClient(api_key=...)`` then
    ``await client.generate(messages, **kwargs)``.

    The same client as :class:`AnthropicClient` (OpenAI-style messages in, an
    :class:`LLMResponse` out - which a seed ``llm_generate_func`` may return as is), with the
    seed's keyword-only construction: the model defaults to ``ANTHROPIC_MODEL`` or
    :attr:`DEFAULT_MODEL`, the key and URL to ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``.
    """

    DEFAULT_MODEL = "claude-sonnet-5-5"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        client: Any = None,
    ) -> None:
        super().__init__(
            model or os.environ.get("ANTHROPIC_MODEL") or self.DEFAULT_MODEL,
            base_url=base_url,
            api_key=api_key,
            timeout=timeout,
            client=client,
        )


# ---- the seed's plain function


class CallableClient:
    """Wraps ``llm_generate_func(messages, **kwargs)`` returning text (sync or async).

    It may also return an :class:`LLMResponse` or an OpenAI-style message dict (with
    ``tool_calls``); only then can it drive the native tool-calling agent.
    """

    def __init__(self, func: Callable[..., Any], *, supports_tools: bool = False) -> None:
        if not callable(func):
            raise ConfigError(f"llm_generate_func must be callable, got {type(func).__name__}")
        self.func = func
        self.supports_tools = supports_tools

    async def generate(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        kwargs = dict(sampling)
        if tools and self.supports_tools:
            kwargs["tools"] = tools
        try:
            out = self.func(messages, **kwargs)
            if inspect.isawaitable(out):
                out = await out
        except LLMError:
            raise
        except Exception as exc:
            raise classify_exception(exc) from exc
        return coerce_response(out)


def coerce_response(out: Any) -> LLMResponse:
    if isinstance(out, LLMResponse):
        return out
    if isinstance(out, str):
        return LLMResponse(content=out)
    if isinstance(out, dict):
        calls = [
            ToolCall(
                id=c.get("id") or f"call_{i}",
                name=c["function"]["name"],
                arguments=c["function"].get("arguments") or "",
            )
            for i, c in enumerate(out.get("tool_calls") or [])
        ]
        return LLMResponse(content=out.get("content"), tool_calls=calls)
    if out is None:
        return LLMResponse(content=None)
    raise LLMResponseError(
        f"llm_generate_func returned {type(out).__name__}; expected str, dict or LLMResponse"
    )


def make_client(
    provider: str,
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
) -> OpenAIClient | AnthropicClient:
    if provider == "openai":
        return OpenAIClient(model, base_url=base_url, api_key=api_key, timeout=timeout)
    if provider == "anthropic":
        return AnthropicClient(model, base_url=base_url, api_key=api_key, timeout=timeout)
    raise ConfigError(f"unknown LLM provider {provider!r}; use 'openai' or 'anthropic'")
