"""What a change to the manifests does to reachability: the paths it opens and closes, and the endpoints it adds
and removes.

Two reachability indexes (before and after the change) are judged on the same ports, pair by pair over the
endpoints they share; an endpoint found on one side only is reported as added or removed, never as paths opened or
closed. Each changed path carries the decision on both sides (`Decision`): the rules that admit it, or the
policies that isolate a side and admit nothing.

Endpoints that both indexes put in the same equivalence classes are judged alike on both sides, so pairs are
compared once per (class before, class after) pair and only the pairs whose verdict changed are expanded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .engine import DirectionVerdict, RuleRef, Verdict
from .index import ReachabilityIndex
from .model import Endpoint, PodRef, PortProtocol

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
) -> ReachDiff:
    """Compare every ordered pair of distinct endpoints listed on both sides (pods, and addresses to and from pods;
    never address to address) on every port. Changes come by source, destination and port in the order of
    ``endpoints_after`` and ``ports``; removed endpoints in the order of ``endpoints_before``."""
    in_before, in_after = set(endpoints_before), set(endpoints_after)
    common = [e for e in endpoints_after if e in in_before]
    added = tuple(e for e in endpoints_after if e not in in_before)
    removed = tuple(e for e in endpoints_before if e not in in_after)

    # Group the shared endpoints that are alike on both sides; a pod outside any class (host network) and an address
    # are groups of their own. Pairs are judged once per (group, group, port); a group judged against itself is
    # judged on two distinct members.
    groups: dict[tuple[str, str], list[Endpoint]] = {}
    for endpoint in common:
        groups.setdefault((_class_key(before, endpoint), _class_key(after, endpoint)), []).append(endpoint)
    found: dict[tuple[tuple[str, str], tuple[str, str]], list[tuple[PortProtocol, Change, Decision, Decision]]] = {}
    for gs, sources in groups.items():
        for gd, destinations in groups.items():
            src = sources[0]
            dst = destinations[1] if gs == gd and len(destinations) > 1 else destinations[0]
            if src == dst or not (isinstance(src, PodRef) or isinstance(dst, PodRef)):
                continue
            for port in ports:
                old, new = before.verdict(src, dst, port), after.verdict(src, dst, port)
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
    cls = index.class_of(endpoint) if isinstance(endpoint, PodRef) else None
    return f"class:{cls.id}" if cls is not None else f"one:{endpoint}"


def explain_change(before: ReachabilityIndex, after: ReachabilityIndex, change: PathChange) -> tuple[str, str]:
    """The engine's explanation of the path on each side, in words."""
    args = (change.source, change.destination, change.port)
    return before.verdict(*args).explain(), after.verdict(*args).explain()
