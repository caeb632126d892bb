"""Strict field validation of manifests: the fields an object has that its kind does not define.

Modelled on the API server's strict field validation (``kubectl apply --validate=strict``, ``fieldValidation=Strict``,
which answers ``strict decoding error: unknown field "spec.ingres"``): without it a misspelt ``ingres:`` is dropped
and the policy silently becomes deny-all. Field names follow the networking.k8s.io/v1 and core/v1 API reference
(staging/src/k8s.io/api/networking/v1/types.go, core/v1/types.go, apimachinery meta/v1 ObjectMeta).

NetworkPolicy and the cluster policies of policy.networking.k8s.io are checked in full. Pods, Namespaces and
workloads are checked only where a misspelling changes a verdict (the top level, ``metadata``, a workload's pod
template, container ports, pod IPs): the rest of a PodSpec is large, grows with every Kubernetes release and is
never read here, so rejecting a field we do not know there would reject valid input. Type errors are left to the
parsers (`netpol_auditor.manifests`, `netpol_auditor.cluster_manifests`), which name them with the API server's
wording.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .model import WORKLOAD_KINDS

__all__ = ["UnknownField", "unknown_fields"]


@dataclass(frozen=True)
class _Object:
    """A JSON object with these fields; ``open``: other fields are allowed (and not looked into)."""

    fields: Mapping[str, _Shape] = field(default_factory=dict)
    open: bool = False


@dataclass(frozen=True)
class _ListOf:
    item: _Shape


_Shape = _Object | _ListOf | None  # None: any value, not looked into (label maps, annotations, managedFields)


def _closed(*names: str, **shaped: _Shape) -> _Object:
    return _Object({**dict.fromkeys(names), **shaped})


_OBJECT_META = _closed(
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "finalizers", "managedFields",
    ownerReferences=_ListOf(_closed("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")),
)  # fmt: skip

_LABEL_SELECTOR = _closed("matchLabels", matchExpressions=_ListOf(_closed("key", "operator", "values")))
_PEER = _closed(podSelector=_LABEL_SELECTOR, namespaceSelector=_LABEL_SELECTOR, ipBlock=_closed("cidr", "except"))
_POLICY_PORT = _closed("protocol", "port", "endPort")

_NETWORK_POLICY = _closed(
    "apiVersion",
    "kind",
    "status",  # NetworkPolicyStatus (1.24-1.26): dumps of those clusters carry it
    metadata=_OBJECT_META,
    spec=_closed(
        "policyTypes",
        podSelector=_LABEL_SELECTOR,
        ingress=_ListOf(_closed(**{"from": _ListOf(_PEER), "ports": _ListOf(_POLICY_PORT)})),
        egress=_ListOf(_closed(to=_ListOf(_PEER), ports=_ListOf(_POLICY_PORT))),
    ),
)

_POD_SPEC = _Object(
    {
        "containers": _ListOf(
            _Object({"ports": _ListOf(_closed("name", "containerPort", "protocol", "hostPort", "hostIP"))}, True)
        )
    },
    open=True,
)

_POD = _closed(
    "apiVersion",
    "kind",
    metadata=_OBJECT_META,
    spec=_POD_SPEC,
    status=_Object({"podIPs": _ListOf(_closed("ip"))}, open=True),
)

_NAMESPACE = _closed("apiVersion", "kind", "spec", "status", metadata=_OBJECT_META)

# Workloads: the pod template as a Pod (its metadata and container ports); the rest of their spec is not read.
_POD_TEMPLATE = _closed(metadata=_OBJECT_META, spec=_POD_SPEC)
_WORKLOAD_SPEC = _Object({"template": _POD_TEMPLATE}, open=True)
_WORKLOAD = _closed("apiVersion", "kind", "status", metadata=_OBJECT_META, spec=_WORKLOAD_SPEC)
_CRON_JOB = _closed(
    "apiVersion",
    "kind",
    "status",
    metadata=_OBJECT_META,
    spec=_Object({"jobTemplate": _closed(metadata=_OBJECT_META, spec=_WORKLOAD_SPEC)}, open=True),
)

# policy.networking.k8s.io: apis/v1alpha1 (AdminNetworkPolicy, BaselineAdminNetworkPolicy) and apis/v1alpha2
# (ClusterNetworkPolicy) of kubernetes-sigs/network-policy-api; their CRDs are structural, so the API server's strict
# field validation applies to them as to built-in kinds.
_NAMESPACED_POD = _closed(namespaceSelector=_LABEL_SELECTOR, podSelector=_LABEL_SELECTOR)
_CLUSTER_SUBJECT = _closed(namespaces=_LABEL_SELECTOR, pods=_NAMESPACED_POD)
_CLUSTER_INGRESS_PEER = _closed(namespaces=_LABEL_SELECTOR, pods=_NAMESPACED_POD)
_CLUSTER_EGRESS_PEER = _closed("networks", "domainNames", namespaces=_LABEL_SELECTOR, pods=_NAMESPACED_POD,
                               nodes=_LABEL_SELECTOR)
_BANP_EGRESS_PEER = _closed("networks", namespaces=_LABEL_SELECTOR, pods=_NAMESPACED_POD, nodes=_LABEL_SELECTOR)
_V1ALPHA1_PORT = _closed("namedPort", portNumber=_closed("protocol", "port"),
                         portRange=_closed("protocol", "start", "end"))
_V1ALPHA2_PORT = _closed(destinationPort=_closed("number", range=_closed("start", "end")))
_V1ALPHA2_PROTOCOL = _closed("destinationNamedPort", tcp=_V1ALPHA2_PORT, udp=_V1ALPHA2_PORT, sctp=_V1ALPHA2_PORT)


def _cluster_policy(spec_fields: tuple[str, ...], ports: str, port: _Shape, egress_peer: _Object) -> _Object:
    return _closed(
        "apiVersion",
        "kind",
        "status",
        metadata=_OBJECT_META,
        spec=_closed(
            *spec_fields,
            subject=_CLUSTER_SUBJECT,
            ingress=_ListOf(
                _closed("name", "action", **{"from": _ListOf(_CLUSTER_INGRESS_PEER), ports: _ListOf(port)})
            ),
            egress=_ListOf(_closed("name", "action", to=_ListOf(egress_peer), **{ports: _ListOf(port)})),
        ),
    )


_SCHEMAS: Mapping[str, _Object] = {
    "AdminNetworkPolicy": _cluster_policy(("priority",), "ports", _V1ALPHA1_PORT, _CLUSTER_EGRESS_PEER),
    "BaselineAdminNetworkPolicy": _cluster_policy((), "ports", _V1ALPHA1_PORT, _BANP_EGRESS_PEER),
    "ClusterNetworkPolicy": _cluster_policy(
        ("tier", "priority"), "protocols", _V1ALPHA2_PROTOCOL, _CLUSTER_EGRESS_PEER
    ),
    "NetworkPolicy": _NETWORK_POLICY,
    "Pod": _POD,
    "Namespace": _NAMESPACE,
    **{kind: _WORKLOAD for kind in WORKLOAD_KINDS},
    "CronJob": _CRON_JOB,
}


@dataclass(frozen=True)
class UnknownField:
    """A field the kind does not define: ``path`` as the API server writes it (``spec.ingress[0].form``)."""

    path: str
    suggestion: str | None = None  # the closest defined field name, when one is close

    def __str__(self) -> str:
        hint = f' (did you mean "{self.suggestion}"?)' if self.suggestion else ""
        return f'unknown field "{self.path}"{hint}'


def unknown_fields(obj: Mapping[str, Any]) -> list[UnknownField]:
    """Unknown fields of a Pod, Namespace, workload, networking.k8s.io/v1 NetworkPolicy or policy.networking.k8s.io
    cluster policy (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy), in document order.

    Other kinds have none (they are not read)."""
    schema = _SCHEMAS.get(str(obj.get("kind")))
    found: list[UnknownField] = []
    if schema is not None:
        _walk(obj, schema, "", found)
    return found


def _walk(value: Any, shape: _Shape, path: str, found: list[UnknownField]) -> None:
    if isinstance(shape, _ListOf):
        if isinstance(value, list):
            for i, item in enumerate(value):
                _walk(item, shape.item, f"{path}[{i}]", found)
        return
    if shape is None or not (type(value) is dict or isinstance(value, Mapping)):  # dict first: no ABC check
        return
    fields = shape.fields
    for key, child in value.items():
        if key in fields:
            child_shape = fields[key]
            if child_shape is not None:  # most fields are leaves: no call for them (large dumps)
                _walk(child, child_shape, f"{path}.{key}" if path else str(key), found)
        elif not shape.open:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.75)
            found.append(UnknownField(f"{path}.{key}" if path else str(key), close[0] if close else None))
