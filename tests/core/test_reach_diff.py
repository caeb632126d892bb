"""reach_diff: the paths two states differ on equal a pair-by-pair comparison by the reference evaluator, whatever
the states; decisions name the deciding rules."""

from __future__ import annotations

from typing import Any

from core_builders import ns, pod, policy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_index_properties import EXTERNALS, PORTS, object_st, parsed

from netpol_auditor.cluster_policy import ClusterPolicy
from netpol_auditor.engine import Snapshot
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import KubeObject
from netpol_auditor.model import Endpoint, Namespace, Pod, PodRef, PortProtocol
from netpol_auditor.reach_diff import Change, Decision, diff_reachability

TCP80 = PortProtocol.parse("80/TCP")


def _endpoints(objs: list[KubeObject]) -> list[Endpoint]:
    """Every pod (endpoints or not: those are not judged) and the external addresses."""
    refs = sorted({o.ref for o in objs if isinstance(o, Pod)})
    return [*refs, *EXTERNALS]


def _naive(before: list[KubeObject], after: list[KubeObject]) -> list[tuple[Endpoint, Endpoint, PortProtocol, Change]]:
    old, new = Snapshot.from_objects(before), Snapshot.from_objects(after)
    in_before = set(_endpoints(before))
    common = [e for e in _endpoints(after) if e in in_before]
    found = []
    for src in common:
        for dst in common:
            if src == dst or not (isinstance(src, PodRef) or isinstance(dst, PodRef)):
                continue
            for port in PORTS:
                a, b = old.verdict(src, dst, port).allowed, new.verdict(src, dst, port).allowed
                if a != b:
                    kind = Change.NOT_JUDGED if a is None or b is None else (Change.OPENED if b else Change.CLOSED)
                    found.append((src, dst, port, kind))
    return found


@settings(max_examples=150)  # two reference evaluations of every pair per example: half the profile's budget
@given(st.lists(object_st, max_size=8), st.lists(object_st, max_size=8))
def test_diff_equals_a_pair_by_pair_comparison(
    raw_before: list[dict[str, Any]], raw_after: list[dict[str, Any]]
) -> None:
    before, after = [parsed(o) for o in raw_before], [parsed(o) for o in raw_after]
    diff = diff_reachability(
        ReachabilityIndex.from_objects(before),
        ReachabilityIndex.from_objects(after),
        _endpoints(before),
        _endpoints(after),
        PORTS,
    )
    assert [(c.source, c.destination, c.port, c.change) for c in diff.changes] == _naive(before, after)
    in_before, in_after = set(_endpoints(before)), set(_endpoints(after))
    assert diff.added == tuple(e for e in _endpoints(after) if e not in in_before)
    assert diff.removed == tuple(e for e in _endpoints(before) if e not in in_after)


def _by_key(objs: list[KubeObject]) -> dict[tuple[str, str | None, str], KubeObject]:
    """The objects an index keeps: the last of each kind, namespace and name."""
    return {(type(o).__name__, None if isinstance(o, (Namespace, ClusterPolicy)) else o.namespace, o.name): o
            for o in objs}


@settings(max_examples=150)
@given(st.lists(object_st, max_size=8), st.lists(object_st, max_size=2), st.sets(st.integers(0, 7), max_size=2))
def test_diff_of_a_small_change_equals_a_pair_by_pair_comparison(
    raw_base: list[dict[str, Any]], raw_changed: list[dict[str, Any]], dropped: set[int]
) -> None:
    """Few objects changed: most pairs are left out by the change log, and must be the unchanged ones."""
    base = list(_by_key([parsed(o) for o in raw_base]).values())
    head = [o for i, o in enumerate(base) if i not in dropped] + [parsed(o) for o in raw_changed]
    head = list(_by_key(head).values())
    diff = diff_reachability(
        ReachabilityIndex.from_objects(base), ReachabilityIndex.from_objects(head), _endpoints(base), _endpoints(head),
        PORTS,
    )  # fmt: skip
    assert [(c.source, c.destination, c.port, c.change) for c in diff.changes] == _naive(base, head)


def _changes(before: list[KubeObject], after: list[KubeObject]) -> list[tuple[str, str, str]]:
    def endpoints(objs: list[KubeObject]) -> list[Endpoint]:
        return [o.ref for o in objs if isinstance(o, Pod)]

    diff = diff_reachability(
        ReachabilityIndex.from_objects(before), ReachabilityIndex.from_objects(after), endpoints(before),
        endpoints(after), [TCP80],
    )  # fmt: skip
    return [(str(c.source), str(c.destination), c.change.value) for c in diff.changes]


WEB_ONLY = {
    "podSelector": {"matchLabels": {"app": "db"}},
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
}


def test_a_pod_moving_into_a_class_that_exists_is_compared() -> None:
    """The change log says nothing here (no class appears, no verdict cache is dropped): the move itself does."""
    a, b = pod("x", "a", "10.0.0.1", {"app": "web"}), pod("x", "b", "10.0.0.2", {"app": "db"})
    c = pod("x", "c", "10.0.0.3", {"app": "web"})
    allow = policy("x", "db", WEB_ONLY)
    c_as_db = pod("x", "c", "10.0.0.3", {"app": "db"})
    # c is now isolated, and admits web only; b admits c no more.
    assert _changes([a, b, c, allow], [a, b, c_as_db, allow]) == [
        ("x/b", "x/c", "closed"), ("x/c", "x/b", "closed"),
    ]  # fmt: skip


def test_changes_seen_by_one_side_only_are_compared() -> None:
    a, b = pod("x", "a", "10.0.0.1", {"app": "web"}), pod("y", "b", "10.0.0.2", {"app": "db"})
    egress = policy("x", "no-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert _changes([a, b], [a, b, egress]) == [("x/a", "y/b", "closed")]
    team_a = {"namespaceSelector": {"matchLabels": {"team": "a"}}}
    from_team_a = policy("y", "db", {"podSelector": {}, "ingress": [{"from": [team_a]}]})
    assert _changes([ns("x", team="a"), a, b, from_team_a], [ns("x", team="b"), a, b, from_team_a]) == [
        ("x/a", "y/b", "closed")
    ]


def test_pods_alike_on_both_sides_are_expanded_pair_by_pair() -> None:
    web = [pod("x", f"web-{i}", f"10.0.0.{i}", {"app": "web"}) for i in range(3)]
    db = pod("x", "db", "10.0.1.1", {"app": "db"})
    deny = policy("x", "deny", {"podSelector": {}})
    before = [*web, db]
    after = [*web, db, deny]
    endpoints = [p.ref for p in before]
    diff = diff_reachability(
        ReachabilityIndex.from_objects(before), ReachabilityIndex.from_objects(after), endpoints, endpoints, [TCP80]
    )
    assert len(diff.changes) == 4 * 3  # every ordered pair of distinct pods, replicas of one class included
    assert {c.change for c in diff.changes} == {Change.CLOSED}
    assert diff.compared == 4 and not diff.added and not diff.removed


def test_decisions_name_the_deciding_rules() -> None:
    a = pod("x", "a", "10.0.0.1", {"app": "a"})
    b = pod("x", "b", "10.0.0.2", {"app": "b"})
    allow = policy(
        "x", "allow", {"podSelector": {"matchLabels": {"app": "b"}}, "ingress": [{"from": [{"podSelector": {}}]}]}
    )
    index = ReachabilityIndex.from_objects([a, b, allow])
    allowed = Decision.of(index.verdict(a.ref, b.ref, TCP80))
    assert str(allowed) == "allowed by x/allow ingress[0] (from[0], any port)"
    assert allowed.policies == ("x/allow",)
    denied = Decision.of(
        ReachabilityIndex.from_objects([a, b, policy("x", "deny", {"podSelector": {}})]).verdict(a.ref, b.ref, TCP80)
    )
    assert str(denied) == "denied: ingress isolated by x/deny, no rule admits"
    unjudged = Decision.of(index.verdict(a.ref, PodRef("x", "gone"), TCP80))
    assert str(unjudged) == "not judged (unknown pod x/gone)"
    assert str(Decision.of(ReachabilityIndex.from_objects([a, b]).verdict(a.ref, b.ref, TCP80))) == (
        "allowed (no policy isolates either side)"
    )
