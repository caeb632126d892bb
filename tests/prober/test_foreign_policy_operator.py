"""Pods under Cilium and Calico policies on the local cluster in Flannel mode (no enforcer: every path a
NetworkPolicy denies is a mismatch): the operator picks the vendor kinds up when their CRDs are installed while it
runs and counts them per kind; its prober reports the paths they may decide inconclusive, ``foreign_policy``, never
mismatches, while the other pods' mismatches are still flagged; ``analyze`` on the live cluster agrees.

Minimal CRD stand-ins (tests/operator/manifests/vendor-policy-crds.yaml) serve the kinds; nothing enforces them,
which is the point: what a vendor policy would decide is out of model, whatever happens on the wire."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import OperatorProcess, apply, fault, install_crd, pods_running, wait_for

pytestmark = [pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]
VENDOR_CRDS = ROOT / "tests" / "operator" / "manifests" / "vendor-policy-crds.yaml"
SRC, DST = "fp-src", "fp-dst"

# fp-src: `client` (its egress under a Calico policy) and `other` (no vendor policy; the NetworkPolicy `other-open`
# gives it a probe group of its own). fp-dst: `server` and `guarded` (its ingress under a Cilium policy), each
# isolated for ingress by a NetworkPolicy admitting nothing: without an enforcer, every path to them that is not
# out of model is a mismatch.
WORKLOAD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {SRC}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {DST}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {SRC}, labels: {{app: client}}}}
spec: {{nodeName: node-1, containers: [{{name: c, image: client, ports: [{{containerPort: 7000}}]}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: other, namespace: {SRC}, labels: {{app: other}}}}
spec: {{nodeName: node-1, containers: [{{name: c, image: client, ports: [{{containerPort: 7000}}]}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: {DST}, labels: {{app: server}}}}
spec: {{nodeName: node-2, containers: [{{name: s, image: server, ports: [{{containerPort: 8080}}]}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: guarded, namespace: {DST}, labels: {{app: guarded}}}}
spec: {{nodeName: node-2, containers: [{{name: s, image: server, ports: [{{containerPort: 8080}}]}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: other-open, namespace: {SRC}}}
spec: {{podSelector: {{matchLabels: {{app: other}}}}, ingress: [{{}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-to-server, namespace: {DST}}}
spec: {{podSelector: {{matchLabels: {{app: server}}}}, policyTypes: [Ingress]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-to-guarded, namespace: {DST}}}
spec: {{podSelector: {{matchLabels: {{app: guarded}}}}, policyTypes: [Ingress]}}
"""

VENDOR = f"""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: guarded-ingress, namespace: {DST}}}
spec:
  endpointSelector: {{matchLabels: {{k8s:app: guarded}}}}
  ingress: [{{fromEndpoints: [{{matchLabels: {{app: server}}}}]}}]
---
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {{name: fp-host-firewall}}
spec:
  nodeSelector: {{}}
  ingress: [{{fromEntities: [cluster]}}]
---
apiVersion: crd.projectcalico.org/v1
kind: NetworkPolicy
metadata: {{name: client-egress, namespace: {SRC}}}
spec:
  selector: app == 'client'
  types: [Egress]
  egress: [{{action: Allow}}]
"""

PROBE_ARGS = ("--probe", "--probe-namespaces", f"{SRC},{DST}", "--probe-interval", "2", "--probe-settle", "2",
              "--probe-retry", "4", "--probe-late", "0", "--ports", "8080/TCP,7000/TCP")


def _kinds(op: OperatorProcess, name: str) -> dict[tuple[str, str], float]:
    return {(s.labels["group"], s.labels["kind"]): s.value for s in op.samples(name)}


def _remove_vendor_crds(cluster: Any) -> None:
    # a deleted CRD may be held until the watches on it drain (an operator that watched it): minutes at worst
    cluster.kubectl("delete", "-f", str(VENDOR_CRDS), "--ignore-not-found", "--wait=true", timeout=360)


@pytest.fixture(scope="module")
def workload(cluster: Any) -> Iterator[Any]:
    install_crd(cluster)
    _remove_vendor_crds(cluster)
    cluster.kubectl("delete", "namespace", SRC, DST, "--ignore-not-found", "--wait=true", timeout=120)
    apply(cluster, "-", WORKLOAD)
    wait_for("workload pods", lambda: pods_running(cluster, [SRC, DST]), timeout=120)
    yield cluster
    _remove_vendor_crds(cluster)
    cluster.kubectl("delete", "namespace", SRC, DST, "--ignore-not-found", "--wait=false")


def _install_vendor_policies(cluster: Any) -> None:
    cluster.kubectl("apply", "-f", str(VENDOR_CRDS))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(VENDOR_CRDS))
    cluster.kubectl("apply", "-f", "-", input=VENDOR)


def test_vendor_kinds_installed_while_running_are_counted(workload: Any, tmp_path: Path) -> None:
    cluster = workload
    # no periodic re-list: only kopf's watch, started when a CRD appears, can bring the policies in
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "counts.log", "--resync-interval", "0", "--ports", "8080/TCP")
    try:
        wait_for("the operator's metrics", lambda: op.samples("netpol_auditor_foreign_policies"), timeout=60)
        assert set(_kinds(op, "netpol_auditor_foreign_policies").values()) == {0}  # none served: runs unchanged
        _install_vendor_policies(cluster)
        expected_objects = {("cilium.io", "CiliumNetworkPolicy"): 1, ("cilium.io", "CiliumClusterwideNetworkPolicy"): 1,
                            ("crd.projectcalico.org", "NetworkPolicy"): 1}
        wait_for("the vendor policies counted", lambda: {
            k: v for k, v in _kinds(op, "netpol_auditor_foreign_policies").items() if v} == expected_objects,
            timeout=90)
        # pods selected: the Cilium policy's `guarded`, the Calico policy's `client`; the host policy none
        wait_for("the pods they select counted", lambda: {
            k: v for k, v in _kinds(op, "netpol_auditor_foreign_policy_selected_pods").items() if v} == {
            ("cilium.io", "CiliumNetworkPolicy"): 1, ("crd.projectcalico.org", "NetworkPolicy"): 1}, timeout=30)
        assert len(_kinds(op, "netpol_auditor_foreign_policy_selected_pods")) == 8  # one series per kind, bounded
        cluster.kubectl("delete", "ciliumnetworkpolicies.cilium.io", "-n", DST, "guarded-ingress")
        wait_for("the deleted one uncounted", lambda: _kinds(op, "netpol_auditor_foreign_policy_selected_pods")[
            ("cilium.io", "CiliumNetworkPolicy")] == 0, timeout=30)
        assert op.proc.poll() is None
    finally:
        op.stop()
        cluster.kubectl("apply", "-f", "-", input=VENDOR)


def test_prober_leaves_vendor_selected_paths_inconclusive_and_flags_the_others(workload: Any,
                                                                                tmp_path: Path) -> None:
    cluster = workload
    _install_vendor_policies(cluster)
    fault(cluster, "set-none", "node-1")
    fault(cluster, "set-none", "node-2")
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "probe.log", *PROBE_ARGS)

    def mismatches(src: str, policy: str) -> float:
        """Mismatching class pairs (on any port: one port per port class is probed)."""
        return op.value("netpol_auditor_mismatches", source_namespace=src, destination_namespace=DST,
                        kind="unexpectedly_allowed", policy=f"{DST}/{policy}")

    try:
        # other -> server flagged, one class pair (client -> server would be a second); guarded -> server too
        wait_for("the other pods' mismatches", lambda: mismatches(SRC, "deny-to-server") == 1
                 and mismatches(DST, "deny-to-server") > 0, timeout=180)
        wait_for("paths inconclusive, foreign_policy", lambda: op.value(
            "netpol_auditor_probe_paths", state="inconclusive", reason="foreign_policy") > 0, timeout=60)
        cycles = op.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds")
        wait_for("two more probe cycles", lambda: op.value(
            "netpol_auditor_probe_cycle_last_completed_timestamp_seconds") > cycles + 4, timeout=120)
        assert mismatches(SRC, "deny-to-server") == 1
        assert op.value("netpol_auditor_mismatches_detected_total", policy=f"{DST}/deny-to-guarded") == 0
        assert op.value("netpol_auditor_mismatches_detected_total", source_namespace=SRC,
                        policy=f"{DST}/deny-to-server") == 1  # never client -> server, not even once
        assert op.value("netpol_auditor_probes_inconclusive_total", reason="foreign_policy") > 0
    finally:
        op.stop()
        fault(cluster, "heal")


def test_live_analyze_reads_them(workload: Any) -> None:
    from netpol_auditor.cli import main

    _install_vendor_policies(workload)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["analyze", "--kubeconfig", str(workload.kubeconfig), "-n", SRC, "-n", DST, "-o", "json",
                     "--per-pod", "--matrix", "--port", "8080"])
    assert code == 0, err.getvalue()
    verdicts = {(v["from"], v["to"]): v for v in json.loads(out.getvalue())["verdicts"]}
    assert verdicts[(f"{SRC}/client", f"{DST}/server")]["reason"] == (
        "foreign_policy: crd.projectcalico.org/v1 NetworkPolicy fp-src/client-egress")
    assert verdicts[(f"{SRC}/other", f"{DST}/guarded")]["reason"] == (
        "foreign_policy: cilium.io/v2 CiliumNetworkPolicy fp-dst/guarded-ingress")
    assert verdicts[(f"{SRC}/other", f"{DST}/server")]["allowed"] is False
    assert "CiliumNetworkPolicy fp-dst/guarded-ingress selects 1 endpoint (fp-dst/guarded)" in err.getvalue()
