"""Kubelet admission by the node agent: pods bound straight to a node (spec.nodeName, as the prober binds its probe
pods) that the node's kubelet would refuse end Failed with kubelet's reason and message and never run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from netprobe import apply, make_namespace, running_with_ip, wait_pod

pytestmark = pytest.mark.cluster

NODE = "node-2"
PREFIX = "Pod was rejected: "
MESSAGES = {
    "PodOSNotSupported": "Failed to admit pod as the OS field doesn't match node OS",
    "PodOSSelectorNodeLabelDoesNotMatch": "Failed to admit pod as the `kubernetes.io/os` label doesn't match node "
                                          "label",
    "NodeAffinity": "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
    "TaintToleration": "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate",
}


@pytest.fixture(scope="module")
def ns(cluster: Any) -> str:
    return make_namespace(cluster, "lc-admission")


@pytest.fixture
def node(cluster: Any) -> Iterator[str]:
    """node-2, given back with its labels and taints as they were (the test relabels and taints it)."""
    before = json.loads(cluster.kubectl("get", "node", NODE, "-o", "json"))
    yield NODE
    now = json.loads(cluster.kubectl("get", "node", NODE, "-o", "json"))
    old_labels = before["metadata"].get("labels") or {}
    labels: dict[str, str | None] = {k: None for k in now["metadata"].get("labels") or {} if k not in old_labels}
    labels.update(old_labels)
    cluster.kubectl("patch", "node", NODE, "--type=merge", "-p", json.dumps(
        {"metadata": {"labels": labels}, "spec": {"taints": before["spec"].get("taints")}}))


def pod(name: str, ns: str, *, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A responder pod bound to NODE at creation (no scheduler involved)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
            "spec": {"nodeName": NODE, "containers": [{"name": "srv", "image": "nicolaka/netshoot",
                                                       "ports": [{"containerPort": 80}]}], **spec}}


def failed(p: dict[str, Any]) -> bool:
    return p.get("status", {}).get("phase") == "Failed"


def assert_rejected(cluster: Any, ns: str, name: str, reason: str) -> None:
    st = wait_pod(cluster, ns, name, failed, timeout=30)["status"]
    assert st["reason"] == reason
    assert st["message"] == PREFIX + MESSAGES[reason]
    assert "podIP" not in st and not st.get("containerStatuses")  # no sandbox, no container ever ran
    events = json.loads(cluster.kubectl("get", "events", "-n", ns, "--field-selector",
                                        f"involvedObject.name={name}", "-o", "json"))["items"]
    assert [(e["type"], e["reason"], e["message"]) for e in events] == [("Warning", reason, MESSAGES[reason])]


def test_windows_node_refuses_linux_pods_and_admits_pods_without_an_os(cluster: Any, ns: str, node: str) -> None:
    cluster.kubectl("label", "node", node, "kubernetes.io/os=windows", "--overwrite")
    apply(cluster,
          pod("os-field", ns, os={"name": "linux"}),
          pod("os-selector", ns, nodeSelector={"kubernetes.io/os": "linux"}),
          pod("os-label", ns, labels={"kubernetes.io/os": "linux"}),
          # what the prober asks for: both spec.os and the nodeSelector; the OS field is checked first
          pod("os-both", ns, os={"name": "linux"}, nodeSelector={"kubernetes.io/os": "linux"}),
          pod("os-none", ns))
    assert_rejected(cluster, ns, "os-field", "PodOSNotSupported")
    assert_rejected(cluster, ns, "os-selector", "NodeAffinity")
    assert_rejected(cluster, ns, "os-label", "PodOSSelectorNodeLabelDoesNotMatch")
    assert_rejected(cluster, ns, "os-both", "PodOSNotSupported")
    wait_pod(cluster, ns, "os-none", running_with_ip)  # kubelet's admission says nothing about it
    apply(cluster, pod("win", ns, os={"name": "windows"}, nodeSelector={"kubernetes.io/os": "windows"}))
    wait_pod(cluster, ns, "win", running_with_ip)
    cluster.kubectl("label", "node", node, "kubernetes.io/os=linux", "--overwrite")
    apply(cluster, pod("os-field-again", ns, os={"name": "linux"}))
    wait_pod(cluster, ns, "os-field-again", running_with_ip)  # the relabel counts for the very next pod


def test_node_selector_and_required_affinity_are_checked_at_admission(cluster: Any, ns: str, node: str) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "lc-disk", "operator": "In", "values": ["ssd"]}]}]}}}
    apply(cluster, pod("sel", ns, nodeSelector={"lc-disk": "ssd"}), pod("aff", ns, affinity=affinity))
    assert_rejected(cluster, ns, "sel", "NodeAffinity")
    assert_rejected(cluster, ns, "aff", "NodeAffinity")
    cluster.kubectl("label", "node", node, "lc-disk=ssd")
    apply(cluster, pod("sel-2", ns, nodeSelector={"lc-disk": "ssd"}), pod("aff-2", ns, affinity=affinity))
    wait_pod(cluster, ns, "sel-2", running_with_ip)
    wait_pod(cluster, ns, "aff-2", running_with_ip)


def test_no_execute_taint_refuses_untolerating_pods_but_evicts_nothing(cluster: Any, ns: str, node: str) -> None:
    apply(cluster, pod("before-taint", ns))
    wait_pod(cluster, ns, "before-taint", running_with_ip)
    cluster.kubectl("taint", "node", node, "lc-test=hostile:NoExecute", "lc-soft=1:NoSchedule")
    tolerate = [{"key": "lc-test", "operator": "Equal", "value": "hostile", "effect": "NoExecute",
                 "tolerationSeconds": 60}]
    apply(cluster, pod("no-toleration", ns), pod("tolerates", ns, tolerations=tolerate),
          pod("tolerates-all", ns, tolerations=[{"operator": "Exists"}]))
    assert_rejected(cluster, ns, "no-toleration", "TaintToleration")
    # kubelet checks only NoExecute taints: lc-soft (NoSchedule) concerns the scheduler, which nodeName bypasses
    wait_pod(cluster, ns, "tolerates", running_with_ip)
    wait_pod(cluster, ns, "tolerates-all", running_with_ip)
    # eviction of running pods is the taint-eviction controller's job (kube-controller-manager), not kubelet's
    still = json.loads(cluster.kubectl("get", "pod", "-n", ns, "before-taint", "-o", "json"))
    assert running_with_ip(still) and not still["metadata"].get("deletionTimestamp")
