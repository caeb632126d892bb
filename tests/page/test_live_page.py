"""The operator's page data: pods folded into workloads, the prober's results on the workload pairs they stand for,
and the bound on workloads."""

from __future__ import annotations

from typing import Any

from test_page_data import cell_verdicts

from netpol_auditor.exporters.live_page import ProbeSnapshot, live_page_data
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import PortProtocol
from netpol_auditor.prober.compare import Outcome
from netpol_auditor.prober.coverage import PathKey
from netpol_auditor.prober.plan import probe_groups
from netpol_auditor.prober.script import ProbeResult
from netpol_auditor.vendor_policy import parse_vendor_policy

HTTP = PortProtocol(80)


def _pod(ns: str, name: str, labels: dict[str, str], ip: str, owner: tuple[str, str] | None = None,
         host_network: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels, "uid": f"u-{ns}-{name}"}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": "o",
                                    "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "node-1", "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}


def shop() -> ReachabilityIndex:
    """web (a Deployment mid-rollout: two ReplicaSets, one labelled canary) and db in shop; a client elsewhere;
    db admits only web's stable pods."""
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "zoo"}},
        _pod("shop", "web-aaa11-x", {"app": "web", "pod-template-hash": "aaa11"}, "10.0.0.1",
             ("ReplicaSet", "web-aaa11")),
        _pod("shop", "web-aaa11-y", {"app": "web", "pod-template-hash": "aaa11"}, "10.0.0.2",
             ("ReplicaSet", "web-aaa11")),
        _pod("shop", "web-bbb22-z", {"app": "web", "track": "canary", "pod-template-hash": "bbb22"}, "10.0.0.3",
             ("ReplicaSet", "web-bbb22")),
        _pod("shop", "db-0", {"app": "db"}, "10.0.0.4", ("StatefulSet", "db")),
        _pod("zoo", "client", {"app": "client"}, "10.0.1.1"),
        _pod("zoo", "agent", {"app": "agent"}, "192.168.0.1", ("DaemonSet", "agent"), host_network=True),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "db", "namespace": "shop"},
         "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                      {"key": "track", "operator": "DoesNotExist"}, {"key": "app", "operator": "In",
                                                                      "values": ["web"]}]}}]}]}},
    ]
    parsed = [parse_object(d, "test") for d in docs]
    return ReachabilityIndex.from_objects(o for o in parsed if o is not None)


def test_pods_fold_into_workloads_and_a_rollout_shows_both_verdicts() -> None:
    index = shop()
    data = live_page_data(index.view(), [HTTP], None, max_workloads=100, generated="now")
    names = [e["n"] for e in data["endpoints"]]
    assert names == ["shop/db[StatefulSet]", "shop/web[Deployment]", "zoo/client[Pod]"]
    assert data["probed"] is False
    web = data["endpoints"][1]
    assert len(web["c"]) == 2  # the stable and the canary pods are told apart by the db policy
    assert {v["a"] for v in cell_verdicts(data, 1, 0, 0)} == {True, False}
    assert any("1 hostNetwork pods are left out" in n for n in data["notes"])


def test_the_cells_follow_the_cluster_policy_tiers_as_the_prober_does() -> None:
    index = shop()
    deny = parse_object({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "fence"},
        "spec": {"priority": 1, "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "zoo"}}},
                 "ingress": [{"action": "Deny", "from": [{"namespaces": {
                     "matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]}]}}, "test")
    assert deny is not None
    before = live_page_data(index.view(), [HTTP], None, max_workloads=100, generated="now")
    index.upsert(deny)
    after = live_page_data(index.view(), [HTTP], None, max_workloads=100, generated="now")
    # shop/web -> zoo/client: allowed (nothing isolates the client), until the Admin Deny
    assert {v["a"] for v in cell_verdicts(before, 1, 2, 0)} == {True}
    assert {v["a"] for v in cell_verdicts(after, 1, 2, 0)} == {False}


def test_the_paths_a_vendor_policy_may_decide_are_not_known_as_the_prober_leaves_them() -> None:
    """A Cilium policy selecting the canary web pods for egress: web's row is not known where a canary pod is the
    source (foreign_policy, naming the policy); the stable pods' cells and every other row keep their verdicts."""
    index = shop()
    cilium = parse_vendor_policy({
        "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "canary", "namespace": "shop"},
        "spec": {"endpointSelector": {"matchLabels": {"track": "canary"}}, "egress": [{"toEntities": ["world"]}]}})
    assert cilium is not None
    before = live_page_data(index.view(), [HTTP], None, max_workloads=100, generated="now")
    after = live_page_data(index.view(), [HTTP], None, max_workloads=100, generated="now", vendor_policies=[cilium])
    reason = "foreign_policy: cilium.io/v2 CiliumNetworkPolicy shop/canary"
    # web -> db: the stable pods are admitted, the canary's egress is the Cilium policy's
    assert {(v["a"], v.get("r")) for v in cell_verdicts(before, 1, 0, 0)} == {(False, None), (True, None)}
    assert {(v["a"], v.get("r")) for v in cell_verdicts(after, 1, 0, 0)} == {(None, reason), (True, None)}
    # web -> client: allowed for the stable pods, not known for the canary
    assert {(v["a"], v.get("r")) for v in cell_verdicts(after, 1, 2, 0)} == {(True, None), (None, reason)}
    # as a destination, web is judged: the Cilium policy selects the canary for egress only
    for i in (0, 2):
        assert cell_verdicts(after, i, 1, 0) == cell_verdicts(before, i, 1, 0)


def test_probe_results_land_on_the_workloads_of_their_groups() -> None:
    index = shop()
    groups = probe_groups(index)
    gid = {str(m): g.id for g in groups.values() for ms in g.members_by_node.values() for m in ms}
    web, client, db = gid["shop/web-aaa11-x"], gid["zoo/client"], gid["shop/db-0"]
    verdict = index.verdict(index.pods()[0].ref, index.pods()[1].ref, HTTP)
    denied = index.verdict(next(p.ref for p in index.pods() if p.name == "client"),
                           next(p.ref for p in index.pods() if p.name == "db-0"), HTTP)
    assert denied.allowed is False
    probes = ProbeSnapshot(
        observations={
            PathKey(web, db, HTTP, "node-1", "node-1"): (verdict, ProbeResult.CONNECTED, Outcome.MATCH),
            PathKey(client, db, HTTP, "node-1", "node-2"): (denied, ProbeResult.CONNECTED, Outcome.MISMATCH),
            PathKey(db, client, HTTP, "node-1", "node-1"): (verdict, ProbeResult.CONNECTED, Outcome.MATCH),
        },
        inconclusive={PathKey(db, client, HTTP, "node-1", "node-1"): "pod_timeout"},
        groups=groups,
    )
    data = live_page_data(index.view(), [HTTP], probes, max_workloads=100, generated="now")
    group_names = {}
    for e in data["endpoints"]:
        for g in e["g"]:
            group_names.setdefault(g, set()).add(e["n"])
    seen = {(min(group_names[o[0]]), min(group_names[o[1]]), o[3]): o[4] for o in data["observations"]}
    assert seen[("shop/web[Deployment]", "shop/db[StatefulSet]", "confirmed")] == "probe: connected (node node-1 to " \
                                                                                  "node node-1)"
    assert seen[("zoo/client[Pod]", "shop/db[StatefulSet]", "mismatch")].startswith(
        "predicted denied, probe: connected")
    # the latest word on a path is its inconclusive reason, when it has one
    assert seen[("shop/db[StatefulSet]", "zoo/client[Pod]", "inconclusive")].startswith("pod_timeout")


def test_the_page_is_bounded_by_whole_namespaces() -> None:
    data = live_page_data(shop().view(), [HTTP], None, max_workloads=2, generated="now")
    assert [e["n"] for e in data["endpoints"]] == ["shop/db[StatefulSet]", "shop/web[Deployment]"]
    assert any(n.startswith("2 of 3 workloads shown") for n in data["notes"])
