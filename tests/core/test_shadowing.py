"""Shadowed rules: what is found, what is deliberately not, and that removing every rule found changes no verdict."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from core_builders import policy
from hypothesis import given
from hypothesis import strategies as st
from test_index_properties import EXTERNALS, PORTS, ns_dict_st, parsed, pod_dict_st, policy_dict_st

from netpol_auditor.engine import Snapshot
from netpol_auditor.manifests import KubeObject
from netpol_auditor.model import Direction, NetworkPolicy, Pod
from netpol_auditor.shadowing import selector_contains, shadowed_rules


def _found(*policies: NetworkPolicy) -> list[tuple[str, str, str, str]]:
    return [(s.policy.name, s.path, s.by.name, f"spec.{s.direction.value.lower()}[{s.by_rule}]")
            for s in shadowed_rules(policies)]  # fmt: skip


WEB = {"matchLabels": {"app": "web"}}


def _ingress(name: str, *rules: dict[str, Any], selector: dict[str, Any] | None = None) -> NetworkPolicy:
    return policy("x", name, {"podSelector": selector or {}, "ingress": list(rules)})


@pytest.mark.parametrize(
    ("narrow", "wide"),
    [
        # peers: a pod selector with more requirements; every peer; In with fewer values; Exists; NotIn
        ({"from": [{"podSelector": {"matchLabels": {"app": "a", "tier": "1"}}}]},
         {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}),
        ({"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]}, {}),
        ({"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}}]},
         {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}}]}),
        ({"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]},
         {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}]}),
        ({"from": [{"podSelector": {"matchLabels": {"app": "a"}}}]},
         {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["b"]}]}}]}),
        # the policy's own namespace, and a namespaceSelector naming it or selecting every namespace
        ({"from": [{"podSelector": WEB}]},
         {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}]}),
        ({"from": [{"podSelector": WEB}]}, {"from": [{"namespaceSelector": {}}]}),
        ({"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": WEB}]},
         {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}),
        # ipBlocks: a smaller cidr; an except outside the narrow cidr, or inside one of its excepts
        ({"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}, {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}),
        ({"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]},
         {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.2.0.0/16"]}}]}),
        ({"from": [{"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.0.0/24"]}}]},
         {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/25"]}}]}),
        # ports: a range inside a range, a port of a protocol with no port, a named port and the same name
        ({"ports": [{"port": 80, "endPort": 90}]}, {"ports": [{"port": 70, "endPort": 100}]}),
        ({"ports": [{"port": 53, "protocol": "UDP"}]}, {"ports": [{"protocol": "UDP"}]}),
        ({"ports": [{"port": "http"}]}, {"ports": [{"port": "http"}, {"port": 443}]}),
        ({"ports": [{"port": 80}], "from": [{"podSelector": WEB}]}, {"ports": [{"port": 80}, {"port": 81}]}),
    ],
)  # fmt: skip
def test_a_rule_inside_another_is_found(narrow: dict[str, Any], wide: dict[str, Any]) -> None:
    assert _found(_ingress("p", narrow, wide)) == [("p", "spec.ingress[0]", "p", "spec.ingress[1]")]
    assert _found(_ingress("p", wide, narrow)) == [("p", "spec.ingress[1]", "p", "spec.ingress[0]")]
    # In another policy that selects at least the same pods.
    assert _found(_ingress("a", narrow, selector=WEB), _ingress("b", wide)) == [
        ("a", "spec.ingress[0]", "b", "spec.ingress[0]")
    ]


@pytest.mark.parametrize(
    ("narrow", "wide"),
    [
        # covered only by two peers, or two rules, together
        ({"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}}]},
         {"from": [{"podSelector": {"matchLabels": {"app": "a"}}}, {"podSelector": {"matchLabels": {"app": "b"}}}]}),
        # a selector peer against an ipBlock, and the reverse: pod IPs are not known
        ({"from": [{"podSelector": WEB}]}, {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}),
        ({"from": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}, {"from": [{"namespaceSelector": {}}]}),
        # an except of the wide block that cuts into the narrow one
        ({"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]},
         {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.2.0/24"]}}]}),
        # a named port against a number; another protocol; every port against some
        ({"ports": [{"port": "http"}]}, {"ports": [{"port": 8080}]}),
        ({"ports": [{"port": 80, "protocol": "UDP"}]}, {"ports": [{"port": 80}]}),
        ({}, {"ports": [{"port": 80}]}),
        # another namespace selector; DoesNotExist against NotIn the other way round
        ({"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]},
         {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}),
        ({"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["b"]}]}}]},
         {"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}}]}),
    ],
)  # fmt: skip
def test_a_rule_not_inside_another_is_not_found(narrow: dict[str, Any], wide: dict[str, Any]) -> None:
    # (The wide rule may well be inside the narrow one: only the narrow one is looked at.)
    assert [f for f in _found(_ingress("p", narrow, wide)) if f[1] == "spec.ingress[0]"] == []
    assert [f for f in _found(_ingress("p", wide, narrow)) if f[1] == "spec.ingress[1]"] == []


def test_only_policies_selecting_at_least_the_same_pods_in_the_same_namespace_and_direction_shadow() -> None:
    narrow = {"from": [{"podSelector": WEB}]}
    # The wide rule's policy selects fewer pods: the narrow rule still admits web to the other pods.
    assert _found(_ingress("a", narrow), _ingress("b", {}, selector=WEB)) == []
    # Another namespace.
    other = policy("y", "b", {"podSelector": {}, "ingress": [{}]})
    assert _found(_ingress("a", narrow), other) == []
    # The wide rule is an egress rule; or the policy does not isolate ingress, so its ingress rules are ignored.
    egress = policy("x", "b", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]})
    assert _found(_ingress("a", narrow), egress) == []
    ignored = policy("x", "b", {"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]})
    assert _found(_ingress("a", narrow), ignored) == []


def test_of_two_alike_rules_the_later_is_reported() -> None:
    rule = {"from": [{"podSelector": WEB}], "ports": [{"port": 80}]}
    assert _found(_ingress("a", rule), _ingress("b", rule)) == [("b", "spec.ingress[0]", "a", "spec.ingress[0]")]
    # Written differently: the policy's namespace, by the label the API server puts on every namespace.
    own = {"from": [{"podSelector": {}}]}
    named = {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}]}
    assert _found(_ingress("p", own, named)) == [("p", "spec.ingress[1]", "p", "spec.ingress[0]")]
    assert _found(_ingress("p", rule, rule, rule)) == [
        ("p", "spec.ingress[1]", "p", "spec.ingress[0]"),
        ("p", "spec.ingress[2]", "p", "spec.ingress[0]"),
    ]


def test_egress_rules() -> None:
    rules = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}, {"to": [{"ipBlock": {"cidr": "10.0.0.0/16"}}]}]
    p = policy("x", "p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": rules})
    assert [(s.direction, s.path) for s in shadowed_rules([p])] == [(Direction.EGRESS, "spec.egress[0]")]


def test_selector_containment() -> None:
    def sel(**kw: Any) -> Any:
        return policy("x", "p", {"podSelector": kw}).pod_selector

    assert selector_contains(sel(), sel(matchLabels={"a": "1"}))
    assert not selector_contains(sel(matchLabels={"a": "1"}), sel())
    absent = sel(matchExpressions=[{"key": "a", "operator": "DoesNotExist"}])
    assert selector_contains(sel(matchExpressions=[{"key": "a", "operator": "NotIn", "values": ["1"]}]), absent)
    assert selector_contains(absent, absent)
    assert not selector_contains(sel(matchExpressions=[{"key": "a", "operator": "Exists"}]), absent)


def _without(policies: list[NetworkPolicy], removed: set[tuple[str, Direction, int]]) -> list[NetworkPolicy]:
    out = []
    for p in policies:
        kept = {
            d: tuple(r for i, r in enumerate(p.rules(d)) if (p.name, d, i) not in removed) for d in Direction
        }
        out.append(dataclasses.replace(p, ingress=kept[Direction.INGRESS], egress=kept[Direction.EGRESS]))
    return out


@given(
    st.lists(policy_dict_st(namespace="x"), max_size=4, unique_by=lambda d: d["metadata"]["name"]),
    st.lists(st.one_of(pod_dict_st(), ns_dict_st), max_size=6),
)
def test_removing_every_shadowed_rule_changes_no_verdict(raw_policies: list[Any], raw_others: list[Any]) -> None:
    policies = [p for p in map(parsed, raw_policies) if isinstance(p, NetworkPolicy)]
    others: list[KubeObject] = [parsed(o) for o in raw_others]
    found = shadowed_rules(policies)
    removed = {(s.policy.name, s.direction, s.rule) for s in found}
    before = Snapshot.from_objects([*others, *policies])
    after = Snapshot.from_objects([*others, *_without(policies, removed)])
    endpoints = [*sorted({o.ref for o in others if isinstance(o, Pod)}), *EXTERNALS]
    for src, dst in itertools.permutations(endpoints, 2):
        for port in PORTS:
            assert before.verdict(src, dst, port).allowed == after.verdict(src, dst, port).allowed, (found, src, dst)
