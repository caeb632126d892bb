"""Cluster policies compiled into matchers, and the walk through one tier that finds the rule that decides.

The semantics, from kubernetes-sigs/network-policy-api (``apis/v1alpha2/clusternetworkpolicy_types.go``
``ClusterNetworkPolicySpec.Tier`` / ``.Priority`` / ``.Ingress``, ``apis/v1alpha1/adminnetworkpolicy_types.go``
``AdminNetworkPolicySpec.Priority``, and ``site-src/api-overview.md`` "Tiers", "Actions", "Priorities"):

- tiers are evaluated Admin, then NetworkPolicy, then Baseline; a connection no tier decides is allowed;
- in a tier, policies are checked by ``priority``, lower values first; in a policy, rules in the order written;
  the first rule whose peers and ports match decides: Accept (v1alpha1: Allow) or Deny end the evaluation of
  that direction, Pass skips the rest of the tier;
- two policies of one tier with the same priority that could both match a connection: "the implementation can apply
  any of the matching policies to the connection, and there is no way for the user to reliably determine which one
  it will choose" -- so when their first matching rules disagree on the action, the path is reported undecidable
  rather than given one of the answers;
- peers: ``namespaces`` = every pod of the matching namespaces, ``pods`` = namespace AND pod selector, ``networks`` =
  CIDRs matched against any address, pod IPs included ("cluster-internal traffic will be checked against the rule
  as well"); ``nodes`` match node addresses (``node.status.addresses``), never a pod's IP, and are unknown for an
  address outside the cluster; ``domainNames`` match the addresses DNS answers for them, pods' included
  (``npeps/npep-133-fqdn-egress-selector.md``): unknown everywhere. A rule reached whose match is unknown makes the
  direction out of model, naming the rule;
- ports: none = every port of every protocol; a named port is resolved on the destination pod's container ports
  (name and protocol); an address outside the cluster has no named ports.

Mixing the two API versions is outside both specifications (an implementation enforces one of them): Admin tier
AdminNetworkPolicies and ClusterNetworkPolicies are ordered by priority together (equal priorities are a tie, as
above); the BaselineAdminNetworkPolicy, which has no priority, comes after every Baseline ClusterNetworkPolicy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cluster_policy import ClusterPeer, ClusterPolicy, ClusterPolicyKind, ClusterPort, ClusterRule, RuleAction, Tier
from .model import Direction, IPBlock, Labels, PortProtocol
from .selectors import IPBlockMatcher, SelectorMatcher, compile_ip_block, compile_selector

if TYPE_CHECKING:  # engine imports this module; at run time only the attributes of a PeerInfo are used
    from .engine import PeerInfo

__all__ = [
    "ClusterRuleRef",
    "CompiledClusterPeer",
    "CompiledClusterPolicy",
    "CompiledClusterPort",
    "CompiledClusterRule",
    "compile_cluster_policy",
    "first_match",
]

_KIND_ORDER = {
    ClusterPolicyKind.CLUSTER_NETWORK_POLICY: 0,
    ClusterPolicyKind.ADMIN_NETWORK_POLICY: 1,
    ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY: 2,
}
#: Where a BaselineAdminNetworkPolicy (no priority) sorts: after every priority (0-1000).
_NO_PRIORITY = 1001


@dataclass(frozen=True)
class CompiledClusterPeer:
    index: int
    peer: ClusterPeer
    namespaces: SelectorMatcher | None
    pods: SelectorMatcher | None
    networks: tuple[IPBlockMatcher, ...]

    def matches(self, info: PeerInfo) -> bool | None:
        """Whether the peer matches the far side; None when that is not known from the manifests."""
        peer = self.peer
        if self.networks:
            return any(block.matches_any(info.ips) for block in self.networks)
        if peer.nodes is not None:
            return False if info.namespace is not None else None
        if peer.domain_names:
            return None
        if info.namespace is None or self.namespaces is None:
            return False  # namespaces and pods peers select pods only
        if not self.namespaces.matches(info.namespace_labels):
            return False
        return self.pods is None or self.pods.matches(info.labels)


@dataclass(frozen=True)
class CompiledClusterPort:
    index: int
    port: ClusterPort

    def matches(self, target: PortProtocol, named_ports: Labels | None) -> bool:
        p = self.port
        if p.named_port is not None:
            if named_ports is None:
                return False
            return named_ports.get(f"{p.named_port}/{target.protocol.value}") == str(target.port)
        if p.protocol != target.protocol:
            return False
        if p.port is None:
            return True
        if p.end_port is not None:
            return p.port <= target.port <= p.end_port
        return p.port == target.port


@dataclass(frozen=True, order=True)
class ClusterRuleRef:
    """The cluster policy rule that matched: which policy (kind, name, tier, priority), which rule (direction,
    index in ``spec.ingress``/``spec.egress``, name), its action, and the peer and port that matched (port None:
    the rule has no ports)."""

    kind: ClusterPolicyKind
    policy: str
    tier: Tier
    priority: int | None
    direction: Direction
    rule: int
    rule_name: str
    action: RuleAction
    peer: int
    port: int | None
    #: When the matching port entry is a named port: its name and the number it resolved to on the destination.
    named_port: tuple[str, int] | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind.value, self.policy)

    @property
    def action_word(self) -> str:
        """Accept as v1alpha2 says it, Allow as v1alpha1 does."""
        if self.action is RuleAction.ACCEPT and self.kind is not ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
            return "Allow"
        return self.action.value

    @property
    def decides(self) -> bool:
        """Accept and Deny end the evaluation; Pass hands it to the next tier."""
        return self.action is not RuleAction.PASS

    def __str__(self) -> str:
        """E.g. ``Admin Deny `block-ns` priority 10 (AdminNetworkPolicy), egress[2] "deny-db" (to[0], ports[1])``."""
        priority = "" if self.priority is None else f" priority {self.priority}"
        field_name = "from" if self.direction is Direction.INGRESS else "to"
        port = f"ports[{self.port}]" if self.port is not None else "any port"
        name = f' "{self.rule_name}"' if self.rule_name else ""
        return (
            f"{self.tier.value} {self.action_word} `{self.policy}`{priority} ({self.kind.value}), "
            f"{self.direction.value.lower()}[{self.rule}]{name} ({field_name}[{self.peer}], {port})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "policy": self.policy,
            "tier": self.tier.value,
            "priority": self.priority,
            "direction": self.direction.value,
            "rule": self.rule,
            "ruleName": self.rule_name or None,
            "action": self.action_word,
            "peer": self.peer,
            "port": self.port,
            **({} if self.named_port is None else {"namedPort": {"name": self.named_port[0],
                                                                 "resolvedTo": self.named_port[1]}}),
        }


@dataclass(frozen=True)
class CompiledClusterRule:
    index: int
    name: str
    action: RuleAction
    peers: tuple[CompiledClusterPeer, ...]
    ports: tuple[CompiledClusterPort, ...]  # empty: every port

    def match(
        self, info: PeerInfo, port: PortProtocol, named_ports: Labels | None
    ) -> tuple[bool | None, int, int | None]:
        """(matched, peer index, port index): matched None when a peer whose match is unknown is the only way it
        could match (its index is then given)."""
        port_index: int | None = None
        if self.ports:
            for cp in self.ports:
                if cp.matches(port, named_ports):
                    port_index = cp.index
                    break
            else:
                return (False, -1, None)
        unknown = -1
        for peer in self.peers:
            got = peer.matches(info)
            if got:
                return (True, peer.index, port_index)
            if got is None and unknown < 0:
                unknown = peer.index
        if unknown >= 0:
            return (None, unknown, port_index)
        return (False, -1, None)


@dataclass(frozen=True)
class CompiledClusterPolicy:
    policy: ClusterPolicy
    namespaces: SelectorMatcher
    pods: SelectorMatcher | None  # None: every pod of the matching namespaces
    ingress: tuple[CompiledClusterRule, ...]
    egress: tuple[CompiledClusterRule, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.policy.key

    @property
    def order(self) -> tuple[int, int, int, str]:
        """Precedence: tier, then priority (lower first), then kind and name (a tie when the priorities are equal;
        see `first_match`)."""
        p = self.policy
        priority = _NO_PRIORITY if p.priority is None else p.priority
        return (0 if p.tier is Tier.ADMIN else 1, priority, _KIND_ORDER[p.kind], p.name)

    def rules(self, direction: Direction) -> tuple[CompiledClusterRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def selects(self, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        """Whether the subject selects a pod (host-network pods are never subjects; they are not judged here)."""
        if not self.namespaces.matches(namespace_labels):
            return False
        return self.pods is None or self.pods.matches(pod_labels)

    def first_match(
        self, direction: Direction, info: PeerInfo, port: PortProtocol, named_ports: Labels | None
    ) -> ClusterRuleRef | str | None:
        """The first rule of ``direction`` that matches, None if none does, or why that is not known."""
        p = self.policy
        for rule in self.rules(direction):
            matched, peer, port_index = rule.match(info, port, named_ports)
            if matched is False:
                continue
            entry = rule.ports[port_index].port.named_port if port_index is not None else None
            ref = ClusterRuleRef(p.kind, p.name, p.tier, p.priority, direction, rule.index, rule.name, rule.action,
                                 peer, port_index, None if entry is None else (entry, port.port))
            if matched:
                return ref
            peer_field = p.rules(direction)[rule.index].peers[peer].field
            what = "node addresses" if peer_field == "nodes" else "the addresses DNS answers for those names"
            return (f"out of model: {ref.kind.value} {ref.policy} {direction.value.lower()}[{rule.index}] "
                    f"({ref.action_word}) has a {peer_field} peer, which matches {what}: not known from the manifests")
        return None


def compile_cluster_policy(policy: ClusterPolicy) -> CompiledClusterPolicy:
    subject = policy.subject
    if subject.namespaces is not None:
        namespaces, pods = compile_selector(subject.namespaces), None
    else:
        assert subject.pods is not None
        namespaces = compile_selector(subject.pods.namespace_selector)
        pods = compile_selector(subject.pods.pod_selector)
    return CompiledClusterPolicy(
        policy, namespaces, pods, _compile_rules(policy.ingress), _compile_rules(policy.egress)
    )


def _compile_peer(index: int, peer: ClusterPeer) -> CompiledClusterPeer:
    if peer.namespaces is not None:
        return CompiledClusterPeer(index, peer, compile_selector(peer.namespaces), None, ())
    if peer.pods is not None:
        return CompiledClusterPeer(index, peer, compile_selector(peer.pods.namespace_selector),
                                   compile_selector(peer.pods.pod_selector), ())
    networks = tuple(compile_ip_block(IPBlock(cidr)) for cidr in peer.networks)
    return CompiledClusterPeer(index, peer, None, None, networks)


def _compile_rules(rules: Sequence[ClusterRule]) -> tuple[CompiledClusterRule, ...]:
    return tuple(
        CompiledClusterRule(
            i,
            rule.name,
            rule.action,
            tuple(_compile_peer(j, peer) for j, peer in enumerate(rule.peers)),
            tuple(CompiledClusterPort(j, port) for j, port in enumerate(rule.ports)),
        )
        for i, rule in enumerate(rules)
    )


def first_match(
    policies: Sequence[CompiledClusterPolicy],
    direction: Direction,
    info: PeerInfo,
    port: PortProtocol,
    named_ports: Labels | None,
) -> ClusterRuleRef | str | None:
    """The rule of one tier that decides: the first matching rule of the first policy (in
    `CompiledClusterPolicy.order`) that has one; None if no rule matches; a reason when it is not known -- a rule
    reached whose peer's match is unknown, or policies of equal priority whose first matching rules disagree on the
    action (the spec leaves the choice to the implementation). ``policies``: those of the tier that select the judged
    pod, in order."""
    found: ClusterRuleRef | None = None
    for cp in policies:
        if found is not None and cp.policy.priority != found.priority:
            break
        got = cp.first_match(direction, info, port, named_ports)
        if got is None:
            continue
        if isinstance(got, str):
            return got
        if found is None:
            found = got
        elif got.action is not found.action:
            return (f"undecidable: {found.kind.value} {found.policy} and {got.kind.value} {got.policy} have the same "
                    f"priority {found.priority} and both match, one with {found.action_word} "
                    f"({direction.value.lower()}[{found.rule}]), the other with {got.action_word} "
                    f"({direction.value.lower()}[{got.rule}]); which applies is up to the implementation")
    return found
