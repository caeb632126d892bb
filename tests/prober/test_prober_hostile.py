"""The prober on a hostile cluster: real ResourceQuotas, LimitRanges, a ValidatingAdmissionPolicy, a real mutating
webhook injecting a mesh sidecar, a Windows node, a NoExecute taint and an image that cannot be pulled
(localcluster/hostile.py, localcluster/webhook.py, the node agent's kubelet admission).

Every case asserts what a user relies on: each refused path is inconclusive with the right reason, the cycle still
completes, coverage counts only what was judged, nothing is flagged that was not checked — and the unaffected paths
still raise their mismatches where the CNI enforces nothing (Flannel mode), and none where it enforces (kube-router).

The workload: one ``server`` pod per namespace; each namespace admits ingress only from itself, so every
cross-namespace path is predicted denied and every same-namespace path allowed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from localcluster import hostile, webhook
from netpol_auditor.controller.settings import Settings
from netpol_auditor.prober.compare import MismatchKind
from netpol_auditor.prober.plan import PathKey

from .harness import RunningProber, apply, fault, install_crd, pods_running, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

OK, MESH_OK = "ho-ok", "ho-mesh-ok"
QUOTA, LIMITS, POLICY, MESH = "ho-quota", "ho-limits", "ho-policy", "ho-mesh"
NAMESPACES = (OK, MESH_OK, QUOTA, LIMITS, POLICY, MESH)
#: the reason each hostile namespace's probe pods are refused for
REFUSED = {QUOTA: "quota", LIMITS: "limit_range", POLICY: "admission_denied", MESH: "sidecar_injected"}
INJECT_ALWAYS = ("ho.localcluster/inject-always", "enabled")
INJECT_HONOURING = ("ho.localcluster/inject", "enabled")


def workload(namespaces: tuple[str, ...], node_of: dict[str, str]) -> str:
    docs = []
    for ns in namespaces:
        docs += [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server", "namespace": ns,
                                                             "labels": {"app": "server"}},
             "spec": {"nodeName": node_of.get(ns, "node-1"),
                      "containers": [{"name": "s", "image": "server", "ports": [{"containerPort": 8080}]}]}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "same-namespace-only", "namespace": ns},
             "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {}}]}]}},
        ]
    return "\n---\n".join(json.dumps(d) for d in docs)


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        probe_enabled=True, probe_namespaces=("ho-*",), probe_interval_seconds=1.0, probe_max_pods=10,
        probe_settle_seconds=3.0, probe_retry_seconds=6.0, events_enabled=True, events_dedup_seconds=3600.0,
        probe_backoff_seconds=2.0, probe_backoff_max_seconds=8.0,
    )
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="module")
def hostile_cluster(cluster: Any) -> Iterator[Any]:
    """The workload, then the namespaces made hostile (objects that refuse only what comes after them)."""
    install_crd(cluster)
    cluster.kubectl("wait", "--for=delete", "namespace", *NAMESPACES, "--timeout=120s", check=False)  # a rerun
    node_of = {OK: "node-1", MESH_OK: "node-2", QUOTA: "node-1", LIMITS: "node-2", POLICY: "node-1", MESH: "node-2"}
    apply(cluster, "-", workload(NAMESPACES, node_of))
    wait_for("workload pods running", lambda: pods_running(cluster, NAMESPACES), timeout=120)
    with contextlib.ExitStack() as stack:
        stack.enter_context(hostile.full_quota(cluster, QUOTA))
        stack.enter_context(hostile.limit_range(cluster, LIMITS, max_limit_request_ratio={"cpu": "1.5"}))
        stack.enter_context(hostile.deny_pods_policy(cluster, POLICY,
                                                     label=("app.kubernetes.io/managed-by", "netpol-auditor")))
        stack.enter_context(webhook.sidecar_injector(cluster, honour_opt_outs=False, label=INJECT_ALWAYS,
                                                     name="ho-inject-always"))
        stack.enter_context(webhook.sidecar_injector(cluster, honour_opt_outs=True, label=INJECT_HONOURING,
                                                     name="ho-inject-honouring"))
        cluster.kubectl("label", "namespace", MESH, "=".join(INJECT_ALWAYS), "--overwrite")
        cluster.kubectl("label", "namespace", MESH_OK, "=".join(INJECT_HONOURING), "--overwrite")
        yield cluster
        for ns in (MESH, MESH_OK):
            cluster.kubectl("label", "namespace", ns, "ho.localcluster/inject-always-", "ho.localcluster/inject-")
    cluster.kubectl("delete", "namespace", *NAMESPACES, "--wait=false")


def namespace_of(prober: RunningProber, gid: str) -> str:
    group = prober.loop.planner.group(gid)
    assert group is not None
    return group.namespace


def expected_reason(prober: RunningProber, key: PathKey) -> str | None:
    """The reason a path must be inconclusive for: its destination's refusal, else its source's (responders are
    created first); None: it must be judged."""
    src, dst = namespace_of(prober, key.src), namespace_of(prober, key.dst)
    return REFUSED.get(dst) or REFUSED.get(src)


def samples(prober: RunningProber, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(prober.registry).decode()):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def run(api: Any, cycles: int = 1, **kw: Any) -> RunningProber:
    prober = RunningProber.start(api, settings(**kw))
    try:
        prober.wait_cycles(cycles, timeout=300)
    except BaseException:
        prober.stop()
        raise
    return prober


def assert_refusals_reported(prober: RunningProber, cluster: Any) -> tuple[set[PathKey], set[PathKey]]:
    """Every path of the cycle is judged or inconclusive for exactly its reason; returns (judged, inconclusive)."""
    planner, loop = prober.loop.planner, prober.loop
    paths = planner.cycle_paths()
    assert paths
    judged, refused = set(), set()
    for key in paths:
        want = expected_reason(prober, key)
        state, reason = planner.outcomes.get(key, ("pending", ""))
        if want is None:
            assert state == "judged", (key, state, reason, loop.inconclusive.get(key))
            judged.add(key)
        else:
            assert (state, reason) == ("inconclusive", want), (key, namespace_of(prober, key.src),
                                                                namespace_of(prober, key.dst), state, reason)
            refused.add(key)
    assert judged and refused
    # coverage is what was judged; the path-state gauge counts the rest by reason
    assert planner.coverage() == len(judged) / len(paths)
    states = samples(prober, "netpol_auditor_probe_paths")
    by_reason = {dict(k)["reason"]: v for k, v in states.items() if dict(k)["state"] == "inconclusive"}
    assert set(by_reason) == set(REFUSED.values()), by_reason
    assert sum(by_reason.values()) == len(refused)
    # no probe pod of a refused namespace ever carried an unrequested container into a judgement
    assert not {k for k in prober.mismatched() if k in refused}
    # the Events name the reason, the API server's own words and the fix
    events = json.loads(cluster.kubectl("get", "events", "-n", "default", "--field-selector",
                                        "reason=ProbeInconclusive", "-o", "json"))["items"]
    quota = [e for e in events if e["involvedObject"]["name"] == QUOTA]
    assert quota and "exceeded quota" in quota[0]["message"] and "Fix:" in quota[0]["message"], events[:3]
    return judged, refused


def test_refused_probe_pods_are_inconclusive_with_their_reason_and_kube_router_shows_no_false_mismatch(
        hostile_cluster: Any) -> None:
    cluster = hostile_cluster
    prober = run(cluster.api_client())
    try:
        judged, _ = assert_refusals_reported(prober, cluster)
        assert not prober.mismatched(), [m.describe() for m in prober.loop.comparator.mismatches.values()]
        # the mesh namespace whose injector honours opt-outs is probed like any other: no sidecar, judged
        assert any(namespace_of(prober, k.dst) == MESH_OK for k in judged)
        # a refused placement is backed off, not hammered: few create attempts per (group, node)
        failing = prober.loop.backoff.failing()
        assert failing
        for (gid, node), n in failing.items():  # type: ignore[misc]
            assert namespace_of(prober, gid) in REFUSED and 1 <= n <= 4, (gid, node, n)
    finally:
        prober.stop()


def test_in_flannel_mode_the_unaffected_paths_still_raise_their_mismatches(hostile_cluster: Any) -> None:
    cluster = hostile_cluster
    fault(cluster, "set-none", "node-1")
    fault(cluster, "set-none", "node-2")
    try:
        prober = run(cluster.api_client())
        try:
            judged, refused = assert_refusals_reported(prober, cluster)
            denied = {k for k in judged if prober.loop.planner.path(k) is not None
                      and not prober.loop.planner.path(k).predicted}  # type: ignore[union-attr]
            assert denied, "cross-namespace paths between the unaffected namespaces are predicted denied"
            got = prober.mismatched_within(lambda: denied)
            assert got == denied
            assert {m.kind for m in prober.loop.comparator.mismatches.values()} == {
                MismatchKind.UNEXPECTEDLY_ALLOWED}
            assert not got & refused
        finally:
            prober.stop()
    finally:
        fault(cluster, "heal")


def test_nodes_that_cannot_host_probe_pods(hostile_cluster: Any) -> None:
    """node-2 turns Windows: with the default nodeSelector the prober places nothing there (unschedulable, with the
    label to fix); without one, the node's kubelet refuses the pods (PodOSNotSupported) — unschedulable too. The
    cycle completes either way, and node-1's paths are judged."""
    cluster = hostile_cluster
    with hostile.windows_node(cluster, "node-2"):
        for node_selector in ({"kubernetes.io/os": "linux"}, {}):
            prober = run(cluster.api_client(), probe_node_selector=node_selector, probe_namespaces=(OK, MESH_OK))
            try:
                planner = prober.loop.planner
                for key in planner.cycle_paths():
                    on_windows = "node-2" in (key.src_node, key.dst_node)
                    want = ("inconclusive", "unschedulable") if on_windows else ("judged", "")
                    assert planner.outcomes.get(key) == want, (node_selector, key, planner.outcomes.get(key))
                assert any(k.dst_node == "node-2" for k in planner.cycle_paths())
                assert not prober.mismatched()
            finally:
                prober.stop()


def test_an_unpullable_probe_image_makes_every_path_inconclusive_and_the_cycle_still_ends(
        hostile_cluster: Any) -> None:
    cluster = hostile_cluster
    prober = run(cluster.api_client(), probe_image="registry.invalid/netshoot:v0.13", probe_namespaces=(OK, MESH_OK))
    try:
        planner = prober.loop.planner
        assert {planner.outcomes.get(k) for k in planner.cycle_paths()} == {("inconclusive", "image_pull")}
        assert planner.coverage() == 0.0
        assert not prober.mismatched()
    finally:
        prober.stop()


def test_a_tainted_node_gets_no_probe_pod_until_probe_pods_tolerate_the_taint(hostile_cluster: Any) -> None:
    """A NoExecute taint on node-2 (a node being drained, a dedicated pool): probe pods would be refused or evicted
    there, so its paths are unschedulable; with a matching toleration (probe.tolerations) they are judged."""
    cluster = hostile_cluster
    with hostile.taint_node(cluster, "node-2", key="dedicated", value="probes-not-welcome", effect="NoExecute"):
        for tolerations, on_node_2 in (((), ("inconclusive", "unschedulable")),
                                       (({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},),
                                        ("judged", ""))):
            prober = run(cluster.api_client(), probe_tolerations=tolerations, probe_namespaces=(OK, MESH_OK))
            try:
                planner = prober.loop.planner
                assert any(k.dst_node == "node-2" for k in planner.cycle_paths())
                for key in planner.cycle_paths():
                    want = on_node_2 if "node-2" in (key.src_node, key.dst_node) else ("judged", "")
                    assert planner.outcomes.get(key) == want, (tolerations, key, planner.outcomes.get(key))
                assert not prober.mismatched()
            finally:
                prober.stop()
