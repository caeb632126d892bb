"""What the reachability page shows, as plain JSON-able data: rows and columns of endpoints, the verdict of every
pair of classes on every port (with the deciding policies and rules), and, where probed, what the probes saw.

A class is pods that every policy sees alike (`_Sameness`): verdicts are computed once per (source class,
destination class, port). A verdict is its two halves, the source's egress and the destination's ingress decision
(`engine.DirectionVerdict`), and those are few and repetitive: a source's egress rarely depends on the destination,
a destination's ingress on few sources. So the page carries a table of direction decisions and, per port, the egress
decision of each source class as a run-length coded row over destination classes, and the ingress decision of each
destination class as one over source classes; the page's script puts a cell's verdict together from its two halves
as `engine.Verdict` does. A 1,000-workload cluster with a policy per workload makes a page of a few hundred
kilobytes per port.

An endpoint may stand for pods of several classes (a workload whose pods differ in a label a policy looks at, such
as two ReplicaSets of a Deployment mid-rollout); the page then shows every variant of the cell's verdict, never
one of them as if it were all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from netpol_auditor.engine import DirectionVerdict, Verdict
from netpol_auditor.foreign import ForeignPaths
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import Endpoint, PodRef, PortProtocol

__all__ = [
    "PAGE_DATA_VERSION",
    "Observation",
    "ObservedStatus",
    "PageEndpoint",
    "build_page_data",
    "direction_record",
    "named_endpoints",
]

PAGE_DATA_VERSION = 1
#: Observation reasons are free text from the prober: bounded so that one odd message cannot bloat the page.
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class PageEndpoint:
    """A row or column: ``name`` as ``analyze`` prints it (``ns/name[Kind]``, or an IP), ``namespace`` ("" for an
    address), ``members`` the pods (or the address) it stands for, one per equivalence class, and ``probe_groups``
    the probe groups its pods belong to (live pages only)."""

    name: str
    namespace: str
    members: tuple[Endpoint, ...]
    probe_groups: tuple[str, ...] = ()


def named_endpoints(names: Iterable[str]) -> list[PageEndpoint]:
    """Endpoints as ``analyze`` names them (``ns/name[Kind]`` pods and workloads, IP addresses), each its own
    member."""
    out = []
    for name in names:
        if "/" in name:
            ref = PodRef.parse(name)
            out.append(PageEndpoint(name, ref.namespace, (ref,)))
        else:
            out.append(PageEndpoint(name, "", (name,)))
    return out


class ObservedStatus(StrEnum):
    CONFIRMED = "confirmed"
    MISMATCH = "mismatch"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Observation:
    """The latest probe of one path (probe group to probe group on one port, from one node to another)."""

    src_group: str
    dst_group: str
    port: PortProtocol
    status: ObservedStatus
    reason: str = ""


def direction_record(dv: DirectionVerdict) -> dict[str, Any]:
    """One direction's decision: its outcome (``al``), deciding tier and policies (cluster policies as
    ``Kind/name``), and what the explanation names: NetworkPolicy isolation and admitting rules, the Admin or
    Baseline rule that matched, why the outcome is not known."""
    return {
        "al": dv.outcome,
        "t": dv.tier,
        "dp": [f"{ns}/{name}" for ns, name in dv.deciding_policies()],
        "iso": dv.isolated,
        "by": [f"{ns}/{name}" for ns, name in dv.isolating_policies],
        "ok": [str(r) for r in dv.admitted_by],
        "adm": None if dv.admin is None else str(dv.admin),
        "base": None if dv.baseline is None else str(dv.baseline),
        "unk": dv.unknown,
    }


def _rle(values: Sequence[int]) -> str:
    """``[3, 3, 3, 0, -1, -1]`` -> ``"3*3,0,-1*2"``."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        parts.append(str(values[i]) if j - i == 1 else f"{values[i]}*{j - i}")
        i = j
    return ",".join(parts)


class _Sameness:
    """What any policy of the index can see of a pod: its namespace, the values of the pod label keys some selector
    looks at, its named ports, and (only when some peer is an ipBlock) its addresses. Pods alike in all of these are
    judged alike on every port, with the same deciding policies and rules (`engine.PeerInfo` is all a rule sees of
    the other side; a policy selects by pod labels), so one pair of them stands for every pair: the index's
    equivalence classes tell apart every label, which a cluster whose policies select on a few keys does not need.
    """

    def __init__(self, index: ReachabilityIndex) -> None:
        self._index = index
        keys: set[str] = set()
        # cluster policies (Admin, Baseline) select by namespace and pod selectors and match networks: with any of
        # them, pods are told apart by every label and address, as the index's classes do
        self._all_labels = self._ip_blocks = bool(index.cluster_policies())
        for policy in index.policies():
            keys |= policy.pod_selector.keys()
            for direction in policy.policy_types:
                for rule in policy.rules(direction):
                    for peer in rule.peers:
                        if peer.pod_selector is not None:
                            keys |= peer.pod_selector.keys()
                        self._ip_blocks = self._ip_blocks or peer.ip_block is not None
        self._keys = frozenset(keys)

    def key(self, member: Endpoint) -> tuple[Any, ...]:
        if isinstance(member, PodRef) and self._index.class_of(member) is not None:
            pod = self._index.get_pod(member)
            assert pod is not None
            visible = tuple(sorted((k, v) for k, v in pod.labels.items() if self._all_labels or k in self._keys))
            return (pod.namespace, visible, tuple(sorted(pod.named_ports().items())),
                    pod.pod_ips if self._ip_blocks else ())
        return ("one", str(member))


def build_page_data(
    index: ReachabilityIndex,
    sources: Sequence[PageEndpoint],
    destinations: Sequence[PageEndpoint],
    ports: Sequence[PortProtocol],
    *,
    mode: str,
    generated: str,
    observations: Iterable[Observation] | None = None,
    notes: Sequence[str] = (),
    foreign: ForeignPaths | None = None,
) -> dict[str, Any]:
    """The page's data (see the module doc). ``mode``: "offline" (``analyze``) or "live" (the operator);
    ``observations`` None when nothing was probed (then the page says predictions only); ``foreign``: the members
    a Cilium, Calico or Antrea policy selects, whose egress (as a source) or ingress (as a destination) is then
    not known (``foreign_policy``), whatever the NetworkPolicies say."""
    foreign = foreign or ForeignPaths()
    endpoints: list[PageEndpoint] = list(dict.fromkeys([*sources, *destinations]))
    position = {e.name: i for i, e in enumerate(endpoints)}
    namespaces = sorted({e.namespace for e in endpoints}, key=lambda n: (n == "", n))
    ns_index = {n: i for i, n in enumerate(namespaces)}

    # classes: pods alike for every policy (`_Sameness`), or one address, with up to two distinct members to judge
    # between
    sameness = _Sameness(index)
    class_ids: dict[tuple[Any, ...], int] = {}
    class_members: list[list[Endpoint]] = []
    endpoint_classes: list[list[int]] = []
    for e in endpoints:
        mine: list[int] = []
        for member in e.members:
            name = str(member)
            key = (*sameness.key(member), foreign.egress.get(name, ""), foreign.ingress.get(name, ""))
            if key not in class_ids:
                class_ids[key] = len(class_members)
                class_members.append([])
            c = class_ids[key]
            if len(class_members[c]) < 2 and member not in class_members[c]:
                class_members[c].append(member)
            if c not in mine:
                mine.append(c)
        endpoint_classes.append(mine)
    n_classes = len(class_members)
    row_classes = sorted({c for e in sources for c in endpoint_classes[position[e.name]]})
    col_classes = sorted({c for e in destinations for c in endpoint_classes[position[e.name]]})

    dir_ids: dict[DirectionVerdict, int] = {}
    directions: list[dict[str, Any]] = []
    reason_ids: dict[str, int] = {}
    reasons: list[str] = []

    def dir_id(dv: DirectionVerdict | None) -> int:
        if dv is None:
            return -1  # that side is outside the cluster
        found = dir_ids.get(dv)  # frozen values: equal ones (most pairs) intern without building a record
        if found is None:
            found = dir_ids[dv] = len(directions)
            directions.append(direction_record(dv))
        return found

    def judge(cs: int, cd: int, port: PortProtocol) -> Verdict:
        src = class_members[cs][0]
        # within one class, two distinct members (a class of one is only ever paired with itself: unused)
        dst = class_members[cd][-1] if cs == cd else class_members[cd][0]
        s_class, d_class = index_class[cs], index_class[cd]
        if src != dst and s_class is not None and d_class is not None:
            return index.class_verdict(s_class, d_class, port)
        return index.verdict(src, dst, port)

    index_class: list[str | None] = []  # the index's class of each class's first member, for the fast path
    for members in class_members:
        found = index.class_of(members[0]) if isinstance(members[0], PodRef) else None
        index_class.append(found.id if found is not None else None)
    egress: list[dict[str, str]] = []
    ingress: list[dict[str, str]] = []
    for port in ports:
        by_source = {cs: [-1] * n_classes for cs in row_classes}
        by_destination = {cd: [-1] * n_classes for cd in col_classes}
        for cs in row_classes:
            row = by_source[cs]
            for cd in col_classes:
                verdict = judge(cs, cd, port)
                vendor = bool(foreign) and bool(foreign.reason(class_members[cs][0], class_members[cd][0]))
                if vendor:
                    verdict = foreign.apply(verdict)  # a vendor policy selects one end: out of model, as analyze says
                if vendor or (verdict.egress is None and verdict.ingress is None):
                    k = reason_ids.get(verdict.reason)
                    if k is None:
                        k = reason_ids[verdict.reason] = len(reasons)
                        reasons.append(verdict.reason)
                    row[cd] = by_destination[cd][cs] = -2 - k
                else:
                    row[cd] = dir_id(verdict.egress)
                    by_destination[cd][cs] = dir_id(verdict.ingress)
        egress.append({str(c): _rle(v) for c, v in by_source.items()})
        ingress.append({str(c): _rle(v) for c, v in by_destination.items()})

    groups: dict[str, int] = {}
    for e in endpoints:
        for g in e.probe_groups:
            groups.setdefault(g, len(groups))
    port_index = {p: i for i, p in enumerate(ports)}
    observed: list[list[Any]] = []
    for o in observations or ():
        if o.src_group in groups and o.dst_group in groups and o.port in port_index:
            observed.append([groups[o.src_group], groups[o.dst_group], port_index[o.port], o.status.value,
                             o.reason[:MAX_REASON_CHARS]])

    return {
        "version": PAGE_DATA_VERSION,
        "mode": mode,
        "generated": generated,
        "probed": observations is not None,
        "notes": list(notes),
        "ports": [str(p) for p in ports],
        "namespaces": namespaces,
        "endpoints": [
            {"n": e.name, "ns": ns_index[e.namespace], "c": endpoint_classes[i],
             "g": [groups[g] for g in e.probe_groups]}
            for i, e in enumerate(endpoints)
        ],
        "rows": [position[e.name] for e in sources],
        "cols": [position[e.name] for e in destinations],
        "directions": directions,
        "unjudged": reasons,
        "egress": egress,
        "ingress": ingress,
        "observations": observed,
    }
