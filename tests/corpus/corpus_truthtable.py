"""Truth tables in the upstream e2e format, and the upstream ``reachability.Expect*`` calls that build them.

The expected tables of the corpus are derived from the upstream test's own expectation calls
(kubernetes/kubernetes ``test/e2e/network/netpol/reachability.go``: ``NewReachability(pods, true)`` followed by
``Expect``, ``ExpectPeer``, ``ExpectAllIngress``, ``ExpectAllEgress``), never from our engine, so the corpus is an
independent oracle. The conformance tests of kubernetes-sigs/network-policy-api probe one pair at a time instead
(``kubernetes.PokeServer``, ``conformance/utils/kubernetes/helper.go``): their cases start from an empty table
(``default: null``) and each call fills one cell. Tables print like upstream ``TruthTable.PrettyPrint``: rows are
sources, columns destinations, ``.`` allowed, ``X`` denied, with a ``-`` in the corner (tab separated in failure
output, exactly like upstream; space aligned in the case files, because YAML block scalars cannot hold tabs).

Run ``python tests/corpus/corpus_truthtable.py fill FILE...`` to (re)write the ``table`` of every port of a case file
from its ``expect`` calls; the corpus test checks that the stored tables and the calls agree.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CASE_KIND",
    "E2E_MODEL_PODS",
    "Case",
    "ExpectError",
    "Reachability",
    "TruthTable",
    "format_side_by_side",
    "load_case",
    "model_path",
]

CASE_KIND = "TruthTableCase"
E2E_MODEL_PODS: tuple[str, ...] = tuple(f"{ns}/{pod}" for ns in "xyz" for pod in "abc")
# Upstream names the namespaces nsX, nsY, nsZ (the framework adds a random prefix; our model uses x, y, z).
NAMESPACE_VARIABLES = {"nsX": "x", "nsY": "y", "nsZ": "z"}


class ExpectError(ValueError):
    """An expectation line that is not one of the upstream ``reachability.Expect*`` calls."""


def is_ip(item: str) -> bool:
    try:
        ipaddress.ip_address(item)
    except ValueError:
        return False
    return True


@dataclass
class TruthTable:
    """An ordered-pair table of booleans over endpoints (``ns/pod`` strings or IP addresses)."""

    items: list[str]
    values: dict[tuple[str, str], bool] = field(default_factory=dict)

    def get(self, src: str, dst: str) -> bool | None:
        return self.values.get((src, dst))

    def compared_pairs(self) -> list[tuple[str, str]]:
        """Pairs that carry meaning: not loopback (upstream ``ignoreLoopback``) and not address to address."""
        return [
            (src, dst) for src in self.items for dst in self.items if src != dst and not (is_ip(src) and is_ip(dst))
        ]

    def pretty(self) -> str:
        """Upstream ``TruthTable.PrettyPrint``; cells that are not judged print as ``-``."""
        lines = ["\t".join(["-", *self.items])]
        for src in self.items:
            cells = [src]
            for dst in self.items:
                value = self.values.get((src, dst))
                cells.append("-" if value is None else ("." if value else "X"))
            lines.append("\t".join(cells))
        return "\n".join(lines) + "\n"

    def aligned(self) -> str:
        """The same table with space-aligned columns (YAML block scalars cannot hold tabs)."""
        rows = [line.split("\t") for line in self.pretty().splitlines()]
        width = max(len(cell) for row in rows for cell in row)
        return "".join(" ".join(cell.ljust(width) for cell in row).rstrip() + "\n" for row in rows)

    @classmethod
    def parse(cls, text: str) -> TruthTable:
        rows = [line.split() for line in text.strip().splitlines() if line.strip()]
        if not rows or rows[0][0] != "-":
            raise ValueError("a truth table starts with a header row '-  <to> <to> ...'")
        items = rows[0][1:]
        table = cls(items=items)
        if [row[0] for row in rows[1:]] != items:
            raise ValueError(f"row labels {[row[0] for row in rows[1:]]} differ from the column labels {items}")
        for row in rows[1:]:
            if len(row) != len(items) + 1:
                raise ValueError(f"row {row[0]} has {len(row) - 1} cells, expected {len(items)}")
            for dst, mark in zip(items, row[1:], strict=True):
                if mark not in {".", "X", "-"}:
                    raise ValueError(f"cell {row[0]} -> {dst}: {mark!r} is not one of '.', 'X', '-'")
                if mark != "-":
                    table.values[(row[0], dst)] = mark == "."
        return table

    def renamed(self, rename: Callable[[str], str]) -> TruthTable:
        """The same table with every endpoint renamed."""
        return TruthTable(
            items=[rename(i) for i in self.items],
            values={(rename(src), rename(dst)): v for (src, dst), v in self.values.items()},
        )

    def differences(self, other: TruthTable) -> list[tuple[str, str, bool | None, bool | None]]:
        """``(from, to, mine, other)`` for every compared pair on which the two tables disagree, among the pairs
        ``other`` (the expectation) has a value for."""
        return [
            (src, dst, self.get(src, dst), other.get(src, dst))
            for src, dst in self.compared_pairs()
            if other.get(src, dst) is not None and self.get(src, dst) != other.get(src, dst)
        ]


class Reachability:
    """Upstream ``Reachability`` expectations: a default-true table edited by ``Expect*`` calls (or an empty one,
    ``default`` None, filled by ``PokeServer`` calls)."""

    def __init__(self, items: Sequence[str], default: bool | None = True) -> None:
        self.table = TruthTable(items=list(items))
        if default is not None:
            for src in items:
                for dst in items:
                    self._set(src, dst, default)

    def _set(self, src: str, dst: str, connected: bool) -> None:
        # Address to address is not a question about the cluster: such cells stay empty ("-").
        if not (is_ip(src) and is_ip(dst)):
            self.table.values[(src, dst)] = connected

    def expect(self, src: str, dst: str, connected: bool) -> None:
        self._check(src)
        self._check(dst)
        self._set(src, dst, connected)

    def expect_all_ingress(self, dst: str, connected: bool) -> None:
        self._check(dst)
        for src in self.table.items:
            self._set(src, dst, connected)

    def expect_all_egress(self, src: str, connected: bool) -> None:
        self._check(src)
        for dst in self.table.items:
            self._set(src, dst, connected)

    def expect_peer(self, src: Mapping[str, str], dst: Mapping[str, str], connected: bool) -> None:
        for a in self.table.items:
            if _peer_matches(src, a):
                for b in self.table.items:
                    if _peer_matches(dst, b):
                        self._set(a, b, connected)

    def _check(self, item: str) -> None:
        if item not in self.table.items:
            raise ExpectError(f"{item} is not an endpoint of this table ({', '.join(self.table.items)})")

    def apply(self, call: str, port: str | None = None, expand: Callable[[str], str] = str) -> None:
        """Apply one upstream call, e.g. ``reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{}, false)``, or a
        conformance probe ``kubernetes.PokeServer(NS/CLIENT, NS/SERVER | IP, PROTOCOL, PORT, SHOULD_CONNECT)`` (the
        upstream call with the client as ``namespace/pod``, the server pod named instead of its IP, and the test,
        clients and timeouts left out), whose protocol and port must be ``port``'s; ``expand`` gives the full name of
        an endpoint written short in the call."""
        poke = _POKE.fullmatch(call.strip())
        if poke:
            src, dst, protocol, number, connected_text = poke.groups()
            if port is not None and f"{number}/{protocol.upper()}" != port:
                raise ExpectError(f"{call!r} probes {number}/{protocol.upper()}, listed under {port}")
            self.expect(expand(src), expand(dst), _parse_bool(connected_text))
            return
        match = _CALL.fullmatch(call.strip())
        if not match:
            raise ExpectError(f"not a reachability.Expect* call: {call!r}")
        method, args = match.group(1), _split_args(match.group(2))
        connected = _parse_bool(args[-1])
        if method == "Expect" and len(args) == 3:
            self.expect(_parse_endpoint(args[0]), _parse_endpoint(args[1]), connected)
        elif method == "ExpectAllIngress" and len(args) == 2:
            self.expect_all_ingress(_parse_endpoint(args[0]), connected)
        elif method == "ExpectAllEgress" and len(args) == 2:
            self.expect_all_egress(_parse_endpoint(args[0]), connected)
        elif method == "ExpectPeer" and len(args) == 3:
            self.expect_peer(_parse_peer(args[0]), _parse_peer(args[1]), connected)
        else:
            raise ExpectError(f"unsupported arguments for {method}: {call!r}")


_CALL = re.compile(r"(?:\w+\.)?(Expect|ExpectPeer|ExpectAllIngress|ExpectAllEgress)\((.*)\)")
_POKE = re.compile(
    r"kubernetes\.PokeServer\(\s*([^,\s]+)\s*,\s*([^,\s]+)\s*,\s*(tcp|udp|sctp)\s*,\s*(\d+)\s*,\s*(\w+)\s*\)"
)
_POD_STRING = re.compile(r'NewPodString\(\s*(\w+|"[^"]*")\s*,\s*"([^"]+)"\s*\)')
_PEER = re.compile(r"&Peer\{(.*)\}")


def _split_args(text: str) -> list[str]:
    args, depth, current = [], 0, ""
    for ch in text:
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
        if ch == "," and depth == 0:
            args.append(current.strip())
            current = ""
        else:
            current += ch
    args.append(current.strip())
    return args


def _parse_bool(text: str) -> bool:
    if text not in {"true", "false"}:
        raise ExpectError(f"expected true or false, got {text!r}")
    return text == "true"


def _namespace(token: str) -> str:
    token = token.strip()
    if token.startswith('"'):
        return token.strip('"')
    if token not in NAMESPACE_VARIABLES:
        raise ExpectError(f"unknown namespace variable {token!r}")
    return NAMESPACE_VARIABLES[token]


def _parse_endpoint(text: str) -> str:
    match = _POD_STRING.fullmatch(text.strip())
    if match:
        return f"{_namespace(match.group(1))}/{match.group(2)}"
    if text.startswith('"') and is_ip(text.strip('"')):
        return text.strip('"')
    raise ExpectError(f"not a NewPodString(...) or a quoted IP address: {text!r}")


def _parse_peer(text: str) -> dict[str, str]:
    match = _PEER.fullmatch(text.strip())
    if not match:
        raise ExpectError(f"not a &Peer{{...}}: {text!r}")
    peer: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in match.group(1).split(","))):
        key, _, value = part.partition(":")
        key = key.strip()
        if key == "Namespace":
            peer["namespace"] = _namespace(value)
        elif key == "Pod":
            peer["pod"] = value.strip().strip('"')
        else:
            raise ExpectError(f"unknown Peer field {key!r}")
    return peer


def _peer_matches(peer: Mapping[str, str], item: str) -> bool:
    """Upstream ``Peer.Matches``: empty fields match everything; addresses match only the empty peer."""
    if is_ip(item):
        return not peer
    namespace, _, pod = item.partition("/")
    return peer.get("namespace", namespace) == namespace and peer.get("pod", pod) == pod


@dataclass
class PortExpectation:
    port: str  # "80/TCP"
    expect: list[str]
    table: TruthTable | None


@dataclass
class Case:
    """One corpus case: Kubernetes objects plus, per port, the expectation calls and the expected table."""

    path: Path
    name: str
    source: dict[str, Any]
    model: str | None
    endpoints: list[str]
    externals: list[str]
    objects: list[dict[str, Any]]
    ports: list[PortExpectation]
    notes: str
    default: bool | None = True  # what a pair no call mentions is expected to be (None: not part of the case)
    #: Written in front of every pod's namespace in the case file's calls, tables and lists (short names there).
    namespace_prefix: str = ""
    #: (from, to, port) -> why upstream's expectation cannot be checked here; the verdict must be out of model.
    out_of_model: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def full(self, name: str) -> str:
        """An endpoint as written in the case file -> as analyze names it (``namespace_prefix`` added to pods)."""
        return self.namespace_prefix + name if self.namespace_prefix and "/" in name else name

    def short(self, name: str) -> str:
        """The inverse of `full`."""
        return name.removeprefix(self.namespace_prefix) if "/" in name else name

    def derived_table(self, port: PortExpectation) -> TruthTable:
        reach = Reachability([*self.endpoints, *self.externals], self.default)
        for call in port.expect:
            reach.apply(call, port.port, self.full)
        return reach.table


def load_case(path: Path) -> Case:
    """Read a case file: the first YAML document is the ``TruthTableCase``, the rest are Kubernetes objects."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    if not docs or docs[0].get("kind") != CASE_KIND:
        raise ValueError(f"{path}: the first document must be a {CASE_KIND}")
    meta, objects = docs[0], docs[1:]
    model = meta.get("model")
    prefix = str(meta.get("namespacePrefix") or "")

    def full(name: str) -> str:
        return prefix + name if prefix and "/" in name else name

    out_of_model: dict[tuple[str, str, str], str] = {}
    for entry in meta.get("outOfModel") or []:
        pair, _, reason = str(entry).partition(": ")
        src, dst_port = pair.split(" -> ")
        dst, port = dst_port.split(" ")
        out_of_model[(full(src), full(dst), port)] = reason
    endpoints = [full(e) for e in meta.get("endpoints") or (E2E_MODEL_PODS if model == "e2e" else ())]
    ports = [
        PortExpectation(
            port=str(port),
            expect=list(spec.get("expect") or []),
            table=TruthTable.parse(spec["table"]).renamed(full) if spec.get("table") else None,
        )
        for port, spec in (meta.get("ports") or {}).items()
    ]
    return Case(
        path=path,
        name=meta["metadata"]["name"],
        source=dict(meta.get("source") or {}),
        model=model,
        endpoints=endpoints,
        externals=[str(x) for x in meta.get("externals") or []],
        objects=objects,
        ports=ports,
        notes=str(meta.get("notes") or ""),
        default=meta.get("default", True),
        namespace_prefix=prefix,
        out_of_model=out_of_model,
    )


def model_path(corpus: Path, case: Case) -> Path | None:
    """The model file a case builds on (``<corpus>/<model>/model.yaml``), None if it has none."""
    return corpus / case.model / "model.yaml" if case.model else None


def format_side_by_side(expected: TruthTable, actual: TruthTable) -> str:
    """Both tables, then the upstream-style comparison table (``X`` where they differ)."""
    comparison = TruthTable(items=expected.items)
    for src, dst in expected.compared_pairs():
        if expected.get(src, dst) is not None:
            comparison.values[(src, dst)] = expected.get(src, dst) == actual.get(src, dst)
    return (
        f"expected:\n{expected.pretty()}\nobserved (netpol-auditor analyze):\n{actual.pretty()}\n"
        f"comparison:\n{comparison.pretty()}"
    )


class _LiteralDumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def fill(paths: Iterable[Path]) -> None:
    """Rewrite each case's tables from its expectation calls; the Kubernetes documents are kept verbatim."""
    for path in paths:
        text = path.read_text()
        first, sep, rest = text.partition("\n---\n")
        meta = yaml.safe_load(first)
        case = load_case(path)
        for port in case.ports:
            meta["ports"][port.port]["table"] = case.derived_table(port).renamed(case.short).aligned()
        dumped = yaml.dump(meta, Dumper=_LiteralDumper, sort_keys=False, width=120, allow_unicode=True)
        path.write_text(dumped + sep + rest)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "fill":
        sys.exit("usage: corpus_truthtable.py fill CASE.yaml...")
    fill(Path(p) for p in sys.argv[2:])
