"""Expectations (`netpol_auditor.expectations`) checked against the analysis of the input: ``netpol-auditor check``.

Every pair an expectation covers is judged by the reachability index, as ``analyze`` judges it; a pair whose verdict
is not the expected one is a `Mismatch`, reported with the deciding policies and rules (the words of ``explain``).
Under ``onlyFrom``/``onlyTo``, "every other endpoint" is every endpoint of the input: one that cannot be judged (on
the host network) or, under ``onlyTo``, has no port of that name is left out and said so, never counted as held.
A pair the expectation names that cannot be judged is a mismatch: the comfortable answer is never the default.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .endpoint_patterns import is_ip, select, split_kind
from .engine import Verdict
from .expectations import EndpointRef, Expectation, Form, InvalidExpectations, Selector
from .foreign import ForeignPaths
from .index import ReachabilityIndex
from .manifests import ManifestError
from .model import Endpoint, Labels, Namespace, PodRef, PortProtocol
from .selectors import compile_selector

__all__ = ["Mismatch", "Outcome", "Subject", "check"]


@dataclass(frozen=True)
class Subject:
    """What expectations are checked against: the index over the input, its endpoints, and each Pod of the input
    folded into a workload, to the workload's endpoint."""

    index: ReachabilityIndex
    endpoints: Sequence[PodRef]
    folded: Mapping[PodRef, PodRef] = field(default_factory=dict)
    foreign: ForeignPaths = field(default_factory=ForeignPaths)


def _word(allowed: bool | None) -> str:
    return "NOT JUDGED" if allowed is None else ("ALLOWED" if allowed else "DENIED")


@dataclass(frozen=True)
class Mismatch:
    """A pair whose verdict is not the expected one: the verdict says what the analysis found, and why."""

    expected: bool
    verdict: Verdict

    @property
    def headline(self) -> str:
        v = self.verdict
        text = f"{v.source} -> {v.destination} on {v.port}: expected {_word(self.expected)}, "
        text += f"the analysis says {_word(v.allowed)}"
        return f"{text} ({v.reason})" if v.allowed is None else text

    @property
    def why(self) -> list[str]:
        """The deciding policies and rules, in the words of ``explain`` (its first line is the headline's pair)."""
        return self.verdict.explain().split("\n")[1:]

    def __str__(self) -> str:
        return "\n".join([f"{self.headline}.", *(f"  {line}" for line in self.why)])


@dataclass(frozen=True)
class Outcome:
    """An expectation, checked: ``judged`` pairs compared, the ones that differ, and the endpoints that were left
    out (``onlyFrom``/``onlyTo``: not judged, or no such named port), each with why."""

    expectation: Expectation
    judged: int
    mismatches: tuple[Mismatch, ...] = ()
    left_out: tuple[str, ...] = ()

    @property
    def held(self) -> bool:
        return not self.mismatches

    @property
    def counts(self) -> str:
        text = f"{self.judged} pair{'s' if self.judged != 1 else ''} judged"
        if self.mismatches:
            text += f", {len(self.mismatches)} not as expected"
        if self.left_out:
            text += f"; left out: {'; '.join(self.left_out)}"
        return text

    def report(self) -> str:
        """Every mismatch with its explanation, one after the other."""
        return "\n".join(str(m) for m in self.mismatches)


def check(expectations: Sequence[Expectation], subject: Subject) -> list[Outcome]:
    """Each expectation checked against ``subject``; raises `InvalidExpectations` naming every reference that picks
    no endpoint and every named port a destination does not declare."""
    resolver = _Resolver(subject)
    problems: list[ManifestError] = []
    out: list[Outcome] = []
    for expectation in expectations:
        try:
            out.append(_check_one(expectation, resolver))
        except InvalidExpectations as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidExpectations(problems)
    return out


class _Resolver:
    def __init__(self, subject: Subject) -> None:
        self.index = subject.index
        self.folded = subject.folded
        self.foreign = subject.foreign
        self.by_name: dict[str, PodRef] = {str(ref): ref for ref in subject.endpoints}
        self.names = list(self.by_name)

    def endpoints(self, ref: EndpointRef, expectation: Expectation, path: str) -> list[Endpoint]:
        if isinstance(ref, Selector):
            found: list[Endpoint] = list(self._selected(ref))
        elif is_ip(ref):
            found = [str(ipaddress.ip_address(ref))]
        else:
            found = [self.by_name[name] for name in select(self.names, ref, self.folded)]
        if not found:
            what = f"selector ({ref})" if isinstance(ref, Selector) else f'"{ref}"'
            problem = f"{what} matches no endpoint of the input{self._hint(ref)}"
            raise InvalidExpectations([expectation.problem(path, problem)])
        return found

    def _selected(self, selector: Selector) -> Iterator[PodRef]:
        namespaces = None if selector.namespace_selector is None else compile_selector(selector.namespace_selector)
        pods = None if selector.pod_selector is None else compile_selector(selector.pod_selector)
        for ref in self.by_name.values():
            pod = self.index.get_pod(ref)
            if pod is None:
                continue
            if selector.namespace is not None and pod.namespace != selector.namespace:
                continue
            if namespaces is not None and not namespaces.matches(self._namespace_labels(pod.namespace)):
                continue
            if pods is None or pods.matches(pod.labels):
                yield ref

    def _namespace_labels(self, name: str) -> Labels:
        labels = self.index.namespace_labels(name)
        return labels if labels is not None else Namespace(name).labels

    def _hint(self, ref: EndpointRef) -> str:
        if isinstance(ref, Selector) or not self.names:
            return ""
        bases = {split_kind(name)[0]: name for name in self.names}
        close = difflib.get_close_matches(ref, [*self.names, *bases], n=1, cutoff=0.6)
        if close:
            return f' (did you mean "{bases.get(close[0], close[0])}"?)'
        return ""

    def port(self, destination: Endpoint, expectation: Expectation) -> PortProtocol | str:
        """The port to judge on ``destination``, or why there is none (a name it does not declare)."""
        if isinstance(expectation.port, int):
            return PortProtocol(expectation.port, expectation.protocol)
        named = f"{expectation.port}/{expectation.protocol.value}"
        if isinstance(destination, str):
            return f"{destination} is outside the cluster: it has no named ports (write the port number)"
        pod = self.index.get_pod(destination)
        number = pod.named_ports().get(named) if pod is not None else None
        if number is None:
            return f"{destination} declares no container port named {named}"
        return PortProtocol(int(number), expectation.protocol)


def _unique(items: Sequence[Endpoint]) -> list[Endpoint]:
    return list(dict.fromkeys(items))


def _check_one(expectation: Expectation, resolver: _Resolver) -> Outcome:
    e = expectation
    problems: list[ManifestError] = []

    def resolve(ref: EndpointRef | None, path: str) -> list[Endpoint]:
        assert ref is not None  # parse_expectations requires it for the form
        try:
            return resolver.endpoints(ref, e, path)
        except InvalidExpectations as exc:
            problems.extend(exc.problems)
            return []

    # (source, destination, expected, named): a pair the expectation does not name (one with an endpoint of "every
    # other endpoint") is left out when it cannot be judged, or, under onlyTo, when it has no port of that name.
    pairs: list[tuple[Endpoint, Endpoint, bool, bool]] = []
    if e.form is Form.PAIR:
        assert e.allowed is not None
        sources, destinations = _unique(resolve(e.from_, "from")), _unique(resolve(e.to, "to"))
        pairs = [(s, d, e.allowed, True) for s in sources for d in destinations]
    else:
        listed: list[Endpoint] = []
        for i, ref in enumerate(e.only):
            listed += resolve(ref, f"{e.form.value}[{i}]")
        chosen = set(listed)
        others = _unique([*resolver.by_name.values(), *(x for x in listed if isinstance(x, str))])
        if e.form is Form.ONLY_FROM:
            destinations = _unique(resolve(e.to, "to"))
            pairs = [(s, d, s in chosen, s in chosen) for d in destinations for s in others]
        else:
            sources = _unique(resolve(e.from_, "from"))
            pairs = [(s, d, d in chosen, d in chosen) for s in sources for d in others]
    if problems:
        raise InvalidExpectations(problems)
    pairs = [p for p in pairs if p[0] != p[1] and not (isinstance(p[0], str) and isinstance(p[1], str))]
    if not pairs:
        nothing = "no pair of distinct endpoints to judge (an endpoint and itself, or two outside addresses)"
        raise InvalidExpectations([e.problem("to" if e.to is not None else "from", nothing)])

    mismatches: list[Mismatch] = []
    left_out: dict[str, None] = {}
    judged = 0
    index = resolver.index
    ports: dict[Endpoint, PortProtocol | str] = {}
    for source, destination, expected, named in pairs:
        port = ports.get(destination)
        if port is None:
            port = ports[destination] = resolver.port(destination, e)
        if isinstance(port, str):
            # Under onlyTo, an unlisted destination without that named port has nothing to reach on it.
            if not named and e.form is Form.ONLY_TO:
                left_out[port] = None
            else:
                problems.append(e.problem("port", port))
            continue
        verdict = resolver.foreign.apply(index.verdict(source, destination, port))
        if verdict.allowed is None and not named:
            left_out[verdict.reason] = None
            continue
        judged += 1
        if verdict.allowed is not expected:
            mismatches.append(Mismatch(expected, verdict))
    if problems:
        raise InvalidExpectations(list({str(p): p for p in problems}.values()))
    return Outcome(e, judged, tuple(mismatches), tuple(left_out))
