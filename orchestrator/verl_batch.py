"""DataProto <-> tasks and trajectories: what ``AgenticRollout.generate_sequences(DataProto)``
(the seed's VERL entry point) needs, below the runner so the runner imports it without
importing the VERL agent loop (orchestrator/verl_integration.py, which reuses it).

- :func:`row_to_task`: a VERL dataset row as a :class:`~orchestrator.tasks.Task`.
- :func:`trajectories_to_dataproto`: trajectories collected standalone (any LLM client) as a
  real ``DataProto`` with VERL's rollout keys.
- :func:`generate_sequences`: ``AgenticRollout.generate_sequences(DataProto)``.

verl, torch, numpy and tensordict are the optional ``verl`` extra: they are imported when a
function here is called (not when the module is), so the runner imports without them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.exceptions import ConfigError, TaskError, TokenizationError
from orchestrator.swe.task import SWETask
from orchestrator.tasks import Task
from orchestrator.tokens import TokenLedger, tokenize_conversation
from orchestrator.trajectory import Trajectory

if TYPE_CHECKING:
    from verl.protocol import DataProto


def _verl() -> tuple[Any, Any, Any, Any]:
    """numpy, torch, TensorDict and DataProto (the ``verl`` extra), or a clear ImportError."""
    try:
        import numpy as np
        import torch
        from tensordict import TensorDict
        from verl.protocol import DataProto
    except ImportError as exc:
        raise ImportError(
            "VERL's DataProto needs verl 0.9.1: pip install 'agentic-rollout[verl]' (on a "
            "CPU-only machine install torch==2.13.0 first so pip does not pull CUDA torch); "
            f"import failed: {exc}"
        ) from exc
    return np, torch, TensorDict, DataProto


def plain(value: Any) -> Any:
    """numpy arrays/scalars and OmegaConf nodes from a VERL row, as plain Python."""
    import numpy as np
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _json_field(value: Any, name: str) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except ValueError as exc:
            raise TaskError(f"extra_info.{name} is not valid JSON: {exc}") from None
    return value


def row_to_task(row: dict[str, Any], *, index: int = 0) -> Task:
    """A dataset row (``raw_prompt``, ``extra_info``, ``tools_kwargs``, ``reward_model``) as a
    task. ``extra_info.swe`` makes it a SWE task (image, workdir, grading)."""
    raw = plain(row.get("raw_prompt"))
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        raise TaskError("the row's raw_prompt must be a non-empty list of chat messages")
    extra = plain(row.get("extra_info")) or {}
    tools_kwargs = plain(row.get("tools_kwargs")) or {}
    if not isinstance(extra, dict) or not isinstance(tools_kwargs, dict):
        raise TaskError("extra_info and tools_kwargs must be mappings")
    for key in ("sandbox", "setup", "swe", "tool_context"):  # JSON strings keep parquet simple
        extra[key] = _json_field(extra.get(key), key)
    tools_kwargs["sandbox"] = _json_field(tools_kwargs.get("sandbox"), "tools_kwargs.sandbox")
    rid = extra.get("task_id") or extra.get("instance_id") or f"row-{row.get('index', index)}"
    system = next((m.get("content") for m in raw if m.get("role") == "system"), None)
    messages = [m for m in raw if m.get("role") != "system"]
    sandbox = {**(extra.get("sandbox") or {}), **(tools_kwargs.get("sandbox") or {})}
    if extra.get("swe"):
        base = SWETask.from_row(extra["swe"]).to_task()
        return base.model_copy(
            update={
                "id": f"{base.id}-{uuid.uuid4().hex[:8]}",
                "prompt": messages,
                "system_prompt": system,
                "sandbox": {**base.sandbox, **sandbox},
                "metadata": {**base.metadata, "row_id": str(extra.get("task_id") or base.id)},
            }
        )
    reward_model = plain(row.get("reward_model")) or {}
    answer = extra.get("answer")
    if answer is None and isinstance(reward_model, dict):
        answer = reward_model.get("ground_truth")
    return Task(
        id=f"{rid}-{uuid.uuid4().hex[:8]}",
        prompt=messages,
        system_prompt=system,
        workspace=extra.get("workspace"),
        sandbox=sandbox,
        setup=list(extra.get("setup") or []),
        answer=None if answer is None else str(answer),
        metadata={
            "row_id": str(rid),
            "data_source": row.get("data_source"),
            **({"tool_context": extra["tool_context"]} if extra.get("tool_context") else {}),
        },
    )


def _pad(
    rows: Sequence[Sequence[float]], width: int, value: float, *, left: bool
) -> list[list[float]]:
    out = []
    for row in rows:
        fill = [value] * (width - len(row))
        out.append(fill + list(row) if left else list(row) + fill)
    return out


def ledger_of(trajectory: Trajectory, tokenizer: Any) -> TokenLedger:
    """The trajectory's exact tokens when it was collected token-level, else its messages
    tokenized with the chat template (see :func:`orchestrator.tokens.tokenize_conversation`)."""
    saved = trajectory.token_ledger
    if isinstance(saved, dict) and saved.get("prompt_ids"):
        return TokenLedger(
            prompt_ids=list(saved["prompt_ids"]),
            response_ids=list(saved["response_ids"]),
            response_mask=list(saved["response_mask"]),
            response_logprobs=saved.get("response_logprobs"),
        )
    if not trajectory.messages:
        raise TokenizationError(
            f"trajectory {trajectory.request_id} has no messages (was it run with "
            "include_trajectory_in_output=False?)"
        )
    return tokenize_conversation(trajectory.messages, tokenizer)


def trajectories_to_dataproto(
    trajectories: Sequence[Trajectory],
    tokenizer: Any,
    *,
    prompt_length: int | None = None,
    response_length: int | None = None,
) -> DataProto:
    """A real ``DataProto`` with VERL's rollout keys: ``prompts`` (left-padded),
    ``responses`` / ``response_mask`` (right-padded), ``input_ids``, ``attention_mask``,
    ``position_ids``, ``rollout_log_probs`` (when every trajectory has logprobs) and
    ``rm_scores`` (reward on the last response token, when every trajectory has a reward).

    Lengths default to the longest in the batch; longer prompts are left-truncated and longer
    responses right-truncated (``non_tensor_batch["truncated"]`` says which).
    """
    if not trajectories:
        raise ConfigError("trajectories_to_dataproto needs at least one trajectory")
    np, torch, tensor_dict, data_proto = _verl()
    ledgers = [ledger_of(t, tokenizer) for t in trajectories]
    p_len = prompt_length or max(len(lg.prompt_ids) for lg in ledgers)
    r_len = response_length or max([*(len(lg.response_ids) for lg in ledgers), 1])
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    prompts, responses, masks, logprobs, truncated = [], [], [], [], []
    for lg in ledgers:
        prompts.append(lg.prompt_ids[-p_len:])
        responses.append(lg.response_ids[:r_len])
        masks.append(lg.response_mask[:r_len])
        logprobs.append(None if lg.response_logprobs is None else lg.response_logprobs[:r_len])
        truncated.append(len(lg.prompt_ids) > p_len or len(lg.response_ids) > r_len)
    prompt_t = torch.tensor(_pad(prompts, p_len, pad_id, left=True), dtype=torch.long)
    prompt_attn = torch.tensor(
        _pad([[1] * len(p) for p in prompts], p_len, 0, left=True), dtype=torch.long
    )
    resp_t = torch.tensor(_pad(responses, r_len, pad_id, left=False), dtype=torch.long)
    resp_attn = torch.tensor(
        _pad([[1] * len(r) for r in responses], r_len, 0, left=False), dtype=torch.long
    )
    mask_t = torch.tensor(_pad(masks, r_len, 0, left=False), dtype=torch.long)
    attention = torch.cat([prompt_attn, resp_attn], dim=1)
    position = torch.clamp(torch.cumsum(attention, dim=1) - 1, min=0) * attention
    batch: dict[str, Any] = {
        "prompts": prompt_t,
        "responses": resp_t,
        "response_mask": mask_t,
        "input_ids": torch.cat([prompt_t, resp_t], dim=1),
        "attention_mask": attention,
        "position_ids": position,
    }
    if all(lp is not None for lp in logprobs):
        batch["rollout_log_probs"] = torch.tensor(
            _pad([lp or [] for lp in logprobs], r_len, 0.0, left=False), dtype=torch.float32
        )
    rewards = [t.reward for t in trajectories]
    if all(r is not None for r in rewards):
        scores = torch.zeros_like(mask_t, dtype=torch.float32)
        last = torch.clamp(resp_attn.sum(dim=1) - 1, min=0)
        scores[torch.arange(len(ledgers)), last] = torch.tensor(
            [float(r or 0.0) for r in rewards], dtype=torch.float32
        )
        batch["rm_scores"] = scores
    non_tensor = {
        "request_id": np.array([t.request_id for t in trajectories], dtype=object),
        "status": np.array([t.status.value for t in trajectories], dtype=object),
        "truncated": np.array(truncated, dtype=bool),
        "__num_turns__": np.array(
            [len([m for m in t.messages if m.get("role") != "system"]) for t in trajectories],
            dtype=np.int32,
        ),
    }
    out: DataProto = data_proto(
        batch=tensor_dict(batch, batch_size=len(ledgers)),
        non_tensor_batch=non_tensor,
        meta_info={"prompt_length": p_len, "response_length": r_len},
    )
    return out


async def generate_sequences(rollout: Any, prompts: DataProto) -> DataProto:
    """Run one trajectory per row of ``prompts`` with ``rollout`` (an ``AgenticRollout``)
    and return them as a ``DataProto`` (see :func:`trajectories_to_dataproto`).

    Rows come from ``non_tensor_batch["raw_prompt"]`` (plus ``extra_info``/``tools_kwargs``
    when present), or else are decoded from ``batch["input_ids"]`` (padding dropped).
    ``meta_info`` may set ``prompt_length`` / ``response_length``.
    """
    tokenizer = rollout.tokenizer
    if tokenizer is None:
        raise ConfigError(
            "generate_sequences needs a tokenizer: AgenticRollout(config, llm, tokenizer)"
        )
    n = len(prompts)
    nt = prompts.non_tensor_batch or {}
    tasks: list[Task] = []
    for i in range(n):
        if "raw_prompt" in nt:
            row = {k: v[i] for k, v in nt.items()}
        else:
            ids = prompts.batch["input_ids"][i]
            attn = prompts.batch["attention_mask"][i] if "attention_mask" in prompts.batch else None
            kept = ids[attn.bool()] if attn is not None else ids
            text = tokenizer.decode(kept.tolist(), skip_special_tokens=True)
            row = {"raw_prompt": [{"role": "user", "content": text}]}
        row.setdefault("index", i)
        tasks.append(row_to_task(row, index=i))
    summary = await rollout.run(tasks)
    meta = prompts.meta_info or {}
    out = trajectories_to_dataproto(
        summary.trajectories,
        tokenizer,
        prompt_length=meta.get("prompt_length"),
        response_length=meta.get("response_length"),
    )
    out.meta_info.update({k: v for k, v in meta.items() if k not in out.meta_info})
    return out


__all__ = [
    "generate_sequences",
    "ledger_of",
    "plain",
    "row_to_task",
    "trajectories_to_dataproto",
]
