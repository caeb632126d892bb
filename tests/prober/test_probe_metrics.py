"""Prober metrics: exactly the names, types and labels of the README's Prober catalogue."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netpol_auditor.exporters.probe_metrics import ProbeMetrics, ProbeState, count_mismatches
from netpol_auditor.model import PodRef, PortProtocol
from netpol_auditor.prober.compare import Mismatch, MismatchKind
from netpol_auditor.prober.plan import PathKey
from netpol_auditor.prober.script import ProbeResult

README = Path(__file__).resolve().parents[2] / "README.md"


def catalogue() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names) from the README's "Prober" table."""
    text = README.read_text()
    section = text.split("### Prober", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    out = {}
    prev_labels: set[str] = set()
    for row in section.splitlines():
        m = re.match(r"\| `(netpol_auditor_\w+)` \| (\w+)[^|]*\| ([^|]*)\|", row)
        if not m:
            continue
        labels = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", m.group(3))))
        if "same as above" in m.group(3):
            labels = prev_labels
        out[m.group(1)] = (m.group(2), labels)
        prev_labels = labels
    return out


def mismatch(port: int, node: str) -> Mismatch:
    return Mismatch(PathKey("g1", "g2", PortProtocol(port), node, node), MismatchKind.UNEXPECTEDLY_ALLOWED,
                    PodRef("x", "a"), PodRef("y", "b"), ProbeResult.CONNECTED, (("y", "deny-all"),),
                    frozenset({("ingress", node, "ingress")}), 0.0)


def test_every_catalogued_prober_metric_is_exposed_with_its_type_and_labels() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    labels = ("x", "y", "80", "TCP", "unexpectedly_allowed", "y/deny-all")
    metrics.detected.labels(*labels).inc()
    metrics.probes.labels("TCP", "connected").inc()
    metrics.inconclusive.labels("probe_error").inc()
    metrics.pod_duration.observe(3.0)
    metrics.pods_running.set(2)
    metrics.errors.labels("wait").inc()
    metrics.plan_duration.observe(0.2)
    metrics.plan_self_check_failures.inc()
    ns = {"g1": "x", "g2": "y"}
    # two node placements of one class pair count once
    metrics.publish(ProbeState(count_mismatches([mismatch(80, "n1"), mismatch(80, "n2")], ns),
                               {("y", "deny-all"): 0}, {("ingress", "n1"): 0}, 0.5,
                               {("judged", ""): 3, ("inconclusive", "quota"): 2}, 1.7e9))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    want = catalogue()
    assert len(want) == 15
    for name, (kind, label_names) in want.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        assert base in families, name
        fam = families[base]
        assert fam.type == kind, name
        samples = [s for s in fam.samples if s.name in (name, f"{name}_count")]
        assert samples, name
        assert set(samples[0].labels) - {"le"} == label_names, name
    (current,) = families["netpol_auditor_mismatches"].samples
    assert current.value == 1
    assert dict(current.labels)["policy"] == "y/deny-all"


def test_healed_series_disappear() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    metrics.publish(ProbeState(count_mismatches([mismatch(80, "n1")], {"g1": "x", "g2": "y"})))
    assert b"netpol_auditor_mismatches{" in generate_latest(registry)
    metrics.publish(ProbeState())
    assert b"netpol_auditor_mismatches{" not in generate_latest(registry)


def test_registered_once_per_registry_and_cleared_when_probing_stops() -> None:
    registry = CollectorRegistry()
    metrics = ProbeMetrics.for_registry(registry)
    # a prober restarted in the same process reuses the series (registering twice would raise)
    assert ProbeMetrics.for_registry(registry) is metrics
    metrics.count_detected(("x", "y", "80", "TCP", "unexpectedly_allowed", "y/deny-all"))
    metrics.publish(ProbeState(count_mismatches([mismatch(80, "n1")], {"g1": "x", "g2": "y"}),
                               {("y", "deny-all"): 0}, {("ingress", "n1"): 0}, 1.0, {("judged", ""): 1}, 1.7e9))
    metrics.clear()
    text = "\n".join(line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#"))
    for name in ("netpol_auditor_mismatches{", "netpol_auditor_policy_enforced{",
                 "netpol_auditor_cni_feature_enforced{", "netpol_auditor_probe_coverage_ratio ",
                 "netpol_auditor_probe_paths{",
                 "netpol_auditor_probe_cycle_last_completed_timestamp_seconds ",
                 "netpol_auditor_mismatches_detected_total{"):
        assert name not in text, name


def test_series_of_deleted_namespaces_and_policies_are_removed() -> None:
    metrics = ProbeMetrics(CollectorRegistry())
    kept = ("x", "y", "80", "TCP", "unexpectedly_allowed", "y/deny-all")
    metrics.count_detected(kept)
    metrics.count_detected(("x", "gone", "80", "TCP", "unexpectedly_allowed", "gone/deny-all"))
    metrics.count_detected(("x", "y", "80", "TCP", "unexpectedly_allowed", "y/deleted"))
    metrics.prune(namespaces={"x", "y"}, policies={"y/deny-all"})
    text = generate_latest(metrics.registry).decode()
    assert 'policy="y/deny-all"' in text
    assert "gone" not in text and "y/deleted" not in text


def test_a_scrape_restricted_by_name_serves_the_state_series() -> None:
    """``/metrics?name[]=...`` (prometheus_client's restricted registry) finds the state gauges by name too."""
    registry = CollectorRegistry()
    metrics = ProbeMetrics(registry)
    metrics.publish(ProbeState(path_states={("pending", ""): 7}))
    text = generate_latest(registry.restricted_registry(["netpol_auditor_probe_paths"])).decode()
    assert 'netpol_auditor_probe_paths{reason="",state="pending"} 7.0' in text
