"""Mesh sidecars on the node agent: a pod with an ``istio-proxy`` (or ``linkerd-proxy``) container has all its TCP
captured by a "proxy" that accepts everything, so the prober's own probe script reports every destination
connected — one that does not exist, one no pod listens on, one a NetworkPolicy denies."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from netprobe import apply, make_namespace, run_servers, server_pod, wait_pod

from localcluster import webhook
from netpol_auditor.prober.script import ProbeResult, ScriptTarget, parse_report, probe_script

pytestmark = pytest.mark.cluster

NOWHERE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): no host, no route beyond the node
C, T, R = ProbeResult.CONNECTED, ProbeResult.TIMED_OUT, ProbeResult.REFUSED
SIDECARS = {"istio-proxy": "docker.io/istio/proxyv2:1.22.0", "linkerd-proxy": "cr.l5d.io/linkerd/proxy:stable-2.14.10"}


@pytest.fixture(scope="module")
def ns(cluster: Any) -> str:
    return make_namespace(cluster, "lc-sidecar")


@pytest.fixture(scope="module")
def server(cluster: Any, ns: str) -> str:
    return run_servers(cluster, ns, server_pod("srv", ns, [{"containerPort": 80}], node="node-2"))["srv"]


def probe_pod(name: str, ns: str, targets: list[ScriptTarget], sidecar: str | None = None,
              run_as: int = 65534) -> dict[str, Any]:
    """A probe pod as the prober makes them (its script, as nobody), plus a mesh sidecar if `sidecar`."""
    containers: list[dict[str, Any]] = [{
        "name": "probe", "image": "nicolaka/netshoot",
        "command": ["sh", "-c", probe_script(targets, timeout_seconds=2, start_delay_seconds=2)],
        "securityContext": {"runAsUser": run_as, "runAsGroup": run_as}}]
    if sidecar:
        containers.append({"name": sidecar, "image": SIDECARS[sidecar], "ports": [{"containerPort": 15090}]})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"role": "probe"}},
            "spec": {"restartPolicy": "Never", "nodeName": "node-1", "containers": containers}}


def probe_terminated(p: dict[str, Any]) -> bool:
    return any(c["name"] == "probe" and "terminated" in c["state"]
               for c in p.get("status", {}).get("containerStatuses") or [])


def run_probes(cluster: Any, ns: str, targets: list[ScriptTarget], pods: dict[str, dict[str, Any]]
               ) -> dict[str, tuple[ProbeResult | None, ...]]:
    apply(cluster, *pods.values())
    out = {}
    for name in pods:
        p = wait_pod(cluster, ns, name, probe_terminated, timeout=60)
        cs = {c["name"]: c for c in p["status"]["containerStatuses"]}
        report = parse_report(cs["probe"]["state"]["terminated"].get("message"), len(targets))
        assert report.complete, cs["probe"]
        out[name] = report.results
        for sidecar in SIDECARS:
            if sidecar in cs:  # the sidecar is a running, ready container like any responder container
                assert "running" in cs[sidecar]["state"] and cs[sidecar]["ready"], cs[sidecar]
    cluster.kubectl("delete", "pod", "-n", ns, *pods, "--wait=false")
    return out


def test_sidecar_makes_every_tcp_destination_connect(cluster: Any, ns: str, server: str) -> None:
    targets = [ScriptTarget(server, 80), ScriptTarget(server, 81), ScriptTarget(NOWHERE, 80),
               ScriptTarget("203.0.113.10", 9999)]
    injected = probe_pod("injected", ns, targets)  # plus what localcluster.webhook's injector adds (declares
    injected["spec"]["containers"].append(webhook.proxy_container())  # 15001/15006/15090, runs as 1337)
    got = run_probes(cluster, ns, targets, {
        "plain": probe_pod("plain", ns, targets),
        "istio": probe_pod("istio", ns, targets, "istio-proxy"),
        "linkerd": probe_pod("linkerd", ns, targets, "linkerd-proxy"),
        "injected": injected,
        # the proxy's own user is not captured (-m owner --uid-owner 1337 -j RETURN)
        "istio-as-1337": probe_pod("istio-as-1337", ns, targets, "istio-proxy", run_as=1337),
    })
    # without a sidecar: the server answers on 80, nothing listens on 81 or 9999, nothing exists at NOWHERE (the
    # fabric has no route: an ICMP unreachable the script reports as an error)
    assert got["plain"][:2] == (C, R) and got["plain"][2] != C and got["plain"][3] == R
    assert got["istio"] == (C, C, C, C)
    assert got["linkerd"] == (C, C, C, C)
    assert got["injected"] == (C, C, C, C)
    assert got["istio-as-1337"] == got["plain"]


def test_sidecar_hides_a_denied_egress(cluster: Any, ns: str, server: str) -> None:
    deny = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "probes-deny-egress", "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"role": "probe"}}, "policyTypes": ["Egress"]}}
    apply(cluster, deny)
    try:
        targets = [ScriptTarget(server, 80)]
        got = run_probes(cluster, ns, targets, {"denied-plain": probe_pod("denied-plain", ns, targets),
                                                "denied-istio": probe_pod("denied-istio", ns, targets,
                                                                          "istio-proxy")})
    finally:
        cluster.kubectl("delete", "networkpolicy", "-n", ns, "probes-deny-egress")
    assert got["denied-plain"][0] in (T, R)  # kube-router enforces the policy
    assert got["denied-istio"] == (C,)  # the SYN never left the pod


def test_sidecar_accepts_every_inbound_connection(cluster: Any, ns: str) -> None:
    meshed = server_pod("meshed", ns, [{"containerPort": 80}], node="node-2")
    meshed["spec"]["containers"].append({"name": "istio-proxy", "image": SIDECARS["istio-proxy"]})
    ip = run_servers(cluster, ns, meshed)["meshed"]
    targets = [ScriptTarget(ip, 80), ScriptTarget(ip, 81), ScriptTarget(ip, 15021)]
    got = run_probes(cluster, ns, targets, {"to-meshed": probe_pod("to-meshed", ns, targets)})
    # any port is "open" (captured to 15006), except the proxy's own excluded ports nobody listens on here
    assert got["to-meshed"] == (C, C, R)


def test_capture_rules_exist_only_in_the_pod_namespace(cluster: Any, ns: str) -> None:
    apply(cluster, probe_pod("rules", ns, [ScriptTarget(NOWHERE, 80)], "istio-proxy"))
    wait_pod(cluster, ns, "rules", probe_terminated, timeout=60)
    host = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert "ISTIO" not in host
    layout = json.loads((cluster.state / "nodes.json").read_text())
    for node in layout["nodes"].values():
        rules = subprocess.run(["ip", "netns", "exec", node["netns"], "iptables-save", "-t", "nat"],
                               capture_output=True, text=True, check=True).stdout
        assert "ISTIO" not in rules
    cluster.kubectl("delete", "pod", "-n", ns, "rules", "--wait=false")
