"""Parsing AdminNetworkPolicy, BaselineAdminNetworkPolicy (v1alpha1) and ClusterNetworkPolicy (v1alpha2): the
shapes, the CRD defaults, and errors naming object and field where the CRD validation would refuse."""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import anp_dict, banp_dict, cnp_dict

from netpol_auditor.cluster_manifests import parse_cluster_policy
from netpol_auditor.cluster_policy import (
    ClusterPeer,
    ClusterPolicy,
    ClusterPolicyKind,
    ClusterPort,
    NamespacedPods,
    RuleAction,
    Tier,
)
from netpol_auditor.manifest_files import load_text, read_manifests
from netpol_auditor.manifests import ManifestError, parse_object
from netpol_auditor.model import Labels, LabelSelector, Protocol
from netpol_auditor.validation import unknown_fields

HOUSE = {"matchLabels": {"house": "gryffindor"}}


def parsed(obj: dict[str, Any]) -> ClusterPolicy:
    out = parse_cluster_policy(obj)
    assert isinstance(out, ClusterPolicy)
    return out


def error(obj: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as info:
        parse_cluster_policy(obj, "policy.yaml")
    return str(info.value)


def selector(**labels: str) -> LabelSelector:
    return LabelSelector(Labels(labels))


# -- shapes --------------------------------------------------------------------------------------------------------


def test_admin_network_policy_v1alpha1() -> None:
    pol = parsed(anp_dict("block-ns", 10, {"namespaces": HOUSE}, egress=[
        {"name": "deny-db", "action": "Deny", "to": [{"pods": {"namespaceSelector": {}, "podSelector": HOUSE}}],
         "ports": [{"portNumber": {"port": 5432}}, {"portRange": {"protocol": "UDP", "start": 53, "end": 54}},
                   {"namedPort": "web"}]},
        {"action": "Pass", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]}]},
        {"action": "Allow", "to": [{"nodes": {}}, {"domainNames": ["*.example.com"]}]},
    ], ingress=[{"action": "Allow", "from": [{"namespaces": {}}]}]))  # fmt: skip
    assert (pol.kind, pol.name, pol.tier, pol.priority) == (ClusterPolicyKind.ADMIN_NETWORK_POLICY, "block-ns",
                                                            Tier.ADMIN, 10)
    assert pol.key == ("AdminNetworkPolicy", "block-ns")
    assert pol.subject.namespaces == selector(house="gryffindor")
    deny, passing, allow = pol.egress
    assert (deny.name, deny.action) == ("deny-db", RuleAction.DENY)
    assert deny.peers == (ClusterPeer(pods=NamespacedPods(LabelSelector(), selector(house="gryffindor"))),)
    assert deny.ports == (  # portNumber.protocol defaults to TCP (+kubebuilder:default=TCP)
        ClusterPort(Protocol.TCP, 5432),
        ClusterPort(Protocol.UDP, 53, 54),
        ClusterPort(None, named_port="web"),
    )
    assert passing.action is RuleAction.PASS and passing.peers[0].networks == ("10.0.0.0/8", "fd00::/8")
    assert passing.ports == ()  # no ports: every port and protocol
    assert allow.action is RuleAction.ACCEPT and pol.action_word(allow.action) == "Allow"
    assert [p.field for p in allow.peers] == ["nodes", "domainNames"]
    assert pol.ingress[0].peers == (ClusterPeer(namespaces=LabelSelector()),)


def test_baseline_admin_network_policy_has_no_priority() -> None:
    pol = parsed(banp_dict({"pods": {"namespaceSelector": HOUSE, "podSelector": {}}},
                           ingress=[{"action": "Deny", "from": [{"namespaces": {}}]}]))
    assert (pol.kind, pol.name, pol.tier, pol.priority) == (ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY,
                                                            "default", Tier.BASELINE, None)


@pytest.mark.parametrize("tier", ["Admin", "Baseline"])
def test_cluster_network_policy_v1alpha2(tier: str) -> None:
    pol = parsed(cnp_dict("web", tier, 3, {"pods": {"podSelector": HOUSE}}, ingress=[
        {"action": "Accept", "from": [{"pods": {"podSelector": {}}}],
         "protocols": [{"tcp": {"destinationPort": {"number": 80}}},
                       {"sctp": {"destinationPort": {"range": {"start": 9000, "end": 9005}}}},
                       {"destinationNamedPort": "dns"}]},
    ]))  # fmt: skip
    assert (pol.kind, pol.tier, pol.priority) == (ClusterPolicyKind.CLUSTER_NETWORK_POLICY, Tier(tier), 3)
    # v1alpha2 NamespacedPod: namespaceSelector is optional, {} when omitted (every namespace).
    assert pol.subject.pods == NamespacedPods(LabelSelector(), selector(house="gryffindor"))
    rule = pol.ingress[0]
    assert rule.action is RuleAction.ACCEPT and pol.action_word(rule.action) == "Accept"
    assert rule.ports == (ClusterPort(Protocol.TCP, 80), ClusterPort(Protocol.SCTP, 9000, 9005),
                          ClusterPort(None, named_port="dns"))


# -- errors, as the CRD validation words them --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (anp_dict("p", 1001, {"namespaces": {}}), "spec.priority: Invalid value: 1001: must be between 0 and 1000"),
        (anp_dict("p", -1, {"namespaces": {}}), "spec.priority: Invalid value: -1"),
        (anp_dict("p", "1", {"namespaces": {}}), 'spec.priority: Invalid value: "1": must be an integer'),
        (anp_dict("p", None, {"namespaces": {}}), "spec.priority: Required value"),
        (anp_dict("p", 1, None), "spec.subject: Required value"),
        (anp_dict("p", 1, {}), "spec.subject: Required value: exactly one of namespaces, pods must be set"),
        (anp_dict("p", 1, {"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}}),
         "spec.subject: Forbidden: exactly one of namespaces, pods may be set, not namespaces and pods"),
        (anp_dict("p", 1, {"pods": {"podSelector": {}}}), "spec.subject.pods.namespaceSelector: Required value"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Accept", "to": [{"namespaces": {}}]}]),
         'spec.egress[0].action: Unsupported value: "Accept": supported values: "Deny", "Allow", "Pass"'),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Deny"}]), "spec.egress[0].to: Required value"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Deny", "to": []}]),
         "spec.egress[0].to: Invalid value: []: should have at least 1 items"),
        (anp_dict("p", 1, {"namespaces": {}}, ingress=[{"action": "Deny", "from": [{"networks": ["10.0.0.0/8"]}]}]),
         "spec.ingress[0].from[0]: Required value: exactly one of namespaces, pods must be set"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]}]),
         'spec.egress[0].to[0].networks[0]: Invalid value: "10.0.0.0/33": must be a valid CIDR value'),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[
            {"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}], "ports": [{"namedPort": "web"}]}]),
         "spec.egress[0]: Invalid value: \"ports with a named port\": networks/nodes/domainNames peer cannot be set "
         "with namedPorts"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Deny", "to": [{"namespaces": {}}], "ports": []}]),
         "spec.egress[0].ports: Invalid value: []: should have at least 1 items"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[
            {"action": "Deny", "to": [{"namespaces": {}}], "ports": [{"portRange": {"start": 90, "end": 80}}]}]),
         "spec.egress[0].ports[0].portRange: Invalid value: {\"start\": 90, \"end\": 80}: Start port must be less"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[
            {"action": "Deny", "to": [{"namespaces": {}}], "ports": [{"portNumber": {"port": 0}}]}]),
         "spec.egress[0].ports[0].portNumber.port: Invalid value: 0: must be between 1 and 65535"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Deny", "to": [{"namespaces": {}}],
                                                      "ports": [{"portNumber": {"port": 80, "protocol": "ICMP"}}]}]),
         'spec.egress[0].ports[0].portNumber.protocol: Unsupported value: "ICMP"'),
        (banp_dict({"namespaces": {}}, name="strict"),
         'BaselineAdminNetworkPolicy strict: metadata.name: Invalid value: "strict": Only one baseline admin network '
         'policy with metadata.name="default"'),
        (banp_dict({"namespaces": {}}, egress=[{"action": "Pass", "to": [{"namespaces": {}}]}]),
         'spec.egress[0].action: Unsupported value: "Pass": supported values: "Deny", "Allow"'),
        (cnp_dict("p", "Tenant", 1, {"namespaces": {}}), 'spec.tier: Unsupported value: "Tenant"'),
        (cnp_dict("p", None, 1, {"namespaces": {}}), "spec.tier: Required value"),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[{"action": "Allow", "from": [{"namespaces": {}}]}]),
         'spec.ingress[0].action: Unsupported value: "Allow": supported values: "Deny", "Accept", "Pass"'),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[
            {"action": "Deny", "from": [{"namespaces": {}}], "protocols": [{"tcp": {}}]}]),
         "spec.ingress[0].protocols[0].tcp.destinationPort: Required value"),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[
            {"action": "Deny", "from": [{"namespaces": {}}],
             "protocols": [{"tcp": {"destinationPort": {"number": 80}}, "udp": {"destinationPort": {"number": 80}}}]}]),
         "spec.ingress[0].protocols[0]: Forbidden: exactly one of tcp, udp, sctp, destinationNamedPort may be set"),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[
            {"action": "Deny", "from": [{"namespaces": {}}],
             "protocols": [{"udp": {"destinationPort": {"range": {"start": 53, "end": 53}}}}]}]),
         "spec.ingress[0].protocols[0].udp.destinationPort.range: Invalid value"),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, egress=[
            {"action": "Accept", "to": [{"domainNames": ["bad..name"]}]}]),
         'spec.egress[0].to[0].domainNames[0]: Invalid value: "bad..name"'),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, egress=[{"action": "Deny", "to": [{"pods": {}}]}]),
         "spec.egress[0].to[0].pods.podSelector: Required value"),
        (cnp_dict("p", "Admin", 1, {"namespaces": {"matchLabels": {"a": "-bad-"}}}),
         "spec.subject.namespaces.matchLabels: Invalid value: \"-bad-\""),
    ],
)  # fmt: skip
def test_invalid_objects_are_refused_naming_object_and_field(obj: dict[str, Any], expected: str) -> None:
    message = error(obj)
    assert message.startswith(f"policy.yaml: {obj['kind']} ")
    assert expected in message


def test_too_many_rules() -> None:
    rule = {"action": "Deny", "from": [{"namespaces": {}}]}
    assert "spec.ingress: Too many: 26: must have at most 25 items" in error(
        cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[rule] * 26))
    parsed(anp_dict("p", 1, {"namespaces": {}}, ingress=[rule] * 100))


def test_parse_object_reads_cluster_policies() -> None:
    obj = cnp_dict("p", "Admin", 1, {"namespaces": {}})
    assert parse_object(obj) == parse_cluster_policy(obj)


def test_other_versions_are_not_parsed() -> None:
    obj = anp_dict("p", 1, {"namespaces": {}})
    assert parse_cluster_policy({**obj, "apiVersion": "policy.networking.k8s.io/v1alpha2"}) is None
    assert parse_cluster_policy({**cnp_dict("p", "Admin", 1, {"namespaces": {}}),
                         "apiVersion": "policy.networking.k8s.io/v1alpha1"}) is None


# -- strict field validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "path"),
    [
        (anp_dict("p", 1, {"namespace": {}}), "spec.subject.namespace"),
        (anp_dict("p", 1, {"namespaces": {}}, egress=[{"action": "Deny", "to": [{"namespaces": {}}],
                                                      "protocols": []}]), "spec.egress[0].protocols"),
        (banp_dict({"namespaces": {}}, egress=[{"action": "Allow", "to": [{"domainNames": ["a.io"]}]}]),
         "spec.egress[0].to[0].domainNames"),  # BaselineAdminNetworkPolicyEgressPeer has no domainNames
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[{"action": "Deny", "from": [{"namespaces": {}}],
                                                                 "ports": [{"portNumber": {"port": 80}}]}]),
         "spec.ingress[0].ports"),  # v1alpha2 says protocols
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[
            {"action": "Deny", "from": [{"namespaces": {}}], "protocols": [{"tcp": {"destinationPort": {"port": 8}}}]},
        ]),
         "spec.ingress[0].protocols[0].tcp.destinationPort.port"),
        (cnp_dict("p", "Admin", 1, {"namespaces": {}}, ingress=[{"action": "Deny", "form": []}]),
         "spec.ingress[0].form"),
    ],
)  # fmt: skip
def test_unknown_fields_are_found(obj: dict[str, Any], path: str) -> None:
    assert [u.path for u in unknown_fields(obj)] == [path]
# -- manifest files ------------------------------------------------------------------------------------------------


def test_cluster_policies_are_read_from_files_and_lists_without_warnings() -> None:
    text = """
apiVersion: v1
kind: List
items:
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: AdminNetworkPolicy
  metadata: {name: a, resourceVersion: "7", uid: u-1}
  spec: {priority: 3, subject: {namespaces: {}}}
  status: {conditions: []}
- apiVersion: policy.networking.k8s.io/v1alpha1
  kind: BaselineAdminNetworkPolicy
  metadata: {name: default}
  spec: {subject: {namespaces: {}}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicyList
items:
- metadata: {name: c}
  spec: {tier: Baseline, priority: 0, subject: {namespaces: {}}}
"""
    objs = load_text(text)
    assert [o.key for o in objs if isinstance(o, ClusterPolicy)] == [
        ("AdminNetworkPolicy", "a"), ("BaselineAdminNetworkPolicy", "default"), ("ClusterNetworkPolicy", "c")]
    assert objs[0].uid == "u-1"


def test_vendor_kinds_and_other_versions_stay_warnings(tmp_path: Any) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("""
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: c}
spec: {nodeSelector: {}}
---
apiVersion: policy.networking.k8s.io/v1alpha3
kind: ClusterNetworkPolicy
metadata: {name: future}
spec: {}
""")
    found = read_manifests([str(path)])
    assert not found.errors and not found.objects
    assert [w.obj for w in found.warnings] == ["CiliumClusterwideNetworkPolicy c", "ClusterNetworkPolicy future"]
    assert all("is not analyzed" in w.problem for w in found.warnings)


def test_duplicate_and_misspelt_cluster_policies_are_errors(tmp_path: Any) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("""
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: c}
spec: {tier: Admin, priority: 1, subject: {namespaces: {}}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: c}
spec: {tier: Admin, priority: 2, subject: {namespaces: {}}}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: d}
spec: {tier: Admin, priority: 2, subject: {namespaces: {}}, egres: []}
""")
    found = read_manifests([str(path)])
    assert [str(e).split(": ", 1)[1] for e in found.errors] == [
        "ClusterNetworkPolicy c: duplicate object: also defined earlier in this file (one would silently replace "
        "the other)",
        'ClusterNetworkPolicy d: unknown field "spec.egres" (did you mean "egress"?)',
    ]
