"""Index metrics: the README catalogue exactly, path counts equal the engine's, the series cap, separate registries."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netpol_auditor.controller.feed import IndexFeed
from netpol_auditor.exporters.metrics import IndexMetrics, choose_ports, compute_aggregates
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import load_paths
from netpol_auditor.model import ObjectKind, PortProtocol

ROOT = Path(__file__).resolve().parents[2]
SEED = Path(__file__).with_name("manifests") / "three-tier.yaml"
KINDS = {"Pod": ObjectKind.POD, "Namespace": ObjectKind.NAMESPACE, "NetworkPolicy": ObjectKind.NETWORK_POLICY}


def readme_index_metrics() -> dict[str, tuple[str, set[str]]]:
    """The README's "Index" metrics table: name -> (type, label names)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Index", 1)[1].split("###", 1)[0]
    out = {}
    for line in section.splitlines():
        m = re.match(r"\| `(netpol_auditor_\w+)` \| (\w+)[^|]*\|([^|]*)\|", line)
        if m:
            labels_column = re.sub(r"\([^)]*\)", "", m.group(3))  # drop the "(`pod`, `namespace`)" value lists
            out[m.group(1)] = (m.group(2), set(re.findall(r"`(\w+)`", labels_column)))
    return out


def seeded_feed(metrics: IndexMetrics) -> IndexFeed:
    feed = IndexFeed(observer=metrics.observe_apply)
    for i, doc in enumerate(d for d in yaml.safe_load_all(SEED.read_text()) if d):
        doc["metadata"].update(uid=f"uid-{i}", resourceVersion=str(i + 1))
        doc.setdefault("status", {})
        if doc["kind"] == "Pod":
            doc["status"] = {"phase": "Running", "podIPs": [{"ip": f"10.1.0.{i}"}], "podIP": f"10.1.0.{i}"}
        feed.apply_event(KINDS[doc["kind"]], "ADDED", doc)
    return feed


def families(registry: CollectorRegistry) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def test_exported_names_types_and_labels_are_the_readme_catalogue() -> None:
    registry = CollectorRegistry()
    metrics = IndexMetrics(registry)
    feed = seeded_feed(metrics)
    ports, declared = choose_ports(feed.index.view(), (), 8)
    metrics.set_object_counts(feed.counts())
    metrics.publish(compute_aggregates(feed.index.view(), ports, 20000), declared, 8)
    exported: dict[str, tuple[str, set[str]]] = {}
    for fam in families(registry).values():
        labels = {k for s in fam.samples for k in s.labels if k != "le"}
        exported["netpol_auditor_index_events_total" if fam.name == "netpol_auditor_index_events" else fam.name] = (
            fam.type, labels)
    catalogue = readme_index_metrics()
    assert set(exported) == set(catalogue)
    for name, (kind, labels) in catalogue.items():
        assert exported[name][0] == kind, name
        assert exported[name][1] == labels, name


def test_path_counts_equal_the_engine_on_the_same_objects() -> None:
    registry = CollectorRegistry()
    metrics = IndexMetrics(registry)
    feed = seeded_feed(metrics)
    ports = (PortProtocol.parse("80"), PortProtocol.parse("8080"), PortProtocol.parse("5432"))
    metrics.publish(compute_aggregates(feed.index.view(), ports, 20000))
    offline = ReachabilityIndex.from_objects(
        o.__class__(**{**o.__dict__, "phase": "Running", "pod_ips": ("10.9.9.9",)}) if o.__class__.__name__ == "Pod"
        else o for o in load_paths([str(SEED)]))
    # Independent oracle: judge every ordered pair of distinct endpoint pods with the engine.
    expected: dict[tuple[str, str, str, str], float] = {}
    endpoints = offline.endpoints()
    for port in ports:
        for src in endpoints:
            for dst in endpoints:
                if src == dst:
                    continue
                verdict = "allowed" if offline.verdict(src, dst, port).allowed else "denied"
                key = (src.namespace, dst.namespace, str(port.port), verdict)
                expected[key] = expected.get(key, 0) + 1
    got = {(s.labels["source_namespace"], s.labels["destination_namespace"], s.labels["port"], s.labels["verdict"]):
           s.value for s in families(registry)["netpol_auditor_paths"].samples if s.value}
    assert got == expected
    assert got[("shop", "shop", "8080", "allowed")] == 1  # web -> api only


def test_series_cap_truncates_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    metrics = IndexMetrics(registry)
    feed = seeded_feed(metrics)
    ports = (PortProtocol.parse("80"), PortProtocol.parse("8080"), PortProtocol.parse("5432"))
    full = compute_aggregates(feed.index.view(), ports, 20000)
    with caplog.at_level(logging.WARNING):
        metrics.publish(compute_aggregates(feed.index.view(), ports, 4))
    fams = families(registry)
    assert len(fams["netpol_auditor_paths"].samples) == 4 < 2 * len(full.paths)
    assert fams["netpol_auditor_path_series_capped"].samples[0].value == 1
    assert "netpol_auditor_paths capped" in caplog.text and "--max-path-series" in caplog.text
    metrics.publish(full)
    assert families(registry)["netpol_auditor_path_series_capped"].samples[0].value == 0


def test_default_ports_are_the_most_declared_capped(caplog: pytest.LogCaptureFixture) -> None:
    feed = seeded_feed(IndexMetrics(CollectorRegistry()))
    ports, declared = choose_ports(feed.index.view(), (), 2)
    assert declared == 3 and len(ports) == 2
    assert choose_ports(feed.index.view(), (PortProtocol.parse("53/UDP"),), 2) == ((PortProtocol.parse("53/UDP"),), 1)


def test_two_operators_in_one_process_have_separate_registries() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    ma, _ = IndexMetrics(a), IndexMetrics(b)
    ma.observe_apply(ObjectKind.POD, "added", 0.001)
    assert families(a)["netpol_auditor_index_events"].samples[0].value == 1
    assert not [s for s in families(b)["netpol_auditor_index_events"].samples if s.name.endswith("_total")]
