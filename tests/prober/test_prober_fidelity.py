"""Every class of partial enforcement is flagged with exactly the affected paths, and the CNI feature gauges name
the feature and the node — against the live local cluster, one fault at a time.

The scenario is `localcluster.faultmodel.scenario_objects` (servers, clients and other pods on both nodes; policies
with a named port, an endPort range, UDP and an ipBlock ``except`` of node-1's pod CIDR, in both directions). The
ground truth of each fault is `faultmodel.ClusterModel`: the policies as the faulty node programs them, checked
against real connections by tests/localcluster/test_fault_model.py. For every path the prober judged, it must
report a mismatch iff the model says the dataplane does otherwise than the policies (no misses, no false
mismatches).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from localcluster.faultmodel import SCENARIO_FAULTS, ClusterModel, fault_args, scenario_objects, stand_in

from netpol_auditor.prober.compare import MismatchKind, Outcome
from netpol_auditor.prober.plan import PathKey

from .harness import apply, fault, install_crd, list_objects, pods_running, wait_for
from .test_prober_cluster import _samples, feature_values, run_cycles

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NS = "pf-fidelity"
#: per fault: the features it breaks on its node, and the kind of mismatch it causes
BROKEN: dict[str, tuple[set[str], MismatchKind]] = {
    "ignore-end-port": ({"end_port"}, MismatchKind.UNEXPECTEDLY_DENIED),
    "ignore-named-ports": ({"named_ports"}, MismatchKind.UNEXPECTEDLY_DENIED),
    "ignore-udp": ({"udp"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
    "ignore-udp:ingress": ({"udp"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
    "ignore-udp:egress": ({"udp"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
    "ignore-ipblock-except": ({"ipblock_except"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
    "ignore-egress": ({"egress"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
    "ignore-ingress": ({"ingress"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
    "stop-enforcer": ({"ingress", "egress"}, MismatchKind.UNEXPECTEDLY_ALLOWED),
}


@pytest.fixture(scope="module")
def scenario(cluster: Any) -> Iterator[Any]:
    install_crd(cluster)
    cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=120)
    apply(cluster, "", text="\n---\n".join(json.dumps(o) for o in [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, *scenario_objects(NS)]))
    wait_for("scenario pods running", lambda: pods_running(cluster, [NS]), timeout=120)
    yield cluster.api_client()
    cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false")


@pytest.mark.parametrize(("mode", "node"), SCENARIO_FAULTS, ids=[f"{m}-{n}" for m, n in SCENARIO_FAULTS])
def test_each_fault_is_flagged_on_exactly_its_paths_and_features(scenario: Any, cluster: Any, mode: str,
                                                                  node: str) -> None:
    fault(cluster, *fault_args(mode, node))
    prober = None
    try:
        modes = json.loads(cluster.state.joinpath("nodes.json").read_text())["modes"]
        # one cycle, then as many more as the mismatches need to settle on the truth (`mismatched_within`)
        prober = run_cycles(scenario, n=1, probe_namespaces=(NS,))
        model = ClusterModel(list_objects(scenario), modes)
        paths = prober.loop.planner.paths_plan.paths

        def wrong() -> set[PathKey]:
            return {k for k in prober.judged() if model.wrong(stand_in(paths[k].source, k.src_node),
                                                               stand_in(paths[k].destination, k.dst_node),
                                                               k.port, k.src_node, k.dst_node)}

        got = prober.mismatched_within(wrong)
        assert wrong(), (f"{mode} on {node} opened or closed none of the judged paths",
                         sorted(f"{paths[k].source.name}@{k.src_node} -> {paths[k].destination.name}@{k.dst_node} "
                                f"{k.port}" for k in prober.judged()))
        assert got == wrong(), {
            "missed": [str(k) for k in wrong() - got],
            "false": [prober.loop.comparator.mismatches[k].describe() for k in got - wrong()]}
        features, kind = BROKEN[mode]
        assert {m.kind for m in prober.loop.comparator.mismatches.values()} == {kind}
        values = feature_values(prober)
        assert {(f, node) for f in features} <= {fn for fn, v in values.items() if v == 0}, (
            values, [(m.describe(), sorted(m.features)) for m in prober.loop.comparator.mismatches.values()])
        # nothing is blamed on the healthy node; on the faulty one, only what the fault breaks (a direction the node
        # does not enforce at all takes the features seen only through it along)
        blamed = {fn for fn, v in values.items() if v == 0}
        why = [(m.describe(), sorted(m.features)) for m in prober.loop.comparator.mismatches.values()]
        assert {n for _, n in blamed} == {node}, (values, why)
        if not features & {"ingress", "egress"}:
            assert blamed == {(f, node) for f in features}, (values, why)
        other = "node-2" if node == "node-1" else "node-1"
        assert values.get(("ingress", other)) == 1
    finally:
        if prober is not None:
            prober.stop()
        fault(cluster, "heal", node)


@pytest.mark.parametrize(("seconds", "late"), [(2, False), (12, True)], ids=["within-window", "slower-than-window"])
def test_slow_programming_is_late_not_a_mismatch(scenario: Any, cluster: Any, seconds: int, late: bool) -> None:
    """``slow-programming node-1 SECONDS``: rules reach node-1 late, so a fresh probe or responder pod there is
    unfiltered for a while (up to twice SECONDS: syncs queue). Converging within the retry window (6 s here: the
    probe pod connects again that long after it started) it is not flagged at all; slower, the late check (30 s
    after the pod started) agrees and the path is *late*, counted apart, never a mismatch. Paths that touch only
    node-2 are judged as usual."""
    fault(cluster, "slow-programming", "node-1", str(seconds))
    prober = None
    try:
        prober = run_cycles(scenario, probe_namespaces=(NS,), probe_late_seconds=30.0)
        assert not prober.mismatched(), [m.describe() for m in prober.loop.comparator.mismatches.values()]
        late_paths = {k for k, (_, _, outcome) in prober.loop.observations.items() if outcome is Outcome.LATE}
        late_count = sum(s.value for s in _samples(prober, "netpol_auditor_probes_late"))
        if late:
            assert late_paths and late_count >= len(late_paths)
            assert all("node-1" in (k.src_node, k.dst_node) for k in late_paths), late_paths
            states = prober.loop.planner.path_states()
            assert any(state == ("late", "programming_late") for state in states) or late_count, states
        else:
            assert not late_paths and late_count == 0
        judged = prober.judged()
        assert any(k.src_node == k.dst_node == "node-2" for k in judged)
    finally:
        if prober is not None:
            prober.stop()
        fault(cluster, "heal", "node-1")
