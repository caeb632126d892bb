"""What a change to the manifests does to reachability: the paths it opens and closes, and the endpoints it adds
and removes.

Two reachability indexes (before and after the change) are judged on the same ports, pair by pair over the
endpoints they share; an endpoint found on one side only is reported as added or removed, never as paths opened or
closed. Each changed path carries the decision on both sides (`Decision`): the rules that admit it, or the
policies that isolate a side and admit nothing.

Endpoints that both indexes put in the same equivalence classes are judged alike on both sides, so pairs are
compared once per (class before, class after) pair and only the pairs whose verdict changed are expanded. And only
the pairs the change can have touched are compared: the "before" objects are indexed again and changed into the
"after" ones, and that index's change log (`ReachabilityIndex.changed_classes`) names the classes whose verdicts as
source or as destination may have changed; a pair of endpoints that stay in their classes, neither of them named,
is judged alike on both sides. A small change to a large input costs a rebuild, not every pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .cluster_policy import ClusterPolicy, ClusterPolicyKind
from .engine import DirectionVerdict, RuleRef, Verdict
from .foreign import ForeignPaths
from .index import ReachabilityIndex
from .model import Endpoint, Namespace, NetworkPolicy, ObjectKind, Pod, PodRef, PortProtocol

__all__ = ["Change", "Decision", "PathChange", "ReachDiff", "diff_reachability", "explain_change"]


class Change(StrEnum):
    OPENED = "opened"  # denied before, allowed after
    CLOSED = "closed"  # allowed before, denied after
    NOT_JUDGED = "notJudged"  # judged on one side only (an endpoint moved to or from the host network)


@dataclass(frozen=True)
class Decision:
    """A verdict reduced to what decides it: the admitting rules when allowed, the isolating policies of each
    denying direction when denied, the reason when not judged."""

    allowed: bool | None
    policies: tuple[str, ...] = ()
    rules: tuple[RuleRef, ...] = ()
    denied: tuple[DirectionVerdict, ...] = ()
    reason: str = ""

    @classmethod
    def of(cls, verdict: Verdict) -> Decision:
        policies = tuple(f"{ns}/{name}" for ns, name in verdict.deciding_policies())
        if verdict.allowed is None:
            return cls(None, reason=verdict.reason)
        sides = [dv for dv in (verdict.egress, verdict.ingress) if dv is not None]
        if verdict.allowed:
            return cls(True, policies, tuple(r for dv in sides for r in dv.admitted_by))
        return cls(False, policies, denied=tuple(dv for dv in sides if not dv.allowed))

    def __str__(self) -> str:
        if self.allowed is None:
            return f"not judged ({self.reason})"
        if self.allowed:
            if not self.rules:
                return "allowed (no policy isolates either side)"
            return "allowed by " + "; ".join(map(str, self.rules))
        parts = []
        for dv in self.denied:
            isolating = ", ".join(f"{ns}/{name}" for ns, name in dv.isolating_policies)
            parts.append(f"{dv.direction.value.lower()} isolated by {isolating}, no rule admits")
        return "denied: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "decidingPolicies": list(self.policies),
            "admittedBy": [r.to_dict() for r in self.rules],
            "reason": self.reason or None,
            "decision": str(self),
        }


@dataclass(frozen=True)
class PathChange:
    source: Endpoint
    destination: Endpoint
    port: PortProtocol
    change: Change
    before: Decision
    after: Decision

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": str(self.source),
            "to": str(self.destination),
            "port": self.port.port,
            "protocol": self.port.protocol.value,
            "change": self.change.value,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
        }


@dataclass(frozen=True)
class ReachDiff:
    """The paths that changed, by source, destination and port in endpoint order; endpoints on one side only;
    ``compared``: how many endpoints both sides have."""

    ports: tuple[PortProtocol, ...]
    changes: tuple[PathChange, ...]
    added: tuple[Endpoint, ...]
    removed: tuple[Endpoint, ...]
    compared: int

    @property
    def empty(self) -> bool:
        return not (self.changes or self.added or self.removed)

    def count(self, change: Change) -> int:
        return sum(1 for c in self.changes if c.change is change)

    def summary(self) -> dict[str, int]:
        return {
            **{change.value: self.count(change) for change in Change},
            "addedEndpoints": len(self.added),
            "removedEndpoints": len(self.removed),
        }


def _change(before: bool | None, after: bool | None) -> Change | None:
    if before == after:
        return None
    if before is None or after is None:
        return Change.NOT_JUDGED
    return Change.OPENED if after else Change.CLOSED


def diff_reachability(
    before: ReachabilityIndex,
    after: ReachabilityIndex,
    endpoints_before: Sequence[Endpoint],
    endpoints_after: Sequence[Endpoint],
    ports: Sequence[PortProtocol],
    foreign_before: ForeignPaths | None = None,
    foreign_after: ForeignPaths | None = None,
) -> ReachDiff:
    """Compare every ordered pair of distinct endpoints listed on both sides (pods, and addresses to and from pods;
    never address to address) on every port. Changes come by source, destination and port in the order of
    ``endpoints_after`` and ``ports``; removed endpoints in the order of ``endpoints_before``. ``foreign_*``: the
    paths a Cilium, Calico or Antrea policy may decide on each side, out of model there (a vendor policy added or
    removed makes its paths ``notJudged`` changes)."""
    fb, fa = foreign_before or ForeignPaths(), foreign_after or ForeignPaths()
    in_before, in_after = set(endpoints_before), set(endpoints_after)
    common = [e for e in endpoints_after if e in in_before]
    added = tuple(e for e in endpoints_after if e not in in_before)
    removed = tuple(e for e in endpoints_before if e not in in_after)

    after, since = _replayed(before, after)
    srcs, dsts = after.changed_classes(since)

    # Group the shared endpoints that are alike on both sides: (class before, class after), or the endpoint itself
    # for a pod outside any class (host network) and an address. Pairs are judged once per (group, group, port); a
    # group judged against itself is judged on two distinct members.
    # The vendor policies that select an endpoint are part of its group: their paths are out of model.
    groups: dict[tuple[str, ...], list[Endpoint]] = {}
    for endpoint in common:
        name = str(endpoint)
        vendor = (fb.egress.get(name, ""), fb.ingress.get(name, ""), fa.egress.get(name, ""), fa.ingress.get(name, ""))
        groups.setdefault((_class_key(before, endpoint), _class_key(after, endpoint), *vendor), []).append(endpoint)
    moved = {g for g in groups if g[0] != g[1] or g[2:4] != g[4:6]}
    as_source = [g for g in groups if g in moved or g[1] in srcs]
    as_destination = [g for g in groups if g in moved or g[1] in dsts]
    touched = {(gs, gd) for gs in as_source for gd in groups} | {(gs, gd) for gs in groups for gd in as_destination}
    found: dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[PortProtocol, Change, Decision, Decision]]] = {}
    for gs, gd in touched:
        sources, destinations = groups[gs], groups[gd]
        src = sources[0]
        dst = destinations[1] if gs == gd and len(destinations) > 1 else destinations[0]
        if src == dst or not (isinstance(src, PodRef) or isinstance(dst, PodRef)):
            continue
        for port in ports:
            old, new = fb.apply(before.verdict(src, dst, port)), fa.apply(after.verdict(src, dst, port))
            kind = _change(old.allowed, new.allowed)
            if kind is not None:
                found.setdefault((gs, gd), []).append((port, kind, Decision.of(old), Decision.of(new)))

    position = {endpoint: i for i, endpoint in enumerate(common)}
    port_position = {port: i for i, port in enumerate(ports)}
    changes: list[PathChange] = []
    for (gs, gd), group_changes in found.items():
        for src in groups[gs]:
            for dst in groups[gd]:
                if dst != src:
                    changes.extend(PathChange(src, dst, *change) for change in group_changes)
    changes.sort(key=lambda c: (position[c.source], position[c.destination], port_position[c.port]))
    return ReachDiff(tuple(ports), tuple(changes), added, removed, len(common))


def _class_key(index: ReachabilityIndex, endpoint: Endpoint) -> str:
    """The endpoint's class id, or ``one:`` and the endpoint (class ids are hex digests: never alike)."""
    cls = index.class_of(endpoint) if isinstance(endpoint, PodRef) else None
    return cls.id if cls is not None else f"one:{endpoint}"


def _objects(index: ReachabilityIndex) -> list[Namespace | NetworkPolicy | ClusterPolicy | Pod]:
    namespaces = [Namespace(name, labels) for name, labels in index.namespace_label_map().items()]
    return [*namespaces, *index.policies(), *index.cluster_policies(), *index.pods()]


def _replayed(before: ReachabilityIndex, after: ReachabilityIndex) -> tuple[ReachabilityIndex, int]:
    """An index of the objects of ``after``, reached from those of ``before`` by deleting and upserting them, and
    its revision before the first of those: what its change log has since is what the change touched. Its
    verdicts are those of ``after`` (the incremental index equals a rebuild)."""
    replay = ReachabilityIndex.from_objects(_objects(before))
    since = replay.revision
    head = _objects(after)
    kept = {_key(o) for o in head}
    for obj in _objects(before):
        if _key(obj) not in kept:
            replay.delete(*_key(obj))
    for obj in head:
        replay.upsert(obj)
    return replay, since


def _key(
    obj: Namespace | NetworkPolicy | ClusterPolicy | Pod,
) -> tuple[ObjectKind | ClusterPolicyKind, str | None, str]:
    if isinstance(obj, Namespace):
        return (ObjectKind.NAMESPACE, None, obj.name)
    if isinstance(obj, ClusterPolicy):
        return (obj.kind, None, obj.name)
    if isinstance(obj, Pod):
        return (ObjectKind.POD, obj.namespace, obj.name)
    return (ObjectKind.NETWORK_POLICY, obj.namespace, obj.name)


def explain_change(
    before: ReachabilityIndex,
    after: ReachabilityIndex,
    change: PathChange,
    foreign_before: ForeignPaths | None = None,
    foreign_after: ForeignPaths | None = None,
) -> tuple[str, str]:
    """The engine's explanation of the path on each side, in words."""
    args = (change.source, change.destination, change.port)
    fb, fa = foreign_before or ForeignPaths(), foreign_after or ForeignPaths()
    return fb.apply(before.verdict(*args)).explain(), fa.apply(after.verdict(*args)).explain()
