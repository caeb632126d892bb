"""Counting allowed and denied pod pairs per (source namespace, destination namespace, port), without pod pairs.

Used by `ReachabilityIndex.path_counts`. Every endpoint pod gets one bit; the pods of a class occupy consecutive
bits and the classes of a namespace are contiguous, so "the set of source pods allowed into class D on port p" is
one Python integer, built from per-peer bit sets:

- ingress of D: the union, over the rules of the policies isolating D whose ports admit p on D, of the bits of
  the rule's peers (every pod for a rule without peers) -- or every pod when D is not isolated for ingress;
- egress towards D: the pods not isolated for egress, plus the pods selected by every egress-isolating policy with a
  rule whose peers match D and whose ports admit p on D.

The intersection is counted per source namespace with one popcount per namespace it touches (or per namespace it
misses, when it is dense). Cost: O(classes x ports x touched namespaces) big-integer operations, instead of
O(classes^2 x ports) verdicts.

Cluster policies (`netpol_auditor.tiers`) change both sides where their subjects are:

- ingress of a destination they select: the tiers are walked with bit sets -- each Admin rule in order takes the
  sources its peers match out of those still undecided (Accept: allowed, Deny: denied, Pass: on to the
  NetworkPolicies), then the NetworkPolicy bits above or, where none isolates, the Baseline rules the same way; the
  rest is allowed. Policies of equal priority (a possible tie) fall back to judging source class by source class;
- egress of a source they select: judged per destination class, once per group of sources with the same policies.

Paths whose verdict is out of model (``allowed`` None) are counted apart, as ``unknown``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .class_reach import ReachClass
from .cluster_policy import RuleAction
from .engine import CompiledPeer, CompiledPolicy, CompiledRule, PeerInfo, judge_tiers
from .model import Direction, Labels, PodRef, PortProtocol
from .selectors import SelectorMatcher

if TYPE_CHECKING:
    from .tiers import CompiledClusterPeer, CompiledClusterPolicy

__all__ = ["ClassLike", "PathCounts", "count_paths", "path_series"]


class PathCounts(NamedTuple):
    """Ordered pairs of distinct endpoint pods whose traffic the policies allow / deny / leave out of model."""

    allowed: int = 0
    denied: int = 0
    unknown: int = 0


class ClassLike(ReachClass, Protocol):
    """What counting needs of an equivalence class (the index's internal class record)."""

    @property
    def members(self) -> Collection[PodRef]: ...
    @property
    def adm_in(self) -> tuple[CompiledClusterPolicy, ...]: ...
    @property
    def adm_eg(self) -> tuple[CompiledClusterPolicy, ...]: ...
    @property
    def base_in(self) -> tuple[CompiledClusterPolicy, ...]: ...
    @property
    def base_eg(self) -> tuple[CompiledClusterPolicy, ...]: ...


def count_paths(
    classes: Iterable[ClassLike],
    namespace_labels: Callable[[str], Labels],
    ports: Sequence[PortProtocol],
    limit: int | None = None,
) -> dict[tuple[str, str, PortProtocol], PathCounts]:
    """(source namespace, destination namespace, port) -> counts of ordered pairs of distinct pods, sorted by key;
    every pair of namespaces that has endpoint pairs is listed. ``limit``: only the first ``limit`` keys (the
    counting is the same; building millions of result entries is what it saves)."""
    ports = sorted(set(ports))
    ordered = sorted(classes, key=lambda c: (c.namespace, c.id))
    offset: dict[str, int] = {}
    size: dict[str, int] = {}
    cmask: dict[str, int] = {}
    ns_names: list[str] = []
    ns_starts: list[int] = []
    ns_masks: list[int] = []
    ns_members: dict[str, int] = {}
    by_ns: dict[str, list[ClassLike]] = defaultdict(list)
    total = 0
    for c in ordered:
        if not ns_names or ns_names[-1] != c.namespace:
            if ns_names:
                ns_masks.append(((1 << (total - ns_starts[-1])) - 1) << ns_starts[-1])
            ns_names.append(c.namespace)
            ns_starts.append(total)
        n = len(c.members)
        offset[c.id], size[c.id] = total, n
        cmask[c.id] = ((1 << n) - 1) << total
        total += n
        by_ns[c.namespace].append(c)
    if ns_names:
        ns_masks.append(((1 << (total - ns_starts[-1])) - 1) << ns_starts[-1])
    ns_index = {name: i for i, name in enumerate(ns_names)}
    for i, name in enumerate(ns_names):
        ns_members[name] = ns_masks[i].bit_count()
    full = (1 << total) - 1

    # -- which classes each peer matches ---------------------------------------------------------------------------
    ns_match_memo: dict[int, list[str]] = {}
    selector_keep: list[SelectorMatcher] = []  # keeps id() keys alive and unique

    def namespaces_of(peer: CompiledPeer) -> list[str]:
        if peer.namespace is None:
            return [peer.policy_namespace] if peer.policy_namespace in ns_index else []
        key = id(peer.namespace)
        got = ns_match_memo.get(key)
        if got is None:
            selector_keep.append(peer.namespace)
            got = ns_match_memo[key] = [n for n in ns_names if peer.namespace.matches(namespace_labels(n))]
        return got

    peer_memo: dict[object, tuple[list[ClassLike], int]] = {}
    block_memo: dict[object, tuple[list[ClassLike], int]] = {}

    def peer_match(peer: CompiledPeer) -> tuple[list[ClassLike], int]:
        key: object = (peer.policy_namespace, peer.peer)
        got = peer_memo.get(key)
        if got is not None:
            return got
        matched: list[ClassLike] = []
        bits = 0
        if peer.ip_block is not None:
            block_key = peer.ip_block.block
            got = block_memo.get(block_key)
            if got is None:
                block = peer.ip_block
                matched = [c for c in ordered if block.matches_any(c.ips)]
                for c in matched:
                    bits |= cmask[c.id]
                got = block_memo[block_key] = (matched, bits)
            peer_memo[key] = got
            return got
        else:
            for name in namespaces_of(peer):
                if peer.pods is None:
                    matched.extend(by_ns[name])
                    bits |= ns_masks[ns_index[name]]
                else:
                    for c in by_ns[name]:
                        if peer.pods.matches(c.labels):
                            matched.append(c)
                            bits |= cmask[c.id]
        got = peer_memo[key] = (matched, bits)
        return got

    # -- egress side: who is unisolated, who each egress policy selects, which rules can reach each class ---------
    unisolated_egress = 0
    selected_by: dict[int, int] = defaultdict(int)
    egress_policies: dict[int, CompiledPolicy] = {}
    for c in ordered:
        if not c.sel_eg:
            unisolated_egress |= cmask[c.id]
        for cp in c.sel_eg:
            selected_by[id(cp)] |= cmask[c.id]
            egress_policies[id(cp)] = cp
    everywhere: list[tuple[CompiledPolicy, CompiledRule]] = []
    reaching: dict[str, list[tuple[CompiledPolicy, CompiledRule]]] = defaultdict(list)
    for cp in egress_policies.values():
        for rule in cp.egress:
            if not rule.peers:
                everywhere.append((cp, rule))
                continue
            seen: set[str] = set()
            for peer in rule.peers:
                for c in peer_match(peer)[0]:
                    if c.id not in seen:
                        seen.add(c.id)
                        reaching[c.id].append((cp, rule))

    ingress_memo: dict[tuple[tuple[int, ...], Labels, PortProtocol], int] = {}

    def ingress_bits(d: ClassLike, port: PortProtocol) -> int:
        if not d.sel_in:
            return full
        key = (tuple(id(cp) for cp in d.sel_in), d.named_ports, port)
        got = ingress_memo.get(key)
        if got is not None:
            return got
        bits = 0
        for cp in d.sel_in:
            for rule in cp.ingress:
                if not rule.takes_port(port, d.named_ports):
                    continue
                if not rule.peers:
                    bits = full
                    break
                for peer in rule.peers:
                    bits |= peer_match(peer)[1]
            if bits == full:
                break
        ingress_memo[key] = bits
        return bits

    def egress_bits(d: ClassLike, port: PortProtocol) -> int:
        bits = unisolated_egress
        for cp, rule in everywhere:
            if rule.takes_port(port, d.named_ports):
                bits |= selected_by[id(cp)]
        for cp, rule in reaching.get(d.id, ()):
            if rule.takes_port(port, d.named_ports):
                bits |= selected_by[id(cp)]
        return bits

    # -- cluster policies -----------------------------------------------------------------------------------------
    infos: dict[str, PeerInfo] = {}

    def info(c: ClassLike) -> PeerInfo:
        got = infos.get(c.id)
        if got is None:
            got = infos[c.id] = PeerInfo(c.namespace, namespace_labels(c.namespace), c.labels, c.ips, c.named_ports)
        return got

    cluster_peer_memo: dict[int, int] = {}
    cluster_keep: list[CompiledClusterPeer] = []  # keeps id() keys alive and unique

    def cluster_peer_bits(peer: CompiledClusterPeer) -> int:
        """The pods a namespaces or pods peer matches (ingress peers are never networks, nodes or domainNames)."""
        got = cluster_peer_memo.get(id(peer))
        if got is None:
            cluster_keep.append(peer)
            got = 0
            for c in ordered:
                if peer.matches(info(c)):
                    got |= cmask[c.id]
            cluster_peer_memo[id(peer)] = got
        return got

    def walk_tier(policies: tuple[CompiledClusterPolicy, ...], d: ClassLike, port: PortProtocol,
                  undecided: int) -> tuple[int, int]:
        """(accepted, passed or unmatched) among the ``undecided`` sources, for the ingress of ``d`` through one
        tier; the rest is denied."""
        accepted = passed = 0
        for cp in policies:
            for rule in cp.ingress:
                if not undecided:
                    break
                if rule.ports and not any(p.matches(port, d.named_ports) for p in rule.ports):
                    continue
                hit = 0
                for peer in rule.peers:
                    hit |= cluster_peer_bits(peer)
                hit &= undecided
                if rule.action is RuleAction.ACCEPT:
                    accepted |= hit
                elif rule.action is RuleAction.PASS:  # out of this tier, on to the next
                    passed |= hit
                undecided &= ~hit
        return accepted, undecided | passed

    def tied(policies: tuple[CompiledClusterPolicy, ...]) -> bool:
        priorities = [cp.policy.priority for cp in policies]
        return len(set(priorities)) != len(priorities)

    def cluster_ingress(d: ClassLike, port: PortProtocol) -> tuple[int, int]:
        """(allowed, unknown) sources into ``d``, which cluster policies select for ingress."""
        if tied(d.adm_in) or tied(d.base_in):
            allowed_bits = unknown_bits = 0
            for c in ordered:
                outcome = judge_tiers(Direction.INGRESS, d.sel_in, d.adm_in, d.base_in, info(c), port,
                                      d.named_ports).outcome
                if outcome is None:
                    unknown_bits |= cmask[c.id]
                elif outcome:
                    allowed_bits |= cmask[c.id]
            return allowed_bits, unknown_bits
        accepted, rest = walk_tier(d.adm_in, d, port, full)
        if d.sel_in:
            return accepted | (rest & ingress_bits(d, port)), 0
        base_accepted, base_rest = walk_tier(d.base_in, d, port, rest)
        return accepted | base_accepted | base_rest, 0

    cluster_sources: dict[tuple[int | None, ...], tuple[ClassLike, int]] = {}  # policies -> a member, all bits
    cluster_source_mask = 0
    for c in ordered:
        if c.adm_eg or c.base_eg:
            key = (*map(id, c.sel_eg), None, *map(id, c.adm_eg), None, *map(id, c.base_eg))
            first, bits = cluster_sources.get(key, (c, 0))
            cluster_sources[key] = (first, bits | cmask[c.id])
            cluster_source_mask |= cmask[c.id]

    def cluster_egress(d: ClassLike, port: PortProtocol) -> tuple[int, int]:
        """(allowed, unknown) among the sources cluster policies select for egress, towards ``d``."""
        allowed_bits = unknown_bits = 0
        for s, bits in cluster_sources.values():
            outcome = judge_tiers(Direction.EGRESS, s.sel_eg, s.adm_eg, s.base_eg, info(d), port,
                                  d.named_ports).outcome
            if outcome is None:
                unknown_bits |= bits
            elif outcome:
                allowed_bits |= bits
        return allowed_bits, unknown_bits

    # -- counting (keys are integers: (source namespace, destination namespace, port) indexes) ------------------
    n_ns, n_ports = len(ns_names), len(ports)
    allowed: dict[int, int] = defaultdict(int)
    full_into = [0] * (n_ns * n_ports)  # sum of destination weights into which every source pod is allowed
    unknown: dict[int, int] = defaultdict(int)
    full_unknown = [0] * (n_ns * n_ports)
    half = total // 2

    def tally(bits: int, counts: dict[int, int], full_list: list[int], d_i: int, p_i: int, weight: int,
              own_bit: int) -> None:
        """Add the source pods of ``bits`` into a destination class of ``weight`` pods to ``counts``."""
        if bits & own_bit:
            counts[(d_i * n_ns + d_i) * n_ports + p_i] -= weight  # a pod and itself is not a pair
        if bits == full:
            full_list[d_i * n_ports + p_i] += weight
            return
        dense = bits.bit_count() > half
        rest = (full & ~bits) if dense else bits
        sign = -1 if dense else 1
        if dense:
            full_list[d_i * n_ports + p_i] += weight
        while rest:
            low = (rest & -rest).bit_length() - 1
            i = bisect_right(ns_starts, low) - 1
            mask = ns_masks[i]
            counts[(i * n_ns + d_i) * n_ports + p_i] += sign * (rest & mask).bit_count() * weight
            rest &= ~mask

    for d in ordered:
        weight = size[d.id]
        own_bit = 1 << offset[d.id]
        d_i = ns_index[d.namespace]
        for p_i, port in enumerate(ports):
            in_unknown = eg_unknown = 0
            if d.adm_in or d.base_in:
                bits, in_unknown = cluster_ingress(d, port)
            else:
                bits = ingress_bits(d, port)
            if bits or in_unknown:
                eg_bits = egress_bits(d, port)
                if cluster_sources:
                    eg_allowed, eg_unknown = cluster_egress(d, port)
                    eg_bits = (eg_bits & ~cluster_source_mask) | eg_allowed
                maybe = (bits | in_unknown) & (eg_bits | eg_unknown)
                bits &= eg_bits
                unsure = maybe & ~bits
                if unsure:
                    tally(unsure, unknown, full_unknown, d_i, p_i, weight, own_bit)
            if bits:
                tally(bits, allowed, full_into, d_i, p_i, weight, own_bit)
    out: dict[tuple[str, str, PortProtocol], PathCounts] = {}
    allowed_get, unknown_get = allowed.get, unknown.get
    members = [ns_members[name] for name in ns_names]
    room = -1 if limit is None else limit
    for s_i, src_ns in enumerate(ns_names):
        m_s = members[s_i]
        for d_i, dst_ns in enumerate(ns_names):
            pairs = m_s * members[d_i] - (m_s if s_i == d_i else 0)
            if pairs <= 0:
                continue
            base = (s_i * n_ns + d_i) * n_ports
            for p_i, port in enumerate(ports):
                if room == 0:
                    return out
                room -= 1
                a = allowed_get(base + p_i, 0) + m_s * full_into[d_i * n_ports + p_i]
                u = unknown_get(base + p_i, 0) + m_s * full_unknown[d_i * n_ports + p_i]
                out[(src_ns, dst_ns, port)] = PathCounts(a, pairs - a - u, u)
    return out


def path_series(namespace_endpoints: Iterable[int], ports: int) -> int:
    """How many keys `count_paths` returns without a limit: ordered namespace pairs with at least one pair of
    distinct endpoint pods (every pair of distinct namespaces; a namespace with itself when it has two or more),
    times the number of ports."""
    counts = [n for n in namespace_endpoints if n > 0]
    return (len(counts) ** 2 - sum(1 for n in counts if n == 1)) * ports
