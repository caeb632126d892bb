"""Events: which index changes are notable, and the rate limit and dedup of posting them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from netpol_auditor.controller.feed import IndexFeed
from netpol_auditor.exporters.events import (
    EventPoster,
    InvolvedObject,
    Notice,
    WarningGate,
    collect_facts,
    detect_notices,
)
from netpol_auditor.exporters.metrics import compute_aggregates
from netpol_auditor.model import ObjectKind, PortProtocol

SEED = Path(__file__).with_name("manifests") / "three-tier.yaml"
KINDS = {"Pod": ObjectKind.POD, "Namespace": ObjectKind.NAMESPACE, "NetworkPolicy": ObjectKind.NETWORK_POLICY}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def seed() -> tuple[IndexFeed, dict[str, dict[str, Any]]]:
    feed = IndexFeed()
    docs: dict[str, dict[str, Any]] = {}
    for i, doc in enumerate(d for d in yaml.safe_load_all(SEED.read_text()) if d):
        doc["metadata"].update(uid=f"uid-{i}", resourceVersion="1")
        if doc["kind"] == "Pod":
            doc["status"] = {"phase": "Running", "podIPs": [{"ip": f"10.1.0.{i}"}], "podIP": f"10.1.0.{i}"}
        feed.apply_event(KINDS[doc["kind"]], "ADDED", doc)
        docs[doc["metadata"]["name"]] = doc
    return feed, docs


def facts(feed: IndexFeed) -> Any:
    view = feed.index.view()
    return collect_facts(view, compute_aggregates(view, (PortProtocol.parse("80"),), 1000))


def test_isolation_changes_and_policies_selecting_nothing_are_notable() -> None:
    feed, docs = seed()
    baseline = facts(feed)
    assert detect_notices(None, baseline) == []  # the seed app is sound: no warning at the baseline
    assert detect_notices(baseline, facts(feed)) == []  # nothing changed, nothing to say

    # A policy in "other" that selects a label nobody has selects no pods, and its peer selects nothing.
    odd = copy.deepcopy(docs["api-from-web"])
    odd["metadata"].update(name="ghost", namespace="other", uid="uid-ghost")
    odd["spec"]["podSelector"] = {"matchLabels": {"app": "ghost"}}
    odd["spec"]["ingress"][0]["from"][0]["podSelector"] = {"matchLabels": {"app": "nobody"}}
    feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", odd)
    after = facts(feed)
    notices = detect_notices(baseline, after)
    reasons = {(n.reason, n.involved.kind, n.involved.namespace, n.involved.name) for n in notices}
    assert reasons == {("PolicySelectsNoPods", "NetworkPolicy", "other", "ghost"),
                       ("PolicyPeerSelectsNothing", "NetworkPolicy", "other", "ghost")}
    assert all(n.type == "Warning" and n.involved.uid == "uid-ghost" for n in notices)

    # A default deny in "other" isolates its only pod: the namespace becomes isolated for ingress.
    deny = copy.deepcopy(docs["default-deny-ingress"])
    deny["metadata"].update(namespace="other", uid="uid-deny-other")
    feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", deny)
    notices = detect_notices(after, facts(feed))
    assert [(n.reason, n.involved.kind, n.involved.name, n.involved.uid) for n in notices] == [
        ("NamespaceIsolated", "Namespace", "other", docs["other"]["metadata"]["uid"])]
    assert "Ingress" in notices[0].message and "unisolated to isolated" in notices[0].message


def test_rate_limit_and_dedup() -> None:
    clock = Clock()
    poster = EventPoster(None, per_minute=3, dedup_seconds=60, clock=clock)
    ref = InvolvedObject("v1", "Namespace", None, "shop")
    same = Notice(ref, "NamespaceIsolated", "m")
    assert poster.admit(same)
    assert not poster.admit(same)  # duplicate within the window
    assert poster.admit(Notice(ref, "NamespaceIsolated", "m2"))
    assert poster.admit(Notice(ref, "NamespaceIsolated", "m3"))
    assert not poster.admit(Notice(ref, "NamespaceIsolated", "m4"))  # 3 a minute: the bucket is empty
    clock.now += 20  # one token back
    assert poster.admit(Notice(ref, "NamespaceIsolated", "m4"))
    assert not poster.admit(Notice(ref, "NamespaceIsolated", "m5"))
    clock.now += 61
    assert poster.admit(same)  # the dedup window has passed
    assert (poster.dropped_duplicates, poster.dropped_rate_limited) == (1, 2)


def test_event_body_follows_client_go_for_cluster_scoped_objects() -> None:
    poster = EventPoster(None, per_minute=1, dedup_seconds=1, instance="replica-1")
    body = poster.event_body(Notice(InvolvedObject("v1", "Namespace", None, "shop", "u1"), "NamespaceIsolated", "m"))
    assert body["metadata"]["namespace"] == "default"
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Namespace", "name": "shop", "uid": "u1"}
    assert body["reportingComponent"] == "netpol-auditor" and body["reportingInstance"] == "replica-1"
    policy = InvolvedObject("networking.k8s.io/v1", "NetworkPolicy", "shop", "p", "u2")
    assert poster.event_body(Notice(policy, "PolicySelectsNoPods", "m", "Warning"))["metadata"]["namespace"] == "shop"


def test_standing_warnings_wait_for_the_grace_period_and_vanish_when_fixed() -> None:
    feed, docs = seed()
    clock = Clock()
    gate = WarningGate(30, clock=clock)
    baseline = facts(feed)
    ghost = copy.deepcopy(docs["api-from-web"])
    ghost["metadata"].update(name="ghost", uid="uid-ghost")
    ghost["spec"]["podSelector"] = {"matchLabels": {"app": "later"}}
    feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", ghost)
    now = facts(feed)
    assert gate.filter(detect_notices(baseline, now), now) == []  # held back
    assert gate.next_due() == 30
    clock.now += 31
    posted = gate.filter([], facts(feed))
    assert [n.reason for n in posted] == ["PolicySelectsNoPods"]

    # The same situation resolved within the grace period (the pod started) is never warned about.
    late = copy.deepcopy(ghost)
    late["metadata"].update(name="ghost2", uid="uid-ghost2", resourceVersion="1")
    feed.apply_event(ObjectKind.NETWORK_POLICY, "ADDED", late)
    before, now = now, facts(feed)
    assert gate.filter(detect_notices(before, now), now) == []
    pod = copy.deepcopy(docs["web"])
    pod["metadata"].update(name="later", uid="uid-later", labels={"app": "later"})
    pod["status"]["podIPs"] = [{"ip": "10.1.0.99"}]
    pod["status"]["podIP"] = "10.1.0.99"
    feed.apply_event(ObjectKind.POD, "ADDED", pod)
    clock.now += 31
    assert gate.filter([], facts(feed)) == []
    assert gate.next_due() is None
