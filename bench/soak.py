"""Churn soak: the real operator probing kube-router on the local cluster while the workload keeps changing.

The operator is the real ``python -m netpol_auditor.controller --probe`` process (= ``netpol-auditor run``), probing
only the soak's namespaces (``soak-*``). A seeded churn driver makes one change every ``--change-every`` seconds:
pods created, deleted and relabelled, namespaces created (with a pod or two), deleted and relabelled, NetworkPolicies
created, modified and deleted (ingress and egress, numeric and named ports, an ``endPort`` range, a UDP port, pod
and namespace selectors). Everything about the operator is read from outside it: RSS and CPU time from /proc;
probes, cycles, mismatches, inconclusive paths and the event loop's lag from /metrics and its log; the mismatches
themselves (source -> destination, port, nodes) from the Events it posts (``PolicyNotEnforced``,
``AllowedTrafficDropped``).

Every mismatch is a false alarm here unless it has the shape of one of kube-router v2.1.0's known gaps, which the
generated policies stay out of (bench/soak_churn.py lists them); those are listed apart, and every mismatch comes with
the changes made in the minute before it. The workload is bench/soak_churn.py, the reading of the operator
bench/soak_observe.py.

    .venv/bin/python bench/soak.py --duration 300 --seed 1 --json /tmp/soak.json
    .venv/bin/python bench/soak.py --state /tmp/netpol-soak --duration 3600   # reuse (or create) that cluster

Exit status: 0 when no mismatch outside the known gaps was raised, the operator never exited and no probe pod was
left behind; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # localcluster/: test and bench infrastructure, never installed

from kubernetes.client.exceptions import ApiException  # noqa: E402

from localcluster import cluster as lc  # noqa: E402
from soak_churn import PREFIX, ChurnDriver, Limits, changes_before, core_api, known_gap  # noqa: E402
from soak_observe import (  # noqa: E402
    DetectedCounter,
    MismatchEvents,
    OperatorUnderTest,
    by_label,
    loop_lag,
    proc_stats,
    total,
)

__all__ = ["SoakConfig", "install_crd", "main", "problems", "render", "run_soak"]

CRD = ROOT / "charts" / "netpol-auditor" / "crds" / "proberuns.yaml"
MANAGED_BY = "app.kubernetes.io/managed-by=netpol-auditor"


@dataclass(frozen=True)
class SoakConfig:
    duration: float = 3600.0
    change_every: float = 3.0
    seed: int = 1
    sample_every: float = 10.0
    base_namespaces: int = 4
    pods_per_namespace: int = 3
    max_pods_per_namespace: int = 5
    max_dynamic_namespaces: int = 2
    max_policies_per_namespace: int = 4
    # the operator's prober: quick cycles, its own defaults for the settle time and the retry window
    probe_interval: float = 2.0
    probe_settle: float = 5.0
    probe_retry: float = 10.0
    probe_max_pods: int = 12
    quiesce_timeout: float = 600.0  # after the churn: wait this long at most for a complete cycle of the final state
    canary: bool = False  # after the churn: make a real enforcement gap on purpose, which must be detected
    canary_timeout: float = 180.0
    extra_operator_args: tuple[str, ...] = ()

    def limits(self) -> Limits:
        return Limits(self.base_namespaces, self.pods_per_namespace, self.max_pods_per_namespace,
                      self.max_dynamic_namespaces, self.max_policies_per_namespace)

    def operator_args(self) -> list[str]:
        """The prober's options: only the soak's namespaces, quick cycles; and every mismatch reaches an Event (the
        soak reads source -> destination and nodes from them)."""
        return ["--probe", "--probe-namespaces", f"{PREFIX}*", "--probe-interval", str(self.probe_interval),
                "--probe-settle", str(self.probe_settle), "--probe-retry", str(self.probe_retry),
                "--probe-max-pods", str(self.probe_max_pods), "--events-per-minute", "1000", "--events-dedup", "60",
                *self.extra_operator_args]


def operator_source() -> str:
    """The commit the operator runs from, and the files under operator/ that differ from it (the soak runs the
    working tree)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "operator").splitlines()
    return git("rev-parse", "--short", "HEAD").strip() + (f" + {len(changed)} changed file(s) under operator/: "
                                                  f"{', '.join(line[3:] for line in changed)}" if changed else "")


def install_crd(cluster: lc.Cluster) -> None:
    cluster.kubectl("apply", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/proberuns.netpol-auditor.io", "--timeout=60s")


def soak_namespaces(core: Any) -> list[str]:
    return sorted(ns.metadata.name for ns in core.list_namespace().items if ns.metadata.name.startswith(PREFIX))


def delete_soak_namespaces(core: Any, timeout: float = 180.0) -> None:
    """Delete every ``soak-*`` namespace and wait until they are gone."""
    for ns in soak_namespaces(core):
        try:
            core.delete_namespace(ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
    deadline = time.monotonic() + timeout
    while soak_namespaces(core):
        if time.monotonic() > deadline:
            raise RuntimeError(f"soak namespaces still there after {timeout:.0f}s: {soak_namespaces(core)}")
        time.sleep(1)


def probe_pods(core: Any) -> list[str]:
    return [f"{p.metadata.namespace}/{p.metadata.name}"
            for p in core.list_pod_for_all_namespaces(label_selector=MANAGED_BY).items]


@dataclass
class _Poll:
    """What the soak reads from the operator while it runs."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    detected: DetectedCounter = field(default_factory=DetectedCounter)
    max_concurrent: float = 0.0
    coverage: list[float] = field(default_factory=list)
    scrape_failures: int = 0
    probes_at_first_change: float | None = None


POLL_FAMILIES = ("netpol_auditor_mismatches", "netpol_auditor_mismatches_detected_total",
                 "netpol_auditor_probes_total", "netpol_auditor_probe_coverage_ratio")


def _poll(op: OperatorUnderTest, state: _Poll, now: float) -> dict[str, list[Any]] | None:
    op.follow_log(now)
    try:
        families = op.scrape(*POLL_FAMILIES)
    except OSError:
        state.scrape_failures += 1
        return None
    state.detected.update(families)
    state.max_concurrent = max(state.max_concurrent, total(families, "netpol_auditor_mismatches"))
    if families.get("netpol_auditor_probe_coverage_ratio"):
        state.coverage.append(total(families, "netpol_auditor_probe_coverage_ratio"))
    return families


def _sample(op: OperatorUnderTest, state: _Poll, families: dict[str, list[Any]], now: float) -> None:
    stats = proc_stats(op.pid)
    state.samples.append({
        "t": round(now, 1),
        "rss_mib": round(stats["rss_mib"], 1),
        "cpu_seconds": round(stats["cpu_seconds"], 2),
        "probes": int(total(families, "netpol_auditor_probes", "netpol_auditor_probes_total")),
        "mismatches": int(total(families, "netpol_auditor_mismatches")),
        "cycles": op.cycles[-1][1]["cycle"] if op.cycles else 0,
        "coverage": state.coverage[-1] if state.coverage else None,
    })


def run_soak(cluster: lc.Cluster, config: SoakConfig, workdir: Path,
             progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run the soak against ``cluster`` (localcluster, kube-router): populate, start the operator, churn for
    ``config.duration`` seconds while polling, let a last cycle judge the final state, stop the operator, check that
    its probe pods are gone and remove the soak's namespaces. Returns the report (see `problems`)."""
    api = cluster.api_client()
    core = core_api(api)
    nodes = sorted(n.metadata.name for n in core.list_node().items)
    install_crd(cluster)
    delete_soak_namespaces(core)  # leftovers of an interrupted run
    started = time.monotonic()
    driver = ChurnDriver(api, config.limits(), config.seed, nodes, started)
    driver.populate()
    driver.wait_running()
    progress(f"workload: {len(driver.world.namespaces)} namespaces, {len(driver.world.pods)} pods, "
             f"{len(driver.world.policies)} policies on {', '.join(nodes)}")
    events = MismatchEvents(api, started)
    op = OperatorUnderTest(cluster.kubeconfig, workdir / "operator.log", config.operator_args(), ROOT)
    state = _Poll()
    report: dict[str, Any] = {"seed": config.seed, "change_every_seconds": config.change_every, "nodes": nodes,
                              "operator_log": str(op.log), "operator_source": operator_source(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    churn_started = started
    try:
        op.wait_ready()
        families = _wait_first_cycle(op, state, started, config)
        progress(f"operator ready, first probe cycle complete after {time.monotonic() - started:.0f}s")
        churn_started = time.monotonic()
        report["first_cycle_seconds"] = round(churn_started - started, 1)
        state.probes_at_first_change = total(families, "netpol_auditor_probes", "netpol_auditor_probes_total")
        _churn(driver, op, state, config, churn_started, progress)
        report["churn_seconds"] = round(time.monotonic() - churn_started, 1)
        report["quiesce"] = _quiesce(op, state, started, config)
        progress(f"after the churn: {report['quiesce']}")
        try:
            final = op.scrape()
        except OSError:  # the operator is gone: what was polled last stands
            final = {}
        state.detected.update(final)
        op.follow_log(time.monotonic() - started)
        report.update(_final_metrics(final, op, state))
        report["operator_exited_during_run"] = None if op.alive() else op.proc.returncode
        if config.canary and op.alive():
            report["canary"] = _canary(cluster, driver, op, events, _Poll(), config)
            progress(f"canary: {report['canary']}")
    finally:
        exit_code = op.stop()
        events.poll()
        events.stop()
        report["operator_exit_code"] = exit_code
        report["probe_pods_left"] = _wait_no_probe_pods(core)
        delete_soak_namespaces(core)
    report.update(_summary(driver, state, op, events, report, churn_started - started))
    return report


def _wait_first_cycle(op: OperatorUnderTest, state: _Poll, started: float, config: SoakConfig) -> dict[str, Any]:
    deadline = time.monotonic() + max(300.0, config.quiesce_timeout)
    while True:
        now = time.monotonic() - started
        families = _poll(op, state, now)
        if families is not None and op.cycles:
            _sample(op, state, families, now)
            return families
        if not op.alive():
            raise RuntimeError(f"the operator exited ({op.proc.returncode}); see {op.log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no complete probe cycle before the churn; see {op.log}")
        time.sleep(1)


def _churn(driver: ChurnDriver, op: OperatorUnderTest, state: _Poll, config: SoakConfig, churn_started: float,
           progress: Callable[[str], None]) -> None:
    next_change = churn_started
    next_poll = churn_started
    next_sample = churn_started + config.sample_every
    next_progress = churn_started + 60
    end = churn_started + config.duration
    while time.monotonic() < end and op.alive():
        now = time.monotonic()
        if now >= next_change:
            driver.change()
            next_change += config.change_every
            if next_change < now:  # fell behind (a slow API call): keep the rate, skip the missed slots
                next_change = now + config.change_every
        if now >= next_poll:
            families = _poll(op, state, now - driver.started)
            next_poll = now + 2.0
            if families is not None and now >= next_sample:
                _sample(op, state, families, now - driver.started)
                next_sample += config.sample_every
        if now >= next_progress:
            s = state.samples[-1] if state.samples else {}
            made = sum(c.kind != "initial" for c in driver.log)
            progress(f"{now - churn_started:.0f}s: {made} changes, cycle {s.get('cycles')}, "
                     f"{s.get('probes')} probes, {s.get('mismatches')} mismatches now, "
                     f"{state.detected.total:.0f} detected, RSS {s.get('rss_mib')} MiB")
            next_progress += 60
        time.sleep(max(0.0, min(next_change, next_poll) - time.monotonic()))


def _quiesce(op: OperatorUnderTest, state: _Poll, started: float, config: SoakConfig) -> dict[str, Any]:
    """After the last change: wait for a probe cycle that started after it and completed (its paths were judged
    against the final state)."""
    t0 = time.monotonic()
    base = op.cycles[-1][1]["cycle"] if op.cycles else 0
    while time.monotonic() - t0 < config.quiesce_timeout and op.alive():
        _poll(op, state, time.monotonic() - started)
        done = [c for _, c in op.cycles if c["cycle"] >= base + 2]  # base + 1 may have begun during the churn
        if done:
            return {"cycle": done[0]["cycle"], "seconds": round(time.monotonic() - t0, 1), **{
                k: done[0][k] for k in ("coverage", "judged", "inconclusive", "mismatches")}}
        time.sleep(1)
    return {"cycle": None, "seconds": round(time.monotonic() - t0, 1)}


def _fault(cluster: lc.Cluster, verb: str, node: str) -> None:
    subprocess.run([sys.executable, "-m", "localcluster", "--state", str(cluster.state), "fault", verb, node],
                   check=True, capture_output=True, cwd=ROOT, timeout=180)


def _canary(cluster: lc.Cluster, driver: ChurnDriver, op: OperatorUnderTest, events: MismatchEvents, state: _Poll,
            config: SoakConfig) -> dict[str, Any]:
    """A real enforcement gap made on purpose once the churn is over, so that the soak's zero means something: with
    kube-router stopped on the node of a pod of a base namespace (``fault stop-enforcer``) and a deny-all-ingress
    policy put in that namespace, paths into that pod are open though predicted denied, and must come back as a
    mismatch Event on that node; then the node is healed and the mismatches must clear."""
    started = driver.started
    ns, pod = next(k for k in sorted(driver.world.pods) if k[0] not in driver.world.dynamic)
    node = driver.world.pods[(ns, pod)]["node"]
    out: dict[str, Any] = {"namespace": ns, "node": node, "started_at": round(time.monotonic() - started, 1)}
    t0 = time.monotonic()
    _fault(cluster, "stop-enforcer", node)
    try:
        driver.net.create_namespaced_network_policy(ns, {"metadata": {"name": "canary-deny"},
                                                         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
        while time.monotonic() - t0 < config.canary_timeout and op.alive():
            _poll(op, state, time.monotonic() - started)  # the canary's own poll state: the soak's totals stay
            hits = [m for m in events.items() if m["seen_at"] >= out["started_at"] and m["dst_node"] == node
                    and m["destination"].startswith(f"{ns}/") and m["kind"] == "unexpectedly_allowed"]
            if hits:
                out["detected_seconds"] = round(time.monotonic() - t0, 1)
                out["example"] = hits[0]["message"]
                break
            time.sleep(1)
    finally:
        _fault(cluster, "heal", node)
        with contextlib.suppress(ApiException):
            driver.net.delete_namespaced_network_policy("canary-deny", ns)
    healed = time.monotonic()
    while time.monotonic() - healed < config.canary_timeout and op.alive():
        with contextlib.suppress(OSError):
            if total(op.scrape("netpol_auditor_mismatches"), "netpol_auditor_mismatches") == 0:
                out["cleared_seconds"] = round(time.monotonic() - healed, 1)
                break
        time.sleep(2)
    out["mismatch_events"] = len([m for m in events.items() if m["seen_at"] >= out["started_at"]])
    return out


def _final_metrics(families: dict[str, list[Any]], op: OperatorUnderTest, state: _Poll) -> dict[str, Any]:
    probes = by_label(families, "netpol_auditor_probes", "netpol_auditor_probes_total", "result")
    return {
        "probes": {"total": int(sum(probes.values())), "by_result": {k: int(v) for k, v in sorted(probes.items())},
                   "after_first_change": int(sum(probes.values()) - (state.probes_at_first_change or 0))},
        "inconclusive_by_reason": {k: int(v) for k, v in sorted(by_label(
            families, "netpol_auditor_probes_inconclusive", "netpol_auditor_probes_inconclusive_total",
            "reason").items())},
        "probe_errors_by_stage": {k: int(v) for k, v in sorted(by_label(
            families, "netpol_auditor_probe_errors", "netpol_auditor_probe_errors_total", "stage").items())},
        "index_events": int(total(families, "netpol_auditor_index_events", "netpol_auditor_index_events_total")),
        "plan_self_check_failures": int(total(families, "netpol_auditor_probe_plan_self_check_failures",
                                              "netpol_auditor_probe_plan_self_check_failures_total")),
        "event_loop_lag": loop_lag(families, op.loop_held),
    }


def _wait_no_probe_pods(core: Any, timeout: float = 90.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = probe_pods(core)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = probe_pods(core)
    return left


def _summary(driver: ChurnDriver, state: _Poll, op: OperatorUnderTest, events: MismatchEvents,
             report: dict[str, Any], churn_at: float) -> dict[str, Any]:
    changes = Counter(c.kind for c in driver.log if not c.error and c.kind != "initial")
    errors = Counter(c.kind for c in driver.log if c.error)
    canary_at = (report.get("canary") or {}).get("started_at", math.inf)
    mismatches = [m for m in events.items() if m["seen_at"] < canary_at]  # the canary's are its own
    for m in mismatches:
        m["known_gap"] = known_gap(m, driver.world)
        ns = {m["source"].split("/")[0], m["destination"].split("/")[0]}
        m["changes_before"] = changes_before(driver.log, m["seen_at"], ns)
    gap = [m for m in mismatches if m["known_gap"]]
    false = [m for m in mismatches if not m["known_gap"]]
    rss = [s["rss_mib"] for s in state.samples]
    cpu = [s["cpu_seconds"] for s in state.samples]
    span = state.samples[-1]["t"] - state.samples[0]["t"] if len(state.samples) > 1 else 0.0
    churn_end = churn_at + (report.get("churn_seconds") or 0.0)
    cycles_during = [c for t, c in op.cycles if churn_at < t <= churn_end]
    return {
        "duration_seconds": report.get("churn_seconds"),
        "changes": {"total": sum(changes.values()), "by_type": dict(sorted(changes.items())),
                    "api_errors": dict(sorted(errors.items()))},
        "probe_cycles": {"total": op.cycles[-1][1]["cycle"] if op.cycles else 0,
                         "completed_during_churn": len(cycles_during),
                         "judged_paths_in_cycles_during_churn": sum(int(c["judged"]) for c in cycles_during),
                         "coverage_min": min(state.coverage) if state.coverage else None,
                         "coverage_last": state.coverage[-1] if state.coverage else None},
        "mismatches": {
            "detected_total": int(state.detected.total),
            "detected_by_kind": dict(state.detected.by_kind),
            "max_concurrent": int(state.max_concurrent),
            "events": len(mismatches),
            "false": len(false),
            "known_gap": len(gap),
            "false_list": false,
            "known_gap_list": gap,
        },
        "operator_restarts": max(0, op.runs_started - 1),  # of its prober; the process is the one started here
        "scrape_failures": state.scrape_failures,
        "rss_mib": {"min": min(rss, default=None), "max": max(rss, default=None),
                    "last": rss[-1] if rss else None},
        "cpu_seconds": {"total": cpu[-1] if cpu else None,
                        "per_minute": round((cpu[-1] - cpu[0]) / span * 60, 2) if span else None},
        "log_errors": op.log_errors[:20],
        "samples": state.samples,
        "change_log": [c.__dict__ for c in driver.log],
    }


def problems(report: dict[str, Any]) -> list[str]:
    """What makes the soak fail: a mismatch outside the known gap (as an Event, or counted without one), an operator
    that exited or restarted, probe pods left behind."""
    out = []
    mm = report["mismatches"]
    for m in mm["false_list"]:
        out.append(f"false mismatch: {m['message']}")
    if mm["detected_total"] and not mm["events"]:
        out.append(f"{mm['detected_total']} mismatch(es) counted in netpol_auditor_mismatches_detected_total, "
                   "none posted as an Event")
    if report.get("operator_exited_during_run") is not None:
        out.append(f"the operator exited during the run ({report['operator_exited_during_run']})")
    if report.get("operator_restarts"):
        out.append(f"the operator restarted {report['operator_restarts']} time(s)")
    canary = report.get("canary")
    if canary is not None and "detected_seconds" not in canary:
        out.append("the canary (kube-router stopped on a node under a deny-all policy) was not detected: the soak "
                   "cannot see mismatches")
    if canary is not None and "cleared_seconds" not in canary:
        out.append("the canary's mismatches did not clear after kube-router was healed")
    if report.get("probe_pods_left"):
        out.append(f"probe pods left after the operator stopped: {report['probe_pods_left']}")
    return out


def render(report: dict[str, Any]) -> str:
    """The report in a few lines (the JSON has everything, samples and the change log included)."""
    mm, lag, cyc = report["mismatches"], report["event_loop_lag"], report["probe_cycles"]
    lines = [
        f"churn soak, seed {report['seed']}, started {report['started']}: {report['duration_seconds']}s of churn, one "
        f"change every {report['change_every_seconds']}s; nodes {', '.join(report['nodes'])}; operator from "
        f"{report['operator_source']}",
        f"changes: {report['changes']['total']} {report['changes']['by_type']}"
        + (f"; API errors {report['changes']['api_errors']}" if report["changes"]["api_errors"] else ""),
        f"probe cycles: {cyc['total']} ({cyc['completed_during_churn']} completed during the churn, "
        f"{cyc['judged_paths_in_cycles_during_churn']} paths judged in them); coverage min {cyc['coverage_min']}, "
        f"last {cyc['coverage_last']}; after the churn: {report['quiesce']}",
        f"probes: {report['probes']['total']} {report['probes']['by_result']} "
        f"({report['probes']['after_first_change']} after the first change)",
        f"inconclusive by reason: {report['inconclusive_by_reason']}",
        f"mismatches raised: {mm['detected_total']} (max {mm['max_concurrent']} at once); as Events: "
        f"{mm['events']}, false {mm['false']}, kube-router's known gap {mm['known_gap']}",
    ]
    for m in mm["false_list"] + mm["known_gap_list"]:
        tag = f"known gap ({m['known_gap']})" if m["known_gap"] else "FALSE"
        lines.append(f"  {tag} at t={m['seen_at']}s: {m['message']}")
        lines.extend(f"    {c}" for c in m["changes_before"])
    lines += [
        f"operator RSS MiB: min {report['rss_mib']['min']}, max {report['rss_mib']['max']}, last "
        f"{report['rss_mib']['last']}; CPU {report['cpu_seconds']['total']} s total, "
        f"{report['cpu_seconds']['per_minute']} s per minute",
        f"event loop lag: p50 {lag['p50_seconds']} s, p99 {lag['p99_seconds']} s, max {lag['max_seconds']} s "
        f"(highest bucket <= {lag['max_at_most_seconds']} s; {lag['over_100ms']} of {lag['observations']} over "
        f"100 ms)",
        *([f"canary: {report['canary']}"] if "canary" in report else []),
        f"probe errors by stage: {report['probe_errors_by_stage']}; operator restarts "
        f"{report['operator_restarts']}, exit code {report['operator_exit_code']}; probe pods left "
        f"{len(report['probe_pods_left'])}; log errors {len(report['log_errors'])}",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def local_cluster(state: Path | None, keep: bool) -> Iterator[lc.Cluster]:
    """The local cluster in ``state`` (reused as is when it runs with kube-router and 2 nodes), or a new one in a
    temporary state directory. A cluster started here is torn down at the end unless ``keep``."""
    path = (state or Path(f"/tmp/netpol-soak-{os.getpid()}")).resolve()
    existing = lc.Cluster.load(path)
    c = lc.up(lc.ClusterConfig(state=path, api_port=0, nodes=2, enforcer="kube-router"))
    started_here = not c.reused or existing is None
    try:
        yield c
    finally:
        if started_here and not keep:
            lc.down(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of churn (default 3600)")
    parser.add_argument("--change-every", type=float, default=3.0, help="seconds between changes (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the churn (default 1)")
    parser.add_argument("--sample-every", type=float, default=10.0,
                        help="seconds between RSS/CPU samples of the operator (default 10)")
    parser.add_argument("--state", type=Path, help="localcluster state directory: reuse the cluster running there "
                        "or create one (default: a new one in /tmp/netpol-soak-<pid>, torn down at the end)")
    parser.add_argument("--keep", action="store_true", help="leave a cluster this run started running")
    parser.add_argument("--json", type=Path, help="write the full report (samples and change log too) here")
    parser.add_argument("--workdir", type=Path, help="where the operator's log goes (default: a new temporary "
                        "directory)")
    parser.add_argument("--namespaces", type=int, default=SoakConfig.base_namespaces,
                        help=f"base namespaces, {SoakConfig.pods_per_namespace} pods each to start with (default "
                             f"{SoakConfig.base_namespaces}); up to {SoakConfig.max_dynamic_namespaces} others come "
                             "and go")
    parser.add_argument("--canary", action="store_true", help="after the churn, stop kube-router on a node under a "
                        "deny-all policy and check that the mismatch is detected and clears once healed")
    parser.add_argument("--probe-settle", type=float, default=SoakConfig.probe_settle)
    parser.add_argument("--probe-retry", type=float, default=SoakConfig.probe_retry)
    parser.add_argument("--probe-max-pods", type=int, default=SoakConfig.probe_max_pods)
    args = parser.parse_args(argv)
    config = SoakConfig(duration=args.duration, change_every=args.change_every, seed=args.seed,
                        sample_every=args.sample_every, probe_settle=args.probe_settle, probe_retry=args.probe_retry,
                        probe_max_pods=args.probe_max_pods, canary=args.canary, base_namespaces=args.namespaces)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="netpol-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)

    def progress(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    with local_cluster(args.state, args.keep) as c:
        progress(f"cluster {c.server} ({c.state}); operator log in {workdir}")
        report = run_soak(c, config, workdir, progress)
    report["problems"] = problems(report)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    for p in report["problems"]:
        print(f"PROBLEM: {p}")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
