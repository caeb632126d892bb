"""Image pull failures on the node agent: a container whose registry can never resolve (``*.invalid``, RFC 2606)
never starts; it reports ErrImagePull, then ImagePullBackOff, and is pulled again on kubelet's back-off schedule."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch
from netprobe import Target, apply, make_namespace, probe, running_with_ip, wait_pod

pytestmark = pytest.mark.cluster

IMAGE = "registry.invalid/netshoot:v1"
PULL_ERROR = ('rpc error: code = Unknown desc = failed to pull and unpack image "registry.invalid/netshoot:v1": '
              'failed to resolve reference "registry.invalid/netshoot:v1": failed to do request: Head '
              '"https://registry.invalid/v2/netshoot/manifests/v1": dial tcp: lookup registry.invalid: no such host')


def pod_history(cluster: Any, ns: str, name: str, until: Callable[[list[tuple[float, dict[str, Any]]]], bool],
                timeout: float) -> list[tuple[float, dict[str, Any]]]:
    """Every version of the pod the API server sends (a watch, so no status is missed), with the seconds since the
    watch started, until `until(history)` holds."""
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    history: list[tuple[float, dict[str, Any]]] = []
    start = time.monotonic()
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}",
                          timeout_seconds=int(timeout)):
        history.append((time.monotonic() - start, api.sanitize_for_serialization(event["object"])))
        if until(history):
            w.stop()
            break
    return history


def waiting(pod: dict[str, Any], container: str) -> dict[str, Any]:
    cs = next((c for c in pod.get("status", {}).get("containerStatuses") or [] if c["name"] == container), {})
    return dict(cs.get("state", {}).get("waiting") or {})


@pytest.fixture(scope="module")
def ns(cluster: Any) -> str:
    return make_namespace(cluster, "lc-images")


def test_unresolvable_registry_err_image_pull_then_back_off_and_pending(cluster: Any, ns: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad-image", "namespace": ns},
           "spec": {"nodeName": "node-1", "containers": [
               {"name": "app", "image": IMAGE, "ports": [{"containerPort": 80}]},
               {"name": "ok", "image": "nicolaka/netshoot", "ports": [{"containerPort": 81}]}]}}
    apply(cluster, pod)

    def reasons(h: list[tuple[float, dict[str, Any]]]) -> list[str]:
        out: list[str] = []
        for _, p in h:
            r = waiting(p, "app").get("reason")
            if r and (not out or out[-1] != r):
                out.append(r)
        return out

    # the first pull, the back-off sync, then (10 s after the first failure) the second pull and its back-off
    history = pod_history(cluster, ns, "bad-image",
                          lambda h: reasons(h)[:4] == ["ErrImagePull", "ImagePullBackOff"] * 2, timeout=40)
    assert reasons(history)[:4] == ["ErrImagePull", "ImagePullBackOff"] * 2, reasons(history)
    first = next(t for t, p in history if waiting(p, "app").get("reason") == "ErrImagePull")
    again = [t for t, p in history if waiting(p, "app").get("reason") == "ErrImagePull" and t > first + 5]
    print(f"ErrImagePull at {first:.1f} s, pulled again {again[0] - first:.1f} s later")
    assert 8 <= again[0] - first <= 14  # kubelet: 10 s (the first event may be seen up to ~1 s late)
    for _, p in history:
        st = p["status"]
        if waiting(p, "app"):
            assert st["phase"] == "Pending"  # kubelet's getPhase: a container waiting that never ran
            app = next(c for c in st["containerStatuses"] if c["name"] == "app")
            assert not app["ready"] and not app["started"] and app["restartCount"] == 0
            assert "containerID" not in app and app["image"] == IMAGE
    final = history[-1][1]
    assert waiting(final, "app") == {"reason": "ImagePullBackOff",
                                     "message": f'Back-off pulling image "{IMAGE}": ErrImagePull: {PULL_ERROR}'}
    assert any(waiting(p, "app") == {"reason": "ErrImagePull", "message": PULL_ERROR} for _, p in history)
    ready = next(c for c in final["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
    ok = next(c for c in final["status"]["containerStatuses"] if c["name"] == "ok")
    assert ok["ready"] and "running" in ok["state"]  # the other container started: kubelet starts each it can
    # nothing of the image-less container answers; the running one does
    ip = final["status"]["podIP"]
    got = probe(cluster, ns, "probe-bad-image", [Target(ip, 80), Target(ip, 81)], node="node-2")
    assert got == {f"{ip}:80/tcp": None, f"{ip}:81/tcp": f"{ns}/bad-image tcp/81"}


def test_other_images_run_as_before(cluster: Any, ns: str) -> None:
    apply(cluster, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "good-image", "namespace": ns},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/netshoot:v1"}]}})
    pod = wait_pod(cluster, ns, "good-image", running_with_ip)
    assert pod["status"]["containerStatuses"][0]["ready"]
