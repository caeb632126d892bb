"""The operator's reachability page: the page data (`page_data`) of the live index and the prober's latest results.

Pure, on copies: `ProbeSnapshot.of` copies what the prober holds (on the event loop, a few dict copies), and
`live_page_data` works on an `IndexView` and that snapshot in a worker thread. It judges one pod per workload and
equivalence class (a private index of those pods and every policy), so its cost grows with workloads, not pods.

Pods are folded into workloads by their controller reference (`workloads.running_workload`). A probe judges a pair
of *probe groups* (pods no policy can tell apart) on one port from one node to another; its result is shown on
every pair of workloads with pods in those groups, on that port. The prober probes one port of each set of ports
the policies treat alike: the other ports of the set show the prediction only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netpol_auditor.engine import Verdict
from netpol_auditor.exporters.page_data import Observation, ObservedStatus, PageEndpoint, build_page_data
from netpol_auditor.foreign import ForeignPaths
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.index_view import IndexView
from netpol_auditor.model import Namespace, Pod, PodRef, PortProtocol
from netpol_auditor.prober.compare import Outcome
from netpol_auditor.prober.coverage import PathKey, ProbeGroup
from netpol_auditor.prober.script import ProbeResult
from netpol_auditor.vendor_policy import VendorPolicy
from netpol_auditor.workloads import running_workload

__all__ = ["ProbeSnapshot", "live_page_data"]


@dataclass(frozen=True)
class ProbeSnapshot:
    """The prober's latest result per path (`prober.loop.ProbeLoop.observations` and ``inconclusive``) and its
    probe groups, copied."""

    observations: Mapping[PathKey, tuple[Verdict, ProbeResult | None, Outcome]]
    inconclusive: Mapping[PathKey, str]
    groups: Mapping[str, ProbeGroup]

    @classmethod
    def of(cls, probe_loop: Any) -> ProbeSnapshot:
        """Copy from a running `ProbeLoop` (on its event loop)."""
        return cls(dict(probe_loop.observations), dict(probe_loop.inconclusive),
                   dict(probe_loop.planner.paths_plan.groups))


def _observation(key: PathKey, probes: ProbeSnapshot) -> Observation | None:
    where = f"(node {key.src_node} to node {key.dst_node})"
    reason = probes.inconclusive.get(key)
    if reason is not None:
        return Observation(key.src, key.dst, key.port, ObservedStatus.INCONCLUSIVE, f"{reason} {where}")
    found = probes.observations.get(key)
    if found is None:
        return None
    verdict, result, outcome = found
    seen = "no result" if result is None else result.value.replace("_", " ")
    predicted = "allowed" if verdict.allowed else "denied"
    if outcome is Outcome.MATCH:
        return Observation(key.src, key.dst, key.port, ObservedStatus.CONFIRMED, f"probe: {seen} {where}")
    if outcome is Outcome.LATE:
        return Observation(key.src, key.dst, key.port, ObservedStatus.CONFIRMED,
                           f"probe: {seen}, but only after the retry window: the CNI programs rules late {where}")
    if outcome is Outcome.MISMATCH:
        return Observation(key.src, key.dst, key.port, ObservedStatus.MISMATCH,
                           f"predicted {predicted}, probe: {seen} {where}")
    if outcome is Outcome.RETRY:
        return Observation(key.src, key.dst, key.port, ObservedStatus.INCONCLUSIVE,
                           f"predicted {predicted}, probe: {seen}; re-probing before calling it a mismatch {where}")
    return Observation(key.src, key.dst, key.port, ObservedStatus.INCONCLUSIVE, f"{outcome.value} {where}")


def live_page_data(
    view: IndexView,
    ports: Sequence[PortProtocol],
    probes: ProbeSnapshot | None,
    *,
    max_workloads: int,
    generated: str,
    vendor_policies: Sequence[VendorPolicy] = (),
) -> dict[str, Any]:
    """The page of the cluster as ``view`` has it: one row and column per workload (at most ``max_workloads``,
    whole namespaces in name order), and, when ``probes`` is given, the prober's results. The paths of the pods
    ``vendor_policies`` select are not known (``foreign_policy``), as the prober leaves them."""
    pods = {p.ref: p for p in view.pods()}
    representatives: dict[PodRef, dict[str, Pod]] = {}  # workload endpoint -> class id -> one of its pods
    for record in view.class_records:
        for ref in record.members:
            pod = pods.get(ref)
            if pod is not None:
                representatives.setdefault(running_workload(pod), {}).setdefault(record.id, pod)
    names = sorted(representatives)
    notes = []
    if len(names) > max_workloads:
        kept = names[:max_workloads]
        last_ns = kept[-1].namespace
        if any(n.namespace != last_ns for n in kept):  # whole namespaces only, when there is more than one
            kept = [n for n in kept if n.namespace != last_ns]
        notes.append(f"{len(kept)} of {len(names)} workloads shown (namespaces {kept[0].namespace} to "
                     f"{kept[-1].namespace}): the page is bounded by --reachability-page-max-workloads")
        names = kept
    unjudged = sum(1 for p in pods.values() if p.host_network)
    if unjudged:
        notes.append(f"{unjudged} hostNetwork pods are left out: their traffic is node traffic, which "
                     "NetworkPolicy does not govern")
    shown = set(names)
    groups_of: dict[PodRef, list[str]] = {}
    if probes is not None:
        for gid, group in sorted(probes.groups.items()):
            for members in group.members_by_node.values():
                for ref in members:
                    pod = pods.get(ref)
                    workload = running_workload(pod) if pod is not None else None
                    if workload in shown:
                        found = groups_of.setdefault(workload, [])
                        if gid not in found:
                            found.append(gid)
    endpoints = [
        PageEndpoint(str(name), name.namespace, tuple(p.ref for p in representatives[name].values()),
                     tuple(groups_of.get(name, ())))
        for name in names
    ]
    # the cluster policies too: the cells must predict as the prober does (through the tiers)
    private = ReachabilityIndex.from_objects(
        [*view.namespaces(), *view.policies(), *view.cluster_policies(),
         *(p for name in names for p in representatives[name].values())])
    observations = None
    if probes is not None:
        keys = sorted(set(probes.observations) | set(probes.inconclusive))
        observations = [o for o in (_observation(k, probes) for k in keys) if o is not None]
    foreign = None
    if vendor_policies:
        pods_shown = [p for name in names for p in representatives[name].values()]
        foreign = ForeignPaths.build(vendor_policies, pods_shown,
                                     lambda ns: private.namespace_labels(ns) or Namespace(ns).labels)
    return build_page_data(private, endpoints, endpoints, ports, mode="live", generated=generated,
                           observations=observations, notes=notes, foreign=foreign)
