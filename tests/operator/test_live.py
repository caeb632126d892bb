"""The operator against the real API server: metrics match the engine, watched objects stay untouched, a storm of
random changes converges to a rebuild from a fresh listing."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from operator_harness import (
    InProcessOperator,
    OperatorProcess,
    delete_namespaces,
    free_port,
    fresh_namespaces,
    index_fingerprint,
    json_of,
    list_all,
    rebuild,
    wait_for,
)
from operator_workload import Workload

from netpol_auditor.controller.settings import Settings
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import PortProtocol

pytestmark = [pytest.mark.cluster]

SEED = Path(__file__).with_name("manifests") / "three-tier.yaml"
SEED_PORTS = ("80/TCP", "8080/TCP", "5432/TCP")


def make_seed_pods_run(cluster: Any, admin: Any) -> None:
    """Wait for the seed pods to run on the cluster's nodes; with no nodes, give them a status ourselves."""
    nodes = json_of(cluster, "get", "nodes")["items"]
    names = [("shop", "web"), ("shop", "api"), ("shop", "db"), ("other", "debug")]
    if not nodes:
        workload = Workload(admin)
        for namespace, name in names:
            workload.run(namespace, name)

    def running() -> bool:
        for namespace, name in names:
            pod = json_of(cluster, "get", "pod", "-n", namespace, name)
            if pod["status"].get("phase") != "Running" or not pod["status"].get("podIP"):
                return False
        return True

    wait_for("the seed pods to run", running, timeout=120, interval=1)


def engine_path_counts(objects: list[dict[str, Any]], ports: list[PortProtocol]) -> dict[tuple[str, ...], float]:
    """The engine's own offline answer: judge every ordered pair of distinct endpoint pods."""
    parsed = [parse_object(o, "kubectl") for o in objects]
    index = ReachabilityIndex.from_objects(o for o in parsed if o is not None)
    counts: dict[tuple[str, ...], float] = {}
    for port in ports:
        for src in index.endpoints():
            for dst in index.endpoints():
                if src != dst:
                    verdict = "allowed" if index.verdict(src, dst, port).allowed else "denied"
                    key = (src.namespace, dst.namespace, str(port.port), port.protocol.value, verdict)
                    counts[key] = counts.get(key, 0) + 1
    return counts


def test_seed_app_path_metrics_equal_the_engines_offline_answer(cluster: Any, admin: Any, processes: Any) -> None:
    delete_namespaces(cluster, "shop", "other")
    wait_for("old seed namespaces to go", lambda: not [n for n in json_of(cluster, "get", "ns")["items"]
                                                      if n["metadata"]["name"] in ("shop", "other")], timeout=120)
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--ports", ",".join(SEED_PORTS),
                                          "--recompute-delay", "0.2")
    operator.wait_ready()
    cluster.kubectl("apply", "-f", str(SEED))
    make_seed_pods_run(cluster, admin)
    objects = json_of(cluster, "get", "namespaces,pods,networkpolicies", "--all-namespaces")["items"]
    expected = {k: v for k, v in engine_path_counts(objects, [PortProtocol.parse(p) for p in SEED_PORTS]).items()
                if {k[0], k[1]} <= {"shop", "other"}}
    assert expected[("shop", "shop", "8080", "TCP", "allowed")] == 1  # web -> api, and nothing else

    def live() -> dict[tuple[str, ...], float]:
        samples = operator.scrape().get("netpol_auditor_paths", [])
        return {(s.labels["source_namespace"], s.labels["destination_namespace"], s.labels["port"],
                 s.labels["protocol"], s.labels["verdict"]): s.value for s in samples
                if {s.labels["source_namespace"], s.labels["destination_namespace"]} <= {"shop", "other"} and s.value}

    wait_for("the path metrics to equal the engine's answer", lambda: live() == expected, timeout=30)
    families = operator.scrape()
    selected = {s.labels["policy"]: s.value for s in families["netpol_auditor_policy_selected_pods"]
                if s.labels["namespace"] == "shop"}
    assert selected == {"default-deny-ingress": 3, "web-from-anywhere": 1, "api-from-web": 1, "db-from-api": 1}
    isolation = {(s.labels["direction"], s.labels["isolation"]): s.value for s in families["netpol_auditor_pods"]
                 if s.labels["namespace"] == "shop"}
    assert isolation == {("ingress", "isolated"): 3, ("ingress", "unisolated"): 0,
                         ("egress", "isolated"): 0, ("egress", "unisolated"): 3}
    assert operator.healthz() == 200


def test_watched_objects_stay_byte_for_byte_unchanged(cluster: Any, admin: Any, processes: Any) -> None:
    """No finalizer, annotation, status or any other write: every watched object keeps its resourceVersion."""
    workload = Workload(admin)
    fresh_namespaces(cluster, "untouched")
    workload.namespace("untouched", {"team": "x"})
    # With nodes, the pods are placed and run by the cluster (nothing else writes to them once they run); without,
    # the test gives them their status.
    placed = bool(json_of(cluster, "get", "nodes")["items"])
    workload.pod("untouched", "a", {"app": "a"}, placed=placed)
    workload.pod("untouched", "b", {"app": "b"}, placed=placed)
    workload.policy("untouched", "a-from-b", {"app": "a"}, {"app": "b"})
    workload.policy("untouched", "nothing", {"app": "ghost"}, {"app": "nobody"})  # makes the operator post Events

    def snapshot() -> dict[tuple[str, str | None, str], dict[str, Any]]:
        return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in list_all(admin)
                if o["metadata"].get("namespace") == "untouched" or o["metadata"]["name"] == "untouched"}

    def settled() -> dict[tuple[str, str | None, str], dict[str, Any]] | None:
        first = snapshot()
        running = all(o["status"].get("phase") == "Running" for k, o in first.items() if k[0] == "Pod")
        time.sleep(3)
        return first if running and snapshot() == first else None

    before = wait_for("the test objects to settle (pods running, no writer left)", settled, timeout=120)
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--recompute-delay", "0.2",
                                          "--events-grace", "1")
    operator.wait_ready()
    # Let it handle a change of its own accord too (a relabel event) and post its Events.
    workload.relabel("untouched", "b", {"app": "b", "extra": "1"})
    wait_for("an Event about the empty policy", lambda: [
        e for e in json_of(cluster, "get", "events", "-n", "untouched")["items"]
        if e["involvedObject"]["name"] == "nothing" and e["reason"] == "PolicySelectsNoPods"], timeout=30)
    time.sleep(2)
    after = snapshot()
    relabelled = ("Pod", "untouched", "b")
    for key, obj in before.items():
        if key == relabelled or key not in after:
            continue
        assert json.dumps(after[key], sort_keys=True) == json.dumps(obj, sort_keys=True), key
    for obj in after.values():
        meta = obj["metadata"]
        assert not [a for a in meta.get("annotations", {}) if "kopf" in a or "netpol-auditor" in a], meta["name"]
        assert not [f for f in meta.get("finalizers", []) if "kopf" in f or "netpol-auditor" in f], meta["name"]
        assert not [m for m in meta.get("managedFields", []) if "kopf" in m.get("manager", "")
                    or ("python" in m.get("manager", "").lower() and m.get("operation") != "Update")], meta["name"]
    delete_namespaces(cluster, "untouched")


def _storm(workload: Workload, rng: random.Random, changes: int) -> dict[str, int]:
    """*changes* random API changes: pods (create, relabel, run, delete), policies, namespaces (create, delete)."""
    namespaces = [f"storm-{i}" for i in range(4)]
    for i, ns in enumerate(namespaces):
        workload.namespace(ns, {"zone": f"z{i % 2}"})
    pods: dict[str, set[str]] = {ns: set() for ns in namespaces}
    policies: dict[str, set[str]] = {ns: set() for ns in namespaces}
    apps = ["web", "api", "db", "cache"]
    done: dict[str, int] = {}
    serial = 0
    while sum(done.values()) < changes:
        serial += 1
        ns = rng.choice(namespaces)
        op = rng.choices(["pod+", "pod-", "label", "policy+", "policy-", "nslabel", "ns-"],
                         weights=[30, 12, 25, 15, 8, 6, 1])[0]
        try:
            if op == "pod+":
                name = f"p{serial}"
                workload.pod(ns, name, {"app": rng.choice(apps)}, port=rng.choice([80, 8080]),
                             running=rng.random() < 0.9)
                pods[ns].add(name)
            elif op == "pod-" and pods[ns]:
                name = rng.choice(sorted(pods[ns]))
                workload.delete_pod(ns, name)
                pods[ns].discard(name)
            elif op == "label" and pods[ns]:
                workload.relabel(ns, rng.choice(sorted(pods[ns])), {"app": rng.choice(apps)})
            elif op == "policy+":
                name = f"np{rng.randrange(6)}"
                workload.policy(ns, name, {"app": rng.choice(apps)}, rng.choice([None, {"app": rng.choice(apps)}]),
                                rng.choice([80, 8080, None]), egress=rng.random() < 0.2)
                policies[ns].add(name)
            elif op == "policy-" and policies[ns]:
                name = rng.choice(sorted(policies[ns]))
                workload.delete_policy(ns, name)
                policies[ns].discard(name)
            elif op == "nslabel":
                workload.namespace(ns, {"zone": rng.choice(["z0", "z1", "z2"])})
            elif op == "ns-":
                workload.delete_namespace(ns)
                namespaces.remove(ns)
                del pods[ns], policies[ns]
                fresh = f"storm-{serial}"
                workload.namespace(fresh, {"zone": "z0"})
                namespaces.append(fresh)
                pods[fresh], policies[fresh] = set(), set()
            else:
                continue
        except Exception as exc:  # e.g. a namespace still terminating; the storm goes on
            if "terminat" not in str(exc).lower():
                raise
            continue
        done[op] = done.get(op, 0) + 1
    return done


@pytest.mark.slow
def test_storm_of_random_changes_converges_to_a_rebuild(cluster: Any, admin: Any) -> None:
    settings = Settings(kubeconfig=str(cluster.kubeconfig), standalone=True, metrics_address="127.0.0.1",
                        metrics_port=free_port(), liveness_endpoint="",
                        recompute_delay_seconds=0.2, resync_interval_seconds=0, events_enabled=False)
    operator = InProcessOperator(settings, admin).start()
    try:
        done = _storm(Workload(admin), random.Random(5), 600)
        assert sum(done.values()) >= 600 and len(done) == 7, done

        def converged() -> bool:
            expected = index_fingerprint(rebuild(admin))
            return operator.call(lambda op: index_fingerprint(op.feed.index)) == expected

        wait_for("the live index to equal a rebuild from a fresh listing", converged, timeout=90, interval=1)
        # The aggregates the metrics serve are recomputed from the converged index, not left behind.
        wait_for("the aggregates to catch up", lambda: operator.call(
            lambda op: op.recomputed_revision == op.feed.index.revision), timeout=30)
        errors = operator.call(lambda op: op.feed.skipped_objects)
        assert errors == 0
    finally:
        operator.stop()
        for ns in json_of(cluster, "get", "ns")["items"]:
            if ns["metadata"]["name"].startswith("storm-"):
                delete_namespaces(cluster, ns["metadata"]["name"])


def test_json_logs_are_one_object_a_line(cluster: Any, processes: Any) -> None:
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--log-format", "json")
    operator.wait_ready()
    operator.stop()
    lines = [line for line in operator.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert any("index ready" in r["message"] for r in records)
    assert all({"message", "timestamp", "severity"} <= r.keys() for r in records)


def test_namespace_patterns_scope_what_is_indexed(cluster: Any, admin: Any, processes: Any) -> None:
    """``--namespace 'scope-*,!scope-out'``: pods and policies of other namespaces stay out of the index."""
    workload = Workload(admin)
    for ns in ("scope-in", "scope-out", "elsewhere"):
        workload.namespace(ns)
        workload.pod(ns, "a", {"app": "a"})
        workload.policy(ns, "p", {"app": "a"}, None)
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--namespace", "scope-*,!scope-out",
                                          "--recompute-delay", "0.2")
    operator.wait_ready()

    def selected() -> set[str]:
        return {s.labels["namespace"] for s in operator.scrape().get("netpol_auditor_policy_selected_pods", [])}

    wait_for("the in-scope policy in the index", lambda: "scope-in" in selected(), timeout=30)
    assert selected() == {"scope-in"}
    workload.pod("scope-out", "b", {"app": "a"})
    workload.pod("scope-in", "b", {"app": "a"})
    wait_for("the new in-scope pod", lambda: operator.gauge("netpol_auditor_policy_selected_pods",
                                                            namespace="scope-in", policy="p") == 2, timeout=30)
    assert selected() == {"scope-in"}
    delete_namespaces(cluster, "scope-in", "scope-out", "elsewhere")


def test_namespace_selector_scopes_the_index_and_follows_relabels(cluster: Any, admin: Any, processes: Any) -> None:
    """``--namespace-selector 'audit=yes,env!=dev'``: only admitted namespaces' pods and policies are indexed; a
    namespace relabelled into scope is listed and indexed, one relabelled out of scope leaves the index."""
    workload = Workload(admin)
    labels = {"sel-in": {"audit": "yes"}, "sel-dev": {"audit": "yes", "env": "dev"}, "sel-later": {}}
    for ns, ns_labels in labels.items():
        workload.namespace(ns, ns_labels)
        workload.pod(ns, "a", {"app": "a"})
        workload.policy(ns, "p", {"app": "a"}, None)
    operator: OperatorProcess = processes(cluster.kubeconfig, "--standalone", "--namespace-selector",
                                          "audit=yes,env!=dev", "--recompute-delay", "0.2")
    operator.wait_ready()

    def selected() -> set[str]:
        return {s.labels["namespace"] for s in operator.scrape().get("netpol_auditor_policy_selected_pods", [])
                if s.labels["namespace"].startswith("sel-")}

    wait_for("the admitted namespace's policy in the index", lambda: "sel-in" in selected(), timeout=30)
    assert selected() == {"sel-in"}
    workload.pod("sel-dev", "b", {"app": "a"})  # events from a namespace out of scope change nothing
    workload.core.patch_namespace("sel-later", {"metadata": {"labels": {"audit": "yes"}}})
    wait_for("the relabelled namespace listed into the index", lambda: selected() == {"sel-in", "sel-later"},
             timeout=30)
    assert operator.gauge("netpol_auditor_policy_selected_pods", namespace="sel-later", policy="p") == 1
    workload.core.patch_namespace("sel-in", {"metadata": {"labels": {"env": "dev"}}})
    wait_for("the namespace relabelled out of scope gone from the index", lambda: selected() == {"sel-later"},
             timeout=30)
    # and back: the same pods and policy, never deleted in the cluster, are taken again
    workload.core.patch_namespace("sel-in", {"metadata": {"labels": {"env": None}}})
    wait_for("the namespace back in scope", lambda: selected() == {"sel-in", "sel-later"}, timeout=30)
    workload.pod("sel-in", "b", {"app": "a"})
    wait_for("a new pod of the re-admitted namespace", lambda: operator.gauge(
        "netpol_auditor_policy_selected_pods", namespace="sel-in", policy="p") == 2, timeout=30)
    assert "Traceback" not in operator.log_text()
    delete_namespaces(cluster, *labels)
