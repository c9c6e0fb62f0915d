"""Shared fixtures. Docker tests run against the real engine and the images built by
``sandbox_images/build.sh``; without them they skip on a laptop, and under ``CI=true`` a skip
of a ``docker``-marked test is turned into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.sandbox.docker import DockerSandbox, DockerSandboxConfig
from orchestrator.sandbox.labels import LABEL_MANAGED, LABEL_RUN
from orchestrator.sandbox.local import LocalSandbox, LocalSandboxConfig

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

SANDBOX_IMAGE = os.environ.get("AGENTIC_TEST_IMAGE", "agentic-rollout/sandbox:latest")
NOPYTHON_IMAGE = "agentic-rollout/nopython:latest"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: every container a test creates carries this run id, so leaks are found and removed
TEST_RUN_ID = f"pytest-{uuid.uuid4().hex[:8]}"

_docker_state: dict[str, Any] = {}


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in status:
            out.append(int(entry.name))
    return out


def process_alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def docker_unavailable_reason() -> str | None:
    if "reason" not in _docker_state:
        reason = None
        try:
            import docker

            client = docker.from_env(timeout=10)
            client.ping()
            for image in (SANDBOX_IMAGE, NOPYTHON_IMAGE):
                try:
                    client.images.get(image)
                except docker.errors.ImageNotFound:
                    reason = f"image {image} missing: run `agentic-rollout build-images`"
            client.close()
        except Exception as exc:
            reason = f"no Docker engine: {exc}"
        _docker_state["reason"] = reason
    return _docker_state["reason"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        reason = docker_unavailable_reason()
        if reason:
            if IN_CI:
                pytest.fail(f"CI=true but Docker tests cannot run: {reason}", pytrace=False)
            pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that restart dockerd run last, so a restart cannot disturb the others."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_dockerd") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and item.get_closest_marker("docker") is not None:
        report.outcome = "failed"
        report.longrepr = f"docker test skipped under CI=true: {report.longrepr}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any test leaked a container; remove what leaked."""
    if docker_unavailable_reason():
        return
    import docker

    client = docker.from_env()
    leaked = client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={TEST_RUN_ID}"})
    for c in leaked:
        c.remove(force=True)
    client.close()
    if leaked:
        names = ", ".join(c.name for c in leaked)
        print(f"\nLEAKED CONTAINERS (removed now): {names}")
        session.exitstatus = 1


def docker_config(**kwargs: Any) -> DockerSandboxConfig:
    values: dict[str, Any] = {
        "image": SANDBOX_IMAGE,
        "run_id": TEST_RUN_ID,
        "memory": "512m",
        "pids_limit": 256,
    }
    values.update(kwargs)
    return DockerSandboxConfig(**values)


@pytest.fixture
async def docker_sandbox() -> AsyncIterator[DockerSandbox]:
    sandbox = docker_config().build()
    async with sandbox:
        yield sandbox


@pytest.fixture
async def local_sandbox() -> AsyncIterator[LocalSandbox]:
    sandbox = LocalSandboxConfig().build()
    async with sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def kube_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The wire-level Kubernetes API double (tests/k8s_double.py), backed by Docker."""
    from tests.k8s_double import KubeDouble

    with KubeDouble() as double:
        double.kubeconfig_path = double.kubeconfig(tmp_path_factory.mktemp("kube"))
        yield double


def kube_config(double: Any, **kwargs: Any) -> Any:
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    values: dict[str, Any] = {
        "image": SANDBOX_IMAGE,
        "run_id": TEST_RUN_ID,
        "memory": "512Mi",
        "kubeconfig": str(double.kubeconfig_path),
        "startup_timeout": 30,
    }
    values.update(kwargs)
    return KubernetesSandboxConfig(**values)


@pytest.fixture(
    params=[
        "local",
        pytest.param("docker", marks=pytest.mark.docker),
        pytest.param("kubernetes", marks=pytest.mark.docker),
    ]
)
async def sandbox(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The same behaviour tests against every backend (Kubernetes through the API double)."""
    if request.param == "local":
        cm: Any = LocalSandboxConfig().build()
    elif request.param == "docker":
        cm = docker_config().build()
    else:
        cm = kube_config(request.getfixturevalue("kube_double")).build()
    async with cm:
        yield cm


@pytest.fixture
def managed_label() -> str:
    return f"{LABEL_MANAGED}=1"


@pytest.fixture
async def scratch(sandbox: Any) -> str:
    """A fresh directory inside the sandbox's own workdir (removed with the sandbox), so tests
    never share paths, not even on the local backend where /tmp is the host's."""
    path = f"{(await sandbox.info())['cwd']}/scratch-{uuid.uuid4().hex[:8]}"
    await sandbox.mkdir(path)
    return str(path)
