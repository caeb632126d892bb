"""The prober inside the real operator process (``netpol-auditor run --probe``), on the local cluster: time to
detect a policy the CNI does not enforce, and what an operator killed mid-cycle leaves behind."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netpol_auditor.prober.podspec import RUN_LABEL

from .harness import (
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

NS = "pr-ttd"
WORKLOAD = client_server(NS)
DENY = deny_to_server(NS)


@pytest.fixture(scope="module")
def workload(cluster: Any) -> Iterator[Any]:
    install_crd(cluster)
    cluster.kubectl("apply", "-f", "-", input=WORKLOAD)
    wait_for("workload pods", lambda: pods_running(cluster, [NS]), timeout=120)
    yield cluster


def run_of(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"][RUN_LABEL])


def start_operator(cluster: Any, tmp_path: Path, name: str) -> OperatorProcess:
    # defaults everywhere (interval, settle, retry window, budget) except the namespaces probes may use
    return OperatorProcess(cluster.kubeconfig, tmp_path / f"{name}.log", "--probe", "--probe-namespaces", NS)


def test_time_to_detect_an_unenforced_policy(workload: Any, tmp_path: Path) -> None:
    cluster = workload
    fault(cluster, "set-none", "node-1")
    fault(cluster, "set-none", "node-2")
    op = start_operator(cluster, tmp_path, "ttd")
    samples: list[float] = []
    try:
        wait_for("a first probe cycle",
                 lambda: op.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds") > 0, timeout=120)
        for _ in range(5):
            started = time.monotonic()
            cluster.kubectl("apply", "-f", "-", input=DENY)
            wait_for("the mismatch metric", lambda: op.value("netpol_auditor_mismatches", kind="unexpectedly_allowed",
                                                             policy=f"{NS}/deny-to-server") > 0, timeout=120)
            samples.append(time.monotonic() - started)
            assert op.value("netpol_auditor_mismatches_detected_total", kind="unexpectedly_allowed",
                            policy=f"{NS}/deny-to-server") >= 1
            cluster.kubectl("delete", "networkpolicy", "-n", NS, "deny-to-server")
            wait_for("the mismatch to heal", lambda: op.value("netpol_auditor_mismatches") == 0, timeout=120)
            # the deleted policy's series go with it (no per-policy series outlives its policy)
            wait_for("the deleted policy's series removed", lambda: not [
                s for s in op.samples("netpol_auditor_mismatches_detected_total")
                if s.labels.get("policy") == f"{NS}/deny-to-server"], timeout=60)
    finally:
        op.stop()
        fault(cluster, "heal")
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    print(f"time to detect (s): samples {[round(s, 1) for s in samples]}, median {statistics.median(samples):.1f}, "
          f"p95 {p95:.1f}")
    assert p95 <= 60.0


def test_killed_mid_cycle_leaves_no_probe_pod_and_the_restart_resumes(workload: Any, tmp_path: Path) -> None:
    cluster = workload
    op = start_operator(cluster, tmp_path, "kill-1")
    try:
        wait_for("probe pods of a running round", lambda: probe_pods(cluster), timeout=120, interval=0.1)
    finally:
        op.kill()
    killed_at = time.monotonic()
    runs = {run_of(p) for p in probe_pods(cluster)}
    assert runs, "the killed operator left its round's pods (what the restart must clean up)"
    restarted = start_operator(cluster, tmp_path, "kill-2")
    try:
        wait_for("the old run's pods to be gone",
                 lambda: not [p for p in probe_pods(cluster) if run_of(p) in runs],
                 timeout=120)
        assert time.monotonic() - killed_at < 120
        old_owners = json.loads(cluster.kubectl("get", "proberuns.netpol-auditor.io", "-o", "json"))["items"]
        assert not [o for o in old_owners if o["spec"]["runId"] in runs]
        wait_for("a probe cycle of the restarted operator",
                 lambda: restarted.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds") > 0,
                 timeout=120)
    finally:
        restarted.stop()
    # a clean stop deletes its own run too
    wait_for("no probe pod after a clean stop", lambda: not probe_pods(cluster), timeout=60)
