"""End to end on the local cluster: the real ProbeLoop, real probe pods, real kube-router — and the Flannel case and
each fault mode of localcluster/faults.py. These are the issue's acceptance tests.

"Exactly the affected paths" is computed from each path's prediction and node placement: kube-router enforces a pod's
ingress rules on the destination's node and its egress rules on the source's node (faults.py), so under
``stop-enforcer N`` a predicted-denied path is open iff every denying direction is decided on N, and under
``ignore-egress N`` iff the egress side denies on N and the ingress side allows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from netpol_auditor.controller.settings import Settings
from netpol_auditor.engine import Verdict
from netpol_auditor.model import Labels, PortProtocol
from netpol_auditor.prober.compare import MismatchKind
from netpol_auditor.prober.plan import PathKey, ProbeGroup, probe_groups
from netpol_auditor.prober.podspec import RunOwner, new_run_id, probe_run_object, responder_pod

from .harness import (
    MANIFESTS,
    ProbePodWatch,
    RunningProber,
    apply,
    client_server,
    fault,
    install_crd,
    pods_running,
    probe_pods,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SEED_NAMESPACES = ("pr-dns", "pr-shop", "pr-mon", "pr-tenant-a", "pr-tenant-b")


def settings(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        probe_enabled=True, probe_namespaces=("pr-*",), probe_interval_seconds=1.0, probe_max_pods=10,
        probe_settle_seconds=3.0, probe_retry_seconds=6.0, probe_late_seconds=8.0, events_enabled=True,
        events_dedup_seconds=3600.0,
    )
    base.update(kw)
    return Settings(**base)


@pytest.fixture(scope="module")
def seeds(cluster: Any) -> Iterator[Any]:
    install_crd(cluster)
    apply(cluster, MANIFESTS / "seeds.yaml")
    wait_for("seed pods running", lambda: pods_running(cluster, SEED_NAMESPACES), timeout=120)
    yield cluster.api_client()


@pytest.fixture
def healed(cluster: Any) -> Iterator[None]:
    yield
    fault(cluster, "heal")


def _denying(v: Verdict) -> tuple[bool, bool]:
    """(egress denies, ingress denies)."""
    return (v.egress is not None and not v.egress.allowed, v.ingress is not None and not v.ingress.allowed)


def kube_router_gap(k: PathKey, v: Verdict, nodes: tuple[str, ...] = ("node-1", "node-2")) -> bool:
    """What kube-router really lets through with every node healthy, as these tests observe it: a connection
    between two pods on the *same node*, denied by the source's egress rules, but admitted into the destination by
    the ingress rules of a policy that also isolates the source for egress (in the seeds: web -> web on 8080, the
    ``web`` policy selects both ends). kube-router evaluates one chain per policy for both directions of a local
    pod, so the policy's ingress rule also accepts the source's egress (compare cloudnativelabs/kube-router#916,
    policies of same-node pods not fully enforced). The prober must report exactly these paths, and as the egress
    feature missing on that node."""
    eg, ing = _denying(v)
    if not (k.src_node == k.dst_node and k.src_node in nodes and eg and not ing):
        return False
    assert v.ingress is not None and v.egress is not None
    admitting = {(r.namespace, r.policy) for r in v.ingress.admitted_by}
    return bool(admitting & set(v.egress.isolating_policies))


def expected_open(prober: RunningProber, is_open: Callable[[PathKey, Verdict], bool]) -> set[PathKey]:
    """Judged predicted-denied paths that the fault opens."""
    return {k for k, (v, _, _) in prober.judged().items() if v.allowed is False and is_open(k, v)}


def run_cycles(api: Any, n: int = 2, **kw: Any) -> RunningProber:
    prober = RunningProber.start(api, settings(**kw))
    try:
        prober.wait_cycles(n)
    except BaseException:
        prober.stop()
        raise
    return prober


def feature_values(prober: RunningProber) -> dict[tuple[str, str], int]:
    return prober.loop.comparator.feature_enforced()


def policy_values(prober: RunningProber) -> dict[tuple[str, str], int]:
    known = [p.key for p in prober.loop.index.policies()]
    return prober.loop.comparator.policy_enforced(known)


def seed_policies(prober: RunningProber) -> set[tuple[str, str]]:
    return {p.key for p in prober.loop.index.policies() if p.namespace.startswith("pr-")}


def events(cluster: Any, reason: str) -> list[dict[str, Any]]:
    data = json.loads(cluster.kubectl("get", "events", "-A", "--field-selector", f"reason={reason}", "-o", "json"))
    return [e for e in data["items"] if e["involvedObject"].get("namespace", "").startswith("pr-")
            or e["involvedObject"].get("name", "").startswith("pr-")]


def test_kube_router_enforces_the_seed_scenarios(seeds: Any, cluster: Any) -> None:
    prober = run_cycles(seeds)
    try:
        judged = prober.judged()
        assert len(judged) >= 50
        assert {v.allowed for v, _, _ in judged.values()} == {True, False}
        # zero mismatches except kube-router's real gap, reported as exactly that: egress not enforced on that node
        gap = expected_open(prober, kube_router_gap)
        assert prober.mismatched() == gap, [m.describe() for m in prober.loop.comparator.mismatches.values()]
        for m in prober.loop.comparator.mismatches.values():
            assert m.kind is MismatchKind.UNEXPECTEDLY_ALLOWED
            assert m.features == {("egress", m.key.src_node, "egress")}
        # every other seed policy that decides a probed path is confirmed enforced
        values = policy_values(prober)
        gap_policies = {p for m in prober.loop.comparator.mismatches.values() for p in m.policies}
        assert values and {v for p, v in values.items() if p not in gap_policies} == {1}
        # the features the seeds exercise are confirmed on both nodes; SCTP is not available on this kernel and
        # is reported as inconclusive, never as a mismatch
        features = feature_values(prober)
        assert features.get(("ingress", "node-1")) == 1 and features.get(("ingress", "node-2")) == 1, features
        for f in ("named_ports", "end_port", "udp"):
            assert any(features.get((f, n)) == 1 for n in ("node-1", "node-2")), (f, features)
        assert not any(f == "sctp" and v == 0 for (f, _), v in features.items())
        inconclusive = {s.labels["reason"]: s.value for s in _samples(prober, "netpol_auditor_probes_inconclusive")}
        assert inconclusive.get("sctp_unavailable", 0) > 0
        # coverage is what was judged: only SCTP paths (this kernel lacks SCTP) may be inconclusive, and they count
        # against it
        states = prober.loop.planner.path_states()
        assert {r for (state, r) in states if state == "inconclusive"} <= {"sctp_unavailable"}, states
        judged = states.get(("judged", ""), 0)
        assert prober.loop.planner.coverage() == judged / sum(states.values())
    finally:
        prober.stop()
    assert not probe_pods(cluster), "probe pods remain after the run stopped"


def _samples(prober: RunningProber, name: str) -> list[Any]:
    out = []
    for fam in text_string_to_metric_families(generate_latest(prober.registry).decode()):
        out.extend(s for s in fam.samples if s.name in (name, f"{name}_total"))
    return out


def test_flannel_case_every_denied_path_is_unexpectedly_allowed(seeds: Any, cluster: Any, healed: None) -> None:
    cluster.kubectl("apply", "-f", str(POLICY_REPORT_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/policyreports.wgpolicyk8s.io", "--timeout=60s")
    fault(cluster, "set-none", "node-1")
    fault(cluster, "set-none", "node-2")
    prober = run_cycles(seeds, policy_reports=True)
    try:
        judged = prober.judged()
        denied = {k for k, (v, _, _) in judged.items() if v.allowed is False}
        assert denied
        got = prober.mismatched_within(lambda: denied)
        missing = {k: prober.judged()[k][1:] for k in denied - got}
        assert got == denied, missing
        assert {m.kind for m in prober.loop.comparator.mismatches.values()} == {MismatchKind.UNEXPECTEDLY_ALLOWED}
        values = policy_values(prober)
        assert set(values) == seed_policies(prober), "every policy is reported"
        assert set(values.values()) == {0}, values
        features = feature_values(prober)
        for f in ("ingress", "egress"):
            assert features[(f, "node-1")] == 0 and features[(f, "node-2")] == 0
        assert set(features.values()) == {0}, features  # nothing is enforced, whatever the feature
        mismatches = {s.labels["kind"]: s.value for s in _samples(prober, "netpol_auditor_mismatches")}
        assert mismatches.get("unexpectedly_allowed", 0) > 0
        wait_for("PolicyNotEnforced Events on the policies",
                 lambda: {e["involvedObject"]["kind"] for e in events(cluster, "PolicyNotEnforced")} == {
                     "NetworkPolicy"}, timeout=30)
        example = events(cluster, "PolicyNotEnforced")[0]["message"]
        assert "→" in example and "predicts denied" in example

        # The same findings as PolicyReports, accepted by the API server's schema: a failure on every policy.
        def failing_policies() -> set[tuple[str, str]]:
            reports = json.loads(cluster.kubectl("get", "policyreports.wgpolicyk8s.io", "-A", "-o", "json"))
            return {(r["metadata"]["namespace"], res["policy"]) for r in reports["items"]
                    for res in r["results"] if res["result"] == "fail"}

        wait_for("a failing PolicyReport result on every policy",
                 lambda: failing_policies() == seed_policies(prober), timeout=60)
    finally:
        prober.stop()


def _wait_healed(prober: RunningProber) -> None:
    """Until the mismatches are kube-router's own gap alone, for at most two more cycles (a cycle under way when the
    fault healed may still judge a path with a probe made before)."""
    target = prober.cycles() + 2
    wait_for("only kube-router's gap left mismatched",
             lambda: prober.mismatched() == expected_open(prober, kube_router_gap) or prober.cycles() >= target,
             timeout=240)
    assert prober.mismatched() == expected_open(prober, kube_router_gap), [
        m.describe() for m in prober.loop.comparator.mismatches.values()]


def test_stopped_enforcer_on_one_node_flags_exactly_its_paths_and_heals(seeds: Any, cluster: Any) -> None:
    fault(cluster, "stop-enforcer", "node-1")
    prober = run_cycles(seeds)
    try:

        def opened(k: PathKey, v: Verdict) -> bool:
            eg, ing = _denying(v)
            stopped = (not eg or k.src_node == "node-1") and (not ing or k.dst_node == "node-1")
            return stopped or kube_router_gap(k, v, nodes=("node-2",))

        want = expected_open(prober, opened)
        assert want, "the seeds have paths decided on node-1"
        assert prober.mismatched_within(lambda: want) == want
        stopped_node = {k for k in want if not kube_router_gap(k, prober.judged()[k][0], nodes=("node-2",))}
        assert {n for k in stopped_node for _, n, _ in prober.loop.comparator.mismatches[k].features} == {"node-1"}
        features = feature_values(prober)
        assert features[("ingress", "node-1")] == 0 and features[("ingress", "node-2")] == 1
        fault(cluster, "heal", "node-1")
        _wait_healed(prober)
        assert feature_values(prober)[("ingress", "node-1")] == 1
        wait_for("MismatchResolved Events", lambda: events(cluster, "MismatchResolved"), timeout=30)
    finally:
        prober.stop()
        fault(cluster, "heal")


def test_ignored_egress_on_one_node_flags_exactly_its_egress_paths(seeds: Any, cluster: Any, healed: None) -> None:
    fault(cluster, "ignore-egress", "node-2")
    prober = run_cycles(seeds)
    try:

        def opened(k: PathKey, v: Verdict) -> bool:
            eg, ing = _denying(v)
            return (eg and not ing and k.src_node == "node-2") or kube_router_gap(k, v, nodes=("node-1",))

        want = expected_open(prober, opened)
        assert want
        assert prober.mismatched_within(lambda: want) == want
        on_node_2 = {f[:2] for m in prober.loop.comparator.mismatches.values() for f in m.features
                     if f[1] == "node-2" and m.key.port.protocol.value == "TCP"}
        assert on_node_2 == {("egress", "node-2")}
        features = feature_values(prober)
        assert features[("egress", "node-2")] == 0
        assert features[("ingress", "node-2")] == 1 and features[("ingress", "node-1")] == 1
        fault(cluster, "heal", "node-2")
        # healed: only kube-router's own same-node gap is left (which also counts as egress missing on its node)
        _wait_healed(prober)
    finally:
        prober.stop()


SAFETY_NS = "pr-safety"
# port 80 on the server: the responder clone listens below 1024 through the safe sysctl, which restricted admission
# must take
SAFETY = client_server(SAFETY_NS, "[{name: http, containerPort: 8080}, {containerPort: 80}]") + f"""
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: server, namespace: {SAFETY_NS}}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: client}}}}}}], ports: [{{port: http}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: server, namespace: {SAFETY_NS}}}
spec:
  selector: {{app: server}}
  ports: [{{port: 8080}}]
---
# a ReplicaSet whose selector matches the server's clones: it would adopt (and, at 0 replicas, delete) any
# orphan pod carrying these labels
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: clones, namespace: {SAFETY_NS}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: server, app.kubernetes.io/managed-by: netpol-auditor}}}}
  template:
    metadata: {{labels: {{app: server, app.kubernetes.io/managed-by: netpol-auditor}}}}
    spec: {{containers: [{{name: s, image: server}}]}}
---
# Clones that would change what a Service or a PodDisruptionBudget does are never created (clone_conflict): a
# maxUnavailable PDB would count a clone it finds no scale for (disruptions blocked), a publishNotReadyAddresses
# Service would route to it.
# (owned by a ReplicaSet: the disruption controller takes a maxUnavailable budget's size from the pods' controllers)
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: guarded, namespace: {SAFETY_NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: guarded}}}}
  template:
    metadata: {{labels: {{app: guarded}}}}
    spec:
      nodeName: node-1
      containers: [{{name: s, image: server, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: guarded, namespace: {SAFETY_NS}}}
spec: {{maxUnavailable: 1, selector: {{matchLabels: {{app: guarded}}}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: published, namespace: {SAFETY_NS}, labels: {{app: published}}}}
spec:
  nodeName: node-2
  containers: [{{name: s, image: server, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: published, namespace: {SAFETY_NS}}}
spec:
  publishNotReadyAddresses: true
  selector: {{app: published}}
  ports: [{{port: 8080}}]
---
# policies that tell the two apart (else they would be one probe group: pods no policy can tell apart)
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: guarded, namespace: {SAFETY_NS}}}
spec:
  podSelector: {{matchLabels: {{app: guarded}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: published, namespace: {SAFETY_NS}}}
spec:
  podSelector: {{matchLabels: {{app: published}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: server}}}}}}]}}]
"""


def test_probe_pods_are_harmless(seeds: Any, cluster: Any) -> None:
    """restricted Pod Security admission, no token, never adopted, never ready/serving in an EndpointSlice."""
    cluster.kubectl("delete", "namespace", SAFETY_NS, "--ignore-not-found", "--wait=true", timeout=120)
    apply(cluster, "", text=SAFETY)
    wait_for("safety pods", lambda: pods_running(cluster, [SAFETY_NS]), timeout=120)
    cluster.kubectl("label", "--overwrite", "namespace", SAFETY_NS, "pod-security.kubernetes.io/enforce=restricted")

    def disruptions_allowed() -> int:
        pdb = json.loads(cluster.kubectl("get", "pdb", "-n", SAFETY_NS, "guarded", "-o", "json"))
        return int((pdb.get("status") or {}).get("disruptionsAllowed", -1))

    wait_for("the PodDisruptionBudget's status", lambda: disruptions_allowed() == 1, timeout=60)
    watch = ProbePodWatch(seeds)
    prober = RunningProber.start(seeds, settings(probe_namespaces=(SAFETY_NS,)))
    endpoints: list[dict[str, Any]] = []
    allowed_during: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while prober.cycles() < 1 and time.monotonic() < deadline:
            slices = json.loads(cluster.kubectl("get", "endpointslices", "-n", SAFETY_NS, "-o", "json"))["items"]
            endpoints.extend(e for s in slices for e in s.get("endpoints") or [])
            allowed_during.add(disruptions_allowed())
            time.sleep(0.3)
        assert prober.cycles() >= 1
        reasons = {s.labels["reason"] for s in _samples(prober, "netpol_auditor_probes_inconclusive") if s.value}
        assert "pod_unavailable" not in reasons, "restricted admission refused a probe pod"
        assert "clone_conflict" in reasons, "paths into the guarded and published pods were judged"
        assert prober.judged() and not prober.mismatched()
    finally:
        prober.stop()
        seen = watch.stop()
    assert {p["metadata"]["labels"]["netpol-auditor.io/role"] for p in seen.values()} == {"probe", "responder"}
    assert not {p["metadata"]["labels"].get("app") for p in seen.values()} & {"guarded", "published"}
    assert allowed_during == {1}, "a clone changed what the PodDisruptionBudget allows"
    sysctls = [s for p in seen.values() for s in (p["spec"].get("securityContext") or {}).get("sysctls") or []]
    assert {"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"} in sysctls, "no responder on port 80"
    for p in watch.versions:  # every version the API server held, not only the last
        (owner,) = p["metadata"]["ownerReferences"]
        assert owner["kind"] == "ProbeRun", "adopted by another controller"
        spec = p["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert not [v for v in spec.get("volumes") or [] if v["name"].startswith("kube-api-access")]
        for cond in (p.get("status") or {}).get("conditions") or []:
            if cond["type"] == "Ready":
                assert cond["status"] == "False"
    probe_ips = {p["status"].get("podIP") for p in watch.versions if (p.get("status") or {}).get("podIP")}
    listed = [e for e in endpoints if set(e.get("addresses") or []) & probe_ips]
    # listed at most as not ready and not serving: kube-proxy, DNS and Ingress controllers never use it
    assert all(e["conditions"].get("ready") is False and e["conditions"].get("serving") is False for e in listed)
    server = json.loads(cluster.kubectl("get", "pod", "-n", SAFETY_NS, "server", "-o", "json"))
    assert server["status"]["phase"] == "Running"


GC_NS = "pr-gc"
POLICY_REPORT_CRD = Path(__file__).resolve().parent / "manifests" / "policyreport-crd.yaml"


def test_deleting_the_probe_run_garbage_collects_its_pods(cluster: Any) -> None:
    """No prober runs here and nothing deletes pods by label: only the controller manager's garbage collector,
    following the controller ownerReference to the ProbeRun, can remove the responder."""
    install_crd(cluster)
    cluster.kubectl("delete", "namespace", GC_NS, "--ignore-not-found", "--wait=true", timeout=120)
    apply(cluster, "", text=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {GC_NS}}}\n")
    run_id = new_run_id()
    created = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-",
                                         input=json.dumps(probe_run_object(run_id, "gc-test"))))
    owner = RunOwner(created["metadata"]["name"], created["metadata"]["uid"], run_id)
    group = ProbeGroup("gc", GC_NS, Labels({"app": "server"}), (), {"node-1": ()})
    pod = responder_pod(owner, group, "node-1", 0, [PortProtocol(8080)])
    name = pod["metadata"]["name"]
    try:
        apply(cluster, "", text=json.dumps(pod))
        wait_for("the responder running", lambda: pods_running(cluster, [GC_NS]), timeout=120)
        cluster.kubectl("delete", "proberun", owner.name, "--wait=false")

        def collected() -> bool:
            return not cluster.kubectl("get", "pod", "-n", GC_NS, name, "--ignore-not-found", "-o", "name").strip()

        wait_for("the garbage collector to delete the responder", collected, timeout=90)
    finally:
        cluster.kubectl("delete", "proberun", owner.name, "--ignore-not-found", "--wait=false")
        cluster.kubectl("delete", "namespace", GC_NS, "--ignore-not-found", "--wait=false")


FREEZE_NS = "pr-freeze"
FREEZE_PODS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {FREEZE_NS}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {FREEZE_NS}, labels: {{app: client}}}}
spec:
  nodeName: node-2
  containers: [{{name: c, image: client}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: server-a, namespace: {FREEZE_NS}, labels: {{app: server-a}}}}
spec:
  nodeName: node-1
  containers: [{{name: s, image: server, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: server-b, namespace: {FREEZE_NS}, labels: {{app: server-b}}}}
spec:
  nodeName: node-2
  containers: [{{name: s, image: server, ports: [{{containerPort: 8080}}]}}]
"""
FREEZE_POLICIES = f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-a, namespace: {FREEZE_NS}}}
spec: {{podSelector: {{matchLabels: {{app: server-a}}}}, policyTypes: [Ingress]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-b, namespace: {FREEZE_NS}}}
spec: {{podSelector: {{matchLabels: {{app: server-b}}}}, policyTypes: [Ingress]}}
"""


def test_frozen_enforcer_flags_exactly_the_paths_decided_on_its_node_and_heals(cluster: Any, healed: None) -> None:
    """``freeze-enforcer node-1`` (a crashed kube-router: its old rules stay, nothing new is programmed), then
    deny-ingress policies for a server on each node: only paths into the server on node-1 connect, reported as the
    ingress feature missing on node-1 alone; healing clears them."""
    install_crd(cluster)
    cluster.kubectl("delete", "namespace", FREEZE_NS, "--ignore-not-found", "--wait=true", timeout=120)
    apply(cluster, "", text=FREEZE_PODS)
    wait_for("freeze pods running", lambda: pods_running(cluster, [FREEZE_NS]), timeout=120)
    fault(cluster, "freeze-enforcer", "node-1")
    apply(cluster, "", text=FREEZE_POLICIES)
    prober = run_cycles(cluster.api_client(), probe_namespaces=(FREEZE_NS,))
    try:
        groups = {g.labels.get("app"): g.id for g in probe_groups(prober.loop.index, (FREEZE_NS,)).values()}
        judged = prober.judged()
        into_a = {k for k, (v, _, _) in judged.items() if v.allowed is False and k.dst == groups["server-a"]}
        into_b = {k for k, (v, _, _) in judged.items() if v.allowed is False and k.dst == groups["server-b"]}
        assert into_a and into_b, "both servers' denied paths were probed"
        assert {k.dst_node for k in into_a} == {"node-1"} and {k.dst_node for k in into_b} == {"node-2"}
        assert prober.mismatched() == into_a
        assert {m.kind for m in prober.loop.comparator.mismatches.values()} == {MismatchKind.UNEXPECTEDLY_ALLOWED}
        features = feature_values(prober)
        assert features[("ingress", "node-1")] == 0 and features[("ingress", "node-2")] == 1
        fault(cluster, "heal", "node-1")
        done = prober.cycles()
        prober.wait_cycles(done + 2)
        assert prober.mismatched() == set()
        assert feature_values(prober)[("ingress", "node-1")] == 1
    finally:
        prober.stop()
        cluster.kubectl("delete", "namespace", FREEZE_NS, "--ignore-not-found", "--wait=false")
