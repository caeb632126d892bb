"""The ``netpol-auditor`` command line: ``analyze``, ``explain`` and ``check`` offline, ``run`` in the cluster.

Argument parsing and output only: manifests are read by `netpol_auditor.manifest_files`, turned into endpoints (one
per workload, or with ``--per-pod`` one per Pod) by `netpol_auditor.workloads`, judged by the reachability index, and
printed by `netpol_auditor.render`; ``check`` reads expectations (`netpol_auditor.expectations`), checks them
(`netpol_auditor.expectation_check`) and reports with `netpol_auditor.check_report` and `netpol_auditor.junit`.
Exit status: 0 done, 1 (``check``) an expectation is violated, 2 invalid input or usage (one line per problem on
stderr naming the file, object and field; never a traceback). Warnings about the input go to stderr too, as
``netpol-auditor COMMAND: warning: ...``; with ``--strict`` they are errors.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, TextIO

from .class_reach import ClassReach
from .cli_input import (
    PROG,
    InvalidInput,
    LoadedInput,
    UsageError,
    add_input,
    declared_ports,
    live_pods,
    load_input,
    parse_address,
    parse_port,
)
from .connection_space import AddressRange, PortRanges, address_ranges, port_intervals
from .endpoint_patterns import ENDPOINT_KINDS, is_ip, select
from .foreign import ForeignPaths, describe
from .index import ReachabilityIndex
from .index_view import ClassRecord
from .manifests import ManifestError
from .model import Endpoint, Labels, Namespace, PodRef, PortProtocol
from .render import FORMATS, Analysis, Cell, RowMarks, render
from .workloads import endpoint_name

if TYPE_CHECKING:
    from .expectations import Expectation

__all__ = ["UsageError", "build_analysis", "build_parser", "main"]


class _VersionAction(argparse.Action):
    """``--version``: reads the installed version only when asked (``importlib.metadata`` is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        parser.exit(message=f"{PROG} {_version()}\n")


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("netpol-auditor")
    except metadata.PackageNotFoundError:
        return "unknown"


#: The commands whose parsers `build_parser` can leave out the others for (their modules are then not imported).
_OFFLINE_ONLY = ("analyze", "explain")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``only`` (one of `_OFFLINE_ONLY`), the parser of that command alone, so
    that ``analyze`` does not import what ``check``, ``diff``, ``lint`` and ``run`` need."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Know, not hope, that your Kubernetes NetworkPolicies are enforced.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    analyze = sub.add_parser(
        "analyze",
        help="what the NetworkPolicies allow between every pair of workloads or pods (offline, from manifests)",
        description="Judge every ordered pair of distinct endpoints -- workloads, and pods running or written "
        "without status (with --per-pod: pods only) -- and --external addresses to and from them, on every "
        "requested port, as networking.k8s.io/v1 NetworkPolicy semantics decide, with the tiers of the cluster "
        "policies of policy.networking.k8s.io around them (AdminNetworkPolicy and BaselineAdminNetworkPolicy "
        "v1alpha1, ClusterNetworkPolicy v1alpha2: Admin, then NetworkPolicy, then Baseline). Paths a cluster policy "
        "rule decides whose match the manifests cannot tell (nodes and domainNames peers, equal priorities that "
        "disagree) are reported out of model (?). By default: one line per pair that can connect, its allowed "
        "ports by protocol as ranges over every port of TCP, UDP and SCTP, with the address ranges outside the "
        "cluster that the policies' ipBlocks cut as endpoints; --matrix: a truth table per port.",
    )
    add_input(analyze)
    analyze.add_argument(
        "--port",
        dest="ports",
        action="append",
        type=parse_port,
        metavar="PORT[/PROTOCOL]",
        help="destination port to judge, e.g. 80/TCP, 53/UDP, 3868/SCTP (protocol defaults to TCP); repeatable; "
        "default: every port of every protocol (with --matrix or -o html: every port the endpoints declare in "
        "containerPorts)",
    )
    analyze.add_argument(
        "--external",
        dest="externals",
        action="append",
        type=parse_address,
        default=[],
        metavar="IP",
        help="an address outside the cluster: also judge IP -> pod and pod -> IP; repeatable",
    )
    analyze.add_argument("-o", "--output", choices=(*FORMATS, "html"), default="table",
                         help="output format (default: table); html: one self-contained page, a matrix with the "
                         "deciding policies and rules of every cell")
    analyze.add_argument(
        "--matrix",
        action="store_true",
        help="per-port verdicts instead of one line per (from, to) pair: the table as one truth table per port, "
        "json/yaml/csv/md as one verdict per (from, to, port); default ports: those the endpoints declare",
    )
    analyze.add_argument("--explain", action="store_true", help="add the reason (policies, rules) for every verdict")
    analyze.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only these sources: ns/name[Kind], ns/name (any kind; a Pod folded into a workload selects the "
        "workload), ns (all of it), a glob such as 'prod/web-*', or an --external IP; repeatable",
    )
    analyze.add_argument(
        "--to", dest="destinations", action="append", default=[], metavar="PATTERN", help="only these destinations"
    )
    analyze.set_defaults(func=_analyze_command)

    explain = sub.add_parser(
        "explain",
        help="why one connection is allowed or denied, in words",
        description="Explain the verdict for one source, destination and port: which tier decides each side "
        "(Admin or Baseline cluster policy rule: kind, name, priority, rule and action; or NetworkPolicy), which "
        "policies isolate it and which rule (policy, direction, rule, peer, port) admits the connection, or that "
        "none does.",
    )
    add_input(explain)
    explain.add_argument(
        "--from", dest="source", required=True, metavar="NS/NAME[Kind]|IP", help="the source ([Kind] may be left out)"
    )
    explain.add_argument("--to", dest="destination", required=True, metavar="NS/NAME[Kind]|IP", help="the destination")
    explain.add_argument(
        "--port",
        dest="ports",
        action="append",
        type=parse_port,
        metavar="PORT[/PROTOCOL]",
        help="repeatable; default: the ports the destination declares",
    )
    explain.add_argument("-o", "--output", choices=("text", "json"), default="text", help="default: text")
    explain.set_defaults(func=_explain_command)
    if only in _OFFLINE_ONLY:
        return parser

    from .check_report import FORMATS as CHECK_FORMATS

    check_parser = sub.add_parser(
        "check",
        help="whether the NetworkPolicies meet an expectations file: exit 1 when one is violated (for CI)",
        description="Check reachability expectations -- from, to, port and allowed: true|false; or onlyFrom / "
        "onlyTo: these are allowed, every other endpoint of the input denied -- against the analysis of the "
        "manifests. Exit 0 when every expectation holds, 1 when one is violated (each reported with what was "
        "expected, what the analysis says, and the deciding policies and rules), 2 for invalid input.",
    )
    add_input(check_parser)
    check_parser.add_argument(
        "--expect",
        required=True,
        metavar="FILE",
        help="the expectations: a YAML list of {name, description, from, to, port, protocol, allowed} or "
        "{to, port, onlyFrom: [...]} or {from, port, onlyTo: [...]}; endpoints as analyze names them "
        "(ns/name[Kind], ns/name, a namespace, a glob, an IP) or selectors ({namespace: NS, podSelector: {...}}, "
        "{namespaceSelector: {...}, podSelector: {...}})",
    )
    check_parser.add_argument(
        "--junit", metavar="FILE", help="also write a JUnit XML report there: one test case per expectation"
    )
    check_parser.add_argument(
        "--format",
        choices=CHECK_FORMATS,
        default="text",
        help="text (default), or github: an ::error workflow command (annotation) per violated expectation",
    )
    check_parser.set_defaults(func=_check_command)

    from .diff_command import add_diff_parser
    from .lint_command import add_lint_parser

    add_diff_parser(sub)
    add_lint_parser(sub)

    from .controller.command import add_run_parser

    add_run_parser(sub)
    return parser


# ----------------------------------------------------------------------------------------------------------------
# analyze


def _select(
    endpoints: Sequence[str], patterns: Sequence[str], flag: str, folded: Mapping[PodRef, PodRef] | None = None
) -> list[str]:
    """The endpoints the patterns match; a pattern matching a Pod folded into a workload selects the workload."""
    if not patterns:
        return list(endpoints)
    chosen: set[str] = set()
    for pattern in patterns:
        matched = select(endpoints, pattern, folded)
        if not matched:
            raise UsageError(f"{flag} {pattern!r} matches no endpoint (workloads, pods and --external addresses)")
        chosen.update(matched)
    return [e for e in endpoints if e in chosen]


def build_analysis(
    index: ReachabilityIndex,
    ports: Sequence[PortProtocol] | None = None,
    externals: Sequence[str] = (),
    sources: Sequence[str] = (),
    destinations: Sequence[str] = (),
    explain: bool = False,
    folded: Mapping[PodRef, PodRef] | None = None,
    ranges: Sequence[AddressRange] = (),
    intervals: Mapping[PortProtocol, PortRanges] | None = None,
    foreign: ForeignPaths | None = None,
) -> Analysis:
    """Every ordered pair of distinct endpoints (and externals to/from pods) on every port, via the index.
    ``folded``: Pods folded into workload endpoints, for ``sources`` and ``destinations`` to name. ``ranges``:
    address ranges, endpoints named ``first-last`` and judged through their first address, before the
    ``externals`` (single addresses). ``intervals``: the ports each of ``ports`` stands for (`Analysis`).

    Verdicts are computed once per (equivalence class, equivalence class, port) and shared by all members: the
    index guarantees that members of a class are judged alike.
    """
    pods = live_pods(index)
    if not ports:
        ports = declared_ports(index, pods)
        if not ports:
            raise UsageError("no ports to judge: the endpoints declare no containerPorts; pass --port PORT/PROTOCOL")
    range_names = {r.name for r in ranges}
    address_list = list(dict.fromkeys([*(r.name for r in ranges), *externals]))
    everything = [str(p) for p in pods] + address_list
    rows = _select(everything, sources, "--from", folded)
    columns = _select(everything, destinations, "--to", folded)

    # Endpoints the policies cannot tell apart share a group: a pod's equivalence class; each hostNetwork pod and
    # each address is a group of its own. Cells are computed once per (group, group, port).
    objects: dict[str, Endpoint] = {str(p): p for p in pods}
    objects.update({a: a for a in externals})
    objects.update({r.name: r.address for r in ranges})
    group_of: dict[str, int] = {}
    members: list[list[Endpoint]] = []  # up to two members per group: a pair of distinct members if any
    by_key: dict[str, int] = {}
    for name in everything:
        ref = objects[name]
        cls = index.class_of(ref) if isinstance(ref, PodRef) else None
        key = f"class:{cls.id}" if cls is not None else f"one:{name}"
        if key not in by_key:
            by_key[key] = len(members)
            members.append([])
        group = group_of[name] = by_key[key]
        if len(members[group]) < 2:
            members[group].append(ref)
    n_groups = len(members)
    matrix: dict[PortProtocol, dict[int, list[Cell | None]]] = {}  # port -> source group -> cells, rows read whole
    single: dict[tuple[int, int, PortProtocol], Cell] = {}  # cells asked for one by one
    interned: dict[tuple[bool | None, tuple[str, ...], str, bool], Cell] = {}
    self_pair = Cell(None, (), "a pod never blocks traffic to itself")
    policy_names: dict[tuple[tuple[str, str], ...], tuple[str, ...]] = {}  # deciding policies, as the cells name them
    column_groups = [group_of[c] for c in columns]

    def compute(gs: int, gd: int, port: PortProtocol) -> Cell:
        key: tuple[bool | None, tuple[str, ...], str, bool]
        rs, rd = group_class[gs], group_class[gd]
        if rs is not None and rd is not None and not tiered:
            allowed, policies = class_reach().verdict(rs, rd, port)
            names = policy_names.get(policies)
            if names is None:
                names = policy_names[policies] = tuple(f"{ns}/{name}" for ns, name in policies)
            key = (allowed, names, "", False)
        else:
            src = members[gs][0]
            # Within one group, judge two distinct members (a group of one has no pair but itself).
            dst = members[gd][-1] if gs == gd else members[gd][0]
            verdict = index.verdict(src, dst, port)
            deciding = tuple(f"{ns}/{name}" for ns, name in verdict.deciding_policies())
            key = (verdict.allowed, deciding, verdict.reason, verdict.out_of_model)
        found = interned.get(key)
        if found is None:
            found = interned[key] = Cell(*key)
        return found

    def group_row(gs: int, port: PortProtocol) -> list[Cell | None]:
        grid = matrix.setdefault(port, {})
        got = grid.get(gs)
        if got is None:
            got = grid[gs] = [None] * n_groups
        return got

    def cell(src: str, dst: str, port: PortProtocol) -> Cell:
        if src == dst:
            return self_pair
        gs, gd = group_of[src], group_of[dst]
        cached = matrix.get(port, {}).get(gs)  # a row already read whole, else one cell at a time (sparse)
        if cached is not None:
            found = cached[gd]
            if found is None:
                found = cached[gd] = compute(gs, gd, port)
            return found
        key = (gs, gd, port)
        found = single.get(key)
        if found is None:
            found = single[key] = compute(gs, gd, port)
        return found

    def row(src: str, port: PortProtocol) -> list[Cell]:
        gs = group_of[src]
        cached = group_row(gs, port)
        out: list[Cell] = []
        for gd in column_groups:
            found = cached[gd]
            if found is None:
                found = cached[gd] = compute(gs, gd, port)
            out.append(found)
        return out

    # The table's fast path: a row of a class member as bits over the columns (`class_reach`), the columns of
    # endpoints without a class (addresses, hostNetwork pods) and the pod itself as cells.
    class_ids = {str(p): c.id for p in pods if (c := index.class_of(p)) is not None}
    masks: dict[str, int] = {}
    address_masks: dict[str, int] = {}  # address -> the columns of the endpoints (ranges, --external) it stands for
    others: list[int] = []
    address_columns = 0
    for j, name in enumerate(columns):
        cid = class_ids.get(name)
        if cid is not None:
            masks[cid] = masks.get(cid, 0) | 1 << j
        elif isinstance(objects[name], str):
            address = str(objects[name])
            address_masks[address] = address_masks.get(address, 0) | 1 << j
            address_columns |= 1 << j
        else:
            others.append(j)
    view = index.view()
    records = {c.id: c for c in view.class_records}
    ns_labels = {ns.name: ns.labels for ns in view.namespace_objects}
    reach: ClassReach | None = None

    # Cluster policies (Admin and Baseline tiers) are not read by `class_reach`: with any, every row is read from
    # its cells and every cell judged by the index.
    tiered = index.stats().cluster_policies > 0
    # Cells between two classes: from `class_reach` in a space of one bit per class.
    group_class: list[ClassRecord | None] = [None] * n_groups
    for name, g in group_of.items():
        if name in class_ids:
            group_class[g] = records[class_ids[name]]
    per_class: list[ClassReach] = []

    def class_reach() -> ClassReach:
        if not per_class:
            bits = {cid: 1 << i for i, cid in enumerate(records)}
            per_class.append(ClassReach(records.values(), namespace_labels, bits))
        return per_class[0]

    def namespace_labels(name: str) -> Labels:
        return ns_labels.get(name) or Namespace(name).labels

    def marks(src: str, port: PortProtocol) -> RowMarks | None:
        nonlocal reach
        cid = class_ids.get(src)
        source = objects[src]
        if tiered or (cid is None and not isinstance(source, str)):
            return None
        if reach is None:
            reach = ClassReach(records.values(), namespace_labels, masks, address_masks)
        fixed = not_pairs.get(src)
        if fixed is None:
            fixed = not_pairs[src] = dict.fromkeys(own_columns.get(src, ()))
            if cid is None:  # from an address: address to address is not a pair
                fixed.update((j, None) for j in range(len(columns)) if address_columns >> j & 1)
        special: Mapping[int, Cell | None] = fixed  # the same on every port when no column is read from its cell
        if others:
            special = {j: cell(src, columns[j], port) for j in others}
            special.update(fixed)
        if cid is not None:
            return RowMarks(reach.allowed(records[cid], port), special)
        return RowMarks(reach.allowed_from_address(str(source), port), special)

    own_columns: dict[str, list[int]] = {}
    not_pairs: dict[str, dict[int, Cell | None]] = {}  # per source, the columns that are not a pair with it
    for j, name in enumerate(columns):
        own_columns.setdefault(name, []).append(j)

    explainer: Callable[[str, str, PortProtocol], str] | None = None
    if explain:

        def explainer(src: str, dst: str, port: PortProtocol) -> str:
            verdict = index.verdict(objects[src], objects[dst], port)
            if src in range_names or dst in range_names:  # named as the range, judged through its first address
                verdict = replace(verdict, source=src if src in range_names else verdict.source,
                                  destination=dst if dst in range_names else verdict.destination)
            return (foreign.apply(verdict) if foreign else verdict).explain()

    analysis = Analysis(
        ports=list(ports),
        sources=rows,
        destinations=columns,
        cell=cell,
        row=row,
        explain=explainer,
        externals=address_list,
        marks=marks,
        intervals=intervals,
    )
    return _out_of_model(analysis, foreign) if foreign else analysis


def _out_of_model(analysis: Analysis, foreign: ForeignPaths) -> Analysis:
    """The analysis with the paths a vendor policy selects (its source's egress, its destination's ingress) out
    of model: whatever the NetworkPolicies say, the vendor policy may decide otherwise."""
    cells: dict[str, Cell] = {}
    inner_cell, inner_row, inner_marks = analysis.cell, analysis.row, analysis.marks

    def foreign_cell(src: str, dst: str) -> Cell | None:
        reason = foreign.reason(src, dst) if src != dst else ""
        if not reason:
            return None
        found = cells.get(reason)
        if found is None:
            found = cells[reason] = Cell(None, (), reason, True)
        return found

    def cell(src: str, dst: str, port: PortProtocol) -> Cell:
        found = foreign_cell(src, dst)
        return found if found is not None else inner_cell(src, dst, port)

    def row(src: str, port: PortProtocol) -> list[Cell]:
        out = list(inner_row(src, port))
        for j, dst in enumerate(analysis.destinations):
            found = foreign_cell(src, dst)
            if found is not None:
                out[j] = found
        return out

    def marks(src: str, port: PortProtocol) -> RowMarks | None:
        if src in foreign.egress or inner_marks is None:
            return None  # every cell of the row is out of model (or read cell by cell anyway)
        got = inner_marks(src, port)
        if got is None:
            return None
        special = dict(got.special)
        for j, dst in enumerate(analysis.destinations):
            found = foreign_cell(src, dst)
            if found is not None and j not in special:
                special[j] = found
        return RowMarks(got.allowed, special)

    analysis.cell, analysis.row, analysis.marks = cell, row, marks
    return analysis


def _analyze_command(args: argparse.Namespace, out: TextIO) -> int:
    loaded = load_input(args)
    per_pair = not args.matrix and args.output != "html"
    ports = list(dict.fromkeys(args.ports or []))
    intervals: Mapping[PortProtocol, PortRanges] | None = None
    if per_pair and not ports:
        # Every port of every protocol, one port judged per interval the policies' ports cut.
        intervals = port_intervals(loaded.policies, loaded.cluster_policies, loaded.index.pods())
        ports = list(intervals)
    analysis = build_analysis(
        loaded.index,
        ports=ports,
        externals=args.externals,
        sources=args.sources,
        destinations=args.destinations,
        explain=args.explain,
        folded=loaded.folded,
        ranges=address_ranges(loaded.policies, loaded.cluster_policies) if per_pair else (),
        intervals=intervals,
        foreign=loaded.foreign,
    )
    if args.output == "html":
        from datetime import UTC, datetime

        from .exporters.html_page import render_html  # imported here: the other formats never pay for the page
        from .exporters.page_data import build_page_data, named_endpoints

        data = build_page_data(
            loaded.index,
            named_endpoints(analysis.sources),
            named_endpoints(analysis.destinations),
            analysis.ports,
            mode="offline",
            generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            notes=(*loaded.notes, *describe(loaded.foreign, shown="not known on this page")),
            foreign=loaded.foreign,
        )
        out.write(render_html(data))
        return 0
    render(analysis, args.output, out, per_pair=per_pair)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# explain


def _endpoint(loaded: LoadedInput, text: str, flag: str) -> Endpoint:
    """An IP, or the endpoint ``ns/name[Kind]`` names; ``ns/name`` names the one endpoint of that name of any kind,
    or the workload a Pod of that name was folded into."""
    if is_ip(text):
        return str(ipaddress.ip_address(text))
    try:
        ref = PodRef.parse(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {text!r}: {exc} or an IP address") from None
    index = loaded.index
    if index.get_pod(ref) is not None:
        return ref
    if ref in loaded.folded:
        return loaded.folded[ref]
    candidates = [PodRef(ref.namespace, endpoint_name(ref.name, kind)) for kind in ENDPOINT_KINDS]
    found = [c for c in candidates if index.get_pod(c) is not None]
    if len(found) > 1:
        raise UsageError(f"{flag} {text!r} is ambiguous: {', '.join(map(str, found))}")
    if not found:
        raise UsageError(f"{flag} {text!r}: no such pod or workload in the input")
    return found[0]


def _explain_command(args: argparse.Namespace, out: TextIO) -> int:
    loaded = load_input(args)
    index = loaded.index
    src = _endpoint(loaded, args.source, "--from")
    dst = _endpoint(loaded, args.destination, "--to")
    ports = list(dict.fromkeys(args.ports or []))
    if not ports:
        ports = declared_ports(index, [dst]) if isinstance(dst, PodRef) else []
        if not ports:
            raise UsageError(f"no ports to judge: {args.destination} declares no containerPorts; pass --port")
    verdicts = [loaded.foreign.apply(index.verdict(src, dst, port)) for port in ports]
    if args.output == "json":
        payload = [{**v.to_dict(), "explanation": v.explain()} for v in verdicts]
        json.dump({"verdicts": payload}, out, indent=2)
        out.write("\n")
    else:
        out.write("\n\n".join(v.explain() for v in verdicts) + "\n")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# check


def _read_expectations(path: str) -> list[Expectation]:
    from .expectations import InvalidExpectations, parse_expectations

    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput([ManifestError(path, "", "", f"cannot read: {why}")]) from None
    try:
        return parse_expectations(text, path)
    except InvalidExpectations as exc:
        raise InvalidInput(exc.problems) from None


def _check_command(args: argparse.Namespace, out: TextIO) -> int:
    from .check_report import SUITE, junit_cases, render_check
    from .expectation_check import Subject, check
    from .expectations import InvalidExpectations
    from .junit import junit_xml

    expectations = _read_expectations(args.expect)
    loaded = load_input(args)
    try:
        outcomes = check(expectations, Subject(loaded.index, live_pods(loaded.index), loaded.folded, loaded.foreign))
    except InvalidExpectations as exc:
        raise InvalidInput(exc.problems) from None
    if args.junit:
        report = junit_xml(SUITE, junit_cases(outcomes))
        try:
            with open(args.junit, "wb") as fh:
                fh.write(report)
        except OSError as exc:
            raise UsageError(f"--junit {args.junit}: cannot write: {exc.strerror or exc}") from None
    render_check(outcomes, args.format, out)
    return 0 if all(o.held for o in outcomes) else 1


# ----------------------------------------------------------------------------------------------------------------


def kubectl_plugin(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``kubectl-netpol_auditor``, so that ``kubectl netpol-auditor analyze`` works: as kubectl
    does, it reads the cluster of the current kubeconfig context when no -f is given."""
    return main(argv, live_default=True)


def main(argv: Sequence[str] | None = None, *, live_default: bool = False) -> int:
    """Entry point of the ``netpol-auditor`` console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    only = arguments[0] if arguments and arguments[0] in _OFFLINE_ONLY else None
    parser = build_parser(only)
    parser.set_defaults(live_default=live_default)
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2), message already printed
        return exc.code if isinstance(exc.code, int) else 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "run":
        code: int = args.func(args)
        return code
    out = sys.stdout
    try:
        code = args.func(args, out)
        out.flush()
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except InvalidInput as exc:
        for error in exc.errors:
            print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours; silence the flush at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    # As `python -m netpol_auditor.cli`: run the package's module, whose exceptions the subcommands defined in
    # other modules (diff, lint) raise; this copy, __main__, has classes of its own.
    from netpol_auditor.cli import main as package_main

    sys.exit(package_main())
