"""Parse AdminNetworkPolicy, BaselineAdminNetworkPolicy (v1alpha1) and ClusterNetworkPolicy (v1alpha2) from API
dicts into `netpol_auditor.cluster_policy` objects.

Validation mirrors the CustomResourceDefinitions of kubernetes-sigs/network-policy-api (``config/crd/experimental/
policy.networking.k8s.io_*.yaml``, generated from the kubebuilder markers of ``apis/v1alpha1`` and
``apis/v1alpha2``): required fields, enums, 0-1000 priorities, "exactly one field" subjects, peers and ports
(MinProperties=MaxProperties=1), list bounds, port ranges with start < end, CIDRs, the BANP name ``default`` and
"no named port with a networks/nodes/domainNames peer" -- so an offline ``analyze`` refuses what ``kubectl apply``
would. Defaulting mirrors the CRDs too: a v1alpha1 port's protocol defaults to TCP, a v1alpha2 ``pods`` peer's
``namespaceSelector`` to ``{}`` (every namespace).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .cluster_policy import (
    ClusterPeer,
    ClusterPolicy,
    ClusterPolicyKind,
    ClusterPort,
    ClusterRule,
    ClusterSubject,
    NamespacedPods,
    RuleAction,
    Tier,
)
from .manifests import ManifestError, _Ctx, _parse_cidr, _protocol, _selector
from .model import Protocol

__all__ = ["CLUSTER_POLICY_KINDS", "parse_cluster_policy"]

#: kind -> the apiVersion this tool reads it in.
CLUSTER_POLICY_KINDS: Mapping[str, str] = {kind.value: kind.api_version for kind in ClusterPolicyKind}

# apis/v1alpha1 DomainName, apis/v1alpha2 DomainName (kubebuilder Pattern, copied verbatim: `A-z` included).
_DOMAIN_NAME_RE = re.compile(
    r"^(\*\.)?([a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.)+[a-zA-z0-9]([-a-zA-Z0-9_]*[a-zA-Z0-9])?\.?$"
)


class _Version:
    """What differs between the kinds: actions, list bounds, which peers and port forms exist."""

    def __init__(self, kind: ClusterPolicyKind) -> None:
        self.kind = kind
        v1 = kind is not ClusterPolicyKind.CLUSTER_NETWORK_POLICY
        self.max_rules = 100 if v1 else 25  # spec.ingress / spec.egress, and peers and ports of a rule
        self.actions: dict[str, RuleAction] = {"Deny": RuleAction.DENY}
        if kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
            self.actions |= {"Accept": RuleAction.ACCEPT, "Pass": RuleAction.PASS}
        else:
            self.actions["Allow"] = RuleAction.ACCEPT
            if kind is ClusterPolicyKind.ADMIN_NETWORK_POLICY:
                self.actions["Pass"] = RuleAction.PASS
        self.ports_key = "ports" if v1 else "protocols"
        # BaselineAdminNetworkPolicyEgressPeer has no domainNames.
        self.egress_peers: tuple[str, ...] = ("namespaces", "pods", "nodes", "networks")
        if kind is not ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY:
            self.egress_peers += ("domainNames",)
        # v1alpha1 NamespacedPod requires both selectors; v1alpha2 only podSelector (namespaceSelector: {} = all).
        self.pods_namespace_selector_required = v1


def _one_of(ctx: _Ctx, raw: Mapping[str, Any], path: str, fields: Sequence[str]) -> str:
    """The one field of ``fields`` that is set (MinProperties=1, MaxProperties=1); unknown fields are left to
    `netpol_auditor.validation`."""
    present = [f for f in fields if raw.get(f) is not None]
    if not present:
        ctx.required(path, f"exactly one of {', '.join(fields)} must be set")
    if len(present) > 1:
        ctx.forbidden(path, f"exactly one of {', '.join(fields)} may be set, not {' and '.join(present)}")
    return present[0]


def _bounded(ctx: _Ctx, value: Any, path: str, low: int, high: int) -> list[Any]:
    items = ctx.sequence(value, path)
    if len(items) < low:
        ctx.invalid(path, items, f"should have at least {low} items")
    if len(items) > high:
        ctx.fail(path, f"Too many: {len(items)}: must have at most {high} items")
    return items


def _bounded_int(ctx: _Ctx, value: Any, path: str, low: int, high: int) -> int:
    if value is None:
        ctx.required(path)
    number = ctx.integer(value, path)
    if not low <= number <= high:
        ctx.invalid(path, number, f"must be between {low} and {high}, inclusive")
    return number


def _namespaced_pods(ctx: _Ctx, version: _Version, value: Any, path: str) -> NamespacedPods:
    raw = ctx.mapping(value, path)
    if raw.get("podSelector") is None:
        ctx.required(f"{path}.podSelector")
    if raw.get("namespaceSelector") is None and version.pods_namespace_selector_required:
        ctx.required(f"{path}.namespaceSelector")
    return NamespacedPods(
        _selector(ctx, raw.get("namespaceSelector"), f"{path}.namespaceSelector"),
        _selector(ctx, raw.get("podSelector"), f"{path}.podSelector"),
    )


def _subject(ctx: _Ctx, version: _Version, value: Any) -> ClusterSubject:
    if value is None:
        ctx.required("spec.subject")
    raw = ctx.mapping(value, "spec.subject")
    which = _one_of(ctx, raw, "spec.subject", ("namespaces", "pods"))
    if which == "namespaces":
        return ClusterSubject(namespaces=_selector(ctx, raw["namespaces"], "spec.subject.namespaces"))
    return ClusterSubject(pods=_namespaced_pods(ctx, version, raw["pods"], "spec.subject.pods"))


def _peer(ctx: _Ctx, version: _Version, value: Any, path: str, egress: bool) -> ClusterPeer:
    raw = ctx.mapping(value, path)
    which = _one_of(ctx, raw, path, version.egress_peers if egress else ("namespaces", "pods"))
    fpath = f"{path}.{which}"
    if which == "namespaces":
        return ClusterPeer(namespaces=_selector(ctx, raw[which], fpath))
    if which == "pods":
        return ClusterPeer(pods=_namespaced_pods(ctx, version, raw[which], fpath))
    if which == "nodes":
        return ClusterPeer(nodes=_selector(ctx, raw[which], fpath))
    items = _bounded(ctx, raw[which], fpath, 1, 25)
    texts = [ctx.string(item, f"{fpath}[{i}]") for i, item in enumerate(items)]
    if len(set(texts)) != len(texts):  # x-kubernetes-list-type: set
        ctx.fail(fpath, f"Duplicate value: {next(t for t in texts if texts.count(t) > 1)!r}")
    if which == "networks":
        for i, text in enumerate(texts):
            if len(text) > 43:
                ctx.invalid(f"{fpath}[{i}]", text, "may not be longer than 43")
            _parse_cidr(ctx, text, f"{fpath}[{i}]")
        return ClusterPeer(networks=tuple(texts))
    for i, text in enumerate(texts):
        if not _DOMAIN_NAME_RE.match(text):
            ctx.invalid(f"{fpath}[{i}]", text, f"should match '{_DOMAIN_NAME_RE.pattern}'")
    return ClusterPeer(domain_names=tuple(texts))


def _range(ctx: _Ctx, raw: Mapping[str, Any], path: str, protocol: Protocol) -> ClusterPort:
    start = _bounded_int(ctx, raw.get("start"), f"{path}.start", 1, 65535)
    end = _bounded_int(ctx, raw.get("end"), f"{path}.end", 1, 65535)
    if not start < end:  # v1alpha2 PortRange XValidation "self.start < self.end"; v1alpha1 documents the same
        ctx.invalid(path, {"start": start, "end": end}, "Start port must be less than End port")
    return ClusterPort(protocol, start, end)


def _v1alpha1_port(ctx: _Ctx, value: Any, path: str) -> ClusterPort:
    raw = ctx.mapping(value, path)
    which = _one_of(ctx, raw, path, ("portNumber", "namedPort", "portRange"))
    fpath = f"{path}.{which}"
    if which == "namedPort":
        name = ctx.string(raw[which], fpath)
        return ClusterPort(None, named_port=name)
    inner = ctx.mapping(raw[which], fpath)
    protocol = _protocol(ctx, inner.get("protocol"), f"{fpath}.protocol")  # +kubebuilder:default=TCP
    if which == "portRange":
        return _range(ctx, inner, fpath, protocol)
    return ClusterPort(protocol, _bounded_int(ctx, inner.get("port"), f"{fpath}.port", 1, 65535))


_V1ALPHA2_PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "sctp": Protocol.SCTP}


def _v1alpha2_protocol(ctx: _Ctx, value: Any, path: str) -> ClusterPort:
    raw = ctx.mapping(value, path)
    which = _one_of(ctx, raw, path, ("tcp", "udp", "sctp", "destinationNamedPort"))
    fpath = f"{path}.{which}"
    if which == "destinationNamedPort":
        name = ctx.string(raw[which], fpath)
        if not name:
            ctx.required(fpath)
        return ClusterPort(None, named_port=name)
    inner = ctx.mapping(raw[which], fpath)
    if inner.get("destinationPort") is None:  # ClusterNetworkPolicyProtocolTCP: MinProperties=1
        ctx.required(f"{fpath}.destinationPort")
    dpath = f"{fpath}.destinationPort"
    port = ctx.mapping(inner["destinationPort"], dpath)
    kind = _one_of(ctx, port, dpath, ("number", "range"))
    protocol = _V1ALPHA2_PROTOCOLS[which]
    if kind == "range":
        return _range(ctx, ctx.mapping(port["range"], f"{dpath}.range"), f"{dpath}.range", protocol)
    return ClusterPort(protocol, _bounded_int(ctx, port["number"], f"{dpath}.number", 1, 65535))


def _rules(ctx: _Ctx, version: _Version, value: Any, path: str, egress: bool) -> tuple[ClusterRule, ...]:
    peers_key = "to" if egress else "from"
    rules: list[ClusterRule] = []
    for i, item in enumerate(_bounded(ctx, value, path, 0, version.max_rules)):
        rpath = f"{path}[{i}]"
        raw = ctx.mapping(item, rpath)
        name = raw.get("name")
        name = "" if name is None else ctx.string(name, f"{rpath}.name")
        if len(name) > 100:
            ctx.invalid(f"{rpath}.name", name, "may not be longer than 100")
        action_raw = raw.get("action")
        if action_raw is None:
            ctx.required(f"{rpath}.action")
        if action_raw not in version.actions:
            ctx.unsupported(f"{rpath}.action", action_raw, list(version.actions))
        if raw.get(peers_key) is None:
            ctx.required(f"{rpath}.{peers_key}")
        peers = tuple(
            _peer(ctx, version, p, f"{rpath}.{peers_key}[{j}]", egress)
            for j, p in enumerate(_bounded(ctx, raw[peers_key], f"{rpath}.{peers_key}", 1, version.max_rules))
        )
        ports: tuple[ClusterPort, ...] = ()
        ports_key = version.ports_key
        if raw.get(ports_key) is not None:
            parse = _v1alpha2_protocol if ports_key == "protocols" else _v1alpha1_port
            ports = tuple(
                parse(ctx, p, f"{rpath}.{ports_key}[{j}]")
                for j, p in enumerate(_bounded(ctx, raw[ports_key], f"{rpath}.{ports_key}", 1, version.max_rules))
            )
        if egress and any(p.named_port is not None for p in ports) and any(
            p.networks or p.nodes is not None or p.domain_names for p in peers
        ):
            # The egress rule's XValidation on both CRDs.
            ctx.invalid(rpath, f"{ports_key} with a named port", "networks/nodes/domainNames peer cannot be set "
                        "with namedPorts since there are no namedPorts for networks/nodes/domainNames")
        rules.append(ClusterRule(version.actions[action_raw], peers, ports, name))
    return tuple(rules)


def parse_cluster_policy(obj: Mapping[str, Any], source: str = "<input>") -> ClusterPolicy | None:
    """Parse an AdminNetworkPolicy, BaselineAdminNetworkPolicy or ClusterNetworkPolicy API dict; None for any other
    kind or apiVersion (an unknown version of these kinds is not guessed at)."""
    if not isinstance(obj, Mapping):
        raise ManifestError(source, "", "", f"expected a Kubernetes object, got {type(obj).__name__}")
    kind_raw = obj.get("kind")
    if not isinstance(kind_raw, str) or kind_raw not in CLUSTER_POLICY_KINDS:
        return None
    if obj.get("apiVersion") != CLUSTER_POLICY_KINDS[kind_raw]:
        return None
    kind = ClusterPolicyKind(kind_raw)
    version = _Version(kind)
    meta_raw = obj.get("metadata")
    meta: Mapping[str, Any] = meta_raw if isinstance(meta_raw, Mapping) else {}
    name = meta.get("name")
    ctx = _Ctx(source, f"{kind.value} {name if name else '<unnamed>'}")
    if not isinstance(meta_raw, Mapping):
        ctx.required("metadata")
    if not isinstance(name, str) or not name:
        ctx.required("metadata.name", "name or generateName is required")
    if kind is ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY and name != "default":
        # The CRD's XValidation: self.metadata.name == 'default'.
        ctx.invalid("metadata.name", name, 'Only one baseline admin network policy with metadata.name="default" '
                    "can be created in the cluster")
    if obj.get("spec") is None:
        ctx.required("spec")
    spec = ctx.mapping(obj.get("spec"), "spec")
    priority: int | None = None
    if kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
        tier_raw = spec.get("tier")
        if tier_raw is None:
            ctx.required("spec.tier")
        if tier_raw not in ("Admin", "Baseline"):
            ctx.unsupported("spec.tier", tier_raw, ["Admin", "Baseline"])
        tier = Tier(tier_raw)
    else:
        tier = Tier.ADMIN if kind is ClusterPolicyKind.ADMIN_NETWORK_POLICY else Tier.BASELINE
    if kind is not ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY:
        priority = _bounded_int(ctx, spec.get("priority"), "spec.priority", 0, 1000)
    subject = _subject(ctx, version, spec.get("subject"))
    return ClusterPolicy(
        kind=kind,
        name=name,
        tier=tier,
        priority=priority,
        subject=subject,
        ingress=_rules(ctx, version, spec.get("ingress"), "spec.ingress", egress=False),
        egress=_rules(ctx, version, spec.get("egress"), "spec.egress", egress=True),
        uid=str(meta.get("uid") or ""),
    )
