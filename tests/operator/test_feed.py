"""IndexFeed: watch events and full listings keep the index equal to a rebuild from the objects that exist.

A property test drives random event histories -- including lost DELETEDs (a re-list after 410 Gone), duplicate and
late events, and deleted-then-recreated names -- and checks the reconciled index against ``from_objects``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.controller.feed import ADDED, DELETED, FEED_KINDS, MODIFIED, IndexFeed
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import ObjectKind, PodRef, PortProtocol

NAMESPACES = ("a", "b")
POD_NAMES = ("p0", "p1", "p2")
APPS = ("web", "api", "db")


class FakeCluster:
    """A dict of API objects with UIDs and resourceVersions, as the API server would hand them out."""

    def __init__(self) -> None:
        self.objects: dict[tuple[ObjectKind, str | None, str], dict[str, Any]] = {}
        self.version = 0
        self.uids = 0

    def _meta(self, name: str, namespace: str | None, labels: dict[str, str], uid: str | None) -> dict[str, Any]:
        self.version += 1
        if uid is None:
            self.uids += 1
            uid = f"uid-{self.uids}"
        meta: dict[str, Any] = {"name": name, "uid": uid, "resourceVersion": str(self.version), "labels": labels}
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    def put(self, kind: ObjectKind, namespace: str | None, name: str, labels: dict[str, str]) -> dict[str, Any]:
        key = (kind, namespace, name)
        old = self.objects.get(key)
        meta = self._meta(name, namespace, labels, old["metadata"]["uid"] if old else None)
        if kind is ObjectKind.NAMESPACE:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}
        elif kind is ObjectKind.POD:
            n = int(name[1:])
            obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                   "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                                                              "ports": [{"containerPort": 80}]}]},
                   "status": {"phase": "Running", "podIP": f"10.0.{NAMESPACES.index(namespace or 'a')}.{n + 1}",
                              "podIPs": [{"ip": f"10.0.{NAMESPACES.index(namespace or 'a')}.{n + 1}"}]}}
        else:
            obj = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta,
                   "spec": {"podSelector": {"matchLabels": {"app": labels.get("target", "web")}},
                            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]}}
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def delete(self, kind: ObjectKind, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((kind, namespace, name), None)
        return copy.deepcopy(obj) if obj else None

    def listing(self, kind: ObjectKind) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for k, o in sorted(self.objects.items(), key=lambda kv: str(kv[0])) if k[0] is kind]

    def rebuild(self) -> ReachabilityIndex:
        parsed = [parse_object(o) for o in self.objects.values()]
        return ReachabilityIndex.from_objects(o for o in parsed if o is not None)


def assert_same_index(a: ReachabilityIndex, b: ReachabilityIndex) -> None:
    assert a.pods() == b.pods()
    assert a.policies() == b.policies()
    assert [ns.name for ns in a.namespaces()] == [ns.name for ns in b.namespaces()]
    assert a.policy_selected_pods() == b.policy_selected_pods()
    ports = [PortProtocol.parse("80")]
    assert a.path_counts(ports) == b.path_counts(ports)
    for src in b.endpoints():
        for dst in b.endpoints():
            if src != dst:
                assert a.verdict(src, dst, ports[0]).allowed == b.verdict(src, dst, ports[0]).allowed


def reconcile_all(feed: IndexFeed, cluster: FakeCluster) -> None:
    for kind in (ObjectKind.NAMESPACE, ObjectKind.NETWORK_POLICY, ObjectKind.POD):
        feed.reconcile(kind, cluster.listing(kind), feed.sequence)


_kinds = st.sampled_from([ObjectKind.NAMESPACE, ObjectKind.POD, ObjectKind.NETWORK_POLICY])
_ops = st.lists(st.tuples(
    st.sampled_from(["put", "put", "delete", "recreate"]), _kinds, st.sampled_from(NAMESPACES),
    st.sampled_from(POD_NAMES), st.sampled_from(APPS),
    st.sampled_from(["deliver", "deliver", "deliver", "lose", "duplicate"]),
), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_watch_events_then_reconcile_equal_a_rebuild(ops: list[tuple[str, ObjectKind, str, str, str, str]]) -> None:
    cluster = FakeCluster()
    feed = IndexFeed()
    for op, kind, namespace, name, app, delivery in ops:
        ns: str | None = namespace
        if kind is ObjectKind.NAMESPACE:
            ns, name = None, namespace
        events: list[tuple[str, dict[str, Any]]] = []
        if op in ("delete", "recreate"):
            old = cluster.delete(kind, ns, name)
            if old is not None:
                events.append(("DELETED", old))
        if op in ("put", "recreate"):
            labels = {"app": app} if kind is ObjectKind.POD else {"target": app}
            events.append(("MODIFIED" if (kind, ns, name) in cluster.objects else "ADDED",
                           cluster.put(kind, ns, name, labels)))
        for event_type, body in events:
            if delivery == "lose":
                continue  # the watch broke; the re-list below will not say it was deleted
            feed.apply_event(kind, event_type, body)
            if delivery == "duplicate":
                feed.apply_event(kind, event_type, body)
    reconcile_all(feed, cluster)
    assert_same_index(feed.index, cluster.rebuild())
    assert feed.counts()[ObjectKind.POD] == len(cluster.listing(ObjectKind.POD))


def test_delete_of_an_older_uid_does_not_remove_the_recreated_object() -> None:
    cluster = FakeCluster()
    feed = IndexFeed()
    feed.apply_event(ObjectKind.NAMESPACE, "ADDED", cluster.put(ObjectKind.NAMESPACE, None, "a", {}))
    first = cluster.put(ObjectKind.POD, "a", "p0", {"app": "web"})
    feed.apply_event(ObjectKind.POD, "ADDED", first)
    cluster.delete(ObjectKind.POD, "a", "p0")
    second = cluster.put(ObjectKind.POD, "a", "p0", {"app": "api"})
    # kopf runs one worker per UID: the new object's ADDED can overtake the old one's DELETED.
    assert feed.apply_event(ObjectKind.POD, "ADDED", second) == MODIFIED
    assert feed.apply_event(ObjectKind.POD, "DELETED", first) is None
    assert feed.apply_event(ObjectKind.POD, "MODIFIED", first) is None  # late event of a deleted UID
    pod = feed.index.get_pod(PodRef("a", "p0"))
    assert pod is not None and pod.labels["app"] == "api"


def test_reconcile_keeps_what_the_watch_delivered_after_the_listing_started() -> None:
    cluster = FakeCluster()
    feed = IndexFeed()
    feed.apply_event(ObjectKind.NAMESPACE, "ADDED", cluster.put(ObjectKind.NAMESPACE, None, "a", {}))
    listing_started = feed.sequence
    stale_listing = cluster.listing(ObjectKind.POD)  # taken before the pod existed
    assert feed.apply_event(ObjectKind.POD, "ADDED", cluster.put(ObjectKind.POD, "a", "p0", {"app": "web"})) == ADDED
    result = feed.reconcile(ObjectKind.POD, stale_listing, listing_started)
    assert result.deleted == 0
    assert feed.index.get_pod(PodRef("a", "p0")) is not None
    # A listing taken later does remove what the watch never said was deleted.
    cluster.delete(ObjectKind.POD, "a", "p0")
    result = feed.reconcile(ObjectKind.POD, cluster.listing(ObjectKind.POD), feed.sequence)
    assert result.deleted == 1 and feed.index.get_pod(PodRef("a", "p0")) is None


def test_bad_object_is_logged_with_field_and_skipped(caplog: Any) -> None:
    cluster = FakeCluster()
    feed = IndexFeed()
    feed.apply_event(ObjectKind.NAMESPACE, "ADDED", cluster.put(ObjectKind.NAMESPACE, None, "a", {}))
    good = cluster.put(ObjectKind.NETWORK_POLICY, "a", "p0", {"target": "web"})
    assert feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", good) == ADDED
    bad = copy.deepcopy(good)
    bad["metadata"]["resourceVersion"] = "999"
    bad["spec"]["ingress"][0]["ports"] = [{"protocol": "ICMP", "port": 80}]
    with caplog.at_level(logging.WARNING):
        change = feed.apply_event(ObjectKind.NETWORK_POLICY, "MODIFIED", bad)
    # The stale version must not keep deciding verdicts: it leaves the index, and the feed goes on.
    assert change == DELETED
    assert feed.index.policies() == []
    assert feed.skipped_objects == 1
    message = caplog.text
    assert "a/p0" in message and "protocol" in message
    assert feed.apply_event(ObjectKind.POD, "ADDED", cluster.put(ObjectKind.POD, "a", "p1", {"app": "web"})) == ADDED
    assert feed.skipped() == {**dict.fromkeys(FEED_KINDS, 0), ObjectKind.NETWORK_POLICY: 1}


def test_skipped_objects_are_counted_while_they_are_held_rejected() -> None:
    """The skipped-objects gauge says how many watched objects are missing from every verdict right now: it goes
    down when a rejected object is fixed, deleted, or gone from a re-list."""
    cluster = FakeCluster()
    feed = IndexFeed()
    feed.apply_event(ObjectKind.NAMESPACE, "ADDED", cluster.put(ObjectKind.NAMESPACE, None, "a", {}))
    bodies = []
    for i in range(3):
        body = cluster.put(ObjectKind.NETWORK_POLICY, "a", f"p{i}", {"target": "web"})
        body["spec"]["ingress"][0]["ports"] = [{"protocol": "ICMP", "port": 80}]
        assert feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", body) is None
        bodies.append(body)
    assert feed.skipped()[ObjectKind.NETWORK_POLICY] == 3
    # the same rejected version again (a re-list) is not counted twice
    assert feed.apply_event(ObjectKind.NETWORK_POLICY, None, copy.deepcopy(bodies[0])) is None
    assert feed.skipped()[ObjectKind.NETWORK_POLICY] == 3
    fixed = copy.deepcopy(bodies[0])
    fixed["metadata"]["resourceVersion"] = "1000"
    fixed["spec"]["ingress"][0]["ports"] = [{"protocol": "TCP", "port": 80}]
    assert feed.apply_event(ObjectKind.NETWORK_POLICY, "MODIFIED", fixed) == ADDED
    assert feed.apply_event(ObjectKind.NETWORK_POLICY, "DELETED", bodies[1]) is None
    assert feed.skipped()[ObjectKind.NETWORK_POLICY] == 1
    started = feed.sequence
    feed.reconcile(ObjectKind.NETWORK_POLICY, [fixed], started)  # p2 is not listed any more
    assert feed.skipped()[ObjectKind.NETWORK_POLICY] == 0
    assert [p.name for p in feed.index.policies()] == ["p0"]


def test_an_evicted_object_is_taken_again_when_it_comes_back_into_scope() -> None:
    """Eviction (the namespace left the audited scope) is not deletion: no tombstone, so the same object's later
    events and listings are applied again."""
    cluster = FakeCluster()
    feed = IndexFeed()
    feed.apply_event(ObjectKind.NAMESPACE, "ADDED", cluster.put(ObjectKind.NAMESPACE, None, "a", {}))
    pod = cluster.put(ObjectKind.POD, "a", "p1", {"app": "web"})
    policy = cluster.put(ObjectKind.NETWORK_POLICY, "a", "p0", {"target": "web"})
    assert feed.apply_event(ObjectKind.POD, "ADDED", pod) == ADDED
    assert feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", policy) == ADDED
    assert feed.evict_namespace("a") == 2
    assert feed.index.pods() == [] and feed.index.policies() == []
    assert [n.name for n in feed.index.namespaces()] == ["a"]  # the namespace stays: its labels decide the scope
    assert feed.apply_event(ObjectKind.POD, None, pod) == ADDED  # listed again
    relabelled = cluster.put(ObjectKind.POD, "a", "p1", {"app": "api"})
    assert feed.apply_event(ObjectKind.POD, "MODIFIED", relabelled) == MODIFIED
    assert feed.index.pods()[0].labels["app"] == "api"


def admin_deny(name: str, version: str, priority: int = 10, uid: str = "anp-uid") -> dict[str, Any]:
    """An AdminNetworkPolicy denying ingress to namespace a's pods from namespace b, as a watch delivers it."""
    return {"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
            "metadata": {"name": name, "uid": uid, "resourceVersion": version},
            "spec": {"priority": priority,
                     "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "a"}}},
                     "ingress": [{"action": "Deny", "from": [
                         {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "b"}}}]}]}}


def b_to_a_allowed(feed: IndexFeed) -> bool:
    src = next(e for e in feed.index.endpoints() if e.namespace == "b")
    dst = next(e for e in feed.index.endpoints() if e.namespace == "a")
    return feed.index.verdict(src, dst, PortProtocol.parse("80")).allowed


def test_cluster_policies_are_fed_like_any_other_kind(caplog: Any) -> None:
    """An AdminNetworkPolicy's events reach the index (cluster-scoped: no namespace in its key); a malformed
    version leaves the index and is counted as skipped under its kind; a listing without it drops it."""
    cluster = FakeCluster()
    feed = IndexFeed()
    for ns in NAMESPACES:
        feed.apply_event(ObjectKind.NAMESPACE, "ADDED", cluster.put(ObjectKind.NAMESPACE, None, ns, {}))
        feed.apply_event(ObjectKind.POD, "ADDED", cluster.put(ObjectKind.POD, ns, "p0", {"app": "web"}))
    assert b_to_a_allowed(feed)
    anp = ClusterPolicyKind.ADMIN_NETWORK_POLICY
    assert feed.apply_event(anp, "ADDED", admin_deny("block-b", "1")) == ADDED
    assert feed.keys(anp) == {(anp, None, "block-b")} and feed.counts()[anp] == 1
    assert not b_to_a_allowed(feed)
    with caplog.at_level(logging.WARNING):
        assert feed.apply_event(anp, "MODIFIED", admin_deny("block-b", "2", priority=5000)) == DELETED
    assert "AdminNetworkPolicy block-b" in caplog.text and "priority" in caplog.text
    assert feed.skipped()[anp] == 1 and feed.counts()[anp] == 0
    assert b_to_a_allowed(feed)
    # a typed LIST's items carry no kind/apiVersion: the feed knows them from the kind it lists
    listed = admin_deny("block-b", "3")
    del listed["kind"], listed["apiVersion"]
    assert feed.reconcile(anp, [listed], feed.sequence).added == 1
    assert feed.skipped()[anp] == 0 and not b_to_a_allowed(feed)
    # not served any more (the CRD removed): an empty listing
    assert feed.reconcile(anp, [], feed.sequence).deleted == 1
    assert b_to_a_allowed(feed) and feed.counts()[anp] == 0
