"""Read manifests for the offline commands: files, directories, stdin; YAML or JSON; ``kind: List`` dumps.

Reading is strict, after the API server (``kubectl apply --validate=strict``): an unknown field, a second object
with the same kind, namespace and name, or a Helm template is an error, because each silently changes what the
verdicts are about. Policies read: networking.k8s.io/v1 NetworkPolicy, and the cluster policies of
policy.networking.k8s.io (AdminNetworkPolicy and BaselineAdminNetworkPolicy v1alpha1, ClusterNetworkPolicy v1alpha2).
A policy kind this tool does not evaluate (Cilium, Calico, Antrea, another version of those kinds, an old
NetworkPolicy version), a document that is not a Kubernetes object and a named port no pod declares are warnings:
the analysis is still right about what it covers, but may not be about the cluster. Every problem is collected,
one line each, so one run shows them all.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cluster_manifests import CLUSTER_POLICY_KINDS
from .cluster_policy import ClusterPolicy
from .manifests import KubeObject, ManifestError, parse_object, parse_workload
from .model import WORKLOAD_KINDS, Namespace, NetworkPolicy, Pod, Workload
from .named_ports import unresolved_named_ports
from .validation import unknown_fields
from .vendor_kinds import vendor_kind
from .workloads import template_pod

if TYPE_CHECKING:
    import yaml

    from .vendor_policy import VendorPolicy

__all__ = ["Manifests", "iter_objects", "load_paths", "load_text", "read_documents", "read_manifests"]

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_NETWORK_POLICY_V1 = "networking.k8s.io/v1"
_READ_KINDS = ("Pod", "Namespace", "NetworkPolicy", *CLUSTER_POLICY_KINDS, *WORKLOAD_KINDS)
#: The apiVersion each policy kind is read in; other versions of them are warned about, not read.
_POLICY_VERSIONS = {"NetworkPolicy": _NETWORK_POLICY_V1, **CLUSTER_POLICY_KINDS}
_HELM_HINT = "render it first (helm template RELEASE CHART > rendered.yaml) and analyze the output"


@dataclass
class Manifests:
    """What the input holds: the objects read, the workloads (`WORKLOAD_KINDS`) read, and the problems found
    (``str()`` of each: one line). ``sources``: the file each object and workload was read from, by (kind,
    namespace, name); the namespace is None for a Namespace."""

    objects: list[KubeObject] = field(default_factory=list)
    workloads: list[Workload] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    warnings: list[ManifestError] = field(default_factory=list)
    sources: dict[tuple[str, str | None, str], str] = field(default_factory=dict)
    vendor_policies: list[VendorPolicy] = field(default_factory=list)


def read_manifests(paths: Sequence[str]) -> Manifests:
    """Read files, directories (recursively: *.yaml, *.yml, *.json) and ``-`` (stdin), in order."""
    reader = _Reader()
    done: set[str] = set()
    for path in paths:
        if path == "-":
            reader.text(sys.stdin.read(), "<stdin>")
            continue
        if not os.path.exists(path):
            reader.error(ManifestError(path, "", "", "no such file or directory"))
            continue
        for file in reader.files(path):
            real = os.path.realpath(file)
            if real in done:  # named twice (a directory and a file in it): one file, not a duplicate of itself
                continue
            done.add(real)
            try:
                with open(file, encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                reader.error(ManifestError(file, "", "", f"cannot read: {exc}"))
                continue
            reader.text(text, file)
    return reader.finish()


def read_documents(documents: Iterable[tuple[Any, str]], *, server_validated: bool = False) -> Manifests:
    """Read decoded documents (objects or lists), each with its source, as files are read.

    ``server_validated``: the documents come from an API server, which validated them against its own (possibly
    newer) schema, so a field this version does not know is a warning (its effect is left out), not an error."""
    reader = _Reader(server_validated=server_validated)
    for i, (doc, source) in enumerate(documents):
        reader.document(doc, source, f"document {i + 1}")
    return reader.finish()


def load_paths(paths: Sequence[str]) -> list[KubeObject]:
    """The objects of `read_manifests`; raises the first error (warnings are dropped)."""
    return _objects(read_manifests(paths))


def load_text(text: str, source: str = "<input>") -> list[KubeObject]:
    """Objects in multi-document YAML (or JSON, a YAML subset) text; raises the first error."""
    reader = _Reader()
    reader.text(text, source)
    return _objects(reader.finish())


def iter_objects(doc: Any, source: str = "<input>") -> Iterator[KubeObject]:
    """Objects in one decoded document: a single object or a ``kind: List`` / ``*List``; raises the first error."""
    reader = _Reader()
    reader.document(doc, source, "")
    yield from _objects(reader.finish())


def _objects(manifests: Manifests) -> list[KubeObject]:
    if manifests.errors:
        raise manifests.errors[0]
    return manifests.objects


class _Reader:
    def __init__(self, *, server_validated: bool = False) -> None:
        self.server_validated = server_validated
        self.out = Manifests()
        self._sources: dict[int, str] = {}  # id() of each object and workload read -> its source
        self._seen = self.out.sources  # (kind, namespace, name) -> source

    def error(self, problem: ManifestError) -> None:
        self.out.errors.append(problem)

    def warn(self, problem: ManifestError) -> None:
        self.out.warnings.append(problem)

    def finish(self) -> Manifests:
        _check_named_ports(self.out, self._sources)
        return self.out

    def files(self, path: str) -> list[str]:
        if not os.path.isdir(path):
            return [path]
        found: list[str] = []
        for root, dirs, files in os.walk(path):
            if "Chart.yaml" in files:
                hint = f"render it first (helm template RELEASE {root} > rendered.yaml) and analyze the output"
                self.error(ManifestError(root, "", "", f"a Helm chart (Chart.yaml): {hint}"))
                dirs[:] = []  # its templates are not manifests either
                continue
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(_MANIFEST_SUFFIXES))
        return found

    def text(self, text: str, source: str) -> None:
        docs: list[Any] | None = None
        if text.lstrip().startswith(("{", "[")):
            # Fast path for JSON (kubectl get -o json): a JSON parser is an order of magnitude faster than YAML's.
            try:
                loaded = json.loads(text)
            except ValueError:
                docs = None  # not one JSON document: let the YAML parser (and its error messages) handle it
            else:
                docs = loaded if isinstance(loaded, list) else [loaded]
        if docs is None:
            import yaml  # imported here: a run on JSON input alone never pays for it

            from .yaml_loader import StrictLoader

            try:
                docs = list(yaml.load_all(text, Loader=StrictLoader))
            except yaml.YAMLError as exc:
                self.error(_yaml_error(exc, text, source))
                return
        for i, doc in enumerate(docs):
            self.document(doc, source, f"document {i + 1}")

    def document(self, doc: Any, source: str, where: str) -> None:
        if doc is None:
            return  # an empty document (`---` at the end, a file of comments)
        if not isinstance(doc, Mapping):
            self.warn(ManifestError(source, where, "", f"not a Kubernetes object (a {type(doc).__name__}): skipped"))
            return
        kind, api_version = doc.get("kind"), doc.get("apiVersion")
        if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
            self._list(doc, kind, api_version, source, where)
        elif not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
            if kind in _READ_KINDS:  # meant to be read: skipping it would drop it silently
                self.error(ManifestError(source, f"{kind} {_display_name(doc)}", "apiVersion", "Required value"))
            else:
                self.warn(ManifestError(source, where, "", "not a Kubernetes object (no apiVersion and kind): skipped"))
        elif kind in _READ_KINDS and _POLICY_VERSIONS.get(kind, api_version) == api_version:
            self._object(doc, kind, source)
        elif vendor_kind(api_version, kind) is not None:
            self._vendor(doc, kind, api_version, source)
        elif "networkpolicy" in kind.lower():
            # Every other policy kind not read: cilium.io CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy,
            # (crd.)projectcalico.org NetworkPolicy and GlobalNetworkPolicy, crd.antrea.io (Cluster)NetworkPolicy,
            # other versions of the policy.networking.k8s.io kinds, networking.k8s.io/v1beta1 and extensions/v1beta1
            # NetworkPolicy, a misspelt kind.
            self.warn(
                ManifestError(
                    source,
                    f"{kind} {_display_name(doc)}",
                    "",
                    f"{api_version} {kind} is not analyzed, only networking.k8s.io/v1 NetworkPolicy, "
                    "policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy, and "
                    "policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy are: the verdicts leave out what it "
                    "allows or denies",
                )
            )
        elif kind.lower() in ("pod", "pods", "namespace", "namespaces"):
            self.warn(ManifestError(source, f"{kind} {_display_name(doc)}", "kind", f'unknown kind "{kind}": skipped'))
        # Any other kind (Service, ConfigMap, Ingress, ...) does not change a verdict: ignored.

    def _vendor(self, doc: Mapping[str, Any], kind: str, api_version: str, source: str) -> None:
        """A Cilium, Calico or Antrea policy: not evaluated (a warning), but the pods it selects are out of model."""
        from .vendor_policy import parse_vendor_policy, widened_vendor_policy  # only input with one pays for it

        name = f"{kind} {_display_name(doc)}"
        self.warn(ManifestError(
            source, name, "",
            f"{api_version} {kind} is not analyzed, only networking.k8s.io/v1 NetworkPolicy and the "
            "policy.networking.k8s.io kinds are: the paths of the pods it selects are out of model",
        ))
        try:
            policy = parse_vendor_policy(doc, source)
        except ManifestError as exc:
            if not self.server_validated:
                self.error(exc)
                return
            # The API server accepted it: taken to select every pod of its scope, both ways.
            self.warn(ManifestError(exc.source, exc.obj, exc.path, f"{exc.problem}: taken to select every pod"))
            policy = widened_vendor_policy(doc)
        assert policy is not None
        self.out.warnings.extend(ManifestError(source, name, "", note) for note in policy.notes)
        self.out.vendor_policies.append(policy)

    def _list(self, doc: Mapping[str, Any], kind: str, api_version: Any, source: str, where: str) -> None:
        items = doc.get("items") or []
        if not isinstance(items, list):
            self.error(ManifestError(source, kind, "items", "must be a list"))
            return
        item_kind = kind.removesuffix("List")
        for i, item in enumerate(items):
            if item_kind and isinstance(item, Mapping) and "kind" not in item:
                # A typed list (PodList, as the API returns it) leaves kind and apiVersion out of its items.
                item = {"kind": item_kind, "apiVersion": api_version, **item}
            self.document(item, source, f"{where} items[{i}]".strip())

    def _object(self, doc: Mapping[str, Any], kind: str, source: str) -> None:
        name = f"{kind} {_display_name(doc)}"
        if _templated(doc):
            self.error(ManifestError(source, name, "", f'a Helm template ("{{{{" in it): {_HELM_HINT}'))
            return
        unknown = unknown_fields(doc)
        if unknown and self.server_validated:
            self.out.warnings.extend(
                ManifestError(source, name, "", f"{u}: a field of a newer Kubernetes, left out of the verdicts")
                for u in unknown)
        elif unknown:
            self.out.errors.extend(ManifestError(source, name, "", str(u)) for u in unknown)
            return
        try:
            obj = parse_workload(doc, source) if kind in WORKLOAD_KINDS else parse_object(doc, source)
        except ManifestError as exc:
            self.error(exc)
            return
        if obj is None:
            return
        key = (kind, None if isinstance(obj, (Namespace, ClusterPolicy)) else obj.namespace, obj.name)
        first = self._seen.get(key)
        if first is not None:
            where = "earlier in this file" if first == source else f"in {first}"
            problem = f"duplicate object: also defined {where} (one would silently replace the other)"
            self.error(ManifestError(source, name, "", problem))
            return
        self._seen[key] = source
        if isinstance(obj, Workload):
            self.out.workloads.append(obj)
        else:
            self.out.objects.append(obj)
        self._sources[id(obj)] = source


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> ManifestError:
    template = text.find("{{")
    if template >= 0:
        # `{{ ... }}` rarely parses as YAML; when the file does not parse, it is a Helm (or other Go) template.
        line = text.count("\n", 0, template) + 1
        return ManifestError(source, "", f"line {line}", f'a Helm template ("{{{{" is not YAML): {_HELM_HINT}')
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return ManifestError(source, "", where, f"invalid YAML/JSON: {problem}")


def _display_name(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = str(meta.get("name") or "<unnamed>")
    if doc.get("kind") in ("Pod", "NetworkPolicy", *WORKLOAD_KINDS):  # namespaced: defaulted as the parser does
        return f"{meta.get('namespace') or 'default'}/{name}"
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else name


def _templated(doc: Mapping[str, Any]) -> bool:
    """`{{` where an object we read never has it: its name, namespace, labels, a workload's selector and template
    labels, or a policy's spec (a Pod's spec may hold Go templates legitimately, e.g. in a command line)."""
    meta = doc.get("metadata")
    parts: list[Any] = []
    if isinstance(meta, Mapping):
        parts += [meta.get("name"), meta.get("namespace"), meta.get("labels")]
    spec = doc.get("spec")
    if doc.get("kind") == "NetworkPolicy" or doc.get("kind") in CLUSTER_POLICY_KINDS:
        parts.append(spec)
    elif doc.get("kind") in WORKLOAD_KINDS:
        if doc.get("kind") == "CronJob":
            spec = _field(_field(spec, "jobTemplate"), "spec")
        parts += [_field(spec, "selector"), _field(_field(_field(spec, "template"), "metadata"), "labels")]
    return "{{" in json.dumps(parts, default=str)


def _field(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else None


def _check_named_ports(out: Manifests, sources: dict[int, str]) -> None:
    policies = [o for o in out.objects if isinstance(o, NetworkPolicy)]
    pods = [o for o in out.objects if isinstance(o, Pod)] + [template_pod(w) for w in out.workloads]
    for found in unresolved_named_ports(policies, pods):
        policy = found.policy
        obj = f"NetworkPolicy {policy.namespace}/{policy.name}"
        out.warnings.append(ManifestError(sources[id(policy)], obj, found.path, str(found)))
