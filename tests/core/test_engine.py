"""NetworkPolicy semantics, judged by both the reference evaluator (engine.Snapshot) and the index."""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import ns, pod, policy

from netpol_auditor.engine import Snapshot, Verdict
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import KubeObject
from netpol_auditor.model import Direction, Endpoint, PodRef, PortProtocol

A, B, C = PodRef("x", "a"), PodRef("x", "b"), PodRef("y", "c")
TCP80, TCP81, UDP80, SCTP80 = (PortProtocol.parse(p) for p in ("80/TCP", "81/TCP", "80/UDP", "80/SCTP"))


def cluster(*extra: KubeObject) -> list[KubeObject]:
    """Namespaces x (team=a) and y (team=b); x/a (app=web, named port http=8080), x/b (app=api), y/c (app=web)."""
    return [
        ns("x", team="a"),
        ns("y", team="b"),
        pod("x", "a", "10.0.1.1", {"app": "web"}, ports=[{"containerPort": 8080, "name": "http"}]),
        pod("x", "b", "10.0.1.2", {"app": "api"}, ports=[{"containerPort": 9090, "name": "http"}]),
        pod("y", "c", "10.0.2.1", {"app": "web"}),
        *extra,
    ]


def judge(objs: list[KubeObject], src: Endpoint, dst: Endpoint, port: PortProtocol) -> Verdict:
    """The verdict, after checking the index agrees with the reference evaluator (also in reverse load order)."""
    expected = Snapshot.from_objects(objs).verdict(src, dst, port)
    for order in (objs, list(reversed(objs))):
        got = ReachabilityIndex.from_objects(order).verdict(src, dst, port)
        assert got == expected
    return expected


def allowed(objs: list[KubeObject], src: Endpoint, dst: Endpoint, port: PortProtocol = TCP80) -> bool | None:
    return judge(objs, src, dst, port).allowed


def test_no_policy_allows_everything() -> None:
    v = judge(cluster(), A, C, TCP80)
    assert v.allowed is True
    assert v.egress is not None and not v.egress.isolated
    assert v.ingress is not None and not v.ingress.isolated
    assert v.deciding_policies() == ()
    assert "not isolated for ingress" in v.explain()


def test_default_deny_ingress() -> None:
    objs = cluster(policy("y", "deny", {"podSelector": {}}))
    v = judge(objs, A, C, TCP80)
    assert v.allowed is False
    assert v.ingress is not None and v.ingress.isolating_policies == (("y", "deny"),)
    assert v.deciding_policies() == (("y", "deny"),)
    assert "isolated for ingress by y/deny" in v.explain()
    # Policies apply only in their own namespace.
    assert allowed(objs, C, A) is True
    assert allowed(objs, A, B) is True


def test_default_deny_egress_and_both() -> None:
    egress = cluster(policy("x", "deny", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert allowed(egress, A, C) is False
    assert allowed(egress, C, A) is True
    both = cluster(policy("x", "deny", {"policyTypes": ["Ingress", "Egress"]}))
    assert allowed(both, A, B) is False
    assert allowed(both, C, A) is False
    assert allowed(both, A, "192.0.2.1") is False
    assert allowed(both, "192.0.2.1", A) is False


def test_sections_of_unlisted_types_are_ignored() -> None:
    # An egress section in an Ingress-only policy does not isolate egress, and vice versa.
    objs = cluster(
        policy("x", "only-ingress", {"policyTypes": ["Ingress"], "ingress": [{}], "egress": [{"to": []}]}),
        policy("y", "only-egress", {"policyTypes": ["Egress"], "ingress": [], "egress": []}),
    )
    assert allowed(objs, A, B) is True
    v = judge(objs, C, A, TCP80)
    assert v.egress is not None and v.egress.isolated and v.allowed is False
    assert allowed(objs, A, C) is True  # y/c's ingress is not isolated


def test_ingress_all_vs_ingress_empty() -> None:
    allow_all = cluster(policy("x", "all", {"ingress": [{}]}))
    assert allowed(allow_all, C, A) is True
    assert allowed(allow_all, "203.0.113.9", A) is True
    v = judge(allow_all, C, A, UDP80)
    assert (
        v.allowed is True and v.ingress is not None and str(v.ingress.rule) == "x/all ingress[0] (any from, any port)"
    )
    deny = cluster(policy("x", "none", {"ingress": []}))
    assert allowed(deny, C, A) is False


def test_union_of_policies() -> None:
    objs = cluster(
        policy("x", "deny", {}),
        policy("x", "from-y", {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
    )
    v = judge(objs, C, A, TCP80)
    assert v.allowed is True
    assert v.ingress is not None and v.ingress.isolating_policies == (("x", "deny"), ("x", "from-y"))
    assert v.deciding_policies() == (("x", "from-y"),)
    assert allowed(objs, B, A) is False


def test_pod_selector_peer_is_own_namespace_only() -> None:
    objs = cluster(
        policy("x", "web-from-web", {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]})
    )
    assert allowed(objs, C, B) is False  # y/c is app=web but in another namespace
    objs = cluster(policy("y", "from-api", {"ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}]}]}))
    assert allowed(objs, B, C) is False


def test_namespace_selector_and_implicit_name_label() -> None:
    spec = {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]}
    objs = [o for o in cluster(policy("x", "from-y", spec)) if o.name not in ("x", "y")]  # no Namespace objects
    assert allowed(objs, C, A) is True
    assert allowed(objs, B, A) is False


def test_and_versus_or_peers() -> None:
    and_peer = {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {"matchLabels": {"app": "api"}}}
    objs = cluster(pod("y", "d", "10.0.2.2", {"app": "api"}), policy("x", "and", {"ingress": [{"from": [and_peer]}]}))
    assert allowed(objs, PodRef("y", "d"), A) is True
    assert allowed(objs, C, A) is False  # y but not api
    assert allowed(objs, B, A) is False  # api but not y
    or_peers = [{"namespaceSelector": {"matchLabels": {"team": "b"}}}, {"podSelector": {"matchLabels": {"app": "api"}}}]
    objs = cluster(pod("y", "d", "10.0.2.2", {"app": "api"}), policy("x", "or", {"ingress": [{"from": or_peers}]}))
    assert allowed(objs, C, A) is True
    assert allowed(objs, B, A) is True
    v = judge(objs, B, A, TCP80)
    assert v.ingress is not None and v.ingress.rule is not None and v.ingress.rule.peer == 1


def test_namespace_selector_with_empty_pod_selector_is_all_pods() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "b"}}, "podSelector": {}}
    objs = cluster(policy("x", "p", {"ingress": [{"from": [peer]}]}))
    assert allowed(objs, C, A) is True
    # An empty namespaceSelector selects every namespace.
    objs = cluster(policy("x", "p", {"ingress": [{"from": [{"namespaceSelector": {}}]}]}))
    assert allowed(objs, C, A) is True
    assert allowed(objs, "198.51.100.1", A) is False  # selectors never select external addresses


def test_ip_block_matches_pod_ips_and_except_narrows_only_its_peer() -> None:
    block = {"ipBlock": {"cidr": "10.0.2.0/24", "except": ["10.0.2.1/32"]}}
    objs = cluster(
        pod("y", "d", "10.0.2.2", {"app": "db"}),
        policy("x", "egress", {"policyTypes": ["Egress"], "egress": [{"to": [block]}]}),
    )
    assert allowed(objs, A, PodRef("y", "d")) is True  # a pod IP inside the CIDR
    assert allowed(objs, A, C) is False  # excepted
    assert allowed(objs, A, "10.0.2.77") is True
    assert allowed(objs, A, "10.0.2.1") is False
    # The except does not narrow another peer of the same rule.
    both = [block, {"namespaceSelector": {"matchLabels": {"team": "b"}}}]
    objs = cluster(policy("x", "egress", {"policyTypes": ["Egress"], "egress": [{"to": both}]}))
    assert allowed(objs, A, C) is True
    assert allowed(objs, A, "10.0.2.1") is False


def test_ip_block_ipv6_never_matches_ipv4() -> None:
    objs = cluster(policy("x", "v6", {"ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}]}))
    assert allowed(objs, "2001:db8::1", A) is True
    assert allowed(objs, "192.0.2.1", A) is False
    assert allowed(objs, C, A) is False  # y/c has only an IPv4 address


def test_metadata_ip_deny() -> None:
    block = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}
    objs = cluster(policy("x", "no-metadata", {"policyTypes": ["Egress"], "egress": [{"to": [block]}]}))
    assert allowed(objs, A, "169.254.169.254") is False
    assert allowed(objs, A, "8.8.8.8") is True
    assert allowed(objs, A, C) is True  # pod IPs are inside 0.0.0.0/0


@pytest.mark.parametrize(
    ("ports", "expectations"),
    [
        (None, {TCP80: True, UDP80: True, SCTP80: True}),
        ([], {TCP80: True, UDP80: True}),
        ([{}], {TCP80: True, TCP81: True, UDP80: False, SCTP80: False}),
        ([{"port": 80}], {TCP80: True, TCP81: False, UDP80: False}),
        ([{"port": 80, "protocol": "UDP"}], {TCP80: False, UDP80: True}),
        ([{"protocol": "SCTP"}], {SCTP80: True, TCP80: False}),
        (
            [{"port": 32000, "endPort": 32768}],
            {
                PortProtocol.parse("31999"): False,
                PortProtocol.parse("32000"): True,
                PortProtocol.parse("32768"): True,
                PortProtocol.parse("32769"): False,
                PortProtocol.parse("32100/UDP"): False,
            },
        ),
    ],
)
def test_ports(ports: list[dict[str, Any]] | None, expectations: dict[PortProtocol, bool]) -> None:
    rule: dict[str, Any] = {"from": [{"namespaceSelector": {}}]}
    if ports is not None:
        rule["ports"] = ports
    objs = cluster(policy("x", "p", {"ingress": [rule]}))
    for port, expected in expectations.items():
        assert allowed(objs, C, A, port) is expected, port


def test_named_ports_resolve_on_destination() -> None:
    objs = cluster(policy("x", "http", {"ingress": [{"ports": [{"port": "http"}]}]}))
    # The same name maps to 8080 on x/a and 9090 on x/b.
    assert allowed(objs, C, A, PortProtocol.parse("8080")) is True
    assert allowed(objs, C, A, PortProtocol.parse("9090")) is False
    assert allowed(objs, C, B, PortProtocol.parse("9090")) is True
    assert allowed(objs, C, B, PortProtocol.parse("8080/UDP")) is False  # protocol must match too
    # Egress named ports resolve on the destination as well; pods lacking the name and external addresses match none.
    objs = cluster(policy("y", "egress", {"policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}))
    assert allowed(objs, C, A, PortProtocol.parse("8080")) is True
    assert allowed(objs, C, B, PortProtocol.parse("8080")) is False
    assert allowed(objs, C, "192.0.2.1", PortProtocol.parse("8080")) is False


def test_not_judged_pairs() -> None:
    objs = cluster(
        policy("x", "deny", {}),
        pod("x", "host", "192.168.0.10", {"app": "web"}, host_network=True),
        pod("x", "done", "10.0.1.9", {"app": "web"}, phase="Succeeded"),
        pod("x", "new", "10.0.1.9", {"app": "new"}),
    )
    assert judge(objs, A, A, TCP80).allowed is None
    v = judge(objs, PodRef("x", "host"), A, TCP80)
    assert v.allowed is None and "host network" in v.reason
    assert "not judged" in v.explain()
    assert judge(objs, C, PodRef("x", "done"), TCP80).allowed is None
    assert judge(objs, C, PodRef("x", "nobody"), TCP80).allowed is None
    assert judge(objs, "10.0.0.1", "10.0.0.2", TCP80).allowed is None
    assert judge(objs, "not-an-ip", A, TCP80).allowed is None
    # The pod that holds the IP now is judged on its own labels.
    assert allowed(objs, C, PodRef("x", "new")) is False


def test_identity_is_the_pod_not_the_ip() -> None:
    # An address that happens to be a pod's IP is still an outside address: pod selectors never match it.
    objs = cluster(
        policy("x", "from-y", {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]})
    )
    assert allowed(objs, C, A) is True
    assert allowed(objs, "10.0.2.1", A) is False


def test_external_sides_are_not_judged_for_the_outside() -> None:
    v = judge(cluster(policy("x", "deny", {"policyTypes": ["Egress"]})), "192.0.2.1", A, TCP80)
    assert v.allowed is True
    assert v.egress is None and v.ingress is not None
    assert "outside the cluster" in v.explain()


def test_verdict_to_dict_and_explanation_of_a_denial_by_egress() -> None:
    objs = cluster(
        policy("x", "deny-egress", {"policyTypes": ["Egress"]}),
        policy("y", "allow-web", {"ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )
    v = judge(objs, A, C, TCP80)
    assert v.allowed is False
    assert v.deciding_policies() == (("x", "deny-egress"),)
    d = v.to_dict()
    assert d["from"] == "x/a" and d["to"] == "y/c" and d["port"] == 80 and d["protocol"] == "TCP"
    assert d["allowed"] is False
    assert d["decidingPolicies"] == ["x/deny-egress"]
    assert d["ingress"]["admittedBy"][0] == {
        "namespace": "y",
        "policy": "allow-web",
        "direction": Direction.INGRESS.value,
        "rule": 0,
        "peer": 0,
        "port": None,
    }
    text = v.explain()
    assert text.splitlines()[0] == "x/a -> y/c on 80/TCP: DENIED."
    assert "Egress: x/a is isolated for egress by x/deny-egress; no egress rule" in text
    assert "allowed by y/allow-web ingress[0] (from[0], any port)" in text


def test_dns_egress_to_kube_system() -> None:
    dns = {
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            }
        ],
    }
    objs = cluster(ns("kube-system"), pod("kube-system", "coredns", "10.0.9.9", {"k8s-app": "kube-dns"}))
    objs.append(policy("x", "dns", dns))
    core = PodRef("kube-system", "coredns")
    assert allowed(objs, A, core, PortProtocol.parse("53/UDP")) is True
    assert allowed(objs, A, core, PortProtocol.parse("53/TCP")) is True
    assert allowed(objs, A, core, PortProtocol.parse("80/TCP")) is False
    assert allowed(objs, A, C, PortProtocol.parse("53/UDP")) is False
