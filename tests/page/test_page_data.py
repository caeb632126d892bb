"""The page's data: every cell is the index's verdict, classes and verdicts are shared, observations are bounded."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from page_fixtures import analyze, many_workloads
from tests.core.test_index_properties import EXTERNALS, key_of, object_st, parsed
from tests.core.test_index_properties import PORTS as RANDOM_PORTS

from netpol_auditor.exporters.page_data import (
    MAX_REASON_CHARS,
    Observation,
    ObservedStatus,
    PageEndpoint,
    build_page_data,
    direction_record,
    named_endpoints,
)
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import iter_objects
from netpol_auditor.model import Endpoint, PortProtocol

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
sys.path.insert(0, str(CORPUS))
from corpus_truthtable import load_case, model_path  # noqa: E402

PORTS = [PortProtocol(80), PortProtocol(9090)]


def decode(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        value, _, count = part.partition("*")
        out += [int(value)] * int(count or 1)
    return out


def combine(data: dict[str, Any], e: int, i: int) -> dict[str, Any]:
    """A cell's verdict from its egress and ingress halves, as the page's script puts it together."""
    if e <= -2:
        return {"a": None, "r": data["unjudged"][-2 - e], "p": []}
    halves = [None if e == -1 else data["directions"][e], None if i == -1 else data["directions"][i]]
    outcomes = [dv["al"] for dv in halves if dv is not None]
    allowed = False if False in outcomes else None if None in outcomes else True
    deciding: list[str] = []
    for dv in halves:
        if dv is not None and allowed is not None and (allowed or dv["al"] is not True):
            deciding += [n for n in dv["dp"] if n not in deciding]
    return {"a": allowed, "p": deciding, "e": halves[0], "i": halves[1]}


def cell_verdicts(data: dict[str, Any], i: int, j: int, port: int) -> list[dict[str, Any]]:
    e = data["endpoints"]
    halves = {(decode(data["egress"][port][str(cs)])[cd], decode(data["ingress"][port][str(cd)])[cs])
              for cs in e[i]["c"] for cd in e[j]["c"]}
    return [combine(data, *h) for h in sorted(halves)]


def endpoints_of(index: ReachabilityIndex) -> list[PageEndpoint]:
    return [PageEndpoint(str(p.ref), p.namespace, (p.ref,)) for p in index.pods()]


def assert_every_cell_is_the_index_verdict(index: ReachabilityIndex, ports: list[PortProtocol],
                                           addresses: tuple[str, ...] = ()) -> None:
    endpoints = endpoints_of(index) + [PageEndpoint(a, "", (a,)) for a in addresses]
    data = build_page_data(index, endpoints, endpoints, ports, mode="offline", generated="now")
    names = [e["n"] for e in data["endpoints"]]
    for i, src in enumerate(endpoints):
        for j, dst in enumerate(endpoints):
            if i == j:
                continue  # the page never judges an endpoint and itself
            for p, port in enumerate(ports):
                (record,) = cell_verdicts(data, i, j, p)
                a: Endpoint = src.members[0]
                b: Endpoint = dst.members[0]
                verdict = index.verdict(a, b, port)
                assert record["a"] == verdict.allowed, (names[i], names[j], port)
                assert record["p"] == [f"{ns}/{n}" for ns, n in verdict.deciding_policies()]
                if verdict.egress is None and verdict.ingress is None:
                    assert record["r"] == verdict.reason
                    continue
                for key, dv in (("e", verdict.egress), ("i", verdict.ingress)):
                    expected = None if dv is None else direction_record(dv)
                    assert record[key] == expected, (names[i], names[j], port, key)


def test_every_cell_is_the_index_verdict() -> None:
    assert_every_cell_is_the_index_verdict(many_workloads(namespaces=4, per_namespace=3), PORTS)


@settings(max_examples=150, deadline=None)
@given(st.lists(object_st, max_size=14))
def test_every_cell_of_random_clusters_is_the_index_verdict(objects: list[dict[str, Any]]) -> None:
    """Random pods (host network, pending, named ports, addresses), namespaces and policies (selectors, ipBlocks,
    ports), as the index's own property tests draw them, and addresses outside the cluster."""
    state = {}
    for raw in objects:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(state.values())
    assert_every_cell_is_the_index_verdict(index, list(RANDOM_PORTS), tuple(EXTERNALS))


TRUTH_TABLES = sorted(
    p for d in ("e2e", "guides", "conformance") for p in (CORPUS / d).glob("*.yaml") if p.name != "model.yaml")


@pytest.mark.parametrize("path", TRUTH_TABLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_cell_of_the_corpus_is_the_index_verdict(path: Path) -> None:
    """Pods alike for every policy share their cells' verdicts: exact on every case of the truth-table corpus
    (named ports, endPort, ipBlock except, namespace selectors, SCTP and UDP, Admin and Baseline tiers)."""
    case = load_case(path)
    model_file = model_path(CORPUS, case)
    model = [d for d in yaml.safe_load_all(model_file.read_text()) if d] if model_file is not None else []

    def identity(o: dict[str, Any]) -> tuple[Any, ...]:
        return o.get("kind"), (o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name")

    replaced = {identity(o) for o in case.objects}
    docs = [o for o in model if identity(o) not in replaced]
    objs = [o for doc in [*docs, *case.objects] for o in iter_objects(doc, str(path))]
    index = ReachabilityIndex.from_objects(objs)
    ports = sorted({PortProtocol.parse(e.port) for e in case.ports} | {PortProtocol(80), PortProtocol(81)})
    assert_every_cell_is_the_index_verdict(index, ports)


def test_verdicts_are_shared_and_rows_run_length_coded() -> None:
    index = many_workloads(namespaces=10, per_namespace=10)
    endpoints = endpoints_of(index)
    data = build_page_data(index, endpoints, endpoints, PORTS, mode="live", generated="now")
    assert len(data["directions"]) < 50  # 100 x 100 pairs on 2 ports: few distinct decisions
    # the policies select on no label but role: one class per namespace, and ns-00's scraper apart
    assert len({c for e in data["endpoints"] for c in e["c"]}) == 11
    assert len(decode(data["egress"][0]["0"])) == 11
    assert data["egress"][0]["1"] == "0*11"  # no egress policy: the same decision to every destination


def test_a_policy_per_workload_keeps_the_page_small() -> None:
    """Every workload its own class (a policy each): the halves of the verdicts still compress."""
    index = many_workloads(namespaces=10, per_namespace=20, own_policies=True)
    endpoints = endpoints_of(index)
    data = build_page_data(index, endpoints, endpoints, [PortProtocol(80)], mode="live", generated="now")
    assert len({c for e in data["endpoints"] for c in e["c"]}) == 200
    assert len(json.dumps(data)) < 200 * 1000  # under a kilobyte per workload, not per pair


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


def test_vendor_selected_paths_are_not_known_on_the_offline_page() -> None:
    """A Cilium, Calico or Antrea policy selecting a pod: the page's cells of its egress (as a source) and ingress
    (as a destination) are not known, with the policy as the reason, exactly where ``analyze`` says out of model;
    every other cell is the verdict ``analyze`` gives."""
    vendor = str(Path(__file__).resolve().parents[1] / "cli" / "fixtures" / "vendor-policies.yaml")
    page = analyze("-f", vendor, "-o", "html")
    (payload,) = re.findall(r'<script type="application/json" id="page-data">(.*?)</script>', page, re.S)
    data = json.loads(payload)
    expected = {(v["from"], v["to"], f"{v['port']}/{v['protocol']}"): v
                for v in json.loads(analyze("-f", vendor, "-o", "json", "--matrix"))["verdicts"]}
    names = [e["n"] for e in data["endpoints"]]
    unknown = 0
    for (src, dst, port), verdict in expected.items():
        cells = cell_verdicts(data, names.index(src), names.index(dst), data["ports"].index(port))
        assert [c["a"] for c in cells] == [verdict["allowed"]], (src, dst, port)
        if verdict["allowed"] is None:
            unknown += 1
            assert [c["r"] for c in cells] == [verdict["reason"]], (src, dst, port)
    assert unknown == 38
