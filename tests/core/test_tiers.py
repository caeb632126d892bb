"""Cluster policies in tiers (Admin -> NetworkPolicy -> Baseline -> allowed), as truth tables in the upstream e2e
style (kubernetes/kubernetes test/e2e/network/netpol/truthtable.go): rows are sources, columns destinations, ``.``
allowed, ``X`` denied, ``?`` out of model (the manifests cannot tell), ``-`` a pod and itself.

The model: namespaces x (tier=front), y and z (tier=back); in each, pod a (app=a, container port 80/TCP named web)
and pod b (app=b, 8080/TCP named web). Every verdict is judged by the reference evaluator and the index alike.
"""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import anp_dict, banp_dict, cnp_dict, ns, parse, pod, policy

from netpol_auditor.cluster_policy import ClusterPolicy
from netpol_auditor.engine import Snapshot, Verdict
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import KubeObject
from netpol_auditor.model import Endpoint, PodRef, PortProtocol

PODS = [PodRef(n, p) for n in "xyz" for p in "ab"]
IPS = {PodRef(n, p): f"10.0.{1 + 'xyz'.index(n)}.{1 + 'ab'.index(p)}" for n in "xyz" for p in "ab"}
TCP80, TCP81, TCP8080, UDP53 = (PortProtocol.parse(p) for p in ("80/TCP", "81/TCP", "8080/TCP", "53/UDP"))
EVERYWHERE: dict[str, Any] = {"namespaces": {}}
FRONT = {"namespaces": {"matchLabels": {"tier": "front"}}}
BACK = {"namespaces": {"matchLabels": {"tier": "back"}}}


def ns_named(name: str) -> dict[str, Any]:
    return {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def app(value: str) -> dict[str, Any]:
    return {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": value}}}}


Object = KubeObject


def model(*extra: dict[str, Any] | Object) -> list[Object]:
    objs: list[Object] = [ns("x", tier="front"), ns("y", tier="back"), ns("z", tier="back")]
    for ref, ip in IPS.items():
        number = 80 if ref.name == "a" else 8080
        objs.append(pod(ref.namespace, ref.name, ip, {"app": ref.name},
                        ports=[{"containerPort": number, "name": "web"}]))
    objs += [parse(o) if isinstance(o, dict) else o for o in extra]
    return objs


def judge(objs: list[Object], src: Endpoint, dst: Endpoint, port: PortProtocol) -> Verdict:
    """The reference evaluator's verdict, once the index (built in two orders) has agreed with it."""
    expected = Snapshot.from_objects(objs).verdict(src, dst, port)
    for order in (objs, list(reversed(objs))):
        assert ReachabilityIndex.from_objects(order).verdict(src, dst, port) == expected
    return expected


def table(objs: list[Object], port: PortProtocol, externals: tuple[str, ...] = ()) -> str:
    snapshot = Snapshot.from_objects(objs)
    index = ReachabilityIndex.from_objects(list(reversed(objs)))
    items: list[Endpoint] = [*PODS, *externals]
    rows = [["-", *map(str, items)]]
    for src in items:
        row = [str(src)]
        for dst in items:
            if src == dst or (isinstance(src, str) and isinstance(dst, str)):
                row.append("-")
                continue
            verdict = snapshot.verdict(src, dst, port)
            assert index.verdict(src, dst, port) == verdict, (src, dst)
            row.append("?" if verdict.allowed is None else "." if verdict.allowed else "X")
        rows.append(row)
    return "\n".join(" ".join(cells) for cells in rows)


def expect(text: str) -> str:
    return "\n".join(" ".join(line.split()) for line in text.strip().splitlines())


# -- the Admin tier ------------------------------------------------------------------------------------------------


def test_admin_deny_overrides_a_network_policy_that_allows() -> None:
    objs = model(
        policy("y", "allow-all", {"ingress": [{}]}),
        anp_dict("block-front", 10, BACK, ingress=[{"action": "Deny", "from": [FRONT]}]),
    )
    assert table(objs, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   .   X   X   X   X
        x/b .   -   X   X   X   X
        y/a .   .   -   .   .   .
        y/b .   .   .   -   .   .
        z/a .   .   .   .   -   .
        z/b .   .   .   .   .   -
    """)
    v = judge(objs, PodRef("x", "a"), PodRef("y", "a"), TCP80)
    assert v.deciding_policies() == (("AdminNetworkPolicy", "block-front"),)
    assert v.ingress is not None and v.ingress.tier == "Admin" and v.ingress.isolated


def test_admin_allow_overrides_a_network_policy_that_denies() -> None:
    objs = model(
        policy("x", "deny-all", {"podSelector": {}}),
        anp_dict("open-80", 5, ns_named("x"), ingress=[
            {"action": "Allow", "from": [BACK], "ports": [{"portNumber": {"port": 80}}]},
        ]),
    )  # fmt: skip
    assert table(objs, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   X   .   .   .   .
        x/b X   -   .   .   .   .
        y/a .   .   -   .   .   .
        y/b .   .   .   -   .   .
        z/a .   .   .   .   -   .
        z/b .   .   .   .   .   -
    """)
    assert table(objs, TCP81) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   X   .   .   .   .
        x/b X   -   .   .   .   .
        y/a X   X   -   .   .   .
        y/b X   X   .   -   .   .
        z/a X   X   .   .   -   .
        z/b X   X   .   .   .   -
    """)


def test_pass_hands_over_to_network_policies_then_to_the_baseline() -> None:
    objs = model(
        anp_dict("delegate-a", 1, EVERYWHERE, ingress=[{"action": "Pass", "from": [app("a")]}]),
        anp_dict("deny-rest", 2, EVERYWHERE, ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
        policy("y", "from-front", {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "front"}}}]}]}),
        banp_dict(ns_named("z"), ingress=[{"action": "Deny", "from": [FRONT]}]),
    )
    # Sources app=a pass: into y the NetworkPolicy decides (front only), x is isolated by nothing and the baseline
    # does not select it (allowed), into z the baseline denies front. Sources app=b are denied by deny-rest.
    assert table(objs, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   .   .   .   X   X
        x/b X   -   X   X   X   X
        y/a .   .   -   X   .   .
        y/b X   X   X   -   X   X
        z/a .   .   X   X   -   .
        z/b X   X   X   X   X   -
    """)
    v = judge(objs, PodRef("x", "a"), PodRef("y", "b"), TCP80)
    assert v.ingress is not None and v.ingress.tier == "NetworkPolicy"
    assert v.ingress.admin is not None and v.ingress.admin.policy == "delegate-a"
    assert v.deciding_policies() == (("y", "from-front"),)
    v = judge(objs, PodRef("x", "a"), PodRef("z", "a"), TCP80)
    assert v.deciding_policies() == (("BaselineAdminNetworkPolicy", "default"),)


def test_lower_priority_number_wins_and_rules_apply_in_order() -> None:
    deny_first = model(
        anp_dict("allow", 20, ns_named("y"), ingress=[{"action": "Allow", "from": [EVERYWHERE]}]),
        anp_dict("deny", 10, ns_named("y"), ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
    )
    allow_first = model(
        anp_dict("allow", 5, ns_named("y"), ingress=[{"action": "Allow", "from": [EVERYWHERE]}]),
        anp_dict("deny", 10, ns_named("y"), ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
    )
    assert judge(deny_first, PodRef("x", "a"), PodRef("y", "a"), TCP80).allowed is False
    assert judge(allow_first, PodRef("x", "a"), PodRef("y", "a"), TCP80).allowed is True
    accept = {"action": "Accept", "from": [FRONT]}
    deny = {"action": "Deny", "from": [EVERYWHERE]}
    in_order = model(cnp_dict("ordered", "Admin", 7, ns_named("y"), ingress=[accept, deny]))
    assert table(in_order, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   .   .   .   .   .
        x/b .   -   .   .   .   .
        y/a .   .   -   X   .   .
        y/b .   .   X   -   .   .
        z/a .   .   X   X   -   .
        z/b .   .   X   X   .   -
    """)
    swapped = model(cnp_dict("ordered", "Admin", 7, ns_named("y"), ingress=[deny, accept]))
    assert judge(swapped, PodRef("x", "a"), PodRef("y", "a"), TCP80).allowed is False


def test_equal_priorities_that_disagree_are_undecidable() -> None:
    """Equal priorities: "the implementation can apply any of the matching policies" (AdminNetworkPolicySpec)."""
    objs = model(
        anp_dict("allow", 10, ns_named("y"), ingress=[{"action": "Allow", "from": [FRONT]}]),
        cnp_dict("deny", "Admin", 10, ns_named("y"), ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
    )
    assert table(objs, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   .   ?   ?   .   .
        x/b .   -   ?   ?   .   .
        y/a .   .   -   X   .   .
        y/b .   .   X   -   .   .
        z/a .   .   X   X   -   .
        z/b .   .   X   X   .   -
    """)
    v = judge(objs, PodRef("x", "a"), PodRef("y", "a"), TCP80)
    assert v.allowed is None and "same priority 10" in v.reason
    agreeing = model(
        anp_dict("deny-front", 10, ns_named("y"), ingress=[{"action": "Deny", "from": [FRONT]}]),
        cnp_dict("deny", "Admin", 10, ns_named("y"), ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
    )
    assert judge(agreeing, PodRef("x", "a"), PodRef("y", "a"), TCP80).allowed is False


# -- egress, networks, ports ---------------------------------------------------------------------------------------


def test_egress_networks_and_port_ranges_match_pod_addresses_too() -> None:
    objs = model(
        policy("x", "deny-egress", {"policyTypes": ["Egress"]}),
        cnp_dict("egress-guard", "Admin", 3, app("a"), egress=[
            {"action": "Deny", "to": [{"networks": ["10.0.2.0/24"]}],
             "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 90}}}}]},
            {"action": "Accept", "to": [{"networks": ["0.0.0.0/0"]}]},
        ]),
    )  # fmt: skip
    assert table(objs, TCP80, ("192.0.2.1",)) == expect("""
        -         x/a x/b y/a y/b z/a z/b 192.0.2.1
        x/a       -   .   X   X   .   .   .
        x/b       X   -   X   X   X   X   X
        y/a       .   .   -   X   .   .   .
        y/b       .   .   .   -   .   .   .
        z/a       .   .   X   X   -   .   .
        z/b       .   .   .   .   .   -   .
        192.0.2.1 .   .   .   .   .   .   -
    """)
    for port in (TCP8080, UDP53):  # outside the range: the Accept rule overrides x's NetworkPolicy
        assert judge(objs, PodRef("x", "a"), PodRef("y", "b"), port).allowed is True
        assert judge(objs, PodRef("x", "b"), PodRef("y", "b"), port).allowed is False


def test_named_ports_resolve_on_the_destination() -> None:
    objs = model(anp_dict("no-web", 1, EVERYWHERE, ingress=[
        {"action": "Deny", "from": [EVERYWHERE], "ports": [{"namedPort": "web"}]},
    ]))  # fmt: skip
    # web is 80/TCP on the a pods, 8080/TCP on the b pods; an address outside the cluster is no namespaces peer.
    assert table(objs, TCP80, ("192.0.2.1",)) == expect("""
        -         x/a x/b y/a y/b z/a z/b 192.0.2.1
        x/a       -   .   X   .   X   .   .
        x/b       X   -   X   .   X   .   .
        y/a       X   .   -   .   X   .   .
        y/b       X   .   X   -   X   .   .
        z/a       X   .   X   .   -   .   .
        z/b       X   .   X   .   X   -   .
        192.0.2.1 .   .   .   .   .   .   -
    """)
    assert judge(objs, PodRef("x", "a"), PodRef("y", "b"), TCP8080).allowed is False
    assert judge(objs, PodRef("x", "b"), PodRef("y", "a"), TCP8080).allowed is True


def test_egress_accept_leaves_the_destination_ingress_to_judge() -> None:
    """``ClusterNetworkPolicyEgressRule.Action`` Accept: "any ingress rules at the destination do apply"."""
    objs = model(
        policy("y", "deny-ingress", {}),
        cnp_dict("egress-ok", "Admin", 1, ns_named("x"), egress=[{"action": "Accept", "to": [EVERYWHERE]}]),
    )
    assert judge(objs, PodRef("x", "a"), PodRef("y", "a"), TCP80).allowed is False
    assert judge(objs, PodRef("x", "a"), PodRef("z", "a"), TCP80).allowed is True


def test_cluster_policies_imply_no_isolation() -> None:
    objs = model(anp_dict("one-peer", 1, EVERYWHERE, egress=[{"action": "Deny", "to": [ns_named("z")]}]))
    assert table(objs, TCP80, ("192.0.2.1",)) == expect("""
        -         x/a x/b y/a y/b z/a z/b 192.0.2.1
        x/a       -   .   .   .   X   X   .
        x/b       .   -   .   .   X   X   .
        y/a       .   .   -   .   X   X   .
        y/b       .   .   .   -   X   X   .
        z/a       .   .   .   .   -   X   .
        z/b       .   .   .   .   X   -   .
        192.0.2.1 .   .   .   .   .   .   -
    """)
    v = judge(objs, PodRef("x", "a"), PodRef("z", "a"), TCP80)
    assert v.egress is not None and not v.egress.isolated and v.egress.tier == "Admin"
    index = ReachabilityIndex.from_objects(objs)
    assert all(index.isolation(ref) == (False, False) for ref in PODS)


# -- the Baseline tier ---------------------------------------------------------------------------------------------


def test_baseline_applies_only_where_no_network_policy_isolates() -> None:
    objs = model(
        banp_dict(EVERYWHERE, ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
        policy("y", "from-front", {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "front"}}}]}]}),
    )
    assert table(objs, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   X   .   .   X   X
        x/b X   -   .   .   X   X
        y/a X   X   -   X   X   X
        y/b X   X   X   -   X   X
        z/a X   X   X   X   -   X
        z/b X   X   X   X   X   -
    """)


def test_baseline_cluster_network_policies_before_the_baseline_admin_network_policy_and_pass_to_default() -> None:
    objs = model(
        cnp_dict("front-ok", "Baseline", 0, EVERYWHERE, ingress=[{"action": "Accept", "from": [FRONT]}]),
        cnp_dict("z-passes", "Baseline", 1, EVERYWHERE, ingress=[{"action": "Pass", "from": [ns_named("z")]}]),
        banp_dict(EVERYWHERE, ingress=[{"action": "Deny", "from": [EVERYWHERE]}]),
    )
    assert table(objs, TCP80) == expect("""
        -   x/a x/b y/a y/b z/a z/b
        x/a -   .   .   .   .   .
        x/b .   -   .   .   .   .
        y/a X   X   -   X   X   X
        y/b X   X   X   -   X   X
        z/a .   .   .   .   -   .
        z/b .   .   .   .   .   -
    """)
    v = judge(objs, PodRef("z", "a"), PodRef("x", "a"), TCP80)
    assert v.ingress is not None and v.ingress.tier == "default" and v.deciding_policies() == ()


# -- out of model --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        # domainNames: DNS answers may name pods too (npep-133): out of model everywhere.
        ({"domainNames": ["*.example.com"]}, """
            -         x/a x/b y/a y/b z/a z/b 192.0.2.1
            x/a       -   ?   ?   ?   ?   ?   ?
            x/b       ?   -   ?   ?   ?   ?   ?
            y/a       .   .   -   .   .   .   .
            y/b       .   .   .   -   .   .   .
            z/a       .   .   .   .   -   .   .
            z/b       .   .   .   .   .   -   .
            192.0.2.1 .   .   .   .   .   .   -
        """),
        # nodes: node addresses are never a pod's, but may be any address outside the cluster.
        ({"nodes": {}}, """
            -         x/a x/b y/a y/b z/a z/b 192.0.2.1
            x/a       -   X   X   X   X   X   ?
            x/b       X   -   X   X   X   X   ?
            y/a       .   .   -   .   .   .   .
            y/b       .   .   .   -   .   .   .
            z/a       .   .   .   .   -   .   .
            z/b       .   .   .   .   .   -   .
            192.0.2.1 .   .   .   .   .   .   -
        """),
    ],
)  # fmt: skip
def test_nodes_and_domain_names_peers_are_out_of_model(peer: dict[str, Any], expected: str) -> None:
    objs = model(cnp_dict("allow-list", "Admin", 1, ns_named("x"), egress=[
        {"action": "Accept", "to": [peer]},
        {"action": "Deny", "to": [{"networks": ["0.0.0.0/0"]}]},
    ]))  # fmt: skip
    assert table(objs, TCP80, ("192.0.2.1",)) == expect(expected)
    v = judge(objs, PodRef("x", "a"), "192.0.2.1", TCP80)
    assert v.allowed is None and v.reason.startswith("out of model: ClusterNetworkPolicy allow-list egress[0]")
    # A Deny on the other side still decides: out of model only where the unknown rule could change the answer.
    denied = [*objs, parse(cnp_dict("no-x", "Admin", 0, ns_named("y"), ingress=[
        {"action": "Deny", "from": [ns_named("x")]}]))]  # fmt: skip
    assert judge(denied, PodRef("x", "a"), PodRef("y", "a"), TCP80).allowed is False


def test_cluster_policies_are_keyed_by_kind_and_name() -> None:
    objs = model(anp_dict("same", 1, EVERYWHERE), cnp_dict("same", "Admin", 1, EVERYWHERE))
    snapshot = Snapshot.from_objects(objs)
    assert sorted(snapshot.cluster_policies) == [("AdminNetworkPolicy", "same"), ("ClusterNetworkPolicy", "same")]
    assert all(isinstance(o, ClusterPolicy) for o in objs[-2:])


# -- explanations: the deciding tier, policy, rule and action --------------------------------------------------------


def test_explain_names_the_deciding_tier_policy_rule_and_action() -> None:
    objs = model(
        anp_dict("delegate-a", 1, EVERYWHERE, ingress=[{"name": "a-to-owners", "action": "Pass", "from": [app("a")]}]),
        anp_dict("block-b", 10, EVERYWHERE, ingress=[
            {"action": "Allow", "from": [ns_named("q")]},
            {"name": "no-b", "action": "Deny", "from": [app("b")]},
        ]),
        policy("y", "allow-web", {"ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"tier": "front"}}}]}]}),
        banp_dict(ns_named("z"), ingress=[{"action": "Deny", "from": [FRONT]}]),
    )  # fmt: skip
    x_a, x_b, y_a, z_a = PodRef("x", "a"), PodRef("x", "b"), PodRef("y", "a"), PodRef("z", "a")
    assert judge(objs, x_b, y_a, TCP80).explain().splitlines() == [
        "x/b -> y/a on 80/TCP: DENIED.",
        "Egress: x/b is not isolated for egress (no NetworkPolicy selecting it lists Egress in policyTypes), so it "
        "is allowed.",
        'Ingress: Admin Deny `block-b` priority 10 (AdminNetworkPolicy), ingress[1] "no-b" (from[0], any port): '
        "denied; no NetworkPolicy or Baseline rule is consulted.",
    ]
    assert judge(objs, x_a, y_a, TCP80).explain().splitlines()[2] == (
        'Ingress: Admin Pass `delegate-a` priority 1 (AdminNetworkPolicy), ingress[0] "a-to-owners" (from[0], any '
        "port) -> NetworkPolicy: y/a is isolated for ingress by y/allow-web; allowed by y/allow-web ingress[0] "
        "(from[0], any port)."
    )
    assert judge(objs, x_a, z_a, TCP80).explain().splitlines()[2] == (
        'Ingress: Admin Pass `delegate-a` priority 1 (AdminNetworkPolicy), ingress[0] "a-to-owners" (from[0], any '
        "port) -> z/a is not isolated for ingress (no NetworkPolicy selecting it lists Ingress in policyTypes); "
        "Baseline Deny `default` (BaselineAdminNetworkPolicy), ingress[0] (from[0], any port): denied."
    )
    assert judge(objs, z_a, x_a, TCP80).explain().splitlines()[2] == (
        'Ingress: Admin Pass `delegate-a` priority 1 (AdminNetworkPolicy), ingress[0] "a-to-owners" (from[0], any '
        "port) -> x/a is not isolated for ingress (no NetworkPolicy selecting it lists Ingress in policyTypes) and "
        "no Baseline rule matches, so it is allowed."
    )
    verdict = judge(objs, x_a, z_a, TCP80).to_dict()
    assert verdict["decidingPolicies"] == ["BaselineAdminNetworkPolicy/default"]
    assert verdict["ingress"]["tier"] == "Baseline" and verdict["ingress"]["admin"]["action"] == "Pass"
    assert verdict["ingress"]["baseline"] == {
        "kind": "BaselineAdminNetworkPolicy", "policy": "default", "tier": "Baseline", "priority": None,
        "direction": "Ingress", "rule": 0, "ruleName": None, "action": "Deny", "peer": 0, "port": None,
    }  # fmt: skip


def test_explain_accept_and_out_of_model() -> None:
    objs = model(cnp_dict("guard", "Admin", 3, ns_named("x"), egress=[
        {"name": "web", "action": "Accept", "to": [app("a")], "protocols": [{"destinationNamedPort": "web"}]},
        {"action": "Accept", "to": [{"domainNames": ["a.example.com"]}]},
    ]))  # fmt: skip
    assert judge(objs, PodRef("x", "a"), PodRef("y", "a"), TCP80).explain().splitlines()[1] == (
        'Egress: Admin Accept `guard` priority 3 (ClusterNetworkPolicy), egress[0] "web" (to[0], ports[0]), port "web" '
        "resolved to 80 on y/a: allowed, whatever NetworkPolicies or Baseline rules say."
    )
    unknown = judge(objs, PodRef("x", "a"), "192.0.2.1", TCP80)
    assert unknown.allowed is None and unknown.out_of_model
    assert unknown.explain().splitlines()[:2] == [
        "x/a -> 192.0.2.1 on 80/TCP: UNKNOWN (out of model: the manifests cannot tell).",
        "Egress: out of model: ClusterNetworkPolicy guard egress[1] (Accept) has a domainNames peer, which matches "
        "the addresses DNS answers for those names: not known from the manifests.",
    ]
    assert unknown.to_dict()["reason"] == unknown.reason and unknown.to_dict()["egress"]["tier"] == "unknown"
