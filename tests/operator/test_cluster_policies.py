"""The operator and the cluster-scoped policies of policy.networking.k8s.io, against the real API server: it works
unchanged when the cluster serves none of them, picks them up when their CRDs are installed while it runs (an
AdminNetworkPolicy Deny then overrides an allowing NetworkPolicy in its path metrics), and skips a malformed one
without losing anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from operator_harness import (
    OperatorProcess,
    delete_namespaces,
    fresh_namespaces,
    install_cluster_policy_crds,
    remove_cluster_policy_crds,
    wait_for,
)
from operator_workload import Workload

pytestmark = [pytest.mark.cluster]

GROUP = "policy.networking.k8s.io"
SERVER, CLIENT = "cp-server", "cp-client"


def admin_deny(priority: int) -> str:
    """An AdminNetworkPolicy denying ingress to the server namespace from the client namespace."""
    return json.dumps({
        "apiVersion": f"{GROUP}/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "cp-block-client"},
        "spec": {"priority": priority,
                 "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": SERVER}}},
                 "ingress": [{"name": "no-client", "action": "Deny", "from": [
                     {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": CLIENT}}}]}]}})


def client_to_server(operator: OperatorProcess) -> tuple[float | None, float | None]:
    """(allowed, denied) pod pairs from the client namespace to the server namespace on 80/TCP."""
    labels = {"source_namespace": CLIENT, "destination_namespace": SERVER, "port": "80", "protocol": "TCP"}
    return (operator.gauge("netpol_auditor_paths", **labels, verdict="allowed"),
            operator.gauge("netpol_auditor_paths", **labels, verdict="denied"))


@pytest.fixture()
def two_namespaces(cluster: Any, admin: Any) -> Any:
    """A web pod in the server namespace that a NetworkPolicy opens to the client namespace's pod on port 80."""
    fresh_namespaces(cluster, SERVER, CLIENT)
    workload = Workload(admin)
    workload.namespace(SERVER)
    workload.namespace(CLIENT)
    workload.pod(SERVER, "web", {"app": "web"})
    workload.pod(CLIENT, "client", {"app": "client"})
    workload.net.create_namespaced_network_policy(SERVER, {
        "metadata": {"name": "web-from-client"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CLIENT}}}],
            "ports": [{"port": 80, "protocol": "TCP"}]}]}})
    yield workload
    delete_namespaces(cluster, SERVER, CLIENT)


def start(processes: Any, cluster: Any, *args: str) -> OperatorProcess:
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--ports", "80/TCP",
                                          "--recompute-delay", "0.2", *args)
    operator.wait_ready()
    return operator


def test_without_the_crds_the_operator_is_ready_and_judges_networkpolicies(
        cluster: Any, admin: Any, processes: Any, two_namespaces: Workload) -> None:
    remove_cluster_policy_crds(cluster, admin)
    operator = start(processes, cluster)
    wait_for("the NetworkPolicy's verdict", lambda: client_to_server(operator) == (1, 0), timeout=30)
    two_namespaces.delete_policy(SERVER, "web-from-client")
    two_namespaces.policy(SERVER, "web-only-from-web", {"app": "web"}, {"app": "web"})
    wait_for("the client denied by the new NetworkPolicy", lambda: client_to_server(operator) == (0, 1), timeout=30)
    assert operator.gauge("netpol_auditor_index_objects", kind="adminnetworkpolicy") == 0
    assert operator.healthz() == 200 and operator.proc.poll() is None
    assert "AdminNetworkPolicy (policy.networking.k8s.io/v1alpha1) is not served" in operator.log_text()


def test_crds_installed_while_running_and_an_admin_deny_overrides_a_networkpolicy(
        cluster: Any, admin: Any, processes: Any, two_namespaces: Workload) -> None:
    remove_cluster_policy_crds(cluster, admin)
    # no periodic re-list: only kopf's watch, started when the CRD appears, can bring the policy in
    operator = start(processes, cluster, "--resync-interval", "0")
    wait_for("the NetworkPolicy's verdict", lambda: client_to_server(operator) == (1, 0), timeout=30)
    install_cluster_policy_crds(cluster, admin)
    cluster.kubectl("apply", "-f", "-", input=admin_deny(10))
    try:
        wait_for("the AdminNetworkPolicy Deny in the verdict", lambda: client_to_server(operator) == (0, 1),
                 timeout=60)
        assert operator.gauge("netpol_auditor_index_objects", kind="adminnetworkpolicy") == 1
        cluster.kubectl("delete", "adminnetworkpolicy", "cp-block-client")
        wait_for("allowed again once it is deleted", lambda: client_to_server(operator) == (1, 0), timeout=30)
        assert operator.gauge("netpol_auditor_index_objects", kind="adminnetworkpolicy") == 0
    finally:
        remove_cluster_policy_crds(cluster, admin)
    assert operator.healthz() == 200 and operator.proc.poll() is None


def test_a_malformed_admin_policy_is_reported_and_skipped(
        cluster: Any, admin: Any, processes: Any, two_namespaces: Workload) -> None:
    install_cluster_policy_crds(cluster, admin)
    try:
        operator = start(processes, cluster)
        wait_for("the NetworkPolicy's verdict", lambda: client_to_server(operator) == (1, 0), timeout=30)
        cluster.kubectl("apply", "-f", "-", input=admin_deny(5000))  # priority is 0-1000; the stand-in CRD lets it in
        wait_for("the malformed AdminNetworkPolicy counted as skipped", lambda: operator.gauge(
            "netpol_auditor_index_skipped_objects", kind="adminnetworkpolicy") == 1, timeout=30)
        assert "skipping AdminNetworkPolicy cp-block-client" in operator.log_text()
        assert "spec.priority" in operator.log_text()
        assert client_to_server(operator) == (1, 0)  # ignored: the verdicts are those without it
        cluster.kubectl("apply", "-f", "-", input=admin_deny(10))  # fixed
        wait_for("the fixed AdminNetworkPolicy in the verdict", lambda: client_to_server(operator) == (0, 1),
                 timeout=30)
        assert operator.gauge("netpol_auditor_index_skipped_objects", kind="adminnetworkpolicy") == 0
        assert operator.healthz() == 200 and operator.proc.poll() is None
    finally:
        remove_cluster_policy_crds(cluster, admin)
