"""Vendor policies: which pods each selects, per form; malformed input names object and field."""

from __future__ import annotations

from typing import Any

import pytest

from netpol_auditor.manifests import ManifestError
from netpol_auditor.model import Direction, Labels, Namespace
from netpol_auditor.vendor_policy import VendorPolicy, parse_calico_selector, parse_vendor_policy

SHOP = Namespace("shop", Labels({"team": "a"})).labels
OPS = Namespace("ops", Labels({"team": "b"})).labels


def parse(doc: dict[str, Any]) -> VendorPolicy:
    policy = parse_vendor_policy(doc, "p.yaml")
    assert policy is not None
    return policy


def cnp(spec: dict[str, Any], kind: str = "CiliumNetworkPolicy") -> dict[str, Any]:
    meta = {"name": "p", "namespace": "shop"} if kind == "CiliumNetworkPolicy" else {"name": "p"}
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": spec}


def calico(spec: dict[str, Any], kind: str = "NetworkPolicy", group: str = "projectcalico.org/v3") -> dict[str, Any]:
    meta = {"name": "p", "namespace": "shop"} if kind == "NetworkPolicy" else {"name": "p"}
    return {"apiVersion": group, "kind": kind, "metadata": meta, "spec": spec}


def antrea(spec: dict[str, Any], kind: str = "NetworkPolicy", version: str = "v1beta1") -> dict[str, Any]:
    meta = {"name": "p", "namespace": "shop"} if kind == "NetworkPolicy" else {"name": "p"}
    return {"apiVersion": f"crd.antrea.io/{version}", "kind": kind, "metadata": meta, "spec": spec}


def selected(policy: VendorPolicy) -> set[str]:
    pods = {
        "shop/web": ("shop", SHOP, {"app": "web"}),
        "shop/db": ("shop", SHOP, {"app": "db", "tier": "data"}),
        "ops/web": ("ops", OPS, {"app": "web"}),
        "ops/bare": ("ops", OPS, {}),
    }
    return {name for name, (ns, ns_labels, labels) in pods.items() if policy.selects(ns, ns_labels, labels)}


def test_not_a_vendor_kind() -> None:
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "x"}, "spec": {}}
    assert parse_vendor_policy(doc) is None


# -- Cilium -------------------------------------------------------------------------------------------------------


def test_cilium_namespaced_selects_in_its_namespace_only() -> None:
    policy = parse(cnp({"endpointSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}]}))
    assert selected(policy) == {"shop/web"}
    assert policy.directions == {Direction.INGRESS}
    assert policy.reason == "foreign_policy: cilium.io/v2 CiliumNetworkPolicy shop/p"


def test_cilium_label_sources_and_namespace_label() -> None:
    spec = {"endpointSelector": {"matchLabels": {"k8s:app": "web", "k8s:io.kubernetes.pod.namespace": "ops"}},
            "egress": [{}]}
    policy = parse(cnp(spec, "CiliumClusterwideNetworkPolicy"))
    assert selected(policy) == {"ops/web"}
    assert policy.directions == {Direction.EGRESS}


def test_cilium_namespace_labels_and_expressions() -> None:
    spec = {"endpointSelector": {
        "matchLabels": {"io.cilium.k8s.namespace.labels.team": "a"},
        "matchExpressions": [{"key": "any:app", "operator": "NotIn", "values": ["web"]}]},
        "ingressDeny": [{}]}
    assert selected(parse(cnp(spec, "CiliumClusterwideNetworkPolicy"))) == {"shop/db"}


def test_cilium_empty_selector_and_specs_list() -> None:
    doc = cnp({})
    del doc["spec"]
    doc["specs"] = [{"endpointSelector": {}, "ingress": [{}]}, {"endpointSelector": {}, "egress": [{}]}]
    policy = parse(doc)
    assert selected(policy) == {"shop/web", "shop/db"}
    assert policy.directions == set(Direction)


def test_cilium_host_policy_selects_no_pods() -> None:
    policy = parse(cnp({"nodeSelector": {}, "ingress": [{}]}, "CiliumClusterwideNetworkPolicy"))
    assert selected(policy) == set()


def test_cilium_service_account_only_narrows() -> None:
    spec = {"endpointSelector": {"matchLabels": {"app": "web", "io.cilium.k8s.policy.serviceaccount": "sa"}}}
    policy = parse(cnp(spec))
    assert selected(policy) == {"shop/web"}
    assert policy.directions == set(Direction)  # no rules: not discernible, both


def test_cilium_unknown_label_source_widens_to_namespace() -> None:
    policy = parse(cnp({"endpointSelector": {"matchLabels": {"reserved:host": ""}}, "ingress": [{}]}))
    assert selected(policy) == {"shop/web", "shop/db"}
    assert "label source 'reserved'" in policy.notes[0]


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        ({"ingress": [{}]}, "spec", "exactly one of endpointSelector and nodeSelector"),
        ({"endpointSelector": {}, "nodeSelector": {}}, "spec", "exactly one of"),
        ({"endpointSelector": {"matchLabels": {"app": 1}}}, "spec.endpointSelector.matchLabels.app", "strings"),
        ({"endpointSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
         "spec.endpointSelector.matchExpressions[0].operator", "Unsupported value"),
        ({"endpointSelector": {"matchLabel": {}}}, "spec.endpointSelector.matchLabel", "unknown field"),
        ({"endpointSelector": {}, "egress": {}}, "spec.egress", "must be a list"),
    ],
)
def test_cilium_malformed(spec: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_vendor_policy(cnp(spec), "p.yaml")
    assert err.value.obj == "CiliumNetworkPolicy shop/p"
    assert err.value.path == field
    assert problem in err.value.problem


# -- Calico -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", {"shop/web", "shop/db"}),
        ("all()", {"shop/web", "shop/db"}),
        ("app == 'web'", {"shop/web"}),
        ('app == "web"', {"shop/web"}),
        ("app != 'web'", {"shop/db"}),
        ("has(tier)", {"shop/db"}),
        ("!has(tier)", {"shop/web"}),
        ("app in {'web', 'db'}", {"shop/web", "shop/db"}),
        ("app not in {'web'}", {"shop/db"}),
        ("has(app) && tier == 'data'", {"shop/db"}),
        ("projectcalico.org/namespace == 'shop' && app == 'web'", {"shop/web"}),
    ],
)
def test_calico_simple_forms(selector: str, expected: set[str]) -> None:
    assert selected(parse(calico({"selector": selector}))) == expected


def test_calico_global_namespace_selector_and_pcns() -> None:
    spec = {"selector": "app == 'web'", "namespaceSelector": "projectcalico.org/name == 'ops'"}
    assert selected(parse(calico(spec, "GlobalNetworkPolicy"))) == {"ops/web"}
    spec = {"selector": "pcns.team == 'a'"}
    assert selected(parse(calico(spec, "GlobalNetworkPolicy", "crd.projectcalico.org/v1"))) == {"shop/web", "shop/db"}


@pytest.mark.parametrize(
    "selector",
    ["app == 'web' || app == 'db'", "(app == 'web')", "!(app == 'web')", "app contains 'w'",
     "app starts with 'w'", "global()", "app == web"],
)
def test_calico_other_forms_select_the_whole_scope(selector: str) -> None:
    policy = parse(calico({"selector": selector}))
    assert selected(policy) == {"shop/web", "shop/db"}
    assert "is not one of the simple forms understood" in policy.notes[0]
    assert "every pod of namespace shop" in policy.notes[0]
    glob = parse(calico({"selector": selector}, "GlobalNetworkPolicy"))
    assert selected(glob) == {"shop/web", "shop/db", "ops/web", "ops/bare"}


def test_calico_parser_terms() -> None:
    assert [r.key for r in parse_calico_selector("a == 'x&&y' && has(b)")] == ["a", "b"]


@pytest.mark.parametrize(
    ("spec", "directions"),
    [
        ({}, {Direction.INGRESS}),
        ({"ingress": [{}]}, {Direction.INGRESS}),
        ({"egress": [{}]}, {Direction.EGRESS}),
        ({"ingress": [{}], "egress": [{}]}, set(Direction)),
        ({"types": ["Egress"], "ingress": [{}]}, {Direction.EGRESS}),
    ],
)
def test_calico_types_defaulting(spec: dict[str, Any], directions: set[Direction]) -> None:
    assert parse(calico(spec)).directions == directions


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        ({"selector": 3}, "spec.selector", "must be a string"),
        ({"types": ["ingress"]}, "spec.types[0]", "Unsupported value"),
        ({"serviceAccountSelector": ["x"]}, "spec.serviceAccountSelector", "must be a string"),
    ],
)
def test_calico_malformed(spec: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_vendor_policy(calico(spec), "p.yaml")
    assert (err.value.obj, err.value.path) == ("NetworkPolicy shop/p", field)
    assert problem in err.value.problem


# -- Antrea -------------------------------------------------------------------------------------------------------


def test_antrea_namespaced_pod_selector() -> None:
    policy = parse(antrea({"appliedTo": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ingress": [{}]}))
    assert selected(policy) == {"shop/web"}
    assert policy.directions == {Direction.INGRESS}


def test_antrea_cluster_selectors() -> None:
    by_ns = parse(antrea({"appliedTo": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}], "egress": [{}]},
                         "ClusterNetworkPolicy", "v1alpha1"))
    assert selected(by_ns) == {"ops/web", "ops/bare"}
    by_pod = parse(antrea({"appliedTo": [{"podSelector": {"matchLabels": {"app": "web"}}}]}, "ClusterNetworkPolicy"))
    assert selected(by_pod) == {"shop/web", "ops/web"}


def test_antrea_rule_applied_to_group_and_nodes() -> None:
    spec = {"ingress": [{"appliedTo": [{"podSelector": {"matchLabels": {"app": "db"}}}]}],
            "egress": [{"appliedTo": [{"group": "g"}]}]}
    policy = parse(antrea(spec))
    assert selected(policy) == {"shop/web", "shop/db"}  # the group is not resolved: the namespace
    assert "spec.egress[0].appliedTo[0].group" in policy.notes[0]
    nodes = parse(antrea({"appliedTo": [{"nodeSelector": {}}]}, "ClusterNetworkPolicy"))
    assert selected(nodes) == set()


def test_antrea_malformed() -> None:
    with pytest.raises(ManifestError) as err:
        parse_vendor_policy(antrea({"ingress": [{}]}), "p.yaml")
    assert (err.value.obj, err.value.path) == ("NetworkPolicy shop/p", "spec.appliedTo")
    with pytest.raises(ManifestError) as err:
        parse_vendor_policy(antrea({"appliedTo": [{}]}), "p.yaml")
    assert err.value.path == "spec.appliedTo[0]"
