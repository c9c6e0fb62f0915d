"""GRPO groups in the VERL agent loop: n samples of one prompt whose row has ``setup`` run it
once (a sandbox snapshotted, each sample started from the snapshot), through VERL's own
``AgentLoopWorker`` with a scripted server handle and real Docker sandboxes."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
import yaml

from orchestrator.sandbox.docker import LABEL_RUN
from orchestrator.sandbox.fork import LABEL_KIND

from .conftest import SANDBOX_IMAGE, TEST_RUN_ID
from .test_verl import (  # noqa: F401 - fixtures
    ROOT,
    SCRIPTS,
    ScriptedServer,
    _worker_config,
    model_dir,
    pytestmark,
    tokenizer,
)

PROBE = "cat /workspace/token; echo; wc -l < /workspace/runs; touch /workspace/s-$RANDOM$RANDOM; ls /workspace | grep -c s-"


@pytest.mark.docker
async def test_verl_group_runs_setup_once_per_prompt(
    model_dir: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    import numpy as np
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.protocol import DataProto

    from orchestrator import verl_integration

    SCRIPTS["group"] = [
        "<tool_call>\n"
        + json.dumps({"name": "bash", "arguments": {"command": PROBE}})
        + "\n</tool_call>",
        "done",
    ]
    saved = tmp_path / "trajectories.jsonl"
    loop_yaml = tmp_path / "agent_loop.yaml"
    entries = yaml.safe_load((ROOT / "examples" / "verl" / "agent_loop.yaml").read_text())
    agentic = entries[0]["agentic"]
    agentic["sandbox"].update({"image": SANDBOX_IMAGE, "run_id": TEST_RUN_ID})
    agentic.update(save_path=str(saved), group_size=3)
    loop_yaml.write_text(yaml.safe_dump(entries))
    from transformers import AutoTokenizer

    server = ScriptedServer(AutoTokenizer.from_pretrained(model_dir))
    worker = AgentLoopWorker(_worker_config(model_dir, loop_yaml), llm_client=server)
    setup = [
        "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /workspace/token",
        "echo ran >> /workspace/runs",
    ]
    # two prompts, GRPO n=3 each: rows repeated as VERL's trainer does (interleaved)
    rows, extra = [], []
    for p in ("one", "two"):
        for _ in range(3):
            rows.append([{"role": "user", "content": f"SCRIPT:group prompt {p}"}])
            extra.append({"task_id": f"grp-{p}", "setup": setup})
    prepared_before = sum(g.prepared for g in verl_integration._GROUPS.values())
    batch = DataProto(
        batch=None,
        non_tensor_batch={
            "raw_prompt": np.array(rows, dtype=object),
            "agent_name": np.array(["agentic_sandbox_agent"] * 6, dtype=object),
            "extra_info": np.array(extra, dtype=object),
            "reward_model": np.array([{"ground_truth": "done"}] * 6, dtype=object),
            "index": np.array([0, 0, 0, 1, 1, 1]),
        },
        meta_info={},
    )
    out = await worker.generate_sequences(batch)
    assert list(out.non_tensor_batch["agentic_status"]) == ["completed"] * 6, out.non_tensor_batch[
        "agentic_errors"
    ]
    # setup prepared once per prompt, not once per sample
    assert sum(g.prepared for g in verl_integration._GROUPS.values()) - prepared_before == 2
    trajectories = [json.loads(line) for line in saved.read_text().splitlines()]
    tokens: dict[str, set[str]] = {}
    for traj in trajectories:
        group = traj["metadata"]["group"]
        assert group["size"] == 3
        observation = next(m["content"] for m in traj["messages"] if m["role"] == "tool")
        lines = str(observation).split("\n")
        # the same token and one setup run in every sample; each its own sandbox (1 file)
        assert lines[1:3] == ["1", "1"], observation
        tokens.setdefault(traj["metadata"]["task_id"], set()).add(lines[0])
        tokens.setdefault(group["id"], set())
    by_task = {k: v for k, v in tokens.items() if k.startswith("grp-")}
    assert sorted(by_task) == ["grp-one", "grp-two"]
    assert all(len(v) == 1 for v in by_task.values()) and by_task["grp-one"] != by_task["grp-two"]
    # every sample released: the snapshot images are gone
    left = docker.from_env().images.list(
        filters={"label": [f"{LABEL_KIND}=snapshot", f"{LABEL_RUN}={TEST_RUN_ID}"]}
    )
    assert left == []
