"""Paths out of model because a vendor policy (Cilium, Calico, Antrea) selects one of their ends.

A vendor policy selecting a pod for egress may allow or deny what the NetworkPolicies decide about that pod's
outgoing traffic, and one selecting it for ingress the same of its incoming traffic; this tool does not evaluate
them, so such paths are neither allowed nor denied here but out of model, with a ``foreign_policy`` reason naming
the policies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .engine import Verdict
from .model import Direction, Endpoint, Pod, PodRef

if TYPE_CHECKING:
    from .vendor_kinds import VendorKind
    from .vendor_policy import VendorPolicy

__all__ = ["FOREIGN_POLICY", "ForeignPaths", "ForeignSelection", "describe", "foreign_guard", "selected_pod_counts"]

FOREIGN_POLICY = "foreign_policy"


@dataclass(frozen=True)
class ForeignPaths:
    """Per endpoint (by its name, ``str(endpoint)``): the out-of-model reason of its egress and of its ingress, and
    per vendor policy the endpoints it selects."""

    egress: Mapping[str, str] = field(default_factory=dict)
    ingress: Mapping[str, str] = field(default_factory=dict)
    selected: Mapping[VendorPolicy, tuple[PodRef, ...]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        policies: Iterable[VendorPolicy],
        pods: Iterable[Pod],
        namespace_labels: Callable[[str], Mapping[str, str]],
    ) -> ForeignPaths:
        by_direction: dict[Direction, dict[str, list[VendorPolicy]]] = {d: {} for d in Direction}
        selected: dict[VendorPolicy, list[PodRef]] = {}
        pod_list = [p for p in pods if not p.host_network]
        for policy in sorted(policies, key=lambda p: (p.kind.label, p.namespace or "", p.name)):
            chosen = selected.setdefault(policy, [])
            for pod in pod_list:
                if policy.selects(pod.namespace, namespace_labels(pod.namespace), pod.labels):
                    chosen.append(pod.ref)
                    for direction in policy.directions:
                        by_direction[direction].setdefault(str(pod.ref), []).append(policy)
        return cls(
            {name: _reason(ps) for name, ps in by_direction[Direction.EGRESS].items()},
            {name: _reason(ps) for name, ps in by_direction[Direction.INGRESS].items()},
            {policy: tuple(refs) for policy, refs in selected.items()},
        )

    def __bool__(self) -> bool:
        return bool(self.egress or self.ingress)

    def reason(self, source: Endpoint | str, destination: Endpoint | str) -> str:
        """Why the path is out of model ("" if it is not): the source's egress or the destination's ingress is
        selected by a vendor policy."""
        out = self.egress.get(str(source), ""), self.ingress.get(str(destination), "")
        return "; ".join(r for r in out if r)

    def apply(self, verdict: Verdict) -> Verdict:
        """The verdict, out of model if a vendor policy selects its source for egress or its destination for
        ingress; a pair that is not judged at all (a pod and itself, host network) stays as it is."""
        if verdict.allowed is None and not verdict.out_of_model:
            return verdict
        egress_reason = self.egress.get(str(verdict.source), "")
        ingress_reason = self.ingress.get(str(verdict.destination), "")
        if not egress_reason and not ingress_reason:
            return verdict
        egress, ingress = verdict.egress, verdict.ingress
        if egress is not None and egress_reason:
            egress = replace(egress, unknown=egress_reason)
        if ingress is not None and ingress_reason:
            ingress = replace(ingress, unknown=ingress_reason)
        reason = "; ".join(r for r in (egress_reason, ingress_reason) if r)
        return replace(verdict, allowed=None, egress=egress, ingress=ingress, reason=reason)


def _directions(policy: VendorPolicy) -> str:
    return " and ".join(d.value.lower() for d in Direction if d in policy.directions)


def describe(paths: ForeignPaths, shown: str = "? in tables") -> list[str]:
    """One line per vendor policy: the endpoints it selects, and for which directions their paths are out of
    model (``shown``: how the output marks them)."""
    lines: list[str] = []
    for policy, refs in paths.selected.items():
        head = f"{policy.api_version} {policy.kind.kind} {policy.display_name}"
        if not refs:
            lines.append(f"{head} selects no endpoint of the input")
            continue
        tail = f"({FOREIGN_POLICY}, {shown})"
        lines.append(f"{head} selects {len(refs)} endpoint{'s' if len(refs) != 1 else ''} "
                     f"({', '.join(map(str, refs))}): their {_directions(policy)} paths are out of model {tail}")
    return lines


def _reason(policies: list[VendorPolicy]) -> str:
    named = ", ".join(f"{p.api_version} {p.kind.kind} {p.display_name}" for p in policies)
    return f"{FOREIGN_POLICY}: {named}"


def selected_pod_counts(
    policies: Iterable[VendorPolicy], pods: Iterable[Pod], namespace_labels: Callable[[str], Mapping[str, str]]
) -> dict[VendorKind, int]:
    """Per vendor kind, the endpoint pods (not host-networked) at least one of its policies selects."""
    by_kind: dict[VendorKind, list[VendorPolicy]] = {}
    for policy in policies:
        by_kind.setdefault(policy.kind, []).append(policy)
    counts = dict.fromkeys(by_kind, 0)
    for pod in pods:
        if pod.host_network:
            continue
        labels = namespace_labels(pod.namespace)
        for kind, of_kind in by_kind.items():
            if any(p.selects(pod.namespace, labels, pod.labels) for p in of_kind):
                counts[kind] += 1
    return counts


@dataclass(frozen=True)
class ForeignSelection:
    """Which pods the vendor policies select, per direction (the prober's question about a path's ends)."""

    policies: tuple[VendorPolicy, ...]
    pod_of: Callable[[PodRef], Pod | None]
    namespace_labels: Callable[[str], Mapping[str, str]]

    def __bool__(self) -> bool:
        return bool(self.policies)

    def selected(self, ref: PodRef, direction: Direction) -> bool:
        pod = self.pod_of(ref)
        if pod is None:
            return False
        labels = self.namespace_labels(ref.namespace)
        return any(direction in p.directions and p.selects(ref.namespace, labels, pod.labels) for p in self.policies)


def foreign_guard(
    policies: Iterable[VendorPolicy],
    pod_of: Callable[[PodRef], Pod | None],
    namespace_labels: Callable[[str], Mapping[str, str]],
) -> ForeignSelection:
    """Whether a vendor policy may decide a path: one selects its source for egress or its destination for
    ingress (`ForeignSelection.selected`)."""
    return ForeignSelection(tuple(policies), pod_of, namespace_labels)
