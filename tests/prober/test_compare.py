"""Judging observations against the engine's predictions: retries, freshness, inconclusive results, mismatch
kinds, healing, and which policy and CNI feature (on which node) a contradiction points at."""

from __future__ import annotations

from typing import Any

import pytest

from netpol_auditor.engine import Verdict
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import PodRef, PortProtocol
from netpol_auditor.prober.compare import Comparator, Mismatch, MismatchKind, Outcome, exercised_features
from netpol_auditor.prober.plan import PathKey, ProbeGroup, predict, prediction_snapshot, probe_groups
from netpol_auditor.prober.script import ProbeResult

from .test_plan import namespace, pod, policy

SRC, DST = PodRef("x", "a"), PodRef("y", "b")


def cluster(*policies: Any) -> ReachabilityIndex:
    return ReachabilityIndex.from_objects([
        namespace("x"), namespace("y"),
        pod("x", "a", {"app": "a"}, "10.0.1.5", "node-1"),
        pod("y", "b", {"app": "b"}, "10.0.2.5", "node-2", [("http", 8080)]),
        *policies,
    ])


def groups(index: ReachabilityIndex) -> tuple[ProbeGroup, ProbeGroup]:
    g = probe_groups(index)
    src = next(v for v in g.values() if v.namespace == "x")
    dst = next(v for v in g.values() if v.namespace == "y")
    return src, dst


def verdict(index: ReachabilityIndex, port: str, src_ip: str = "10.0.1.5", dst_ip: str = "10.0.2.5") -> Verdict:
    src, dst = groups(index)
    return predict(prediction_snapshot(index), src, dst, PortProtocol.parse(port), (src_ip,), (dst_ip,))


def key(index: ReachabilityIndex, port: str) -> PathKey:
    src, dst = groups(index)
    return PathKey(src.id, dst.id, PortProtocol.parse(port), "node-1", "node-2")


DENY_ALL_Y = policy("y", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})


def judge(c: Comparator, index: ReachabilityIndex, port: str, result: ProbeResult | None, now: float,
          **kw: Any) -> Any:
    return c.judge(key(index, port), verdict(index, port), result, now, source=SRC, destination=DST,
                   policies={p.key: p for p in index.policies()}, **kw)


def test_disagreement_is_retried_then_becomes_a_mismatch_with_the_example_pair() -> None:
    index = cluster(DENY_ALL_Y)
    c = Comparator(late_seconds=0, retry_window_seconds=10, max_attempts=10)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0).outcome is Outcome.RETRY
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 4.0).outcome is Outcome.RETRY
    j = judge(c, index, "80/TCP", ProbeResult.CONNECTED, 10.5)
    assert j.outcome is Outcome.MISMATCH and j.new
    m = j.mismatch
    assert m.kind is MismatchKind.UNEXPECTEDLY_ALLOWED
    assert m.policy_label == "y/deny-all"
    assert m.describe().startswith("x/a → y/b:80/TCP connected; policy y/deny-all predicts denied")
    # ingress is enforced on the destination's node: that is where the CNI failed
    assert m.features == {("ingress", "node-2", "ingress")}
    # still wrong on the next cycle: same mismatch, not new
    again = judge(c, index, "80/TCP", ProbeResult.CONNECTED, 300.0)
    assert again.outcome is Outcome.MISMATCH and not again.new and again.mismatch.detected_at == 10.5


def test_retry_absorbs_programming_delay() -> None:
    index = cluster(DENY_ALL_Y)
    c = Comparator(late_seconds=0)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0).outcome is Outcome.RETRY
    j = judge(c, index, "80/TCP", ProbeResult.TIMED_OUT, 2.0)
    assert j.outcome is Outcome.MATCH and not c.mismatches
    assert c.policy_enforced([DENY_ALL_Y.key]) == {DENY_ALL_Y.key: 1}
    assert c.feature_enforced() == {("ingress", "node-2"): 1}


def test_attempts_are_bounded_even_inside_the_window() -> None:
    index = cluster(DENY_ALL_Y)
    c = Comparator(late_seconds=0, retry_window_seconds=100, max_attempts=2)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0).outcome is Outcome.RETRY
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 1.0).outcome is Outcome.MISMATCH


@pytest.mark.parametrize(("result", "kw", "reason"), [
    (None, {}, "no_result"),
    (ProbeResult.ERROR, {}, "probe_error"),
    (ProbeResult.REFUSED, {"real_target": True}, "real_target_refused"),
    (ProbeResult.CONNECTED, {"changed_at": 98.0}, "too_fresh"),
])
def test_results_that_prove_nothing_are_not_mismatches(result: ProbeResult | None, kw: Any, reason: str) -> None:
    index = cluster(DENY_ALL_Y)
    c = Comparator(late_seconds=0, retry_window_seconds=0, settle_seconds=5)
    j = judge(c, index, "80/TCP", result, 100.0, **kw)
    assert j.reason == reason and j.outcome in (Outcome.INCONCLUSIVE, Outcome.TOO_FRESH)
    assert not c.mismatches


def test_refused_and_timed_out_both_prove_denied_for_a_responder() -> None:
    index = cluster(DENY_ALL_Y)
    for result in (ProbeResult.REFUSED, ProbeResult.TIMED_OUT):
        assert judge(Comparator(late_seconds=0), index, "80/TCP", result, 0.0).outcome is Outcome.MATCH


def test_mismatch_heals_and_reports_resolution() -> None:
    index = cluster(DENY_ALL_Y)
    c = Comparator(late_seconds=0, retry_window_seconds=0)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0).outcome is Outcome.MISMATCH
    assert c.policy_enforced([DENY_ALL_Y.key]) == {DENY_ALL_Y.key: 0}
    assert c.feature_enforced() == {("ingress", "node-2"): 0}
    healed = judge(c, index, "80/TCP", ProbeResult.TIMED_OUT, 60.0)
    assert healed.outcome is Outcome.MATCH and healed.resolved is not None
    assert healed.resolved.kind is MismatchKind.UNEXPECTEDLY_ALLOWED
    assert not c.mismatches and c.policy_enforced([DENY_ALL_Y.key]) == {DENY_ALL_Y.key: 1}


def test_dropped_allowed_traffic_through_a_named_port_points_at_named_ports() -> None:
    allow_http = policy("y", "allow-http", {
        "podSelector": {"matchLabels": {"app": "b"}},
        "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]})
    index = cluster(allow_http)
    c = Comparator(late_seconds=0, retry_window_seconds=0)
    j = judge(c, index, "8080/TCP", ProbeResult.TIMED_OUT, 0.0)
    assert j.mismatch.kind is MismatchKind.UNEXPECTEDLY_DENIED
    assert j.mismatch.policy_label == "y/allow-http"
    assert j.mismatch.features == {("named_ports", "node-2", "ingress")}
    assert "predicts allowed" in j.mismatch.describe()


def test_end_port_udp_egress_and_ipblock_except_features() -> None:
    egress = policy("x", "egress", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.2.0/24"]}}], "ports": [{"port": 53,
                                                                                              "protocol": "UDP"}]},
            {"to": [{"namespaceSelector": {}}], "ports": [{"port": 9000, "endPort": 9100}]},
        ]})
    index = cluster(egress)
    policies = {p.key: p for p in index.policies()}
    # 9050/TCP is admitted by the endPort range: exercising end_port on the source's node (egress)
    v = verdict(index, "9050/TCP")
    assert v.allowed
    assert exercised_features(v, policies, "node-1", "node-2") == {("egress", "node-1", "egress"),
                                                                   ("end_port", "node-1", "egress")}
    # 53/UDP to 10.0.2.5 is denied by the except range of the ipBlock
    v = verdict(index, "53/UDP")
    assert v.allowed is False
    failing = exercised_features(v, policies, "node-1", "node-2", ("10.0.1.5",), ("10.0.2.5",), failing_only=True)
    assert failing == {("egress", "node-1", "egress"), ("ipblock_except", "node-1", "egress"),
                       ("udp", "node-1", "egress")}
    # the same port to an address outside the except range is allowed
    assert verdict(index, "53/UDP", dst_ip="10.0.3.5").allowed
    # a port the ipBlock rule does not take is denied for want of a rule, not by its except
    v = verdict(index, "80/TCP")
    assert v.allowed is False
    failing = exercised_features(v, policies, "node-1", "node-2", ("10.0.1.5",), ("10.0.2.5",), failing_only=True)
    assert failing == {("egress", "node-1", "egress")}


def _mismatch(port: str, features: set[tuple[str, str, str]]) -> Mismatch:
    key = PathKey("s", "d", PortProtocol.parse(port), "node-1", "node-1")
    return Mismatch(key, MismatchKind.UNEXPECTEDLY_ALLOWED, SRC, DST, ProbeResult.CONNECTED, (), frozenset(features),
                    0.0)


def test_feature_blame_separates_protocols_from_directions() -> None:
    c = Comparator(late_seconds=0)
    c.confirmed_features.update({("egress", "node-1", "egress"): 0.0, ("udp", "node-1", "egress"): 0.0,
                                 ("named_ports", "node-1", "ingress"): 0.0, ("ingress", "node-1", "ingress"): 0.0})
    # only UDP fails in the egress direction: the protocol is blamed, not egress
    c.mismatches[PathKey("a", "b", PortProtocol.parse("53/UDP"), "node-1", "node-1")] = _mismatch(
        "53/UDP", {("egress", "node-1", "egress"), ("udp", "node-1", "egress")})
    assert c.feature_enforced() == {("egress", "node-1"): 1, ("udp", "node-1"): 0, ("named_ports", "node-1"): 1,
                                    ("ingress", "node-1"): 1}
    # TCP fails too: egress itself is broken; UDP, seen only through egress on that node, is not enforced either
    c.mismatches[PathKey("a", "b", PortProtocol.parse("80/TCP"), "node-1", "node-1")] = _mismatch(
        "80/TCP", {("egress", "node-1", "egress")})
    assert c.feature_enforced()[("egress", "node-1")] == 0
    assert c.feature_enforced()[("udp", "node-1")] == 0
    # ... unless UDP was also confirmed through a direction that works there
    c.confirmed_features[("udp", "node-1", "ingress")] = 0.0
    assert c.feature_enforced()[("udp", "node-1")] == 1
    # ingress broken on the node: named ports, seen only through ingress, are not enforced either
    c.mismatches[PathKey("a", "b", PortProtocol.parse("81/TCP"), "node-1", "node-1")] = _mismatch(
        "81/TCP", {("ingress", "node-1", "ingress")})
    assert c.feature_enforced()[("named_ports", "node-1")] == 0


def test_blame_leaves_out_what_other_paths_prove_working() -> None:
    """A path admitted by endPort ranges on both sides (egress on node-1, ingress on node-2) is denied. While
    another path's latest observation proves the range works into node-2, node-1's egress alone is blamed; once
    that proof is gone (the other path disagrees too), nothing tells the two apart and both are."""
    index = cluster(
        policy("x", "out", {"podSelector": {}, "policyTypes": ["Egress"],
                            "egress": [{"ports": [{"port": 9000, "endPort": 9100}]}]}),
        policy("y", "in", {"podSelector": {}, "ingress": [{"ports": [{"port": 9000, "endPort": 9100}]}]}))
    policies = {p.key: p for p in index.policies()}
    src, dst = groups(index)
    port = PortProtocol.parse("9050/TCP")
    cross = PathKey(src.id, dst.id, port, "node-1", "node-2")
    local = PathKey(src.id, dst.id, port, "node-2", "node-2")
    c = Comparator(late_seconds=0, retry_window_seconds=1, max_attempts=2)

    def observe(k: PathKey, result: ProbeResult, now: float) -> Outcome:
        return c.judge(k, verdict(index, "9050/TCP"), result, now, source=SRC, destination=DST,
                       policies=policies).outcome

    assert observe(local, ProbeResult.CONNECTED, 0.0) is Outcome.MATCH
    assert observe(cross, ProbeResult.TIMED_OUT, 0.0) is Outcome.RETRY
    assert observe(cross, ProbeResult.TIMED_OUT, 2.0) is Outcome.MISMATCH
    assert c.mismatches[cross].features == {("end_port", "node-1", "egress"), ("end_port", "node-2", "ingress")}
    assert c.feature_enforced() == {("end_port", "node-1"): 0, ("end_port", "node-2"): 1,
                                    ("egress", "node-2"): 1, ("ingress", "node-2"): 1}
    assert observe(local, ProbeResult.TIMED_OUT, 3.0) is Outcome.RETRY
    assert c.feature_enforced()[("end_port", "node-2")] == 0


def test_a_match_on_the_first_port_of_a_range_does_not_confirm_end_port() -> None:
    """A CNI that ignores endPort still admits the range's first port ("the policy will be applied only for the
    single port field", concepts/services-networking/network-policies): only a port past it exercises endPort."""
    index = cluster(policy("x", "out", {"podSelector": {}, "policyTypes": ["Egress"],
                                        "egress": [{"ports": [{"port": 9000, "endPort": 9100}]}]}))
    policies = {p.key: p for p in index.policies()}
    assert exercised_features(verdict(index, "9000/TCP"), policies, "node-1", "node-2") == {
        ("egress", "node-1", "egress")}
    assert ("end_port", "node-1", "egress") in exercised_features(verdict(index, "9100/TCP"), policies, "node-1",
                                                                  "node-2")
    # a failure at the first port may still point at endPort handling
    failing = exercised_features(verdict(index, "9000/TCP"), policies, "node-1", "node-2", failing_only=True)
    assert failing == {("end_port", "node-1", "egress")}


def test_a_disagreement_that_agrees_after_waiting_is_late_not_a_mismatch() -> None:
    """Past the retry window, one more probe waits `late_seconds` before connecting: agreeing then, the path is
    enforced but programmed late (its own outcome, no mismatch); still disagreeing, it is a mismatch."""
    index = cluster(DENY_ALL_Y)
    c = Comparator(retry_window_seconds=10, max_attempts=10, late_seconds=30)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0, waited=2).outcome is Outcome.RETRY
    j = judge(c, index, "80/TCP", ProbeResult.CONNECTED, 11.0, waited=2)
    assert (j.outcome, j.wait) == (Outcome.RETRY, 30)
    j = judge(c, index, "80/TCP", ProbeResult.TIMED_OUT, 45.0, waited=30)
    assert (j.outcome, j.reason) == (Outcome.LATE, "programming_late")
    assert not c.mismatches and ("ingress", "node-2") in c.feature_enforced()
    # the next disagreement starts over; this time the long wait does not help
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 100.0, waited=2).outcome is Outcome.RETRY
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 111.0, waited=2).wait == 30
    j = judge(c, index, "80/TCP", ProbeResult.CONNECTED, 145.0, waited=30)
    assert j.outcome is Outcome.MISMATCH and j.new
    # a probe that agrees within the window is a plain match, whatever came before
    assert judge(c, index, "80/TCP", ProbeResult.TIMED_OUT, 150.0, waited=2).outcome is Outcome.MATCH


def test_one_pod_re_checking_in_place_steps_through_retry_and_late_check() -> None:
    """A probe pod that connects again at the retry window and at the late check (its attempts are judged together,
    at one `now`) is judged as the re-probe pods that waited as long would be."""
    index = cluster(DENY_ALL_Y)
    c = Comparator(retry_window_seconds=10, late_seconds=20)
    steps = [judge(c, index, "80/TCP", ProbeResult.CONNECTED, 50.0, waited=w) for w in (2, 10, 20)]
    assert [(j.outcome, j.wait) for j in steps[:2]] == [(Outcome.RETRY, 10), (Outcome.RETRY, 20)]
    assert steps[2].outcome is Outcome.MISMATCH
    # converging by the retry window: a plain match; by the late check: late
    for agree_at, outcome in ((10, Outcome.MATCH), (20, Outcome.LATE)):
        c = Comparator(retry_window_seconds=10, late_seconds=20)
        for w in (2, 10, 20):
            j = judge(c, index, "80/TCP", ProbeResult.CONNECTED if w < agree_at else ProbeResult.TIMED_OUT, 50.0,
                      waited=w)
            if w == agree_at:
                break
        assert j.outcome is outcome and not c.mismatches


def test_a_changed_prediction_starts_the_disagreement_over() -> None:
    """A path disagreed, then its policies changed (or it left the plan and came back): the old disagreement says
    nothing of the new prediction, so the next one is retried, not a mismatch at once (found by the churn soak)."""
    index = cluster(DENY_ALL_Y)
    c = Comparator(late_seconds=0, retry_window_seconds=10, max_attempts=10)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0).outcome is Outcome.RETRY
    c.restart([key(index, "80/TCP")])
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 60.0).outcome is Outcome.RETRY
    assert not c.mismatches
    # without the restart the same sequence is a mismatch
    c = Comparator(late_seconds=0, retry_window_seconds=10, max_attempts=10)
    judge(c, index, "80/TCP", ProbeResult.CONNECTED, 0.0)
    assert judge(c, index, "80/TCP", ProbeResult.CONNECTED, 60.0).outcome is Outcome.MISMATCH
