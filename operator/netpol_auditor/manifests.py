"""Parse Pods, Namespaces, NetworkPolicies and workloads (their pod templates) from API dicts (read from the API
server or from manifest files by `netpol_auditor.manifest_files`).

Validation mirrors what the API server rejects (kubernetes/kubernetes pkg/apis/networking/validation/validation.go,
ValidateNetworkPolicySpec / ValidateNetworkPolicyPort / ValidateNetworkPolicyPeer / ValidateIPBlock, and
apimachinery ValidateLabelSelector), using the same field paths and wording, so an offline `analyze` refuses exactly
what `kubectl apply` would. Defaulting mirrors pkg/apis/networking/v1/defaults.go (SetDefaults_NetworkPolicy,
SetDefaults_NetworkPolicyPort), so offline input behaves like stored objects.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from .cluster_policy import ClusterPolicy
from .model import (
    WORKLOAD_KINDS,
    ContainerPort,
    Direction,
    IPBlock,
    Labels,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    Pod,
    Protocol,
    SelectorOperator,
    SelectorRequirement,
    Workload,
)

__all__ = ["KubeObject", "ManifestError", "parse_label_selector", "parse_object", "parse_workload"]

KubeObject = Namespace | Pod | NetworkPolicy | ClusterPolicy

_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PORT_NAME_CHARS_RE = re.compile(r"^[-a-z0-9]+$")


class ManifestError(ValueError):
    """Malformed input. ``str()`` is ``"<file>: <Kind> <ns>/<name>: <field.path>: <problem>"``."""

    def __init__(self, source: str, obj: str, path: str, problem: str) -> None:
        self.source = source
        self.obj = obj
        self.path = path
        self.problem = problem
        parts = [p for p in (source, obj, path) if p]
        super().__init__(": ".join([*parts, problem]))


def _quote(value: Any) -> str:
    # Go's field.Invalid prints strings quoted and numbers bare (apimachinery util/validation/field/errors.go).
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, default=str)


class _Ctx:
    """Where we are while parsing one object: raises ManifestError naming file, object and field."""

    def __init__(self, source: str, obj: str) -> None:
        self.source = source
        self.obj = obj

    def fail(self, path: str, problem: str) -> NoReturn:
        raise ManifestError(self.source, self.obj, path, problem)

    def invalid(self, path: str, value: Any, detail: str) -> NoReturn:
        self.fail(path, f"Invalid value: {_quote(value)}: {detail}")

    def required(self, path: str, detail: str = "") -> NoReturn:
        self.fail(path, f"Required value: {detail}" if detail else "Required value")

    def forbidden(self, path: str, detail: str) -> NoReturn:
        self.fail(path, f"Forbidden: {detail}")

    def unsupported(self, path: str, value: Any, supported: Sequence[str]) -> NoReturn:
        listed = ", ".join(json.dumps(s) for s in supported)
        self.fail(path, f"Unsupported value: {_quote(value)}: supported values: {listed}")

    # -- typed getters -------------------------------------------------------------------------------------------
    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.invalid(path, value, f"must be an object, not {type(value).__name__}")
        return value

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.invalid(path, value, f"must be a list, not {type(value).__name__}")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            self.invalid(path, value, f"must be a string, not {type(value).__name__}")
        return value

    def integer(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            self.invalid(path, value, f"must be an integer, not {type(value).__name__}")
        return value

    def labels(self, value: Any, path: str) -> Labels:
        raw = self.mapping(value, path)
        out: dict[str, str] = {}
        for key, val in raw.items():
            if not isinstance(key, str):
                self.invalid(path, key, "label keys must be strings")
            if val is None:
                val = ""  # JSON null decodes to the empty string in a Go map[string]string
            if not isinstance(val, str):
                # The API server rejects `version: 1` (a number): quote it in YAML, `version: "1"`.
                self.invalid(f"{path}.{key}", val, "label values must be strings (quote numbers and booleans)")
            out[key] = val
        return Labels(out)


def _protocol(ctx: _Ctx, value: Any, path: str) -> Protocol:
    if value is None:
        return Protocol.TCP  # SetDefaults_NetworkPolicyPort / SetDefaults_ContainerPort: TCP
    if not isinstance(value, str) or value not in Protocol.__members__:
        ctx.unsupported(path, value, ["TCP", "UDP", "SCTP"])
    return Protocol(value)


def _check_port_number(ctx: _Ctx, value: int, path: str) -> None:
    if not 1 <= value <= 65535:
        ctx.invalid(path, value, "must be between 1 and 65535, inclusive")


def _check_port_name(ctx: _Ctx, value: str, path: str) -> None:
    # apimachinery util/validation IsValidPortName (IANA_SVC_NAME).
    if len(value) > 15:
        ctx.invalid(path, value, "must be no more than 15 characters")
    if not _PORT_NAME_CHARS_RE.match(value):
        ctx.invalid(path, value, "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search(r"[a-z]", value):
        ctx.invalid(path, value, "must contain at least one letter (a-z)")
    if "--" in value:
        ctx.invalid(path, value, "must not contain consecutive hyphens")
    if value.startswith("-") or value.endswith("-"):
        ctx.invalid(path, value, "must not begin or end with a hyphen")


def _check_label_key(ctx: _Ctx, key: str, path: str) -> None:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        ctx.invalid(path, key, "prefix part must be a lowercase RFC 1123 subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME_RE.match(name):
        ctx.invalid(
            path,
            key,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character, at most 63 characters",
        )


def _check_label_value(ctx: _Ctx, value: str, path: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE_RE.match(value):
        ctx.invalid(
            path,
            value,
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character, at most 63 characters",
        )


def _selector(ctx: _Ctx, value: Any, path: str) -> LabelSelector:
    """metav1.LabelSelector, validated like apimachinery meta/v1/validation ValidateLabelSelector."""
    raw = ctx.mapping(value, path)
    match_labels = ctx.labels(raw.get("matchLabels"), f"{path}.matchLabels")
    for key, val in match_labels.items():
        _check_label_key(ctx, key, f"{path}.matchLabels")
        _check_label_value(ctx, val, f"{path}.matchLabels")
    requirements: list[SelectorRequirement] = []
    for i, item in enumerate(ctx.sequence(raw.get("matchExpressions"), f"{path}.matchExpressions")):
        rpath = f"{path}.matchExpressions[{i}]"
        req = ctx.mapping(item, rpath)
        if req.get("key") in (None, ""):
            ctx.required(f"{rpath}.key", "")
        key = ctx.string(req.get("key"), f"{rpath}.key")
        _check_label_key(ctx, key, f"{rpath}.key")
        op_raw = req.get("operator")
        if not isinstance(op_raw, str) or op_raw not in {o.value for o in SelectorOperator}:
            ctx.invalid(f"{rpath}.operator", op_raw, "not a valid selector operator")
        op = SelectorOperator(op_raw)
        values = [
            ctx.string(v, f"{rpath}.values[{j}]")
            for j, v in enumerate(ctx.sequence(req.get("values"), f"{rpath}.values"))
        ]
        if op in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not values:
            ctx.required(f"{rpath}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        if op in (SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST) and values:
            ctx.forbidden(f"{rpath}.values", "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        for j, v in enumerate(values):
            _check_label_value(ctx, v, f"{rpath}.values[{j}]")
        requirements.append(SelectorRequirement(key, op, tuple(sorted(set(values)))))
    return LabelSelector(match_labels, tuple(requirements))


def parse_label_selector(value: Any, source: str, obj: str, path: str) -> LabelSelector:
    """A metav1.LabelSelector written outside a manifest (an expectation's podSelector), validated as the API server
    validates one; a problem raises `ManifestError` naming ``source``, ``obj`` and the field ``path``."""
    return _selector(_Ctx(source, obj), value, path)


def _ip_block(ctx: _Ctx, value: Any, path: str) -> IPBlock:
    raw = ctx.mapping(value, path)
    cidr = raw.get("cidr")
    if cidr in (None, ""):
        ctx.required(f"{path}.cidr")
    cidr = ctx.string(cidr, f"{path}.cidr")
    net = _parse_cidr(ctx, cidr, f"{path}.cidr")
    excepts: list[str] = []
    for i, item in enumerate(ctx.sequence(raw.get("except"), f"{path}.except")):
        epath = f"{path}.except[{i}]"
        text = ctx.string(item, epath)
        enet = _parse_cidr(ctx, text, epath)
        # ValidateIPBlock: an except entry must be a strict subset of cidr (same family, longer prefix, inside).
        if enet.version != net.version or enet.prefixlen <= net.prefixlen or not enet.subnet_of(net):  # type: ignore[arg-type]
            ctx.invalid(epath, text, "must be a strict subset of `cidr`")
        excepts.append(text)
    return IPBlock(cidr, tuple(excepts))


def _parse_cidr(ctx: _Ctx, text: str, path: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        if "/" not in text:  # Go's net.ParseCIDR (ValidateCIDR) needs the prefix length: a bare address is refused
            raise ValueError(text)
        # strict=False: like Go's ParseCIDR, host bits are allowed and masked off.
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        ctx.invalid(path, text, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")


def _policy_port(ctx: _Ctx, value: Any, path: str) -> NetworkPolicyPort:
    raw = ctx.mapping(value, path)
    protocol = _protocol(ctx, raw.get("protocol"), f"{path}.protocol")
    port_raw = raw.get("port")
    end_raw = raw.get("endPort")
    end_port = None if end_raw is None else ctx.integer(end_raw, f"{path}.endPort")
    port: int | str | None
    if port_raw is None:
        port = None
        if end_port is not None:
            ctx.invalid(f"{path}.endPort", end_port, "may not be specified when `port` is not specified")
    elif isinstance(port_raw, int) and not isinstance(port_raw, bool):
        port = port_raw
        _check_port_number(ctx, port, f"{path}.port")
        if end_port is not None:
            if end_port < port:
                ctx.invalid(f"{path}.endPort", end_port, "must be greater than or equal to `port`")
            _check_port_number(ctx, end_port, f"{path}.endPort")
    elif isinstance(port_raw, str):
        port = port_raw
        if end_port is not None:
            ctx.invalid(f"{path}.endPort", end_port, "may not be specified when `port` is non-numeric")
        _check_port_name(ctx, port, f"{path}.port")
    else:
        ctx.invalid(f"{path}.port", port_raw, "must be an integer or a port name")
    return NetworkPolicyPort(protocol, port, end_port)


def _peer(ctx: _Ctx, value: Any, path: str) -> NetworkPolicyPeer:
    raw = ctx.mapping(value, path)
    pod_sel = None if raw.get("podSelector") is None else _selector(ctx, raw["podSelector"], f"{path}.podSelector")
    ns_raw = raw.get("namespaceSelector")
    ns_sel = None if ns_raw is None else _selector(ctx, ns_raw, f"{path}.namespaceSelector")
    block = None if raw.get("ipBlock") is None else _ip_block(ctx, raw["ipBlock"], f"{path}.ipBlock")
    count = sum(x is not None for x in (pod_sel, ns_sel, block))
    if count == 0:
        ctx.required(path, "must specify a peer")
    if count > 1 and block is not None:
        ctx.forbidden(path, "may not specify both ipBlock and another peer")
    return NetworkPolicyPeer(pod_sel, ns_sel, block)


def _rules(ctx: _Ctx, value: Any, path: str, peers_key: str) -> tuple[NetworkPolicyRule, ...]:
    rules: list[NetworkPolicyRule] = []
    for i, item in enumerate(ctx.sequence(value, path)):
        rpath = f"{path}[{i}]"
        raw = ctx.mapping(item, rpath)
        ports = tuple(
            _policy_port(ctx, p, f"{rpath}.ports[{j}]")
            for j, p in enumerate(ctx.sequence(raw.get("ports"), f"{rpath}.ports"))
        )
        peers = tuple(
            _peer(ctx, p, f"{rpath}.{peers_key}[{j}]")
            for j, p in enumerate(ctx.sequence(raw.get(peers_key), f"{rpath}.{peers_key}"))
        )
        rules.append(NetworkPolicyRule(ports, peers))
    return tuple(rules)


def _network_policy(ctx: _Ctx, obj: Mapping[str, Any], namespace: str, name: str, uid: str) -> NetworkPolicy:
    spec = ctx.mapping(obj.get("spec"), "spec")
    # spec.podSelector omitted = {} (select every pod in the namespace).
    pod_selector = _selector(ctx, spec.get("podSelector"), "spec.podSelector")
    ingress = _rules(ctx, spec.get("ingress"), "spec.ingress", "from")
    egress = _rules(ctx, spec.get("egress"), "spec.egress", "to")
    types_raw = ctx.sequence(spec.get("policyTypes"), "spec.policyTypes")
    if len(types_raw) > 2:
        ctx.invalid("spec.policyTypes", types_raw, "may not specify more than two policyTypes")
    types: set[Direction] = set()
    for i, t in enumerate(types_raw):
        if t not in ("Ingress", "Egress"):
            ctx.unsupported(f"spec.policyTypes[{i}]", t, ["Ingress", "Egress"])
        types.add(Direction(t))
    if not types:
        # SetDefaults_NetworkPolicy (pkg/apis/networking/v1/defaults.go): no policyTypes means Ingress, plus Egress
        # when the policy has any egress rule.
        types.add(Direction.INGRESS)
        if egress:
            types.add(Direction.EGRESS)
    return NetworkPolicy(namespace, name, pod_selector, frozenset(types), ingress, egress, uid)


def _container_ports(ctx: _Ctx, spec: Mapping[str, Any], path: str) -> tuple[ContainerPort, ...]:
    """The ports a PodSpec's containers declare; ``path``: where the PodSpec is (``spec``, ``spec.template.spec``)."""
    ports: list[ContainerPort] = []
    for ci, container in enumerate(ctx.sequence(spec.get("containers"), f"{path}.containers")):
        cpath = f"{path}.containers[{ci}]"
        craw = ctx.mapping(container, cpath)
        for pi, port in enumerate(ctx.sequence(craw.get("ports"), f"{cpath}.ports")):
            ppath = f"{cpath}.ports[{pi}]"
            praw = ctx.mapping(port, ppath)
            number = ctx.integer(praw.get("containerPort"), f"{ppath}.containerPort")
            _check_port_number(ctx, number, f"{ppath}.containerPort")
            pname = praw.get("name")
            if pname is not None:
                pname = ctx.string(pname, f"{ppath}.name")
                _check_port_name(ctx, pname, f"{ppath}.name")
            ports.append(
                ContainerPort(number, _protocol(ctx, praw.get("protocol"), f"{ppath}.protocol"), pname or None)
            )
    return tuple(ports)


def _host_network(ctx: _Ctx, spec: Mapping[str, Any], path: str) -> bool:
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        ctx.invalid(f"{path}.hostNetwork", host_network, "must be a boolean")
    return host_network


def _controller(ctx: _Ctx, meta: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, name) of the controlling owner reference (else the first one), or empty strings."""
    owner_kind = owner_name = ""
    for i, ref in enumerate(ctx.sequence(meta.get("ownerReferences"), "metadata.ownerReferences")):
        raw = ctx.mapping(ref, f"metadata.ownerReferences[{i}]")
        if raw.get("controller") or not owner_kind:
            owner_kind, owner_name = str(raw.get("kind", "")), str(raw.get("name", ""))
    return owner_kind, owner_name


def _pod(ctx: _Ctx, obj: Mapping[str, Any], meta: Mapping[str, Any], namespace: str, name: str, uid: str) -> Pod:
    spec = ctx.mapping(obj.get("spec"), "spec")
    status = ctx.mapping(obj.get("status"), "status")
    ports = _container_ports(ctx, spec, "spec")
    ips: list[str] = []
    for i, entry in enumerate(ctx.sequence(status.get("podIPs"), "status.podIPs")):
        ip = ctx.mapping(entry, f"status.podIPs[{i}]").get("ip")
        if ip:
            ips.append(_ip(ctx, ip, f"status.podIPs[{i}].ip"))
    if not ips and status.get("podIP"):
        ips.append(_ip(ctx, status.get("podIP"), "status.podIP"))
    owner_kind, owner_name = _controller(ctx, meta)
    host_network = _host_network(ctx, spec, "spec")
    phase = status.get("phase") or "Pending"
    return Pod(
        namespace=namespace,
        name=name,
        uid=uid,
        labels=ctx.labels(meta.get("labels"), "metadata.labels"),
        phase=ctx.string(phase, "status.phase"),
        pod_ips=tuple(ips),
        node_name=str(spec.get("nodeName") or ""),
        host_network=host_network,
        container_ports=ports,
        owner_kind=owner_kind,
        owner_name=owner_name,
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
        deleting=meta.get("deletionTimestamp") is not None,
        # As written in a manifest (`status: {}` is how `kubectl create --dry-run=client -o yaml` writes it).
        planned=not status,
    )


def _ip(ctx: _Ctx, value: Any, path: str) -> str:
    text = ctx.string(value, path)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        ctx.invalid(path, text, "must be a valid IP address")


def parse_object(obj: Mapping[str, Any], source: str = "<input>") -> KubeObject | None:
    """Parse one API object dict. Returns None for kinds NetworkPolicy semantics do not depend on.

    AdminNetworkPolicy, BaselineAdminNetworkPolicy and ClusterNetworkPolicy are parsed by
    `netpol_auditor.cluster_manifests` (imported here, not at the top: it builds on this module's helpers)."""
    if not isinstance(obj, Mapping):
        raise ManifestError(source, "", "", f"expected a Kubernetes object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind not in ("Pod", "Namespace", "NetworkPolicy"):
        from .cluster_manifests import parse_cluster_policy

        return parse_cluster_policy(obj, source)
    api_version = obj.get("apiVersion")
    if kind == "NetworkPolicy" and api_version not in (None, "networking.k8s.io/v1"):
        return None
    ctx, meta, namespace, name = _object_ctx(obj, kind, source)
    uid = str(meta.get("uid") or "")
    if kind == "Namespace":
        return Namespace(name, ctx.labels(meta.get("labels"), "metadata.labels"), uid)
    assert namespace is not None
    if kind == "Pod":
        return _pod(ctx, obj, meta, namespace, name, uid)
    return _network_policy(ctx, obj, namespace, name, uid)


def _object_ctx(obj: Mapping[str, Any], kind: str, source: str) -> tuple[_Ctx, Mapping[str, Any], str | None, str]:
    """The parsing context, metadata, namespace (None if cluster-scoped) and name of a namespaced or cluster object."""
    meta_raw = obj.get("metadata")
    meta: Mapping[str, Any] = meta_raw if isinstance(meta_raw, Mapping) else {}
    name = meta.get("name")
    namespace = None if kind == "Namespace" else str(meta.get("namespace") or "default")
    shown = str(name) if name else "<unnamed>"
    ctx = _Ctx(source, f"{kind} {namespace}/{shown}" if namespace is not None else f"{kind} {shown}")
    if not isinstance(meta_raw, Mapping):
        ctx.required("metadata")
    if not isinstance(name, str) or not name:
        ctx.required("metadata.name", "name or generateName is required")
    return ctx, meta, namespace, name


def parse_workload(obj: Mapping[str, Any], source: str = "<input>") -> Workload | None:
    """Parse a Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job or CronJob into what its
    pod template gives its pods. Returns None for other kinds. The template's own ``metadata.namespace`` is not read:
    the controller creates its pods in its own namespace."""
    if not isinstance(obj, Mapping):
        raise ManifestError(source, "", "", f"expected a Kubernetes object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind not in WORKLOAD_KINDS:
        return None
    ctx, meta, namespace, name = _object_ctx(obj, kind, source)
    assert namespace is not None
    spec = ctx.mapping(obj.get("spec"), "spec")
    selector: LabelSelector | None = None
    if kind == "CronJob":
        job_spec = ctx.mapping(ctx.mapping(spec.get("jobTemplate"), "spec.jobTemplate").get("spec"),
                               "spec.jobTemplate.spec")
        path, template_raw = "spec.jobTemplate.spec.template", job_spec.get("template")
    else:
        path, template_raw = "spec.template", spec.get("template")
        if kind == "ReplicationController":  # a plain label map, not a LabelSelector
            selector = LabelSelector(ctx.labels(spec.get("selector"), "spec.selector"))
        elif spec.get("selector") is not None:
            selector = _selector(ctx, spec.get("selector"), "spec.selector")
    if template_raw is None:
        ctx.required(path)
    template = ctx.mapping(template_raw, path)
    template_meta = ctx.mapping(template.get("metadata"), f"{path}.metadata")
    labels = ctx.labels(template_meta.get("labels"), f"{path}.metadata.labels")
    for key, value in labels.items():
        _check_label_key(ctx, key, f"{path}.metadata.labels")
        _check_label_value(ctx, value, f"{path}.metadata.labels")
    pod_spec = ctx.mapping(template.get("spec"), f"{path}.spec")
    owner_kind, owner_name = _controller(ctx, meta)
    return Workload(
        kind=kind,
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid") or ""),
        labels=labels,
        selector=selector,
        container_ports=_container_ports(ctx, pod_spec, f"{path}.spec"),
        host_network=_host_network(ctx, pod_spec, f"{path}.spec"),
        owner_kind=owner_kind,
        owner_name=owner_name,
    )
