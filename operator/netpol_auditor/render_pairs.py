"""``analyze`` output with one entry per (from, to) pair: the connections allowed between them, ports summarised.

The default output. Each port of the `Analysis` stands for ports that every policy treats alike
(`Analysis.interval`; without ``--port``, together they cover every port of TCP, UDP and SCTP), so a pair's allowed
connections are the union of what its allowed ports stand for, per protocol: ``TCP 80,8080-8090``,
``UDP 53``, or ``All Connections`` for every port of every protocol (np-guard netpol-analyzer's connlist wording).
Pairs with no allowed connection are not listed, only counted; so are pairs not judged (an endpoint on the host
network).

A row's verdicts are read as bits (`render.row_marks`): the destinations of one source are split into the few
groups that share the same allowed ports, so the cost per pair is that of writing its line.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from .connection_space import Connections
from .model import PortProtocol, Protocol
from .render import Analysis, Cell, is_address, row_marks, write_dot_nodes

__all__ = ["PairConnections", "PairCounts", "pair_rows", "render_pairs"]


@dataclass(frozen=True, eq=False)
class PairConnections:
    """What one pair may do: ``allowed`` connections, and the ports whose verdict is out of model (a cluster policy
    rule the manifests cannot decide); ``allowed_ports`` / ``unknown_ports`` are the judged ports behind them."""

    allowed: Connections
    out_of_model: Connections
    allowed_ports: tuple[PortProtocol, ...]
    unknown_ports: tuple[PortProtocol, ...]

    def text(self) -> str:
        if self.out_of_model and not self.allowed:
            return f"out of model: {self.out_of_model}"
        if self.out_of_model:
            return f"{self.allowed} (out of model: {self.out_of_model})"
        return str(self.allowed)


@dataclass
class PairCounts:
    """Judged pairs: listed (some connection allowed or out of model), with no connection, not judged."""

    listed: int = 0
    no_connection: int = 0
    not_judged: int = 0
    out_of_model: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    #: A joined address range -> the ranges of the analysis it joins.
    members: dict[str, list[str]] = field(default_factory=dict)

    def of(self, name: str) -> list[str]:
        return self.members.get(name, [name])


_ONES = re.compile("1")
_PLAIN = object()  # a column that is not special on this port: read its bit


def _positions(mask: int) -> list[int]:
    text = bin(mask)[:1:-1]  # least significant bit first
    return [m.start() for m in _ONES.finditer(text)]


class _Summaries:
    """Interns `PairConnections` by the indices of the allowed and out-of-model ports."""

    def __init__(self, analysis: Analysis) -> None:
        self.ports = analysis.ports
        self.intervals = [analysis.interval(p) for p in analysis.ports]
        self.memo: dict[tuple[tuple[int, ...], tuple[int, ...]], PairConnections | None] = {}

    def _connections(self, indices: tuple[int, ...]) -> Connections:
        ranges: dict[Protocol, list[tuple[int, int]]] = {}
        for k in indices:
            ranges.setdefault(self.ports[k].protocol, []).extend(self.intervals[k])
        return Connections.of(ranges)

    def get(self, allowed: tuple[int, ...], unknown: tuple[int, ...]) -> PairConnections | None:
        key = (allowed, unknown)
        if key not in self.memo:
            if not allowed and not unknown:
                self.memo[key] = None
            else:
                self.memo[key] = PairConnections(
                    self._connections(allowed),
                    self._connections(unknown),
                    tuple(self.ports[k] for k in allowed),
                    tuple(self.ports[k] for k in unknown),
                )
        return self.memo[key]


Row = list[tuple[str, PairConnections]]


def _rows(analysis: Analysis, counts: PairCounts) -> Iterator[tuple[str, Row]]:
    """Per source, its destinations (in order) with some connection allowed or out of model."""
    summaries = _Summaries(analysis)
    n = len(analysis.destinations)
    everyone = (1 << n) - 1
    for src in analysis.sources:
        marks = [row_marks(analysis, src, port) for port in analysis.ports]
        special: dict[int, list[Cell | object | None]] = {}
        for m in marks:
            for j in m.special:
                special.setdefault(j, [_PLAIN] * len(marks))
        special_mask = 0
        for j in special:
            special_mask |= 1 << j
        for k, m in enumerate(marks):
            for j, cell in m.special.items():
                special[j][k] = cell
        # Split the plain columns into groups alike on every port: a few big-integer operations per port.
        groups: list[tuple[int, tuple[int, ...]]] = [(everyone & ~special_mask, ())]
        for k, m in enumerate(marks):
            split: list[tuple[int, tuple[int, ...]]] = []
            for mask, allowed in groups:
                yes, no = mask & m.allowed, mask & ~m.allowed
                if yes:
                    split.append((yes, (*allowed, k)))
                if no:
                    split.append((no, allowed))
            groups = split
        found: dict[int, PairConnections] = {}
        for mask, allowed in groups:
            summary = summaries.get(allowed, ())
            if summary is None:
                counts.no_connection += mask.bit_count()
                continue
            for j in _positions(mask):
                found[j] = summary
        for j, cells in special.items():
            if all(c is None for c in cells):
                continue  # not part of the report (an endpoint and itself, address to address)
            judged = [c for c in cells if isinstance(c, Cell)]
            reason = next((c.reason for c in judged if c.allowed is None and not c.out_of_model), None)
            if reason is not None:
                counts.not_judged += 1
                counts.reasons[reason] = counts.reasons.get(reason, 0) + 1
                continue
            got = summaries.get(
                tuple(
                    k
                    for k, c in enumerate(cells)
                    if (c is _PLAIN and marks[k].allowed >> j & 1) or (isinstance(c, Cell) and c.allowed)
                ),
                tuple(k for k, c in enumerate(cells) if isinstance(c, Cell) and c.out_of_model),
            )
            if got is None:
                counts.no_connection += 1
            else:
                found[j] = got
        destinations = analysis.destinations
        yield src, [(destinations[j], found[j]) for j in sorted(found)]


Span = tuple[int, int, int]  # address family, first, last


@functools.lru_cache(maxsize=4096)
def _span(name: str) -> Span | None:
    """The addresses of an address range endpoint ``first-last``; None for anything else."""
    first, sep, last = name.partition("-")
    if not sep or not is_address(name):
        return None
    a, b = ipaddress.ip_address(first), ipaddress.ip_address(last)
    return a.version, int(a), int(b)


def _span_name(span: Span) -> str:
    version, first, last = span
    kind = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return f"{kind(first)}-{kind(last)}"


def _join(counts: PairCounts, runs: list[tuple[str, Span | None]]) -> str:
    """The name of adjacent ranges joined (one range stays as it is), remembering its members."""
    if len(runs) == 1:
        return runs[0][0]
    first, last = runs[0][1], runs[-1][1]
    assert first is not None and last is not None
    name = _span_name((first[0], first[1], last[2]))
    counts.members[name] = [m for n, _ in runs for m in counts.of(n)]
    return name


def _adjacent(a: Span | None, b: Span | None) -> bool:
    return a is not None and b is not None and a[0] == b[0] and a[2] + 1 == b[1]


def _join_row(row: Row, counts: PairCounts) -> Row:
    """Adjacent address ranges with the same connections, joined (as netpol-analyzer writes them)."""
    out: Row = []
    run: list[tuple[str, Span | None]] = []
    run_pair: PairConnections | None = None
    for dst, pair in row:
        span = _span(dst)
        if run and pair is run_pair and _adjacent(run[-1][1], span):
            run.append((dst, span))
            continue
        if run:
            assert run_pair is not None
            out.append((_join(counts, run), run_pair))
        run, run_pair = [(dst, span)], pair
    if run:
        assert run_pair is not None
        out.append((_join(counts, run), run_pair))
    return out


def _join_sources(rows: list[tuple[str, Row]], destinations: list[str], counts: PairCounts) -> list[tuple[str, Row]]:
    """Rows of adjacent address ranges, joined per destination where their connections are the same."""
    if not rows:
        return []
    order = {d: i for i, d in enumerate(destinations)}
    spans = [_span(src) for src, _ in rows]
    by_dst: dict[str, list[tuple[int, PairConnections]]] = {}
    for i, (_, row) in enumerate(rows):
        for dst, pair in row:
            by_dst.setdefault(dst, []).append((i, pair))
    runs: dict[tuple[int, int], Row] = {}
    for dst, cells in by_dst.items():
        k = 0
        while k < len(cells):
            first, pair = cells[k]
            last = first
            while (
                k + 1 < len(cells)
                and cells[k + 1][1] is pair
                and cells[k + 1][0] == last + 1
                and _adjacent(spans[last], spans[last + 1])
            ):
                k += 1
                last += 1
            runs.setdefault((first, last), []).append((dst, pair))
            k += 1
    out = []
    for (first, last), row in sorted(runs.items()):
        name = _join(counts, [(rows[i][0], spans[i]) for i in range(first, last + 1)])
        out.append((name, sorted(row, key=lambda item: order[item[0]])))
    return out


def pair_rows(analysis: Analysis, counts: PairCounts) -> Iterator[tuple[str, Row]]:
    """Per source, its destinations (in order) with some connection allowed or out of model; adjacent address
    ranges with the same connections to or from an endpoint are joined into one (``counts.members`` says which).
    ``counts`` is filled as the rows are read."""
    pending: list[tuple[str, Row]] = []

    def flush() -> Iterator[tuple[str, Row]]:
        yield from _join_sources(pending, analysis.destinations, counts)
        pending.clear()

    def counted(src: str, row: Row) -> tuple[str, Row]:
        counts.listed += len(row)
        counts.out_of_model += sum(1 for _, p in row if p.out_of_model)
        return src, row

    for src, row in _rows(analysis, counts):
        if _span(src) is not None:
            pending.append((src, row))
            continue
        for item in flush():
            yield counted(*item)
        yield counted(src, _join_row(row, counts))
    for item in flush():
        yield counted(*item)


def _deciding(analysis: Analysis, counts: PairCounts, src: str, dst: str, pair: PairConnections) -> list[str]:
    """The policies that decide the allowed (and out-of-model) ports, in the order the verdicts name them; for
    joined address ranges, those of every range joined."""
    names: dict[str, None] = {}
    for s in counts.of(src):
        for d in counts.of(dst):
            for port in (*pair.allowed_ports, *pair.unknown_ports):
                names.update(dict.fromkeys(analysis.cell(s, d, port).deciding))
    return list(names)


def _unknown_reasons(analysis: Analysis, counts: PairCounts, src: str, dst: str, pair: PairConnections) -> list[str]:
    """Why the out-of-model ports are (a cluster policy rule the manifests cannot decide, a vendor policy's
    ``foreign_policy``), each reason once."""
    reasons: dict[str, None] = {}
    for s in counts.of(src):
        for d in counts.of(dst):
            for port in pair.unknown_ports:
                reason = analysis.cell(s, d, port).reason
                if reason:
                    reasons[reason] = None
    return list(reasons)


def _explanations(analysis: Analysis, counts: PairCounts, src: str, dst: str, pair: PairConnections) -> list[str]:
    """The explanation of each allowed (or out-of-model) port interval, headed by the interval it stands for; for
    joined address ranges, one per range joined."""
    assert analysis.explain is not None
    out = []
    for s in counts.of(src):
        for d in counts.of(dst):
            for port in (*pair.allowed_ports, *pair.unknown_ports):
                text = analysis.explain(s, d, port)
                ranges = analysis.interval(port)
                if ranges != ((port.port, port.port),):
                    stands_for = str(Connections.of({port.protocol: ranges}))
                    text = text.replace(f" on {port}:", f" on {port} (standing for {stands_for}):", 1)
                out.append(text)
    return out


def _count(n: int, thing: str, things: str) -> str:
    return f"{n} {thing if n == 1 else things}"


def _legend(analysis: Analysis, counts: PairCounts) -> str:
    if analysis.intervals is not None:
        ports = "every port of TCP, UDP and SCTP"
    else:
        ports = "the ports " + ", ".join(str(p) for p in analysis.ports)
    ranges = [e for e in analysis.externals if "-" in e]
    singles = [e for e in analysis.externals if "-" not in e]
    outside = ""
    if ranges:
        outside += (
            f"; {_count(len(ranges), 'address range', 'address ranges')} outside the cluster (first-last: the "
            "pieces the policies' ipBlocks cut the address space into, each judged as one address outside the cluster)"
        )
    if singles:
        outside += f"; {'the address' if len(singles) == 1 else 'the addresses'} {', '.join(singles)}"
    not_listed = [f"{_count(counts.no_connection, 'pair', 'pairs')} with no allowed connection"]
    if counts.not_judged:
        reasons = sorted(counts.reasons)
        more = f"; and {len(reasons) - 3} more reasons" if len(reasons) > 3 else ""
        not_listed.append(f"{_count(counts.not_judged, 'pair', 'pairs')} not judged ({'; '.join(reasons[:3])}{more})")
    not_listed.append("an endpoint and itself, address to address")
    lines = [
        f"Legend: {_count(counts.listed, 'line', 'lines')}, one per (from, to) pair with an allowed connection"
        + (" (or one out of model)" if counts.out_of_model else "")
        + "; adjacent address ranges with the same connections to or from an endpoint share a line.",
        "  Each line: the destination ports the source may connect to on the destination, by protocol, as ranges "
        "(TCP 80,8080-8090); All Connections: every port of TCP, UDP and SCTP.",
        f"  Judged: {ports}{outside}.",
        "  Not listed: " + "; ".join(not_listed) + ".",
        "  Per-port truth tables with the denied pairs: --matrix; deciding policies: -o json, --explain.",
    ]
    if counts.out_of_model:
        lines.insert(2, "  out of model: ports whose verdict the manifests cannot tell -- a cluster policy rule "
                     "decides them with nodes or domainNames peers or equal priorities that disagree, or a Cilium, "
                     "Calico or Antrea policy (not evaluated) selects the source for egress or the destination for "
                     "ingress; -o json gives the reason of each.")
    return "\n".join(lines)


def render_table(analysis: Analysis, out: TextIO) -> None:
    counts = PairCounts()
    texts: dict[PairConnections, str] = {}  # interned by `_Summaries`: many pairs share one
    for src, row in pair_rows(analysis, counts):
        for dst, pair in row:
            text = texts.get(pair)
            if text is None:
                text = texts[pair] = pair.text()
            out.write(f"{src} => {dst} : {text}\n")
            if analysis.explain is not None:
                for text in _explanations(analysis, counts, src, dst, pair):
                    out.write("    " + text.replace("\n", "\n    ") + "\n")
    out.write(f"\n{_legend(analysis, counts)}\n")


def _pair_dict(analysis: Analysis, counts: PairCounts, src: str, dst: str, pair: PairConnections) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "from": src,
        "to": dst,
        "connections": str(pair.allowed),
        "allConnections": pair.allowed.everything,
        "allowed": pair.allowed.to_dict(),
        "decidingPolicies": _deciding(analysis, counts, src, dst, pair),
    }
    if pair.out_of_model:
        entry["outOfModel"] = pair.out_of_model.to_dict()
        entry["outOfModelReasons"] = _unknown_reasons(analysis, counts, src, dst, pair)
    if analysis.explain is not None:
        entry["explanations"] = _explanations(analysis, counts, src, dst, pair)
    return entry


def _header(analysis: Analysis, counts: PairCounts) -> dict[str, Any]:
    endpoints = sorted(set(analysis.sources) | set(analysis.destinations), key=lambda e: (is_address(e), e))
    return {
        "ports": "all" if analysis.intervals is not None else [str(p) for p in analysis.ports],
        "pods": [e for e in endpoints if not is_address(e)],
        "externals": list(analysis.externals),
        "summary": {
            "entries": counts.listed,
            "pairsWithoutConnections": counts.no_connection,
            "pairsNotJudged": counts.not_judged,
        },
    }


def render_json(analysis: Analysis, out: TextIO) -> None:
    """``{"connections": [...], "ports", "pods", "externals", "summary"}``, one pair a line."""
    counts = PairCounts()
    out.write('{"connections": [')
    sep = "\n  "
    static: dict[PairConnections, str] = {}
    for src, row in pair_rows(analysis, counts):
        head = '{"from": ' + json.dumps(src) + ', "to": '
        for dst, pair in row:
            tail = static.get(pair)
            if tail is None:
                tail = (
                    ', "connections": ' + json.dumps(str(pair.allowed))
                    + ', "allConnections": ' + json.dumps(pair.allowed.everything)
                    + ', "allowed": ' + json.dumps(pair.allowed.to_dict())
                )
                if pair.out_of_model:
                    tail += ', "outOfModel": ' + json.dumps(pair.out_of_model.to_dict())
                static[pair] = tail
            line = head + json.dumps(dst) + tail
            if pair.out_of_model:
                line += ', "outOfModelReasons": ' + json.dumps(_unknown_reasons(analysis, counts, src, dst, pair))
            line += ', "decidingPolicies": ' + json.dumps(_deciding(analysis, counts, src, dst, pair))
            if analysis.explain is not None:
                line += ', "explanations": ' + json.dumps(_explanations(analysis, counts, src, dst, pair))
            out.write(sep + line + "}")
            sep = ",\n  "
    header = json.dumps(_header(analysis, counts))
    out.write("\n],\n" + header[1:] + "\n")


def render_yaml(analysis: Analysis, out: TextIO) -> None:
    counts = PairCounts()
    pairs = [_pair_dict(analysis, counts, s, d, p) for s, row in pair_rows(analysis, counts) for d, p in row]
    doc = {"connections": pairs, **_header(analysis, counts)}
    import yaml  # imported here: the other formats never pay for it

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml.dump(doc, out, Dumper=dumper, sort_keys=False, default_flow_style=False, width=120)


def render_csv(analysis: Analysis, out: TextIO) -> None:
    import csv

    writer = csv.writer(out, lineterminator="\n")
    columns = ["from", "to", "connections", "out_of_model", "deciding_policies"]
    if analysis.explain is not None:
        columns.append("explanation")
    writer.writerow(columns)
    counts = PairCounts()
    for src, row in pair_rows(analysis, counts):
        for dst, pair in row:
            unknown = str(pair.out_of_model) if pair.out_of_model else ""
            line = [src, dst, str(pair.allowed), unknown, " ".join(_deciding(analysis, counts, src, dst, pair))]
            if analysis.explain is not None:
                line.append("\n".join(_explanations(analysis, counts, src, dst, pair)))
            writer.writerow(line)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_md(analysis: Analysis, out: TextIO) -> None:
    counts = PairCounts()
    out.write("# NetworkPolicy reachability\n\n| from | to | allowed connections |\n| --- | --- | --- |\n")
    explained: list[str] = []
    for src, row in pair_rows(analysis, counts):
        for dst, pair in row:
            out.write(f"| {_md(src)} | {_md(dst)} | {_md(pair.text())} |\n")
            if analysis.explain is not None:
                for text in _explanations(analysis, counts, src, dst, pair):
                    first, *rest = text.split("\n")
                    explained.append(f"- **{_md(first)}**" + "".join(f"<br>{_md(r)}" for r in rest))
    out.write(f"\n{_legend(analysis, counts)}\n")
    if explained:
        out.write("\n" + "\n".join(explained) + "\n")


def _dot_id(text: str) -> str:
    return json.dumps(text)


def render_dot(analysis: Analysis, out: TextIO) -> None:
    """A Graphviz digraph: a node per endpoint (grouped by namespace), an edge per pair with an allowed
    connection, labelled with it."""
    write_dot_nodes(analysis, out)
    counts = PairCounts()
    for src, row in pair_rows(analysis, counts):
        for dst, pair in row:
            if not pair.allowed:
                continue
            attrs = f"label={_dot_id(str(pair.allowed))}"
            if analysis.explain is not None:
                attrs += f", tooltip={_dot_id(chr(10).join(_explanations(analysis, counts, src, dst, pair)))}"
            out.write(f"  {_dot_id(src)} -> {_dot_id(dst)} [{attrs}];\n")
    out.write("}\n")


_RENDERERS: dict[str, Callable[[Analysis, TextIO], None]] = {
    "table": render_table,
    "json": render_json,
    "yaml": render_yaml,
    "csv": render_csv,
    "md": render_md,
    "dot": render_dot,
}


def render_pairs(analysis: Analysis, fmt: str, out: TextIO) -> None:
    """Write ``analysis`` to ``out`` in ``fmt``, one entry per (from, to) pair."""
    _RENDERERS[fmt](analysis, out)
