"""kodo backend: kodo (github.com/baidubce/kodo) starts and stops the container or pod, our agent
runs the commands (over a Docker exec socket or the Kubernetes exec websocket).

kodo is not on PyPI; this backend is usable when ``import kodo`` works and says how to install
it otherwise. Used through kodo's documented surface only: ``ContainerRunner(backend=...,
namespace=..., kubeconfig_path=...)``, ``start_container(image, name=..., environment=...,
node_selector=...)``, ``stop_container(name)``, ``cleanup()``.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field

from orchestrator.exceptions import ConfigError, SandboxStartError
from orchestrator.sandbox.base import Sandbox, SandboxConfigBase, agent_command
from orchestrator.sandbox.docker import docker_api
from orchestrator.sandbox.kubernetes import KubernetesSandbox, KubernetesSandboxConfig
from orchestrator.sandbox.transport import DockerAttachTransport, Transport

INSTALL_HINT = (
    "the kodo backend needs the kodo package, which is not on PyPI: "
    "pip install git+https://github.com/baidubce/kodo.git (or use backend 'docker' / 'kubernetes')"
)


def load_kodo() -> Any:
    try:
        return importlib.import_module("kodo")
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from None


class KodoSandboxConfig(SandboxConfigBase):
    """Settings of the kodo backend (shared fields: the base)."""

    type: Literal["kodo"] = "kodo"
    image: str = "agentic-rollout/sandbox:latest"
    backend: Literal["docker", "kubernetes"] = "docker"
    namespace: str = "default"
    kubeconfig_path: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    #: kodo's start may schedule a pod and pull its image before the agent can answer
    startup_timeout: float = Field(300.0, gt=0, description="start, scheduling and image pull")
    name_prefix: str = "agentic-kodo"

    def build(self, **overrides: Any) -> KodoSandbox:
        load_kodo()  # fail at build time, with the install hint, if kodo is absent
        return KodoSandbox(self.with_overrides(overrides))


class KodoSandbox(Sandbox):
    backend: ClassVar[str] = "kodo"

    def __init__(self, config: KodoSandboxConfig) -> None:
        super().__init__(
            name=f"{config.name_prefix}-{uuid.uuid4().hex[:10]}",
            startup_timeout=config.startup_timeout,
            limits=config.limits,
        )
        self.config = config
        self._runner: Any = None
        self._started = False
        self._docker: Any = None
        self._exec_sock: Any = None
        self._k8s: Any = None

    def describe(self) -> str:
        return f"kodo ({self.config.backend}) sandbox {self.name} (image {self.config.image})"

    async def _open(self) -> Transport:
        kodo = load_kodo()

        def start() -> None:
            kwargs: dict[str, Any] = {
                "backend": self.config.backend,
                "namespace": self.config.namespace,
            }
            if self.config.kubeconfig_path:
                kwargs["kubeconfig_path"] = self.config.kubeconfig_path
            self._runner = kodo.ContainerRunner(**kwargs)
            try:
                self._runner.start_container(
                    self.config.image,
                    name=self.name,
                    environment=self.config.env,
                    node_selector=self.config.node_selector or None,
                )
            except Exception as exc:
                raise SandboxStartError(
                    f"{self.describe()}: kodo could not start it: {exc}"
                ) from exc
            self._started = True

        await asyncio.to_thread(start)
        if self.config.backend == "docker":
            sock = await asyncio.to_thread(self._docker_exec)
            return await DockerAttachTransport.from_socket(sock)
        return await self._kubernetes_exec()

    def _docker_exec(self) -> Any:

        self._docker = api = docker_api()
        exec_id = api.exec_create(
            self.name, agent_command(self.config.python), stdin=True, stdout=True, stderr=True
        )["Id"]
        self._exec_sock = api.exec_start(exec_id, socket=True)
        return self._exec_sock._sock

    async def _kubernetes_exec(self) -> Transport:
        """Our exec stream into kodo's pod through the Kubernetes backend's public pod handle
        (its retries, image pull back-off, the container named as in the pod's spec: kodo
        names it after the pod, not ``sandbox``)."""

        pod = KubernetesSandbox.for_pod(
            KubernetesSandboxConfig(
                namespace=self.config.namespace,
                kubeconfig=self.config.kubeconfig_path,
                python=self.config.python,
                startup_timeout=self.config.startup_timeout,
                limits=self.config.limits,
            ),
            self.name,
        )
        self._k8s = pod
        return await pod.attach_existing()

    async def _teardown(self) -> None:
        def stop() -> None:
            if self._exec_sock is not None:
                self._exec_sock.close()
            if self._docker is not None:
                self._docker.close()
            if self._runner is not None and self._started:
                self._runner.stop_container(self.name)

        await asyncio.to_thread(stop)
        if self._k8s is not None:
            await self._k8s.detach()
