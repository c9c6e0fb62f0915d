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
    policy = next(d for n, d in documents() if d["kind"] == "NetworkPolicy")
    assert policy["spec"]["ingress"] == [] and policy["spec"]["egress"] == []
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_namespace_policy_admits_the_default_sandbox_pod() -> None:
    """restricted would reject a root pod: the namespace must not enforce it while the default is root."""
    from orchestrator.sandbox.kubernetes import KubernetesSandboxConfig

    ns = yaml.safe_load((K8S / "namespace.yaml").read_text())
    level = ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    pod = KubernetesSandboxConfig().pod_manifest("p")
    if not pod["spec"]["securityContext"].get("runAsNonRoot"):
        assert level != "restricted"
    assert level in ("baseline", "restricted")
