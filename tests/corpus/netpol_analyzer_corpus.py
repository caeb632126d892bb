"""np-guard netpol-analyzer's connlist examples as a peer oracle: its manifests, its expected output, our verdicts.

``netpol_analyzer/`` holds example directories of netpol-analyzer's ``tests/`` and their expected connlist outputs
(``test_outputs/connlist/<case>_connlist_output.txt``), copied unchanged; ``cases.yaml`` lists the connlist test
cases compared (from its ``pkg/netpol/connlist/connlist_test.go``, with their focus options) and the ones left out,
with the reason. A case is run through our reader, endpoints and index in-process, as ``netpol-auditor analyze``
does, and our verdicts are put in connlist shape: per ordered pair of its peers, the allowed connections.

Exact, not sampled: the ports that can change a verdict are finitely many boundaries (policy ports, ``endPort + 1``,
container ports for named ports, and their successors), so judging the first port of every interval between two
boundaries, for each protocol, gives the whole connection set; likewise the first address of every interval between
ipBlock ``cidr``/``except`` bounds (and the bounds of their output's ranges) gives the whole IPv4 space, which is
what their output covers (``0.0.0.0-255.255.255.255``).

Peers are named as netpol-analyzer names them (pkg/netpol/eval/internal/k8s/peer.go ``WorkloadPeer``): a workload
``ns/name[Kind]``; a Pod by its controller ``ns/owner[OwnerKind]`` (``[Pod]`` when the reference has no kind),
else ``ns/name[Pod]``; an address interval ``first-last[External]``. Each maps to our endpoints for it (a Pod folded
into a workload maps to the workload's endpoint).

``python tests/corpus/netpol_analyzer_corpus.py agreement`` prints the agreement per case and in total;
``... import CHECKOUT`` (re)copies the listed directories and outputs from a netpol-analyzer work tree.
"""

from __future__ import annotations

import functools
import ipaddress
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from connlist import PROTOCOLS, Connlist, Conns, parse_connlist, parse_external
from netpol_analyzer_differences import PEERS_NOT_JUDGED, REFUSED_INPUT, Reason

from netpol_auditor.cli import build_analysis
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import read_manifests
from netpol_auditor.model import NetworkPolicy, Pod, PodRef, PortProtocol, Protocol, Workload
from netpol_auditor.workloads import endpoint_name, endpoints

__all__ = [
    "CORPUS",
    "Agreement",
    "Case",
    "Comparison",
    "Difference",
    "Observed",
    "agreement",
    "compare",
    "compare_case",
    "explained_by",
    "interval_peer",
    "load_cases",
    "load_index",
    "npa_pod_name",
    "observe",
]

CORPUS = Path(__file__).parent / "netpol_analyzer"
_IPV4_END = 1 << 32


@dataclass(frozen=True)
class Case:
    """One connlist test case of netpol-analyzer: a directory and the focus options it runs with."""

    dir: str
    focus_workloads: tuple[str, ...] = ()
    focus_workload_peers: tuple[str, ...] = ()
    focus_direction: str = ""  # "", "ingress" or "egress"

    @property
    def name(self) -> str:
        """The test name, as pkg/internal/testutils ``ConnlistTestNameByTestArgs`` builds it."""
        name = self.dir
        if self.focus_workloads:
            name += "_focus_workload_" + "_".join(self.focus_workloads).replace("/", "_")
            if self.focus_direction:
                name += f"_{self.focus_direction}"
            if self.focus_workload_peers:
                name += "_with_" + "_".join(self.focus_workload_peers).replace("/", "_")
        return name

    @property
    def manifests(self) -> Path:
        return CORPUS / "tests" / self.dir

    @property
    def expected_output(self) -> Path:
        return CORPUS / "test_outputs" / "connlist" / f"{self.name}_connlist_output.txt"

    def expected(self) -> Connlist:
        return _parsed(self.expected_output)

    def includes(self, src: str, dst: str) -> bool:
        """Whether the pair is in the output, as pkg/netpol/connlist ``includePairOfWorkloads`` decides."""

        def focused(peer: str, names: Sequence[str]) -> bool:
            if not names:
                return True
            if parse_external(peer):
                return False  # an address peer has no name
            namespace, _, rest = peer.partition("/")
            name = rest.partition("[")[0]
            return any(n in (name, f"{namespace}/{name}") for n in names)

        def peer_of_focus(peer: str) -> bool:
            return not self.focus_workloads or focused(peer, self.focus_workload_peers)

        if self.focus_direction == "ingress" and not focused(dst, self.focus_workloads):
            return False
        if self.focus_direction == "egress" and not focused(src, self.focus_workloads):
            return False
        return (focused(src, self.focus_workloads) and peer_of_focus(dst)) or (
            focused(dst, self.focus_workloads) and peer_of_focus(src)
        )


@functools.lru_cache(maxsize=8)
def _parsed(path: Path) -> Connlist:
    return parse_connlist(path.read_text())


def _case(raw: Mapping[str, Any]) -> Case:
    return Case(
        dir=raw["dir"],
        focus_workloads=tuple(raw.get("focusWorkloads", ())),
        focus_workload_peers=tuple(raw.get("focusWorkloadPeers", ())),
        focus_direction=raw.get("focusDirection", ""),
    )


def load_index() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CORPUS / "cases.yaml").read_text())
    return loaded


def load_cases() -> list[Case]:
    """The compared cases of ``cases.yaml``, in its order."""
    return [_case(raw) for raw in load_index()["compared"]]


# ----------------------------------------------------------------------------------------------------------------
# Our side, in connlist shape


@dataclass
class Observed:
    """Our analysis of a case's manifests: per pair of peers, the connections we allow, or why we do not judge
    (a string). ``refused``: the input problems our reader reports as errors (then nothing else is filled)."""

    peers: list[str] = field(default_factory=list)
    workloads: dict[tuple[str, str], Conns | str] = field(default_factory=dict)
    externals: dict[tuple[str, str], Conns | str] = field(default_factory=dict)
    intervals: list[tuple[int, int]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def npa_pod_name(pod: Pod) -> str:
    """netpol-analyzer's workload peer of a Pod: its controller owner (a Node owner does not count), else itself."""
    if pod.owner_name and pod.owner_kind != "Node":
        return f"{pod.namespace}/{pod.owner_name}[{pod.owner_kind or 'Pod'}]"
    return f"{pod.namespace}/{pod.name}[Pod]"


def _top(workload: Workload, listed: Mapping[tuple[str, str, str], Workload]) -> Workload:
    """The outermost listed owner of a workload: the one our endpoints are made of."""
    seen = {(workload.namespace, workload.kind, workload.name)}
    while workload.owner_kind:
        owner = (workload.namespace, workload.owner_kind, workload.owner_name)
        if owner not in listed or owner in seen:
            break
        seen.add(owner)
        workload = listed[owner]
    return workload


def _port_starts(policies: Iterable[NetworkPolicy], pods: Iterable[Pod]) -> dict[str, list[int]]:
    """Per protocol, the first port of every interval on which no verdict can change: bounds of the policies' port
    numbers and ranges, and the container ports that named ports of the policies resolve to."""
    bounds: dict[str, set[int]] = {protocol: {1} for protocol in PROTOCOLS}
    names: set[tuple[str, str]] = set()
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            for port in rule.ports:
                if isinstance(port.port, int):
                    bounds[port.protocol.value].update((port.port, (port.end_port or port.port) + 1))
                elif isinstance(port.port, str):
                    names.add((port.port, port.protocol.value))
    for pod in pods:
        for container_port in pod.container_ports:
            if (container_port.name, container_port.protocol.value) in names:
                bounds[container_port.protocol.value].update((container_port.port, container_port.port + 1))
    return {protocol: sorted(b for b in found if b <= 65535) for protocol, found in bounds.items()}


def _address_intervals(policies: Iterable[NetworkPolicy], expected: Connlist) -> list[tuple[int, int]]:
    """IPv4 intervals on which no verdict can change: between the bounds of every ipBlock cidr and except, and of
    the ranges of the expected output."""
    bounds = {0}
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            for peer in rule.peers:
                if peer.ip_block is None:
                    continue
                for cidr in (peer.ip_block.cidr, *peer.ip_block.except_):
                    network = ipaddress.ip_network(cidr, strict=False)
                    if network.version == 4:
                        bounds.update((int(network.network_address), int(network.broadcast_address) + 1))
    for src, dst in expected.externals:
        for peer in (src, dst):
            found = parse_external(peer)
            if found:
                bounds.update((found[0], found[1] + 1))
    starts = sorted(b for b in bounds if b < _IPV4_END)
    return [(lo, hi - 1) for lo, hi in zip(starts, [*starts[1:], _IPV4_END], strict=True)]


def interval_peer(interval: tuple[int, int]) -> str:
    first, last = (ipaddress.IPv4Address(a) for a in interval)
    return f"{first}-{last}[External]"


def _copy_repaired(source: Path, target: Path, repairs: Mapping[str, str]) -> None:
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        if path.is_file():
            text = path.read_text()
            for old, new in repairs.items():
                text = text.replace(old, new)
            path.write_text(text)


def observe(case: Case, repairs: Mapping[str, str] | None = None) -> Observed:
    """Our verdicts for every pair of the case's peers, on every port and every address.

    ``repairs``: text replacements applied to a copy of the manifests before reading (a known difference of input
    validation, so that the rest of the case is still compared)."""
    if repairs:
        with tempfile.TemporaryDirectory() as tmp:
            repaired = Path(tmp) / case.dir
            _copy_repaired(case.manifests, repaired, repairs)
            return _observe(case, repaired)
    return _observe(case, case.manifests)


def _observe(case: Case, path: Path) -> Observed:
    out = Observed()
    manifests = read_manifests([str(path)])
    if manifests.errors:
        out.refused = [str(e).replace(f"{path}/", "") for e in manifests.errors]
        return out
    pods = [o for o in manifests.objects if isinstance(o, Pod)]
    policies = [o for o in manifests.objects if isinstance(o, NetworkPolicy)]
    found = endpoints(manifests.workloads, pods)
    index = ReachabilityIndex.from_objects([*(o for o in manifests.objects if not isinstance(o, Pod)), *found.pods])

    # netpol-analyzer's peers, each with our endpoints for it
    members: dict[str, set[str]] = {}
    listed = {(w.namespace, w.kind, w.name): w for w in manifests.workloads}
    for workload in manifests.workloads:
        top = _top(workload, listed)
        ours = PodRef(top.namespace, endpoint_name(top.name, top.kind))
        members.setdefault(f"{workload.namespace}/{workload.name}[{workload.kind}]", set()).add(str(ours))
    for pod in pods:
        ours = found.folded.get(pod.ref, PodRef(pod.namespace, endpoint_name(pod.name, "Pod")))
        members.setdefault(npa_pod_name(pod), set()).add(str(ours))
    out.peers = sorted(members)

    expected = case.expected()
    out.intervals = _address_intervals(policies, expected)
    starts = _port_starts(policies, [*pods, *found.pods])
    ports = [PortProtocol(start, Protocol(protocol)) for protocol in PROTOCOLS for start in starts[protocol]]
    addresses = [str(ipaddress.IPv4Address(lo)) for lo, _ in out.intervals]
    analysis = build_analysis(index, ports=ports, externals=addresses)

    judged = set(analysis.sources)
    allowed: dict[tuple[str, str], list[PortProtocol]] = {}
    not_judged: dict[tuple[str, str], str] = {}
    for src in analysis.sources:
        for port in ports:
            for dst, cell in analysis.judged_row(src, port):
                if cell.allowed is None:
                    not_judged[(src, dst)] = cell.reason
                elif cell.allowed:
                    allowed.setdefault((src, dst), []).append(port)

    def conns(src: str, dst: str) -> Conns | str:
        for end in (src, dst):
            if end not in judged:
                return f"not an endpoint: {end} (a Pod that is not running)"
        if (src, dst) in not_judged:
            return f"not judged: {not_judged[(src, dst)]}"
        ranges: dict[str, list[tuple[int, int]]] = {}
        for port in allowed.get((src, dst), ()):
            protocol_starts = starts[port.protocol.value]
            i = protocol_starts.index(port.port)
            last = protocol_starts[i + 1] - 1 if i + 1 < len(protocol_starts) else 65535
            ranges.setdefault(port.protocol.value, []).append((port.port, last))
        return Conns.of(ranges)

    def judge(sources: Iterable[str], destinations: Iterable[str]) -> Conns | str:
        results: dict[str, Conns | str] = {}
        for s in sources:
            for d in destinations:
                if s != d:
                    result = conns(s, d)
                    results[str(result)] = result
        if not results:
            raise ValueError(f"{case.name}: a peer pair maps to one endpoint of ours only: {sources}")
        if len(results) == 1:
            return next(iter(results.values()))
        return "differs between our endpoints: " + " | ".join(sorted(results))

    for src in out.peers:
        for dst in out.peers:
            if src != dst and case.includes(src, dst):
                out.workloads[(src, dst)] = judge(members[src], members[dst])
    for interval, address in zip(out.intervals, addresses, strict=True):
        outside = interval_peer(interval)
        for peer in out.peers:
            if case.includes(outside, peer):
                out.externals[(outside, peer)] = judge([address], members[peer])
            if case.includes(peer, outside):
                out.externals[(peer, outside)] = judge(members[peer], [address])
    return out


# ----------------------------------------------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True, order=True)
class Difference:
    """A pair on which the two tools disagree: their connections and ours (or why we do not judge it)."""

    src: str
    dst: str
    theirs: str
    ours: str

    def __str__(self) -> str:
        return f"{self.src} => {self.dst} : netpol-analyzer {self.theirs} | netpol-auditor {self.ours}"


@dataclass
class Comparison:
    case: Case
    observed: Observed
    workload_pairs: int = 0
    external_pairs: int = 0
    differences: list[Difference] = field(default_factory=list)
    ingress_controller_lines: int = 0

    @property
    def pairs(self) -> int:
        return self.workload_pairs + self.external_pairs

    @property
    def agreeing(self) -> int:
        return self.pairs - len(self.differences)


_Lines = Mapping[tuple[str, bool], list[tuple[tuple[int, int], Conns]]]


def _external_lines(expected: Connlist) -> _Lines:
    """Their address-range lines by (workload peer, whether the range is the source): (range, connections)."""
    lines: dict[tuple[str, bool], list[tuple[tuple[int, int], Conns]]] = {}
    for (src, dst), conns in expected.externals.items():
        source_range = parse_external(src)
        workload, their_range = (dst, source_range) if source_range else (src, parse_external(dst))
        assert their_range is not None
        lines.setdefault((workload, bool(source_range)), []).append((their_range, conns))
    return lines


def _theirs_external(lines: _Lines, src: str, dst: str) -> Conns:
    """Their connections for an interval pair: those of the line whose range holds the interval, if any."""
    interval = parse_external(src)
    workload, is_source = (dst, True) if interval else (src, False)
    interval = interval or parse_external(dst)
    assert interval is not None
    for (first, last), conns in lines.get((workload, is_source), ()):
        if first <= interval[0] and interval[1] <= last:
            return conns
    return Conns()


def compare(case: Case, observed: Observed) -> Comparison:
    """Every pair of peers (and of peers and address intervals) the case's output covers: theirs against ours."""
    expected = case.expected()
    result = Comparison(case, observed, ingress_controller_lines=len(expected.ingress_controller))
    if observed.refused:
        return result
    unknown = {p for pair in expected.workloads for p in pair} - set(observed.peers)
    unknown |= {p for pair in expected.externals for p in pair if not parse_external(p)} - set(observed.peers)
    if unknown:
        raise ValueError(f"{case.name}: their output names peers our input does not give: {sorted(unknown)}")
    for (src, dst), ours in observed.workloads.items():
        result.workload_pairs += 1
        theirs = expected.workloads.get((src, dst), Conns())
        if ours != theirs:
            result.differences.append(Difference(src, dst, str(theirs), str(ours)))
    lines = _external_lines(expected)
    for (src, dst), ours in observed.externals.items():
        result.external_pairs += 1
        theirs = _theirs_external(lines, src, dst)
        if ours != theirs:
            result.differences.append(Difference(src, dst, str(theirs), str(ours)))
    result.differences.sort()
    return result


# ----------------------------------------------------------------------------------------------------------------
# The agreement figure


def explained_by(comparison: Comparison) -> tuple[dict[Reason, int], list[Difference]]:
    """The case's differences each known difference accounts for (a listed peer of the pair, with the reason's
    marker on our side), and those none does."""
    listed = PEERS_NOT_JUDGED.get(comparison.case.name, {})
    counts: dict[Reason, int] = {}
    unexplained: list[Difference] = []
    for difference in comparison.differences:
        reason = next(
            (
                r
                for r, peers in listed.items()
                if {difference.src, difference.dst} & set(peers) and r.marker in difference.ours
            ),
            None,
        )
        if reason is None:
            unexplained.append(difference)
        else:
            counts[reason] = counts.get(reason, 0) + 1
    return counts, unexplained


@dataclass
class Agreement:
    """The figure: cases and pairs compared, agreeing, and the rest by known difference (or not explained)."""

    cases: int = 0
    cases_agreeing: int = 0
    cases_refused: int = 0
    pairs: int = 0
    pairs_agreeing: int = 0
    not_judged: dict[Reason, int] = field(default_factory=dict)
    unexplained: list[Difference] = field(default_factory=list)

    @property
    def judged_by_both(self) -> int:
        return self.pairs - sum(self.not_judged.values())

    def summary(self) -> str:
        """The figure in one sentence, as the README quotes it."""
        reasons = " or ".join(f"{r.phrase} ({n:,})" for r, n in self.not_judged.items())
        disagree = self.judged_by_both - self.pairs_agreeing
        return (
            f"{self.pairs_agreeing:,}/{self.pairs:,} pairs agree; the other {self.pairs - self.pairs_agreeing:,} "
            f"involve {reasons}, which netpol-auditor does not judge by design; "
            f"{'no' if not disagree else f'{disagree:,}'} pair both tools judge differs. "
            f"{self.cases_agreeing}/{self.cases} cases agree on every pair ({self.cases_refused} once a misspelt "
            f"field that netpol-auditor refuses is corrected)"
        )


def agreement(comparisons: Iterable[Comparison]) -> Agreement:
    out = Agreement()
    for comparison in comparisons:
        out.cases += 1
        out.cases_refused += comparison.case.name in REFUSED_INPUT
        out.cases_agreeing += not comparison.differences
        out.pairs += comparison.pairs
        out.pairs_agreeing += comparison.agreeing
        counts, unexplained = explained_by(comparison)
        for reason, n in counts.items():
            out.not_judged[reason] = out.not_judged.get(reason, 0) + n
        out.unexplained += unexplained
    return out


def compare_case(case: Case) -> Comparison:
    """The case compared as the corpus test compares it: refused input repaired as `REFUSED_INPUT` says."""
    refusal = REFUSED_INPUT.get(case.name)
    return compare(case, observe(case, refusal.repairs if refusal else None))


# ----------------------------------------------------------------------------------------------------------------
# Command line: the agreement figure, and (re)importing the fixtures


def _agreement(out: Any = sys.stdout) -> int:
    comparisons = [compare_case(case) for case in load_cases()]
    for c in comparisons:
        counts, unexplained = explained_by(c)
        known = ", ".join(f"{n} {r.key}" for r, n in counts.items())
        print(f"{c.case.name}: {c.agreeing}/{c.pairs} pairs agree" + (f" ({known})" if known else ""), file=out)
        for difference in unexplained:
            print(f"  not explained: {difference}", file=out)
    figure = agreement(comparisons)
    workload_pairs = sum(c.workload_pairs for c in comparisons)
    workload_differences = sum(
        1 for c in comparisons for d in c.differences if not (parse_external(d.src) or parse_external(d.dst))
    )
    external_pairs = figure.pairs - workload_pairs
    external_differences = figure.pairs - figure.pairs_agreeing - workload_differences
    print(
        f"\nworkload pairs: {workload_pairs - workload_differences:,}/{workload_pairs:,} agree; "
        f"(address range, workload) pairs: {external_pairs - external_differences:,}/{external_pairs:,} agree",
        file=out,
    )
    print(figure.summary(), file=out)
    if figure.unexplained:
        print(f"{len(figure.unexplained)} differences are not explained", file=out)
        return 1
    return 0


def _import(checkout: Path) -> int:
    """Copy the cases' directories (manifests only) and expected txt outputs from a netpol-analyzer work tree."""
    for case in load_cases():
        if case.manifests.exists():
            shutil.rmtree(case.manifests)
        shutil.copytree(
            checkout / "tests" / case.dir,
            case.manifests,
            ignore=lambda _d, names: [
                n for n in names if "output" in n or not (n.endswith((".yaml", ".yml", ".json")) or "." not in n)
            ],
        )
        case.expected_output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(checkout / "test_outputs" / "connlist" / case.expected_output.name, case.expected_output)
    return 0


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["agreement"]:
        return _agreement()
    if argv[:1] == ["import"] and len(argv) == 2:
        return _import(Path(argv[1]))
    print(f"usage: {sys.argv[0]} agreement | import NETPOL_ANALYZER_CHECKOUT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
