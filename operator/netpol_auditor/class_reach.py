"""Where each equivalence class may connect, as bit sets: the allowed/denied marks of ``analyze`` without judging
pair by pair.

The caller gives every class a bit mask in a space of its choosing (``analyze``: one bit per output column, the
class's members). For a source class S and a port p, the destinations S may reach are the intersection of

- the destinations whose ingress admits S on p: those not isolated for ingress, plus, for every rule of an
  ingress-isolating policy whose peers match S (or that has no peers), the classes the policy isolates whose named
  ports let the rule's ports admit p;
- the destinations S's egress allows on p: every class when S is not isolated for egress, else the union, over the
  rules of the policies isolating S for egress, of the classes the rule's peers match (every class for a rule
  without peers) whose named ports let the rule's ports admit p.

Addresses outside the cluster can be columns and rows too (``addresses``): ipBlocks and rules without peers reach
them, no policy isolates them, and from an address only the destination's ingress decides.

These are the semantics of `engine.judge_direction` (a direction allows iff it is not isolated or some rule of an
isolating policy admits the peer on the port, named ports resolved on the destination), read the other way round;
`tests/core/test_class_reach.py` checks the two agree on random clusters. Cost: O(classes x ports x rules that
can apply) big-integer operations, instead of O(classes^2 x ports) verdicts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from .engine import CompiledPeer, CompiledPolicy, CompiledRule, PolicyKey
from .model import Labels, PortProtocol

__all__ = ["ClassReach", "ReachClass"]


class ReachClass(Protocol):
    """What this needs of an equivalence class (`index_view.ClassRecord` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def labels(self) -> Labels: ...
    @property
    def named_ports(self) -> Labels: ...
    @property
    def ips(self) -> tuple[str, ...]: ...
    @property
    def sel_in(self) -> tuple[CompiledPolicy, ...]: ...
    @property
    def sel_eg(self) -> tuple[CompiledPolicy, ...]: ...


_NONE: tuple[PolicyKey, ...] = ()


def _named(rule: CompiledRule) -> bool:
    """Whether the rule's port match depends on the destination (a named port)."""
    return any(isinstance(p.port.port, str) for p in rule.ports)


class ClassReach:
    """Allowed destinations per (source class, port), in the caller's bit space (``masks``: class id -> bits)."""

    def __init__(
        self,
        classes: Iterable[ReachClass],
        namespace_labels: Callable[[str], Labels],
        masks: Mapping[str, int],
        addresses: Mapping[str, int] | None = None,
    ) -> None:
        self._classes = list(classes)
        self._masks = masks
        # Addresses outside the cluster (address -> bits): no selector picks them, only ipBlocks and rules without
        # peers; no policy isolates them; no named port resolves on them.
        self._addresses = dict(addresses or {})
        address_bits = 0
        for bits in self._addresses.values():
            address_bits |= bits
        self._by_ns: dict[str, list[ReachClass]] = defaultdict(list)
        for c in self._classes:
            self._by_ns[c.namespace].append(c)
        self._ns_labels = {ns: namespace_labels(ns) for ns in self._by_ns}
        self._everyone = address_bits
        for c in self._classes:
            self._everyone |= masks.get(c.id, 0)
        self._ns_memo: dict[object, list[str]] = {}
        self._peer_memo: dict[object, tuple[list[ReachClass], int]] = {}

        # Ingress, read from the source: which (policy, rule) pairs can admit each class, and whom they guard.
        self._unisolated_in = address_bits
        self._guarded: dict[int, list[ReachClass]] = defaultdict(list)  # id(policy) -> classes it isolates (ingress)
        policies: dict[int, CompiledPolicy] = {}
        self._guarded_bits: dict[int, int] = {}  # id(policy) -> bits of the classes it isolates (ingress)
        self._named_memo: dict[int | None, dict[Labels, int]] = {}  # see `_by_named_ports`
        for c in self._classes:
            if not c.sel_in:
                self._unisolated_in |= masks.get(c.id, 0)
            for cp in c.sel_in:
                self._guarded[id(cp)].append(c)
                policies[id(cp)] = cp
        self._open_rules: list[tuple[CompiledPolicy, CompiledRule]] = []  # rules without peers: admit every class
        self._admitting: dict[str, list[tuple[CompiledPolicy, CompiledRule]]] = defaultdict(list)
        self._admitting_address: dict[str, list[tuple[CompiledPolicy, CompiledRule]]] = defaultdict(list)
        # The same, read from the rule: the classes each rule with peers and ports admits; a rule without ports
        # opens the same destinations on every port, so those are gathered per class once (``_any_port``).
        self._admitted: list[tuple[CompiledPolicy, CompiledRule, list[str]]] = []
        self._any_port: dict[str, int] = defaultdict(int)
        for cp in policies.values():
            for rule in cp.ingress:
                if not rule.peers:
                    self._open_rules.append((cp, rule))
                    continue
                seen: dict[str, None] = {}
                for peer in rule.peers:
                    for c in self._peer_match(peer)[0]:
                        if c.id not in seen:
                            seen[c.id] = None
                            self._admitting[c.id].append((cp, rule))
                if rule.ports:
                    self._admitted.append((cp, rule, list(seen)))
                else:
                    opened = self._guarded_mask(cp)
                    for cid in seen:
                        self._any_port[cid] |= opened
                for address in self._addresses:
                    if any(p.ip_block is not None and p.ip_block.matches_any((address,)) for p in rule.peers):
                        self._admitting_address[address].append((cp, rule))
        self._targets_memo: dict[PortProtocol, dict[int, int]] = {}  # port -> id(rule) -> the classes it opens
        self._in_memo: dict[tuple[str, PortProtocol], int] = {}
        self._in_port_memo: dict[PortProtocol, tuple[int, dict[str, int]]] = {}
        self._eg_memo: dict[PortProtocol, dict[str, int]] = {}  # port -> class id -> bits its egress allows
        self._in_policy_memo: dict[tuple[str, PortProtocol], dict[int, int]] = {}
        self._eg_policy_memo: dict[tuple[int, PortProtocol], int] = {}

    # -- peers -------------------------------------------------------------------------------------------------

    def _namespaces(self, peer: CompiledPeer) -> list[str]:
        if peer.namespace is None:
            return [peer.policy_namespace] if peer.policy_namespace in self._by_ns else []
        key = peer.namespace.selector
        got = self._ns_memo.get(key)
        if got is None:
            matcher = peer.namespace
            got = self._ns_memo[key] = [ns for ns, labels in self._ns_labels.items() if matcher.matches(labels)]
        return got

    def _peer_match(self, peer: CompiledPeer) -> tuple[list[ReachClass], int]:
        """The classes a peer matches (as `CompiledPeer.matches` on the class), and their bits."""
        block = peer.ip_block
        key: object = ("block", block.block) if block is not None else (peer.policy_namespace, peer.peer)
        got = self._peer_memo.get(key)
        if got is not None:
            return got
        matched: list[ReachClass] = []
        address_bits = 0
        if block is not None:
            matched = [c for c in self._classes if block.matches_any(c.ips)]
            for address, bits in self._addresses.items():
                if block.matches_any((address,)):
                    address_bits |= bits
        else:
            for ns in self._namespaces(peer):
                if peer.pods is None:
                    matched.extend(self._by_ns[ns])
                else:
                    pods = peer.pods
                    matched.extend(c for c in self._by_ns[ns] if pods.matches(c.labels))
        bits = address_bits
        for c in matched:
            bits |= self._masks.get(c.id, 0)
        got = self._peer_memo[key] = (matched, bits)
        return got

    # -- ports -------------------------------------------------------------------------------------------------

    def _port_bits(self, rule: CompiledRule, port: PortProtocol, guarded_by: int | None, among_bits: int) -> int:
        """Bits of the classes (those the policy of id ``guarded_by`` isolates for ingress, whose bits are
        ``among_bits``; or all) on which the rule's ports admit ``port``."""
        if not rule.ports:
            return among_bits
        if not _named(rule):
            return among_bits if any(p.matches(port, None) for p in rule.ports) else 0
        bits = 0
        for named_ports, mask in self._by_named_ports(guarded_by).items():
            if rule.takes_port(port, named_ports):
                bits |= mask
        return bits

    def _by_named_ports(self, guarded_by: int | None) -> dict[Labels, int]:
        """The classes the policy of id ``guarded_by`` isolates for ingress (or all), as bits grouped by their named
        ports: a named port resolves alike on every class of a group."""
        got = self._named_memo.get(guarded_by)
        if got is None:
            groups: dict[Labels, int] = defaultdict(int)
            for c in self._classes if guarded_by is None else self._guarded[guarded_by]:
                groups[c.named_ports] |= self._masks.get(c.id, 0)
            got = self._named_memo[guarded_by] = dict(groups)
        return got

    def _guarded_mask(self, cp: CompiledPolicy) -> int:
        """Bits of the classes ``cp`` isolates for ingress."""
        got = self._guarded_bits.get(id(cp))
        if got is None:
            got = 0
            for c in self._guarded[id(cp)]:
                got |= self._masks.get(c.id, 0)
            self._guarded_bits[id(cp)] = got
        return got

    # -- the two directions ------------------------------------------------------------------------------------

    def _opened(self, cp: CompiledPolicy, rule: CompiledRule, port: PortProtocol) -> int:
        """Bits of the classes ``cp`` isolates for ingress whose named ports let ``rule`` admit ``port``."""
        targets = self._targets_memo.setdefault(port, {})
        found = targets.get(id(rule))
        if found is None:
            found = targets[id(rule)] = self._port_bits(rule, port, id(cp), self._guarded_mask(cp))
        return found

    def _ingress(self, src: ReachClass, port: PortProtocol) -> int:
        """Bits of the destinations whose ingress admits ``src`` on ``port``."""
        base, by_class = self._ingress_on(port)
        return base | self._any_port.get(src.id, 0) | by_class.get(src.id, 0)

    def _ingress_on(self, port: PortProtocol) -> tuple[int, dict[str, int]]:
        """For ``port``, every source class at once: the destinations whose ingress admits any class (not
        isolated, or opened by a rule without peers), and per class those its peer-matching rules with ports add.
        Read rule by rule, so that a rule whose ports do not admit ``port`` costs one look-up, not one per class it
        admits."""
        got = self._in_port_memo.get(port)
        if got is not None:
            return got
        base = self._unisolated_in
        for cp, rule in self._open_rules:
            base |= self._opened(cp, rule, port)
        by_class: dict[str, int] = defaultdict(int)
        for cp, rule, admitted in self._admitted:
            opened = self._opened(cp, rule, port)
            if opened:
                for cid in admitted:
                    by_class[cid] |= opened
        got = self._in_port_memo[port] = (base, by_class)
        return got

    def _egress(self, src: ReachClass, port: PortProtocol) -> int:
        """Bits of the destinations ``src``'s egress allows on ``port``."""
        if not src.sel_eg:
            return self._everyone
        by_class = self._eg_memo.get(port)
        if by_class is None:
            by_class = self._eg_memo[port] = {}
        got = by_class.get(src.id)
        if got is None:
            got = 0
            for cp in src.sel_eg:
                got |= self._egress_policy(cp, port)
            by_class[src.id] = got
        return got

    def _egress_policy(self, cp: CompiledPolicy, port: PortProtocol) -> int:
        """Bits of the destinations some egress rule of ``cp`` admits on ``port``."""
        memo_key = (id(cp), port)
        got = self._eg_policy_memo.get(memo_key)
        if got is not None:
            return got
        bits = 0
        for rule in cp.egress:
            allowed = self._port_bits(rule, port, None, self._everyone)
            if rule.peers and allowed:
                peers = 0
                for peer in rule.peers:
                    peers |= self._peer_match(peer)[1]
                allowed &= peers
            bits |= allowed
        self._eg_policy_memo[memo_key] = bits
        return bits

    def _ingress_policies(self, src: ReachClass, port: PortProtocol) -> dict[int, int]:
        """id(policy) -> bits of the destinations it isolates whose ingress it opens to ``src`` on ``port``."""
        key = (src.id, port)
        got = self._in_policy_memo.get(key)
        if got is not None:
            return got
        out: dict[int, int] = defaultdict(int)
        for cp, rule in (*self._open_rules, *self._admitting.get(src.id, ())):
            out[id(cp)] |= self._opened(cp, rule, port)
        self._in_policy_memo[key] = out
        return out

    def verdict(
        self, src: ReachClass, dst: ReachClass, port: PortProtocol
    ) -> tuple[bool, tuple[PolicyKey, ...]]:
        """(allowed, deciding policies) from ``src`` to ``dst`` on ``port``, as `engine.Verdict` gives them: the
        admitting policies of both directions if allowed, else the policies of each denying direction (the
        isolating ones). ``dst``'s mask must be non-zero."""
        dst_bits = self._masks[dst.id]
        egress_ok, egress = True, _NONE
        if src.sel_eg:
            admitting = tuple(cp.key for cp in src.sel_eg if self._egress_policy(cp, port) & dst_bits)
            egress_ok = bool(admitting)
            egress = admitting or tuple(cp.key for cp in src.sel_eg)
        ingress_ok, ingress = True, _NONE
        if dst.sel_in:
            opened = self._ingress_policies(src, port)
            admitting = tuple(cp.key for cp in dst.sel_in if opened.get(id(cp), 0) & dst_bits)
            ingress_ok = bool(admitting)
            ingress = admitting or tuple(cp.key for cp in dst.sel_in)
        allowed = egress_ok and ingress_ok
        parts = (*(egress if allowed or not egress_ok else ()), *(ingress if allowed or not ingress_ok else ()))
        return allowed, tuple(dict.fromkeys(parts))

    def allowed(self, src: ReachClass, port: PortProtocol) -> int:
        """Bits of the destinations ``src`` may connect to on ``port`` (both directions allow)."""
        bits = self._ingress(src, port)
        return bits & self._egress(src, port) if bits else 0

    def allowed_from_address(self, address: str, port: PortProtocol) -> int:
        """Bits of the destinations an address outside the cluster (one of ``addresses``) may connect to on
        ``port``: their ingress alone decides (an address has no egress policy)."""
        key = (f"address:{address}", port)
        got = self._in_memo.get(key)
        if got is not None:
            return got
        bits = self._unisolated_in
        for cp, rule in (*self._open_rules, *self._admitting_address.get(address, ())):
            bits |= self._opened(cp, rule, port)
        self._in_memo[key] = bits
        return bits
