"""One configuration model: per-layer sections, the seed's flat names through one mapping, and
every typo refused when the config is read - with its dotted path and a did-you-mean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import AgenticRollout, AgenticRolloutConfig, ConfigError
from orchestrator.agent_settings import AgentConfig
from orchestrator.config import SEED_FIELDS
from orchestrator.swe.run import SWE_TOOLS, swe_config


def test_the_seed_flat_names_are_the_agent_section() -> None:
    config = AgenticRolloutConfig(max_steps=8, temperature=0.2, tool_format="json")
    assert config.agent == AgentConfig(max_steps=8, temperature=0.2, tool_format="json")
    assert (config.max_steps, config.temperature, config.tool_format) == (8, 0.2, "json")
    config.max_steps = 3  # writable as in the seed, and the agent sees it
    assert config.agent.max_steps == 3 and config.agent_config().max_steps == 3
    assert set(SEED_FIELDS) >= {"max_steps", "max_tokens_per_step", "temperature", "tool_format"}


def test_yaml_and_overrides_take_flat_and_nested_names(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 4\nagent:\n  temperature: 0.0\nllm:\n  model: m\n")
    config = AgenticRolloutConfig.load(path, max_tokens_per_step=64, **{"agent.max_steps": 6})
    assert (config.max_steps, config.temperature, config.max_tokens_per_step) == (6, 0.0, 64)
    assert config.llm.model == "m"


def test_a_setting_given_both_ways_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 4\nagent:\n  max_steps: 5\n")
    with pytest.raises(ConfigError, match=r"max_steps is given twice"):
        AgenticRolloutConfig.load(path)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "sandbox:\n  type: docker\n  imagee: x\n",
            "sandbox.imagee: unknown key; did you mean 'image'?",
        ),
        ("llm:\n  modle: x\n", "llm.modle: unknown key; did you mean 'model'?"),
        ("agent:\n  temprature: 1\n", "agent.temprature: unknown key; did you mean 'temperature'?"),
        ("max_stepz: 3\n", "max_stepz: unknown key; did you mean 'max_steps'?"),
        (
            "tools_config:\n  bash:\n    timeoutt: 3\n",
            "tools_config.bash.timeoutt: unknown key; did you mean 'timeout'?",
        ),
        (
            "sandbox:\n  type: dockr\n",
            "sandbox.type: unknown sandbox backend 'dockr'; did you mean 'docker'?",
        ),
    ],
)
def test_a_typo_anywhere_fails_at_load_with_its_path(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        AgenticRolloutConfig.load(path)
    assert expected in str(info.value)


def test_an_unknown_tool_name_fails_before_anything_starts() -> None:
    config = AgenticRolloutConfig(tools=["bsh"], sandbox={"type": "none"})
    with pytest.raises(ConfigError, match=r"unknown tools: bsh; did you mean 'bash'\?"):
        AgenticRollout(config)


def test_the_cli_refuses_a_typo_before_starting_anything(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "run", "--prompt", "hi", "--output",
         str(tmp_path), "--set", "llm.temprature=1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "llm.temprature: unknown key" in proc.stderr
    assert not (tmp_path / "trajectories.jsonl").exists()


def test_the_swe_preset_is_set_on_the_users_config() -> None:
    base = AgenticRolloutConfig(
        agent_type="coding", max_steps=7, tools_config={"bash": {"timeout": 9}}
    )
    swe = swe_config(base)
    assert swe.tools == SWE_TOOLS and swe.max_steps == 7
    assert swe.tools_config == {"bash": {"timeout": 9}, "submit": {"mode": "auto"}}
    changed = swe_config(base, max_steps=2, **{"agent.temperature": 0.0})  # either spelling
    assert (changed.max_steps, changed.temperature, changed.tools_config["bash"]) == (
        2,
        0.0,
        {"timeout": 9},
    )
    with pytest.raises(ConfigError, match="max_stepz: unknown key"):
        swe_config(base, max_stepz=2)


def test_the_sandbox_section_is_typed_by_its_type_and_reads_as_given(tmp_path: Path) -> None:
    from orchestrator.sandbox.config import CustomSandboxSettings
    from orchestrator.sandbox.docker import DockerSandboxConfig
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    path = tmp_path / "c.yaml"
    path.write_text("sandbox:\n  type: kubernetes\n  namespace: ns1\n  ttl: 60\n")
    config = AgenticRolloutConfig.load(path)
    sandbox = config.sandbox
    assert isinstance(sandbox, KubernetesSandboxConfig)  # typed when read, not when started
    assert (sandbox.namespace, sandbox.ttl, sandbox.startup_timeout) == ("ns1", 60.0, 300.0)
    given = {"type": "kubernetes", "namespace": "ns1", "ttl": 60.0}
    # the previous version's dict reads keep working, and serialising gives the same keys
    assert sandbox == given and dict(sandbox) == given and {**sandbox} == given
    assert sandbox["namespace"] == "ns1" and sandbox.get("run_id") is None and "ttl" in sandbox
    assert config.model_dump()["sandbox"] == given
    assert json.loads(config.model_dump_json())["sandbox"] == given
    # a preset edits a key of it, and the result is typed again
    moved = config.preset(**{"sandbox.namespace": "ns2"})
    assert isinstance(moved.sandbox, KubernetesSandboxConfig) and moved.sandbox.namespace == "ns2"
    # a mapping given by copy or assignment, as when the section was a dict, is typed too
    copied = config.model_copy(update={"sandbox": {**config.sandbox, "ttl": 5}})
    assert isinstance(copied.sandbox, KubernetesSandboxConfig) and copied.sandbox.ttl == 5.0
    copied.sandbox = {"type": "none"}
    assert not copied.uses_sandbox and copied.model_dump()["sandbox"] == {"type": "none"}
    with pytest.raises(ConfigError, match=r"sandbox.imagee: unknown key; did you mean 'image'"):
        copied.sandbox = {"type": "docker", "imagee": "x"}
    default = AgenticRolloutConfig()
    assert isinstance(default.sandbox, DockerSandboxConfig) and default.sandbox == {
        "type": "docker"
    }
    assert default.uses_sandbox and not AgenticRolloutConfig(sandbox={"type": "none"}).uses_sandbox
    # a backend given by import path: its keys kept, checked by its own class when read
    custom = AgenticRolloutConfig(
        sandbox={"type": "orchestrator.sandbox.local:LocalSandboxConfig", "python": "python3"}
    )
    assert isinstance(custom.sandbox, CustomSandboxSettings) and custom.sandbox.python == "python3"
    with pytest.raises(ConfigError, match="unknown key; did you mean 'python'"):
        AgenticRolloutConfig.load(
            None, sandbox={"type": "orchestrator.sandbox.local:LocalSandboxConfig", "pyton": "x"}
        )


def test_tools_are_their_own_section_and_the_flat_spellings_map_onto_it(tmp_path: Path) -> None:
    from tools.registry import ToolsSettings

    flat = AgenticRolloutConfig(tools=["bash"], tools_config={"bash": {"timeout": 30}})
    path = tmp_path / "c.yaml"
    path.write_text("tools:\n  names: [bash]\n  config:\n    bash:\n      timeout: 30\n")
    nested = AgenticRolloutConfig.load(path)
    assert (
        flat.tools
        == nested.tools
        == ToolsSettings(names=["bash"], config={"bash": {"timeout": 30}})
    )
    assert flat.tools == ["bash"] and flat.tools_config == {"bash": {"timeout": 30}}  # seed reads
    assert flat.model_dump()["tools"] == {"names": ["bash"], "config": {"bash": {"timeout": 30}}}
    assert AgenticRolloutConfig().tools.names is None  # None: every registered tool
    # the list form and the seed name through load/preset overrides, in any order
    loaded = AgenticRolloutConfig.load(
        None, tools_config={"submit": {"mode": "auto"}}, tools=["submit"]
    )
    assert loaded.tools == ToolsSettings(names=["submit"], config={"submit": {"mode": "auto"}})
    assert loaded.preset(tools=["bash", "submit"]).tools.config == {"submit": {"mode": "auto"}}
    with pytest.raises(ConfigError, match=r"tools.nams: unknown key; did you mean 'names'"):
        AgenticRolloutConfig.load(None, **{"tools.nams": ["bash"]})
