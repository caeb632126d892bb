"""Readiness probes on the node agent: exec probes in the pod's network namespace (as the container's user),
tcpSocket probes from the node; containerStatuses[].ready, ContainersReady and Ready follow, with kubelet's timing
and thresholds. What the prober relies on: a container is not ready until its own check has passed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client, watch
from netprobe import apply, make_namespace, running_with_ip, wait_pod

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def ns(cluster: Any) -> str:
    return make_namespace(cluster, "lc-probes")


def container(name: str, probe: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "image": "nicolaka/netshoot", **extra}
    if probe is not None:
        c["readinessProbe"] = {"periodSeconds": 1, **probe}
    return c


def exec_probe(script: str, **timing: Any) -> dict[str, Any]:
    return {"exec": {"command": ["sh", "-c", script]}, **timing}


def pod(name: str, ns: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": list(containers), **spec}}


def ready_flags(p: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["ready"] for c in p.get("status", {}).get("containerStatuses") or []}


def cond(p: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in p["status"]["conditions"] if c["type"] == ctype)


def watch_ready(cluster: Any, ns: str, name: str, container_name: str, flips: int, timeout: float
                ) -> tuple[float, list[tuple[float, bool]]]:
    """Watch the pod from creation time: (seconds from its container's start to the watch's start, [(seconds since
    the container started, ready)] each time `ready` changes), until `flips` changes were seen or the timeout."""
    api = cluster.api_client()
    w = watch.Watch()
    changes: list[tuple[float, bool]] = []
    t0 = time.monotonic()
    started_at: float | None = None
    last: bool | None = None
    for event in w.stream(client.CoreV1Api(api).list_namespaced_pod, ns, field_selector=f"metadata.name={name}",
                          timeout_seconds=int(timeout)):
        p = api.sanitize_for_serialization(event["object"])
        cs = next((c for c in p.get("status", {}).get("containerStatuses") or [] if c["name"] == container_name),
                  None)
        if cs is None or "running" not in cs["state"]:
            continue
        if started_at is None:
            started_at = time.monotonic()
        if cs["ready"] != last:
            last = cs["ready"]
            changes.append((time.monotonic() - started_at, cs["ready"]))
            if len(changes) >= flips:
                w.stop()
                break
    return (started_at or t0) - t0, changes


def test_exec_probe_proves_a_responder_listener_from_inside_the_pod(cluster: Any, ns: str) -> None:
    apply(cluster, pod("resp", ns,
                       container("listens", exec_probe("nc -z -w 1 127.0.0.1 80"), ports=[{"containerPort": 80}]),
                       container("nothing-on-81", exec_probe("nc -z -w 1 127.0.0.1 81"),
                                 ports=[{"containerPort": 82}]),
                       container("no-probe")))
    p = wait_pod(cluster, ns, "resp", lambda p: ready_flags(p).get("listens") is True, timeout=30)
    time.sleep(3)  # three more probe periods: the failing one stays failing
    p = wait_pod(cluster, ns, "resp", running_with_ip)
    assert ready_flags(p) == {"listens": True, "nothing-on-81": False, "no-probe": True}
    assert all("running" in c["state"] for c in p["status"]["containerStatuses"])  # running, yet not ready
    for ctype in ("ContainersReady", "Ready"):
        c = cond(p, ctype)
        assert (c["status"], c["reason"], c["message"]) == (
            "False", "ContainersNotReady", "containers with unready status: [nothing-on-81]")


def test_ready_flips_with_the_listener_and_thresholds(cluster: Any, ns: str) -> None:
    """A command container listens from ~2 s to ~6 s after start: ready after the first passing probe, not ready
    after failureThreshold (3) failing probes once it stopped."""
    script = "sleep 2; timeout 4 socat TCP-LISTEN:8080,fork,reuseaddr SYSTEM:true; sleep 3600"
    apply(cluster, pod("flip", ns, container("app", exec_probe("nc -z -w 1 127.0.0.1 8080", failureThreshold=3),
                                             command=["sh", "-c", script])))
    _, changes = watch_ready(cluster, ns, "flip", "app", flips=3, timeout=40)
    print("ready changes (s after start):", changes)
    assert [r for _, r in changes] == [False, True, False]
    up, down = changes[1][0], changes[2][0]
    assert 1.5 <= up <= 5, changes
    assert 7 <= down <= 13, changes  # stops listening at ~6 s, then 3 failures 1 s apart


def test_initial_delay_and_timeout(cluster: Any, ns: str) -> None:
    apply(cluster, pod("timing", ns,
                       container("delayed", exec_probe("true", initialDelaySeconds=3)),
                       container("slow", exec_probe("sleep 3", timeoutSeconds=1))))
    _, changes = watch_ready(cluster, ns, "timing", "delayed", flips=2, timeout=30)
    print("delayed: ready changes (s after start):", changes)
    assert [r for _, r in changes] == [False, True]
    assert 2.5 <= changes[1][0] <= 6, changes
    time.sleep(2)
    p = wait_pod(cluster, ns, "timing", running_with_ip)
    assert ready_flags(p) == {"delayed": True, "slow": False}  # a probe slower than its timeout fails


def test_exec_probe_runs_as_the_containers_user(cluster: Any, ns: str) -> None:
    is_1234 = exec_probe('[ "$(id -u)" = 1234 ] && [ "$(id -g)" = 1234 ]')
    apply(cluster, pod("user", ns,
                       container("as-1234", is_1234, securityContext={"runAsUser": 1234}),
                       container("as-pod-user", is_1234),
                       container("as-root", is_1234, securityContext={"runAsUser": 0}),
                       securityContext={"runAsUser": 1234}))
    p = wait_pod(cluster, ns, "user", lambda p: ready_flags(p).get("as-1234") is True, timeout=30)
    time.sleep(2)
    p = wait_pod(cluster, ns, "user", running_with_ip)
    assert ready_flags(p) == {"as-1234": True, "as-pod-user": True, "as-root": False}


def test_tcp_socket_probe_from_the_node(cluster: Any, ns: str) -> None:
    ports = [{"containerPort": 80, "name": "http"}]
    apply(cluster, pod("tcp", ns,
                       container("by-number", {"tcpSocket": {"port": 80}}, ports=ports),
                       container("by-name", {"tcpSocket": {"port": "http"}}),
                       container("closed", {"tcpSocket": {"port": 81}})))
    wait_pod(cluster, ns, "tcp", lambda p: ready_flags(p).get("by-number") is True, timeout=30)
    time.sleep(2)
    p = wait_pod(cluster, ns, "tcp", running_with_ip)
    # "by-name" declares no port named http itself: kubelet resolves a named port in the probed container only
    assert ready_flags(p) == {"by-number": True, "by-name": False, "closed": False}


def test_readiness_gate_keeps_pod_not_ready_while_containers_are(cluster: Any, ns: str) -> None:
    apply(cluster, pod("gated", ns, container("srv", exec_probe("nc -z -w 1 127.0.0.1 80"),
                                              ports=[{"containerPort": 80}]),
                       readinessGates=[{"conditionType": "example.com/gate"}]))
    p = wait_pod(cluster, ns, "gated", lambda p: ready_flags(p).get("srv") is True, timeout=30)
    assert cond(p, "ContainersReady")["status"] == "True"
    assert (cond(p, "Ready")["status"], cond(p, "Ready")["reason"]) == ("False", "ReadinessGatesNotReady")
