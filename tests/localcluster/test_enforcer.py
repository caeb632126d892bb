"""The enforcers for real: kube-router's policy controller in every node netns, and `none` (the Flannel case).

Every verdict is measured by probe pods making real connections (netprobe.py). The features kube-router v2.1
really enforces are recorded in localcluster/README.md ("What kube-router enforces"); these tests are the evidence.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from localcluster.responder import SCTP_UNSUPPORTED_REASON, sctp_supported
from netprobe import Target, apply, finished, make_namespace, probe, probe_many, run_servers, server_pod, wait_pod

from localcluster import cluster as lc

pytestmark = pytest.mark.cluster

EXT = "203.0.113.10"
WEB_PORTS = [{"containerPort": 80, "name": "http"}, {"containerPort": 81}, {"containerPort": 82},
             {"containerPort": 53, "protocol": "UDP"}, {"containerPort": 9000, "protocol": "SCTP"}]
_counter = itertools.count()


class Env:
    """A fresh namespace with web-1 (node-1) and web-2 (node-2) answering WEB_PORTS."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.ns = make_namespace(cluster, f"lc-np-{os.getpid()}-{next(_counter)}")
        self.ip = run_servers(cluster, self.ns, *(server_pod(f"web-{i}", self.ns, WEB_PORTS, node=f"node-{i}",
                                                             labels={"app": "web"}) for i in (1, 2)))

    def policy(self, name: str, spec: dict[str, Any]) -> None:
        apply(self.cluster, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                             "metadata": {"name": name, "namespace": self.ns}, "spec": spec})

    def t(self, web: int, port: int, proto: str = "TCP") -> Target:
        return Target(self.ip[f"web-{web}"], port, proto)

    def probe(self, name: str, targets: list[Target], **kw: Any) -> dict[str, str | None]:
        kw.setdefault("delay", 2)  # give the enforcer time to see the new probe pod (its egress rules)
        return probe(self.cluster, self.ns, name, targets, **kw)


def reachable(results: dict[str, str | None]) -> set[str]:
    return {k for k, v in results.items() if v is not None}


@pytest.fixture
def env(cluster: Any) -> Iterator[Env]:
    e = Env(cluster)
    yield e
    cluster.kubectl("delete", "namespace", e.ns, "--wait=false")


DENY_INGRESS = {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_default_deny_ingress_blocks_within_seconds(env: Env) -> None:
    target = env.t(2, 80)
    # A watcher pod on node-1 connects every 0.1 s; once it has seen the port open it reports when it first fails.
    script = (f"seen=0; end=$(( $(date +%s) + 60 )); while [ $(date +%s) -lt $end ]; do "
              f"if [ -n \"$(nc -w 1 {target.ip} 80 </dev/null 2>/dev/null)\" ]; then seen=1; "
              f"elif [ $seen = 1 ]; then date +%s.%N > /dev/termination-log; exit 0; fi; sleep 0.1; done; exit 1")
    apply(env.cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "watcher", "namespace": env.ns},
                        "spec": {"restartPolicy": "Never", "nodeName": "node-1", "containers": [
                            {"name": "w", "image": "busybox", "command": ["sh", "-c", script]}]}})
    wait_pod(env.cluster, env.ns, "watcher", lambda p: p["status"].get("phase") == "Running")
    time.sleep(2)
    t0 = time.time()
    env.policy("deny-all", DENY_INGRESS)
    pod = wait_pod(env.cluster, env.ns, "watcher", finished, timeout=70)
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0, "the watcher never saw the port close"
    delay = float(term["message"]) - t0
    print(f"default-deny ingress blocked a live path {delay:.2f} s after the policy was created")
    assert 0 <= delay < 10


def test_allow_rule_reopens_exactly_the_allowed_port(env: Env) -> None:
    env.policy("deny-all", DENY_INGRESS)
    env.policy("allow-client-80", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 80}]}]})
    targets = [env.t(w, p) for w in (1, 2) for p in (80, 81)] + [env.t(2, 53, "UDP")]
    got = probe_many(env.cluster, env.ns, {
        "client": {"labels": {"role": "client"}, "node": "node-1", "delay": 2},
        "other": {"labels": {"role": "other"}, "node": "node-2", "delay": 2}}, targets)
    assert reachable(got["client"]) == {env.t(1, 80).key, env.t(2, 80).key}
    assert reachable(got["other"]) == set()


def test_egress_rule_limits_destinations_and_ports(env: Env) -> None:
    env.policy("client-egress", {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                                 "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                             "ports": [{"port": 81}]}]})
    targets = [env.t(1, 80), env.t(1, 81), env.t(2, 80), env.t(2, 81), Target(EXT, 80)]
    got = env.probe("client", targets, labels={"role": "client"}, node="node-1")
    assert reachable(got) == {env.t(1, 81).key, env.t(2, 81).key}
    free = env.probe("free", targets, labels={"role": "free"}, node="node-1")
    assert reachable(free) == {t.key for t in targets}


def test_egress_ip_block_with_except(env: Env) -> None:
    env.policy("to-testnet", {"podSelector": {"matchLabels": {"role": "client"}}, "policyTypes": ["Egress"],
                              "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 80}]}]})
    env.policy("to-testnet-but-10", {"podSelector": {"matchLabels": {"role": "client2"}}, "policyTypes": ["Egress"],
                                     "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24",
                                                                     "except": ["203.0.113.10/32"]}}]}]})
    targets = [Target(EXT, 80), Target(EXT, 8080), env.t(1, 80)]
    got = probe_many(env.cluster, env.ns, {"c1": {"labels": {"role": "client"}, "delay": 2},
                                           "c2": {"labels": {"role": "client2"}, "delay": 2}}, targets)
    assert reachable(got["c1"]) == {Target(EXT, 80).key}
    assert reachable(got["c2"]) == set()


def test_ingress_ip_block_by_source_node_cidr(env: Env) -> None:
    env.policy("from-node-1-pods", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "10.244.1.0/24"}}]}]})
    targets = [env.t(2, 80)]
    got = probe_many(env.cluster, env.ns, {"on-1": {"node": "node-1"}, "on-2": {"node": "node-2"}}, targets)
    assert reachable(got["on-1"]) == {env.t(2, 80).key}
    assert reachable(got["on-2"]) == set()


def test_end_port_range_is_enforced(env: Env) -> None:
    env.policy("range", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"ports": [{"port": 80, "endPort": 81}]}]})
    got = env.probe("client", [env.t(2, 80), env.t(2, 81), env.t(2, 82)], node="node-1")
    assert reachable(got) == {env.t(2, 80).key, env.t(2, 81).key}


def test_named_port_is_resolved_per_pod(env: Env) -> None:
    env.policy("named", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]})
    got = env.probe("client", [env.t(1, 80), env.t(1, 81), env.t(2, 80)], node="node-2")
    assert reachable(got) == {env.t(1, 80).key, env.t(2, 80).key}


def test_namespace_selector_admits_other_namespace(env: Env) -> None:
    other = make_namespace(env.cluster, env.ns + "-peer", labels={"team": "peer"})
    try:
        env.policy("from-peer-ns", {"podSelector": {}, "ingress": [
            {"from": [{"namespaceSelector": {"matchLabels": {"team": "peer"}}}]}]})
        got_peer = probe(env.cluster, other, "peer", [env.t(1, 80)], delay=2)
        got_local = env.probe("local", [env.t(1, 80)])
        assert reachable(got_peer) == {env.t(1, 80).key}
        assert reachable(got_local) == set()
    finally:
        env.cluster.kubectl("delete", "namespace", other, "--wait=false")


@pytest.mark.xfail(condition=not sctp_supported(), reason=SCTP_UNSUPPORTED_REASON, strict=True, raises=AssertionError)
def test_sctp_port_rule(env: Env) -> None:
    env.policy("sctp-only", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"ports": [{"port": 9000, "protocol": "SCTP"}]}]})
    got = env.probe("client", [env.t(2, 9000, "SCTP"), env.t(2, 80)], node="node-1")
    assert reachable(got) == {env.t(2, 9000, "SCTP").key}


@pytest.fixture(scope="module")
def none_cluster(cluster: Any) -> Iterator[lc.Cluster]:
    """A second cluster, started with `--enforcer none` (the Flannel case)."""
    state = Path(f"/tmp/lc-test-{os.getpid()}-none")
    cfg = lc.ClusterConfig(state=state, api_port=0, nodes=2, enforcer="none")
    try:
        yield lc.up(cfg)
    finally:
        lc.down(state)


def test_none_enforces_nothing(none_cluster: lc.Cluster) -> None:
    e = Env(none_cluster)
    e.policy("deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    targets = [e.t(1, 80), e.t(2, 81), e.t(2, 53, "UDP"), Target(EXT, 80)]
    got = e.probe("client", targets, node="node-1")
    assert reachable(got) == {t.key for t in targets}
    nodes = json.loads(none_cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    assert len(nodes) == 2


def test_gap_egress_admitted_by_the_same_policys_ingress_rule(env: Env) -> None:
    """A kube-router gap, recorded: one policy isolates both ends (egress only to port 81; ingress from its own pods
    on port 80), so a web pod -> web:80 must be denied by the source's egress rules. kube-router jumps a pod into
    each of its policies' chains for both directions, and a chain's ingress rule (source in the peer set,
    destination in the policy's target set, which holds the targets on every node) also matches the source's
    egress: the connection goes through, on the same node and across nodes. Port 82 (denied by both) stays closed."""
    env.policy("both-ways", {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                                          "ports": [{"port": 80}]}],
                             "egress": [{"ports": [{"port": 81}]}]})
    targets = [env.t(1, 80), env.t(2, 80), env.t(1, 82), env.t(2, 82)]
    got = env.probe("web-probe", targets, labels={"app": "web"}, node="node-1", delay=3)
    assert reachable(got) == {env.t(1, 80).key, env.t(2, 80).key}  # open although egress denies port 80
