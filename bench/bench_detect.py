"""Time to detect and time to clear, per fault class, on the local cluster with kube-router.

The scenario is localcluster/faultmodel.py's (servers, clients and other pods on two nodes; policies with a named
port, an endPort range, UDP and an ipBlock ``except``). One probe loop runs with the default settings (only the
probed namespace is narrowed to the scenario's) and with the index kept in sync by re-listing every second, as in
tests/prober/harness.py. For each fault, ``--runs`` times:

* wait until a probe cycle completed with no mismatch (healthy);
* inject the fault (``python -m localcluster fault ...``) at t0; *detect* is the time until the first mismatch on
  a path the fault makes wrong (faultmodel.ClusterModel), *all* until every such path the plan covers is flagged;
* heal at t1; *clear* is the time until no mismatch is left.

The fault is injected at a random point of the loop's cycle (the previous run's clear), as a real one would be.

    .venv/bin/python bench/bench_detect.py [--runs 3] [--faults ignore-end-port:node-1,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from localcluster.faultmodel import SCENARIO_FAULTS, ClusterModel, fault_args, scenario_objects, stand_in  # noqa: E402

from localcluster import cluster as lc  # noqa: E402
from netpol_auditor.controller.settings import Settings  # noqa: E402
from netpol_auditor.prober.plan import PathKey  # noqa: E402
from prober.harness import RunningProber, apply, install_crd, list_objects, pods_running, wait_for  # noqa: E402

NS = "pf-detect"


def fault(state: Path, mode: str, node: str | None = None) -> None:
    args = fault_args(mode, node) if node else [mode]
    subprocess.run([sys.executable, "-m", "localcluster", "--state", str(state), "fault", *args], check=True,
                   capture_output=True, cwd=ROOT, timeout=180)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(prober: RunningProber, api: Any, state: Path, mode: str, node: str, timeout: float) -> dict[str, float]:
    wait_for("a healthy cycle", lambda: prober.cycles() >= 1 and not prober.mismatched(), timeout=timeout)
    t0 = time.monotonic()
    fault(state, mode, node)
    modes = json.loads((state / "nodes.json").read_text())["modes"]
    model = ClusterModel(list_objects(api), modes)

    def wrong() -> set[PathKey]:
        plan = prober.loop.planner.paths_plan.paths
        return {k for k, p in plan.items() if model.wrong(stand_in(p.source, k.src_node),
                                                          stand_in(p.destination, k.dst_node), k.port,
                                                          k.src_node, k.dst_node)}

    out: dict[str, float] = {}
    while time.monotonic() - t0 < timeout:
        got = prober.mismatched()
        want = wrong()
        if "detect" not in out and got & want:
            out["detect"] = time.monotonic() - t0
        if want and want <= got:
            out["all"] = time.monotonic() - t0
            break
        time.sleep(0.5)
    false = [prober.loop.comparator.mismatches[k].describe() for k in prober.mismatched() - wrong()]
    t1 = time.monotonic()
    fault(state, "heal", node)
    while time.monotonic() - t1 < timeout:
        if not prober.mismatched():
            out["clear"] = time.monotonic() - t1
            break
        time.sleep(0.5)
    if false:
        print(f"  false mismatches under {mode} on {node}: {false}", file=sys.stderr)
        out["false"] = len(false)
    return out


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--faults", default=",".join(f"{m}@{n}" for m, n in SCENARIO_FAULTS),
                    help="comma-separated MODE@NODE (default: every fault of faultmodel.SCENARIO_FAULTS)")
    ap.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    ap.add_argument("--interval", type=float, default=None, help="probe interval (default: the operator's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    faults = [tuple(f.split("@")) for f in args.faults.split(",")]

    # a SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: the table of what was measured, then the cluster down
    signal.signal(signal.SIGTERM, _interrupt)
    state = Path(tempfile.mkdtemp(prefix="bench-detect-"))
    cluster = lc.up(lc.ClusterConfig(state=state, api_port=0, nodes=2, enforcer="kube-router"))
    try:
        install_crd(cluster)
        apply(cluster, "", text="\n---\n".join(json.dumps(o) for o in [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, *scenario_objects(NS)]))
        wait_for("scenario pods running", lambda: pods_running(cluster, [NS]), timeout=120)
        api = cluster.api_client()
        kw: dict[str, Any] = {"probe_enabled": True, "probe_namespaces": (NS,)}
        if args.interval is not None:
            kw["probe_interval_seconds"] = args.interval
        settings = Settings(**kw)
        prober = RunningProber.start(api, settings)
        results: dict[str, list[dict[str, float]]] = {}
        cpu0, load0 = time.process_time(), os.getloadavg()
        interrupted = False
        try:
            for run in range(args.runs):
                for mode, node in faults:
                    r = measure(prober, api, state, mode, node, args.timeout)
                    results.setdefault(f"{mode}@{node}", []).append(r)
                    print(f"run {run + 1} {mode} on {node}: {r}", flush=True)
        except KeyboardInterrupt:
            interrupted = True  # report what was measured; the cluster still comes down below
            print("interrupted: the table holds the runs completed so far", file=sys.stderr)
        finally:
            prober.stop()
        report = {"settings": {"interval": settings.probe_interval_seconds, "settle": settings.probe_settle_seconds,
                               "retry": settings.probe_retry_seconds, "late": settings.probe_late_seconds,
                               "max_pods": settings.probe_max_pods},
                  "runs": results, "cpu_seconds": time.process_time() - cpu0,
                  "load_average": {"start": load0, "end": os.getloadavg()}, "interrupted": interrupted}
        print("\n| fault | detect p50 / p95 | all flagged p50 / p95 | clear p50 / p95 | runs |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, rs in results.items():
            cells = []
            for what in ("detect", "all", "clear"):
                vals = [r[what] for r in rs if what in r]
                cells.append(f"{percentile(vals, 0.5):.0f} / {percentile(vals, 0.95):.0f} s" if len(vals) == len(rs)
                             else f"missing in {len(rs) - len(vals)} runs")
            print(f"| {name} | {' | '.join(cells)} | {len(rs)} |")
        print(f"\nprober CPU (this process): {report['cpu_seconds']:.1f} s; load average {load0[0]:.1f} at the "
              f"start, {os.getloadavg()[0]:.1f} at the end")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        lc.down(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
