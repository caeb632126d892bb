"""A frozen, read-only copy of what the aggregate metrics and the Event facts read of the index.

`ReachabilityIndex.view` takes it on the event loop (copies of references: a few milliseconds at 50k pods); the
aggregates (path counts, isolation, per-policy pods) and the facts behind Events are then computed from it in a
worker thread while the index goes on taking watch events. At 50k pods and 250 namespaces those computations take
over a second of CPU: on the loop they held every watch handler, /metrics and /healthz that long.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .cluster_policy import ClusterPolicy
from .engine import CompiledPolicy, PolicyKey
from .model import Labels, Namespace, NetworkPolicy, Pod, PodRef, PortProtocol

if TYPE_CHECKING:
    from .paths import PathCounts
    from .tiers import CompiledClusterPolicy

__all__ = ["ClassRecord", "IndexView"]


@dataclass(frozen=True)
class ClassRecord:
    """One equivalence class as it was when the view was taken (`paths.ClassLike`)."""

    id: str
    namespace: str
    labels: Labels
    named_ports: Labels
    ips: tuple[str, ...]
    members: Collection[PodRef]
    sel_in: tuple[CompiledPolicy, ...]
    sel_eg: tuple[CompiledPolicy, ...]
    selected_by: tuple[CompiledPolicy, ...]
    adm_in: tuple[CompiledClusterPolicy, ...] = ()
    adm_eg: tuple[CompiledClusterPolicy, ...] = ()
    base_in: tuple[CompiledClusterPolicy, ...] = ()
    base_eg: tuple[CompiledClusterPolicy, ...] = ()


@dataclass(frozen=True)
class IndexView:
    revision: int
    class_records: tuple[ClassRecord, ...]
    namespace_objects: tuple[Namespace, ...]  # known ones, plus the implicit namespaces of pods, by name
    policy_objects: Mapping[PolicyKey, NetworkPolicy]
    pod_objects: tuple[Pod, ...]
    cluster_policy_objects: tuple[ClusterPolicy, ...] = ()  # by (kind, name)

    def cluster_policies(self) -> list[ClusterPolicy]:
        return list(self.cluster_policy_objects)

    def namespaces(self) -> list[Namespace]:
        return list(self.namespace_objects)

    def policies(self) -> list[NetworkPolicy]:
        return [self.policy_objects[k] for k in sorted(self.policy_objects)]

    def pods(self) -> Sequence[Pod]:
        return self.pod_objects

    def class_count(self) -> int:
        return len(self.class_records)

    def path_counts(self, ports: Sequence[PortProtocol],
                    limit: int | None = None) -> dict[tuple[str, str, PortProtocol], PathCounts]:
        """As `ReachabilityIndex.path_counts`, on the copy."""
        from .paths import count_paths  # only the operator's metrics count paths

        labels = {ns.name: ns.labels for ns in self.namespace_objects}
        return count_paths(self.class_records, lambda name: labels.get(name) or Namespace(name).labels, ports,
                           limit)

    def isolation_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(namespace, "ingress" | "egress") -> (isolated, unisolated) endpoint pods."""
        out: dict[tuple[str, str], list[int]] = {}
        for c in self.class_records:
            n = len(c.members)
            for direction, isolated in (("ingress", c.sel_in), ("egress", c.sel_eg)):
                slot = out.setdefault((c.namespace, direction), [0, 0])
                slot[0 if isolated else 1] += n
        return {k: (v[0], v[1]) for k, v in out.items()}

    def policy_selected_pods(self) -> dict[PolicyKey, int]:
        """(namespace, policy) -> endpoint pods its podSelector selects (every policy listed, 0 included)."""
        counts: Counter[PolicyKey] = Counter(dict.fromkeys(self.policy_objects, 0))
        for c in self.class_records:
            for cp in c.selected_by:
                counts[cp.key] += len(c.members)
        return dict(sorted(counts.items()))
