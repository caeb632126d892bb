"""The operator's prober confirms the cluster policy tiers on an enforcer of them, and flags them on one that
enforces NetworkPolicy v1 only -- real connections between pod network namespaces, on two local clusters in turn.

One namespace set (`SCENARIO`), a ``client`` in ``pt-src`` on node-1 and a ``server`` per case on node-2:

- ``pt-deny``: a NetworkPolicy allows every ingress; AdminNetworkPolicy ``pt-deny`` denies ingress from pt-src;
- ``pt-allow``: a NetworkPolicy denies every ingress; AdminNetworkPolicy ``pt-allow`` allows it from pt-src;
- ``pt-pass``: a NetworkPolicy allows ingress from pt-src; AdminNetworkPolicy ``pt-pass`` (priority 5) passes it
  on to the NetworkPolicies over ``pt-pass-deny`` (priority 30), which would deny it;
- ``pt-base``: no NetworkPolicy; the BaselineAdminNetworkPolicy denies ingress from pt-src;
- ``pt-egress``: the source's side, from a second client in ``pt-esrc`` (node-1) -- a NetworkPolicy there allows
  all its egress; AdminNetworkPolicy ``pt-egress`` denies its egress to pt-egress (enforced on the source's node).

kube-network-policies (v1alpha1 ANP and BANP): every probed path agrees with the prediction, and the Admin and
Baseline features are confirmed on node-2 (ingress is enforced on the destination's node), the Admin one on node-1
too (the egress case). kube-router (v1 only): the four paths a cluster policy rule decides (client -> pt-deny,
pt-allow, pt-base; the second client -> pt-egress) are mismatches naming the AdminNetworkPolicy or the
BaselineAdminNetworkPolicy, the features are 0 on the nodes that should enforce them, and every other path -- the
Pass case included, which the NetworkPolicies decide -- is confirmed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import enforcer_knp

from .harness import OperatorProcess, apply, install_crd, pods_running, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

CASES = ("pt-deny", "pt-allow", "pt-pass", "pt-base", "pt-egress")
NAMESPACES = ("pt-src", "pt-esrc", *CASES)


def _ns(name: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def _pod(ns: str, name: str, node: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": name,
                                                       "ports": [{"name": "http", "containerPort": port}]}]}}


def _netpol(ns: str, name: str, rules: list[Any], direction: str = "Ingress") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": {}, "policyTypes": [direction], direction.lower(): rules}}


def _anp(name: str, priority: int, subject: str, action: str) -> dict[str, Any]:
    return {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": name},
            "spec": {"priority": priority, "subject": {"namespaces": _ns(subject)},
                     "ingress": [{"name": f"{action.lower()}-src", "action": action,
                                  "from": [{"namespaces": _ns("pt-src")}]}]}}


SCENARIO: list[dict[str, Any]] = [
    *({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in NAMESPACES),
    _pod("pt-src", "client", "node-1", 7000),
    _pod("pt-esrc", "client", "node-1", 7000),
    *(_pod(ns, "server", "node-2", 8080) for ns in CASES),
    _netpol("pt-deny", "allow-all", [{}]),
    _anp("pt-deny", 10, "pt-deny", "Deny"),
    _netpol("pt-allow", "deny-all", []),
    _anp("pt-allow", 20, "pt-allow", "Allow"),
    _netpol("pt-pass", "allow-src", [{"from": [{"namespaceSelector": _ns("pt-src")}]}]),
    _anp("pt-pass", 5, "pt-pass", "Pass"),
    _anp("pt-pass-deny", 30, "pt-pass", "Deny"),
    _netpol("pt-esrc", "egress-anywhere", [{}], "Egress"),
    {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "pt-egress"},
     "spec": {"priority": 40, "subject": {"namespaces": _ns("pt-esrc")},
              "egress": [{"name": "deny-egress", "action": "Deny", "to": [{"namespaces": _ns("pt-egress")}]}]}},
    {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
     "metadata": {"name": "default"},
     "spec": {"subject": {"namespaces": _ns("pt-base")},
              "ingress": [{"name": "deny-src", "action": "Deny", "from": [{"namespaces": _ns("pt-src")}]}]}},
]
#: the paths a cluster policy rule decides, by (source, destination) namespace: (mismatch kind on kube-router,
#: policy label)
DECIDED_BY_CLUSTER_POLICY = {
    ("pt-src", "pt-deny"): ("unexpectedly_allowed", "AdminNetworkPolicy/pt-deny"),
    ("pt-src", "pt-allow"): ("unexpectedly_denied", "AdminNetworkPolicy/pt-allow"),
    ("pt-src", "pt-base"): ("unexpectedly_allowed", "BaselineAdminNetworkPolicy/default"),
    ("pt-esrc", "pt-egress"): ("unexpectedly_allowed", "AdminNetworkPolicy/pt-egress"),
}


@pytest.fixture(scope="module", params=["kube-network-policies", "kube-router"])
def tier_cluster(request: pytest.FixtureRequest) -> Iterator[lc.Cluster]:
    """A cluster of its own per enforcer, one at a time (or the one LOCALCLUSTER_TEST_REUSE names, for the enforcer
    it runs), with the network-policy-api CRDs and the scenario."""
    enforcer: str = request.param
    reuse = os.environ.get("LOCALCLUSTER_TEST_REUSE")
    state = Path(f"/tmp/lc-test-{os.getpid()}-tiers")
    if reuse:
        c = lc.Cluster.load(Path(reuse).resolve())
        if c is None or c.enforcer != enforcer:
            pytest.skip(f"LOCALCLUSTER_TEST_REUSE={reuse} runs no {enforcer} cluster")
    try:
        if not reuse:
            c = lc.up(lc.ClusterConfig(state=state, api_port=0, nodes=2, enforcer=enforcer))
        assert c is not None
        if enforcer != "kube-network-policies":  # that enforcer installs them itself
            enforcer_knp.install_crds(c.kubeconfig)
        install_crd(c)
        apply(c, "", text="\n---\n".join(json.dumps(o) for o in SCENARIO))
        wait_for("scenario pods running", lambda: pods_running(c, NAMESPACES), timeout=120)
        yield c
    finally:
        if reuse:
            c.kubectl("delete", "namespace", *NAMESPACES, "--ignore-not-found", "--wait=false")
            c.kubectl("delete", "adminnetworkpolicy", "pt-deny", "pt-allow", "pt-pass", "pt-pass-deny", "pt-egress",
                      "--ignore-not-found")
            c.kubectl("delete", "baselineadminnetworkpolicy", "default", "--ignore-not-found")
        else:
            lc.down(state)


def _operator(c: lc.Cluster, tmp_path: Path) -> OperatorProcess:
    return OperatorProcess(c.kubeconfig, tmp_path / "operator.log", "--probe", "--probe-namespaces", "pt-*",
                           "--probe-interval", "5", "--probe-retry", "6", "--probe-late", "12")


def _cycle_done(op: OperatorProcess, after: float) -> bool:
    return op.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds") > after


def _features(op: OperatorProcess) -> dict[tuple[str, str], float]:
    return {(s.labels["feature"], s.labels["node"]): s.value
            for s in op.samples("netpol_auditor_cni_feature_enforced")}


def _mismatches(op: OperatorProcess) -> dict[tuple[str, str, str, str], float]:
    return {(s.labels["source_namespace"], s.labels["destination_namespace"], s.labels["kind"], s.labels["policy"]):
            s.value for s in op.samples("netpol_auditor_mismatches") if s.value}


def _paths(op: OperatorProcess) -> dict[tuple[str, str], float]:
    """The current cycle's paths by (state, reason) (``pending``: a new cycle has begun)."""
    return {(s.labels["state"], s.labels["reason"]): s.value for s in op.samples("netpol_auditor_probe_paths")
            if s.value}


def _cluster_policy_events(c: lc.Cluster) -> dict[str, list[str]]:
    data = json.loads(c.kubectl("get", "events", "-n", "default", "-o", "json"))
    out: dict[str, list[str]] = {}
    for e in data["items"]:
        obj = e["involvedObject"]
        if obj.get("kind") in ("AdminNetworkPolicy", "BaselineAdminNetworkPolicy"):
            out.setdefault(f"{obj['kind']}/{obj['name']}", []).append(f"{e['reason']}: {e['message']}")
    return out


def test_the_prober_confirms_the_tiers_on_an_enforcer_of_them_and_flags_them_on_one_without(
    tier_cluster: lc.Cluster, tmp_path: Path,
) -> None:
    c = tier_cluster
    op = _operator(c, tmp_path)
    started = time.monotonic()
    try:
        wait_for("a first probe cycle", lambda: _cycle_done(op, 0), timeout=240)
        if c.enforcer == "kube-network-policies":
            # a second cycle: the first may still be retrying paths whose pods were new (knp programs them late)
            first = op.value("netpol_auditor_probe_cycle_last_completed_timestamp_seconds")
            wait_for("a second probe cycle", lambda: _cycle_done(op, first), timeout=240)
            assert _mismatches(op) == {}, (_mismatches(op), _cluster_policy_events(c))
            paths = _paths(op)
            assert paths.get(("judged", ""), 0) > 0, paths
            assert set(paths) <= {("judged", ""), ("late", "programming_late"), ("pending", "")}, paths
            features = _features(op)
            assert features.get(("admin_network_policy", "node-2")) == 1, features
            assert features.get(("admin_network_policy", "node-1")) == 1, features  # egress, the source's node
            assert features.get(("baseline_admin_network_policy", "node-2")) == 1, features
            assert not [fn for fn, v in features.items() if v == 0], features
        else:
            expected = {(src, dst, kind, policy): 1.0
                        for (src, dst), (kind, policy) in DECIDED_BY_CLUSTER_POLICY.items()}
            try:
                wait_for("the cluster-policy paths flagged", lambda: _mismatches(op) == expected, timeout=240)
            finally:
                assert _mismatches(op) == expected, (_paths(op), _features(op))
            features = _features(op)
            assert features.get(("admin_network_policy", "node-2")) == 0, features
            assert features.get(("admin_network_policy", "node-1")) == 0, features
            assert features.get(("baseline_admin_network_policy", "node-2")) == 0, features
            # what kube-router does enforce is still confirmed: NetworkPolicy ingress on node-2
            assert features.get(("ingress", "node-2")) == 1, features
            events = wait_for("Events on the cluster policies", lambda: (
                e if {"AdminNetworkPolicy/pt-deny", "AdminNetworkPolicy/pt-allow", "AdminNetworkPolicy/pt-egress",
                      "BaselineAdminNetworkPolicy/default"} <= set(e := _cluster_policy_events(c)) else None),
                timeout=60)
            deny = " ".join(events["AdminNetworkPolicy/pt-deny"])
            assert "PolicyNotEnforced" in deny and 'Admin Deny `pt-deny` priority 10 (AdminNetworkPolicy)' in deny
            assert "AllowedTrafficDropped" in " ".join(events["AdminNetworkPolicy/pt-allow"])
            assert "PolicyNotEnforced" in c.kubectl("describe", "adminnetworkpolicy", "pt-deny")
            assert "AdminNetworkPolicy/pt-pass" not in events and "AdminNetworkPolicy/pt-pass-deny" not in events
            paths = _paths(op)
            assert not [k for k in paths if k[0] == "inconclusive"], paths
    finally:
        op.stop()
        print(f"{c.enforcer}: {time.monotonic() - started:.0f}s of probing")
