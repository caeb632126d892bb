"""Least privilege and high availability, against the real API server.

RBAC: the operator runs as the ServiceAccount the Helm chart creates, with exactly the ClusterRole the chart grants
(rendered by the real ``helm template``), does its whole job, and is denied Secrets and writes to what it watches.

HA: two replicas peer through a ClusterKopfPeering (the chart's CRD); one is active, the other a ready standby that
exports no index series; kill the active one and the standby takes over.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import (
    OperatorProcess,
    delete_namespaces,
    fresh_namespaces,
    install_cluster_policy_crds,
    json_of,
    remove_cluster_policy_crds,
    wait_for,
)
from operator_workload import Workload

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "netpol-auditor"
RELEASE, RELEASE_NS = "rbactest", "netpol-auditor-rbac"


def helm() -> str:
    out = subprocess.run(["bash", str(ROOT / "charts" / "install-helm.sh"), "--print-path"], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1]


def rendered_chart() -> list[dict[str, Any]]:
    text = subprocess.run([helm(), "template", RELEASE, str(CHART), "--namespace", RELEASE_NS], check=True,
                          capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def apply_docs(cluster: Any, docs: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def apply_peering_crds(cluster: Any) -> None:
    cluster.kubectl("apply", "-f", str(CHART / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")


def token_kubeconfig(cluster: Any, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount with a bound token (TokenRequest API)."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=2h").strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": account}}],
        "current-context": "sa",
    }))
    return path


def kubectl_as(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
                          timeout=60)


def test_operator_works_with_exactly_the_charts_permissions_and_no_secrets(
        cluster: Any, admin: Any, processes: Any, tmp_path: Path) -> None:
    docs = rendered_chart()
    rbac = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                                             "RoleBinding")]
    peering = [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    assert {d["kind"] for d in rbac} >= {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"} and peering
    cluster.kubectl("create", "namespace", RELEASE_NS, check=False)
    apply_peering_crds(cluster)
    apply_docs(cluster, rbac + peering)
    account = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]["name"]
    kubeconfig = token_kubeconfig(cluster, RELEASE_NS, account, tmp_path / "sa.kubeconfig")

    # The ServiceAccount may not read Secrets nor write what the operator watches: the API server says no.
    secret_ns = "rbac-secrets"
    fresh_namespaces(cluster, secret_ns)
    cluster.kubectl("create", "namespace", secret_ns)
    cluster.kubectl("create", "secret", "generic", "s", "-n", secret_ns, "--from-literal=k=v")
    denied = kubectl_as(kubeconfig, "get", "secret", "s", "-n", secret_ns, "-o", "json")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied
    assert "Forbidden" in kubectl_as(kubeconfig, "get", "secrets", "-A").stderr
    for verb, resource in (("get", "secrets"), ("list", "secrets"), ("watch", "secrets"), ("get", "configmaps"),
                           ("patch", "pods"), ("update", "pods"), ("patch", "namespaces"),
                           ("patch", "networkpolicies.networking.k8s.io"),
                           ("delete", "networkpolicies.networking.k8s.io")):
        answer = kubectl_as(kubeconfig, "auth", "can-i", verb, resource, "--all-namespaces").stdout.strip()
        assert answer == "no", (verb, resource, answer)

    # ...and yet the operator, running as it, does its whole job: lists and watches (the cluster policies too, here
    # served), peers, posts Events.
    install_cluster_policy_crds(cluster, admin)
    workload = Workload(admin)
    fresh_namespaces(cluster, "rbac-app")
    workload.namespace("rbac-app")
    workload.pod("rbac-app", "a", {"app": "a"})
    workload.policy("rbac-app", "nothing", {"app": "ghost"}, None)
    operator: OperatorProcess = processes(kubeconfig, "--peering", peering[0]["metadata"]["name"], "--no-probe",
                                          "--recompute-delay", "0.2", "--events-grace", "1")
    operator.wait_ready(timeout=90)
    wait_for("the pod in the index", lambda: (operator.gauge("netpol_auditor_policy_selected_pods",
                                                             namespace="rbac-app", policy="nothing") == 0
                                              and (operator.gauge("netpol_auditor_index_objects", kind="pod") or 0)
                                              >= 1))
    wait_for("the operator's Event on the policy", lambda: [
        e for e in json_of(cluster, "get", "events", "-n", "rbac-app")["items"]
        if e["involvedObject"]["name"] == "nothing" and e["reason"] == "PolicySelectsNoPods"], timeout=30)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": "rbac-deny"},
        "spec": {"priority": 10,
                 "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "rbac-app"}}},
                 "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}}))
    wait_for("the AdminNetworkPolicy in the index", lambda: operator.gauge(
        "netpol_auditor_index_objects", kind="adminnetworkpolicy") == 1, timeout=30)
    log = operator.log_text()
    remove_cluster_policy_crds(cluster, admin)
    # a 403 as an HTTP status ("(403)", "status 403", "403 Forbidden"), not as digits of a timestamp
    assert "Forbidden" not in log and not re.search(r"(?<![\d,.:])403(?!\d)", log), log[-3000:]
    # The Secret value is nowhere in what the operator saw or said.
    assert base64.b64encode(b"v").decode() not in log
    delete_namespaces(cluster, secret_ns, "rbac-app")


def test_two_replicas_one_active_and_the_standby_takes_over(cluster: Any, admin: Any, processes: Any) -> None:
    apply_peering_crds(cluster)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "netpol-auditor-ha"}}))
    workload = Workload(admin)
    fresh_namespaces(cluster, "ha-app")
    workload.namespace("ha-app")
    workload.pod("ha-app", "a", {"app": "a"})
    args = ("--peering", "netpol-auditor-ha", "--peering-lifetime", "10", "--no-probe", "--recompute-delay", "0.2")
    replicas: list[OperatorProcess] = [processes(cluster.kubeconfig, *args, name="replica") for _ in range(2)]

    def roles() -> list[str] | None:
        states = [r.readyz() for r in replicas]
        if all(code == 200 for code, _ in states):
            return [text.split(":")[0] for _, text in states]
        return None

    wait_for("one active and one standby replica", lambda: sorted(roles() or []) == ["ready", "standby"],
             timeout=90, interval=0.5)
    # Stable: it stays that way (no flapping between the replicas).
    for _ in range(10):
        assert sorted(roles() or []) == ["ready", "standby"]
    active = next(r for r in replicas if r.readyz()[1] == "ready")
    standby = next(r for r in replicas if r is not active)
    assert (active.gauge("netpol_auditor_index_objects", kind="pod") or 0) >= 1
    assert standby.gauge("netpol_auditor_index_objects", kind="pod") == 0  # a standby exports no index
    assert standby.scrape().get("netpol_auditor_paths", []) == []

    active.kill(signal.SIGKILL)
    workload.pod("ha-app", "b", {"app": "b"})  # a change while nobody is active
    wait_for("the standby to take over", lambda: standby.readyz() == (200, "ready"), timeout=60, interval=0.5)
    wait_for("the new active replica to index the change", lambda: (standby.gauge(
        "netpol_auditor_index_objects", kind="pod") or 0) >= 2, timeout=30)
    assert "this replica is now active" in standby.log_text()
    delete_namespaces(cluster, "ha-app")
