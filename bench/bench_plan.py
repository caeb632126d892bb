"""Probe planning at scale: the real planner on the real index, over bench/generate.py clusters.

Measures, in CPU seconds (process time) beside wall time:
- *first plan*: `ProbePlanner.update` from a snapshot of a freshly built index (every group and path computed);
- *round, nothing changed*: what the probe loop does each round when no event arrived: snapshot, update, next_round;
- *round after one relabel*: the same after one pod moved to another app (a new selector view);
- *worst event-loop block*: the planning steps run as the operator runs them (snapshot on the event loop, update in
  a worker thread, next_round on the loop) while a ticker on the loop records its largest lateness;
and the probe economy: paths per full cycle against all pod pairs times ports, and the rounds a full cycle takes
with the default budget (each round probes at most max_pods pods x targets_per_pod paths).

    .venv/bin/python bench/bench_plan.py --pods 2000 --namespaces 60 --policies 200
    .venv/bin/python bench/bench_plan.py --pods 10000 --namespaces 1000 --policies 2000
    .venv/bin/python bench/bench_plan.py --pods 50000 --namespaces 5000 --policies 10000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import Labels, Pod
from netpol_auditor.prober.loop import update_plan
from netpol_auditor.prober.plan import PlanBudget, ProbePlanner, snapshot

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def relabel(index: ReachabilityIndex, i: int) -> None:
    """Move one pod to another app (its selector view changes), as a rollout or a hand edit does."""
    refs = _refs(index)
    pod = index.get_pod(refs[(i * 7919) % len(refs)])
    assert pod is not None
    app = "search" if pod.labels.get("app") != "search" else "auth"
    index.upsert(dataclasses.replace(pod, labels=Labels({**pod.labels, "app": app})))


_REFS: list[Any] = []


def _refs(index: ReachabilityIndex) -> list[Any]:
    if not _REFS:
        _REFS.extend(index.endpoints())
    return _REFS


def cycle_rounds(planner: ProbePlanner, now: float) -> int:
    """Rounds a full cycle takes with the planner's budget, every probe answering at once."""
    rounds = 0
    while True:
        rnd = planner.next_round(now, new_cycle=rounds == 0)
        if not rnd.probes:
            break
        rounds += 1
        for path in rnd.paths:
            planner.record(path.key, now, settled=True)
        now += 1
        if planner.cycle_done():
            break
    return rounds


async def loop_block(index: ReachabilityIndex, planner: ProbePlanner, events: int) -> tuple[
        dict[str, float], dict[str, float]]:
    """The largest lateness of a 10 ms ticker on the event loop while the loop's planning steps run (per phase: the
    first plan, the relabel rounds), and the longest each on-loop step took."""
    worst: dict[str, float] = {}
    phase = "first plan"
    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[[], T]) -> T:
        out, wall, _ = timed(fn)
        steps[name] = max(steps.get(name, 0.0), wall)
        return out

    done = asyncio.Event()

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while not done.is_set():
            t = loop.time()
            await asyncio.sleep(0.01)
            worst[phase] = max(worst.get(phase, 0.0), loop.time() - t - 0.01)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    fresh = ProbePlanner(planner.budget)  # a first plan too, as at the operator's start
    await asyncio.to_thread(update_plan, fresh, step("snapshot", lambda: snapshot(index)), 0.0, True)
    step("next_round", lambda: fresh.next_round(0.0))
    phase = "relabel rounds"
    for i in range(events):
        step("relabel (the watch event)", lambda i=i: relabel(index, 1000 + i))
        inputs = step("snapshot", lambda: snapshot(index))
        await asyncio.to_thread(fresh.update, inputs, float(i))
        step("next_round", lambda i=i: fresh.next_round(float(i)))
        await asyncio.sleep(0.02)
    done.set()
    await tick
    return worst, steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--namespaces", type=int, default=60)
    ap.add_argument("--policies", type=int, default=200)
    ap.add_argument("--relabels", type=int, default=20, help="relabel rounds to time (median and max reported)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args(argv)

    objs = [o for o in (parse_object(d) for d in generate(args.pods, args.namespaces, args.policies)) if o]
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index = ReachabilityIndex.from_objects(objs)
    del objs
    # as the operator does after its initial listing (controller/app.py settle_memory): the long-lived heap leaves
    # the collector's full passes, which would otherwise hold the loop for as long as they take
    gc.collect()
    gc.freeze()
    budget = PlanBudget()
    planner = ProbePlanner(budget)
    inputs, snap_wall, _ = timed(lambda: snapshot(index))
    _, first_wall, first_cpu = timed(lambda: planner.update(inputs, 0.0))
    planner.next_round(0.0)
    plan = planner.paths_plan
    paths = len(plan.paths)
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024

    def round_(now: float) -> Any:
        planner.update(snapshot(index), now)
        return planner.next_round(now)

    idle = [timed(lambda: round_(1.0)) for _ in range(5)]
    relabels = []
    for i in range(args.relabels):
        relabel(index, i)
        relabels.append(timed(lambda i=i: round_(2.0 + i)))
    cycle_planner = ProbePlanner(budget)
    cycle_planner.update(snapshot(index), 0.0)
    rounds = cycle_rounds(cycle_planner, 0.0)
    worst, steps = asyncio.run(loop_block(index, planner, 5))

    endpoints = [p for p in index.pods() if isinstance(p, Pod) and p.is_endpoint]
    ports = {k.port for k in plan.paths}
    all_pairs = len(endpoints) * (len(endpoints) - 1) * max(len(ports), 1)
    relabel_cpu = sorted(c for _, _, c in relabels)
    result = {
        "pods": args.pods, "namespaces": args.namespaces, "policies": args.policies,
        "groups": len(plan.groups), "mode": plan.mode, "paths": paths,
        "snapshot_wall_s": round(snap_wall, 4),
        "first_plan_wall_s": round(first_wall, 3), "first_plan_cpu_s": round(first_cpu, 3),
        "idle_round_cpu_s": round(max(c for _, _, c in idle), 4),
        "relabel_round_cpu_p50_s": round(relabel_cpu[len(relabel_cpu) // 2], 4),
        "relabel_round_cpu_max_s": round(relabel_cpu[-1], 4),
        "relabel_round_wall_max_s": round(max(w for _, w, _ in relabels), 4),
        "worst_loop_block_s": round(max(worst.values()), 4),
        "worst_loop_block_by_phase_s": {k: round(v, 4) for k, v in worst.items()},
        "loop_steps_max_s": {k: round(v, 4) for k, v in steps.items()},
        "all_pairs_x_ports": all_pairs, "economy": round(all_pairs / max(paths, 1), 1),
        "cycle_rounds": rounds,
        "plan_rss_growth_mib": round(rss, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:28} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
