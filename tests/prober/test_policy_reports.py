"""PolicyReports built from what probing found: failures on the implicated policies' namespaces, paths that could
not be checked as `skip` with their reason (never `pass`), confirmed policies as `pass`, bounded in size."""

from __future__ import annotations

from netpol_auditor.exporters.policy_reports import MAX_RESULTS, build_reports, findings
from netpol_auditor.model import PodRef, PortProtocol
from netpol_auditor.prober.compare import Mismatch, MismatchKind
from netpol_auditor.prober.plan import PathKey
from netpol_auditor.prober.script import ProbeResult

PORT = PortProtocol.parse("5432/TCP")


def mismatch(policies: tuple[tuple[str, str], ...], kind: MismatchKind = MismatchKind.UNEXPECTEDLY_ALLOWED
             ) -> Mismatch:
    return Mismatch(PathKey("web", "db", PORT, "node-1", "node-2"), kind, PodRef("shop", "web-1"),
                    PodRef("payments", "db-0"), ProbeResult.CONNECTED, policies, frozenset(), 0.0)


def test_a_mismatch_fails_on_each_policy_it_implicates_and_a_skip_keeps_its_reason() -> None:
    found = findings(
        [mismatch((("payments", "db"), ("shop", "egress")))],
        {("payments", "db"): 0, ("shop", "egress"): 0, ("shop", "web"): 1},
        [(PathKey("a", "b", PORT, "node-1", "node-1"), "pod_timeout", "shop", "payments")],
        {("payments", "db"): "uid-db"},
    )
    reports = build_reports(found, now=1000)
    assert set(reports) == {"payments", "shop"}
    payments = reports["payments"]
    assert payments["apiVersion"] == "wgpolicyk8s.io/v1alpha2" and payments["metadata"]["name"] == "netpol-auditor"
    assert [(r["result"], r["policy"]) for r in payments["results"]] == [("fail", "db"), ("skip", "probe")]
    fail, skip = payments["results"]
    assert fail["severity"] == "high" and fail["rule"] == "not-enforced"
    assert fail["resources"] == [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                  "namespace": "payments", "name": "db", "uid": "uid-db"}]
    assert fail["properties"]["source"] == "shop/web-1" and fail["properties"]["port"] == "5432/TCP"
    assert skip["rule"] == "pod_timeout" and "pod_timeout" in skip["message"] and skip["scored"] is False
    assert payments["summary"] == {"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 1}
    assert [(r["result"], r["policy"]) for r in reports["shop"]["results"]] == [("fail", "egress"), ("pass", "web")]


def test_a_mismatch_no_policy_explains_goes_to_the_destination_namespace() -> None:
    reports = build_reports(findings([mismatch((), MismatchKind.UNEXPECTEDLY_DENIED)], {}, [], {}))
    (result,) = reports["payments"]["results"]
    assert (result["policy"], result["rule"], result["result"]) == (
        "no-isolating-policy", "allowed-traffic-dropped", "fail")


def test_a_cluster_policy_that_decides_fails_in_the_destination_namespace_naming_the_cluster_scoped_object() -> None:
    found = findings([mismatch((("AdminNetworkPolicy", "guard-db"),))], {}, [],
                     {("AdminNetworkPolicy", "guard-db"): "uid-anp"})
    reports = build_reports(found)
    assert set(reports) == {"payments"}  # never a report in a namespace named after the kind
    (result,) = reports["payments"]["results"]
    assert (result["policy"], result["result"]) == ("AdminNetworkPolicy/guard-db", "fail")
    assert result["resources"] == [{"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
                                    "name": "guard-db", "uid": "uid-anp"}]


def test_a_report_is_bounded_failures_first() -> None:
    skips = [(PathKey(f"s{i}", "d", PORT, "node-1", "node-1"), "too_fresh", "shop", "shop") for i in range(300)]
    found = findings([mismatch((("shop", "egress"),))], {}, skips, {})
    results = build_reports(found)["shop"]["results"]
    assert len(results) == MAX_RESULTS + 1
    assert results[0]["result"] == "fail"
    assert results[-1]["result"] == "warn" and "101 more results left out" in results[-1]["message"]


def test_nothing_found_means_no_report() -> None:
    assert build_reports(findings([], {("shop", "web"): 0}, [], {})) == {}
