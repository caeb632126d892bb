"""Why a probe pod could not do its job: the API server's and kubelet's own answers, classified into bounded
reasons, and the per-(group, node) backoff. The messages are those the real API server returns (the hostile-cluster
tests in test_prober_hostile.py get them from kube-apiserver itself)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from netpol_auditor.prober.failures import (
    FIXES,
    INCONCLUSIVE_REASONS,
    Backoff,
    classify_api_error,
    classify_pod,
    retry_after_seconds,
)
from netpol_auditor.prober.placement import node_unavailable, tolerates


def status(code: int, message: str) -> str:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})


@pytest.mark.parametrize(("code", "message", "reason"), [
    (403, 'pods "npa-probe-1-2" is forbidden: exceeded quota: probes, requested: pods=1, used: pods=0, limited: '
          'pods=0', "quota"),
    (403, 'pods "npa-probe-1-2" is forbidden: failed quota: compute: must specify limits.cpu for: probe', "quota"),
    (403, 'pods "npa-probe-1-2" is forbidden: [cpu max limit to request ratio per Container is 2, but provided '
          'ratio is 20.000000]', "limit_range"),
    (403, 'pods "npa-probe-1-2" is forbidden: maximum cpu usage per Container is 10m, but limit is 100m',
     "limit_range"),
    (403, 'pods "npa-probe-1-2" is forbidden: violates PodSecurity "restricted:latest": privileged', "pod_security"),
    (400, 'admission webhook "inject.example.com" denied the request: no probes here', "admission_denied"),
    (422, "pods \"npa-probe-1-2\" is forbidden: ValidatingAdmissionPolicy 'deny-probes' with binding "
          "'deny-probes' denied request: no probes here", "admission_denied"),
    (403, 'pods is forbidden: User "system:serviceaccount:np:np" cannot create resource "pods" in API group "" in '
          'the namespace "kube-system"', "forbidden"),
    (429, "Too many requests, please try again later.", "throttled"),
    (500, 'Internal error occurred: failed calling webhook "sidecar-injector.hostile.localcluster.io": failed to '
          'call webhook: Post "https://127.0.0.1:1/inject?timeout=10s": dial tcp: connection refused',
     "admission_denied"),
    (500, "etcdserver: request timed out", "api_error"),
    (503, "", "api_error"),
])
def test_api_errors_are_classified_by_the_admission_plugin_that_spoke(code: int, message: str, reason: str) -> None:
    got, text = classify_api_error(code, status(code, message))
    assert got == reason
    assert text == message
    assert got in INCONCLUSIVE_REASONS and FIXES[got]


def pod(**status: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "probe"}]}, "status": status}


def test_pods_that_can_never_do_their_job() -> None:
    asked = frozenset({"probe"})
    assert classify_pod(pod(phase="Pending"), asked) is None
    assert classify_pod(pod(phase="Running"), asked) is None
    injected = {"spec": {"containers": [{"name": "probe"}, {"name": "istio-proxy"}],
                         "initContainers": [{"name": "istio-init"}]}, "status": {}}
    assert classify_pod(injected, asked) == ("sidecar_injected",
                                             "containers istio-init, istio-proxy were added at admission")
    refused = pod(phase="Failed", reason="PodOSNotSupported",
                  message="Failed to admit pod as the OS field doesn't match node OS")
    reason, message = classify_pod(refused, asked) or ("", "")
    assert reason == "unschedulable" and "PodOSNotSupported" in message
    assert classify_pod(pod(phase="Failed", reason="NodeAffinity", message="Predicate NodeAffinity failed"),
                        asked) == ("unschedulable", "NodeAffinity: Predicate NodeAffinity failed")
    # a probe that simply ended with an error is not a placement problem
    assert classify_pod(pod(phase="Failed", reason="DeadlineExceeded"), asked) is None
    pulling = pod(phase="Pending", containerStatuses=[
        {"name": "probe", "image": "registry.invalid/x", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                                              "message": "Back-off pulling"}}}])
    assert classify_pod(pulling, asked) == ("image_pull", "ImagePullBackOff: Back-off pulling")
    unschedulable = pod(phase="Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                                      "reason": "Unschedulable", "message": "0/2 nodes"}])
    assert classify_pod(unschedulable, asked) == ("unschedulable", "0/2 nodes")


def test_retry_after() -> None:
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "x"}) is None
    assert retry_after_seconds(None) is None


def test_backoff_doubles_per_item_up_to_the_cap_and_forgets_on_success() -> None:
    b = Backoff(base=10, cap=40)
    assert b.fail(("g", "n1"), 0, "quota") == 10
    assert b.blocked(("g", "n1"), 5) == "quota"
    assert b.blocked(("g", "n1"), 10) is None
    assert b.blocked(("g", "n2"), 5) is None  # one failing placement never slows another
    assert [b.fail(("g", "n1"), 10, "quota") for _ in range(3)] == [20, 40, 40]
    b.succeed(("g", "n1"))
    assert b.blocked(("g", "n1"), 11) is None and b.failures(("g", "n1")) == 0
    b.fail(("g", "n3"), 0, "quota")
    b.forget(keep=set())
    assert b.blocked(("g", "n3"), 1) is None


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, str]] | None = None,
         cordoned: bool = False) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": cordoned}}


LINUX = {"kubernetes.io/os": "linux"}


def test_nodes_probe_pods_may_not_be_placed_on() -> None:
    assert node_unavailable(node("a"), LINUX, ()) is None
    windows = node("w", {"kubernetes.io/os": "windows"})
    assert "kubernetes.io/os=windows" in (node_unavailable(windows, LINUX, ()) or "")
    assert node_unavailable(windows, {}, ()) is None  # no selector: the kubelet itself refuses (PodOSNotSupported)
    tainted = node("t", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    assert "dedicated=gpu:NoSchedule" in (node_unavailable(tainted, LINUX, ()) or "")
    assert node_unavailable(tainted, LINUX, ({"key": "dedicated", "operator": "Equal", "value": "gpu"},)) is None
    evicting = node("e", taints=[{"key": "maintenance", "effect": "NoExecute"}])
    assert node_unavailable(evicting, LINUX, ({"operator": "Exists"},)) is None
    assert "NoExecute" in (node_unavailable(evicting, LINUX, ()) or "")
    prefer = node("p", taints=[{"key": "spot", "effect": "PreferNoSchedule"}])
    assert node_unavailable(prefer, LINUX, ()) is None
    assert "cordoned" in (node_unavailable(node("c", cordoned=True), LINUX, ()) or "")


def test_tolerations_follow_the_api_semantics() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert tolerates([{"key": "k", "operator": "Equal", "value": "v"}], taint)
    assert not tolerates([{"key": "k", "operator": "Equal", "value": "w"}], taint)
    assert tolerates([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)
    assert not tolerates([{"key": "other", "operator": "Exists"}], taint)
