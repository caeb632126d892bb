"""The object model of cluster-scoped policies of the ``policy.networking.k8s.io`` API (SIG Network).

Three kinds, two API versions (kubernetes-sigs/network-policy-api):

- ``AdminNetworkPolicy`` v1alpha1 (``apis/v1alpha1/adminnetworkpolicy_types.go``, release-0.1): priority 0-1000,
  actions Allow / Deny / Pass; the Admin tier.
- ``BaselineAdminNetworkPolicy`` v1alpha1 (``apis/v1alpha1/baselineadminnetworkpolicy_types.go``): a singleton
  named ``default`` (a CEL rule on the CRD), actions Allow / Deny; the Baseline tier.
- ``ClusterNetworkPolicy`` v1alpha2 (``apis/v1alpha2/clusternetworkpolicy_types.go``, v0.2.0 and later):
  ``spec.tier`` Admin or Baseline, priority 0-1000, actions Accept / Deny / Pass.

All three share one shape here: a subject (pods by namespace selector, or by namespace and pod selector), ordered
ingress and egress rules, each with an action, peers and optional ports. v1alpha1's ``Allow`` and v1alpha2's
``Accept`` mean the same and are one `RuleAction`; `ClusterPolicy.action_word` gives the word the kind uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .model import Direction, LabelSelector, Protocol

__all__ = [
    "CLUSTER_POLICY_API_GROUP",
    "ClusterPeer",
    "ClusterPolicy",
    "ClusterPolicyKind",
    "ClusterPort",
    "ClusterRule",
    "ClusterSubject",
    "NamespacedPods",
    "RuleAction",
    "Tier",
]

CLUSTER_POLICY_API_GROUP = "policy.networking.k8s.io"


class ClusterPolicyKind(StrEnum):
    ADMIN_NETWORK_POLICY = "AdminNetworkPolicy"
    BASELINE_ADMIN_NETWORK_POLICY = "BaselineAdminNetworkPolicy"
    CLUSTER_NETWORK_POLICY = "ClusterNetworkPolicy"

    @property
    def api_version(self) -> str:
        version = "v1alpha2" if self is ClusterPolicyKind.CLUSTER_NETWORK_POLICY else "v1alpha1"
        return f"{CLUSTER_POLICY_API_GROUP}/{version}"


class Tier(StrEnum):
    """Where a cluster policy sits relative to namespaced NetworkPolicies: before them (Admin) or after (Baseline)."""

    ADMIN = "Admin"
    BASELINE = "Baseline"


class RuleAction(StrEnum):
    ACCEPT = "Accept"  # v1alpha1 "Allow"
    DENY = "Deny"
    PASS = "Pass"


@dataclass(frozen=True)
class NamespacedPods:
    """``NamespacedPod``: the pods its ``pod_selector`` matches in the namespaces its ``namespace_selector``
    matches (both empty = everything)."""

    namespace_selector: LabelSelector
    pod_selector: LabelSelector

    def __str__(self) -> str:
        return f"pods {self.pod_selector} in namespaces {self.namespace_selector}"


@dataclass(frozen=True)
class ClusterSubject:
    """Exactly one of ``namespaces`` (every pod of the matching namespaces) or ``pods``."""

    namespaces: LabelSelector | None = None
    pods: NamespacedPods | None = None

    def __str__(self) -> str:
        return f"namespaces {self.namespaces}" if self.namespaces is not None else str(self.pods)


@dataclass(frozen=True)
class ClusterPeer:
    """One entry of ``from`` / ``to``; exactly one field is set (MinProperties=MaxProperties=1 on the CRD).

    ``networks``: CIDRs (egress only), matched against any address, pod IPs included. ``nodes`` and
    ``domain_names`` (egress only, experimental) are kept but not evaluated: which addresses they stand for is not
    in the manifests (node addresses, DNS answers), so the engine reports the paths they could decide as out of
    model.
    """

    namespaces: LabelSelector | None = None
    pods: NamespacedPods | None = None
    networks: tuple[str, ...] = ()
    nodes: LabelSelector | None = None
    domain_names: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The name of the field that is set, as the API writes it."""
        if self.namespaces is not None:
            return "namespaces"
        if self.pods is not None:
            return "pods"
        if self.networks:
            return "networks"
        if self.nodes is not None:
            return "nodes"
        return "domainNames"

    def __str__(self) -> str:
        if self.namespaces is not None:
            return f"namespaces {self.namespaces}"
        if self.pods is not None:
            return str(self.pods)
        if self.networks:
            return f"networks {', '.join(self.networks)}"
        if self.nodes is not None:
            return f"nodes {self.nodes}"
        return f"domainNames {', '.join(self.domain_names)}"


@dataclass(frozen=True)
class ClusterPort:
    """A destination port: a number (``end_port`` None), an inclusive range, or a named port.

    v1alpha1 ``portNumber`` / ``portRange`` / ``namedPort`` (``AdminNetworkPolicyPort`` in
    ``apis/v1alpha1/shared_types.go``), v1alpha2 ``protocols[]`` ``tcp|udp|sctp.destinationPort.number|range`` /
    ``destinationNamedPort`` (``ClusterNetworkPolicyProtocol``). A named port has no protocol of its own: it is
    resolved on the destination pod's container ports, whose protocol it takes.
    """

    protocol: Protocol | None = Protocol.TCP  # None only for a named port
    port: int | None = None
    end_port: int | None = None
    named_port: str | None = None

    def __str__(self) -> str:
        if self.named_port is not None:
            return f"named port {self.named_port}"
        proto = self.protocol.value if self.protocol is not None else "?"
        if self.port is None:
            return f"*/{proto}"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{proto}"
        return f"{self.port}/{proto}"


@dataclass(frozen=True)
class ClusterRule:
    """An ingress or egress rule: ``action`` on traffic from/to any of ``peers`` (at least one) on any of
    ``ports`` (empty: every port of every protocol)."""

    action: RuleAction
    peers: tuple[ClusterPeer, ...]
    ports: tuple[ClusterPort, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class ClusterPolicy:
    """An AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy (cluster-scoped: no namespace).

    ``priority`` is None for a BaselineAdminNetworkPolicy, which has none (there is only one).
    """

    kind: ClusterPolicyKind
    name: str
    tier: Tier
    priority: int | None
    subject: ClusterSubject
    ingress: tuple[ClusterRule, ...] = ()
    egress: tuple[ClusterRule, ...] = ()
    uid: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """(kind, name): unique, and never a (namespace, name) key (kinds are not valid namespace names)."""
        return (self.kind.value, self.name)

    def rules(self, direction: Direction) -> tuple[ClusterRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def action_word(self, action: RuleAction) -> str:
        """The action as this kind's API spells it (v1alpha1 says Allow where v1alpha2 says Accept)."""
        if action is RuleAction.ACCEPT and self.kind is not ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
            return "Allow"
        return action.value

    def to_summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "tier": self.tier.value,
            "priority": self.priority,
            "subject": str(self.subject),
        }
