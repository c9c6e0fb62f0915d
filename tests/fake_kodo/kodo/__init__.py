"""A stand-in for kodo (github.com/baidubce/kodo, not on PyPI) with its ContainerRunner surface:
lets the kodo backend be tested here. Docker mode uses real Docker; kubernetes mode creates pods
through the real kubernetes client (in the tests: against the API double). Put on sys.path by
the tests only."""

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
        self.backend = backend
        self.namespace = namespace
        self.started: list[str] = []
        if backend == "kubernetes":
            from kubernetes import client, config

            configuration = client.Configuration()
            config.load_kube_config(config_file=kubeconfig_path, client_configuration=configuration)
            self.core = client.CoreV1Api(client.ApiClient(configuration))
        else:
            self.client = docker.from_env()

    def start_container(
        self,
        image: str,
        name: str | None = None,
        environment: dict[str, str] | None = None,
        node_selector: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.backend == "kubernetes":
            pod: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": name,  # as kodo does: the container is named after the pod
                            "image": image,
                            "command": ["sleep", "infinity"],
                            "env": [
                                {"name": k, "value": v} for k, v in (environment or {}).items()
                            ],
                        }
                    ],
                },
            }
            if node_selector:
                pod["spec"]["nodeSelector"] = node_selector
            self.core.create_namespaced_pod(self.namespace, pod)
            self.started.append(str(name))
            return pod
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
        if self.backend == "kubernetes":
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        else:
            self.client.containers.get(name).remove(force=True)
        self.started.remove(name)

    def cleanup(self) -> None:
        for name in list(self.started):
            self.stop_container(name)
