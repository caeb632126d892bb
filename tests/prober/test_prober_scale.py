"""The real operator, probing on, watching a few thousand pods: planning never holds its event loop, so /healthz
(kopf's liveness endpoint, what the kubelet restarts the pod on) and /metrics keep answering within the chart's
liveness timeout. (How long the loop is held, in milliseconds, is measured in bench/bench_operator.py: a wall-clock
bound of a second here failed on a machine loaded 9 times over, where any process answers late.)

The pods are status-only, as in bench/bench_operator.py: created with a scheduler nobody serves and given a Running
status with an IP through the status subresource, so they are endpoints of the index without network namespaces.
``--probe-max-pods 0`` keeps the prober from creating pods: it plans (every round, and on every change while it
waits) but probes nothing, which is the part under test here."""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from localcluster.statusonly import create_namespace, create_status_only_pod, pod_ip

from .harness import OperatorProcess, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAMESPACES = [f"pr-scale-{i:02d}" for i in range(20)]
PODS = 3000
APPS = ["web", "api", "auth", "cart", "search", "db", "cache", "queue", "worker", "report"]


def _create_pods(api: Any) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    for i, ns in enumerate(NAMESPACES):
        create_namespace(core, ns, {"tier": f"t{i % 4}"})

    def make_pod(n: int) -> None:
        deployment = n // 10
        labels = {"app": APPS[(deployment // len(NAMESPACES)) % len(APPS)], "version": f"v{deployment % 3}",
                  "pod-template-hash": f"h{deployment}"}
        create_status_only_pod(core, NAMESPACES[deployment % len(NAMESPACES)], f"pod-{n:05d}", labels,
                               [{"containerPort": 80 if n % 2 else 8080, "name": "http"}], pod_ip(n, base=200))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make_pod, range(PODS)))
    for i, ns in enumerate(NAMESPACES):
        for p, app in enumerate(APPS[:4]):
            source = APPS[(p + 1) % len(APPS)]
            body = {"metadata": {"name": f"np-{app}", "namespace": ns},
                    "spec": {"podSelector": {"matchLabels": {"app": app}},
                             "policyTypes": ["Ingress", "Egress"] if i % 3 == 0 else ["Ingress"],
                             "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": source}}},
                                                   {"namespaceSelector": {"matchLabels": {"tier": "t0"}}}],
                                          "ports": [{"port": "http"}]}],
                             "egress": [{"to": [{"namespaceSelector": {}}],
                                         "ports": [{"port": 53, "protocol": "UDP"}]}]}}
            try:
                net.create_namespaced_network_policy(ns, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise


@pytest.fixture(scope="module")
def many_pods(cluster: Any) -> Iterator[Any]:
    api = cluster.api_client()
    _create_pods(api)
    yield cluster
    cluster.kubectl("delete", "namespace", "--wait=false", "--ignore-not-found", *NAMESPACES, timeout=120)


def _timed_get(url: str) -> float:
    """Seconds until ``url`` answered 200 (infinity when it did not answer within 10 s)."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            rsp.read()
            assert rsp.status == 200
    except TimeoutError:
        return math.inf
    return time.monotonic() - started


def _liveness_timeout() -> float:
    """The chart's livenessProbe timeoutSeconds: slower than that, the kubelet counts a failure."""
    template = (Path(__file__).resolve().parents[2] / "charts/netpol-auditor/templates/deployment.yaml").read_text()
    probe = template.split("livenessProbe:", 1)[1].split("readinessProbe:", 1)[0]
    found = re.search(r"timeoutSeconds: (\d+)", probe)
    assert found, "the chart's livenessProbe sets timeoutSeconds"
    return float(found[1])


def test_health_and_metrics_answer_within_the_liveness_timeout_while_the_prober_plans(many_pods: Any,
                                                                                        tmp_path: Path) -> None:
    cluster = many_pods
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "scale.log", "--probe", "--probe-max-pods", "0",
                         "--probe-namespaces", "pr-scale-*", "--probe-interval", "5")
    slowest: dict[str, float] = {"healthz": 0.0, "metrics": 0.0}
    try:
        health = f"http://127.0.0.1:{op.health_port}/healthz"
        metrics = f"http://127.0.0.1:{op.metrics_port}/metrics"
        # Coming up is not what this test measures (the endpoints' answers while the prober plans are): the wait is
        # generous, since on a loaded CI machine the process once took over 60 s to import and bind.
        try:
            wait_for("the operator's endpoints", lambda: _timed_get(health) >= 0 and _timed_get(metrics) >= 0,
                     timeout=180)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{op.log.read_text()[-3000:]}") from None
        planned_at = None
        started = time.monotonic()
        deadline = started + 150
        relabelled = False
        while time.monotonic() < deadline:
            slowest["healthz"] = max(slowest["healthz"], _timed_get(health))
            slowest["metrics"] = max(slowest["metrics"], _timed_get(metrics))
            if planned_at is None and op.value("netpol_auditor_probe_paths", state="pending") > 0:
                planned_at = time.monotonic()
            if planned_at is not None and not relabelled:
                # the plan follows the cluster: a relabel is planned again (on a worker thread) while we poll
                cluster.kubectl("label", "pod", "-n", NAMESPACES[0], "pod-00001", "app=db", "--overwrite")
                relabelled = True
            if planned_at is not None and time.monotonic() - planned_at > 20:
                break
            time.sleep(0.2)
        assert planned_at is not None, f"the prober never planned a path:\n{op.log.read_text()[-3000:]}"
        pods = op.value("netpol_auditor_index_objects", kind="pod")
        assert pods >= PODS
        lag = op.samples("netpol_auditor_event_loop_lag_seconds_count")
        assert lag and lag[0].value > 0, "the event loop's lag is measured"
        # a cycle that can place no pod waits for work instead of spinning: about one planning pass a second
        updates = op.value("netpol_auditor_probe_plan_duration_seconds_count")
        assert 0 < updates < 3 * (time.monotonic() - started), updates
    finally:
        op.stop()
    limit = _liveness_timeout()
    assert slowest["healthz"] < limit and slowest["metrics"] < limit, (limit, slowest)
    assert "Traceback" not in op.log.read_text(), op.log.read_text()[-3000:]
