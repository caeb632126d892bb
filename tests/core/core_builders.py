"""Builders for API-shaped dicts (what the API server returns), parsed through the real manifest parser."""

from __future__ import annotations

from typing import Any

from netpol_auditor.manifests import KubeObject, parse_object
from netpol_auditor.model import Namespace, NetworkPolicy, Pod


def ns_dict(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def pod_dict(
    namespace: str,
    name: str,
    ip: str | None,
    labels: dict[str, str] | None = None,
    ports: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    host_network: bool = False,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"hostNetwork": host_network, "containers": [{"name": "c", "ports": ports or []}]},
        "status": status,
    }


def policy_dict(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def parse(obj: dict[str, Any]) -> KubeObject:
    parsed = parse_object(obj)
    assert parsed is not None
    return parsed


def ns(name: str, **labels: str) -> Namespace:
    out = parse(ns_dict(name, **labels))
    assert isinstance(out, Namespace)
    return out


def pod(namespace: str, name: str, ip: str | None, labels: dict[str, str] | None = None, **kw: Any) -> Pod:
    out = parse(pod_dict(namespace, name, ip, labels, **kw))
    assert isinstance(out, Pod)
    return out


def policy(namespace: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    out = parse(policy_dict(namespace, name, spec))
    assert isinstance(out, NetworkPolicy)
    return out


# -- policy.networking.k8s.io cluster policies ---------------------------------------------------------------------


def _cluster_spec(subject: dict[str, Any] | None, ingress: list[Any] | None, egress: list[Any] | None,
                  **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if subject is not None:
        spec["subject"] = subject
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return spec


def anp_dict(name: str, priority: Any, subject: dict[str, Any] | None, ingress: list[Any] | None = None,
             egress: list[Any] | None = None) -> dict[str, Any]:
    """An AdminNetworkPolicy (v1alpha1)."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "AdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": _cluster_spec(subject, ingress, egress, priority=priority),
    }


def banp_dict(subject: dict[str, Any] | None, ingress: list[Any] | None = None, egress: list[Any] | None = None,
              name: str = "default") -> dict[str, Any]:
    """A BaselineAdminNetworkPolicy (v1alpha1), named ``default`` unless told."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": "BaselineAdminNetworkPolicy",
        "metadata": {"name": name},
        "spec": _cluster_spec(subject, ingress, egress),
    }


def cnp_dict(name: str, tier: Any, priority: Any, subject: dict[str, Any] | None, ingress: list[Any] | None = None,
             egress: list[Any] | None = None) -> dict[str, Any]:
    """A ClusterNetworkPolicy (v1alpha2)."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": _cluster_spec(subject, ingress, egress, tier=tier, priority=priority),
    }
