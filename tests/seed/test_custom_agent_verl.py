"""The seed's custom agent's trajectories export to VERL's ``DataProto`` like a built-in
agent's (tokenizer and checks as in tests/test_verl.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import AgenticRolloutConfig
from orchestrator.runner import AgenticRollout
from orchestrator.testing import ScriptedLLM
from tests import test_verl
from tests.seed.custom_agent import CustomReasoningAgent

# test_verl's fixtures (SmolLM2's tokenizer), shared rather than rebuilt
model_dir = test_verl.model_dir
tokenizer = test_verl.tokenizer
_decode = test_verl._decode

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning"
)


async def test_custom_agent_trajectories_export_to_dataproto(
    tokenizer: Any, tmp_path: Path
) -> None:
    from verl.protocol import DataProto

    from orchestrator.verl_integration import trajectories_to_dataproto

    llm = ScriptedLLM.by_prompt(
        {
            "6*7": ['Action: calculator\nAction Input: {"expression": "6*7"}', "Final Answer: 42"],
            "2+2": ["Final Answer: 4"],
        }
    )
    config = AgenticRolloutConfig(
        tools=["calculator"],
        sandbox={"type": "none"},
        trajectory_save_path=str(tmp_path / "t.jsonl"),
    )
    rollout = AgenticRollout(config, llm_client=llm, agent=CustomReasoningAgent(max_steps=4))
    trajs = (
        await rollout.run(
            [
                {"id": "a", "prompt": "what is 6*7?", "answer": "42"},
                {"id": "b", "prompt": "2+2?", "answer": "5"},
            ]
        )
    ).trajectories
    assert [t.reward for t in trajs] == [1.0, 0.0]
    data = trajectories_to_dataproto(trajs, tokenizer)
    assert isinstance(data, DataProto)
    b, p = data.batch, data.meta_info["prompt_length"]
    for i, traj in enumerate(trajs):
        n = int(b["attention_mask"][i][p:].sum())
        resp, mask = b["responses"][i][:n].tolist(), b["response_mask"][i][:n].tolist()
        model = _decode(tokenizer, [t for t, m in zip(resp, mask, strict=True) if m])
        replies = [m["content"] for m in traj.messages if m["role"] == "assistant"]
        assert model == "".join(c + "<|im_end|>" for c in replies)
        assert float(b["rm_scores"][i][n - 1]) == traj.reward
    assert data.non_tensor_batch["request_id"].tolist() == ["a", "b"]
