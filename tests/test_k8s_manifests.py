"""Every manifest in k8s/ validates against the Kubernetes OpenAPI schemas, offline and strict
(unknown fields are errors). Kustomization files are checked for the files they list."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).resolve().parent.parent / "k8s"
VERSION = "1.30.0"


def documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                out.append((f"{path.name}#{i}", doc))
    return out


@pytest.mark.parametrize(("name", "doc"), documents(), ids=[n for n, _ in documents()])
def test_manifest_is_valid(name: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_validator_catches_mistakes() -> None:
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {
            "containers": [{"name": "a", "image": "b", "securityContext": {"privilegd": True}}]
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError, match="privilegd"):
        kubernetes_validate.validate(bad, VERSION, strict=True)


def test_kustomization_lists_existing_files_and_rbac_is_least_privilege() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists(), resource
    role = next(d for n, d in documents() if d["kind"] == "Role")
    verbs = {(tuple(r["resources"]), tuple(r["verbs"])) for r in role["rules"]}
    assert all("*" not in v and "secrets" not in r for r, v in verbs)
    assert (("pods/exec",), ("create", "get")) in verbs
    policy = next(d for n, d in documents() if n.startswith("networkpolicy.yaml"))
    assert policy["spec"]["ingress"] == [] and policy["spec"]["egress"] == []
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    for needed in ("configmap.yaml", "pvc.yaml", "orchestrator-job.yaml"):
        assert needed in kustomization["resources"]


def test_job_is_complete_in_cluster_and_owns_its_sandboxes() -> None:
    """The Job runs in-cluster mode, passes its pod's name and uid (ownerReferences), mounts a
    ConfigMap and a PVC that the kustomization creates, and is cleaned up when finished."""
    docs = dict(documents())
    job = docs["orchestrator-job.yaml#0"]
    pod = job["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert "sandbox.in_cluster=true" in ctr["args"]
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in ctr["env"]
    }
    assert env["POD_NAME"] == "metadata.name" and env["POD_UID"] == "metadata.uid"
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = docs["configmap.yaml#0"]
    pvc = docs["pvc.yaml#0"]
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["sandbox"]["type"] == "kubernetes" and config["sandbox"]["in_cluster"] is True
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


def test_tcp_policy_admits_only_the_orchestrator_on_the_agent_port() -> None:
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    docs = dict(documents())
    policy = docs["networkpolicy-tcp.yaml#0"]
    job_labels = docs["orchestrator-job.yaml#0"]["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress stays denied
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}  # no namespaceSelector / ipBlock: this namespace only
    assert source["podSelector"]["matchLabels"].items() <= job_labels.items()
    assert rule["ports"] == [{"protocol": "TCP", "port": KubernetesSandboxConfig().tcp_port}]
    sandbox_labels = KubernetesSandboxConfig().pod_manifest("p")["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= sandbox_labels.items()


def test_namespace_policy_admits_the_default_sandbox_pod() -> None:
    """restricted would reject a root pod: the namespace must not enforce it while the default is root."""
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    ns = yaml.safe_load((K8S / "namespace.yaml").read_text())
    level = ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    pod = KubernetesSandboxConfig().pod_manifest("p")
    if not pod["spec"]["securityContext"].get("runAsNonRoot"):
        assert level != "restricted"
    assert level in ("baseline", "restricted")
