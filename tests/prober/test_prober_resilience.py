"""The real operator process (``netpol-auditor run --probe``) keeps probing through what real clusters do to it: no
ProbeRun CRD, a kube-apiserver restart mid-round, API Priority and Fairness throttling it with real 429s, and a
failover between two replicas. Read over /metrics only, as Prometheus would."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster import hostile

from .harness import (
    CRD,
    ROOT,
    OperatorProcess,
    client_server,
    deny_to_server,
    fault,
    install_crd,
    pods_running,
    probe_pods,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NS = "pr-resilience"
WORKLOAD = client_server(NS) + "---\n" + deny_to_server(NS)
PROBE_ARGS = ("--probe", "--probe-namespaces", NS, "--probe-interval", "2", "--probe-settle", "2",
              "--probe-retry", "4")
STATE_SERIES = ("netpol_auditor_probe_cycle_last_completed_timestamp_seconds", "netpol_auditor_probe_coverage_ratio",
                "netpol_auditor_probe_paths", "netpol_auditor_mismatches", "netpol_auditor_cni_feature_enforced")


@pytest.fixture(scope="module")
def workload(cluster: Any) -> Iterator[Any]:
    install_crd(cluster)
    cluster.kubectl("apply", "-f", "-", input=WORKLOAD)
    wait_for("workload pods", lambda: pods_running(cluster, [NS]), timeout=120)
    yield cluster


def last_cycle(op: OperatorProcess) -> float:
    return op.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds")


def assert_healthy_log(op: OperatorProcess) -> None:
    text = op.log.read_text(errors="replace")
    for bad in ("Duplicated timeseries", "DuplicateTimeseries"):
        assert bad not in text, text[-3000:]


def test_without_the_probe_run_crd_probing_works_flannel_is_flagged_and_leftovers_are_swept(
        workload: Any, tmp_path: Path) -> None:
    cluster = workload
    cluster.kubectl("delete", "-f", str(CRD), "--wait=true")
    fault(cluster, "set-none", "node-1")
    fault(cluster, "set-none", "node-2")
    try:
        op = OperatorProcess(cluster.kubeconfig, tmp_path / "no-crd-1.log", *PROBE_ARGS)
        try:
            wait_for("the unenforced policy flagged", lambda: op.value(
                "netpol_auditor_mismatches", kind="unexpectedly_allowed", policy=f"{NS}/deny-to-server") > 0,
                timeout=180)
            pods = wait_for("probe pods of a round", lambda: probe_pods(cluster), timeout=120, interval=0.1)
            # owner-less runs: the pod's own Namespace is its controller, so no ReplicaSet ever adopts it
            refs = [r for p in pods for r in p["metadata"].get("ownerReferences") or []]
            assert refs and {(r["kind"], r["name"], r["controller"]) for r in refs} == {("Namespace", NS, True)}
            # probe pods never enter the index: the namespace still counts its two workload pods only
            time.sleep(1)  # the aggregates are recomputed a moment after a change
            assert op.value("netpol_auditor_pods", namespace=NS, direction="ingress") == 2
        finally:
            op.kill()
        assert "the ProbeRun CRD is not installed" in op.log.read_text()
        assert_healthy_log(op)
        left = {p["metadata"]["name"] for p in probe_pods(cluster)}
        restarted = OperatorProcess(cluster.kubeconfig, tmp_path / "no-crd-2.log", *PROBE_ARGS)
        try:
            if left:
                wait_for("the killed run's pods swept",
                         lambda: not left & {p["metadata"]["name"] for p in probe_pods(cluster)}, timeout=120)
            wait_for("the restarted operator's first cycle", lambda: last_cycle(restarted) > 0, timeout=180)
        finally:
            restarted.stop()
        assert_healthy_log(restarted)
        wait_for("no probe pod after a clean stop", lambda: not probe_pods(cluster), timeout=60)
    finally:
        fault(cluster, "heal")
        install_crd(cluster)


def test_an_api_server_restart_and_throttling_leave_the_operator_probing(workload: Any, tmp_path: Path) -> None:
    """As a ServiceAccount (system:masters is exempt from API Priority and Fairness): a kube-apiserver restart in
    the middle of a round, then a period in which its flow is throttled to real 429s; after each the operator
    completes probe cycles again within a bounded time, and never registers a metric twice."""
    cluster = workload
    kubeconfig = hostile.service_account_kubeconfig(cluster, "pr-resilience-operator", "netpol-auditor",
                                                    "cluster-admin")
    op = OperatorProcess(kubeconfig, tmp_path / "restart.log", *PROBE_ARGS)
    try:
        wait_for("a first probe cycle", lambda: last_cycle(op) > 0, timeout=180)
        wait_for("a round in progress", lambda: probe_pods(cluster), timeout=120, interval=0.1)
        hostile.restart_apiserver(cluster, downtime=2.0, grace=2.0)
        restarted_at = time.time()
        wait_for("a probe cycle completed after the restart", lambda: last_cycle(op) > restarted_at, timeout=180)
        assert op.value("netpol_auditor_probe_errors_total") > 0, "the failed round was counted"

        stop_burst = threading.Event()
        statuses: list[int] = []

        def burst() -> None:
            while not stop_burst.is_set():
                statuses.extend(hostile.request_burst(kubeconfig, f"/api/v1/namespaces/{NS}/pods", concurrency=16,
                                                      per_worker=5).statuses)

        with hostile.throttle_service_account(cluster, "pr-resilience-operator", "netpol-auditor"):
            worker = threading.Thread(target=burst, daemon=True)
            worker.start()
            try:
                throttled_from = time.time()
                wait_for("a probe cycle completed while throttled", lambda: last_cycle(op) > throttled_from + 1,
                         timeout=240)
            finally:
                stop_burst.set()
                worker.join(60)
        assert 429 in statuses, "the account was really throttled"
        assert op.proc.poll() is None
    finally:
        op.stop()
        hostile.delete_service_account(cluster, "pr-resilience-operator", "netpol-auditor")
    assert_healthy_log(op)


def apply_peering(cluster: Any, name: str) -> None:
    cluster.kubectl("apply", "-f", str(ROOT / "charts" / "netpol-auditor" / "crds" / "kopf-peering.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}))


def exports_probe_state(op: OperatorProcess) -> bool:
    return any(op.samples(name) for name in STATE_SERIES)


def test_a_failover_with_probing_on_leaves_exactly_one_replica_reporting(workload: Any, tmp_path: Path) -> None:
    """Two replicas, probing on. The active one is frozen (SIGSTOP, as in a partition): the standby takes over and
    probes. Thawed, the two settle on one active replica; the other, a standby again, exports no probe series — no
    stale mismatch, coverage or cycle time."""
    cluster = workload
    apply_peering(cluster, "np-ha-probe")
    args = ("--no-standalone", "--peering", "np-ha-probe", "--peering-lifetime", "10", *PROBE_ARGS)
    replicas = [OperatorProcess(cluster.kubeconfig, tmp_path / f"ha-{i}.log", *args) for i in range(2)]
    try:
        def reporting() -> list[OperatorProcess]:
            return [r for r in replicas if r.proc.poll() is None and _alive(r) and exports_probe_state(r)]

        active = wait_for("one replica probing", lambda: (lambda r: r[0] if len(r) == 1 else None)(reporting()),
                          timeout=180)
        wait_for("its first cycle", lambda: last_cycle(active) > 0, timeout=180)
        standby = next(r for r in replicas if r is not active)
        assert not exports_probe_state(standby)
        active.proc.send_signal(signal.SIGSTOP)
        try:
            frozen_at = time.time()
            wait_for("the standby to take over and complete a probe cycle",
                     lambda: last_cycle(standby) > frozen_at, timeout=180)
        finally:
            active.proc.send_signal(signal.SIGCONT)
        # thawed: exactly one replica reports, and it stays that way
        wait_for("exactly one reporting replica", lambda: len(reporting()) == 1 and all(
            _alive(r) for r in replicas), timeout=120)
        for _ in range(5):
            time.sleep(2)
            assert len(reporting()) == 1, [json.dumps([r.samples(n) != [] for n in STATE_SERIES]) for r in replicas]
    finally:
        for r in replicas:
            r.stop()
    for r in replicas:
        assert_healthy_log(r)


def _alive(op: OperatorProcess) -> bool:
    try:
        op.samples("netpol_auditor_build_info")
    except OSError:
        return False
    return True
