"""The default ``analyze`` output, one line per (from, to) pair with the allowed ports summarised, says exactly what
the per-port verdicts say: on random clusters (selectors, named ports, endPort ranges, ipBlocks with except), every
port of every interval and every address of every range gets the verdict the pod-by-pod reference evaluator
(`engine.Snapshot`) gives it."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import random
from collections.abc import Callable

import pytest
from cli_harness import Result
from test_cli_equivalence import EXTERNALS, random_cluster

from netpol_auditor.cli import build_analysis
from netpol_auditor.cluster_policy import ClusterPolicy
from netpol_auditor.connection_space import address_ranges, port_intervals
from netpol_auditor.engine import Snapshot
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import Endpoint, NetworkPolicy, Pod, PodRef, PortProtocol, Protocol
from netpol_auditor.render import render
from netpol_auditor.render_pairs import PairCounts, pair_rows


def _endpoint(name: str, addresses: dict[str, tuple[int, int, int]], rng: random.Random) -> Endpoint:
    """A pod, or a random address of the range ``name`` (any address of it must be judged alike)."""
    if name in addresses:
        version, first, last = addresses[name]
        value = rng.randint(first, last)
        return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))
    if "/" in name:
        return PodRef.parse(name)
    return name


@pytest.mark.parametrize("seed", range(10))
def test_pair_connections_equal_the_verdicts_on_every_port_and_address(seed: int) -> None:
    objects = [o for o in (parse_object(d) for d in random_cluster(seed)) if o is not None]
    index = ReachabilityIndex.from_objects(objects)
    reference = Snapshot.from_objects(objects)  # type: ignore[arg-type]
    policies = [o for o in objects if isinstance(o, NetworkPolicy)]
    intervals = port_intervals(policies, [o for o in objects if isinstance(o, ClusterPolicy)],
                               [o for o in objects if isinstance(o, Pod)])
    ranges = address_ranges(policies)
    analysis = build_analysis(index, ports=list(intervals), externals=EXTERNALS[:1], ranges=ranges,
                              intervals=intervals)
    addresses = {r.name: (r.version, r.first, r.last) for r in ranges}
    rng = random.Random(seed)
    counts = PairCounts()
    listed = {
        (s, d): pair
        for src, row in pair_rows(analysis, counts)
        for dst, pair in row
        for s in counts.of(src)  # address ranges joined into one line: each of them
        for d in counts.of(dst)
    }
    assert listed, "a cluster where nothing is allowed tests nothing"
    checked = 0
    for src, dst in analysis.pairs():
        pair = listed.get((src, dst))
        if analysis.cell(src, dst, next(iter(intervals))).allowed is None:
            assert pair is None, "a pair not judged is not listed"
            continue
        allowed = pair.allowed.ports if pair is not None else {}
        for port, ranges in intervals.items():
            lo, hi = rng.choice(ranges)  # every range a judged port stands for is judged alike: any of them
            for number in {lo, hi, rng.randint(lo, hi)}:
                verdict = reference.verdict(_endpoint(src, addresses, rng), _endpoint(dst, addresses, rng),
                                            PortProtocol(number, port.protocol))
                said = any(a <= number <= b for a, b in allowed.get(port.protocol, ()))
                assert said == bool(verdict.allowed), (src, dst, number, port.protocol, verdict.explain())
                checked += 1
    assert checked


@pytest.mark.parametrize("seed", range(6))
def test_pairs_from_row_bits_equal_pairs_from_cells(seed: int) -> None:
    """The fast path (rows as bits per class) writes what the cell-by-cell path writes, in every format."""
    objects = [o for o in (parse_object(d) for d in random_cluster(seed)) if o is not None]
    index = ReachabilityIndex.from_objects(objects)
    policies = [o for o in objects if isinstance(o, NetworkPolicy)]
    intervals = port_intervals(policies, [], [o for o in objects if isinstance(o, Pod)])
    analysis = build_analysis(index, ports=list(intervals), externals=EXTERNALS, ranges=address_ranges(policies),
                              intervals=intervals)
    assert analysis.marks is not None
    for fmt in ("table", "json", "csv"):
        fast, slow = io.StringIO(), io.StringIO()
        render(analysis, fmt, fast, per_pair=True)
        render(dataclasses.replace(analysis, marks=None), fmt, slow, per_pair=True)
        assert fast.getvalue() == slow.getvalue()


def test_port_ranges_and_external_ranges_are_summarised(cli: Callable[..., Result]) -> None:
    """endPort ranges stay ranges, protocols are listed apart, and the ipBlock 10.0.0.0/8 except 10.1.0.0/16 cuts
    the address space into the ranges that admit the metrics port and those that do not."""
    from cli_harness import FIXTURES

    result = cli(["analyze", "-f", str(FIXTURES / "port-ranges-ipblocks.yaml"), "-o", "json"])
    assert result.code == 0, result.err
    import json

    got = json.loads(result.out)
    lines = {(c["from"], c["to"]): c for c in got["connections"]}
    gateway, worker, open_ = "edge/gateway[Deployment]", "edge/worker[Deployment]", "edge/open[Deployment]"
    assert lines[(gateway, worker)]["connections"] == "TCP 8080-8090,UDP 53"
    assert lines[(gateway, worker)]["allowed"] == {"TCP": [[8080, 8090]], "UDP": [[53, 53]]}
    assert lines[(gateway, worker)]["decidingPolicies"] == ["edge/gateway", "edge/worker"]
    # Unisolated both ways: every connection, not only the ports the worker declares.
    assert lines[(worker, open_)]["connections"] == "All Connections" and lines[(worker, open_)]["allConnections"]
    assert lines[(worker, open_)]["decidingPolicies"] == []
    assert got["externals"] == [
        "0.0.0.0-9.255.255.255",
        "10.0.0.0-10.0.255.255",
        "10.1.0.0-10.1.255.255",
        "10.2.0.0-10.255.255.255",
        "11.0.0.0-169.254.169.253",
        "169.254.169.254-169.254.169.254",
        "169.254.169.255-255.255.255.255",
    ]
    # Adjacent ranges alike for an endpoint share a line: the metadata address splits the gateway's egress in two.
    assert {dst: c["connections"] for (src, dst), c in lines.items() if src == gateway} == {
        worker: "TCP 8080-8090,UDP 53",
        "0.0.0.0-169.254.169.253": "TCP 443",
        "169.254.169.255-255.255.255.255": "TCP 443",
    }
    # The named port, resolved, from 10.0.0.0/8 except 10.1.0.0/16.
    assert {src: c["connections"] for (src, dst), c in lines.items() if dst == worker and src != gateway} == {
        "10.0.0.0-10.0.255.255": "TCP 9090",
        "10.2.0.0-10.255.255.255": "TCP 9090",
    }
    assert lines[("0.0.0.0-255.255.255.255", gateway)]["connections"] == "TCP 8443"
    assert (gateway, open_) not in lines  # denied: not listed
    assert got["summary"] == {"entries": 12, "pairsWithoutConnections": 8, "pairsNotJudged": 0}
    assert [p.value for p in Protocol]  # TCP, UDP and SCTP are what "All Connections" covers
