"""The backends' settings share one base: the same fields mean the same thing everywhere, and
configs written before the base existed still load."""

from __future__ import annotations

import pytest

from orchestrator.exceptions import ConfigError
from orchestrator.sandbox import sandbox_config
from orchestrator.sandbox.agent_sandbox import AgentSandboxConfig
from orchestrator.sandbox.base import ManagedSandboxConfig, SandboxConfigBase
from orchestrator.sandbox.config import validate_sandbox
from orchestrator.sandbox.docker import DockerSandboxConfig
from orchestrator.sandbox.kodo import KodoSandboxConfig
from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig
from orchestrator.sandbox.labels import LABEL_EXPIRES
from orchestrator.sandbox.local import LocalSandboxConfig

ALL = [
    DockerSandboxConfig,
    LocalSandboxConfig,
    KubernetesSandboxConfig,
    KodoSandboxConfig,
    AgentSandboxConfig,
]
MANAGED = [DockerSandboxConfig, KubernetesSandboxConfig, AgentSandboxConfig]


@pytest.mark.parametrize("cls", ALL)
def test_every_backend_config_has_the_shared_fields(cls: type[SandboxConfigBase]) -> None:
    assert issubclass(cls, SandboxConfigBase)
    for field in ("python", "env", "startup_timeout", "limits"):
        assert field in cls.model_fields
        assert (
            cls.model_fields[field].annotation == SandboxConfigBase.model_fields[field].annotation
        )


@pytest.mark.parametrize("cls", MANAGED)
def test_managed_backends_share_ttl_and_labels(cls: type[ManagedSandboxConfig]) -> None:
    assert issubclass(cls, ManagedSandboxConfig)
    cfg = cls()
    assert isinstance(cfg.ttl, float) and cfg.ttl == 6 * 3600
    # an int from YAML and a float both load; the type no longer depends on the backend
    assert cls(ttl=90).ttl == 90.0 and cls(ttl=90.5).ttl == 90.5
    with pytest.raises(ValueError, match="greater than 0"):
        cls(ttl=0)


def test_startup_timeout_defaults_differ_only_where_a_pod_is_scheduled() -> None:
    base = SandboxConfigBase.model_fields["startup_timeout"].default
    assert base == 60.0
    assert DockerSandboxConfig().startup_timeout == base
    assert LocalSandboxConfig().startup_timeout == base
    assert AgentSandboxConfig().startup_timeout == base  # bound after the claim is Ready
    # scheduling and the image pull happen within it on a cluster
    assert KubernetesSandboxConfig().startup_timeout == 300.0
    assert KodoSandboxConfig().startup_timeout == 300.0


def test_fractional_ttl_becomes_a_whole_active_deadline() -> None:
    pod = KubernetesSandboxConfig(ttl=90.2).pod_manifest("p")
    assert pod["spec"]["activeDeadlineSeconds"] == 91
    assert isinstance(pod["spec"]["activeDeadlineSeconds"], int)
    assert float(pod["metadata"]["annotations"][LABEL_EXPIRES]) > 0


def test_old_dict_configs_still_load() -> None:
    # field names from before the base, as run configs and the VERL YAML spell them
    k8s = sandbox_config(
        {"type": "kubernetes", "ttl": 3600, "startup_timeout": 120, "python": "python3.12"}
    )
    assert isinstance(k8s, KubernetesSandboxConfig) and k8s.ttl == 3600.0
    docker = sandbox_config({"type": "docker", "env": {"A": "1"}, "labels": {"x": "y"}})
    assert isinstance(docker, DockerSandboxConfig) and docker.env == {"A": "1"}
    claim = validate_sandbox({"type": "agent-sandbox", "warm_pool": "p", "ttl": 600})
    assert isinstance(claim, AgentSandboxConfig) and claim.ttl == 600.0
    local = sandbox_config({"type": "local"})
    assert isinstance(local, LocalSandboxConfig) and local.python  # the host's interpreter


def test_typo_in_a_shared_field_names_it() -> None:
    with pytest.raises(
        ConfigError, match=r"startup_timout: unknown key; did you mean 'startup_timeout'"
    ):
        validate_sandbox({"type": "kubernetes", "startup_timout": 5})


def test_agent_sandbox_refuses_env_it_cannot_apply() -> None:
    # a claimed pod already runs: silently dropping env would run tools without it
    with pytest.raises(ConfigError, match="SandboxTemplate"):
        validate_sandbox({"type": "agent-sandbox", "env": {"A": "1"}})


def test_agent_sandbox_passes_its_limits_to_the_transport() -> None:
    cfg = AgentSandboxConfig.model_validate({"limits": {"max_frame_bytes": 1 << 20}})
    assert cfg.kubernetes().limits == cfg.limits
