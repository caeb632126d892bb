"""The incremental index: events, equivalence classes, aggregates, change tracking."""

from __future__ import annotations

import itertools

from core_builders import ns, pod, policy

from netpol_auditor.engine import Snapshot
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import KubeObject
from netpol_auditor.model import ObjectKind, PodRef, PortProtocol
from netpol_auditor.paths import PathCounts

TCP80, UDP53 = PortProtocol.parse("80/TCP"), PortProtocol.parse("53/UDP")


def web_cluster() -> list[KubeObject]:
    """x: three web replicas and one db; y: one client."""
    return [
        ns("x", team="a"),
        ns("y", team="b"),
        *(pod("x", f"web-{i}", f"10.0.0.{i + 1}", {"app": "web"}) for i in range(3)),
        pod("x", "db", "10.0.0.10", {"app": "db"}),
        pod("y", "client", "10.0.1.1", {"app": "client"}),
    ]


DB_FROM_WEB = policy(
    "x",
    "db-from-web",
    {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    },
)


def brute_force_counts(
    objs: list[KubeObject], ports: list[PortProtocol]
) -> dict[tuple[str, str, PortProtocol], PathCounts]:
    snap = Snapshot.from_objects(objs)
    out: dict[tuple[str, str, PortProtocol], list[int]] = {}
    for s, d in itertools.permutations(snap.endpoints(), 2):
        for port in ports:
            cell = out.setdefault((s.namespace, d.namespace, port), [0, 0])
            cell[0 if snap.verdict(s, d, port).allowed else 1] += 1
    return {k: PathCounts(a, b) for k, (a, b) in out.items()}


def test_classes_group_indistinguishable_pods() -> None:
    index = ReachabilityIndex.from_objects(web_cluster())
    classes = {tuple(str(m) for m in c.members) for c in index.classes()}
    assert classes == {("x/web-0", "x/web-1", "x/web-2"), ("x/db",), ("y/client",)}
    web = index.class_of(PodRef("x", "web-1"))
    assert web is not None and web.representative == PodRef("x", "web-0")
    assert index.stats().classes == 3
    assert index.class_of(PodRef("x", "nobody")) is None


def test_policy_events_change_verdicts_incrementally() -> None:
    index = ReachabilityIndex.from_objects(web_cluster())
    client, db, web = PodRef("y", "client"), PodRef("x", "db"), PodRef("x", "web-2")
    assert index.verdict(client, db, TCP80).allowed is True
    rev = index.revision
    index.upsert(DB_FROM_WEB)
    assert index.revision > rev
    assert index.verdict(client, db, TCP80).allowed is False
    assert index.verdict(web, db, TCP80).allowed is True
    rev = index.revision
    index.upsert(DB_FROM_WEB)  # unchanged: not a change
    assert index.revision == rev
    index.delete(ObjectKind.NETWORK_POLICY, "x", "db-from-web")
    assert index.verdict(client, db, TCP80).allowed is True
    index.delete(ObjectKind.NETWORK_POLICY, "x", "db-from-web")  # unknown: no-op
    index.delete(ObjectKind.POD, "x", "ghost")
    index.delete(ObjectKind.NAMESPACE, None, "ghost")


def test_policy_modified_in_place() -> None:
    index = ReachabilityIndex.from_objects([*web_cluster(), policy("x", "p", {})])
    client, db = PodRef("y", "client"), PodRef("x", "db")
    assert index.verdict(client, db, TCP80).allowed is False
    index.upsert(policy("x", "p", {"ingress": [{"ports": [{"port": 80}]}]}))
    assert index.verdict(client, db, TCP80).allowed is True
    index.upsert(policy("x", "p", {"policyTypes": ["Egress"]}))
    assert index.verdict(db, client, TCP80).allowed is False
    index.upsert(
        policy("x", "p", {"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.1.0/24"}}]}]})
    )
    assert index.verdict(db, client, TCP80).allowed is True


def test_pod_label_change_moves_it_between_classes() -> None:
    index = ReachabilityIndex.from_objects([*web_cluster(), DB_FROM_WEB])
    client, db = PodRef("y", "client"), PodRef("x", "db")
    index.upsert(pod("x", "web-1", "10.0.0.2", {"app": "batch"}))
    assert index.verdict(PodRef("x", "web-1"), db, TCP80).allowed is False
    web = index.class_of(PodRef("x", "web-0"))
    assert web is not None and web.members == (PodRef("x", "web-0"), PodRef("x", "web-2"))
    # Pod deletion and a pod that stops running leave the index.
    index.delete(ObjectKind.POD, "y", "client")
    assert index.verdict(client, db, TCP80).allowed is None
    index.upsert(pod("x", "web-0", "10.0.0.1", {"app": "web"}, phase="Succeeded"))
    assert PodRef("x", "web-0") not in index.endpoints()
    assert index.verdict(PodRef("x", "web-2"), db, TCP80).allowed is True


def test_namespace_label_change_is_seen_by_namespace_selectors() -> None:
    from_team_b = policy(
        "x", "from-b", {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}
    )
    index = ReachabilityIndex.from_objects([*web_cluster(), from_team_b])
    client, db = PodRef("y", "client"), PodRef("x", "db")
    assert index.verdict(client, db, TCP80).allowed is True
    index.upsert(ns("y", team="c"))
    assert index.verdict(client, db, TCP80).allowed is False
    index.delete(ObjectKind.NAMESPACE, None, "y")
    assert index.verdict(client, db, TCP80).allowed is False
    index.upsert(ns("y", team="b"))
    assert index.verdict(client, db, TCP80).allowed is True


def test_ip_block_matching_pod_ips_splits_classes() -> None:
    only_web0 = policy(
        "x",
        "from-one-ip",
        {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}]},
    )
    index = ReachabilityIndex.from_objects(web_cluster())
    index.upsert(only_web0)
    db = PodRef("x", "db")
    assert index.verdict(PodRef("x", "web-0"), db, TCP80).allowed is True
    assert index.verdict(PodRef("x", "web-1"), db, TCP80).allowed is False
    assert index.stats().classes == 4
    index.delete(ObjectKind.NETWORK_POLICY, "x", "from-one-ip")
    assert index.stats().classes == 3


def test_pod_recreated_with_a_new_address_then_an_ip_block_appears() -> None:
    index = ReachabilityIndex.from_objects(web_cluster())
    index.upsert(pod("y", "client", "10.0.1.99", {"app": "client"}))  # same name and labels, new address
    only_old_ip = {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.1.1/32"}}]}],
    }
    index.upsert(policy("x", "old-ip", only_old_ip))
    assert index.verdict(PodRef("y", "client"), PodRef("x", "db"), TCP80).allowed is False
    assert index.verdict("10.0.1.1", PodRef("x", "db"), TCP80).allowed is True


def test_path_counts_match_pod_by_pod_counting() -> None:
    objs = [
        *web_cluster(),
        DB_FROM_WEB,
        policy("y", "dns-only", {"policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]}),
    ]
    index = ReachabilityIndex.from_objects(objs)
    counts = index.path_counts([TCP80, UDP53])
    assert counts == brute_force_counts(objs, [TCP80, UDP53])
    # x -> x on 80/TCP: 4*3 ordered pairs of distinct pods; db may talk to web (2 pairs... 3), web to db (3);
    # only client-less pairs; nothing denied but the 0 pairs into db from non-web pods of x (none).
    assert counts[("x", "x", TCP80)] == PathCounts(12, 0)
    assert counts[("y", "x", TCP80)] == PathCounts(0, 4)  # y/client may only send DNS
    assert counts[("y", "x", UDP53)] == PathCounts(3, 1)  # ... and x/db only admits web


def test_path_counts_dense_and_sparse_sets() -> None:
    objs: list[KubeObject] = [
        pod("x", "a", "10.0.0.1", {"app": "web"}),
        pod("x", "b", "10.0.0.2", {"app": "web"}),
        pod("x", "c", "10.0.0.3", {"app": "db"}),
        pod("y", "d", "10.0.1.1", {"app": "web"}),
        policy(
            "x", "db", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"podSelector": {}}]}]}
        ),
    ]
    index = ReachabilityIndex.from_objects(objs)
    assert index.path_counts([TCP80]) == brute_force_counts(objs, [TCP80])
    assert index.path_counts([TCP80])[("x", "x", TCP80)] == PathCounts(6, 0)
    assert index.path_counts([TCP80])[("y", "x", TCP80)] == PathCounts(2, 1)
    objs.append(policy("y", "deny", {"policyTypes": ["Egress"]}))
    index.upsert(objs[-1])
    assert index.path_counts([TCP80, UDP53]) == brute_force_counts(objs, [TCP80, UDP53])


def test_changed_class_pairs() -> None:
    index = ReachabilityIndex.from_objects(web_cluster())
    cid = {c.members[0].name: c.id for c in index.classes()}
    rev = index.revision
    assert index.changed_class_pairs(rev) == set()
    index.upsert(DB_FROM_WEB)
    changed = index.changed_class_pairs(rev)
    assert changed == {(s, cid["db"]) for s in cid.values()}
    # A pod joining an existing class changes no class verdict.
    rev = index.revision
    index.upsert(pod("x", "web-3", "10.0.0.4", {"app": "web"}))
    assert index.changed_class_pairs(rev) == set()
    # A new class: every pair with it.
    index.upsert(pod("y", "batch", "10.0.1.2", {"app": "batch"}))
    batch = index.class_of(PodRef("y", "batch"))
    assert batch is not None
    changed = index.changed_class_pairs(rev)
    all_ids = {c.id for c in index.classes()}
    assert changed == {(batch.id, d) for d in all_ids} | {(s, batch.id) for s in all_ids}
    assert index.changed_class_pairs(0) >= changed
    srcs, dsts = index.changed_classes(rev)
    assert srcs == dsts == {batch.id}


def test_isolation_selected_pods_and_label_keys() -> None:
    egress = policy(
        "x",
        "web-egress",
        {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "cache"}}}]}],
        },
    )
    index = ReachabilityIndex.from_objects(
        [*web_cluster(), DB_FROM_WEB, egress, pod("x", "pending", None, {"app": "db"})]
    )
    assert index.isolation(PodRef("x", "db")) == (True, False)
    assert index.isolation(PodRef("x", "web-0")) == (False, True)
    assert index.isolation(PodRef("x", "pending")) == (True, False)
    assert index.isolation(PodRef("y", "client")) == (False, False)
    assert index.policy_selected_pods() == {("x", "db-from-web"): 1, ("x", "web-egress"): 3}
    assert index.selector_label_keys("x") == {"app", "tier"}
    assert index.selector_label_keys("y") == {"tier"}  # only a peer with a namespaceSelector reaches other namespaces
    stats = index.stats()
    assert (stats.pods, stats.endpoints, stats.namespaces, stats.policies) == (6, 5, 2, 2)
    assert [p.name for p in index.policies()] == ["db-from-web", "web-egress"]
    assert [n.name for n in index.namespaces()] == ["x", "y"]


def test_class_verdict_reports_representatives() -> None:
    index = ReachabilityIndex.from_objects([*web_cluster(), DB_FROM_WEB])
    web, db = index.class_of(PodRef("x", "web-2")), index.class_of(PodRef("x", "db"))
    assert web is not None and db is not None
    v = index.class_verdict(web.id, db.id, TCP80)
    assert (v.source, v.destination, v.allowed) == (PodRef("x", "web-0"), PodRef("x", "db"), True)
    assert index.class_allowed(db.id, web.id, TCP80) is True


def test_empty_index() -> None:
    index = ReachabilityIndex.from_objects([])
    assert index.path_counts([TCP80]) == {}
    assert index.classes() == []
    assert index.changed_class_pairs(0) == set()
    assert index.stats().revision == 0
    assert index.verdict(PodRef("x", "a"), "192.0.2.1", TCP80).allowed is None


def test_namespaces_referenced_only_by_pods_have_their_implicit_label() -> None:
    index = ReachabilityIndex.from_objects([pod("solo", "a", "10.9.0.1")])
    assert [(n.name, dict(n.labels)) for n in index.namespaces()] == [("solo", {"kubernetes.io/metadata.name": "solo"})]
    index.delete(ObjectKind.POD, "solo", "a")
    assert index.namespaces() == []


# -- cluster policies ----------------------------------------------------------------------------------------------


def _cluster_scenario() -> tuple[ReachabilityIndex, list[PodRef]]:
    from core_builders import cnp_dict, parse

    objs: list[KubeObject] = [
        *web_cluster(),
        ns("z", team="b"),
        pod("z", "other", "10.0.2.1", {"app": "client"}),
        # Admin: deny into x from namespaces of team b, except what a same-namespace peer accepts first.
        parse(cnp_dict("guard", "Admin", 5, {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}},
                       ingress=[{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "b"}}}]}])),
    ]
    index = ReachabilityIndex()
    for obj in objs:
        index.upsert(obj)
    return index, [PodRef("x", "db"), PodRef("y", "client"), PodRef("z", "other")]


def _check(index: ReachabilityIndex, endpoints: list[PodRef]) -> None:
    rebuilt = Snapshot.from_objects([*index.namespaces(), *index.pods(), *index.policies(),
                                     *index.cluster_policies()])
    for s, d in itertools.permutations(endpoints, 2):
        assert index.verdict(s, d, TCP80) == rebuilt.verdict(s, d, TCP80), (s, d)


def test_cluster_policy_peers_follow_namespace_label_changes() -> None:
    index, (db, client, other) = _cluster_scenario()
    assert index.verdict(client, db, TCP80).allowed is False  # cached now
    rev = index.revision
    index.upsert(ns("y", team="c"))  # y leaves team b: guard's peer no longer matches it
    assert index.verdict(client, db, TCP80).allowed is True
    assert (index.class_of(client).id, index.class_of(db).id) in index.changed_class_pairs(rev)  # type: ignore[union-attr]
    index.upsert(ns("y", team="b"))
    assert index.verdict(client, db, TCP80).allowed is False
    _check(index, [db, client, other])


def test_cluster_policy_subjects_follow_namespace_label_changes() -> None:
    from core_builders import cnp_dict, parse

    index, (db, client, other) = _cluster_scenario()
    index.upsert(parse(cnp_dict("guard", "Admin", 5, {"namespaces": {"matchLabels": {"team": "a"}}},
                                ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}])))
    assert index.verdict(client, db, TCP80).allowed is False
    assert index.verdict(db, client, TCP80).allowed is True
    index.upsert(ns("y", team="a"))  # y becomes a subject
    assert index.verdict(db, client, TCP80).allowed is False
    index.upsert(ns("x", team="z"))  # x no longer is
    assert index.verdict(client, db, TCP80).allowed is True
    _check(index, [db, client, other])


def test_cluster_policy_events_and_networks() -> None:
    from core_builders import anp_dict, parse

    from netpol_auditor.cluster_policy import ClusterPolicyKind

    index, (db, client, other) = _cluster_scenario()
    classes = len(index.classes())
    deny_z = parse(anp_dict("no-z", 1, {"namespaces": {}}, egress=[
        {"action": "Deny", "to": [{"networks": ["10.0.2.0/24"]}]}]))  # fmt: skip
    index.upsert(deny_z)
    assert index.verdict(db, other, TCP80).allowed is False
    assert index.verdict(other, db, TCP80).allowed is False  # guard: z is team b
    assert index.verdict(db, client, TCP80).allowed is True
    assert len(index.classes()) == classes  # z/other moved to a class of its own block set, still one class
    _check(index, [db, client, other])
    index.delete(ClusterPolicyKind.ADMIN_NETWORK_POLICY, None, "no-z")
    assert index.verdict(db, other, TCP80).allowed is True
    index.delete(ClusterPolicyKind.CLUSTER_NETWORK_POLICY, None, "guard")
    assert index.verdict(client, db, TCP80).allowed is True
    assert index.cluster_policies() == [] and index.stats().cluster_policies == 0
    _check(index, [db, client, other])
