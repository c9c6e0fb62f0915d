"""A stand-in for kodo (github.com/baidubce/kodo, not on PyPI) with its ContainerRunner surface,
backed by real Docker: lets the kodo backend be tested here. Put on sys.path by the test only."""

from __future__ import annotations

from typing import Any

import docker


class ContainerRunner:
    def __init__(
        self,
        backend: str = "docker",
        namespace: str = "default",
        kubeconfig_path: str | None = None,
    ) -> None:
        if backend != "docker":
            raise ValueError("the fake kodo only has the docker backend")
        self.client = docker.from_env()
        self.namespace = namespace
        self.started: list[str] = []

    def start_container(
        self,
        image: str,
        name: str | None = None,
        environment: dict[str, str] | None = None,
        node_selector: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        container = self.client.containers.create(  # create + start: never pulls
            image,
            command=["sleep", "infinity"],
            name=name,
            environment=environment or {},
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            labels={"fake-kodo": "1"},
        )
        container.start()
        self.started.append(container.name)
        return container

    def stop_container(self, name: str) -> None:
        self.client.containers.get(name).remove(force=True)
        self.started.remove(name)

    def cleanup(self) -> None:
        for name in list(self.started):
            self.stop_container(name)
