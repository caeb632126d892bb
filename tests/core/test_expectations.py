"""Expectation files (`netpol_auditor.expectations`) and their check against the index
(`netpol_auditor.expectation_check`), on a small per-pod cluster."""

from __future__ import annotations

import pytest
from core_builders import ns, pod, policy

from netpol_auditor.expectation_check import Outcome, Subject, check
from netpol_auditor.expectations import Form, InvalidExpectations, Selector, parse_expectations
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import Labels, LabelSelector, Protocol

WEB_PORTS = [{"name": "http", "containerPort": 80}]
DB_PORTS = [{"name": "pg", "containerPort": 5432}]


@pytest.fixture
def shop_cluster() -> Subject:
    """prod/web and prod/db (only web may reach db), a hostNetwork agent in prod, and dev/tool (env=dev)."""
    index = ReachabilityIndex.from_objects([
        ns("prod"),
        ns("dev", env="dev"),
        pod("prod", "web", "10.0.0.1", {"app": "web"}, ports=WEB_PORTS),
        pod("prod", "db", "10.0.0.2", {"app": "db"}, ports=DB_PORTS),
        pod("prod", "agent", "192.168.0.1", {"app": "agent"}, host_network=True),
        pod("dev", "tool", "10.0.1.1", {"app": "tool"}),
        policy("prod", "db", {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}],
        }),
    ])  # fmt: skip
    return Subject(index, [p.ref for p in index.pods()])


def _check(subject: Subject, text: str) -> list[Outcome]:
    return check(parse_expectations(text, "e.yaml"), subject)


def test_items_are_read_with_their_line_form_and_defaults() -> None:
    text = """
# the database
- name: web reaches db
  from: prod/web
  to: {namespace: prod, podSelector: {matchLabels: {app: db}}}
  port: pg
  protocol: tcp
  allowed: true

- to: prod/db
  port: 5432
  onlyFrom: [prod/web, {namespaceSelector: {}}]
"""
    first, second = parse_expectations(text, "e.yaml")
    assert (first.index, first.line, first.form, first.port, first.protocol) == (0, 3, Form.PAIR, "pg", Protocol.TCP)
    assert first.to == Selector("prod", None, LabelSelector(Labels({"app": "db"})))
    assert first.title == "web reaches db"
    assert (second.index, second.line, second.form, second.allowed) == (1, 10, Form.ONLY_FROM, None)
    assert second.only == ("prod/web", Selector(None, LabelSelector(), None))
    assert second.title == "only prod/web, namespaces <all> -> prod/db on 5432/TCP"
    assert second.where == "e.yaml:10"


def test_every_problem_of_every_item_is_reported_at_once() -> None:
    text = "- {from: a, to: b, port: 0, allowed: true}\n- {to: b, port: x, onlyTo: [a]}\n"
    with pytest.raises(InvalidExpectations) as raised:
        parse_expectations(text, "e.yaml")
    assert [str(p) for p in raised.value.problems] == [
        "e.yaml:1: expectation [0]: port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "e.yaml:2: expectation [1]: from: Required value: onlyTo needs from",
        "e.yaml:2: expectation [1]: to: onlyTo judges every endpoint of the input as a destination: leave to out",
    ]


def test_only_from_judges_every_other_endpoint_and_leaves_out_what_cannot_be_judged(shop_cluster: Subject) -> None:
    (outcome,) = _check(shop_cluster, "- {to: prod/db, port: pg, onlyFrom: [prod/web]}\n")
    assert outcome.held
    assert outcome.judged == 2  # web (allowed) and dev/tool (denied)
    assert outcome.left_out == (
        "prod/agent uses the host network (node traffic, not governed by NetworkPolicy)",
    )


def test_a_pair_the_expectation_names_that_cannot_be_judged_is_violated(shop_cluster: Subject) -> None:
    (outcome,) = _check(shop_cluster, "- {from: prod/agent, to: prod/db, port: 5432, allowed: false}\n")
    assert not outcome.held
    (mismatch,) = outcome.mismatches
    assert mismatch.headline == (
        "prod/agent -> prod/db on 5432/TCP: expected DENIED, the analysis says NOT JUDGED "
        "(prod/agent uses the host network (node traffic, not governed by NetworkPolicy))"
    )


def test_a_namespace_selector_picks_by_namespace_labels(shop_cluster: Subject) -> None:
    text = "- {from: {namespaceSelector: {matchLabels: {env: dev}}}, to: prod/db, port: 5432, allowed: false}\n"
    (outcome,) = _check(shop_cluster, text)
    assert (outcome.held, outcome.judged) == (True, 1)


def test_only_to_reports_each_destination_reached_that_is_not_listed(shop_cluster: Subject) -> None:
    (outcome,) = _check(shop_cluster, "- {from: dev/tool, port: 80, onlyTo: []}\n")
    assert [m.headline for m in outcome.mismatches] == [
        "dev/tool -> prod/web on 80/TCP: expected DENIED, the analysis says ALLOWED",
    ]
    assert outcome.judged == 2  # db (denied: it takes only web, on 5432) and web; the agent left out
    assert len(outcome.left_out) == 1


def test_addresses_outside_the_cluster_are_endpoints_when_named(shop_cluster: Subject) -> None:
    (outcome,) = _check(shop_cluster, "- {from: 203.0.113.7, to: prod/db, port: 5432, allowed: false}\n")
    assert (outcome.held, outcome.judged) == (True, 1)
    with pytest.raises(InvalidExpectations, match=r"203\.0\.113\.7 is outside the cluster: it has no named ports"):
        _check(shop_cluster, "- {from: prod/web, to: 203.0.113.7, port: http, allowed: true}\n")
