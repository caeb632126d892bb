"""The prober predicts through the tiers (Admin, NetworkPolicy, Baseline, default), as analyze and the index do: a
path an Admin Deny blocks is predicted denied, a Pass falls to the NetworkPolicies, a Baseline rule applies where no
NetworkPolicy isolates. What an agreement proves of a cluster policy kind, what a contradiction blames, and what
the model cannot decide (inconclusive ``out_of_model``)."""

from __future__ import annotations

from typing import Any

from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import load_text
from netpol_auditor.prober.compare import Comparator, MismatchKind, Outcome, exercised_features
from netpol_auditor.prober.plan import PlanBudget, ProbePlanner
from netpol_auditor.prober.script import ProbeResult

from .test_compare import DST, SRC, cluster, key, verdict
from .test_plan import namespace, pod, policy

ALLOW_X_TO_Y = policy("y", "allow-x", {
    "podSelector": {}, "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}]}],
})
DENY_ALL_Y = policy("y", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})


def anp(name: str, priority: int, action: str, ports: str = "") -> Any:
    """An AdminNetworkPolicy on namespace y's ingress from namespace x."""
    (obj,) = load_text(f"""
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {{name: {name}}}
spec:
  priority: {priority}
  subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}}}
  ingress:
  - name: r
    action: {action}
    from: [{{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: x}}}}}}]
    {ports}
""")
    return obj


def banp(action: str, peer: str = "{}") -> Any:
    """The BaselineAdminNetworkPolicy on namespace y's ingress from the namespaces ``peer`` selects."""
    (obj,) = load_text(f"""
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {{name: default}}
spec:
  subject: {{namespaces: {{matchLabels: {{kubernetes.io/metadata.name: y}}}}}}
  ingress:
  - {{name: base, action: {action}, from: [{{namespaces: {peer}}}]}}
""")
    return obj


def planned(index: ReachabilityIndex) -> dict[str, bool]:
    """Predicted verdicts of the planned paths x -> y, by port."""
    planner = ProbePlanner(PlanBudget())
    paths = planner.enumerate_paths(index)
    return {str(k.port): p.predicted for k, p in paths.items() if p.source.namespace == "x"
            and p.destination.namespace == "y"}


def test_the_plan_predicts_every_tier() -> None:
    assert planned(cluster(ALLOW_X_TO_Y)) == {"8080/TCP": True}
    assert planned(cluster(ALLOW_X_TO_Y, anp("deny-x", 10, "Deny"))) == {"8080/TCP": False}
    assert planned(cluster(DENY_ALL_Y, anp("allow-x", 10, "Allow"))) == {"8080/TCP": True}
    # a Pass hands the decision to the NetworkPolicies, whatever lower Admin rules say
    assert planned(cluster(ALLOW_X_TO_Y, anp("pass-x", 5, "Pass"), anp("deny-x", 10, "Deny"))) == {"8080/TCP": True}
    # Baseline applies only where no NetworkPolicy isolates
    assert planned(cluster(banp("Deny"))) == {"8080/TCP": False}
    assert planned(cluster(ALLOW_X_TO_Y, banp("Deny"))) == {"8080/TCP": True}


def test_a_port_an_admin_rule_names_is_planned_apart() -> None:
    ports = "ports: [{portNumber: {port: 9090}}]"
    assert planned(cluster(anp("deny-9090", 10, "Deny", ports))) == {"8080/TCP": True, "9090/TCP": False}


def proven(index: ReachabilityIndex, port: str = "8080/TCP") -> frozenset[tuple[str, str, str]]:
    return exercised_features(verdict(index, port), {p.key: p for p in index.policies()}, "node-1", "node-2",
                              proven=True)


def test_an_agreement_proves_a_cluster_kind_only_where_ignoring_it_would_show() -> None:
    admin = ("admin_network_policy", "node-2", "ingress")
    assert proven(cluster(ALLOW_X_TO_Y, anp("deny-x", 10, "Deny"))) == {admin}
    assert proven(cluster(DENY_ALL_Y, anp("allow-x", 10, "Allow"))) == {admin}
    # the NetworkPolicy alone gives the same verdict: nothing about the Admin tier is shown
    assert proven(cluster(ALLOW_X_TO_Y, anp("allow-x", 10, "Allow"))) == frozenset()
    assert proven(cluster(DENY_ALL_Y, anp("deny-x", 10, "Deny"))) == frozenset()
    assert proven(cluster(banp("Deny"))) == {("baseline_admin_network_policy", "node-2", "ingress")}
    assert proven(cluster(banp("Allow"))) == frozenset()  # the default allows as well


def judge(c: Comparator, index: ReachabilityIndex, result: ProbeResult, now: float) -> Any:
    return c.judge(key(index, "8080/TCP"), verdict(index, "8080/TCP"), result, now, source=SRC, destination=DST,
                   policies={p.key: p for p in index.policies()})


def test_a_cni_ignoring_an_admin_deny_is_blamed_by_kind_and_the_mismatch_names_the_rule() -> None:
    index = cluster(ALLOW_X_TO_Y, anp("deny-x", 10, "Deny"))
    c = Comparator(late_seconds=0, retry_window_seconds=0)
    j = judge(c, index, ProbeResult.CONNECTED, 0.0)
    assert j.outcome is Outcome.MISMATCH
    m = j.mismatch
    assert m.kind is MismatchKind.UNEXPECTEDLY_ALLOWED
    assert m.policies == (("AdminNetworkPolicy", "deny-x"),)
    assert m.policy_label == "AdminNetworkPolicy/deny-x"
    assert "policy AdminNetworkPolicy deny-x predicts denied" in m.describe()
    assert 'Admin Deny `deny-x` priority 10 (AdminNetworkPolicy), ingress[0] "r"' in m.describe()
    assert m.features == {("admin_network_policy", "node-2", "ingress")}
    assert c.feature_enforced() == {("admin_network_policy", "node-2"): 0}


def test_a_working_baseline_deny_is_confirmed() -> None:
    index = cluster(banp("Deny"))
    c = Comparator(late_seconds=0)
    j = judge(c, index, ProbeResult.TIMED_OUT, 0.0)
    assert j.outcome is Outcome.MATCH and j.policies == (("BaselineAdminNetworkPolicy", "default"),)
    assert c.feature_enforced() == {("baseline_admin_network_policy", "node-2"): 1}


def test_what_the_model_cannot_decide_is_inconclusive_out_of_model() -> None:
    (names_peer,) = load_text("""
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: to-names}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: x}}}
  egress:
  - {name: names, action: Deny, to: [{domainNames: [db.example.com]}]}
""")
    index = cluster(ALLOW_X_TO_Y, names_peer)
    assert verdict(index, "8080/TCP").out_of_model
    j = judge(Comparator(), index, ProbeResult.CONNECTED, 0.0)
    assert (j.outcome, j.reason) == (Outcome.INCONCLUSIVE, "out_of_model")


def test_an_agreement_that_shows_nothing_of_the_admin_tier_does_not_confirm_it() -> None:
    index = cluster(ALLOW_X_TO_Y, anp("allow-x", 10, "Allow"))  # a CNI ignoring the ANP connects as well
    c = Comparator(late_seconds=0)
    assert judge(c, index, ProbeResult.CONNECTED, 0.0).outcome is Outcome.MATCH
    assert ("admin_network_policy", "node-2") not in c.feature_enforced()


def test_the_plan_proves_the_baseline_tier_on_every_node_that_enforces_it() -> None:
    """Servers of one group on two nodes, under a Baseline Deny: a path into each node is planned (the node cover),
    so an enforcer that ignores the BaselineAdminNetworkPolicy on one node only is probed there too. Without it the
    paths prove nothing of any feature, and one placement is enough."""
    def paths_into_y(*policies: Any) -> set[str]:
        index = ReachabilityIndex.from_objects([
            namespace("x"), namespace("y"),
            pod("x", "a", {"app": "a"}, "10.0.1.5", "node-1"),
            pod("y", "b", {"app": "b"}, "10.0.2.5", "node-1", [("http", 8080)]),
            pod("y", "b2", {"app": "b"}, "10.0.2.6", "node-2", [("http", 8080)]),
            *policies,
        ])
        paths = ProbePlanner(PlanBudget()).enumerate_paths(index)
        return {k.dst_node for k, p in paths.items() if p.source.namespace == "x" and p.destination.namespace == "y"}

    assert paths_into_y(banp("Deny", "{matchLabels: {kubernetes.io/metadata.name: x}}")) == {"node-1", "node-2"}
    assert len(paths_into_y()) == 1
