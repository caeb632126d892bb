"""Named ports in policies that no pod of the input declares: such a port entry admits nothing.

A named port is resolved on the destination pod's containers, by name and protocol (the engine does the same): a
name no candidate destination declares is almost always a typo or a port renamed on one side only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model import Direction, NetworkPolicy, Pod, Protocol
from .selectors import compile_selector

__all__ = ["UnresolvedNamedPort", "unresolved_named_ports"]


@dataclass(frozen=True)
class UnresolvedNamedPort:
    policy: NetworkPolicy
    path: str  # spec.ingress[0].ports[1].port
    name: str
    protocol: Protocol
    among: str  # the pods looked at, in words

    def __str__(self) -> str:
        return (
            f'named port "{self.name}" ({self.protocol.value}) is declared by no container of {self.among}: '
            "this port entry admits nothing"
        )


def unresolved_named_ports(policies: Iterable[NetworkPolicy], pods: Iterable[Pod]) -> list[UnresolvedNamedPort]:
    """Named ports no candidate destination declares, per policy rule port, in policy order.

    Candidates: for an ingress rule, the pods the policy selects (the destination is always one of them); for an
    egress rule, every pod of the input: the destination is chosen by the rule's peers, possibly in any namespace,
    and an over-approximation can only miss a warning, never give a wrong one. Without candidates (a policy that
    selects no pod, an input without pods) nothing is said: there is nothing to resolve the name against.
    """
    all_pods = list(pods)
    everywhere = {(p.name, p.protocol) for pod in all_pods for p in pod.container_ports if p.name}
    by_namespace: dict[str, list[Pod]] = {}
    declaring: dict[tuple[str, str, Protocol], list[Pod]] = {}  # (namespace, name, protocol) -> pods declaring it
    for pod in all_pods:
        by_namespace.setdefault(pod.namespace, []).append(pod)
        for p in pod.container_ports:
            if p.name:
                declaring.setdefault((pod.namespace, p.name, p.protocol), []).append(pod)
    found: list[UnresolvedNamedPort] = []
    for policy in policies:
        selects = compile_selector(policy.pod_selector).matches
        for direction, key in ((Direction.INGRESS, "spec.ingress"), (Direction.EGRESS, "spec.egress")):
            named = [
                (f"{key}[{i}].ports[{j}].port", port.port, port.protocol)
                for i, rule in enumerate(policy.rules(direction))
                for j, port in enumerate(rule.ports)
                if isinstance(port.port, str)
            ]
            if direction is Direction.INGRESS:
                among = "the pods the policy selects"
                unresolved = [
                    (path, name, protocol)
                    for path, name, protocol in named
                    if not any(selects(p.labels) for p in declaring.get((policy.namespace, name, protocol), ()))
                ]
                if unresolved and not any(selects(p.labels) for p in by_namespace.get(policy.namespace, ())):
                    continue
            else:
                among = "any pod in the input"
                unresolved = [n for n in named if (n[1], n[2]) not in everywhere] if all_pods else []
            found.extend(UnresolvedNamedPort(policy, *n, among) for n in unresolved)
    return found
