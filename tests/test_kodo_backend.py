"""The kodo backend: a clear error without kodo; with kodo's ContainerRunner (a stand-in backed
by real Docker, tests/fake_kodo) for lifecycle and our agent for execution."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.exceptions import ConfigError
from orchestrator.sandbox import sandbox_config

from .conftest import SANDBOX_IMAGE

FAKE = str(Path(__file__).resolve().parent / "fake_kodo")


def test_without_kodo_the_error_says_how_to_install_it() -> None:
    assert "kodo" not in sys.modules
    with pytest.raises(
        ConfigError,
        match=r"the kodo backend needs the kodo package, which is not on PyPI: "
        r"pip install git\+https://github.com/baidubce/kodo.git",
    ):
        sandbox_config(type="kodo").build()


@pytest.fixture
def kodo_on_path() -> Iterator[None]:
    sys.path.insert(0, FAKE)
    try:
        yield
    finally:
        sys.path.remove(FAKE)
        sys.modules.pop("kodo", None)


@pytest.mark.docker
async def test_kodo_lifecycle_with_our_agent(kodo_on_path: None) -> None:
    sandbox = sandbox_config(type="kodo", image=SANDBOX_IMAGE, env={"FROM_KODO": "yes"}).build()
    async with sandbox:
        r = await sandbox.run("echo $FROM_KODO; cd /tmp && export X=1")
        assert r.output == "yes\n"
        assert (await sandbox.run("echo $X $(pwd)")).output == "1 /tmp\n"
        await sandbox.write_file("/tmp/k", "v")
        assert await sandbox.read_file("/tmp/k") == b"v"
        name = sandbox.name
    client = docker.from_env()
    assert client.containers.list(all=True, filters={"name": name}) == []  # kodo stopped it
    client.close()


@pytest.mark.docker
async def test_kodo_on_kubernetes_with_our_exec_stream(
    kodo_on_path: None, kube_double: object
) -> None:
    kubeconfig = str(kube_double.kubeconfig_path)  # type: ignore[attr-defined]
    sandbox = sandbox_config(
        type="kodo",
        backend="kubernetes",
        namespace="agentic-rollout",
        kubeconfig_path=kubeconfig,
        image=SANDBOX_IMAGE,
        env={"VIA": "kodo-k8s"},
    ).build()
    async with sandbox:
        assert (await sandbox.run("echo $VIA")).output == "kodo-k8s\n"
        name = sandbox.name
    assert ("agentic-rollout", name) not in kube_double.pods  # type: ignore[attr-defined]
