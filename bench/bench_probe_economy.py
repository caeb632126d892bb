"""Probe economy: connections one full probe cycle makes vs. probing every pod pair, and whether the cycle still
finds every injected fault.

The cluster is bench/generate.py's synthetic one (default 200 pods). "All pairs" counts every ordered pair of
distinct endpoint pods times the ports the prober would probe for that pair. The faults are localcluster's fault
modes applied to a model of the dataplane (kube-router enforces a pod's ingress rules on the destination's node
and its egress rules on the source's node; localcluster/faults.py): a fault is *found* when at least one planned
probe observes something other than the prediction. The same fault modes are run for real, end to end, in
tests/prober/test_prober_cluster.py.

    .venv/bin/python bench/bench_probe_economy.py [--pods 200] [--namespaces 12] [--policies 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate
from netpol_auditor.engine import Verdict
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import Pod
from netpol_auditor.prober.plan import PathKey, PlanBudget, ProbePlanner, predict, prediction_snapshot

Fault = Callable[[PathKey, Verdict], bool]  # is the (predicted-denied) path open under the fault?


def _denying(v: Verdict) -> tuple[bool, bool]:
    return (v.egress is not None and not v.egress.allowed, v.ingress is not None and not v.ingress.allowed)


def stop_enforcer(node: str) -> Fault:
    def opened(k: PathKey, v: Verdict) -> bool:
        eg, ing = _denying(v)
        return (not eg or k.src_node == node) and (not ing or k.dst_node == node)

    return opened


def ignore_egress(node: str) -> Fault:
    def opened(k: PathKey, v: Verdict) -> bool:
        eg, ing = _denying(v)
        return eg and not ing and k.src_node == node

    return opened


def affected_pod_pairs(index: ReachabilityIndex, pods: list[Pod], ports_of: dict[tuple[str, str], list], fault: Fault,
                       group_of: dict[str, str]) -> int:
    """Pod-pair connections the fault makes wrong (ground truth over every pair), for the report."""
    n = 0
    for s in pods:
        for d in pods:
            if s.ref == d.ref:
                continue
            for port in ports_of.get((group_of[str(s.ref)], group_of[str(d.ref)]), []):
                v = index.verdict(s.ref, d.ref, port)
                if v.allowed is False and fault(PathKey("", "", port, s.node_name, d.node_name), v):
                    n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--namespaces", type=int, default=12)
    ap.add_argument("--policies", type=int, default=40)
    ap.add_argument("--pair-groups", type=int, default=PlanBudget.max_pair_groups,
                    help="up to this many probe groups every group pair is probed, beyond every decision (0: "
                         "decisions whatever the size)")
    ap.add_argument("--no-ground-truth", action="store_true", help="skip counting the pod pairs each fault affects")
    args = ap.parse_args(argv)

    objs = [o for o in (parse_object(d) for d in generate(args.pods, args.namespaces, args.policies)) if o]
    index = ReachabilityIndex.from_objects(objs)
    planner = ProbePlanner(PlanBudget(max_pair_groups=args.pair_groups))
    started = time.perf_counter()
    paths = planner.enumerate_paths(index)
    plan_seconds = time.perf_counter() - started

    endpoints = [p for p in index.pods() if p.is_endpoint]
    group_of = {str(ref): g.id for g in planner.paths_plan.groups.values()
                for refs in g.members_by_node.values() for ref in refs}
    # the ports a naive prober would try per pair: the same candidates the planner starts from, before it keeps
    # one port per port class
    candidates = ProbePlanner(PlanBudget(dedup_ports=False, placements="all")).enumerate_paths(index)
    ports_of: dict[tuple[str, str], list] = {}
    for k in candidates:
        ports_of.setdefault((k.src, k.dst), [])
        if k.port not in ports_of[(k.src, k.dst)]:
            ports_of[(k.src, k.dst)].append(k.port)
    all_pairs = sum(
        len(ports_of.get((group_of[str(s.ref)], group_of[str(d.ref)]), []))
        for s in endpoints for d in endpoints if s.ref != d.ref
    )
    nodes = sorted({p.node_name for p in endpoints})
    groups = len(planner.paths_plan.groups)
    denied = sum(1 for p in paths.values() if not p.predicted)
    print(f"cluster: {len(endpoints)} pods, {len(index.policies())} policies, {index.stats().classes} index classes, "
          f"{groups} probe groups ({planner.paths_plan.mode} mode), {len(nodes)} nodes")
    print(f"full cycle: {len(paths)} connections ({denied} predicted denied), planned in {plan_seconds * 1000:.0f} ms")
    print(f"all pod pairs x ports: {all_pairs} connections -> {all_pairs / len(paths):.1f}x fewer")

    # Faults: each node's enforcer stopped, each node's egress ignored.
    snap = prediction_snapshot(index)
    ips = {p.ref: p.pod_ips for p in index.pods()}
    verdicts = {}
    for k, p in paths.items():
        src, dst = planner.group(k.src), planner.group(k.dst)
        assert src is not None and dst is not None
        verdicts[k] = predict(snap, src, dst, k.port, ips[p.source], ips[p.destination])
    found_all = True
    for name, make in (("stop-enforcer", stop_enforcer), ("ignore-egress", ignore_egress)):
        for node in nodes:
            fault = make(node)
            flagged = [k for k, v in verdicts.items() if v.allowed is False and fault(k, v)]
            if args.no_ground_truth:
                print(f"  fault {name} {node}: {len(flagged)} probes flag it")
                continue
            wrong = affected_pod_pairs(index, endpoints, ports_of, fault, group_of)
            if not wrong:
                status = "no effect (no policy decided on this node)"
            else:
                status = f"found by {len(flagged)} probes" if flagged else "MISSED"
                found_all &= bool(flagged)
            print(f"  fault {name} {node}: {wrong} pod-pair connections wrong; {status}")
    print("every injected fault found" if found_all else "SOME FAULT MISSED")
    return 0 if found_all and all_pairs / len(paths) >= 20 else 1


if __name__ == "__main__":
    raise SystemExit(main())
