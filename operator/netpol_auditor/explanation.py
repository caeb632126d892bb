"""Verdicts in words: per direction, the tier that decides and its rule.

``Ingress: Admin Deny `block-ns` priority 10 (AdminNetworkPolicy), ingress[2] "deny-db" (from[0], any port): denied``,
``Ingress: Admin Pass [...] -> NetworkPolicy: [...]``, ``[...] not isolated [...]; Baseline Deny [...]: denied``, or
the NetworkPolicy text alone where no cluster policy rule matched (so NetworkPolicy-only explanations read as they
always have). The wording is this module's one reason to change; the semantics are `netpol_auditor.engine`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cluster_policy import RuleAction, Tier
from .model import Direction, Endpoint

if TYPE_CHECKING:  # engine imports this module
    from .engine import DirectionVerdict, RuleRef, Verdict
    from .tiers import ClusterRuleRef

__all__ = ["explain_direction", "explain_verdict"]


def explain_verdict(verdict: Verdict) -> str:
    """The verdict, then one line per direction (or why the pair is not judged)."""
    head = f"{verdict.source} -> {verdict.destination} on {verdict.port}"
    if verdict.out_of_model:
        lines = [f"{head}: UNKNOWN (out of model: the manifests cannot tell)."]
    elif verdict.allowed is None:
        return f"{head}: not judged: {verdict.reason}."
    else:
        lines = [f"{head}: {'ALLOWED' if verdict.allowed else 'DENIED'}."]
    if verdict.egress is not None:
        lines.append(explain_direction(verdict.egress, verdict.source, verdict.destination))
    else:
        lines.append(f"Egress: {verdict.source} is outside the cluster; no policy applies to its egress.")
    if verdict.ingress is not None:
        lines.append(explain_direction(verdict.ingress, verdict.destination, verdict.source))
    else:
        lines.append(f"Ingress: {verdict.destination} is outside the cluster; no policy applies to its ingress.")
    return "\n".join(lines)


def explain_direction(dv: DirectionVerdict, subject: Endpoint, other: Endpoint) -> str:
    """One line per direction, naming the tier that decides and its rule: ``Ingress: Admin Deny `block-ns` priority
    10 (AdminNetworkPolicy), ingress[2] "deny-db" (from[0], any port): denied [...]``, ``Ingress: Admin Pass [...] ->
    NetworkPolicy: [...]``, or the NetworkPolicy text alone when no cluster policy rule matched."""
    name = dv.direction.value
    if dv.unknown:
        return f"{name}: {dv.unknown}."
    destination = subject if dv.direction is Direction.INGRESS else other
    admin = None if dv.admin is None else _cluster_rule_text(dv.admin, destination)
    baseline = None if dv.baseline is None else _cluster_rule_text(dv.baseline, destination)
    tier = dv.tier
    if tier == Tier.ADMIN.value:
        assert dv.admin is not None
        if dv.admin.action is RuleAction.DENY:
            effect = "denied; no NetworkPolicy or Baseline rule is consulted"
        else:
            effect = "allowed, whatever NetworkPolicies or Baseline rules say"
        return f"{name}: {admin}: {effect}."
    passed = f"{admin} -> " if admin is not None else ""
    if tier == "NetworkPolicy":
        tier_name = "NetworkPolicy: " if passed else ""
        return f"{name}: {passed}{tier_name}{explain_network_policies(dv, subject, other)}"
    unisolated = (
        f"{subject} is not isolated for {name.lower()} "
        f"(no NetworkPolicy selecting it lists {name} in policyTypes)"
    )
    if tier == Tier.BASELINE.value:
        assert dv.baseline is not None
        effect = "allowed" if dv.baseline.action is RuleAction.ACCEPT else "denied"
        return f"{name}: {passed}{unisolated}; {baseline}: {effect}."
    if dv.baseline is not None:  # a Baseline Pass: on to the default
        passed += f"{unisolated}; {baseline} -> "
        return f"{name}: {passed}no tier decides, so it is allowed."
    if passed:
        return f"{name}: {passed}{unisolated} and no Baseline rule matches, so it is allowed."
    return f"{name}: {unisolated}, so it is allowed."


def explain_network_policies(dv: DirectionVerdict, subject: Endpoint, other: Endpoint) -> str:
    name = dv.direction.value
    isolating = ", ".join(f"{ns}/{n}" for ns, n in dv.isolating_policies)
    if dv.admitted_by:
        destination = subject if dv.direction is Direction.INGRESS else other
        rules = "; ".join(_rule_text(r, destination) for r in dv.admitted_by)
        return f"{subject} is isolated for {name.lower()} by {isolating}; allowed by {rules}."
    peer_word = "from" if dv.direction is Direction.INGRESS else "to"
    return (
        f"{subject} is isolated for {name.lower()} by {isolating}; "
        f"no {name.lower()} rule of these policies allows traffic {peer_word} {other} on this port, so it is denied."
    )


def _rule_text(rule: RuleRef, destination: Endpoint) -> str:
    """The rule, and the number its named port resolved to (named ports resolve on the destination's containers)."""
    if rule.named_port is None:
        return str(rule)
    name, number = rule.named_port
    return f'{rule}, port "{name}" resolved to {number} on {destination}'


def _cluster_rule_text(rule: ClusterRuleRef, destination: Endpoint) -> str:
    if rule.named_port is None:
        return str(rule)
    name, number = rule.named_port
    return f'{rule}, port "{name}" resolved to {number} on {destination}'
