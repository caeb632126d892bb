"""A hostile cluster: real quota, LimitRange, ValidatingAdmissionPolicy, taints, API Priority and Fairness and a
mutating webhook (``localcluster.hostile``, ``localcluster.webhook``) produce the API server's real refusals."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from localcluster import cluster as lc
from localcluster import controlplane, hostile, webhook


def _time_wait_port() -> int:
    """A port whose listener is closed while an accepted connection it closed first sits in TIME_WAIT. The listener
    sets SO_REUSEADDR as Go's net.Listen does for kube-apiserver (Linux lets a bind share a port with TIME_WAIT
    sockets only when both sides set it)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port: int = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end (127.0.0.1:port) goes to TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    deadline = time.monotonic() + 5
    while f"127.0.0.1:{port} " not in _time_wait_sockets() and time.monotonic() < deadline:
        time.sleep(0.01)
    return port


def _time_wait_sockets() -> str:
    return subprocess.run(["ss", "-Htn", "state", "time-wait"], capture_output=True, text=True).stdout + " "


def test_port_free_accepts_a_port_held_only_by_time_wait() -> None:
    port = _time_wait_port()
    assert f"127.0.0.1:{port} " in _time_wait_sockets()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old check did: refused for the TIME_WAIT's minute
    assert controlplane.port_free(port)


def test_port_free_refuses_a_listening_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Go listeners (kube-apiserver) do
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not controlplane.port_free(listener.getsockname()[1])


# --- the cluster's real refusals ---------------------------------------------------------------------------------

def pod(name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
        cpu: tuple[str, str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "app", "image": "docker.io/library/busybox:1.36", "command": ["sleep", "60"]}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu[0]}, "limits": {"cpu": cpu[1]}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"containers": [container]}}


def containers(outcome: hostile.Outcome) -> list[str]:
    assert outcome.ok, outcome
    return [c["name"] for c in outcome.body["spec"]["containers"]]


def new_namespace(cluster: lc.Cluster, labels: dict[str, str] | None = None) -> str:
    """A namespace whose default ServiceAccount exists (pods are admitted), deleted by the ``namespaces`` fixture."""
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    deadline = time.monotonic() + 60
    while not cluster.kubectl("get", "serviceaccount", "default", "-n", name, "-o", "name", check=False):
        assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
        time.sleep(0.2)
    return name


@pytest.fixture
def namespaces(cluster: lc.Cluster) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(labels: dict[str, str] | None = None) -> str:
        made.append(new_namespace(cluster, labels))
        return made[-1]

    yield make
    for name in made:
        cluster.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=false")


@pytest.mark.cluster
def test_full_quota_gets_the_real_exceeded_quota_refusal(cluster: lc.Cluster, namespaces: Callable[..., str]) -> None:
    ns = namespaces()
    with hostile.full_quota(cluster, ns, name="full"):
        got = hostile.create(cluster, ns, pod("refused"))
        assert (got.status, got.reason) == (403, "Forbidden")
        assert got.message == ('pods "refused" is forbidden: exceeded quota: full, requested: pods=1, used: pods=0, '
                               'limited: pods=0')
    assert hostile.create(cluster, ns, pod("admitted")).status == 201  # undo returns once pods are admitted again

    with hostile.resource_quota(cluster, ns, {"requests.cpu": "1", "limits.cpu": "2"}, name="cpu"):
        got = hostile.create(cluster, ns, pod("no-requests"))
        assert got.status == 403
        assert got.message == 'pods "no-requests" is forbidden: failed quota: cpu: must specify limits.cpu for: ' \
                              'app; requests.cpu for: app'
        got = hostile.wait_refused(cluster, ns, pod("too-big", cpu=("2", "2")), expect="exceeded quota")
        assert got.status == 403 and "requested: requests.cpu=2, used: requests.cpu=0, limited: requests.cpu=1" \
            in got.message


@pytest.mark.cluster
def test_limit_range_refuses_a_limit_twenty_times_the_request(cluster: lc.Cluster,
                                                              namespaces: Callable[..., str]) -> None:
    ns = namespaces()
    with hostile.limit_range(cluster, ns, max_limit_request_ratio={"cpu": "2"}, max={"cpu": "2"}):
        got = hostile.create(cluster, ns, pod("greedy", cpu=("100m", "2")))
        assert (got.status, got.reason) == (403, "Forbidden")
        assert got.message == 'pods "greedy" is forbidden: cpu max limit to request ratio per Container is 2, ' \
                              'but provided ratio is 20.000000'
        got = hostile.create(cluster, ns, pod("huge", cpu=("3", "4")))
        assert got.message == 'pods "huge" is forbidden: maximum cpu usage per Container is 2, but limit is 4'
        assert hostile.create(cluster, ns, pod("modest", cpu=("500m", "1")), dry_run=True).status == 201
    assert hostile.create(cluster, ns, pod("greedy", cpu=("100m", "2"))).status == 201


@pytest.mark.cluster
def test_validating_admission_policy_denies_labelled_pods_and_one_user(cluster: lc.Cluster,
                                                                      namespaces: Callable[..., str]) -> None:
    ns, other = namespaces(), namespaces()
    with hostile.deny_pods_policy(cluster, ns, label=("tier", "forbidden"), name="no-forbidden-tier"):
        got = hostile.create(cluster, ns, pod("bad", {"tier": "forbidden"}))
        assert (got.status, got.reason) == (422, "Invalid")  # a validation without `reason` answers Invalid
        assert got.message == ('pods "bad" is forbidden: ValidatingAdmissionPolicy \'no-forbidden-tier\' with '
                               "binding 'no-forbidden-tier' denied request: pods labelled tier=forbidden are not "
                               "allowed here")
        assert hostile.create(cluster, ns, pod("good", {"tier": "web"})).status == 201
        assert hostile.create(cluster, other, pod("bad", {"tier": "forbidden"})).status == 201  # other namespace

    user = f"system:serviceaccount:{ns}:intruder"
    with hostile.deny_pods_policy(cluster, ns, user=user, reason="Forbidden", name="no-intruder"):
        got = hostile.create(cluster, ns, pod("by-intruder"), impersonate=(user, "system:masters"))
        assert (got.status, got.reason) == (403, "Forbidden")
        assert got.message.endswith(f"denied request: {user} may not create pods here")
        assert hostile.create(cluster, ns, pod("by-admin")).status == 201


@pytest.mark.cluster
def test_node_taints_and_windows_label_are_applied_and_undone(cluster: lc.Cluster) -> None:
    node = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"][0]["metadata"]["name"]

    def node_state() -> tuple[list[tuple[str, str]], str]:
        obj = json.loads(cluster.kubectl("get", "node", node, "-o", "json"))
        taints = sorted((t["key"], t["effect"]) for t in obj["spec"].get("taints") or [])
        return taints, obj["metadata"]["labels"]["kubernetes.io/os"]

    before = node_state()
    with hostile.applied(hostile.taint_node(cluster, node, "hostile", "yes", "NoSchedule"),
                         hostile.taint_node(cluster, node, "evict", "now", "NoExecute"),
                         hostile.windows_node(cluster, node)):
        taints, os_label = node_state()
        assert {("hostile", "NoSchedule"), ("evict", "NoExecute")} <= set(taints) and os_label == "windows"
    assert node_state() == before


@pytest.mark.cluster
def test_apf_rejects_one_service_account_with_429_and_not_others(cluster: lc.Cluster,
                                                                 namespaces: Callable[..., str]) -> None:
    ns = namespaces()
    rules = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    noisy = hostile.service_account_kubeconfig(cluster, ns, "noisy", rules)
    quiet = hostile.service_account_kubeconfig(cluster, ns, "quiet", rules)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    try:
        whoami = json.loads(cluster.kubectl(f"--kubeconfig={noisy}", "auth", "whoami", "-o", "json"))
        assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:noisy"
        assert hostile.request_burst(noisy, path).statuses == {200: 320}  # no throttling before
        with hostile.throttle_service_account(cluster, ns, "noisy"):
            level = json.loads(cluster.kubectl("get", "prioritylevelconfiguration", f"hostile-{ns}-noisy", "-o",
                                               "json"))["metadata"]["uid"]
            throttled = hostile.request_burst(noisy, path)
            assert throttled.statuses[429] > 0 and throttled.statuses[200] > 0, throttled
            # every 429 says when to come back: 1 s, at times 2 s after repeated bursts
            assert sum(throttled.retry_after.values()) == throttled.statuses[429]
            assert all(v.isdigit() and int(v) >= 1 for v in throttled.retry_after), throttled.retry_after
            assert throttled.throttled_body == "Too many requests, please try again later.\n"
            assert throttled.priority_levels == {level: 320} and not throttled.errors
            for other in (quiet, cluster.kubeconfig):  # another ServiceAccount, and the exempt admin
                burst = hostile.request_burst(other, path)
                assert burst.statuses == {200: 320} and level not in burst.priority_levels, (other, burst)
        assert hostile.request_burst(noisy, path).statuses == {200: 320}
    finally:
        hostile.delete_service_account(cluster, ns, "noisy")
        hostile.delete_service_account(cluster, ns, "quiet")


# --- the sidecar-injecting mutating webhook ----------------------------------------------------------------------

@pytest.mark.cluster
def test_sidecar_injector_injects_in_labelled_namespaces_and_honours_opt_outs(
        cluster: lc.Cluster, namespaces: Callable[..., str]) -> None:
    with webhook.sidecar_injector(cluster, label=("mesh", "on")) as injector:
        meshed, plain = namespaces({"mesh": "on"}), namespaces()
        injected = hostile.create(cluster, meshed, pod("app"))
        assert containers(injected) == ["app", "istio-proxy"]
        proxy = injected.body["spec"]["containers"][1]
        assert proxy["image"] == webhook.ISTIO_PROXY_IMAGE and proxy["securityContext"]["runAsUser"] == 1337
        assert {p["containerPort"] for p in proxy["ports"]} >= {15001, 15006}
        assert "command" not in proxy and webhook.STATUS_ANNOTATION in injected.body["metadata"]["annotations"]

        assert containers(hostile.create(cluster, meshed, pod("by-label", {webhook.OPT_OUT: "false"}))) == ["app"]
        assert containers(hostile.create(cluster, meshed, pod("by-annotation",
                                                               annotations={webhook.OPT_OUT: "false"}))) == ["app"]
        # istio: the label wins over the annotation
        both = pod("label-wins", {webhook.OPT_OUT: "true"}, {webhook.OPT_OUT: "false"})
        assert containers(hostile.create(cluster, meshed, both)) == ["app", "istio-proxy"]
        assert containers(hostile.create(cluster, plain, pod("elsewhere"))) == ["app"]

        assert injector.injected(meshed) == ["app", "label-wins"]
        review = injector.reviewed(meshed, "by-label")
        assert review is not None and (review.injected, review.reason) == (False, "opt-out label")
        assert injector.reviewed(plain, "elsewhere") is None  # the namespaceSelector kept it from the webhook

        injector.stop()  # the server dies while still registered: failurePolicy Fail refuses pods there
        got = hostile.create(cluster, meshed, pod("no-injector"))
        assert (got.status, got.reason) == (500, "InternalError")
        assert got.message.startswith('Internal error occurred: failed calling webhook '
                                      '"sidecar-injector.hostile.localcluster.io": failed to call webhook: Post '
                                      f'"{injector.url}?timeout=10s": dial tcp 127.0.0.1:{injector.port}: connect: '
                                      'connection refused'), got.message
    assert containers(hostile.create(cluster, meshed, pod("after"))) == ["app"]  # unregistered


@pytest.mark.cluster
def test_misconfigured_injector_ignores_opt_outs(cluster: lc.Cluster, namespaces: Callable[..., str]) -> None:
    with webhook.sidecar_injector(cluster, honour_opt_outs=False, name="careless-injector") as injector:
        ns = namespaces({injector.label_key: injector.label_value})
        opted_out = pod("opted-out", {webhook.OPT_OUT: "false"}, {webhook.OPT_OUT: "false"})
        assert containers(hostile.create(cluster, ns, opted_out)) == ["app", "istio-proxy"]
        assert injector.injected(ns) == ["opted-out"]


# --- the API server going away -----------------------------------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.slow
def test_restart_apiserver_with_downtime(cluster: lc.Cluster) -> None:
    before = controlplane.read_pid(cluster.state, "kube-apiserver")
    assert before is not None
    took = hostile.restart_apiserver(cluster, downtime=2.0, grace=2.0)
    after = controlplane.read_pid(cluster.state, "kube-apiserver")
    assert after is not None and after["pid"] != before["pid"] and after["argv"] == before["argv"]
    assert 2.0 <= took < 60, took
    assert cluster.kubectl("get", "--raw", "/readyz") == "ok"
