"""Expectations about reachability, as an expectations file writes them (checked by `netpol_auditor.expectation_check`).

An expectations file is a YAML list; each item is one expectation, in one of three forms::

    - name: the frontend reaches the api         # optional, as is `description`
      from: shop/shop-frontend[Deployment]       # an endpoint pattern or a selector (below)
      to: shop/shop-api
      port: api                                  # a number, or a container port name of the destination
      protocol: TCP                              # the default
      allowed: true                              # every (from, to) pair allowed; false: every pair denied
    - to: shop/shop-db                           # these sources are allowed, every other endpoint denied
      port: 5432
      onlyFrom: [shop/shop-api, shop/shop-backup]
    - from: shop/shop-backup                     # these destinations are allowed, every other endpoint denied
      port: 5432
      onlyTo: [shop/shop-db]

An endpoint pattern is what ``analyze --from/--to`` take (`netpol_auditor.endpoint_patterns`): ``ns/name[Kind]``,
``ns/name``, a namespace, a glob, or an IP address. A selector picks endpoints as a NetworkPolicy peer picks pods:
``{namespace: shop, podSelector: {matchLabels: {app: web}}}`` or ``{namespaceSelector: {...}, podSelector: {...}}``
(one of ``namespace`` and ``namespaceSelector`` is required: ``namespaceSelector: {}`` is every namespace; without
``podSelector``, every endpoint there).

"Every other endpoint" is every endpoint of the input (and no address outside the cluster but those listed): the
check is as complete as the manifests it is given. An unknown key, a value of the wrong type, a reference that picks
no endpoint and a named port a destination does not declare are errors, never an expectation that silently holds.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import yaml

from .manifests import ManifestError, parse_label_selector
from .model import LabelSelector, Protocol
from .validation import UnknownField
from .yaml_loader import StrictLoader

__all__ = ["EndpointRef", "Expectation", "Form", "InvalidExpectations", "Selector", "parse_expectations"]


class InvalidExpectations(ValueError):
    """An expectations file that cannot be checked: each problem names the file, line, expectation and field."""

    def __init__(self, problems: Sequence[ManifestError]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = list(problems)


class Form(StrEnum):
    """What an expectation says: the key that tells its form."""

    PAIR = "allowed"
    ONLY_FROM = "onlyFrom"
    ONLY_TO = "onlyTo"


@dataclass(frozen=True)
class Selector:
    """Endpoints picked as a NetworkPolicy peer picks pods: by namespace (name or labels) and pod labels."""

    namespace: str | None = None
    namespace_selector: LabelSelector | None = None
    pod_selector: LabelSelector | None = None

    def __str__(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace is not None else f"namespaces {self.namespace_selector}"
        return where if self.pod_selector is None else f"pods {self.pod_selector} in {where}"


EndpointRef = str | Selector  # an endpoint pattern, or a selector


@dataclass(frozen=True)
class Expectation:
    """One item of an expectations file. ``index`` counts from 0; ``line`` is where the item starts in ``source``."""

    source: str
    index: int
    line: int
    form: Form
    port: int | str  # a number, or a container port name of the destination
    protocol: Protocol = Protocol.TCP
    from_: EndpointRef | None = None
    to: EndpointRef | None = None
    allowed: bool | None = None  # the PAIR form
    only: tuple[EndpointRef, ...] = ()  # the ONLY_FROM / ONLY_TO list
    name: str = ""
    description: str = ""

    @property
    def label(self) -> str:
        """``expectation [2] "its name"``: how messages name it."""
        return f"expectation [{self.index}]" + (f' "{self.name}"' if self.name else "")

    @property
    def title(self) -> str:
        """Its name, or what it says when it has none."""
        if self.name:
            return self.name
        port = f"{self.port}/{self.protocol.value}"
        if self.form is Form.PAIR:
            return f"{self.from_} -> {self.to} on {port}: {'allowed' if self.allowed else 'denied'}"
        listed = ", ".join(map(str, self.only)) or "nothing"
        if self.form is Form.ONLY_FROM:
            return f"only {listed} -> {self.to} on {port}"
        return f"{self.from_} -> only {listed} on {port}"

    @property
    def where(self) -> str:
        """``FILE:LINE``, as compilers and CI annotations write a place in a file."""
        return f"{self.source}:{self.line}"

    def problem(self, path: str, text: str) -> ManifestError:
        return ManifestError(self.where, self.label, path, text)


# ----------------------------------------------------------------------------------------------------------------
# Reading.

_KEYS = ("name", "description", "from", "to", "port", "protocol", "allowed", "onlyFrom", "onlyTo")
_SELECTOR_KEYS = ("namespace", "namespaceSelector", "podSelector")
_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # IANA_SVC_NAME, as containerPorts name them
_SHAPE = "a list of expectations (- from: NS/NAME, to: NS/NAME, port: PORT, allowed: true|false)"
_REF_SHAPE = (
    "an endpoint (NAMESPACE/NAME[Kind], NAMESPACE/NAME, NAMESPACE, a glob or an IP address) or a selector "
    "({namespace: NS, podSelector: {...}} or {namespaceSelector: {...}, podSelector: {...}})"
)


def parse_expectations(text: str, source: str) -> list[Expectation]:
    """The expectations in ``text`` (the file ``source``); raises `InvalidExpectations` naming every problem."""
    loader = StrictLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidExpectations([ManifestError(where, "", "", f"invalid YAML: {problem}")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, list) or not isinstance(root, yaml.SequenceNode):
        raise InvalidExpectations([ManifestError(source, "", "", f"must be {_SHAPE}, not {_type(data)}")])
    if not data:
        raise InvalidExpectations([ManifestError(source, "", "", "holds no expectations: there is nothing to check")])
    problems: list[ManifestError] = []
    out: list[Expectation] = []
    for index, (raw, node) in enumerate(zip(data, root.value, strict=True)):
        reader = _ItemReader(source, index, node.start_mark.line + 1, raw)
        expectation = reader.read()
        problems.extend(reader.problems)
        if expectation is not None:
            out.append(expectation)
    if problems:
        raise InvalidExpectations(problems)
    return out


class _ItemReader:
    """Reads one item, collecting every problem rather than stopping at the first."""

    def __init__(self, source: str, index: int, line: int, raw: Any) -> None:
        self.raw = raw
        name = raw.get("name") if isinstance(raw, Mapping) else None
        # How problems name the item: its index and line, and its name when it has a readable one.
        self.stub = Expectation(source, index, line, Form.PAIR, 0, name=name if isinstance(name, str) else "")
        self.problems: list[ManifestError] = []

    def fail(self, path: str, text: str) -> None:
        self.problems.append(self.stub.problem(path, text))

    def unknown(self, keys: Sequence[Any], known: Sequence[str], prefix: str = "") -> None:
        for key in keys:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                self.fail("", str(UnknownField(f"{prefix}{key}", close[0] if close else None)))

    def read(self) -> Expectation | None:
        raw = self.raw
        if not isinstance(raw, Mapping):
            self.fail("", f"must be a mapping (from/to, port and allowed, onlyFrom or onlyTo), not {_type(raw)}")
            return None
        self.unknown(list(raw), _KEYS)
        name = self.text(raw, "name")
        description = self.text(raw, "description")
        form = self.form(raw)
        port = self.port(raw.get("port"))
        protocol = self.protocol(raw.get("protocol"))
        allowed = raw.get("allowed")
        if form is Form.PAIR and not isinstance(allowed, bool):
            self.fail("allowed", f"must be true or false, not {_type(allowed)}")
        from_ = self.ref(raw["from"], "from") if "from" in raw else None
        to = self.ref(raw["to"], "to") if "to" in raw else None
        only: list[EndpointRef | None] = []
        if form in (Form.ONLY_FROM, Form.ONLY_TO):
            listed = raw[form.value]
            if not isinstance(listed, list):
                self.fail(form.value, f"must be a list of endpoints or selectors, not {_type(listed)}")
            else:
                only = [self.ref(item, f"{form.value}[{i}]") for i, item in enumerate(listed)]
        if self.problems or form is None or port is None or protocol is None:
            return None
        refs = [r for r in only if r is not None]
        return Expectation(
            self.stub.source, self.stub.index, self.stub.line, form, port, protocol, from_, to,
            allowed if form is Form.PAIR else None, tuple(refs), name, description,
        )  # fmt: skip

    def text(self, raw: Mapping[str, Any], key: str) -> str:
        value = raw.get(key, "")
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_type(value)}")
            return ""
        return value

    def form(self, raw: Mapping[str, Any]) -> Form | None:
        given = [f for f in Form if f.value in raw]
        if not given:
            self.fail("", "one of allowed, onlyFrom and onlyTo is required")
            return None
        if len(given) > 1:
            self.fail(given[1].value, f"{given[0].value} and {given[1].value} are two expectations: write two items")
            return None
        form = given[0]
        needs = {Form.PAIR: ("from", "to"), Form.ONLY_FROM: ("to",), Form.ONLY_TO: ("from",)}[form]
        for key in needs:
            if key not in raw:
                self.fail(key, f"Required value: {form.value} needs {' and '.join(needs)}")
        if form is Form.ONLY_FROM and "from" in raw:
            self.fail("from", "onlyFrom judges every endpoint of the input as a source: leave from out")
        if form is Form.ONLY_TO and "to" in raw:
            self.fail("to", "onlyTo judges every endpoint of the input as a destination: leave to out")
        return form

    def port(self, value: Any) -> int | str | None:
        if value is None:
            self.fail("port", "Required value: a port number or a container port name")
        elif isinstance(value, int) and not isinstance(value, bool):
            if 1 <= value <= 65535:
                return value
            self.fail("port", f"Invalid value: {value}: must be between 1 and 65535, inclusive")
        elif isinstance(value, str) and value.isdigit():
            self.fail("port", f'Invalid value: "{value}": a port number is written without quotes')
        elif isinstance(value, str) and len(value) <= 15 and _PORT_NAME.match(value) and "--" not in value:
            return value
        else:
            self.fail(
                "port", f"Invalid value: {_type(value)}: must be a port number (1-65535) or a container port name"
            )
        return None

    def protocol(self, value: Any) -> Protocol | None:
        if value is None:
            return Protocol.TCP
        if isinstance(value, str) and value.upper() in Protocol.__members__:
            return Protocol(value.upper())
        self.fail("protocol", f'Unsupported value: {_type(value)}: supported values: "TCP", "UDP", "SCTP"')
        return None

    def ref(self, value: Any, path: str) -> EndpointRef | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        if not isinstance(value, Mapping):
            self.fail(path, f"must be {_REF_SHAPE}, not {_type(value)}")
            return None
        self.unknown(list(value), _SELECTOR_KEYS, f"{path}.")
        namespace = value.get("namespace")
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            self.fail(f"{path}.namespace", f"must be a namespace name, not {_type(namespace)}")
            namespace = None
        selectors: dict[str, LabelSelector | None] = {}
        for key in ("namespaceSelector", "podSelector"):
            selectors[key] = None
            if key in value:
                try:
                    selectors[key] = parse_label_selector(value[key], self.stub.where, self.stub.label, f"{path}.{key}")
                except ManifestError as exc:
                    self.problems.append(exc)
        has_namespace, has_selector = "namespace" in value, "namespaceSelector" in value
        if has_namespace and has_selector:
            self.fail(path, "namespace and namespaceSelector: give one of them")
        elif not has_namespace and not has_selector:
            self.fail(path, "a selector needs namespace or namespaceSelector ({} is every namespace)")
        return Selector(namespace, selectors["namespaceSelector"], selectors["podSelector"])


def _type(value: Any) -> str:
    """What a value of the wrong type is, in the file's words."""
    if value is None:
        return "empty"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    return "a list" if isinstance(value, list) else "a mapping" if isinstance(value, Mapping) else type(value).__name__
