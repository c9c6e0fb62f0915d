"""Token-level rollouts: the exact tokens sampled, the exact tokens shown, and which is which.

A trainer (VERL) needs, per trajectory, ``prompt_ids`` and ``response_ids`` with a
``response_mask`` (1 = sampled by the model, 0 = tool/observation text the model did not write)
and the sampling log-probabilities aligned to it. :class:`TokenLLMClient` is an
:class:`~orchestrator.llm.LLMClient` that speaks tokens to a server
(``generate(prompt_ids) -> token_ids``) and keeps that ledger while any of our agents runs
unchanged on messages:

- the first call renders the conversation with the tokenizer's chat template (generation
  prompt included): ``prompt_ids``;
- each model reply is appended as the token ids the server returned (mask 1, its logprobs) and
  handed to the agent as text decoded from exactly those ids;
- when the agent comes back with more messages (tool results, format errors), only the
  *new* text is tokenized and appended (mask 0, logprob 0.0): nothing already in the ledger is
  ever re-tokenized, so the model's tokens are never replaced by a re-tokenization of its text.

How the new messages become tokens is a :class:`TokenMerger`. :class:`TemplateMerger` (here,
no VERL needed) renders the conversation before and after the new messages and tokenizes the
textual difference, plus whatever the template puts after a reply that the model did not
generate (ChatML's ``\\n`` after ``<|im_end|>``). That is exact for every append-only template
(ChatML/Qwen2.5, Llama 3, Mistral...); a template that rewrites earlier turns (Qwen3 drops old
``<think>`` blocks) raises :class:`TokenizationError` instead of drifting, and VERL's
model-family builders handle those (``orchestrator.verl_integration``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.exceptions import LLMRequestError, TokenBudgetExceeded, TokenizationError
from orchestrator.llm import LLMResponse
from orchestrator.trajectory import TokenUsage

Messages = list[dict[str, Any]]


@dataclass
class TokenOutput:
    """What a token-level server returns for one generation."""

    token_ids: list[int]
    log_probs: list[float] | None = None
    #: "length" when it stopped at max_tokens; anything else is a normal stop
    stop_reason: str | None = None


#: ``await generate(request_id, prompt_ids, sampling_params)``
TokenGenerateFn = Callable[[str, list[int], dict[str, Any]], Awaitable[TokenOutput]]


@dataclass
class TokenLedger:
    """Prompt and response tokens of one trajectory, with mask and logprobs aligned."""

    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    #: None until a generation returned logprobs (then one per response token)
    response_logprobs: list[float] | None = None
    #: the response budget (VERL ``response_length``); None: unbounded
    budget: int | None = None
    #: context tokens cut off because they would have passed the budget
    truncated: bool = False

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - len(self.response_ids)

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    def add_model(self, ids: list[int], logprobs: list[float] | None) -> None:
        if logprobs is not None and len(logprobs) != len(ids):
            raise TokenizationError(
                f"the server returned {len(ids)} token ids but {len(logprobs)} logprobs"
            )
        if logprobs is not None and self.response_logprobs is None:
            self.response_logprobs = [0.0] * len(self.response_ids)
        self.response_ids += ids
        self.response_mask += [1] * len(ids)
        if self.response_logprobs is not None:
            self.response_logprobs += logprobs if logprobs is not None else [0.0] * len(ids)

    def add_context(self, ids: list[int], *, drop_tail: int = 0) -> None:
        """Append tokens the model did not write (mask 0); ``drop_tail`` removes that many
        tokens from the end first (a merger that rewrites the boundary)."""
        if drop_tail:
            if drop_tail > len(self.response_ids):
                raise TokenizationError("a merge removed tokens from the prompt")
            del self.response_ids[-drop_tail:]
            del self.response_mask[-drop_tail:]
            if self.response_logprobs is not None:
                del self.response_logprobs[-drop_tail:]
        self.response_ids += ids
        self.response_mask += [0] * len(ids)
        if self.response_logprobs is not None:
            self.response_logprobs += [0.0] * len(ids)

    def clipped(self) -> tuple[list[int], list[int], list[float] | None]:
        """Response ids, mask and logprobs cut to the budget (a batch never goes ragged)."""
        n = self.budget if self.budget is not None else len(self.response_ids)
        logprobs = None if self.response_logprobs is None else self.response_logprobs[:n]
        return self.response_ids[:n], self.response_mask[:n], logprobs

    def to_dict(self) -> dict[str, Any]:
        ids, mask, logprobs = self.clipped()
        return {
            "prompt_ids": list(self.prompt_ids),
            "response_ids": ids,
            "response_mask": mask,
            "response_logprobs": logprobs,
            "truncated": self.truncated or len(self.response_ids) > len(ids),
        }


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer we use."""

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, **kwargs: Any) -> list[int]: ...

    def decode(self, token_ids: Any, **kwargs: Any) -> str: ...


class TokenMerger(Protocol):
    """Turns appended messages into tokens without touching what the ledger holds."""

    def initial(self, messages: Messages, tools: Messages | None = None) -> list[int]: ...

    def append(
        self,
        ledger: TokenLedger,
        previous: Messages,
        updated: Messages,
        tools: Messages | None = None,
    ) -> None: ...


_SENTINEL = "\u2063AGENTIC-ROLLOUT-TURN\u2063"


class TemplateMerger:
    """Append-only rendering diff with the tokenizer's own chat template (no VERL needed)."""

    def __init__(self, tokenizer: Any, *, chat_template_kwargs: dict[str, Any] | None = None):
        if not getattr(tokenizer, "chat_template", None):
            raise TokenizationError(
                "the tokenizer has no chat template: set one (tokenizer.chat_template = ...) "
                "or use a chat model's tokenizer"
            )
        self.tokenizer = tokenizer
        self.kwargs = dict(chat_template_kwargs or {})

    def render(self, messages: Messages, *, generation: bool, tools: Messages | None = None) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                messages,
                tools=tools or None,
                tokenize=False,
                add_generation_prompt=generation,
                **self.kwargs,
            )
        except Exception as exc:  # jinja errors: a role the template rejects, ...
            roles = [m.get("role") for m in messages]
            raise TokenizationError(
                f"the chat template cannot render roles {roles}: {exc}"
            ) from exc
        return str(text)

    def encode(self, text: str) -> list[int]:
        # the rendered text carries its own BOS and special tokens
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]

    def initial(self, messages: Messages, tools: Messages | None = None) -> list[int]:
        return self.encode(self.render(messages, generation=True, tools=tools))

    def turn_close(self, previous: Messages, tools: Messages | None = None) -> str:
        """What the template writes after an assistant reply's content (``<|im_end|>\\n``)."""
        probe = [*previous[:-1], {**previous[-1], "content": _SENTINEL}]
        text = self.render(probe, generation=False, tools=tools)
        at = text.rfind(_SENTINEL)
        if at < 0:
            raise TokenizationError("the chat template drops the assistant reply's text")
        return text[at + len(_SENTINEL) :]

    def delta(self, previous: Messages, updated: Messages, tools: Messages | None = None) -> str:
        before = self.render(previous, generation=False, tools=tools)
        after = self.render(updated, generation=True, tools=tools)
        if not after.startswith(before):
            at = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b),
                min(len(before), len(after)),
            )
            raise TokenizationError(
                "the chat template is not append-only here: adding "
                f"{[m.get('role') for m in updated[len(previous) :]]} messages changes the "
                f"earlier text at character {at} ({before[at : at + 40]!r} -> "
                f"{after[at : at + 40]!r}); use VERL's model-family merger (token_merge: verl)"
            )
        return after[len(before) :]

    def append(
        self,
        ledger: TokenLedger,
        previous: Messages,
        updated: Messages,
        tools: Messages | None = None,
    ) -> None:
        text = ""
        if previous and previous[-1].get("role") == "assistant":
            # the reply's closing that the model did not generate (ChatML: "\n" after <|im_end|>)
            close = self.turn_close(previous, tools)
            last = _last_model_run(ledger)
            generated = (
                self.tokenizer.decode(
                    last, skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
                if last
                else ""
            )
            overlap = next(
                (k for k in range(len(close), 0, -1) if generated.endswith(close[:k])), 0
            )
            text = close[overlap:]
        text += self.delta(previous, updated, tools)
        ledger.add_context(self.encode(text))


def _special_strings(tokenizer: Any) -> list[str]:
    """Special token strings, longest first (``all_special_tokens`` misses added specials
    such as ``<|im_end|>`` in some tokenizers: read the added-token table too)."""
    found = {str(t) for t in getattr(tokenizer, "all_special_tokens", None) or [] if t}
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False) and getattr(token, "content", ""):
            found.add(str(token.content))
    return sorted(found, key=len, reverse=True)


def _last_model_run(ledger: TokenLedger) -> list[int]:
    """The ids of the last run of mask-1 tokens at the end of the response."""
    i = len(ledger.response_mask)
    while i > 0 and ledger.response_mask[i - 1] == 1:
        i -= 1
    return ledger.response_ids[i:]


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if v is not None}


class TokenLLMClient:
    """An :class:`~orchestrator.llm.LLMClient` over a token-in/token-out server.

    Holds one trajectory's :class:`TokenLedger`; create one per trajectory. The agent must
    keep the conversation append-only and store each reply verbatim (``hermes``/``react``/
    ``json`` formats do); anything else raises :class:`TokenizationError`.
    """

    supports_tools = False

    def __init__(
        self,
        generate: TokenGenerateFn,
        tokenizer: Any,
        merger: TokenMerger,
        *,
        budget: int | None = None,
        sampling_params: dict[str, Any] | None = None,
        request_id: str | None = None,
        tools: Messages | None = None,
    ) -> None:
        self._generate = generate
        self.tokenizer = tokenizer
        self.merger = merger
        self.ledger = TokenLedger(budget=budget)
        self.sampling_params = dict(sampling_params or {})
        self.request_id = request_id or uuid.uuid4().hex
        #: tool schemas for the chat template (None: the agent's instructions carry them)
        self.tools = tools
        self.messages: Messages = []
        self.calls = 0
        self.stop_reasons: list[str | None] = []

    def start(self, messages: Messages) -> None:
        """Render the prompt (done by the first ``generate`` if not called before)."""
        self.messages = [_plain(m) for m in messages]
        self.ledger.prompt_ids = self.merger.initial(self.messages, self.tools)

    def _sync(self, messages: Messages) -> None:
        messages = [_plain(m) for m in messages]
        if not self.calls:
            self.start(messages)
            return
        n = len(self.messages)
        if messages[:n] != self.messages:
            raise TokenizationError(
                "the conversation changed earlier messages; token-level rollouts need an "
                "append-only conversation with each reply kept verbatim"
            )
        if len(messages) > n:
            self.merger.append(self.ledger, self.messages, messages, self.tools)
            self.messages = messages

    async def generate(
        self,
        messages: Messages,
        *,
        tools: Messages | None = None,
        **sampling: Any,
    ) -> LLMResponse:
        if tools:
            raise LLMRequestError(
                "the token-level client takes no native tool schemas: use tool_format 'hermes'"
            )
        self._sync(messages)
        remaining = self.ledger.remaining
        if remaining is not None and remaining <= 0:
            self.ledger.truncated = self.ledger.truncated or remaining < 0
            raise TokenBudgetExceeded(
                f"response budget of {self.ledger.budget} tokens used up after "
                f"{self.calls} model turns"
            )
        params = dict(self.sampling_params)
        max_tokens = sampling.get("max_tokens")
        if max_tokens is not None:
            params["max_tokens"] = int(max_tokens)
        if remaining is not None:
            params["max_tokens"] = min(params.get("max_tokens", remaining), remaining)
        if "temperature" in sampling and "temperature" not in self.sampling_params:
            params["temperature"] = sampling["temperature"]
        if sampling.get("stop"):  # ReAct's "\nObservation:"; hermes stops at end of turn
            params["stop"] = list(sampling["stop"])
        prompt = self.ledger.all_ids
        out = await self._generate(self.request_id, prompt, params)
        ids = [int(i) for i in out.token_ids]
        if remaining is not None and len(ids) > remaining:  # a server that ignored max_tokens
            ids = ids[:remaining]
            out.log_probs = out.log_probs[:remaining] if out.log_probs is not None else None
        self.ledger.add_model(ids, out.log_probs)
        self.calls += 1
        self.stop_reasons.append(out.stop_reason)
        text = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        self.messages.append({"role": "assistant", "content": text})
        finish = "length" if out.stop_reason == "length" else "stop"
        if remaining is not None and len(ids) >= remaining and finish != "length":
            finish = "length"
        return LLMResponse(
            content=text,
            finish_reason=finish,
            usage=TokenUsage(prompt_tokens=len(prompt), completion_tokens=len(ids)),
        )


def tokenize_conversation(
    messages: Messages,
    tokenizer: Any,
    merger: TemplateMerger | None = None,
    *,
    tools: Messages | None = None,
) -> TokenLedger:
    """Token ledger of a conversation collected as messages (an OpenAI/Anthropic run).

    The prompt is everything before the first assistant message; each assistant turn is what
    the template renders for it up to its last special token (mask 1: what the model would
    have generated, ``<|im_end|>`` included), everything else mask 0.
    """
    merger = merger or TemplateMerger(tokenizer)
    messages = [_plain(m) for m in messages]
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), None)
    ledger = TokenLedger()
    if first is None:
        ledger.prompt_ids = merger.initial(messages, tools)
        return ledger
    ledger.prompt_ids = merger.initial(messages[:first], tools)
    specials = _special_strings(tokenizer)
    i = first
    while i < len(messages):
        if messages[i].get("role") == "assistant":
            before = merger.render(messages[:i], generation=True, tools=tools)
            closed = merger.render(messages[: i + 1], generation=False, tools=tools)
            if not closed.startswith(before):
                raise TokenizationError(
                    f"the chat template is not append-only at assistant message {i}"
                )
            turn = closed[len(before) :]
            close = merger.turn_close(messages[: i + 1], tools)
            end = len(turn) - len(close)
            cut = max((close.rfind(s) + len(s) for s in specials if s in close), default=0)
            ledger.add_model(merger.encode(turn[: end + cut]), None)
            i += 1
            continue
        j = i
        while j < len(messages) and messages[j].get("role") != "assistant":
            j += 1
        if j == len(messages):  # trailing context after the last reply: not part of a turn
            break
        merger.append(ledger, messages[:i], messages[:j], tools)
        i = j
    return ledger
