"""NetworkPolicy semantics: compiled policies, per-direction judgement, verdicts and their explanations.

The rules (networking.k8s.io/v1, https://kubernetes.io/docs/concepts/services-networking/network-policies/):
- a pod is isolated for a direction iff some policy in its namespace selects it and lists that direction in
  ``policyTypes``; an unisolated direction allows everything;
- an isolated direction allows a connection iff some rule of some isolating policy admits it (policies are a union);
- pod -> pod needs the source's egress *and* the destination's ingress; a pod never blocks itself;
- peers: podSelector alone = pods of the policy's namespace; namespaceSelector alone = every pod of the matching
  namespaces; both = AND; separate peers = OR; no peers = everything, external addresses included;
- ipBlock matches any address in ``cidr`` outside its ``except`` ranges, pod IPs included
  (test/e2e/network/netpol "should allow egress access to server in CIDR block");
- ports: none = every port of every protocol; a named port is resolved on the destination pod's container ports
  (name and protocol must match); an external destination never matches a named port.

Cluster policies of policy.networking.k8s.io (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)
add tiers around this, per direction (`judge_tiers`; the rules of one tier in `netpol_auditor.tiers`): the Admin
tier first (Accept/Allow or Deny decide, Pass goes on), then the NetworkPolicies above if they isolate the pod, then
the Baseline tier, then allowed. They imply no isolation.

Structure follows cyclonus pkg/matcher: policies are compiled into peer / port / target matchers once; judging is
then a walk over small immutable objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .cluster_policy import ClusterPolicy, RuleAction, Tier
from .explanation import explain_verdict
from .model import (
    Direction,
    Endpoint,
    Labels,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    Pod,
    PodRef,
    PortProtocol,
)
from .selectors import IPBlockMatcher, SelectorMatcher, compile_ip_block, compile_selector, parse_ip

if TYPE_CHECKING:  # the cluster tiers are imported where cluster policies are judged: plain input never pays
    from .tiers import ClusterRuleRef, CompiledClusterPolicy

__all__ = [
    "CompiledPeer",
    "CompiledPolicy",
    "CompiledPort",
    "CompiledRule",
    "DirectionVerdict",
    "PeerInfo",
    "PolicyKey",
    "RuleRef",
    "Snapshot",
    "Verdict",
    "compile_policy",
    "external_peer",
    "judge_direction",
    "judge_tiers",
    "make_verdict",
    "not_judged",
    "pod_peer",
    "unjudged_pod_reason",
]

PolicyKey = tuple[str, str]  # (namespace, name)


# --------------------------------------------------------------------------------------------------------------
# What a rule sees of the other side of a connection.


@dataclass(frozen=True)
class PeerInfo:
    """The far side of a connection as a rule sees it: a pod (namespace set) or an external address."""

    namespace: str | None
    namespace_labels: Labels
    labels: Labels
    ips: tuple[str, ...]
    named_ports: Labels | None  # "name/PROTO" -> "number"; None for external addresses


_NO_LABELS = Labels()


def pod_peer(pod: Pod, namespace_labels: Labels) -> PeerInfo:
    return PeerInfo(pod.namespace, namespace_labels, pod.labels, pod.pod_ips, pod.named_ports())


def external_peer(ip: str) -> PeerInfo:
    return PeerInfo(None, _NO_LABELS, _NO_LABELS, (ip,), None)


# --------------------------------------------------------------------------------------------------------------
# Compiled matchers.


@dataclass(frozen=True)
class CompiledPeer:
    index: int
    peer: NetworkPolicyPeer
    policy_namespace: str
    namespace: SelectorMatcher | None  # None: the policy's own namespace (unless ip_block)
    pods: SelectorMatcher | None  # None: every pod
    ip_block: IPBlockMatcher | None

    def matches(self, info: PeerInfo) -> bool:
        if self.ip_block is not None:
            return self.ip_block.matches_any(info.ips)
        if info.namespace is None:
            return False  # selectors never select addresses outside the cluster
        if self.namespace is None:
            if info.namespace != self.policy_namespace:
                return False
        elif not self.namespace.matches(info.namespace_labels):
            return False
        return self.pods is None or self.pods.matches(info.labels)

    def describe(self) -> str:
        if self.ip_block is not None:
            return f"ipBlock {self.ip_block.block}"
        parts = []
        if self.namespace is not None:
            parts.append(f"namespaceSelector {self.namespace.selector}")
        if self.pods is not None:
            where = "" if self.namespace is not None else f" in namespace {self.policy_namespace}"
            parts.append(f"podSelector {self.pods.selector}{where}")
        return " and ".join(parts)


@dataclass(frozen=True)
class CompiledPort:
    index: int
    port: NetworkPolicyPort

    def matches(self, target: PortProtocol, named_ports: Labels | None) -> bool:
        p = self.port
        if p.protocol != target.protocol:
            return False
        if p.port is None:
            return True
        if isinstance(p.port, str):
            if named_ports is None:
                return False
            return named_ports.get(f"{p.port}/{p.protocol.value}") == str(target.port)
        if p.end_port is not None:
            return p.port <= target.port <= p.end_port
        return p.port == target.port


@dataclass(frozen=True)
class CompiledRule:
    index: int
    peers: tuple[CompiledPeer, ...]  # empty: every peer
    ports: tuple[CompiledPort, ...]  # empty: every port

    def takes_port(self, port: PortProtocol, named_ports: Labels | None) -> bool:
        """Whether the rule's ports take ``port`` (a destination's ``named_ports`` resolve its named ones)."""
        return not self.ports or any(cp.matches(port, named_ports) for cp in self.ports)

    def admits(self, info: PeerInfo, port: PortProtocol, named_ports: Labels | None) -> tuple[int | None, int | None]:
        """(peer index, port index) of the first match, or (-1, -1) if the rule does not admit. None = 'all'."""
        port_index: int | None = None
        if self.ports:
            for cp in self.ports:
                if cp.matches(port, named_ports):
                    port_index = cp.index
                    break
            else:
                return (-1, -1)
        peer_index: int | None = None
        if self.peers:
            for peer in self.peers:
                if peer.matches(info):
                    peer_index = peer.index
                    break
            else:
                return (-1, -1)
        return (peer_index, port_index)


@dataclass(frozen=True)
class CompiledPolicy:
    policy: NetworkPolicy
    target: SelectorMatcher
    ingress: tuple[CompiledRule, ...]
    egress: tuple[CompiledRule, ...]

    @property
    def key(self) -> PolicyKey:
        return self.policy.key

    def rules(self, direction: Direction) -> tuple[CompiledRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def isolates(self, direction: Direction) -> bool:
        return direction in self.policy.policy_types

    def selects(self, pod_labels: Mapping[str, str]) -> bool:
        return self.target.matches(pod_labels)


def _compile_rules(policy: NetworkPolicy, direction: Direction) -> tuple[CompiledRule, ...]:
    if direction not in policy.policy_types:
        return ()  # sections of types not listed in policyTypes are ignored
    out = []
    for ri, rule in enumerate(policy.rules(direction)):
        peers = tuple(
            CompiledPeer(
                pi,
                peer,
                policy.namespace,
                None if peer.namespace_selector is None else compile_selector(peer.namespace_selector),
                None if peer.pod_selector is None else compile_selector(peer.pod_selector),
                None if peer.ip_block is None else compile_ip_block(peer.ip_block),
            )
            for pi, peer in enumerate(rule.peers)
        )
        # A peer with namespaceSelector and an empty podSelector is "all pods of those namespaces": same as None.
        peers = tuple(
            CompiledPeer(p.index, p.peer, p.policy_namespace, p.namespace, None, p.ip_block)
            if p.namespace is not None and p.pods is not None and p.pods.matches_all
            else p
            for p in peers
        )
        ports = tuple(CompiledPort(i, port) for i, port in enumerate(rule.ports))
        out.append(CompiledRule(ri, peers, ports))
    return tuple(out)


def compile_policy(policy: NetworkPolicy) -> CompiledPolicy:
    return CompiledPolicy(
        policy,
        compile_selector(policy.pod_selector),
        _compile_rules(policy, Direction.INGRESS),
        _compile_rules(policy, Direction.EGRESS),
    )


# --------------------------------------------------------------------------------------------------------------
# Verdicts.


@dataclass(frozen=True, order=True)
class RuleRef:
    """A rule that admits a connection: policy, direction, rule index, peer index and port index.

    ``peer`` None means the rule has no ``from``/``to`` (every peer); ``port`` None means no ``ports`` (every port).
    ``named_port``: when the admitting port entry is a named port, its name and the number it resolved to on the
    destination (not part of the identity: it follows from the rule and the destination).
    """

    namespace: str
    policy: str
    direction: Direction
    rule: int
    peer: int | None
    port: int | None
    named_port: tuple[str, int] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        field_name = "from" if self.direction is Direction.INGRESS else "to"
        peer = f"{field_name}[{self.peer}]" if self.peer is not None else f"any {field_name}"
        port = f"ports[{self.port}]" if self.port is not None else "any port"
        return f"{self.namespace}/{self.policy} {self.direction.value.lower()}[{self.rule}] ({peer}, {port})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "namespace": self.namespace,
            "policy": self.policy,
            "direction": self.direction.value,
            "rule": self.rule,
            "peer": self.peer,
            "port": self.port,
        }
        if self.named_port is not None:
            out["namedPort"] = {"name": self.named_port[0], "resolvedTo": self.named_port[1]}
        return out


@dataclass(frozen=True)
class DirectionVerdict:
    """The result for one direction (the destination's ingress or the source's egress).

    ``isolated`` / ``isolating_policies`` / ``admitted_by``: the NetworkPolicy tier. ``admin``: the Admin tier rule
    that matched (a Pass included), ``baseline``: the Baseline tier rule that decided, when that tier was reached;
    ``unknown``: why the outcome is not known (a rule whose match is not known, equal priorities that disagree).
    """

    direction: Direction
    isolated: bool
    isolating_policies: tuple[PolicyKey, ...] = ()
    admitted_by: tuple[RuleRef, ...] = ()  # the first admitting rule of every admitting policy
    admin: ClusterRuleRef | None = None
    baseline: ClusterRuleRef | None = None
    unknown: str = ""

    @property
    def tier(self) -> str:
        """The tier that decides: ``Admin``, ``NetworkPolicy``, ``Baseline``, ``default`` (nothing did: allowed) or
        ``unknown``."""
        if self.unknown:
            return "unknown"
        if self.admin is not None and self.admin.decides:
            return Tier.ADMIN.value
        if self.isolated:
            return "NetworkPolicy"
        if self.baseline is not None and self.baseline.decides:
            return Tier.BASELINE.value
        return "default"

    @property
    def outcome(self) -> bool | None:
        """Allowed (True), denied (False) or not known (None)."""
        tier = self.tier
        if tier == "unknown":
            return None
        if tier == Tier.ADMIN.value:
            assert self.admin is not None
            return self.admin.action is RuleAction.ACCEPT
        if tier == "NetworkPolicy":
            return bool(self.admitted_by)
        if tier == Tier.BASELINE.value:
            assert self.baseline is not None
            return self.baseline.action is RuleAction.ACCEPT
        return True

    @property
    def allowed(self) -> bool:
        return self.outcome is True

    @property
    def rule(self) -> RuleRef | None:
        return self.admitted_by[0] if self.admitted_by else None

    def deciding_policies(self) -> tuple[PolicyKey, ...]:
        """The policies whose rules decide: the cluster policy of the deciding Admin or Baseline rule, or the
        admitting (else the isolating) NetworkPolicies. Cluster policies are keyed (kind, name)."""
        tier = self.tier
        if tier == Tier.ADMIN.value:
            assert self.admin is not None
            return (self.admin.key,)
        if tier == Tier.BASELINE.value:
            assert self.baseline is not None
            return (self.baseline.key,)
        if tier != "NetworkPolicy":
            return ()
        if self.admitted_by:
            return tuple(dict.fromkeys((r.namespace, r.policy) for r in self.admitted_by))
        return self.isolating_policies

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "allowed": self.allowed,
            "isolated": self.isolated,
            "isolatingPolicies": [f"{ns}/{name}" for ns, name in self.isolating_policies],
            "admittedBy": [r.to_dict() for r in self.admitted_by],
        }
        # Only with cluster policies in play: the output of NetworkPolicy-only input stays as it was.
        if self.admin is not None or self.baseline is not None or self.unknown:
            out["allowed"] = self.outcome
            out["tier"] = self.tier
            out["admin"] = None if self.admin is None else self.admin.to_dict()
            out["baseline"] = None if self.baseline is None else self.baseline.to_dict()
            if self.unknown:
                out["unknown"] = self.unknown
        return out


def judge_direction(
    direction: Direction,
    policies: Sequence[CompiledPolicy],
    peer: PeerInfo,
    port: PortProtocol,
    named_ports: Labels | None,
) -> DirectionVerdict:
    """Judge one direction. ``policies``: those selecting the judged pod and isolating it for ``direction``,
    sorted by name; ``peer``: the other side; ``named_ports``: the destination's named ports (None = external)."""
    if not policies:
        return DirectionVerdict(direction, False)
    admitted: list[RuleRef] = []
    for cp in policies:
        for rule in cp.rules(direction):
            peer_index, port_index = rule.admits(peer, port, named_ports)
            if peer_index != -1:
                entry = rule.ports[port_index].port.port if port_index is not None else None
                named = (entry, port.port) if isinstance(entry, str) else None
                admitted.append(
                    RuleRef(cp.policy.namespace, cp.policy.name, direction, rule.index, peer_index, port_index, named)
                )
                break
    return DirectionVerdict(direction, True, tuple(cp.key for cp in policies), tuple(admitted))


def judge_tiers(
    direction: Direction,
    policies: Sequence[CompiledPolicy],
    admin: Sequence[CompiledClusterPolicy],
    baseline: Sequence[CompiledClusterPolicy],
    peer: PeerInfo,
    port: PortProtocol,
    named_ports: Labels | None,
) -> DirectionVerdict:
    """Judge one direction through the tiers: ``admin`` and ``baseline``, the cluster policies of each tier whose
    subject selects the judged pod and that have rules for ``direction``, in precedence order
    (`CompiledClusterPolicy.order`); ``policies`` as for `judge_direction`.

    ``ClusterNetworkPolicySpec.Tier`` (apis/v1alpha2): "If Admin tier has made a final decision (Accept or Deny) on a
    connection, then no further evaluation is done. [...] v1.NetworkPolicy always makes a final decision for selected
    pods. Further evaluation only happens for Pods not selected by a v1.NetworkPolicy. [...] If a given connection
    wasn't allowed or denied by any of the tiers, the default kubernetes policy is applied"; v1alpha1's
    ``AdminNetworkPolicyRuleActionPass``: "be allowed or denied based on NetworkPolicy and
    BaselineAdminNetworkPolicy rules". An egress Accept still leaves the destination's ingress to be judged
    (``ClusterNetworkPolicyEgressRule.Action``): the two directions are judged apart, as for NetworkPolicy.
    """
    verdict = judge_direction(direction, policies, peer, port, named_ports)
    if not admin and not baseline:
        return verdict
    from .tiers import first_match

    decided = first_match(admin, direction, peer, port, named_ports) if admin else None
    if isinstance(decided, str):
        return replace(verdict, unknown=decided)
    if decided is not None:
        verdict = replace(verdict, admin=decided)
        if decided.decides:
            return verdict
    if verdict.isolated or not baseline:
        return verdict
    fallback = first_match(baseline, direction, peer, port, named_ports)
    if isinstance(fallback, str):
        return replace(verdict, unknown=fallback)
    return verdict if fallback is None else replace(verdict, baseline=fallback)


@dataclass(frozen=True)
class Verdict:
    """Whether ``source`` may open a connection to ``destination`` on ``port``, and why.

    ``allowed`` is None when the pair is not judged (self pair, hostNetwork pod, not an endpoint, unknown pod) or is
    judged but out of model (`out_of_model`: a cluster policy rule whose match the manifests cannot tell); ``reason``
    then says why. ``egress`` is None for an external source, ``ingress`` None for an external
    destination (the policies of the cluster say nothing about the outside).
    """

    source: Endpoint
    destination: Endpoint
    port: PortProtocol
    allowed: bool | None
    egress: DirectionVerdict | None = None
    ingress: DirectionVerdict | None = None
    reason: str = ""

    def deciding_policies(self) -> tuple[PolicyKey, ...]:
        """Policies that decide the verdict: the admitting ones if allowed, the isolating ones that deny if not."""
        if self.allowed is None:
            return ()
        parts: list[PolicyKey] = []
        for dv in (self.egress, self.ingress):
            if dv is None:
                continue
            if self.allowed or not dv.allowed:
                parts.extend(dv.deciding_policies())
        return tuple(dict.fromkeys(parts))

    @property
    def out_of_model(self) -> bool:
        """Judged, but the outcome is not known from the manifests (``reason`` says which rule; ``allowed`` None)."""
        return self.allowed is None and (self.egress is not None or self.ingress is not None)

    def explain(self) -> str:
        """In words: the verdict, then per direction the deciding tier and rule (`netpol_auditor.explanation`)."""
        return explain_verdict(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": str(self.source),
            "to": str(self.destination),
            "port": self.port.port,
            "protocol": self.port.protocol.value,
            "allowed": self.allowed,
            "reason": self.reason or None,
            "decidingPolicies": [f"{ns}/{name}" for ns, name in self.deciding_policies()],
            "egress": None if self.egress is None else self.egress.to_dict(),
            "ingress": None if self.ingress is None else self.ingress.to_dict(),
        }


def unjudged_pod_reason(endpoint: PodRef, pod: Pod | None) -> str | None:
    """Why traffic of this pod is not judged (unknown, host network, not a running pod with an IP), or None."""
    if pod is None:
        return f"unknown pod {endpoint}"
    if pod.host_network:
        return f"{endpoint} uses the host network (node traffic, not governed by NetworkPolicy)"
    if not pod.is_endpoint:
        return f"{endpoint} is not a running pod with an IP (phase {pod.phase})"
    return None


def not_judged(source: Endpoint, destination: Endpoint, port: PortProtocol, reason: str) -> Verdict:
    return Verdict(source, destination, port, None, reason=reason)


def make_verdict(
    source: Endpoint,
    destination: Endpoint,
    port: PortProtocol,
    egress: DirectionVerdict | None,
    ingress: DirectionVerdict | None,
) -> Verdict:
    outcomes = [dv.outcome for dv in (egress, ingress) if dv is not None]
    if False in outcomes:
        return Verdict(source, destination, port, False, egress, ingress)
    if None in outcomes:
        reason = "; ".join(dv.unknown for dv in (egress, ingress) if dv is not None and dv.unknown)
        return Verdict(source, destination, port, None, egress, ingress, reason)
    return Verdict(source, destination, port, True, egress, ingress)


# --------------------------------------------------------------------------------------------------------------
# A straightforward, non-incremental evaluator: the reference the index is tested against.


@dataclass
class Snapshot:
    """A point-in-time cluster state judged pod by pod, with no caching: simple and obviously right."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[PodRef, Pod] = field(default_factory=dict)
    policies: dict[PolicyKey, CompiledPolicy] = field(default_factory=dict)
    cluster_policies: dict[tuple[str, str], CompiledClusterPolicy] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objs: Iterable[Namespace | Pod | NetworkPolicy | ClusterPolicy]) -> Snapshot:
        snap = cls()
        for obj in objs:
            if isinstance(obj, Namespace):
                snap.namespaces[obj.name] = obj
            elif isinstance(obj, Pod):
                snap.pods[obj.ref] = obj
            elif isinstance(obj, ClusterPolicy):
                from .tiers import compile_cluster_policy

                snap.cluster_policies[obj.key] = compile_cluster_policy(obj)
            else:
                snap.policies[obj.key] = compile_policy(obj)
        return snap

    def namespace_labels(self, name: str) -> Labels:
        ns = self.namespaces.get(name)
        return ns.labels if ns is not None else Namespace(name).labels

    def selecting(self, pod: Pod, direction: Direction) -> list[CompiledPolicy]:
        return sorted(
            (
                cp
                for cp in self.policies.values()
                if cp.policy.namespace == pod.namespace and cp.isolates(direction) and cp.selects(pod.labels)
            ),
            key=lambda cp: cp.policy.name,
        )

    def cluster_selecting(self, pod: Pod, direction: Direction, tier: Tier) -> list[CompiledClusterPolicy]:
        """The cluster policies of ``tier`` whose subject selects ``pod`` and that have ``direction`` rules, in
        precedence order."""
        labels = self.namespace_labels(pod.namespace)
        return sorted(
            (
                cp
                for cp in self.cluster_policies.values()
                if cp.policy.tier is tier and cp.rules(direction) and cp.selects(labels, pod.labels)
            ),
            key=lambda cp: cp.order,
        )

    def _judge(self, direction: Direction, pod: Pod, peer: PeerInfo, port: PortProtocol,
               named_ports: Labels | None) -> DirectionVerdict:
        return judge_tiers(
            direction,
            self.selecting(pod, direction),
            self.cluster_selecting(pod, direction, Tier.ADMIN),
            self.cluster_selecting(pod, direction, Tier.BASELINE),
            peer,
            port,
            named_ports,
        )

    def _pod_or_reason(self, endpoint: PodRef) -> Pod | str:
        pod = self.pods.get(endpoint)
        reason = unjudged_pod_reason(endpoint, pod)
        if reason is not None:
            return reason
        assert pod is not None  # unjudged_pod_reason names a missing pod
        return pod

    def verdict(self, src: Endpoint, dst: Endpoint, port: PortProtocol) -> Verdict:
        if src == dst:
            return not_judged(src, dst, port, "a pod never blocks traffic to itself")
        src_pod: Pod | None = None
        dst_pod: Pod | None = None
        for endpoint, is_src in ((src, True), (dst, False)):
            if isinstance(endpoint, PodRef):
                got = self._pod_or_reason(endpoint)
                if isinstance(got, str):
                    return not_judged(src, dst, port, got)
                if is_src:
                    src_pod = got
                else:
                    dst_pod = got
            elif parse_ip(endpoint) is None:
                return not_judged(src, dst, port, f"{endpoint!r} is neither a pod nor an IP address")
        if src_pod is None and dst_pod is None:
            return not_judged(src, dst, port, "neither side is a pod of the cluster")
        src_info = pod_peer(src_pod, self.namespace_labels(src_pod.namespace)) if src_pod else external_peer(str(src))
        dst_info = pod_peer(dst_pod, self.namespace_labels(dst_pod.namespace)) if dst_pod else external_peer(str(dst))
        egress = self._judge(Direction.EGRESS, src_pod, dst_info, port, dst_info.named_ports) if src_pod else None
        ingress = self._judge(Direction.INGRESS, dst_pod, src_info, port, dst_info.named_ports) if dst_pod else None
        return make_verdict(src, dst, port, egress, ingress)

    def endpoints(self) -> list[PodRef]:
        return sorted(ref for ref, pod in self.pods.items() if pod.is_endpoint)
