"""The object model: immutable, hashable views of Pods, Namespaces, NetworkPolicies and workloads.

Only the fields NetworkPolicy semantics (and the operator around it) need are kept. Objects are built by
`netpol_auditor.manifests` from API dicts, with the API server's defaulting already applied, so the engine never
has to guess what an omitted field means.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar, overload

__all__ = [
    "NAMESPACE_NAME_LABEL",
    "WORKLOAD_KINDS",
    "ContainerPort",
    "Direction",
    "Endpoint",
    "IPBlock",
    "LabelSelector",
    "Labels",
    "Namespace",
    "NetworkPolicy",
    "NetworkPolicyPeer",
    "NetworkPolicyPort",
    "NetworkPolicyRule",
    "ObjectKind",
    "Pod",
    "PodRef",
    "PortProtocol",
    "Protocol",
    "SelectorOperator",
    "SelectorRequirement",
    "Workload",
]

#: Every namespace carries this label, set by the API server since Kubernetes 1.22 (NamespaceDefaultLabelName).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class Direction(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class ObjectKind(StrEnum):
    POD = "pod"
    NAMESPACE = "namespace"
    NETWORK_POLICY = "networkpolicy"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_T = TypeVar("_T")


class Labels(Mapping[str, str]):
    """An immutable, hashable string->string mapping (labels, named-port maps)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data: dict[str, str] = dict(sorted((data or {}).items()))
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # The Mapping mixins would go through __getitem__ (and KeyError) in Python; selectors, parsing and class ids
    # call these for every label.
    def __contains__(self, key: object) -> bool:
        return key in self._data

    @overload
    def get(self, key: str, /) -> str | None: ...
    @overload
    def get(self, key: str, default: str | _T, /) -> str | _T: ...
    def get(self, key: str, default: object = None, /) -> object:
        return self._data.get(key, default)

    def items(self) -> ItemsView[str, str]:
        return self._data.items()

    def keys(self) -> KeysView[str]:
        return self._data.keys()

    def values(self) -> ValuesView[str]:
        return self._data.values()

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Labels({self._data!r})"

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self._data.items())

    def with_items(self, **extra: str) -> Labels:
        return Labels({**self._data, **extra})


@dataclass(frozen=True, order=True)
class PortProtocol:
    """A concrete destination port and protocol, e.g. ``80/TCP``."""

    port: int
    protocol: Protocol = Protocol.TCP

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} out of range 1-65535")

    @classmethod
    def parse(cls, text: str) -> PortProtocol:
        """Parse ``"80/TCP"``, ``"53/udp"`` or ``"80"`` (TCP)."""
        number, _, proto = text.strip().partition("/")
        try:
            port = int(number)
        except ValueError:
            raise ValueError(f"invalid port {text!r}: expected PORT or PORT/PROTOCOL, e.g. 80/TCP") from None
        protocol_text = proto.strip().upper() or "TCP"
        if protocol_text not in Protocol.__members__:
            raise ValueError(f"invalid protocol in {text!r}: supported values: TCP, UDP, SCTP")
        return cls(port, Protocol(protocol_text))

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol.value}"


@dataclass(frozen=True, order=True)
class PodRef:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> PodRef:
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"invalid pod reference {text!r}: expected NAMESPACE/NAME")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


#: A traffic endpoint: a pod, or an IP address (always treated as outside the cluster: identity is the pod).
Endpoint = PodRef | str


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A metav1.LabelSelector. The empty selector selects everything."""

    match_labels: Labels = field(default_factory=Labels)
    match_expressions: tuple[SelectorRequirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def keys(self) -> frozenset[str]:
        """Label keys this selector looks at."""
        return frozenset(self.match_labels) | frozenset(r.key for r in self.match_expressions)

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels.items()]
        for r in self.match_expressions:
            if r.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN):
                op = "in" if r.operator is SelectorOperator.IN else "notin"
                parts.append(f"{r.key} {op} ({','.join(r.values)})")
            elif r.operator is SelectorOperator.EXISTS:
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) if parts else "<all>"


@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.except_:
            return f"{self.cidr} except {', '.join(self.except_)}"
        return self.cidr


@dataclass(frozen=True)
class NetworkPolicyPeer:
    """One entry of ``from``/``to``: selectors (ANDed when both set) or an ipBlock."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class NetworkPolicyPort:
    """One entry of ``ports``. ``port`` None = every port of ``protocol``; str = a named port."""

    protocol: Protocol = Protocol.TCP
    port: int | str | None = None
    end_port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return f"*/{self.protocol.value}"
        if self.end_port is not None:
            return f"{self.port}-{self.end_port}/{self.protocol.value}"
        return f"{self.port}/{self.protocol.value}"


@dataclass(frozen=True)
class NetworkPolicyRule:
    """An ingress or egress rule. Empty ``peers`` = every peer; empty ``ports`` = every port and protocol."""

    ports: tuple[NetworkPolicyPort, ...] = ()
    peers: tuple[NetworkPolicyPeer, ...] = ()


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Labels = field(default_factory=Labels)
    uid: str = ""

    def __post_init__(self) -> None:
        # The API server always sets kubernetes.io/metadata.name=<name> (immutable); manifests often omit it.
        if self.labels.get(NAMESPACE_NAME_LABEL) != self.name:
            object.__setattr__(self, "labels", self.labels.with_items(**{NAMESPACE_NAME_LABEL: self.name}))

    @property
    def key(self) -> tuple[str | None, str]:
        return (None, self.name)


@dataclass(frozen=True, order=True)
class ContainerPort:
    port: int
    protocol: Protocol = Protocol.TCP
    name: str | None = None


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str = ""
    labels: Labels = field(default_factory=Labels)
    phase: str = "Running"
    pod_ips: tuple[str, ...] = ()
    node_name: str = ""
    host_network: bool = False
    container_ports: tuple[ContainerPort, ...] = ()
    owner_kind: str = ""
    owner_name: str = ""
    creation_timestamp: str = ""
    deleting: bool = False
    #: Written in a manifest, not yet created (no ``status``): stands for the pod it will be, so it is judged,
    #: but having no IP yet, no ipBlock peer matches it.
    planned: bool = False

    @property
    def ref(self) -> PodRef:
        return PodRef(self.namespace, self.name)

    @property
    def is_endpoint(self) -> bool:
        """Not host-networked, and running with an IP or planned: traffic to/from it is judged by NetworkPolicy."""
        if self.host_network:
            return False
        return self.planned or (self.phase == "Running" and bool(self.pod_ips))

    def named_ports(self) -> Labels:
        """Named container ports as ``{"name/PROTO": "number"}``, the key named ports are resolved by."""
        return Labels({f"{p.name}/{p.protocol.value}": str(p.port) for p in self.container_ports if p.name})

    def declared_ports(self) -> tuple[PortProtocol, ...]:
        return tuple(sorted({PortProtocol(p.port, p.protocol) for p in self.container_ports}))


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: frozenset[Direction] = frozenset({Direction.INGRESS})
    ingress: tuple[NetworkPolicyRule, ...] = ()
    egress: tuple[NetworkPolicyRule, ...] = ()
    uid: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def rules(self, direction: Direction) -> tuple[NetworkPolicyRule, ...]:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def affects(self, direction: Direction) -> bool:
        return direction in self.policy_types

    def to_summary(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "podSelector": str(self.pod_selector),
            "policyTypes": sorted(t.value for t in self.policy_types),
        }


#: Kinds whose pod template makes pods, and where the template is: ``spec.template`` except for CronJob.
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob")


@dataclass(frozen=True)
class Workload:
    """A controller of pods (`WORKLOAD_KINDS`): what its pod template gives every pod it makes.

    ``selector`` is the controller's pod selector (None for CronJob, whose Jobs have their own); ``owner_kind`` and
    ``owner_name`` its controlling owner (a ReplicaSet's Deployment, a Job's CronJob), empty if none.
    """

    kind: str
    namespace: str
    name: str
    uid: str = ""
    labels: Labels = field(default_factory=Labels)  # of the pod template
    selector: LabelSelector | None = None
    container_ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False
    owner_kind: str = ""
    owner_name: str = ""
