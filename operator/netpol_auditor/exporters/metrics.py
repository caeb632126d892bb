"""Index metrics: what the policies allow, as Prometheus series (the README's "Index" catalogue, exactly).

Everything lives in a caller-supplied CollectorRegistry (never the global default), so several operators can run in
one process (tests) and the prober can add its own collectors to the same registry.

Cheap series (object counts, event counters, apply latency) are updated on every event. The aggregates --
``netpol_auditor_paths`` (about namespaces^2 x ports x 2 series), pods by isolation and pods per policy -- are
computed by `compute_aggregates` from the index's class-pair aggregates, debounced by the caller, and published as
one immutable snapshot that the collector serves (a scrape never sees half an update).
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter as TallyCounter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from netpol_auditor import __version__
from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.index_view import IndexView
from netpol_auditor.model import ObjectKind, PortProtocol
from netpol_auditor.vendor_policy import VENDOR_KINDS, VendorKind

__all__ = ["Aggregates", "IndexMetrics", "choose_ports", "compute_aggregates"]

logger = logging.getLogger(__name__)

#: The kinds of indexed objects, each with its ``kind`` label: the lower-case kind (``adminnetworkpolicy``, ...).
IndexedKind = ObjectKind | ClusterPolicyKind
_INDEXED_KINDS: tuple[IndexedKind, ...] = (*ObjectKind, *ClusterPolicyKind)


def kind_label(kind: IndexedKind) -> str:
    return kind.value.lower()

_APPLY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class Aggregates:
    """One consistent snapshot of the expensive series, computed from one index revision."""

    revision: int = -1
    ports: tuple[PortProtocol, ...] = ()
    # (source namespace, destination namespace, port) -> (allowed, denied)
    paths: dict[tuple[str, str, PortProtocol], tuple[int, int]] = field(default_factory=dict)
    path_series_needed: int = 0
    capped: bool = False
    max_path_series: int = 0
    # (namespace, direction) -> (isolated, unisolated)
    isolation: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # (namespace, policy) -> selected pods
    policy_pods: dict[tuple[str, str], int] = field(default_factory=dict)
    classes: int = 0
    seconds: float = 0.0


def choose_ports(view: IndexView, configured: Sequence[PortProtocol], max_ports: int) -> tuple[
        tuple[PortProtocol, ...], int]:
    """The ports the path metrics cover: *configured*, else the ports pods declare, most declared first, capped.

    Returns (ports, how many distinct ports pods declare) so the caller can say when the cap cut some off.
    """
    if configured:
        return tuple(sorted(configured)), len(configured)
    tally: TallyCounter[PortProtocol] = TallyCounter()
    for pod in view.pods():
        tally.update(pod.declared_ports())
    ranked = sorted(tally, key=lambda p: (-tally[p], p))
    return tuple(sorted(ranked[:max_ports])), len(ranked)


def compute_aggregates(view: IndexView, ports: Sequence[PortProtocol], max_path_series: int) -> Aggregates:
    """Compute the snapshot behind the path, isolation and per-policy series from a view of the index (pure: run
    it in a worker thread).

    Path counts come from the index's class-pair aggregate (`netpol_auditor.paths`: per destination class, the
    allowed source pods as one bit set, popcounted per source namespace); beyond *max_path_series* the series are
    truncated in (source namespace, destination namespace, port) order.
    """
    started = time.perf_counter()
    counts = view.path_counts(ports) if ports else {}
    needed = 2 * len(counts)
    capped = needed > max_path_series
    keys = sorted(counts)
    if capped:
        keys = keys[: max_path_series // 2]
    paths = {k: (counts[k].allowed, counts[k].denied) for k in keys}
    return Aggregates(
        revision=view.revision,
        ports=tuple(ports),
        paths=paths,
        path_series_needed=needed,
        capped=capped,
        max_path_series=max_path_series,
        isolation=view.isolation_counts(),
        policy_pods=view.policy_selected_pods(),
        classes=view.class_count(),
        seconds=time.perf_counter() - started,
    )


class _AggregatesCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: Aggregates | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families(Aggregates()))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        snapshot = self.snapshot
        if snapshot is None:
            return []
        return list(self._families(snapshot))

    @staticmethod
    def _families(snapshot: Aggregates) -> Iterator[GaugeMetricFamily]:
        paths = GaugeMetricFamily(
            "netpol_auditor_paths",
            "Ordered pod pairs whose traffic the policies allow / deny, for the configured port set.",
            labels=["source_namespace", "destination_namespace", "port", "protocol", "verdict"])
        for (src, dst, port), (allowed, denied) in snapshot.paths.items():
            base = [src, dst, str(port.port), port.protocol.value]
            paths.add_metric([*base, "allowed"], allowed)
            paths.add_metric([*base, "denied"], denied)
        yield paths
        yield GaugeMetricFamily(
            "netpol_auditor_path_series_capped",
            "1 when the path metrics were truncated at --max-path-series.",
            value=1 if snapshot.capped else 0)
        pods = GaugeMetricFamily(
            "netpol_auditor_pods", "Pods by isolation state.", labels=["namespace", "direction", "isolation"])
        for (namespace, direction), (isolated, unisolated) in sorted(snapshot.isolation.items()):
            pods.add_metric([namespace, direction, "isolated"], isolated)
            pods.add_metric([namespace, direction, "unisolated"], unisolated)
        yield pods
        policy = GaugeMetricFamily(
            "netpol_auditor_policy_selected_pods", "Pods a NetworkPolicy selects.", labels=["namespace", "policy"])
        for (namespace, name), count in sorted(snapshot.policy_pods.items()):
            policy.add_metric([namespace, name], count)
        yield policy


class IndexMetrics:
    """The index series, registered in *registry*."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # No "<name>_created" companion series: they are not in the catalogue and dashboards never use them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry
        self.build_info = Gauge("netpol_auditor_build_info", "The running build.",
                                ["version", "python_version"], registry=registry)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.objects = Gauge("netpol_auditor_index_objects", "Objects in the reachability index.", ["kind"],
                             registry=registry)
        for kind in _INDEXED_KINDS:
            self.objects.labels(kind_label(kind)).set(0)
        self.classes = Gauge("netpol_auditor_index_equivalence_classes",
                             "Pod equivalence classes (pods the policies cannot tell apart).", registry=registry)
        self.events = Counter("netpol_auditor_index_events", "Watch events applied to the index.",
                              ["kind", "type"], registry=registry)
        self.apply_seconds = Histogram("netpol_auditor_index_event_apply_duration_seconds",
                                       "Time to apply one event to the index.", ["kind"],
                                       buckets=_APPLY_BUCKETS, registry=registry)
        self.last_event = Gauge("netpol_auditor_index_last_event_timestamp_seconds",
                                "When the index last changed.", registry=registry)
        self.skipped = Gauge("netpol_auditor_index_skipped_objects",
                             "Watched objects the index rejected as malformed (logged with object and field); they "
                             "are missing from every verdict.", ["kind"], registry=registry)
        for kind in _INDEXED_KINDS:
            self.skipped.labels(kind_label(kind)).set(0)
        # Cilium, Calico and Antrea policies, per kind (a fixed set of 8 label pairs): never evaluated, the paths of
        # the pods they select are out of model.
        self.foreign_policies = Gauge("netpol_auditor_foreign_policies",
                                      "CNI-specific policies (Cilium, Calico, Antrea) the cluster holds; not "
                                      "evaluated.", ["group", "kind"], registry=registry)
        self.foreign_selected = Gauge("netpol_auditor_foreign_policy_selected_pods",
                                      "Pods a CNI-specific policy of this kind selects: their paths are out of "
                                      "model, never judged by the prober.", ["group", "kind"], registry=registry)
        for vendor in VENDOR_KINDS:
            self.foreign_policies.labels(vendor.group, vendor.kind).set(0)
            self.foreign_selected.labels(vendor.group, vendor.kind).set(0)
        self._aggregates = _AggregatesCollector()
        registry.register(self._aggregates)
        self._capped_logged: bool | None = None
        self._ports_capped_logged: int | None = None

    @property
    def aggregates(self) -> Aggregates | None:
        return self._aggregates.snapshot

    def observe_apply(self, kind: IndexedKind, change: str, seconds: float) -> None:
        """Record one change applied to the index."""
        self.events.labels(kind_label(kind), change).inc()
        self.apply_seconds.labels(kind_label(kind)).observe(seconds)
        self.last_event.set(time.time())

    def set_object_counts(self, counts: Mapping[IndexedKind, int],
                          skipped: Mapping[IndexedKind, int] | None = None) -> None:
        """Update the object gauges (cheap: called after every change)."""
        for kind in _INDEXED_KINDS:
            self.objects.labels(kind_label(kind)).set(counts.get(kind, 0))
            self.skipped.labels(kind_label(kind)).set((skipped or {}).get(kind, 0))

    def set_foreign_policies(self, objects: Mapping[VendorKind, int],
                             selected_pods: Mapping[VendorKind, int] | None = None) -> None:
        """Update the vendor policy gauges: objects per kind, and (when given) pods they select per kind."""
        for vendor in VENDOR_KINDS:
            self.foreign_policies.labels(vendor.group, vendor.kind).set(objects.get(vendor, 0))
            if selected_pods is not None:
                self.foreign_selected.labels(vendor.group, vendor.kind).set(selected_pods.get(vendor, 0))

    def publish(self, snapshot: Aggregates | None, declared_ports: int = 0, max_ports: int = 0) -> None:
        """Serve *snapshot* from now on (None: serve no aggregate series, e.g. on a standby replica)."""
        self._aggregates.snapshot = snapshot
        if snapshot is None:
            self.classes.set(0)
            return
        self.classes.set(snapshot.classes)
        if snapshot.capped != self._capped_logged:
            if snapshot.capped:
                logger.warning(
                    "netpol_auditor_paths capped: %d series needed (source namespaces x destination namespaces x "
                    "%d ports x 2 verdicts), --max-path-series allows %d; %d series dropped. Raise "
                    "--max-path-series or narrow --ports / --namespace.",
                    snapshot.path_series_needed, len(snapshot.ports), snapshot.max_path_series,
                    snapshot.path_series_needed - 2 * len(snapshot.paths))
            elif self._capped_logged:
                logger.info("netpol_auditor_paths no longer capped: %d series", snapshot.path_series_needed)
            self._capped_logged = snapshot.capped
        if declared_ports > max_ports > 0 and declared_ports != self._ports_capped_logged:
            logger.warning("pods declare %d distinct ports; path metrics cover the %d most declared (%s). Set "
                           "--ports to choose, or raise --max-ports.", declared_ports, len(snapshot.ports),
                           ",".join(str(p) for p in snapshot.ports))
            self._ports_capped_logged = declared_ports
