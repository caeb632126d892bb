"""Recovery: after an operator kill, an API server restart and a watch expiry (410 Gone), the index converges to
exactly the cluster's state -- nothing lost, no ghosts, no crash. Checked through /metrics against a rebuild."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from localcluster.hostile import restart_apiserver
from operator_harness import (
    OperatorProcess,
    delete_namespaces,
    fresh_namespaces,
    json_of,
    list_all,
    rebuild,
    wait_for,
)
from operator_workload import Workload

from netpol_auditor.exporters.metrics import compute_aggregates
from netpol_auditor.model import PortProtocol

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

PORT = PortProtocol(80)


def expected_metrics(admin: Any) -> dict[str, Any]:
    objects = list_all(admin)
    aggregates = compute_aggregates(rebuild(admin).view(), (PORT,), 10**6)
    return {
        "objects": {kind: float(sum(o["kind"] == api_kind for o in objects))
                    for kind, api_kind in (("pod", "Pod"), ("namespace", "Namespace"),
                                           ("networkpolicy", "NetworkPolicy"))},
        "paths": {(s, d, verdict): float(n) for (s, d, _), counts in aggregates.paths.items()
                  for verdict, n in (("allowed", counts[0]), ("denied", counts[1]))},
        "policies": {k: float(v) for k, v in aggregates.policy_pods.items()},
    }


def live_metrics(operator: OperatorProcess) -> dict[str, Any]:
    families = operator.scrape()
    return {
        # the kinds a rebuild from a listing of pods, namespaces and policies counts (cluster policies: none here)
        "objects": {s.labels["kind"]: s.value for s in families["netpol_auditor_index_objects"]
                    if s.labels["kind"] in ("pod", "namespace", "networkpolicy")},
        "paths": {(s.labels["source_namespace"], s.labels["destination_namespace"], s.labels["verdict"]): s.value
                  for s in families.get("netpol_auditor_paths", [])},
        "policies": {(s.labels["namespace"], s.labels["policy"]): s.value
                     for s in families.get("netpol_auditor_policy_selected_pods", [])},
    }


def wait_converged(operator: OperatorProcess, admin: Any, timeout: float = 90) -> None:
    def converged() -> bool:
        return live_metrics(operator) == expected_metrics(admin)

    wait_for("the operator's metrics to equal a rebuild from a fresh listing", converged, timeout=timeout, interval=1)


def populate(cluster: Any, workload: Workload, namespace: str, pods: int, policies: int) -> None:
    fresh_namespaces(cluster, namespace)
    workload.namespace(namespace, {"purpose": "recovery"})
    for i in range(pods):
        workload.pod(namespace, f"p{i}", {"app": ["web", "api"][i % 2]})
    for i in range(policies):
        workload.policy(namespace, f"np{i}", {"app": "api"}, {"app": "web"} if i % 2 else None)


def churn(workload: Workload, namespace: str, tag: str) -> None:
    """Deletions (that a re-list will not report), additions and modifications."""
    workload.delete_pod(namespace, "p0")
    workload.delete_pod(namespace, "p1")
    workload.delete_policy(namespace, "np0")
    workload.relabel(namespace, "p2", {"app": "api"})
    workload.pod(namespace, f"new-{tag}", {"app": "web"})
    workload.policy(namespace, f"np-{tag}", {"app": "web"}, {"app": "api"})


def compact_etcd(state: Path) -> int:
    """Compact etcd's history up to now: watches resuming from an older resourceVersion get 410 Gone."""
    cp = json.loads((state / "controlplane.json").read_text())
    endpoint = f"http://127.0.0.1:{cp['etcd_port']}"
    status = json.loads(subprocess.run(["etcdctl", f"--endpoints={endpoint}", "endpoint", "status", "-w", "json"],
                                       check=True, capture_output=True, text=True).stdout)
    revision = int(status[0]["Status"]["header"]["revision"])
    subprocess.run(["etcdctl", f"--endpoints={endpoint}", "compact", str(revision)], check=True,
                   capture_output=True, text=True)
    return revision


def test_operator_killed_and_restarted_converges(cluster: Any, admin: Any, processes: Any) -> None:
    workload = Workload(admin)
    populate(cluster, workload, "recover-kill", pods=6, policies=3)
    first: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--ports", "80/TCP",
                                       "--recompute-delay", "0.2")
    first.wait_ready()
    wait_converged(first, admin)
    first.kill(signal.SIGKILL)
    churn(workload, "recover-kill", "k")  # while no operator runs
    second: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--ports", "80/TCP",
                                        "--recompute-delay", "0.2")
    second.wait_ready()
    wait_converged(second, admin)
    assert second.proc.poll() is None
    delete_namespaces(cluster, "recover-kill")


def test_api_server_restart_and_watch_expiry_converge(cluster: Any, admin: Any, processes: Any) -> None:
    """The operator is frozen (SIGSTOP); the API server restarts (closing its watches: no event of what follows
    reaches it), objects change, etcd is compacted and the API server restarts again. On resuming, its watches
    reconnect from a compacted resourceVersion (410 Gone), kopf re-lists -- which never reports the deletions --
    and the reconcile must remove them."""
    workload = Workload(admin)
    populate(cluster, workload, "recover-api", pods=6, policies=3)
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--ports", "80/TCP",
                                          "--recompute-delay", "0.2", "--resync-interval", "0", "--log-level",
                                          "DEBUG")
    operator.wait_ready()
    wait_converged(operator, admin)

    operator.proc.send_signal(signal.SIGSTOP)
    try:
        restart_apiserver(cluster.state)
        churn(workload, "recover-api", "a")
        compact_etcd(cluster.state)
        restart_apiserver(cluster.state)
        churn_more = workload.pod
        churn_more("recover-api", "after-restart", {"app": "api"})
    finally:
        operator.proc.send_signal(signal.SIGCONT)
    wait_converged(operator, admin)
    log = operator.log_text()
    assert "Restarting the watch-stream" in log  # kopf saw 410 Gone and re-listed
    # The periodic resync is off: the deletions were found by the reconcile that the re-list triggered.
    assert any("reconciled the index with a full listing" in line and " 0 deleted" not in line
               for line in log.splitlines()), log[-3000:]
    assert operator.proc.poll() is None and operator.healthz() == 200

    # The API server going away for a while (not just a restart) is survived too.
    restart_apiserver(cluster.state)
    workload.delete_pod("recover-api", "after-restart")
    wait_converged(operator, admin)
    assert operator.proc.poll() is None
    delete_namespaces(cluster, "recover-api")
    time.sleep(0.1)
    assert not [n for n in json_of(cluster, "get", "ns")["items"] if n["metadata"]["name"] == "recover-api"
                and n["status"].get("phase") == "Active"]
