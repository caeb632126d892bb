"""Peer equivalence with np-guard netpol-analyzer on its own connlist examples (tests/corpus/netpol_analyzer/).

Per case, every ordered pair of its peers (workloads, and address intervals to and from workloads) is compared on
every port of every protocol: our connections must equal those of its expected output, except on the pairs of the
known differences (netpol_analyzer_differences.py), which must differ exactly there, for the reason given. The
README quotes the agreement figure; a test keeps it current.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from connlist import parse_external
from netpol_analyzer_corpus import (
    CORPUS,
    Case,
    Comparison,
    agreement,
    compare,
    compare_case,
    load_cases,
    load_index,
    npa_pod_name,
    observe,
)
from netpol_analyzer_differences import HOST_NETWORK, NOT_RUNNING, PEERS_NOT_JUDGED, REFUSED_INPUT

from netpol_auditor.manifest_files import read_manifests
from netpol_auditor.model import Pod

CASES = load_cases()
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def comparisons() -> dict[str, Comparison]:
    return {case.name: compare_case(case) for case in CASES}


def _report(comparison: Comparison, lines: list[str]) -> str:
    return f"{comparison.case.name}: {comparison.agreeing}/{comparison.pairs} pairs agree\n" + "\n".join(lines)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_input_is_read_or_refused_as_listed(case: Case) -> None:
    manifests = read_manifests([str(case.manifests)])
    errors = tuple(str(e).replace(f"{case.manifests}/", "") for e in manifests.errors)
    refusal = REFUSED_INPUT.get(case.name)
    assert errors == (refusal.errors if refusal else ())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_connections_agree_with_netpol_analyzer(case: Case, comparisons: dict[str, Comparison]) -> None:
    comparison = comparisons[case.name]
    assert not comparison.observed.refused, comparison.observed.refused
    assert comparison.pairs > 0
    listed = PEERS_NOT_JUDGED.get(case.name, {})
    compared = [*comparison.observed.workloads, *comparison.observed.externals]
    expected = {
        (src, dst): reason for src, dst in compared for reason, peers in listed.items() if {src, dst} & set(peers)
    }
    found = {(d.src, d.dst): d for d in comparison.differences}
    problems = [f"  differs: {found[pair]}" for pair in sorted(found.keys() - expected.keys())]
    problems += [
        f"  listed as a known difference ({expected[p].key}) but agrees: {p[0]} => {p[1]}"
        for p in sorted(expected.keys() - found.keys())
    ]
    problems += [
        f"  differs, but not for the listed reason ({expected[pair].key}): {found[pair]}"
        for pair in sorted(found.keys() & expected.keys())
        if not any(r.marker in found[pair].ours for r, peers in listed.items() if set(pair) & set(peers))
    ]
    in_pairs = {peer for pair in compared for peer in pair}
    problems += [
        f"  listed peer in no compared pair: {p}" for peers in listed.values() for p in peers if p not in in_pairs
    ]
    if problems:
        pytest.fail(_report(comparison, problems), pytrace=False)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in PEERS_NOT_JUDGED], ids=lambda c: c.name)
def test_peers_not_judged_are_what_the_reason_says(case: Case) -> None:
    """The listed peers are exactly the hostNetwork pods and the pods that are not running, read from the input."""
    manifests = read_manifests([str(case.manifests)])
    host, not_running = set(), set()
    for pod in (o for o in manifests.objects if isinstance(o, Pod)):
        name = npa_pod_name(pod)
        if pod.host_network:
            host.add(name)
        elif not pod.is_endpoint:
            not_running.add(name)
    listed = PEERS_NOT_JUDGED[case.name]
    peers = set(observe(case).peers)
    assert set(listed.get(HOST_NETWORK, ())) == host & peers
    assert set(listed.get(NOT_RUNNING, ())) == not_running & peers


def test_known_differences_name_compared_cases() -> None:
    names = {c.name for c in CASES}
    assert set(PEERS_NOT_JUDGED) <= names
    assert set(REFUSED_INPUT) <= names


def test_cases_account_for_every_connlist_test_of_netpol_analyzer() -> None:
    """cases.yaml lists all 249 connlist test cases of its goodPathTests: each compared or left out with a reason."""
    index = load_index()
    left_out = [name for group in index["notCompared"] for name in group["cases"]]
    names = [c.name for c in CASES] + left_out
    assert len(names) == len(set(names)) == 249
    for case in CASES:
        assert case.manifests.is_dir(), case.manifests
        assert case.expected_output.is_file(), case.expected_output


def test_fixtures_say_where_they_come_from() -> None:
    notice = (CORPUS / "NOTICE").read_text()
    assert "https://github.com/np-guard/netpol-analyzer" in notice
    assert re.search(r"\b[0-9a-f]{40}\b", notice), "the commit the fixtures were copied from"
    assert "Apache License" in (CORPUS / "LICENSE").read_text()


def test_readme_states_the_agreement_figure(comparisons: dict[str, Comparison]) -> None:
    figure = agreement(comparisons.values())
    assert not figure.unexplained
    text = " ".join(README.read_text().split())
    assert figure.summary() in text, f"README.md should state the current figure:\n{figure.summary()}"


def test_a_changed_policy_shows_as_a_difference() -> None:
    """The comparison is not vacuous: a policy port moved by one is seen on every pair it decides."""
    case = next(c for c in CASES if c.name == "acs-security-demos")
    comparison = compare(case, observe(case, {"port: 8080": "port: 8081"}))
    assert comparison.differences
    for difference in comparison.differences:
        assert (difference.theirs, difference.ours) == ("TCP 8080", "TCP 8081"), difference
        assert not parse_external(difference.src)


def test_case_names_follow_netpol_analyzer() -> None:
    """testutils.ConnlistTestNameByTestArgs: dir, then focus workloads, direction and peers."""
    assert Case("acs-security-demos").name == "acs-security-demos"
    focused = Case("acs-security-demos", ("checkout", "reports"), ("recommendation", "catalog"), "egress")
    assert focused.name == "acs-security-demos_focus_workload_checkout_reports_egress_with_recommendation_catalog"
    assert Case("x", ("backend/recommendation",)).name == "x_focus_workload_backend_recommendation"


def test_focus_selects_pairs_as_netpol_analyzer_does() -> None:
    """pkg/netpol/connlist includePairOfWorkloads: a focus workload on either side (by name or ns/name), its peers
    among the focus peers, the direction on the focus workload's side; an address range has no name."""
    web, api, db = "shop/web[Deployment]", "shop/api[Deployment]", "shop/db[StatefulSet]"
    world = "0.0.0.0-255.255.255.255[External]"
    plain = Case("d")
    assert plain.includes(web, api) and plain.includes(world, db)
    focus = Case("d", ("api",))
    assert focus.includes(web, api) and focus.includes(api, db) and focus.includes(world, api)
    assert not focus.includes(web, db)
    ingress = Case("d", ("shop/api",), (), "ingress")
    assert ingress.includes(web, api) and not ingress.includes(api, db)
    with_peer = Case("d", ("api",), ("web",))
    assert with_peer.includes(web, api) and with_peer.includes(api, web)
    assert not with_peer.includes(db, api) and not with_peer.includes(world, api)


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in REFUSED_INPUT], ids=lambda c: c.name)
def test_their_external_ranges_are_ours_or_joins_of_adjacent_ones(case: Case) -> None:
    """``analyze`` splits the address space where netpol-analyzer does: every ``first-last[External]`` peer of its
    expected output is one of our address ranges, or adjacent ones of ours joined (as both join the ranges an
    endpoint treats alike, e.g. ``0.0.0.0-255.255.255.255``)."""
    from netpol_auditor.connection_space import address_ranges
    from netpol_auditor.model import NetworkPolicy

    manifests = read_manifests([str(case.manifests)])
    assert not manifests.errors  # the inputs it refuses are left out above (REFUSED_INPUT, checked apart)
    ours = [r for r in address_ranges([o for o in manifests.objects if isinstance(o, NetworkPolicy)]) if r.version == 4]
    firsts, lasts = {r.first for r in ours}, {r.last for r in ours}
    theirs = {found for pair in case.expected().externals for peer in pair if (found := parse_external(peer))}
    for first, last in theirs:
        assert first in firsts and last in lasts, (case.name, first, last, [r.name for r in ours])
