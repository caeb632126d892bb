"""The page's data: every cell is the index's verdict, classes and verdicts are shared, observations are bounded."""

from __future__ import annotations

from typing import Any

from page_fixtures import many_workloads

from netpol_auditor.exporters.page_data import (
    MAX_REASON_CHARS,
    Observation,
    ObservedStatus,
    PageEndpoint,
    build_page_data,
    named_endpoints,
)
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import PortProtocol

PORTS = [PortProtocol(80), PortProtocol(9090)]


def decode(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        value, _, count = part.partition("*")
        out += [int(value)] * int(count or 1)
    return out


def cell_verdicts(data: dict[str, Any], i: int, j: int, port: int) -> list[dict[str, Any]]:
    e = data["endpoints"]
    ids = {decode(data["matrix"][port][str(cs)])[cd] for cs in e[i]["c"] for cd in e[j]["c"]}
    return [data["verdicts"][v] for v in sorted(ids)]


def endpoints_of(index: ReachabilityIndex) -> list[PageEndpoint]:
    return [PageEndpoint(str(p.ref), p.namespace, (p.ref,)) for p in index.pods()]


def test_every_cell_is_the_index_verdict() -> None:
    index = many_workloads(namespaces=4, per_namespace=3)
    endpoints = endpoints_of(index)
    data = build_page_data(index, endpoints, endpoints, PORTS, mode="offline", generated="now")
    names = [e["n"] for e in data["endpoints"]]
    for i, src in enumerate(endpoints):
        for j, dst in enumerate(endpoints):
            for p, port in enumerate(PORTS):
                (record,) = cell_verdicts(data, i, j, p)
                verdict = index.verdict(src.members[0], dst.members[0], port)
                assert record["a"] == verdict.allowed, (names[i], names[j], port)
                assert record["p"] == [f"{ns}/{n}" for ns, n in verdict.deciding_policies()]
                if verdict.allowed is not None:
                    admitted = [str(r) for dv in (verdict.egress, verdict.ingress) if dv for r in dv.admitted_by]
                    assert record["e"]["ok"] + record["i"]["ok"] == admitted


def test_verdicts_are_shared_and_rows_run_length_coded() -> None:
    index = many_workloads(namespaces=10, per_namespace=10)
    endpoints = endpoints_of(index)
    data = build_page_data(index, endpoints, endpoints, PORTS, mode="live", generated="now")
    assert len(data["verdicts"]) < 50  # 100 x 100 pairs on 2 ports: few distinct reasons
    row = data["matrix"][0]["0"]
    assert "*" in row and len(decode(row)) == 100


def test_a_workload_of_several_classes_shows_each_verdict() -> None:
    index = many_workloads(namespaces=1, per_namespace=3)
    scraper, plain, other = (p.ref for p in index.pods())
    mixed = PageEndpoint("ns-00/both[Deployment]", "ns-00", (scraper, plain))
    target = PageEndpoint("ns-01/x[Pod]", "ns-01", (other,))
    # ns-00's pods admit each other on any port; the scraper is the only one of ns-00 another namespace admits
    data = build_page_data(index, [mixed], [target, mixed], PORTS, mode="live", generated="now")
    assert len(data["endpoints"][0]["c"]) == 2
    assert cell_verdicts(data, 0, 0, 0)  # the endpoint and itself: the page does not judge it


def test_observations_name_known_groups_and_are_bounded() -> None:
    index = many_workloads(namespaces=1, per_namespace=2)
    a, b = (PageEndpoint(str(p.ref), p.namespace, (p.ref,), (f"g{i}",)) for i, p in enumerate(index.pods()))
    observations = [
        Observation("g0", "g1", PortProtocol(80), ObservedStatus.INCONCLUSIVE, "x" * 10_000),
        Observation("g0", "gone", PortProtocol(80), ObservedStatus.MISMATCH),
        Observation("g1", "g0", PortProtocol(443), ObservedStatus.CONFIRMED),
    ]
    data = build_page_data(index, [a, b], [a, b], PORTS, mode="live", generated="now", observations=observations)
    assert data["probed"] is True
    assert data["observations"] == [[0, 1, 0, "inconclusive", "x" * MAX_REASON_CHARS]]


def test_named_endpoints_are_pods_workloads_and_addresses() -> None:
    found = named_endpoints(["shop/api[Deployment]", "10.0.0.1"])
    assert [(e.namespace, e.members) for e in found][1] == ("", ("10.0.0.1",))
    assert found[0].namespace == "shop"
