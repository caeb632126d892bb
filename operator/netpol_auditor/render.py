"""Per-port output formats of ``netpol-auditor analyze --matrix``: table, json, yaml, csv, md, dot.

Formatting only: the verdicts come from an `Analysis` the CLI builds over the reachability index. Every format
covers, per port, every ordered pair of distinct endpoints (pods, address ranges and ``--external`` addresses to and
from pods). The default output, one entry per pair, is `netpol_auditor.render_pairs`. Tables follow the upstream e2e
truth tables (kubernetes/kubernetes test/e2e/network/netpol/truthtable.go): rows are sources, columns
destinations, ``.`` allowed, ``X`` denied; ``-`` marks what is not judged (hostNetwork pods), ``~`` what is not a
pair (an endpoint and itself, address to address), ``?`` what is out of model (a cluster policy rule whose match
the manifests cannot tell: a nodes or domainNames peer, equal priorities that disagree).

``json`` is the stable machine contract::

    {"verdicts": [{"from": "ns/pod" | IP, "to": "ns/pod" | IP, "port": 80, "protocol": "TCP",
                   "allowed": true | false | null, "decidingPolicies": ["ns/name" | "Kind/name", ...],
                   "reason": "..." (only when allowed is null), "explanation": "..." (only with --explain)}],
     "ports": ["80/TCP"], "pods": [...], "externals": [...],
     "summary": {"80/TCP": {"allowed": 1, "denied": 2, "notJudged": 0, "outOfModel": 1 (only when not 0)}}}

A cluster policy is named by kind and name (``AdminNetworkPolicy/block-ns``): kinds are never namespace names.

It is written one verdict per line so that large clusters stream out quickly and stay greppable.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from .connection_space import PortRanges
from .model import PortProtocol

__all__ = ["FORMATS", "Analysis", "Cell", "RowMarks", "is_address", "render", "row_marks"]

FORMATS = ("table", "json", "yaml", "csv", "md", "dot")

LEGEND = ". allowed, X denied, - not judged (host network), ~ not a pair; rows: from, columns: to"
LEGEND_OUT_OF_MODEL = (
    ". allowed, X denied, - not judged (host network), ? out of model, ~ not a pair; rows: from, columns: to"
)
CORNER = "from\\to"
NOT_A_PAIR = "~"  # an endpoint and itself, address to address: no connection to judge


@dataclass(frozen=True, eq=False)
class Cell:
    """The verdict for one (from, to, port): ``allowed`` None when not judged, with ``reason``.

    Cells are shared by every pair with the same verdict, and compared by identity (cheap to hash)."""

    allowed: bool | None
    deciding: tuple[str, ...] = ()
    reason: str = ""
    out_of_model: bool = False  # judged, but the manifests cannot tell (``reason`` says why)

    @property
    def mark(self) -> str:
        if self.allowed is None:
            return "?" if self.out_of_model else "-"
        return "." if self.allowed else "X"

    @property
    def status(self) -> bool | str | None:
        """What the summary counts it as: True, False, None (not judged) or ``"outOfModel"``."""
        return "outOfModel" if self.out_of_model else self.allowed


@dataclass(frozen=True)
class RowMarks:
    """The verdicts of one row as bits: destination ``j`` (its position in ``Analysis.destinations``) is allowed
    if bit ``j`` of ``allowed`` is set and denied if not, except at the positions of ``special``, which give their
    cell (None: not part of the report, such as a pod and itself)."""

    allowed: int
    special: Mapping[int, Cell | None]


def is_address(endpoint: str) -> bool:
    """An IP address, or an address range ``first-last`` (`connection_space.AddressRange`)."""
    for part in endpoint.split("-", 1):
        try:
            ipaddress.ip_address(part)
        except ValueError:
            return False
    return True


@dataclass
class Analysis:
    """What to print: ports, row and column endpoints, and how to get the cells (and their explanation).

    ``row(src, port)`` gives the cells of one row, aligned with ``destinations`` (the positions `judged` rejects
    are ignored); ``cell`` gives one. ``explain`` is set when explanations were asked for. ``marks``, when set,
    gives a row's verdicts as bits (`RowMarks`, or None for a row to be read cell by cell): the table is written
    from them without a `Cell` per pair.
    """

    ports: list[PortProtocol]
    sources: list[str]
    destinations: list[str]
    cell: Callable[[str, str, PortProtocol], Cell]
    row: Callable[[str, PortProtocol], Sequence[Cell]]
    explain: Callable[[str, str, PortProtocol], str] | None = None
    externals: list[str] = field(default_factory=list)
    marks: Callable[[str, PortProtocol], RowMarks | None] | None = None
    #: The ports (inclusive ranges) each port of ``ports`` stands for; None: each port stands for itself.
    intervals: Mapping[PortProtocol, PortRanges] | None = None

    def interval(self, port: PortProtocol) -> PortRanges:
        return self.intervals[port] if self.intervals is not None else ((port.port, port.port),)

    def __post_init__(self) -> None:
        self._addresses = frozenset(e for e in (*self.sources, *self.destinations) if is_address(e))

    def judged(self, src: str, dst: str) -> bool:
        """Whether the pair is part of the report at all (not a pod and itself, not address to address)."""
        return src != dst and not (src in self._addresses and dst in self._addresses)

    def pairs(self) -> Iterator[tuple[str, str]]:
        for src in self.sources:
            for dst in self.destinations:
                if self.judged(src, dst):
                    yield src, dst

    def judged_row(self, src: str, port: PortProtocol) -> Iterator[tuple[str, Cell]]:
        """(destination, cell) for every judged pair of the row."""
        src_is_address = src in self._addresses
        for dst, cell in zip(self.destinations, self.row(src, port), strict=True):
            if dst != src and not (src_is_address and dst in self._addresses):
                yield dst, cell

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for port in self.ports:
            counts: dict[bool | str | None, int] = {True: 0, False: 0, None: 0, "outOfModel": 0}
            for src in self.sources:
                for _, cell in self.judged_row(src, port):
                    counts[cell.status] += 1
            out[str(port)] = _named_counts(counts)
        return out


def _named_counts(counts: dict[bool | str | None, int]) -> dict[str, int]:
    out = {"allowed": counts[True], "denied": counts[False], "notJudged": counts[None]}
    if counts["outOfModel"]:
        out["outOfModel"] = counts["outOfModel"]
    return out


def _legend(summary: dict[str, dict[str, int]]) -> str:
    return LEGEND_OUT_OF_MODEL if any("outOfModel" in counts for counts in summary.values()) else LEGEND


def _verdict_dict(analysis: Analysis, src: str, dst: str, port: PortProtocol) -> dict[str, Any]:
    cell = analysis.cell(src, dst, port)
    out: dict[str, Any] = {
        "from": src,
        "to": dst,
        "port": port.port,
        "protocol": port.protocol.value,
        "allowed": cell.allowed,
        "decidingPolicies": list(cell.deciding),
    }
    if cell.allowed is None:
        out["reason"] = cell.reason
    if analysis.explain is not None:
        out["explanation"] = analysis.explain(src, dst, port)
    return out


def _header(analysis: Analysis, summary: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    endpoints = sorted(set(analysis.sources) | set(analysis.destinations), key=lambda e: (is_address(e), e))
    return {
        "ports": [str(p) for p in analysis.ports],
        "pods": [e for e in endpoints if not is_address(e)],
        "externals": list(analysis.externals),
        "summary": analysis.summary() if summary is None else summary,
    }


def render_json(analysis: Analysis, out: TextIO) -> None:
    destinations = analysis.destinations
    quoted = [json.dumps(d) for d in destinations]
    is_addr = [is_address(d) for d in destinations]
    allowed_text = {True: "true", False: "false", None: "null"}
    tails: dict[Cell, str] = {}
    out.write('{"verdicts": [')
    sep = "\n  "
    summary: dict[str, dict[str, int]] = {}
    for port in analysis.ports:
        counts: dict[bool | str | None, int] = {True: 0, False: 0, None: 0, "outOfModel": 0}
        port_text = f', "port": {port.port}, "protocol": "{port.protocol.value}", "allowed": '
        for src in analysis.sources:
            head = '{"from": ' + json.dumps(src) + ', "to": '
            src_is_addr = is_address(src)
            lines = []
            for j, cell in enumerate(analysis.row(src, port)):
                dst = destinations[j]
                if dst == src or (src_is_addr and is_addr[j]):
                    continue
                counts[cell.status] += 1
                tail = tails.get(cell)
                if tail is None:
                    tail = allowed_text[cell.allowed] + ', "decidingPolicies": ' + json.dumps(list(cell.deciding))
                    if cell.allowed is None:
                        tail += ', "reason": ' + json.dumps(cell.reason)
                    tails[cell] = tail
                if analysis.explain is not None:
                    tail = tail + ', "explanation": ' + json.dumps(analysis.explain(src, dst, port))
                lines.append(head + quoted[j] + port_text + tail + "}")
            if lines:
                out.write(sep + ",\n  ".join(lines))
                sep = ",\n  "
        summary[str(port)] = _named_counts(counts)
    header = json.dumps(_header(analysis, summary))
    out.write("\n],\n" + header[1:] + "\n")


def render_yaml(analysis: Analysis, out: TextIO) -> None:
    doc = {
        "verdicts": [_verdict_dict(analysis, s, d, p) for p in analysis.ports for s, d in analysis.pairs()],
        **_header(analysis),
    }
    import yaml  # imported here: the other formats never pay for it

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml.dump(doc, out, Dumper=dumper, sort_keys=False, default_flow_style=False, width=120)


def render_csv(analysis: Analysis, out: TextIO) -> None:
    import csv  # here: the other formats never pay for it

    writer = csv.writer(out, lineterminator="\n")
    columns = ["from", "to", "port", "protocol", "allowed", "deciding_policies", "reason"]
    if analysis.explain is not None:
        columns.append("explanation")
    writer.writerow(columns)
    for port in analysis.ports:
        for src, dst in analysis.pairs():
            cell = analysis.cell(src, dst, port)
            allowed = "" if cell.allowed is None else ("true" if cell.allowed else "false")
            row = [src, dst, port.port, port.protocol.value, allowed, " ".join(cell.deciding), cell.reason]
            if analysis.explain is not None:
                row.append(analysis.explain(src, dst, port))
            writer.writerow(row)


def _marks(analysis: Analysis, port: PortProtocol) -> list[list[str]]:
    rows = [[CORNER, *analysis.destinations]]
    for src in analysis.sources:
        row = [src]
        for dst in analysis.destinations:
            row.append(analysis.cell(src, dst, port).mark if analysis.judged(src, dst) else NOT_A_PAIR)
        rows.append(row)
    return rows


def _counts_text(counts: dict[str, int]) -> str:
    text = f"{counts['allowed']} allowed, {counts['denied']} denied"
    if counts["notJudged"]:
        text += f", {counts['notJudged']} not judged"
    if counts.get("outOfModel"):
        text += f", {counts['outOfModel']} out of model"
    return text


def _explanations(analysis: Analysis, port: PortProtocol) -> Iterator[str]:
    assert analysis.explain is not None
    for src, dst in analysis.pairs():
        yield analysis.explain(src, dst, port)


def row_marks(analysis: Analysis, src: str, port: PortProtocol) -> RowMarks:
    """A row as `RowMarks`: from ``analysis.marks``, or built from its cells."""
    got = analysis.marks(src, port) if analysis.marks is not None else None
    if got is not None:
        return got
    special: dict[int, Cell | None] = {}
    allowed = 0
    for j, (dst, cell) in enumerate(zip(analysis.destinations, analysis.row(src, port), strict=True)):
        if not analysis.judged(src, dst):
            special[j] = None
        elif cell.allowed is None or cell.out_of_model:
            special[j] = cell
        elif cell.allowed:
            allowed |= 1 << j
    return RowMarks(allowed, special)


class _TableRows:
    """Writes the rows of a truth table from `RowMarks`: the text of each run of 8 columns is made once per
    pattern of allowed bits and reused, so a row costs a join of n/8 pieces, not a string per cell."""

    def __init__(self, analysis: Analysis) -> None:
        self.n = n = len(analysis.destinations)
        self.first = max([len(CORNER), *(len(s) for s in analysis.sources)])
        self.widths = [max(1, len(d)) for d in analysis.destinations]
        self.chunks: list[dict[int, str]] = [{} for _ in range((n + 7) // 8)]
        self.all_columns = (1 << n) - 1

    def _cell_text(self, j: int, mark: str) -> str:
        return mark if j == self.n - 1 else mark.ljust(self.widths[j]) + " "

    def _chunk(self, k: int, byte: int) -> str:
        text = "".join(
            self._cell_text(j, "." if byte >> (j - 8 * k) & 1 else "X") for j in range(8 * k, min(8 * k + 8, self.n))
        )
        self.chunks[k][byte] = text
        return text

    def line(self, src: str, marks: RowMarks) -> str:
        special = marks.special
        data = marks.allowed.to_bytes(len(self.chunks), "little")
        pieces: list[str] = []
        chunks = self.chunks
        special_chunks = {j >> 3 for j in special}
        for k, byte in enumerate(data):
            if k in special_chunks:
                texts = []
                for j in range(8 * k, min(8 * k + 8, self.n)):
                    if j in special:
                        cell = special[j]
                        mark = NOT_A_PAIR if cell is None else cell.mark
                    else:
                        mark = "." if byte >> (j - 8 * k) & 1 else "X"
                    texts.append(self._cell_text(j, mark))
                pieces.append("".join(texts))
            else:
                pieces.append(chunks[k].get(byte) or self._chunk(k, byte))
        return (src.ljust(self.first) + " " + "".join(pieces)).rstrip() + "\n"

    def count(self, marks: RowMarks, into: dict[bool | str | None, int]) -> None:
        """Add the row's cells to ``into``, by `Cell.status` (pairs not part of the report left out)."""
        special_bits = 0
        for j, cell in marks.special.items():
            special_bits |= 1 << j
            if cell is not None:
                into[cell.status] += 1
        plain = self.all_columns & ~special_bits
        yes = (marks.allowed & plain).bit_count()
        into[True] += yes
        into[False] += plain.bit_count() - yes


def render_table(analysis: Analysis, out: TextIO) -> None:
    if analysis.explain is None and analysis.destinations:
        _render_table_fast(analysis, out)
        return
    summary = analysis.summary()
    for i, port in enumerate(analysis.ports):
        if i:
            out.write("\n")
        out.write(f"{port}: {_counts_text(summary[str(port)])} ({_legend(summary)})\n")
        rows = _marks(analysis, port)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            out.write(" ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
        if analysis.explain is not None:
            out.write("\n")
            for text in _explanations(analysis, port):
                out.write(text.replace("\n", "\n    ") + "\n")


def _render_table_fast(analysis: Analysis, out: TextIO) -> None:
    """`render_table` without explanations, from row bits (the same text)."""
    rows = _TableRows(analysis)
    header = [CORNER, *analysis.destinations]
    widths = [rows.first, *rows.widths]
    header_line = " ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip() + "\n"
    marks: dict[PortProtocol, list[RowMarks]] = {}
    summary: dict[str, dict[str, int]] = {}
    for port in analysis.ports:
        marks[port] = [row_marks(analysis, src, port) for src in analysis.sources]
        counts: dict[bool | str | None, int] = {True: 0, False: 0, None: 0, "outOfModel": 0}
        for m in marks[port]:
            rows.count(m, counts)
        summary[str(port)] = _named_counts(counts)
    legend = _legend(summary)
    for i, port in enumerate(analysis.ports):
        if i:
            out.write("\n")
        out.write(f"{port}: {_counts_text(summary[str(port)])} ({legend})\n")
        out.write(header_line)
        for src, m in zip(analysis.sources, marks.pop(port), strict=True):
            out.write(rows.line(src, m))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_md(analysis: Analysis, out: TextIO) -> None:
    summary = analysis.summary()
    out.write("# NetworkPolicy reachability\n\n")
    unknown = ", `?` out of model" if _legend(summary) == LEGEND_OUT_OF_MODEL else ""
    out.write(f"Legend: `.` allowed, `X` denied, `-` not judged (host network){unknown}, `~` not a pair (an "
              "endpoint and itself, address to address); rows are sources (from), columns destinations (to).\n")
    for port in analysis.ports:
        out.write(f"\n## {port}\n\n{_counts_text(summary[str(port)])}.\n\n")
        rows = _marks(analysis, port)
        out.write("| from \\ to | " + " | ".join(_md_escape(d) for d in rows[0][1:]) + " |\n")
        out.write("| --- |" + " :-: |" * (len(rows[0]) - 1) + "\n")
        for row in rows[1:]:
            out.write(f"| {_md_escape(row[0])} | " + " | ".join(f"`{m}`" for m in row[1:]) + " |\n")
        if analysis.explain is not None:
            out.write("\n")
            for text in _explanations(analysis, port):
                first, *rest = text.split("\n")
                out.write(f"- **{_md_escape(first)}**" + "".join(f"<br>{_md_escape(r)}" for r in rest) + "\n")


def _dot_id(text: str) -> str:
    return json.dumps(text)


def write_dot_nodes(analysis: Analysis, out: TextIO) -> None:
    """The head of the Graphviz digraph ``analyze -o dot`` writes: one node per endpoint, pods grouped by
    namespace, addresses as ellipses (the edges follow)."""
    out.write("digraph netpol {\n  rankdir=LR;\n  node [shape=box, fontname=Helvetica];\n")
    out.write("  edge [fontname=Helvetica, fontsize=10];\n")
    endpoints = list(dict.fromkeys([*analysis.sources, *analysis.destinations]))
    by_namespace: dict[str, list[str]] = {}
    for endpoint in endpoints:
        if not is_address(endpoint):
            by_namespace.setdefault(endpoint.partition("/")[0], []).append(endpoint)
    for namespace, pods in sorted(by_namespace.items()):
        out.write(f"  subgraph {_dot_id('cluster_' + namespace)} {{\n    label={_dot_id(namespace)};\n")
        for pod in sorted(pods):
            out.write(f"    {_dot_id(pod)} [label={_dot_id(pod.partition('/')[2])}];\n")
        out.write("  }\n")
    for endpoint in endpoints:
        if is_address(endpoint):
            out.write(f"  {_dot_id(endpoint)} [shape=ellipse];\n")


def render_dot(analysis: Analysis, out: TextIO) -> None:
    """A Graphviz digraph: one node per endpoint (pods grouped by namespace), one edge per allowed pair,
    labelled with the ports it is allowed on. Denied pairs have no edge. With ``--explain``, each edge's tooltip
    (shown by SVG viewers) says why each of its ports is allowed."""
    write_dot_nodes(analysis, out)
    for src, dst in analysis.pairs():
        allowed = [p for p in analysis.ports if analysis.cell(src, dst, p).allowed]
        if allowed:
            attrs = f"label={_dot_id(', '.join(str(p) for p in allowed))}"
            if analysis.explain is not None:
                why = "\n".join(analysis.explain(src, dst, p) for p in allowed)
                attrs += f", tooltip={_dot_id(why)}"
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


def render(analysis: Analysis, fmt: str, out: TextIO, per_pair: bool = False) -> None:
    """Write ``analysis`` to ``out`` in ``fmt`` (one of `FORMATS`): per port, or with ``per_pair`` one entry per
    (from, to) pair with its allowed connections (`netpol_auditor.render_pairs`)."""
    if per_pair:
        from .render_pairs import render_pairs

        render_pairs(analysis, fmt, out)
        return
    _RENDERERS[fmt](analysis, out)
