"""What the reachability page shows, as plain JSON-able data: rows and columns of endpoints, the verdict of every
pair of equivalence classes on every port (with the deciding policies and rules), and, where probed, what the
probes saw.

Verdicts are computed once per (source class, destination class, port), as ``analyze`` does, and interned: a
cluster has few distinct verdicts (the same policies decide many pairs), so the page carries a table of them and,
per port and source class, a run-length coded row of verdict numbers over the destination classes. That keeps the
page of a 1,000-workload cluster to a few hundred kilobytes when policies are namespace-scoped, as they usually are.

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
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import Endpoint, PodRef, PortProtocol

__all__ = [
    "PAGE_DATA_VERSION",
    "Observation",
    "ObservedStatus",
    "PageEndpoint",
    "build_page_data",
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


def _direction(dv: DirectionVerdict | None) -> dict[str, Any] | None:
    if dv is None:
        return None
    return {
        "iso": dv.isolated,
        "by": [f"{ns}/{name}" for ns, name in dv.isolating_policies],
        "ok": [str(r) for r in dv.admitted_by],
    }


def _verdict_record(verdict: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {
        "a": verdict.allowed,
        "p": [f"{ns}/{name}" for ns, name in verdict.deciding_policies()],
    }
    if verdict.allowed is None:
        out["r"] = verdict.reason
    else:
        out["e"] = _direction(verdict.egress)
        out["i"] = _direction(verdict.ingress)
    return out


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


def _class_key(index: ReachabilityIndex, member: Endpoint) -> str:
    if isinstance(member, PodRef):
        cls = index.class_of(member)
        if cls is not None:
            return f"class:{cls.id}"
    return f"one:{member}"


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
) -> dict[str, Any]:
    """The page's data (see the module doc). ``mode``: "offline" (``analyze``) or "live" (the operator);
    ``observations`` None when nothing was probed (then the page says predictions only)."""
    endpoints: list[PageEndpoint] = list(dict.fromkeys([*sources, *destinations]))
    position = {e.name: i for i, e in enumerate(endpoints)}
    namespaces = sorted({e.namespace for e in endpoints}, key=lambda n: (n == "", n))
    ns_index = {n: i for i, n in enumerate(namespaces)}

    # classes: one per equivalence class (or address), with up to two distinct members to judge between
    class_ids: dict[str, int] = {}
    class_members: list[list[Endpoint]] = []
    endpoint_classes: list[list[int]] = []
    for e in endpoints:
        mine: list[int] = []
        for member in e.members:
            key = _class_key(index, member)
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

    verdict_ids: dict[tuple[Any, ...], int] = {}
    verdicts: list[dict[str, Any]] = []

    def verdict_id(verdict: Verdict) -> int:
        # direction verdicts are frozen values: equal ones (most pairs) intern without building a record
        key = (verdict.allowed, verdict.reason, verdict.egress, verdict.ingress)
        found = verdict_ids.get(key)
        if found is None:
            found = verdict_ids[key] = len(verdicts)
            verdicts.append(_verdict_record(verdict))
        return found

    def judge(cs: int, cd: int, port: PortProtocol) -> Verdict:
        src = class_members[cs][0]
        # within one class, two distinct members (a class of one is only ever paired with itself: unused)
        dst = class_members[cd][-1] if cs == cd else class_members[cd][0]
        if src != dst and class_ids_of[cs] is not None and class_ids_of[cd] is not None:
            return index.class_verdict(class_ids_of[cs], class_ids_of[cd], port)  # type: ignore[arg-type]
        return index.verdict(src, dst, port)

    class_ids_of = [k.removeprefix("class:") if k.startswith("class:") else None for k in class_ids]
    matrix: list[dict[str, str]] = []
    for port in ports:
        rows: dict[str, str] = {}
        for cs in row_classes:
            row = [-1] * n_classes
            for cd in col_classes:
                row[cd] = verdict_id(judge(cs, cd, port))
            rows[str(cs)] = _rle(row)
        matrix.append(rows)

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
        "verdicts": verdicts,
        "matrix": matrix,
        "observations": observed,
    }
