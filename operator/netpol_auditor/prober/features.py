"""Which CNI features (per node and direction) a probed path exercises, and which a disagreement points at.

Ingress rules are enforced on the destination's node, egress rules on the source's. The features: the two
directions themselves, named ports, ``endPort`` ranges, ipBlock ``except``, the UDP and SCTP protocols, and one per
cluster policy API kind (`CLUSTER_FEATURES`).

A cluster policy feature is named for the API kind, not the tier: CNIs implement the kinds one by one
(kube-network-policies v0.8.0 enforces AdminNetworkPolicy and BaselineAdminNetworkPolicy v1alpha1 but not
ClusterNetworkPolicy v1alpha2, whose Admin and Baseline tiers it would share with them), so a per-tier gauge would
mix what works with what does not. A direction whose deciding rule is a cluster policy rule exercises that kind's
feature instead of the NetworkPolicy ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from netpol_auditor.cluster_policy import ClusterPolicyKind, RuleAction, Tier
from netpol_auditor.engine import DirectionVerdict, PolicyKey, Verdict
from netpol_auditor.model import Direction, NetworkPolicy, NetworkPolicyRule, PortProtocol, Protocol
from netpol_auditor.selectors import compile_ip_block
from netpol_auditor.tiers import ClusterRuleRef

__all__ = ["CLUSTER_FEATURES", "FEATURES", "deciding_cluster_rule", "excepted", "exercised_features"]

#: the feature a path exercises when a rule of this kind decides one of its directions
CLUSTER_FEATURES: dict[ClusterPolicyKind, str] = {
    ClusterPolicyKind.ADMIN_NETWORK_POLICY: "admin_network_policy",
    ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY: "baseline_admin_network_policy",
    ClusterPolicyKind.CLUSTER_NETWORK_POLICY: "cluster_network_policy",
}
FEATURES = ("ingress", "egress", "named_ports", "end_port", "sctp", "udp", "ipblock_except",
            *CLUSTER_FEATURES.values())


def deciding_cluster_rule(dv: DirectionVerdict) -> ClusterRuleRef | None:
    """The cluster policy rule that decides the direction (an Admin Accept/Allow or Deny, or a Baseline one where
    no NetworkPolicy isolates), or None when the NetworkPolicies or the default decide."""
    if dv.tier == Tier.ADMIN.value:
        return dv.admin
    if dv.tier == Tier.BASELINE.value:
        return dv.baseline
    return None


def _telling_rule(dv: DirectionVerdict, rule: ClusterRuleRef) -> bool:
    """Whether agreeing with this direction's outcome shows the cluster rule enforced: a CNI that ignores it would
    have decided otherwise. An Admin rule over NetworkPolicies that isolate and disagree (a Deny over an allow, an
    Allow over a deny); a Baseline Deny (without it the default allows). Not an Admin rule over a pod no
    NetworkPolicy isolates: under it the Baseline tier is not evaluated, so what a CNI ignoring it would do is not
    known here."""
    if rule.tier is Tier.ADMIN:
        return dv.isolated and bool(dv.admitted_by) != (rule.action is RuleAction.ACCEPT)
    return rule.action is RuleAction.DENY


def _port_spec(policies: Mapping[PolicyKey, NetworkPolicy], dv: DirectionVerdict, port: int, *,
               confirming: bool) -> set[str]:
    """Special features of the admitting rules of one direction: named port, endPort, ipBlock with except.

    What a match *confirms* is narrower than what a failure may point at: the first port of a range is admitted
    by a CNI that ignores ``endPort`` as well (the documented fallback is "only the single port field"), and an
    address outside an ``except`` is admitted by one that ignores ``except``; neither proves the feature works."""
    out: set[str] = set()
    for ref in dv.admitted_by:
        policy = policies.get((ref.namespace, ref.policy))
        if policy is None:
            continue
        rule = policy.rules(ref.direction)[ref.rule]
        if ref.port is not None:
            spec = rule.ports[ref.port]
            if isinstance(spec.port, str):
                out.add("named_ports")
            if spec.end_port is not None and (not confirming or port != spec.port):
                out.add("end_port")
        if ref.peer is not None and not confirming:
            block = rule.peers[ref.peer].ip_block
            if block is not None and block.except_:
                out.add("ipblock_except")
    return out


def _names_port(rule: NetworkPolicyRule, port: PortProtocol, *, named: bool) -> bool:
    """Whether the rule's ports take ``port`` (a named port counts as ``named``: resolving it needs the pod)."""
    if not rule.ports:
        return True
    for spec in rule.ports:
        if spec.protocol is not port.protocol:
            continue
        if spec.port is None or (isinstance(spec.port, str) and named):
            return True
        if isinstance(spec.port, int) and spec.port <= port.port <= (spec.end_port or spec.port):
            return True
    return False


def excepted(policies: Mapping[PolicyKey, NetworkPolicy], dv: DirectionVerdict, other_ips: Iterable[str],
              port: PortProtocol, *, sure: bool = False) -> bool:
    """Whether an ipBlock ``except`` of the isolating policies is what denies: the other side's address is inside
    the cidr of a rule that takes this port, but in one of its excepted ranges. ``sure``: only where the rule
    certainly takes the port (a named one is left out)."""
    ips = tuple(other_ips)
    for key in dv.isolating_policies:
        policy = policies.get(key)
        if policy is None:
            continue
        for rule in policy.rules(dv.direction):
            if not _names_port(rule, port, named=not sure):
                continue
            for peer in rule.peers:
                block = peer.ip_block
                if block is None or not block.except_:
                    continue
                if compile_ip_block(type(block)(block.cidr)).matches_any(ips) and not compile_ip_block(
                    block
                ).matches_any(ips):
                    return True
    return False


def exercised_features(
    verdict: Verdict,
    policies: Mapping[PolicyKey, NetworkPolicy],
    src_node: str,
    dst_node: str,
    src_ips: Iterable[str] = (),
    dst_ips: Iterable[str] = (),
    *,
    failing_only: bool = False,
    proven: bool = False,
) -> frozenset[tuple[str, str, str]]:
    """(feature, node, direction) triples a probe of this path exercises. Ingress rules are enforced on the
    destination's node, egress rules on the source's. With ``failing_only``, only what a contradiction of this
    verdict points at: the denying directions when it predicts denied, the admitting rules' special features when
    it predicts allowed. UDP and SCTP paths also exercise their protocol on each isolated side. With ``proven``
    (for a path whose observation *agreed*): what a contradiction would have pointed at, less what the agreement
    cannot prove (the first port of a range, an address outside an ``except``, a cluster rule that agrees with what
    the tiers after it would decide). A direction a cluster policy rule decides exercises that kind's feature alone
    (`CLUSTER_FEATURES`)."""
    failing_only = failing_only or proven
    out: set[tuple[str, str, str]] = set()
    if proven and verdict.allowed is False and all(dv is not None and not dv.allowed
                                                   for dv in (verdict.egress, verdict.ingress)):
        return frozenset()  # denied on both sides: the agreement shows one of them works, not which
    sides = ((verdict.egress, src_node, tuple(dst_ips)), (verdict.ingress, dst_node, tuple(src_ips)))
    proto = {Protocol.UDP: "udp", Protocol.SCTP: "sctp"}.get(verdict.port.protocol)
    for dv, node, other_ips in sides:
        if dv is None:
            continue
        base = "ingress" if dv.direction is Direction.INGRESS else "egress"
        rule = deciding_cluster_rule(dv)
        if rule is not None:
            if (failing_only and not verdict.allowed and dv.allowed) or (proven and not _telling_rule(dv, rule)):
                continue
            out.add((CLUSTER_FEATURES[rule.kind], node, base))
            continue
        if not dv.isolated:
            continue
        special = _port_spec(policies, dv, verdict.port.port, confirming=proven or not failing_only)
        if not dv.allowed and excepted(policies, dv, other_ips, verdict.port, sure=proven):
            special.add("ipblock_except")
        if failing_only:
            if verdict.allowed:
                picked = special or {base}
            elif dv.allowed:
                continue  # this side admits; the other one denies
            else:
                picked = {base} | (special & {"ipblock_except"})
        else:
            picked = {base} | special
        if proto:
            picked.add(proto)
        out.update((f, node, base) for f in picked)
    return frozenset(out)
