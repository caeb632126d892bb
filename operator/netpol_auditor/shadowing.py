"""Shadowed rules: a rule that admits nothing another rule does not already admit to the same pods.

Rule R (policy P) is shadowed by rule S (policy Q, possibly P itself) when all of these hold, for every cluster,
whatever its pods and namespaces:

- P and Q are in the same namespace and both list the rules' direction in ``policyTypes`` (the rules of a
  direction not listed are ignored, so they shadow nothing and are not judged here);
- Q's podSelector selects every pod P's does, so S applies wherever R does;
- every peer of R is contained in one peer of S, and every port entry of R in one port entry of S (a rule admits
  the product of its peers and ports: ``from``/``to`` left out or empty is every peer, ``ports`` every port).

Containment is decided on the selectors as written, never on the pods of the input, so a finding holds in any
cluster. Selector X contains selector Y when each requirement of X follows from one requirement of Y
(``matchLabels`` entries are ``In`` requirements of one value): ``k In A`` follows from ``k In B`` with B ⊆ A,
``k Exists`` from ``k In ...``, ``k NotIn A`` from ``k In B`` with A ∩ B = ∅, from ``k NotIn B`` with A ⊆ B and
from ``k DoesNotExist``. A peer without namespaceSelector means the policy's namespace, i.e. the namespaces whose
``kubernetes.io/metadata.name`` label, which the API server sets on every namespace, is in {that namespace}. An
ipBlock contains another when its cidr contains the other's and each of its ``except`` ranges is outside the
other's cidr or inside one of the other's ``except`` ranges. A port entry contains another of the same protocol
when it has no port, or both have numbers and the range (``port`` to ``endPort``) contains the other's, or both name
the same port (resolved on the same destination pod).

Not detected (no finding, never a false one): a rule covered only by several rules together, or a peer only by
several peers together; selectors equivalent for other reasons (``k In (a)`` vs ``k NotIn (b)`` when only a and b
exist); an ipBlock peer covered by selector peers or the reverse (pod IPs are not known in general); a named port
against a number; rules whose direction the policy does not isolate.

Of two rules that contain each other, the later one (by policy name, then rule index) is reported, so removing every
reported rule at once leaves what the policies admit unchanged: containment is transitive, and the rules reported
form no cycle.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .model import (
    NAMESPACE_NAME_LABEL,
    Direction,
    IPBlock,
    LabelSelector,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    SelectorOperator,
)

__all__ = ["ShadowedRule", "selector_contains", "shadowed_rules"]

_Requirement = tuple[str, SelectorOperator, frozenset[str]]


@dataclass(frozen=True)
class ShadowedRule:
    policy: NetworkPolicy
    direction: Direction
    rule: int
    by: NetworkPolicy
    by_rule: int

    @property
    def path(self) -> str:
        return f"spec.{self.direction.value.lower()}[{self.rule}]"

    def __str__(self) -> str:
        where = "of this policy" if self.by.key == self.policy.key else f"of {self.by.namespace}/{self.by.name}"
        return (
            f"admits nothing that spec.{self.direction.value.lower()}[{self.by_rule}] {where} does not already admit "
            "to every pod this policy selects: redundant"
        )


def _requirements(selector: LabelSelector) -> frozenset[_Requirement]:
    reqs = {(k, SelectorOperator.IN, frozenset({v})) for k, v in selector.match_labels.items()}
    reqs.update((r.key, r.operator, frozenset(r.values)) for r in selector.match_expressions)
    return frozenset(reqs)


def _follows(wanted: _Requirement, given: _Requirement) -> bool:
    """Every label set that satisfies ``given`` satisfies ``wanted``."""
    key, op, values = wanted
    given_key, given_op, given_values = given
    if key != given_key:
        return False
    if op is SelectorOperator.IN:
        return given_op is SelectorOperator.IN and given_values <= values
    if op is SelectorOperator.EXISTS:
        return given_op in (SelectorOperator.IN, SelectorOperator.EXISTS)
    if op is SelectorOperator.NOT_IN:
        if given_op is SelectorOperator.IN:
            return not given_values & values
        if given_op is SelectorOperator.NOT_IN:
            return values <= given_values
        return given_op is SelectorOperator.DOES_NOT_EXIST
    return given_op is SelectorOperator.DOES_NOT_EXIST


def _contains(outer: frozenset[_Requirement], inner: frozenset[_Requirement]) -> bool:
    return all(any(_follows(wanted, given) for given in inner) for wanted in outer)


def selector_contains(outer: LabelSelector, inner: LabelSelector) -> bool:
    """Whether ``outer`` selects every label set ``inner`` selects, as far as the requirements as written show."""
    return _contains(_requirements(outer), _requirements(inner))


@dataclass(frozen=True)
class _Peer:
    namespaces: frozenset[_Requirement] | None  # None: an ipBlock
    pods: frozenset[_Requirement]
    block: IPBlock | None


def _peer(peer: NetworkPolicyPeer, namespace: str) -> _Peer:
    if peer.ip_block is not None:
        return _Peer(None, frozenset(), peer.ip_block)
    if peer.namespace_selector is None:
        namespaces = frozenset({(NAMESPACE_NAME_LABEL, SelectorOperator.IN, frozenset({namespace}))})
    else:
        namespaces = _requirements(peer.namespace_selector)
    pods = frozenset() if peer.pod_selector is None else _requirements(peer.pod_selector)
    return _Peer(namespaces, pods, None)


def _block_contains(outer: IPBlock, inner: IPBlock) -> bool:
    outer_net = ipaddress.ip_network(outer.cidr, strict=False)
    inner_net = ipaddress.ip_network(inner.cidr, strict=False)
    if outer_net.version != inner_net.version or not inner_net.subnet_of(outer_net):  # type: ignore[arg-type]
        return False
    holes = [ipaddress.ip_network(e, strict=False) for e in inner.except_]
    for text in outer.except_:
        hole = ipaddress.ip_network(text, strict=False)
        if hole.version != inner_net.version or not hole.overlaps(inner_net):
            continue
        if not any(hole.version == h.version and hole.subnet_of(h) for h in holes):  # type: ignore[arg-type]
            return False
    return True


def _peer_contains(outer: _Peer, inner: _Peer) -> bool:
    if outer.block is not None or inner.block is not None:
        return outer.block is not None and inner.block is not None and _block_contains(outer.block, inner.block)
    assert outer.namespaces is not None and inner.namespaces is not None
    return _contains(outer.namespaces, inner.namespaces) and _contains(outer.pods, inner.pods)


def _port_contains(outer: NetworkPolicyPort, inner: NetworkPolicyPort) -> bool:
    if outer.protocol != inner.protocol:
        return False
    if outer.port is None:
        return True
    if isinstance(outer.port, str) or isinstance(inner.port, str):
        return outer.port == inner.port
    if inner.port is None:
        return False
    return outer.port <= inner.port and (inner.end_port or inner.port) <= (outer.end_port or outer.port)


@dataclass(frozen=True)
class _Rule:
    policy: NetworkPolicy
    index: int
    peers: tuple[_Peer, ...]  # empty: every peer
    ports: tuple[NetworkPolicyPort, ...]  # empty: every port


def _rule(policy: NetworkPolicy, index: int, rule: NetworkPolicyRule) -> _Rule:
    return _Rule(policy, index, tuple(_peer(p, policy.namespace) for p in rule.peers), rule.ports)


def _rule_contains(outer: _Rule, inner: _Rule) -> bool:
    if not selector_contains(outer.policy.pod_selector, inner.policy.pod_selector):
        return False
    if outer.peers and not (inner.peers and all(any(_peer_contains(o, i) for o in outer.peers) for i in inner.peers)):
        return False
    if outer.ports:
        return bool(inner.ports) and all(any(_port_contains(o, i) for o in outer.ports) for i in inner.ports)
    return True


def shadowed_rules(policies: Iterable[NetworkPolicy]) -> list[ShadowedRule]:
    """Every shadowed rule, by namespace, policy name, direction and rule, each with the first rule shadowing it."""
    by_namespace: dict[str, list[NetworkPolicy]] = {}
    for policy in policies:
        by_namespace.setdefault(policy.namespace, []).append(policy)
    found: list[ShadowedRule] = []
    for namespace in sorted(by_namespace):
        ordered = sorted(by_namespace[namespace], key=lambda p: p.name)
        for direction in (Direction.INGRESS, Direction.EGRESS):
            rules = [
                _rule(policy, i, rule)
                for policy in ordered
                if direction in policy.policy_types
                for i, rule in enumerate(policy.rules(direction))
            ]
            for rank, inner in enumerate(rules):
                for other_rank, outer in enumerate(rules):
                    if other_rank == rank or not _rule_contains(outer, inner):
                        continue
                    if other_rank > rank and _rule_contains(inner, outer):
                        continue  # alike: the later one is the one reported
                    found.append(ShadowedRule(inner.policy, direction, inner.index, outer.policy, outer.index))
                    break
    return found
