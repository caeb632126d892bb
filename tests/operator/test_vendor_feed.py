"""The vendor policy table: watch events and full listings, as the index feed takes them (a listing never undoes
what the watch delivered after it started), a policy it cannot read widened to its whole scope."""

from __future__ import annotations

from typing import Any

import pytest

from netpol_auditor.controller.vendor_feed import WATCHED_VENDOR_KINDS, VendorFeed
from netpol_auditor.model import Direction
from netpol_auditor.vendor_policy import VENDOR_KINDS

CNP = next(k for k in VENDOR_KINDS if k.kind == "CiliumNetworkPolicy")


def cnp(name: str, app: str, version: str = "1") -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "resourceVersion": version},
            "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "ingress": [{}]}}


def selects(feed: VendorFeed, app: str) -> bool:
    return any(p.selects("shop", {}, {"app": app}) for p in feed.policies())


def test_watch_events_add_change_and_delete() -> None:
    feed = VendorFeed()
    assert feed.apply_event(CNP, "ADDED", cnp("a", "web"))
    assert not feed.apply_event(CNP, "MODIFIED", cnp("a", "web", "2"))  # same selection: nothing changed
    assert selects(feed, "web") and feed.counts()[CNP] == 1
    assert feed.apply_event(CNP, "MODIFIED", cnp("a", "db", "3"))
    assert selects(feed, "db") and not selects(feed, "web")
    assert feed.apply_event(CNP, "DELETED", cnp("a", "db", "3"))
    assert feed.policies() == () and feed.counts()[CNP] == 0
    assert not feed.apply_event(CNP, "DELETED", cnp("a", "db", "3"))


def test_a_listing_drops_ghosts_but_not_what_the_watch_delivered_since() -> None:
    feed = VendorFeed()
    feed.apply_event(CNP, None, cnp("ghost", "old"))  # deleted while the watch was down: no DELETED comes
    started = feed.sequence
    feed.apply_event(CNP, "ADDED", cnp("new", "web"))  # arrives while the listing runs
    assert feed.reconcile(CNP, [cnp("listed", "db")], started)
    names = {p.name for p in feed.policies()}
    assert names == {"new", "listed"}


def test_a_policy_it_cannot_read_selects_its_whole_scope(caplog: pytest.LogCaptureFixture) -> None:
    feed = VendorFeed()
    bad = cnp("bad", "web")
    bad["spec"] = {"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}}
    feed.apply_event(CNP, "ADDED", bad)
    (policy,) = feed.policies()
    assert policy.directions == frozenset(Direction)
    assert policy.selects("shop", {}, {}) and not policy.selects("other", {}, {})
    assert "spec.endpointSelector.matchExpressions[0].operator" in caplog.text


def test_every_kind_is_watched_once_in_its_newest_version() -> None:
    assert [(k.label, v) for k, v, _ in WATCHED_VENDOR_KINDS] == [(k.label, k.versions[0]) for k in VENDOR_KINDS]
    assert {p for _, _, p in WATCHED_VENDOR_KINDS} == {
        "ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies", "networkpolicies", "globalnetworkpolicies",
        "clusternetworkpolicies"}
