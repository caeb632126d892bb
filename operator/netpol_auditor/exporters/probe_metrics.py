"""Prober metrics: what the CNI really does (the README's "Prober" catalogue, exactly).

Counters and the histogram are updated as probes complete; the state gauges (current mismatches, per-policy
``enforced``, per-node CNI features, coverage, the cycle's paths by state) are published as one snapshot after each
round, and served by a collector, so a scrape never sees half an update and series of healed paths disappear.

The series are registered once per registry (`ProbeMetrics.for_registry`): a prober restarted in the same process
reuses them. A replica that stops probing (it lost the leadership) clears its state series, so only the active
replica reports mismatches.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from netpol_auditor.engine import PolicyKey
from netpol_auditor.prober.compare import Mismatch

__all__ = ["ProbeMetrics", "ProbeState", "mismatch_labels"]

MISMATCH_LABELS = ("source_namespace", "destination_namespace", "port", "protocol", "kind", "policy")
_PLAN_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 300.0)


def mismatch_labels(m: Mismatch, namespaces: Mapping[str, str]) -> tuple[str, str, str, str, str, str]:
    """Bounded labels of one mismatch; ``namespaces`` maps probe group id -> namespace."""
    return (
        namespaces.get(m.key.src, ""),
        namespaces.get(m.key.dst, ""),
        str(m.key.port.port),
        m.key.port.protocol.value,
        m.kind.value,
        m.policy_label,
    )


@dataclass(frozen=True)
class ProbeState:
    """One consistent snapshot of the state gauges."""

    # mismatch label tuple -> class pairs (src group, dst group, port) currently mismatching
    mismatches: dict[tuple[str, ...], int] = field(default_factory=dict)
    policy_enforced: dict[PolicyKey, int] = field(default_factory=dict)
    feature_enforced: dict[tuple[str, str], int] = field(default_factory=dict)
    coverage: float | None = None
    # the current cycle's paths by (state, reason): judged / inconclusive with its reason / pending
    path_states: dict[tuple[str, str], int] = field(default_factory=dict)
    cycle_completed: float | None = None


def count_mismatches(mismatches: Iterable[Mismatch], namespaces: Mapping[str, str]) -> dict[tuple[str, ...], int]:
    """Current mismatches per label set, counted as class pairs (node placements of one pair count once)."""
    pairs: dict[tuple[str, ...], set[tuple[str, str, str]]] = defaultdict(set)
    for m in mismatches:
        pairs[mismatch_labels(m, namespaces)].add((m.key.src, m.key.dst, str(m.key.port)))
    return {k: len(v) for k, v in pairs.items()}


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.state = ProbeState()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(self.state)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families' names (no samples), so that registries know them: a scrape restricted with ``name[]=``
        (prometheus_client's restricted registry) serves them too."""
        return self._families(ProbeState())

    @staticmethod
    def _families(s: ProbeState) -> Iterator[GaugeMetricFamily]:
        mismatches = GaugeMetricFamily(
            "netpol_auditor_mismatches", "Current prediction/observation mismatches (class pairs).",
            labels=MISMATCH_LABELS,
        )
        for labels, n in sorted(s.mismatches.items()):
            mismatches.add_metric(list(labels), n)
        yield mismatches
        enforced = GaugeMetricFamily(
            "netpol_auditor_policy_enforced", "1 when probes confirmed the NetworkPolicy is enforced, 0 when violated.",
            labels=("namespace", "policy"),
        )
        for (ns, name), v in sorted(s.policy_enforced.items()):
            enforced.add_metric([ns, name], v)
        yield enforced
        features = GaugeMetricFamily(
            "netpol_auditor_cni_feature_enforced",
            "1 when the CNI enforces the NetworkPolicy feature on the node, 0 when it does not.",
            labels=("feature", "node"),
        )
        for (feature, node), v in sorted(s.feature_enforced.items()):
            features.add_metric([feature, node], v)
        yield features
        coverage = GaugeMetricFamily(
            "netpol_auditor_probe_coverage_ratio", "Class pairs confirmed in the current cycle / all planned."
        )
        if s.coverage is not None:
            coverage.add_metric([], s.coverage)
        yield coverage
        paths = GaugeMetricFamily(
            "netpol_auditor_probe_paths",
            "Paths of the current probe cycle by state (judged, inconclusive, pending) and inconclusive reason.",
            labels=("state", "reason"),
        )
        for (state, reason), n in sorted(s.path_states.items()):
            paths.add_metric([state, reason], n)
        yield paths
        completed = GaugeMetricFamily(
            "netpol_auditor_probe_cycle_last_completed_timestamp_seconds", "When the last full probe cycle completed."
        )
        if s.cycle_completed is not None:
            completed.add_metric([], s.cycle_completed)
        yield completed


class ProbeMetrics:
    """The prober's series in a caller-supplied registry (the operator's, so /metrics serves both)."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, ProbeMetrics]] = weakref.WeakKeyDictionary()

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> ProbeMetrics:
        """The prober's series of ``registry``, registered on first use (registering twice would raise)."""
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # No "<name>_created" companion series: they are not in the catalogue.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.detected = Counter(
            "netpol_auditor_mismatches_detected", "Mismatches detected since start.", MISMATCH_LABELS,
            registry=registry,
        )
        self.probes = Counter(
            "netpol_auditor_probes", "Probe connections made.", ("protocol", "result"), registry=registry
        )
        self.inconclusive = Counter(
            "netpol_auditor_probes_inconclusive", "Probes that could not be judged.", ("reason",), registry=registry
        )
        self.late = Counter(
            "netpol_auditor_probes_late", "Paths whose probe agreed with the prediction only after waiting "
            "--probe-late seconds: enforced, but the CNI programs rules later than the retry window.",
            registry=registry,
        )
        self.pod_duration = Histogram(
            "netpol_auditor_probe_pod_duration_seconds", "Run time of one probe pod, creation to result.",
            buckets=_DURATION_BUCKETS, registry=registry,
        )
        self.pods_running = Gauge(
            "netpol_auditor_probe_pods_running", "Probe and responder pods alive now.", registry=registry
        )
        self.errors = Counter(
            "netpol_auditor_probe_errors", "Probe rounds (or steps of one) that failed, by stage; the loop goes on "
            "after a backoff.", ("stage",), registry=registry,
        )
        self.plan_duration = Histogram(
            "netpol_auditor_probe_plan_duration_seconds", "CPU time of one update of the planned paths (in a "
            "worker thread, off the event loop).", buckets=_PLAN_BUCKETS, registry=registry,
        )
        self.plan_self_check_failures = Counter(
            "netpol_auditor_probe_plan_self_check_failures", "Self-checks that found the incrementally kept plan "
            "different from a full rebuild (the rebuild replaced it).", registry=registry,
        )
        self._detected_labels: set[tuple[str, ...]] = set()
        self._state = _StateCollector()
        registry.register(self._state)

    def publish(self, state: ProbeState) -> None:
        self._state.state = state

    def count_detected(self, labels: tuple[str, ...]) -> None:
        self.detected.labels(*labels).inc()
        self._detected_labels.add(labels)

    def prune(self, namespaces: Iterable[str], policies: Iterable[str]) -> None:
        """Drop the detected-mismatch series of namespaces and policies (``ns/name``) that no longer exist."""
        ns, pols = set(namespaces), set(policies)
        for labels in list(self._detected_labels):
            src, dst, policy = labels[0], labels[1], labels[5]
            if (src and src not in ns) or (dst and dst not in ns) or (policy and policy not in pols):
                self.detected.remove(*labels)
                self._detected_labels.discard(labels)

    def clear(self) -> None:
        """Forget every state series and every per-policy counter (this replica no longer probes)."""
        self.publish(ProbeState())
        self.pods_running.set(0)
        self.detected.clear()
        self._detected_labels.clear()

    @property
    def state(self) -> ProbeState:
        return self._state.state
