"""VERL integration - the only module that imports verl (``pip install 'agentic-rollout[verl]'``).

- :class:`AgenticSandboxAgentLoop`, registered as ``agentic_sandbox_agent``: a VERL agent loop
  that runs one of our agents per sample, in its own sandbox, token-in/token-out through the
  server handle VERL passes in (exact ``response_mask`` and logprobs, see
  :mod:`orchestrator.tokens`), and returns an ``AgentLoopOutput`` with ``reward_score``.
  Point VERL at it with ``actor_rollout_ref.rollout.agent.agent_loop_config_path`` (a YAML
  list, ``examples/verl/agent_loop.yaml``) and an ``agent_name`` column in the dataset.
- :func:`trajectories_to_dataproto`, :func:`row_to_task` and :func:`generate_sequences`
  (``AgenticRollout.generate_sequences(DataProto)``) live in :mod:`orchestrator.verl_batch`,
  below the runner, and are re-exported here.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

try:
    from verl.experimental.agent_loop.agent_loop import (
        AgentLoopBase,
        AgentLoopMetrics,
        AgentLoopOutput,
        _agent_loop_registry,
    )
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "orchestrator.verl_integration needs verl 0.9.1: pip install 'agentic-rollout[verl]' "
        "(on a CPU-only machine install torch==2.13.0 first so pip does not pull CUDA torch); "
        f"import failed: {exc}"
    ) from exc

from agents.base import jsonable
from orchestrator.config import SEED_FIELDS, AgenticRolloutConfig
from orchestrator.exceptions import ConfigError, TokenizationError
from orchestrator.groups import GroupMember, SnapshotGroups
from orchestrator.runner import AgenticRollout, answer_reward, run_task_setup, start_cancel_safe
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.fork import Snapshot
from orchestrator.store import TrajectoryStore
from orchestrator.swe.run import SWE_TOOLS, evaluate_in_rollout_sandbox, make_swe_reward, swe_config
from orchestrator.tasks import Task
from orchestrator.tokens import (
    Messages,
    TemplateMerger,
    TokenLedger,
    TokenLLMClient,
    TokenMerger,
    TokenOutput,
)
from orchestrator.trajectory import StepType, Trajectory, TrajectoryStatus
from orchestrator.validation import describe_errors, did_you_mean
from orchestrator.verl_batch import (
    generate_sequences,
    ledger_of,
    plain,
    row_to_task,
    trajectories_to_dataproto,
)

AGENT_NAME = "agentic_sandbox_agent"


#: VERL's names in the ``agentic:`` block for settings of the run config's agent section
VERL_NAMES: dict[str, str] = {
    "max_turns": "agent.max_steps",
    "max_tokens_per_turn": "agent.max_tokens_per_step",
    "max_observation_chars": "agent.max_observation_chars",
}
#: the agent loop's preset on the run config (what differs from a plain run's defaults): the
#: agent per row ("auto": ``coding`` for SWE rows, else ``react``), hermes tool calls, shorter
#: observations, the SWE tools, and no store of the runner's own (run() saves, with tokens)
VERL_PRESET: dict[str, Any] = {
    "agent_type": "auto",
    "agent.tool_format": "hermes",
    "agent.max_observation_chars": 8000,
    "tools": SWE_TOOLS,
    "save_trajectories": False,
    "concurrent_requests": 1,
}


class VerlLoopSettings(BaseModel):
    """The ``agentic:`` block of the agent-loop YAML entry (all optional): the loop's own
    settings below, and any run-config setting (``sandbox``, ``tools``, ``tools_config``,
    ``admission``, ``system_prompt``, ``tool_format``, ``trajectory_timeout``, ``agent_type``,
    ... and VERL's names :data:`VERL_NAMES`) on top of :data:`VERL_PRESET`. Rows may override
    the sandbox with ``extra_info.sandbox`` or ``tools_kwargs.sandbox`` (image per row, ...);
    ``max_tokens_per_turn`` unset: whatever is left of ``response_length``. ``group_size`` is
    the run config's (GRPO's n, ``actor_rollout_ref.rollout.n``): VERL makes the samples, and
    those of a row with ``setup`` share it - the first runs it once in a sandbox that is
    snapshotted, each sample starts from the snapshot (orchestrator/groups.py)."""

    model_config = ConfigDict(extra="forbid")

    #: "auto": VERL's builder for model families it knows (Qwen, GLM, ...), our template diff
    #: for the rest; "template": always ours; "verl": always VERL's
    token_merge: Literal["auto", "template", "verl"] = "auto"
    #: "auto": SWE grading for SWE rows, answer match when the row has a ground truth, else
    #: leave the score to VERL's reward manager; "verl": always VERL's; or "module:function"
    #: called as fn(task, trajectory) -> float (sync or async)
    reward: str = "auto"
    #: grade SWE rows in the rollout's own sandbox instead of a fresh one
    eval_in_rollout_sandbox: bool = False
    #: also append every trajectory (messages, tools, timings, tokens) to this JSONL file;
    #: ``{pid}`` in it becomes the process id (VERL runs several agent-loop worker processes)
    save_path: str | None = None
    #: seconds a group's snapshot outlives its last sample's arrival when the group never
    #: completes in this process (samples split across worker processes)
    group_linger: float = Field(600.0, gt=0)
    #: the run-config settings given in the block (dotted keys; checked by rollout_config)
    run: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "run" in data:
            return data
        own = {k: v for k, v in data.items() if k in cls.model_fields}
        own["run"] = {VERL_NAMES.get(k, k): v for k, v in data.items() if k not in own}
        return own

    def rollout_config(self, response_length: int) -> AgenticRolloutConfig:
        """The run config these settings stand for, built once when the agent loop starts (a
        typo in ``sandbox`` or anywhere fails there, with its path, not in every sample). Rows
        then only pick their agent (:meth:`AgenticSandboxAgentLoop.config_for`)."""
        known = {*AgenticRolloutConfig.model_fields, *SEED_FIELDS, *VERL_NAMES}
        for key in self.run:
            top = key.split(".")[0]
            if top not in known:
                raise ConfigError(
                    f"invalid agentic settings for {AGENT_NAME}:\n  {key}: unknown key"
                    f"{did_you_mean(top, sorted(known))}"
                )
        changes = {**self.run}
        changes.setdefault("agent.max_tokens_per_step", max(response_length, 1))
        if changes.get("tools") is None:
            changes.pop("tools", None)
        tool_format = changes.get("agent.tool_format", changes.get("tool_format"))
        if tool_format in ("auto", "native"):
            raise ConfigError(
                f"invalid agentic settings for {AGENT_NAME}: tool_format {tool_format!r} does "
                "not apply to generated tokens: use hermes, react or json"
            )
        try:
            return _VERL_BASE.preset(**changes)
        except ConfigError as exc:
            text = str(exc).replace("invalid configuration:", "", 1).strip()
            for ours, verl_name in ((v, k) for k, v in VERL_NAMES.items()):
                text = text.replace(ours, verl_name)
            raise ConfigError(f"invalid agentic settings for {AGENT_NAME}:\n  {text}") from None


#: the run config VERL's settings are applied to
_VERL_BASE = AgenticRolloutConfig.load(None, **VERL_PRESET)


def _load_reward(spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"cannot load reward function {spec!r}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"reward {spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


class VerlMerger:
    """VERL's continuous-token builder behind our :class:`TokenMerger` interface."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder

    def initial(self, messages: Messages, tools: Messages | None = None) -> list[int]:
        return [int(i) for i in self.builder.build_initial_tokens(messages, tools=tools)]

    def append(
        self,
        ledger: TokenLedger,
        previous: Messages,
        updated: Messages,
        tools: Messages | None = None,
    ) -> None:
        try:
            result = self.builder.merge_context_tokens(
                previous, updated, ledger.all_ids, tools=tools
            )
        except ValueError as exc:
            raise TokenizationError(f"VERL's continuous-token merge failed: {exc}") from exc
        appended = list(result.token_ids[len(result.token_ids) - result.appended_token_count :])
        ledger.add_context(
            [int(i) for i in result.inserted_token_ids] + [int(i) for i in appended],
            drop_tail=result.removed_prefix_token_count,
        )


def _known_family(hf_model_type: str | None) -> bool:
    from verl.utils.tokenizer.continuous_token_wiring import _MODEL_TYPE_TO_FAMILY

    return bool(hf_model_type) and hf_model_type in _MODEL_TYPE_TO_FAMILY


#: one store per file in this process (VERL builds a loop object per sample; a second store
#: opening the file while the first writes would see a partial line)
_stores: dict[str, TrajectoryStore] = {}


_GROUPS: dict[float, SnapshotGroups] = {}


def _groups(linger: float) -> SnapshotGroups:
    """One registry per worker process (per linger setting): samples of a prompt meet here."""
    if linger not in _GROUPS:
        _GROUPS[linger] = SnapshotGroups(linger=linger)
    return _GROUPS[linger]


def _store(path: str) -> TrajectoryStore:
    path = path.replace("{pid}", str(os.getpid()))
    if path not in _stores:
        _stores[path] = TrajectoryStore(path)
    return _stores[path]


class AgenticSandboxAgentLoop(AgentLoopBase):
    """One trajectory per sample: its own sandbox, our agent, exact tokens, a reward.

    Accepts VERL's constructor arguments (passed through to ``AgentLoopBase``) plus
    ``agentic`` (a :class:`VerlLoopSettings` mapping) from the YAML entry.
    """

    def __init__(self, *args: Any, agentic: Any = None, **kwargs: Any) -> None:
        kwargs.pop("tools", None)  # VERL's own tool list: we use ours
        self._hf_model_type = kwargs.get("hf_model_type")
        super().__init__(*args, **kwargs)
        try:
            self.settings = VerlLoopSettings.model_validate(plain(agentic) or {})
        except ValidationError as exc:
            problems = describe_errors(exc, VerlLoopSettings, "agentic.", aliases=VERL_NAMES)
            raise ConfigError(f"invalid agentic settings for {AGENT_NAME}:\n  {problems}") from None
        self.response_length = int(self.rollout_config.response_length)
        self.run_config = self.settings.rollout_config(self.response_length)

    def _merger(self) -> TokenMerger:
        mode = self.settings.token_merge
        if mode == "verl" or (mode == "auto" and _known_family(self._hf_model_type)):
            return VerlMerger(self.continuous_token_builder)
        return TemplateMerger(self.tokenizer, chat_template_kwargs=self.apply_chat_template_kwargs)

    def config_for(self, task: Task) -> AgenticRolloutConfig:
        """The loop's config for one row: SWE rows get the SWE preset (the coding agent unless
        ``agent_type`` names one, submit building the patch), the others ``react`` for auto."""
        auto = self.run_config.agent_type == "auto"
        if task.kind == "swe":
            return swe_config(self.run_config, **({"agent_type": "coding"} if auto else {}))
        return self.run_config.preset(agent_type="react") if auto else self.run_config

    def _reward(self, task: Task) -> tuple[Any, bool]:
        """(reward_fn or None, reward_all)."""
        spec = self.settings.reward
        if spec == "verl":
            return None, False
        if ":" in spec:
            return _load_reward(spec), False
        if spec != "auto":
            raise ConfigError(f"reward must be 'auto', 'verl' or 'module:function', got {spec!r}")
        if task.kind == "swe":
            sandbox = {
                k: v
                for k, v in self.run_config.sandbox.as_dict().items()
                if k not in ("image", "workdir")
            }
            return make_swe_reward(sandbox), True
        if task.answer is not None:
            return answer_reward, True  # a truncated or failed sample scores 0, not None
        return None, False

    async def _server_generate(
        self, request_id: str, prompt_ids: list[int], params: dict[str, Any]
    ) -> TokenOutput:
        out = await self.server_manager.generate(
            request_id=request_id, prompt_ids=prompt_ids, sampling_params=params
        )
        return TokenOutput(
            token_ids=list(out.token_ids),
            log_probs=list(out.log_probs) if getattr(out, "log_probs", None) else None,
            stop_reason=getattr(out, "stop_reason", None),
        )

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:

        t0 = time.perf_counter()
        client: TokenLLMClient | None = None
        traj: Trajectory | None = None
        error: str | None = None
        try:
            task = row_to_task(kwargs, index=int(plain(kwargs.get("index", 0)) or 0))
            client = TokenLLMClient(
                self._server_generate,
                self.tokenizer,
                self._merger(),
                budget=self.response_length,
                sampling_params=sampling_params,
                request_id=uuid.uuid4().hex,
            )
            reward_fn, reward_all = self._reward(task)
            rollout = AgenticRollout(
                self.config_for(task),
                llm_client=client,
                reward_fn=reward_fn,
                reward_all=reward_all,
            )
            if self.settings.eval_in_rollout_sandbox and task.kind == "swe":
                rollout.after_agent = evaluate_in_rollout_sandbox
            member = None
            # group_size (a run-config field: GRPO's n, the samples of one prompt) > 1: VERL
            # made the samples, they share the row's setup through one snapshot (groups.py)
            if self.run_config.group_size > 1 and task.setup:
                member, task = await self._join_group(kwargs, task)
            try:
                traj = await rollout.run_one(task)
            finally:
                if member is not None:
                    await member.release()
            if member is not None:
                traj.metadata["group"] = member.info
            traj.metadata["task_id"] = task.metadata.get("row_id")
            traj.token_ledger = client.ledger.to_dict()
            if self.settings.save_path:
                await _store(self.settings.save_path).aappend(traj)
        except Exception as exc:  # a bad row or config: this sample only, the batch goes on
            error = f"{type(exc).__name__}: {exc}"
        output = self._output(kwargs, client, traj, error, time.perf_counter() - t0)
        # one shape per batch: logprobs exactly when VERL asked for them (0.0 where none came)
        if sampling_params.get("logprobs"):
            if output.response_logprobs is None:
                output.response_logprobs = [0.0] * len(output.response_ids)
        else:
            output.response_logprobs = None
        return output

    async def _join_group(self, row: dict[str, Any], task: Task) -> tuple[GroupMember, Task]:
        """This sample's group (same prompt row: VERL's ``uid``, else the row's content) and the
        task that starts from the group's snapshot with its setup already done."""
        key = str(plain(row.get("uid")) or "") or json.dumps(
            [plain(row.get("raw_prompt")), plain(row.get("extra_info"))],
            sort_keys=True,
            default=str,
        )
        values = {**self.run_config.sandbox, **task.sandbox}

        async def prepare() -> Snapshot:

            parent = await start_cancel_safe(sandbox_config(values).build())
            async with parent:
                await run_task_setup(parent, task)
                return await parent.snapshot()

        groups = _groups(self.settings.group_linger)
        member = groups.join(key, self.run_config.group_size, prepare)
        try:
            snap = await member.snapshot()
        except BaseException:
            await member.release()
            raise
        return member, task.model_copy(
            update={"setup": [], "sandbox": {**task.sandbox, "from_snapshot": snap}}
        )

    def _output(
        self,
        row: dict[str, Any],
        client: TokenLLMClient | None,
        traj: Trajectory | None,
        error: str | None,
        seconds: float,
    ) -> AgentLoopOutput:
        ledger = client.ledger if client is not None else TokenLedger(budget=self.response_length)
        if not ledger.prompt_ids:  # the model was never called (sandbox failed to start, ...)
            raw = plain(row.get("raw_prompt")) or []
            try:
                ledger.prompt_ids = (
                    client.merger.initial(raw)
                    if client is not None
                    else TemplateMerger(self.tokenizer).initial(raw)
                )
            except Exception:  # an unrenderable prompt: still a valid (empty) sample
                ledger.prompt_ids = [int(getattr(self.tokenizer, "pad_token_id", None) or 0)]
        ids, mask, logprobs = ledger.clipped()
        status = traj.status.value if traj is not None else "error"
        errors = [f"{e.type}: {e.message}" for e in traj.errors] if traj is not None else []
        if error:
            errors.append(error)
        reward: float | None = traj.reward if traj is not None else None
        if reward is None and (status == "error" or error):
            reward = 0.0  # infrastructure failure: a valid zero-reward sample
        tool_calls = sum(1 for s in traj.steps if s.step_type == StepType.TOOL_CALL) if traj else 0
        failed_calls = (
            sum(1 for s in traj.steps if s.step_type == StepType.TOOL_RESULT and not s.success)
            if traj
            else 0
        )
        messages = traj.messages if traj is not None else []
        return AgentLoopOutput(
            prompt_ids=self._cap_text_prompt_length(ledger.prompt_ids),
            response_ids=ids,
            response_mask=mask,
            response_logprobs=logprobs,
            reward_score=reward,
            num_turns=len([m for m in messages if m.get("role") != "system"]) or 1,
            metrics=AgentLoopMetrics(
                generate_sequences=traj.llm_seconds if traj else 0.0,
                tool_calls=traj.tool_seconds if traj else 0.0,
            ),
            extra_fields={
                "agentic_status": status,
                "agentic_errors": errors,
                "agentic_model_turns": client.calls if client is not None else 0,
                "agentic_tool_calls": tool_calls,
                "agentic_failed_tool_calls": failed_calls,
                "agentic_truncated": bool(ledger.to_dict()["truncated"])
                or status == TrajectoryStatus.TRUNCATED.value,
                "agentic_sandbox": traj.metadata.get("sandbox") if traj else None,
                "agentic_reward_details": jsonable(traj.reward_details) if traj else {},
                "agentic_seconds": seconds,
            },
        )


# Registered as VERL's @register would, except that an entry already loaded from the YAML
# (agent_loop_config_path, with its `agentic:` settings) is kept: hydra imports this module
# while instantiating that entry, and @register would replace it with a bare one.
_agent_loop_registry.setdefault(
    AGENT_NAME, {"_target_": f"{__name__}.{AgenticSandboxAgentLoop.__qualname__}"}
)


# generate_sequences, ledger_of, row_to_task, trajectories_to_dataproto are re-exported: their
# home is orchestrator/verl_batch.py, below the runner, whose generate_sequences uses them
__all__ = [
    "AGENT_NAME",
    "VERL_NAMES",
    "VERL_PRESET",
    "AgenticSandboxAgentLoop",
    "VerlLoopSettings",
    "VerlMerger",
    "generate_sequences",
    "ledger_of",
    "row_to_task",
    "trajectories_to_dataproto",
]
