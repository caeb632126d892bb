"""Allowed/denied pod-pair counts per (source namespace, destination namespace, port), within a series budget.

The same numbers as ``ReachabilityIndex.path_counts``, computed so that the cost follows what is exported rather
than classes² x ports:

* traffic from a class that no policy isolates for egress to a class that no policy isolates for ingress is
  allowed without asking the engine (NetworkPolicy: an unisolated direction allows everything), so those pairs
  are counted in bulk per namespace pair;
* only pairs with an isolated side are judged, with the index's cached class-pair verdicts;
* namespace pairs are visited in sorted order and the walk stops at the series budget (``--max-path-series``),
  so a 1000-namespace cluster costs what the exported 20k series cost, not a million namespace pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import PortProtocol

__all__ = ["PathKey", "count_paths"]

PathKey = tuple[str, str, PortProtocol]


@dataclass
class _Namespace:
    pods: int = 0
    free_src: int = 0  # pods in classes not isolated for egress
    free_dst: int = 0  # pods in classes not isolated for ingress
    free_both_self: int = 0  # pods in classes isolated in neither direction (their pod-with-itself pairs)
    isolated_src: list[tuple[str, int]] = field(default_factory=list)  # (class id, size), egress-isolated
    free_src_classes: list[tuple[str, int]] = field(default_factory=list)
    isolated_dst: list[tuple[str, int]] = field(default_factory=list)  # ingress-isolated
    all_classes: list[tuple[str, int, bool]] = field(default_factory=list)  # (class id, size, ingress-isolated)


def count_paths(index: ReachabilityIndex, ports: Sequence[PortProtocol], max_keys: int | None = None) -> tuple[
        dict[PathKey, tuple[int, int]], int]:
    """Returns ({(src ns, dst ns, port): (allowed, denied)} for at most *max_keys* keys, keys needed in total)."""
    namespaces: dict[str, _Namespace] = {}
    for cls in index.classes():
        ingress, egress = index.isolation(cls.representative)
        size = len(cls.members)
        ns = namespaces.setdefault(cls.namespace, _Namespace())
        ns.pods += size
        ns.all_classes.append((cls.id, size, ingress))
        if egress:
            ns.isolated_src.append((cls.id, size))
        else:
            ns.free_src += size
            ns.free_src_classes.append((cls.id, size))
        if ingress:
            ns.isolated_dst.append((cls.id, size))
        else:
            ns.free_dst += size
        if not ingress and not egress:
            ns.free_both_self += size
    names = sorted(namespaces)
    single = sum(1 for n in names if namespaces[n].pods == 1)  # such a namespace has no pair with itself
    needed = (len(names) * len(names) - single) * len(ports)
    budget = needed if max_keys is None else min(max_keys, needed)
    out: dict[PathKey, tuple[int, int]] = {}
    if not budget:
        return out, needed
    for src_name in names:
        src = namespaces[src_name]
        for dst_name in names:
            dst = namespaces[dst_name]
            same = src_name == dst_name
            total = src.pods * dst.pods - (src.pods if same else 0)
            if not total:
                continue
            bulk = src.free_src * dst.free_dst - (src.free_both_self if same else 0)
            for port in ports:
                allowed = bulk
                # Egress-isolated sources, to every destination class.
                for s_id, s_size in src.isolated_src:
                    for d_id, d_size, _ in dst.all_classes:
                        pairs = s_size * d_size - (s_size if s_id == d_id else 0)
                        if pairs and index.class_allowed(s_id, d_id, port):
                            allowed += pairs
                # Egress-free sources, to ingress-isolated destinations (the rest is in the bulk).
                for s_id, s_size in src.free_src_classes:
                    for d_id, d_size in dst.isolated_dst:
                        pairs = s_size * d_size - (s_size if s_id == d_id else 0)
                        if pairs and index.class_allowed(s_id, d_id, port):
                            allowed += pairs
                out[(src_name, dst_name, port)] = (allowed, total - allowed)
                if len(out) >= budget:
                    return out, needed
    return out, needed
