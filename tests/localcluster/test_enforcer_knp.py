"""kube-network-policies v0.8.0 as the enforcer, for real: NetworkPolicy (v1) and the admin tiers
(AdminNetworkPolicy and BaselineAdminNetworkPolicy, policy.networking.k8s.io/v1alpha1), measured by probe pods
making real connections between pod network namespaces on both nodes (netprobe.py).

The expected verdicts follow the API's own documentation (network-policy-api ``apis/v1alpha1``:
``AdminNetworkPolicyRuleAction``: Allow "will skip all lower-priority ANPs, BANPs and NetworkPolicies", Deny
"will not be allowed at all", Pass "skips all lower-priority ANPs and goes to the NetworkPolicy tier, then BANP"; a
BANP applies only to pods no NetworkPolicy selects for that direction). A denied connection is dropped (the
process's verdict on the queued SYN), so a probe of a denied target waits for its timeout.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netprobe import Target, apply, make_namespace, observe_until, probe_many, run_servers, server_pod

from localcluster import cluster as lc
from localcluster import enforcer_knp

pytestmark = pytest.mark.cluster

PORTS = [{"containerPort": 80}, {"containerPort": 81}]
NPA = "policy.networking.k8s.io/v1alpha1"
EXT = "203.0.113.10"  # the external host (nodes.py)
_counter = itertools.count()


@pytest.fixture(scope="module")
def knp_cluster() -> Iterator[lc.Cluster]:
    """A cluster of its own, started with `--enforcer kube-network-policies` (or the one LOCALCLUSTER_TEST_REUSE
    names, when it runs that enforcer)."""
    reuse = os.environ.get("LOCALCLUSTER_TEST_REUSE")
    if reuse:
        c = lc.Cluster.load(Path(reuse).resolve())
        if c is None or c.enforcer != "kube-network-policies":
            pytest.skip(f"LOCALCLUSTER_TEST_REUSE={reuse} runs no kube-network-policies cluster")
        yield c
        return
    state = Path(f"/tmp/lc-test-{os.getpid()}-knp")
    try:
        yield lc.up(lc.ClusterConfig(state=state, api_port=0, nodes=2, enforcer="kube-network-policies"))
    finally:
        lc.down(state)


class Env:
    """A fresh namespace with web (node-2, selected by the tests' NetworkPolicies) and db (node-1, selected by
    none), both answering tcp/80 and tcp/81."""

    def __init__(self, cluster: lc.Cluster) -> None:
        self.cluster = cluster
        self.ns = make_namespace(cluster, f"lc-knp-{os.getpid()}-{next(_counter)}")
        self.ip = run_servers(cluster, self.ns, server_pod("web", self.ns, PORTS, node="node-2", labels={"app": "web"}),
                              server_pod("db", self.ns, PORTS, node="node-1", labels={"app": "db"}))
        self.cluster_scoped: list[str] = []

    def t(self, pod: str, port: int) -> Target:
        return Target(self.ip[pod], port)

    def apply(self, kind: str, name: str, spec: dict[str, Any]) -> None:
        namespaced = kind == "NetworkPolicy"
        api = "networking.k8s.io/v1" if namespaced else NPA
        meta = {"name": name, "namespace": self.ns} if namespaced else {"name": name}
        if not namespaced:
            self.cluster_scoped.append(f"{kind.lower()}/{name}")
        apply(self.cluster, {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec})

    @property
    def this_namespace(self) -> dict[str, Any]:
        return {"matchLabels": {"kubernetes.io/metadata.name": self.ns}}

    def table(self, clients: dict[str, str], targets: list[Target]) -> dict[tuple[str, str], bool]:
        """{(client app label, target key): connected}: one probe pod per client app, on the given node."""
        probes = {f"{app}-{next(_counter)}": {"labels": {"app": app}, "node": node, "delay": 2}
                  for app, node in clients.items()}
        got = probe_many(self.cluster, self.ns, probes, targets)
        return {(name.rsplit("-", 1)[0], key): answer is not None for name, res in got.items()
                for key, answer in res.items()}

    def expect(self, clients: dict[str, str], targets: list[Target],
               expected: dict[tuple[str, str], bool]) -> None:
        """The table shows as expected within three observations, as upstream e2e re-probes its truth tables
        (netprobe.observe_until). kube-network-policies learns a pod's IP from the API server (NRI is off), and a
        packet from an IP it does not know yet is judged as from no pod: none of the pod's own egress policies
        apply (v0.8.0 ``evaluatePacket``: ``getAdminNetworkPoliciesForPod(nil)`` is empty, so Pass, and no
        NetworkPolicy selects it). Probe pods wait 2 s, but under load its watch can lag; a failed connection is
        retried by the probe script, a wrongly allowed one is not."""
        got = observe_until(lambda: self.table(clients, targets), expected)
        assert got == expected


@pytest.fixture
def env(knp_cluster: lc.Cluster) -> Iterator[Env]:
    e = Env(knp_cluster)
    yield e
    for obj in e.cluster_scoped:
        knp_cluster.kubectl("delete", obj, "--ignore-not-found")
    knp_cluster.kubectl("delete", "namespace", e.ns, "--wait=false")


def tcp(port: int) -> dict[str, Any]:
    return {"portNumber": {"protocol": "TCP", "port": port}}


def pods(app: str) -> list[dict[str, Any]]:
    """An admin peer: pods labelled app=APP in any namespace."""
    return [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": app}}}}]


def test_cluster_serves_the_admin_policy_api(knp_cluster: lc.Cluster) -> None:
    crds = json.loads(knp_cluster.kubectl("get", "crd", "-o", "json"))["items"]
    served = {c["metadata"]["name"]: [v["name"] for v in c["spec"]["versions"] if v["served"]] for c in crds}
    for name in enforcer_knp.CRD_NAMES:
        assert served.get(name) == ["v1alpha1"]
    logs = sorted((knp_cluster.state / "logs").glob("nodes.kube-network-policies-node-*.log"))
    assert [p.name for p in logs] == [f"nodes.kube-network-policies-node-{i}.log" for i in (1, 2)]
    assert all("admin-network-policy" in p.read_text(errors="replace") for p in logs)


def test_network_policy_denies_and_allows(env: Env) -> None:
    """v1: web admits app=client on tcp/80 only; db (no policy) admits everyone."""
    env.apply("NetworkPolicy", "web-from-client", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 80}]}]})
    web80, web81, db81 = env.t("web", 80), env.t("web", 81), env.t("db", 81)
    env.expect({"client": "node-1", "stranger": "node-2"}, [web80, web81, db81],
               {("client", web80.key): True, ("client", web81.key): False, ("client", db81.key): True,
                ("stranger", web80.key): False, ("stranger", web81.key): False, ("stranger", db81.key): True})


def test_admin_deny_beats_a_network_policy_allow_and_admin_allow_beats_its_deny(env: Env) -> None:
    """A NetworkPolicy admits everyone to web on tcp/80 and nobody on tcp/81. The admin tier (priority 10) denies
    app=blocked on tcp/80 and allows app=vip on tcp/81: both override the NetworkPolicy."""
    env.apply("NetworkPolicy", "web-80", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                                          "ingress": [{"ports": [{"port": 80}]}]})
    env.apply("AdminNetworkPolicy", f"{env.ns}-admin", {
        "priority": 10, "subject": {"namespaces": env.this_namespace},
        "ingress": [
            {"name": "deny-blocked", "action": "Deny", "ports": [tcp(80)],
             "from": pods("blocked")},
            {"name": "allow-vip", "action": "Allow", "ports": [tcp(81)],
             "from": pods("vip")}]})
    web80, web81 = env.t("web", 80), env.t("web", 81)
    env.expect({"client": "node-1", "blocked": "node-1", "vip": "node-2"}, [web80, web81],
               {("client", web80.key): True, ("client", web81.key): False,
                ("blocked", web80.key): False, ("blocked", web81.key): False,
                ("vip", web80.key): True, ("vip", web81.key): True})


def test_pass_goes_to_network_policies_then_baseline(env: Env) -> None:
    """Priority 5 passes app=passed; priority 10 denies everyone on tcp/80; the NetworkPolicy admits app=passed to
    web on tcp/80; the BaselineAdminNetworkPolicy denies app=other everywhere in the namespace.

    passed → web:80 (Pass, then the NetworkPolicy allows) connects; passed → web:81 (Pass, the NetworkPolicy
    selects web and does not allow 81) does not; passed → db:80 (Pass skips the priority-10 Deny; no NetworkPolicy
    selects db; the baseline does not match) connects. other → db:81 (no admin rule; no NetworkPolicy; the baseline
    denies) does not; client → db:81 (no rule anywhere) connects, client → db:80 (the Deny) does not."""
    env.apply("NetworkPolicy", "web-from-passed", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "passed"}}}], "ports": [{"port": 80}]}]})
    env.apply("AdminNetworkPolicy", f"{env.ns}-pass", {
        "priority": 5, "subject": {"namespaces": env.this_namespace},
        "ingress": [{"name": "pass-passed", "action": "Pass",
                     "from": pods("passed")}]})
    env.apply("AdminNetworkPolicy", f"{env.ns}-deny-80", {
        "priority": 10, "subject": {"namespaces": env.this_namespace},
        "ingress": [{"name": "deny-80", "action": "Deny", "ports": [tcp(80)], "from": [{"namespaces": {}}]}]})
    env.apply("BaselineAdminNetworkPolicy", "default", {
        "subject": {"namespaces": env.this_namespace},
        "ingress": [{"name": "deny-other", "action": "Deny",
                     "from": pods("other")}]})
    web80, web81, db80, db81 = env.t("web", 80), env.t("web", 81), env.t("db", 80), env.t("db", 81)
    env.expect({"passed": "node-1", "other": "node-2", "client": "node-2"}, [web80, web81, db80, db81],
               {("passed", web80.key): True, ("passed", web81.key): False,
                ("passed", db80.key): True, ("passed", db81.key): True,
                ("other", web80.key): False, ("other", web81.key): False,
                ("other", db80.key): False, ("other", db81.key): False,
                ("client", web80.key): False, ("client", web81.key): False,
                ("client", db80.key): False, ("client", db81.key): True})


def test_admin_egress_deny_to_a_network_beats_a_network_policy_allow(env: Env) -> None:
    """Egress: a NetworkPolicy lets app=client reach anything; the admin tier denies its namespace tcp/80 to the
    external host's /32 (a ``networks`` peer). tcp/443 there and tcp/80 to a pod stay open."""
    env.apply("NetworkPolicy", "client-egress-all", {"podSelector": {"matchLabels": {"app": "client"}},
                                                     "policyTypes": ["Egress"], "egress": [{}]})
    env.apply("AdminNetworkPolicy", f"{env.ns}-egress", {
        "priority": 10, "subject": {"namespaces": env.this_namespace},
        "egress": [{"name": "deny-ext-80", "action": "Deny", "ports": [tcp(80)],
                    "to": [{"networks": [f"{EXT}/32"]}]}]})
    ext80, ext443, db80 = Target(EXT, 80), Target(EXT, 443), env.t("db", 80)
    env.expect({"client": "node-2"}, [ext80, ext443, db80],
               {("client", ext80.key): False, ("client", ext443.key): True, ("client", db80.key): True})


def test_stop_enforcer_and_heal(env: Env) -> None:
    """stop-enforcer on web's node opens what only that node decided; heal closes it again; freeze is refused."""
    env.apply("NetworkPolicy", "deny-web", {"podSelector": {"matchLabels": {"app": "web"}},
                                            "policyTypes": ["Ingress"]})
    web80 = env.t("web", 80)
    env.expect({"client": "node-2"}, [web80], {("client", web80.key): False})
    try:
        assert env.cluster.fault("stop-enforcer", "node-2") == 0
        env.expect({"client": "node-2"}, [web80], {("client", web80.key): True})
        assert env.cluster.fault("freeze-enforcer", "node-1") == 2  # refused, with the reason on stderr
    finally:
        assert env.cluster.fault("heal", "node-2") == 0
    env.expect({"client": "node-2"}, [web80], {("client", web80.key): False})
