"""Lint NetworkPolicies: policies and rules that do not do what they seem to, each finding naming the object and
the field.

Checks (stable IDs; `CHECKS` is the list the CLI and the README show):

- NPA001 a policy's podSelector selects no pod of the input: the policy has no effect;
- NPA002 a peer's namespaceSelector matches no namespace, or its podSelector no pod, of the input: the peer admits
  nothing;
- NPA003 a named port no candidate destination declares (`netpol_auditor.named_ports`): the port entry admits
  nothing;
- NPA004 a rule shadowed by another (`netpol_auditor.shadowing`): it admits nothing more;
- NPA005 an ipBlock that matches pod IPs of the input or overlaps a given pod CIDR: ipBlock peers match pods by
  their IP too, although they are meant for "cluster-external IPs, since Pod IPs are ephemeral and unpredictable"
  (https://kubernetes.io/docs/concepts/services-networking/network-policies/);
- NPA006 a namespace with pods and no policy that isolates all its pods for ingress (empty podSelector, Ingress in
  policyTypes): a pod no policy selects accepts every connection;
- NPA007 the same for egress. Off by default: isolating egress means listing every destination, DNS included, and
  many clusters deliberately leave egress open; turn it on where egress is meant to be closed.

NPA001 and NPA002 judge against the pods of the input (Pods, and the pod templates of workloads), and say nothing
when the input has none: a directory of policies alone would warn about every selector. The namespaces a
namespaceSelector is matched against are the Namespace objects of the input and the namespaces its pods and
policies are in (with only their ``kubernetes.io/metadata.name`` label).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .model import Direction, LabelSelector, Namespace, NetworkPolicy, NetworkPolicyPeer, Pod
from .named_ports import unresolved_named_ports
from .selectors import AddressIndex, block_intervals, compile_ip_block, compile_selector
from .shadowing import shadowed_rules

__all__ = ["CHECKS", "Check", "Finding", "LintInput", "Severity", "lint"]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Check:
    id: str
    severity: Severity
    title: str
    default: bool = True  # on unless turned off; False: off unless turned on


CHECKS: tuple[Check, ...] = (
    Check("NPA001", Severity.WARNING, "policy podSelector selects no pod"),
    Check("NPA002", Severity.WARNING, "peer selector matches no namespace or pod"),
    Check("NPA003", Severity.ERROR, "named port no destination declares"),
    Check("NPA004", Severity.WARNING, "rule shadowed by another rule"),
    Check("NPA005", Severity.WARNING, "ipBlock matches pod IPs"),
    Check("NPA006", Severity.WARNING, "namespace without default deny for ingress"),
    Check("NPA007", Severity.WARNING, "namespace without default deny for egress", default=False),
)
_BY_ID = {c.id: c for c in CHECKS}

#: Kind, namespace (None for a Namespace) and name: how `Manifests.sources` keys the file of each object.
ObjectKey = tuple[str, str | None, str]


@dataclass(frozen=True)
class Finding:
    check: Check
    kind: str
    namespace: str | None
    name: str
    path: str
    message: str
    file: str | None = None

    def __str__(self) -> str:
        obj = f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"
        parts = [p for p in (self.file, f"{self.check.severity.value} {self.check.id}", obj, self.path) if p]
        return ": ".join([*parts, self.message])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.check.id,
            "severity": self.check.severity.value,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "path": self.path or None,
            "file": self.file,
            "message": self.message,
        }


@dataclass(frozen=True)
class LintInput:
    """What is linted: the policies, the pods (Pods, and workloads' template pods), the Namespace objects; the pod
    CIDRs of the cluster if known; the file of each object, by `ObjectKey`."""

    policies: Sequence[NetworkPolicy]
    pods: Sequence[Pod]
    namespaces: Sequence[Namespace] = ()
    pod_cidrs: Sequence[str] = ()
    sources: Mapping[ObjectKey, str] = field(default_factory=dict)


def lint(data: LintInput, checks: Collection[str]) -> list[Finding]:
    """The findings of the ``checks`` (IDs) named, by object (file, kind, namespace, name), then by check."""
    found: list[Finding] = []
    context = _Context(data)
    for check in CHECKS:
        if check.id in checks:
            found.extend(_RUNNERS[check.id](context, check))
    found.sort(key=lambda f: (f.file or "", f.kind, f.namespace or "", f.name))
    return found


class _Context:
    """The input, indexed once for every check."""

    def __init__(self, data: LintInput) -> None:
        self.data = data
        self.pods_by_namespace: dict[str, list[Pod]] = {}
        for pod in data.pods:
            self.pods_by_namespace.setdefault(pod.namespace, []).append(pod)
        labels = {ns.name: ns.labels for ns in data.namespaces}
        for name in [*self.pods_by_namespace, *(p.namespace for p in data.policies)]:
            labels.setdefault(name, Namespace(name).labels)
        self.namespace_labels = labels

    def finding(self, check: Check, policy: NetworkPolicy, path: str, message: str) -> Finding:
        file = self.data.sources.get(("NetworkPolicy", policy.namespace, policy.name))
        return Finding(check, "NetworkPolicy", policy.namespace, policy.name, path, message, file)

    def selects_a_pod(self, namespaces: Collection[str], selector: LabelSelector | None) -> bool:
        matches = compile_selector(selector or LabelSelector()).matches
        return any(matches(p.labels) for ns in namespaces for p in self.pods_by_namespace.get(ns, ()))


def _peers(policy: NetworkPolicy) -> list[tuple[str, NetworkPolicyPeer]]:
    """(field path, peer) of every peer of the directions the policy isolates."""
    out = []
    for direction in (d for d in (Direction.INGRESS, Direction.EGRESS) if d in policy.policy_types):
        key, peers_key = ("ingress", "from") if direction is Direction.INGRESS else ("egress", "to")
        for i, rule in enumerate(policy.rules(direction)):
            out += [(f"spec.{key}[{i}].{peers_key}[{j}]", peer) for j, peer in enumerate(rule.peers)]
    return out


def _selects_nothing(ctx: _Context, check: Check) -> list[Finding]:
    if not ctx.data.pods:
        return []
    return [
        ctx.finding(
            check,
            policy,
            "spec.podSelector",
            f"podSelector {policy.pod_selector} selects no pod of the input in namespace {policy.namespace}: "
            "the policy has no effect",
        )
        for policy in ctx.data.policies
        if not ctx.selects_a_pod([policy.namespace], policy.pod_selector)
    ]


def _peer_matches_nothing(ctx: _Context, check: Check) -> list[Finding]:
    if not ctx.data.pods:
        return []
    found = []
    for policy in ctx.data.policies:
        for path, peer in _peers(policy):
            if peer.ip_block is not None:
                continue
            if peer.namespace_selector is None:
                namespaces = [policy.namespace]
            else:
                matches = compile_selector(peer.namespace_selector).matches
                namespaces = sorted(n for n, labels in ctx.namespace_labels.items() if matches(labels))
                if not namespaces:
                    message = f"namespaceSelector {peer.namespace_selector} matches no namespace of the input"
                    found.append(ctx.finding(check, policy, f"{path}.namespaceSelector", message))
                    continue
            if ctx.selects_a_pod(namespaces, peer.pod_selector):
                continue
            where = f"namespace{'s' if len(namespaces) > 1 else ''} {', '.join(namespaces)}"
            if peer.pod_selector is not None and not peer.pod_selector.is_empty:
                message = f"podSelector {peer.pod_selector} matches no pod of the input in {where}"
                found.append(ctx.finding(check, policy, f"{path}.podSelector", message))
            else:
                field_name = "namespaceSelector" if peer.namespace_selector is not None else "podSelector"
                message = f"{field_name} matches {where}, where the input has no pod"
                found.append(ctx.finding(check, policy, f"{path}.{field_name}", message))
    return found


def _unresolved_named_ports(ctx: _Context, check: Check) -> list[Finding]:
    return [
        ctx.finding(check, u.policy, u.path, str(u)) for u in unresolved_named_ports(ctx.data.policies, ctx.data.pods)
    ]


def _shadowed(ctx: _Context, check: Check) -> list[Finding]:
    return [ctx.finding(check, s.policy, s.path, str(s)) for s in shadowed_rules(ctx.data.policies)]


def _ip_blocks_over_pods(ctx: _Context, check: Check) -> list[Finding]:
    addresses: AddressIndex[tuple[str, str, str]] = AddressIndex()
    for pod in ctx.data.pods:
        if not pod.host_network:  # a hostNetwork pod's IP is its node's
            for ip in pod.pod_ips:
                addresses.add(ip, (pod.namespace, pod.name, ip))
    networks = [ipaddress.ip_network(c, strict=False) for c in ctx.data.pod_cidrs]
    found = []
    for policy in ctx.data.policies:
        for path, peer in _peers(policy):
            if peer.ip_block is None:
                continue
            matcher = compile_ip_block(peer.ip_block)
            pods = sorted(addresses.within(matcher))
            overlapping = [
                str(net)
                for net in networks
                if any(
                    version == net.version and low <= int(net.broadcast_address) and int(net.network_address) <= high
                    for version, low, high in block_intervals(matcher)
                )
            ]
            if pods:
                named = ", ".join(f"{ns}/{name} {ip}" for ns, name, ip in pods[:3])
                more = f" and {len(pods) - 3} more" if len(pods) > 3 else ""
                what = f"the IPs of pods of the input ({named}{more})"
            elif overlapping:
                what = f"addresses of the pod network {', '.join(overlapping)}"
            else:
                continue
            message = (
                f"ipBlock {peer.ip_block} matches {what}: an ipBlock admits pods by their IP too; leave the pod "
                "network out with except, and select pods with podSelector/namespaceSelector"
            )
            found.append(ctx.finding(check, policy, f"{path}.ipBlock", message))
    return found


_Runner = Callable[["_Context", Check], list[Finding]]


def _without_default_deny(direction: Direction) -> _Runner:
    def run(ctx: _Context, check: Check) -> list[Finding]:
        covered = {
            p.namespace for p in ctx.data.policies if p.pod_selector.is_empty and direction in p.policy_types
        }
        found = []
        for namespace in sorted(ctx.pods_by_namespace):
            if namespace in covered or all(p.host_network for p in ctx.pods_by_namespace[namespace]):
                continue
            word = direction.value.lower()
            message = (
                f"no NetworkPolicy with an empty podSelector lists {direction.value} in policyTypes: pods no policy "
                f"selects for {word} are open to every {'source' if direction is Direction.INGRESS else 'destination'}"
                f" (a default deny for {word} closes them)"
            )
            file = ctx.data.sources.get(("Namespace", None, namespace))
            found.append(Finding(check, "Namespace", None, namespace, "", message, file))
        return found

    return run


_RUNNERS: dict[str, _Runner] = {
    "NPA001": _selects_nothing,
    "NPA002": _peer_matches_nothing,
    "NPA003": _unresolved_named_ports,
    "NPA004": _shadowed,
    "NPA005": _ip_blocks_over_pods,
    "NPA006": _without_default_deny(Direction.INGRESS),
    "NPA007": _without_default_deny(Direction.EGRESS),
}
