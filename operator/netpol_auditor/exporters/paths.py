"""Allowed/denied pod-pair counts per (source namespace, destination namespace, port), within a series budget.

The same numbers as ``ReachabilityIndex.path_counts``, computed so that the cost follows what is exported rather
than classes² x ports:

* traffic from a class that no policy isolates for egress to a class that no policy isolates for ingress is
  allowed without asking the engine (NetworkPolicy: an unisolated direction allows everything), so those pairs
  are counted in bulk per namespace pair;
* only pairs with an isolated side are judged, with the index's cached class-pair verdicts;
* namespace pairs are visited in sorted order and the walk stops at the series budget (``--max-path-series``),
  so a 1000-namespace cluster costs what the exported 20k series cost, not a million namespace pairs;
* `PathCounter` keeps the judged verdicts between recomputes and forgets only the pairs the index reports as
  changed (``changed_class_pairs``), so a recompute after one change judges only what that change touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import PortProtocol

__all__ = ["PathCounter", "PathKey", "count_paths"]

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
    return PathCounter().count(index, ports, max_keys)


class PathCounter:
    """Counts paths like `count_paths`, keeping work between calls.

    Judged class-pair verdicts stay cached until ``index.changed_class_pairs`` reports the pair (a superset of the
    pairs whose verdict may have changed), and per namespace pair counts stay cached unless a reported pair, or a
    class appearing, disappearing, resizing or changing isolation, touches one of the two namespaces. A recompute
    after one change therefore costs what that change touched.
    """

    def __init__(self) -> None:
        self._ports: tuple[PortProtocol, ...] | None = None
        self._revision = -1
        self._verdicts: dict[tuple[str, str], int] = {}  # (src class, dst class) -> bit i set: allowed on port i
        self._classes: dict[str, tuple[str, int, bool, bool]] = {}  # id -> (namespace, size, ingress, egress iso)
        self._ns_counts: dict[tuple[str, str], tuple[int, list[int]]] = {}  # -> (total, allowed per port)
        self._gone = 0  # classes gone since the verdict cache was last pruned
        self._stale = False
        self.judged = 0  # verdicts asked of the index by the last call
        self.namespace_pairs_counted = 0  # namespace pairs (re)counted by the last call

    def count(self, index: ReachabilityIndex, ports: Sequence[PortProtocol], max_keys: int | None = None) -> tuple[
            dict[PathKey, tuple[int, int]], int]:
        walk = self._walk(index, ports, max_keys)
        while True:
            try:
                next(walk)
            except StopIteration as done:
                result: tuple[dict[PathKey, tuple[int, int]], int] = done.value
                return result

    async def count_async(self, index: ReachabilityIndex, ports: Sequence[PortProtocol],
                          max_keys: int | None = None) -> tuple[dict[PathKey, tuple[int, int]], int]:
        """Like `count`, but lets the event loop run every ~20 ms (a cold count of a big cluster takes seconds).

        Changes applied to the index meanwhile are reported by ``changed_class_pairs`` to the next call, which
        recounts what they touched; a class gone meanwhile is skipped here and recounted then.
        """
        walk = self._walk(index, ports, max_keys)
        while True:
            try:
                next(walk)
            except StopIteration as done:
                result: tuple[dict[PathKey, tuple[int, int]], int] = done.value
                return result
            await asyncio.sleep(0)

    def _walk(self, index: ReachabilityIndex, ports: Sequence[PortProtocol], max_keys: int | None) -> Generator[
            None, None, tuple[dict[PathKey, tuple[int, int]], int]]:
        ports = tuple(ports)
        classes = self._class_states(index)
        dirty_ns: set[str] = set()
        dirty_pairs: set[tuple[str, str]] = set()
        if ports != self._ports or self._revision < 0:
            self._verdicts.clear()
            self._ns_counts.clear()
            self._ports = ports
        elif index.revision != self._revision:
            changed = index.changed_class_pairs(self._revision)
            if len(changed) > len(self._verdicts):
                self._verdicts.clear()
                self._ns_counts.clear()
            else:
                for pair in changed:
                    self._verdicts.pop(pair, None)
                    s, d = (classes.get(pair[0]) or self._classes.get(pair[0]),
                            classes.get(pair[1]) or self._classes.get(pair[1]))
                    if s is not None and d is not None:
                        dirty_pairs.add((s[0], d[0]))
            for cid in classes.keys() | self._classes.keys():
                if classes.get(cid) != self._classes.get(cid):
                    dirty_ns.add((classes.get(cid) or self._classes[cid])[0])
                    self._gone += cid not in classes
        self._classes = classes
        self._revision = index.revision
        self.judged = self.namespace_pairs_counted = 0
        namespaces = self._namespaces(classes)
        names = sorted(namespaces)
        single = sum(1 for n in names if namespaces[n].pods == 1)  # such a namespace has no pair with itself
        needed = (len(names) * len(names) - single) * len(ports)
        budget = needed if max_keys is None else min(max_keys, needed)
        out: dict[PathKey, tuple[int, int]] = {}
        last_yield = time.perf_counter()
        for src_name in names:
            if len(out) >= budget:
                break
            for dst_name in names:
                if len(out) >= budget:
                    break
                key = (src_name, dst_name)
                cached = self._ns_counts.get(key)
                if cached is None or src_name in dirty_ns or dst_name in dirty_ns or key in dirty_pairs:
                    cached = self._count_pair(index, namespaces[src_name], namespaces[dst_name], src_name == dst_name)
                    if self._stale:
                        self._stale = False  # a class vanished meanwhile: count this pair again next time
                    else:
                        self._ns_counts[key] = cached
                    if time.perf_counter() - last_yield > 0.02:
                        yield
                        last_yield = time.perf_counter()
                total, allowed = cached
                if not total:
                    continue
                for i, port in enumerate(ports):
                    out[(src_name, dst_name, port)] = (allowed[i], total - allowed[i])
                    if len(out) >= budget:
                        break
        if self._gone > max(64, len(classes) // 10):
            # Forget the verdicts of classes that are gone (not on every call: it costs a pass over the cache).
            self._verdicts = {k: v for k, v in self._verdicts.items() if k[0] in classes and k[1] in classes}
            self._gone = 0
        if len(self._ns_counts) > 2 * len(names) * len(names) + 1024:
            self._ns_counts = {k: v for k, v in self._ns_counts.items() if k[0] in namespaces and k[1] in namespaces}
        return out, needed

    def _count_pair(self, index: ReachabilityIndex, src: _Namespace, dst: _Namespace, same: bool) -> tuple[
            int, list[int]]:
        assert self._ports is not None
        self.namespace_pairs_counted += 1
        total = src.pods * dst.pods - (src.pods if same else 0)
        bulk = src.free_src * dst.free_dst - (src.free_both_self if same else 0)
        allowed = [bulk] * len(self._ports)
        if total:
            # Egress-isolated sources to every destination class; egress-free sources to ingress-isolated
            # destinations. Everything else is unisolated on both sides: in the bulk.
            for s_id, s_size in src.isolated_src:
                for d_id, d_size, _ in dst.all_classes:
                    self._add(index, s_id, s_size, d_id, d_size, allowed)
            for s_id, s_size in src.free_src_classes:
                for d_id, d_size in dst.isolated_dst:
                    self._add(index, s_id, s_size, d_id, d_size, allowed)
        return total, allowed

    def _add(self, index: ReachabilityIndex, s_id: str, s_size: int, d_id: str, d_size: int,
             allowed: list[int]) -> None:
        pairs = s_size * d_size - (s_size if s_id == d_id else 0)
        if not pairs:
            return
        key = (s_id, d_id)
        bits = self._verdicts.get(key)
        if bits is None:
            assert self._ports is not None
            bits = 0
            try:
                for i, port in enumerate(self._ports):
                    if index.class_allowed(s_id, d_id, port):
                        bits |= 1 << i
            except KeyError:  # the class is gone (count_async let the index change): not cached, counted again
                self._stale = True
                return
            self._verdicts[key] = bits
            self.judged += 1
        i = 0
        while bits:
            if bits & 1:
                allowed[i] += pairs
            bits >>= 1
            i += 1

    @staticmethod
    def _class_states(index: ReachabilityIndex) -> dict[str, tuple[str, int, bool, bool]]:
        states: dict[str, tuple[str, int, bool, bool]] = {}
        for cls in index.classes():
            ingress, egress = index.isolation(cls.representative)
            states[cls.id] = (cls.namespace, len(cls.members), ingress, egress)
        return states

    @staticmethod
    def _namespaces(classes: dict[str, tuple[str, int, bool, bool]]) -> dict[str, _Namespace]:
        namespaces: dict[str, _Namespace] = {}
        for cid, (namespace, size, ingress, egress) in classes.items():
            ns = namespaces.setdefault(namespace, _Namespace())
            ns.pods += size
            ns.all_classes.append((cid, size, ingress))
            if egress:
                ns.isolated_src.append((cid, size))
            else:
                ns.free_src += size
                ns.free_src_classes.append((cid, size))
            if ingress:
                ns.isolated_dst.append((cid, size))
            else:
                ns.free_dst += size
            if not ingress and not egress:
                ns.free_both_self += size
        return namespaces
