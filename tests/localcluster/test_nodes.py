"""The node agent against the real API server: Nodes, scheduling, pod sandboxes, kubelet-style status, containers.

Reachability is always measured through probe pods (netprobe.py), never by entering namespaces from the test.
"""

from __future__ import annotations

import ipaddress
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from localcluster.agent_api import ApiClient
from localcluster.responder import SCTP_UNSUPPORTED_REASON, sctp_supported
from netprobe import (
    Target,
    apply,
    make_namespace,
    probe,
    probe_many,
    run_servers,
    server_pod,
    wait_pod,
)

pytestmark = pytest.mark.cluster


def jget(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json"))


def cmd_pod(name: str, ns: str, script: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def finished(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") in ("Succeeded", "Failed")


def cond(pod: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == ctype)


@pytest.fixture(scope="module")
def ns(cluster: Any) -> str:
    return make_namespace(cluster, "lc-nodes")


def test_nodes_registered_ready_with_pod_cidrs_and_leases(cluster: Any) -> None:
    nodes = {n["metadata"]["name"]: n for n in jget(cluster, "nodes")["items"]}
    assert sorted(nodes) == ["node-1", "node-2"]
    for i, name in ((1, "node-1"), (2, "node-2")):
        node = nodes[name]
        assert node["spec"]["podCIDR"] == f"10.244.{i}.0/24"
        assert {"type": "InternalIP", "address": f"10.250.{i}.1"} in node["status"]["addresses"]
        assert cond(node, "Ready")["status"] == "True"
        assert not [t for t in node["spec"].get("taints") or [] if t["effect"] in ("NoSchedule", "NoExecute")]
        lease = jget(cluster, "lease", "-n", "kube-node-lease", name)
        assert lease["spec"]["holderIdentity"] == name


def test_pods_running_with_ips_on_both_nodes(cluster: Any, ns: str) -> None:
    pods = [server_pod(f"rr-{i}", ns, [{"containerPort": 80}]) for i in range(4)]
    ips = run_servers(cluster, ns, *pods)
    by_node: dict[str, list[str]] = {}
    for name, ip in ips.items():
        pod = jget(cluster, "pod", "-n", ns, name)
        node = pod["spec"]["nodeName"]
        by_node.setdefault(node, []).append(name)
        index = node.split("-")[1]
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(f"10.244.{index}.0/24")
        st = pod["status"]
        assert st["podIPs"] == [{"ip": ip}]
        assert st["hostIP"] == f"10.250.{index}.1"
        assert st["startTime"]
        for ctype in ("PodScheduled", "Initialized", "ContainersReady", "Ready"):
            assert cond(pod, ctype)["status"] == "True", ctype
        (cs,) = st["containerStatuses"]
        assert cs["ready"] and cs["started"] and "running" in cs["state"]
    assert sorted(by_node) == ["node-1", "node-2"]  # round robin spreads them
    assert len(set(ips.values())) == 4


@pytest.fixture(scope="module")
def servers(cluster: Any, ns: str) -> dict[str, str]:
    ports = [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}, {"containerPort": 9000,
                                                                              "protocol": "SCTP"}]
    return run_servers(cluster, ns, server_pod("srv-1", ns, ports, node="node-1"),
                       server_pod("srv-2", ns, ports, node="node-2"))


@pytest.mark.parametrize("src_node", ["node-1", "node-2"])
def test_tcp_and_udp_between_pods_same_and_cross_node(cluster: Any, ns: str, servers: dict[str, str],
                                                      src_node: str) -> None:
    targets = [Target(servers[s], p, proto) for s in ("srv-1", "srv-2") for p, proto in ((80, "TCP"), (53, "UDP"))]
    got = probe(cluster, ns, f"probe-from-{src_node}", targets, node=src_node)
    for s in ("srv-1", "srv-2"):
        assert got[f"{servers[s]}:80/tcp"] == f"{ns}/{s} tcp/80"
        assert got[f"{servers[s]}:53/udp"] == f"{ns}/{s} udp/53"


def test_undeclared_port_is_closed(cluster: Any, ns: str, servers: dict[str, str]) -> None:
    got = probe(cluster, ns, "probe-closed", [Target(servers["srv-2"], 81)], node="node-1")
    assert got[f"{servers['srv-2']}:81/tcp"] is None


@pytest.mark.xfail(condition=not sctp_supported(), reason=SCTP_UNSUPPORTED_REASON, strict=True, raises=AssertionError)
def test_sctp_between_pods(cluster: Any, ns: str, servers: dict[str, str]) -> None:
    got = probe(cluster, ns, "probe-sctp", [Target(servers["srv-2"], 9000, "SCTP")], node="node-1")
    assert got[f"{servers['srv-2']}:9000/sctp"] == f"{ns}/srv-2 sctp/9000"


def test_pod_reaches_external_host(cluster: Any, ns: str) -> None:
    got = probe(cluster, ns, "probe-ext", [Target("203.0.113.10", 80), Target("203.0.113.10", 53, "UDP")])
    assert got == {"203.0.113.10:80/tcp": "external tcp/80", "203.0.113.10:53/udp": "external udp/53"}


def test_command_container_exit_code_and_termination_message(cluster: Any, ns: str) -> None:
    apply(cluster,
          cmd_pod("exit-3", ns, "echo 'went wrong' > /dev/termination-log; exit 3"),
          cmd_pod("exit-0", ns, "printf done > /dev/termination-log"),
          cmd_pod("fallback", ns, "echo from-logs; exit 2", container={"terminationMessagePolicy":
                                                                       "FallbackToLogsOnError"}))
    failed = wait_pod(cluster, ns, "exit-3", finished)
    assert failed["status"]["phase"] == "Failed"
    term = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term["message"]) == (3, "Error", "went wrong\n")
    ok = wait_pod(cluster, ns, "exit-0", finished)
    assert ok["status"]["phase"] == "Succeeded"
    term = ok["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"], term["message"]) == (0, "Completed", "done")
    assert cond(ok, "Ready")["status"] == "False" and cond(ok, "Ready")["reason"] == "PodCompleted"
    fb = wait_pod(cluster, ns, "fallback", finished)
    assert fb["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "from-logs"


def test_env_field_refs_expansion_and_run_as_user(cluster: Any, ns: str) -> None:
    env = [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "GREETING", "value": "hi-$(MY_NAME)"}]
    apply(cluster, cmd_pod("whoami", ns, 'echo "$(id -u) $MY_IP $GREETING" > /dev/termination-log',
                           container={"env": env, "securityContext": {"runAsUser": 1234}}))
    pod = wait_pod(cluster, ns, "whoami", finished)
    assert pod["status"]["phase"] == "Succeeded"
    msg = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert msg == f"1234 {pod['status']['podIP']} hi-whoami\n"


def test_restart_policy_always_restarts_a_failing_container(cluster: Any, ns: str) -> None:
    pod = cmd_pod("crasher", ns, "exit 7")
    pod["spec"]["restartPolicy"] = "Always"
    apply(cluster, pod)

    def restarted(p: dict[str, Any]) -> bool:
        cs = (p["status"].get("containerStatuses") or [{}])[0]
        return cs.get("restartCount", 0) >= 1

    got = wait_pod(cluster, ns, "crasher", restarted, timeout=40)  # kubelet's first back-off is 10 s
    cs = got["status"]["containerStatuses"][0]
    assert got["status"]["phase"] == "Running"
    assert cs["lastState"]["terminated"]["exitCode"] == 7


def test_active_deadline_fails_the_pod(cluster: Any, ns: str) -> None:
    apply(cluster, cmd_pod("deadline", ns, "sleep 60", activeDeadlineSeconds=2))
    pod = wait_pod(cluster, ns, "deadline", finished, timeout=20)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["reason"] == "DeadlineExceeded"


def test_readiness_gates_hold_ready_until_condition_true(cluster: Any, ns: str) -> None:
    pod = server_pod("gated", ns, [{"containerPort": 80}])
    pod["spec"]["readinessGates"] = [{"conditionType": "example.com/feature-1"}]
    apply(cluster, pod)
    got = wait_pod(cluster, ns, "gated", lambda p: p["status"].get("phase") == "Running")
    assert cond(got, "ContainersReady")["status"] == "True"
    assert cond(got, "Ready")["status"] == "False"
    assert cond(got, "Ready")["reason"] == "ReadinessGatesNotReady"
    patch = {"status": {"conditions": [{"type": "example.com/feature-1", "status": "True"}]}}
    cluster.kubectl("patch", "pod", "-n", ns, "gated", "--subresource=status", "--type=strategic",
                    "-p", json.dumps(patch))
    wait_pod(cluster, ns, "gated", lambda p: cond(p, "Ready")["status"] == "True", timeout=15)


def test_node_selector_and_unschedulable(cluster: Any, ns: str) -> None:
    pinned = server_pod("pinned", ns, [{"containerPort": 80}])
    pinned["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "node-2"}
    nowhere = server_pod("nowhere", ns, [{"containerPort": 80}])
    nowhere["spec"]["nodeSelector"] = {"disk": "ssd"}
    apply(cluster, pinned, nowhere)
    got = wait_pod(cluster, ns, "pinned", lambda p: p["status"].get("phase") == "Running")
    assert got["spec"]["nodeName"] == "node-2"
    stuck = wait_pod(cluster, ns, "nowhere", lambda p: any(c["type"] == "PodScheduled" for c in
                                                           p["status"].get("conditions") or []))
    assert cond(stuck, "PodScheduled")["reason"] == "Unschedulable"
    assert stuck["status"]["phase"] == "Pending"
    # a pod naming another scheduler is left to it, as kube-scheduler does: never bound, never run
    other = server_pod("other-scheduler", ns, [{"containerPort": 80}])
    other["spec"]["schedulerName"] = "someone-else"
    apply(cluster, other)
    time.sleep(4)  # longer than the scheduler's retry period
    waiting = json.loads(cluster.kubectl("get", "pod", "-n", ns, "other-scheduler", "-o", "json"))
    assert not waiting["spec"].get("nodeName") and waiting["status"].get("phase") == "Pending"
    assert not any(c["type"] == "PodScheduled" for c in waiting["status"].get("conditions") or [])


def test_graceful_deletion_kills_processes_and_frees_the_ip(cluster: Any, ns: str) -> None:
    stubborn = cmd_pod("stubborn", ns, "trap '' TERM; while true; do sleep 0.2; done",
                       terminationGracePeriodSeconds=3, nodeName="node-1")
    stubborn["spec"]["restartPolicy"] = "Always"
    victim = server_pod("victim", ns, [{"containerPort": 80}], node="node-2")
    apply(cluster, stubborn, victim)
    wait_pod(cluster, ns, "stubborn", lambda p: p["status"].get("phase") == "Running")
    ip = wait_pod(cluster, ns, "victim", lambda p: p["status"].get("phase") == "Running")["status"]["podIP"]
    start = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", ns, "stubborn", "victim", "--wait=true", timeout=60)
    took = time.monotonic() - start
    assert 2.5 <= took < 15  # SIGTERM ignored: killed when the 3 s grace period ends, then removed
    assert not cluster.kubectl("get", "pods", "-n", ns, "stubborn", "victim", "--ignore-not-found", "-o", "name")
    got = probe(cluster, ns, "probe-gone", [Target(ip, 80)], node="node-1")
    assert got[f"{ip}:80/tcp"] is None


def test_probe_pods_in_parallel_report_independently(cluster: Any, ns: str, servers: dict[str, str]) -> None:
    results = probe_many(cluster, ns, {"pa": {"node": "node-1"}, "pb": {"node": "node-2"}},
                         [Target(servers["srv-1"], 80)])
    assert results["pa"] == results["pb"] == {f"{servers['srv-1']}:80/tcp": f"{ns}/srv-1 tcp/80"}


@pytest.mark.slow
def test_hundred_pods_running_with_ips(cluster: Any) -> None:
    name = make_namespace(cluster, "lc-scale")
    pods = [server_pod(f"p{i:03d}", name, [{"containerPort": 8080}]) for i in range(100)]
    api = ApiClient(cluster.kubeconfig)
    start = time.monotonic()
    # created concurrently, as controllers do: `kubectl create` alone would spend ~20 s in its client-side rate limit
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: api.create(f"/api/v1/namespaces/{name}/pods", p), pods))
    deadline = start + 120
    ready: list[str] = []
    while time.monotonic() < deadline:
        out = cluster.kubectl("get", "pods", "-n", name, "-o",
                              "jsonpath={range .items[*]}{.status.phase} {.status.podIP}{'\\n'}{end}")
        ready = [line.split()[1] for line in out.splitlines() if line.startswith("Running 10.")]
        if len(ready) == 100:
            break
        time.sleep(0.3)
    took = time.monotonic() - start
    print(f"100 pods Running with IPs in {took:.1f} s (from the first create request)")
    assert len(ready) == 100
    assert len(set(ready)) == 100
    assert took <= 30, f"100 pods took {took:.1f} s (target 30 s)"
    cluster.kubectl("delete", "namespace", name, "--wait=true", timeout=180)  # leave no churn for later tests


def test_host_network_pod_uses_the_node_address(cluster: Any, ns: str) -> None:
    pod = server_pod("hostnet", ns, [{"containerPort": 18080}], node="node-2")
    pod["spec"]["hostNetwork"] = True
    apply(cluster, pod)
    got = wait_pod(cluster, ns, "hostnet", lambda p: p["status"].get("phase") == "Running")
    assert got["status"]["podIP"] == got["status"]["hostIP"] == "10.250.2.1"
    res = probe(cluster, ns, "probe-hostnet", [Target("10.250.2.1", 18080)], node="node-1")
    assert res["10.250.2.1:18080/tcp"] == f"{ns}/hostnet tcp/18080"
    cluster.kubectl("delete", "pod", "-n", ns, "hostnet", "--wait=true")
    nodes = {n["metadata"]["name"]: n for n in jget(cluster, "nodes")["items"]}
    assert cond(nodes["node-2"], "Ready")["status"] == "True"  # the node's namespace survived the pod
