"""CNI-specific ("vendor") policies: recognised by API group and kind, never evaluated.

Cilium, Calico and Antrea policies add to or override what NetworkPolicies say, in ways this tool does not model
(Calico orders policies and can Deny before a NetworkPolicy is reached; Cilium and Antrea add allow and deny rules
of their own). Traffic of a pod such a policy selects is therefore *out of model*: this module says which pods each
one selects, and in which direction, so that ``analyze`` and the prober can leave those paths unjudged instead of
reporting verdicts (or mismatches) that may be wrong.

Where the selector is plain it is compiled into label selectors over the pod's and its namespace's labels; where
it is not understood, the policy conservatively selects every pod of its scope (its namespace, or the cluster) and
the parsed policy carries a note saying which expression was not understood. Dropping a requirement that narrows
the set further (a service account) only makes the selection larger, so that is done without giving up the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .manifests import _Ctx
from .model import NAMESPACE_NAME_LABEL, Direction, Labels, LabelSelector, SelectorOperator, SelectorRequirement
from .selectors import compile_selector
from .vendor_kinds import VENDOR_KINDS, VendorKind, vendor_kind

__all__ = [
    "VENDOR_KINDS",
    "VendorKind",
    "VendorPolicy",
    "VendorSubject",
    "parse_calico_selector",
    "parse_vendor_policy",
    "vendor_kind",
    "widened_vendor_policy",
]


@dataclass(frozen=True)
class VendorSubject:
    """Pods a vendor policy applies to: those of ``namespace`` (None: any) whose namespace's labels match
    ``namespace_selector`` and whose own labels match ``pod_selector``. ``no_pods``: a host (node) policy."""

    namespace: str | None = None
    namespace_selector: LabelSelector = field(default_factory=LabelSelector)
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    no_pods: bool = False

    def selects(self, namespace: str, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        if self.no_pods or (self.namespace is not None and namespace != self.namespace):
            return False
        return (compile_selector(self.namespace_selector).matches(namespace_labels)
                and compile_selector(self.pod_selector).matches(pod_labels))


@dataclass(frozen=True)
class VendorPolicy:
    """A vendor policy as far as this tool reads it: which pods it selects, and for which directions.

    ``notes``: what was not understood (the selection was widened to the policy's whole scope), one line each."""

    kind: VendorKind
    api_version: str
    namespace: str | None
    name: str
    subjects: tuple[VendorSubject, ...]
    directions: frozenset[Direction]
    notes: tuple[str, ...] = ()
    uid: str = ""

    @property
    def key(self) -> tuple[str, str | None, str]:
        return (self.kind.label, self.namespace, self.name)

    @property
    def display_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace is not None else self.name

    @property
    def reason(self) -> str:
        """The out-of-model reason of a path it selects, e.g. ``foreign_policy: cilium.io/v2 CiliumNetworkPolicy
        shop/web``."""
        return f"foreign_policy: {self.api_version} {self.kind.kind} {self.display_name}"

    def selects(self, namespace: str, namespace_labels: Mapping[str, str], pod_labels: Mapping[str, str]) -> bool:
        return any(s.selects(namespace, namespace_labels, pod_labels) for s in self.subjects)


# ---------------------------------------------------------------------------------------------------------------
# Selector pieces shared by the vendors: requirements aimed at the pod's labels or at its namespace.


@dataclass
class _Selection:
    """Requirements being collected for one subject, split by what they look at."""

    pod: list[SelectorRequirement] = field(default_factory=list)
    namespace: list[SelectorRequirement] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def subject(self, namespace: str | None) -> VendorSubject:
        return VendorSubject(namespace, LabelSelector(Labels(), tuple(self.namespace)),
                             LabelSelector(Labels(), tuple(self.pod)))


def _requirement(key: str, operator: SelectorOperator, values: tuple[str, ...] = ()) -> SelectorRequirement:
    return SelectorRequirement(key, operator, tuple(sorted(set(values))))


def _raw_selector(ctx: _Ctx, value: Any, path: str) -> list[SelectorRequirement]:
    """A metav1.LabelSelector written with vendor key prefixes (``k8s:app``): its requirements, keys unchecked."""
    raw = ctx.mapping(value, path)
    out = [_requirement(k, SelectorOperator.IN, (v,)) for k, v in
           ctx.labels(raw.get("matchLabels"), f"{path}.matchLabels").items()]
    for i, item in enumerate(ctx.sequence(raw.get("matchExpressions"), f"{path}.matchExpressions")):
        rpath = f"{path}.matchExpressions[{i}]"
        req = ctx.mapping(item, rpath)
        if not req.get("key"):
            ctx.required(f"{rpath}.key")
        key = ctx.string(req.get("key"), f"{rpath}.key")
        op_raw = req.get("operator")
        if op_raw not in {o.value for o in SelectorOperator}:
            ctx.unsupported(f"{rpath}.operator", op_raw, [o.value for o in SelectorOperator])
        op = SelectorOperator(op_raw)
        values = tuple(ctx.string(v, f"{rpath}.values[{j}]")
                       for j, v in enumerate(ctx.sequence(req.get("values"), f"{rpath}.values")))
        if op in (SelectorOperator.IN, SelectorOperator.NOT_IN) and not values:
            ctx.required(f"{rpath}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        out.append(_requirement(key, op, values))
    for k in raw:
        if k not in ("matchLabels", "matchExpressions"):
            ctx.fail(f"{path}.{k}", 'unknown field: a label selector has "matchLabels" and "matchExpressions"')
    return out


# ---------------------------------------------------------------------------------------------------------------
# Cilium


# docs.cilium.io "Endpoint selector" / "Label sources": a key may carry its source (``k8s:``, ``any:``); the
# namespace is the label io.kubernetes.pod.namespace, a namespace's labels io.cilium.k8s.namespace.labels.<key>.
_CILIUM_NAMESPACE = "io.kubernetes.pod.namespace"
_CILIUM_NAMESPACE_LABELS = "io.cilium.k8s.namespace.labels."
_CILIUM_NARROWING = ("io.cilium.k8s.policy.serviceaccount", "io.cilium.k8s.policy.cluster")
_CILIUM_POD_SOURCES = ("k8s", "any")


def _cilium_selection(requirements: list[SelectorRequirement], path: str) -> _Selection:
    out = _Selection()
    for req in requirements:
        source, sep, key = req.key.partition(":")
        if not sep:
            source, key = "any", req.key
        if source not in _CILIUM_POD_SOURCES:
            out.unknown.append(f"{path}: label source {source!r} of {req.key!r} (not a pod label)")
        elif key == _CILIUM_NAMESPACE:
            out.namespace.append(_requirement(NAMESPACE_NAME_LABEL, req.operator, req.values))
        elif key.startswith(_CILIUM_NAMESPACE_LABELS):
            out.namespace.append(_requirement(key.removeprefix(_CILIUM_NAMESPACE_LABELS), req.operator, req.values))
        elif key in _CILIUM_NARROWING:
            continue  # a service account or cluster only narrows the set: left out, the selection is a superset
        else:
            out.pod.append(_requirement(key, req.operator, req.values))
    return out


def _cilium(ctx: _Ctx, doc: Mapping[str, Any], kind: VendorKind, namespace: str | None) -> _Parsed:
    specs: list[tuple[str, Any]] = []
    if doc.get("spec") is not None:
        specs.append(("spec", doc["spec"]))
    specs += [(f"specs[{i}]", s) for i, s in enumerate(ctx.sequence(doc.get("specs"), "specs"))]
    if not specs:
        ctx.required("spec", "one of spec or specs must be set")
    parsed = _Parsed()
    for path, raw in specs:
        spec = ctx.mapping(raw, path)
        has_endpoints, has_nodes = spec.get("endpointSelector") is not None, spec.get("nodeSelector") is not None
        if has_endpoints == has_nodes:
            ctx.required(path, "exactly one of endpointSelector and nodeSelector must be set")
        for key, direction in (("ingress", Direction.INGRESS), ("ingressDeny", Direction.INGRESS),
                               ("egress", Direction.EGRESS), ("egressDeny", Direction.EGRESS)):
            if spec.get(key) is not None:
                ctx.sequence(spec[key], f"{path}.{key}")
                parsed.directions.add(direction)
        if has_nodes:
            _raw_selector(ctx, spec["nodeSelector"], f"{path}.nodeSelector")
            parsed.subjects.append(VendorSubject(no_pods=True))  # a host policy: nodes, never pods
            continue
        selection = _cilium_selection(
            _raw_selector(ctx, spec["endpointSelector"], f"{path}.endpointSelector"), f"{path}.endpointSelector")
        parsed.add(selection, namespace)
    return parsed


# ---------------------------------------------------------------------------------------------------------------
# Calico


class _NotUnderstood(ValueError):
    pass


_CALICO_KEY = r"[A-Za-z0-9_./-]+"
_CALICO_VALUE = r"(?:'[^']*'|\"[^\"]*\")"
_CALICO_TERMS = (
    (re.compile(r"^all\(\s*\)$"), "all"),
    (re.compile(rf"^has\(\s*(?P<key>{_CALICO_KEY})\s*\)$"), "has"),
    (re.compile(rf"^!\s*has\(\s*(?P<key>{_CALICO_KEY})\s*\)$"), "!has"),
    (re.compile(rf"^(?P<key>{_CALICO_KEY})\s*(?P<op>==|!=)\s*(?P<value>{_CALICO_VALUE})$"), "eq"),
    (re.compile(rf"^(?P<key>{_CALICO_KEY})\s+(?P<op>in|not\s+in)\s*\{{(?P<values>[^{{}}]*)\}}$"), "in"),
)
_CALICO_SET_VALUE = re.compile(rf"^\s*{_CALICO_VALUE}\s*$")


def parse_calico_selector(text: str) -> list[SelectorRequirement]:
    """The simple forms of Calico's selector language (docs.tigera.io calico "Selectors" in the NetworkPolicy
    reference), joined by ``&&``: ``all()``, ``k == 'v'``, ``k != 'v'``, ``has(k)``, ``!has(k)``,
    ``k in {'a', 'b'}``, ``k not in {'a', 'b'}``; the empty selector is ``all()``. Anything else (``||``,
    parentheses, ``!`` before an expression, ``contains``, ``starts with``, ``ends with``, ``global()``...) raises
    `_NotUnderstood` naming the term.

    ``k != 'v'`` and ``not in`` are read as also matching endpoints without ``k`` (the reference's table says "with
    the label k", its implementation matches missing labels too): the larger of the two sets, so that no pod the
    policy may select is left in the model."""
    requirements: list[SelectorRequirement] = []
    if not text.strip():
        return requirements
    for raw in _split_and(text):
        term = raw.strip()
        for pattern, form in _CALICO_TERMS:
            m = pattern.match(term)
            if m is None:
                continue
            if form == "has":
                requirements.append(_requirement(m["key"], SelectorOperator.EXISTS))
            elif form == "!has":
                requirements.append(_requirement(m["key"], SelectorOperator.DOES_NOT_EXIST))
            elif form == "eq":
                op = SelectorOperator.IN if m["op"] == "==" else SelectorOperator.NOT_IN
                requirements.append(_requirement(m["key"], op, (m["value"][1:-1],)))
            elif form == "in":
                items = [v for v in m["values"].split(",") if v.strip()]
                if not all(_CALICO_SET_VALUE.match(v) for v in items):
                    raise _NotUnderstood(term)
                op = SelectorOperator.IN if m["op"] == "in" else SelectorOperator.NOT_IN
                requirements.append(_requirement(m["key"], op, tuple(v.strip()[1:-1] for v in items)))
            break
        else:
            raise _NotUnderstood(term)
    return requirements


def _split_and(text: str) -> list[str]:
    """``&&``-separated terms, outside quotes; a ``||`` or a parenthesis outside ``has(...)``/``all()`` is left in
    its term (and not understood there)."""
    parts: list[str] = []
    quote, start, i = "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif text.startswith("&&", i):
            parts.append(text[start:i])
            start = i + 2
            i += 1
        i += 1
    parts.append(text[start:])
    return parts


# docs.tigera.io calico "Calico automatic labels": projectcalico.org/namespace on endpoints is their namespace's
# name, projectcalico.org/name on a namespace is its name; endpoints carry their namespace's labels as pcns.<key>.
_CALICO_ENDPOINT_NAMESPACE = "projectcalico.org/namespace"
_CALICO_NAMESPACE_NAME = "projectcalico.org/name"
_CALICO_NAMESPACE_LABELS = "pcns."


def _calico_selection(ctx: _Ctx, spec: Mapping[str, Any], global_: bool) -> _Selection:
    out = _Selection()
    for field_name in ("selector", "namespaceSelector") if global_ else ("selector",):
        value = spec.get(field_name)
        text = "" if value is None else ctx.string(value, f"spec.{field_name}")
        try:
            requirements = parse_calico_selector(text)
        except _NotUnderstood as exc:
            out.unknown.append(f"spec.{field_name}: {str(exc)!r} is not one of the simple forms understood")
            continue
        for req in requirements:
            if field_name == "namespaceSelector":
                key = NAMESPACE_NAME_LABEL if req.key == _CALICO_NAMESPACE_NAME else req.key
                out.namespace.append(_requirement(key, req.operator, req.values))
            elif req.key == _CALICO_ENDPOINT_NAMESPACE:
                out.namespace.append(_requirement(NAMESPACE_NAME_LABEL, req.operator, req.values))
            elif req.key.startswith(_CALICO_NAMESPACE_LABELS):
                out.namespace.append(_requirement(req.key.removeprefix(_CALICO_NAMESPACE_LABELS), req.operator,
                                                  req.values))
            else:
                out.pod.append(req)
    # serviceAccountSelector only narrows what selector selects (both must match): left out, a superset.
    if spec.get("serviceAccountSelector") is not None:
        ctx.string(spec["serviceAccountSelector"], "spec.serviceAccountSelector")
    return out


def _calico(ctx: _Ctx, doc: Mapping[str, Any], kind: VendorKind, namespace: str | None) -> _Parsed:
    spec = ctx.mapping(doc.get("spec"), "spec")
    parsed = _Parsed()
    parsed.add(_calico_selection(ctx, spec, global_=not kind.namespaced), namespace)
    ingress = ctx.sequence(spec.get("ingress"), "spec.ingress")
    egress = ctx.sequence(spec.get("egress"), "spec.egress")
    if spec.get("types") is not None:
        for i, t in enumerate(ctx.sequence(spec["types"], "spec.types")):
            if t not in ("Ingress", "Egress"):
                ctx.unsupported(f"spec.types[{i}]", t, ["Ingress", "Egress"])
            parsed.directions.add(Direction(t))
    else:
        # Calico's NetworkPolicy reference, `types`: when not given, Ingress unless there are egress rules and no
        # ingress rules (then Egress), both when there are both.
        if ingress or not egress:
            parsed.directions.add(Direction.INGRESS)
        if egress:
            parsed.directions.add(Direction.EGRESS)
    return parsed


# ---------------------------------------------------------------------------------------------------------------
# Antrea


def _antrea_applied_to(ctx: _Ctx, entries: list[Any], path: str, namespace: str | None) -> _Parsed:
    """antrea.io docs/antrea-network-policy.md, appliedTo: podSelector / namespaceSelector (ANDed; in an Antrea
    NetworkPolicy the pods of its own namespace), nodeSelector (a host policy), group, serviceAccount, service,
    externalEntitySelector."""
    parsed = _Parsed()
    for i, raw in enumerate(entries):
        epath = f"{path}[{i}]"
        entry = ctx.mapping(raw, epath)
        out = _Selection()
        if entry.get("podSelector") is not None:
            out.pod += _raw_selector(ctx, entry["podSelector"], f"{epath}.podSelector")
        if entry.get("namespaceSelector") is not None:
            out.namespace += _raw_selector(ctx, entry["namespaceSelector"], f"{epath}.namespaceSelector")
        scope = namespace
        if entry.get("nodeSelector") is not None or entry.get("externalEntitySelector") is not None:
            parsed.subjects.append(VendorSubject(no_pods=True))  # nodes or external entities, never pods
            continue
        if entry.get("serviceAccount") is not None:
            account = ctx.mapping(entry["serviceAccount"], f"{epath}.serviceAccount")
            scope = ctx.string(account.get("namespace"), f"{epath}.serviceAccount.namespace") or namespace
            out.unknown.append(f"{epath}.serviceAccount: which pods run as it is not in the manifests")
        for other in ("group", "service"):
            if entry.get(other) is not None:
                out.unknown.append(f"{epath}.{other}: its members are not resolved")
        if not (out.pod or out.namespace or out.unknown) and not any(
                entry.get(k) is not None for k in ("podSelector", "namespaceSelector")):
            ctx.required(epath, "one of podSelector, namespaceSelector, group, serviceAccount, service, "
                                "nodeSelector, externalEntitySelector must be set")
        parsed.add(out, scope)
    return parsed


def _antrea(ctx: _Ctx, doc: Mapping[str, Any], kind: VendorKind, namespace: str | None) -> _Parsed:
    spec = ctx.mapping(doc.get("spec"), "spec")
    applied = ctx.sequence(spec.get("appliedTo"), "spec.appliedTo")
    parsed = _antrea_applied_to(ctx, applied, "spec.appliedTo", namespace) if applied else _Parsed()
    for key, direction in (("ingress", Direction.INGRESS), ("egress", Direction.EGRESS)):
        for i, raw in enumerate(ctx.sequence(spec.get(key), f"spec.{key}")):
            parsed.directions.add(direction)
            rule = ctx.mapping(raw, f"spec.{key}[{i}]")
            rule_applied = ctx.sequence(rule.get("appliedTo"), f"spec.{key}[{i}].appliedTo")
            if rule_applied and not applied:
                more = _antrea_applied_to(ctx, rule_applied, f"spec.{key}[{i}].appliedTo", namespace)
                parsed.subjects += more.subjects
                parsed.notes += more.notes
    if not parsed.subjects:
        ctx.required("spec.appliedTo", "appliedTo must be set in spec or in every rule")
    return parsed


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    subjects: list[VendorSubject] = field(default_factory=list)
    directions: set[Direction] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def add(self, selection: _Selection, namespace: str | None) -> None:
        if selection.unknown:
            scope = f"every pod of namespace {namespace}" if namespace is not None else "every pod"
            self.notes += [f"{u}: taken to select {scope}" for u in selection.unknown]
            # Not understood: only the namespace it is bound to (if any) is known.
            self.subjects.append(VendorSubject(namespace))
        else:
            self.subjects.append(selection.subject(namespace))


_PARSERS = {"cilium": _cilium, "calico": _calico, "antrea": _antrea}


def _kind_and_metadata(doc: Mapping[str, Any]) -> tuple[str, VendorKind, Mapping[str, Any]] | None:
    """apiVersion, vendor kind and metadata of an API object; None if it is not one of `VENDOR_KINDS`."""
    api_version, kind_name = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind_name, str):
        return None
    kind = vendor_kind(api_version, kind_name)
    if kind is None:
        return None
    meta = doc.get("metadata")
    return api_version, kind, meta if isinstance(meta, Mapping) else {}


def parse_vendor_policy(doc: Mapping[str, Any], source: str = "<input>") -> VendorPolicy | None:
    """The vendor policy of an API object, or None if it is not one of `VENDOR_KINDS`. Malformed fields raise
    `ManifestError` naming the object and field; expressions not understood are `VendorPolicy.notes`."""
    found = _kind_and_metadata(doc)
    if found is None:
        return None
    api_version, kind, meta = found
    name = meta.get("name")
    namespace = str(meta.get("namespace") or "default") if kind.namespaced else None
    shown = f"{namespace}/{name}" if namespace is not None else str(name)
    ctx = _Ctx(source, f"{kind.kind} {shown}")
    if not isinstance(name, str) or not name:
        ctx.required("metadata.name")
    parsed = _PARSERS[kind.vendor](ctx, doc, kind, namespace)
    directions = frozenset(parsed.directions) or frozenset(Direction)  # none discernible: both
    return VendorPolicy(kind, api_version, namespace, name, tuple(parsed.subjects), directions, tuple(parsed.notes),
                        str(meta.get("uid") or ""))



def widened_vendor_policy(doc: Mapping[str, Any]) -> VendorPolicy | None:
    """A vendor policy that could not be read (the API server accepted it, this parser did not): taken to select
    every pod of its scope, both ways -- never fewer pods than it may select. None if it is not a vendor kind."""
    found = _kind_and_metadata(doc)
    if found is None:
        return None
    api_version, kind, meta = found
    namespace = str(meta.get("namespace") or "default") if kind.namespaced else None
    return VendorPolicy(kind, api_version, namespace, str(meta.get("name") or "<unnamed>"), (VendorSubject(namespace),),
                        frozenset(Direction), uid=str(meta.get("uid") or ""))
