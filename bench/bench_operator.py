"""Operator benchmark: memory and CPU with a 10k-pod cluster's worth of objects in the real API server, and the lag
from an object change to the metric update.

The pods use a scheduler name nobody serves and get their status (Running, a pod IP) from this script through the
status subresource, so 10k endpoints exist without 10k network namespaces. The operator is the real
``python -m netpol_auditor.controller`` (= ``netpol-auditor run``) process; everything is read from outside it:
RSS and CPU time from /proc, metrics from /metrics.

    python bench/bench_operator.py --kubeconfig /tmp/netpol-auditor-localcluster/admin.kubeconfig [--pods 10000]

Lags measured:
* index lag: API write -> ``netpol_auditor_index_last_event_timestamp_seconds`` (the index and its object/event
  series are updated), for pod relabels, one at a time;
* paths lag: API write -> the aggregate series (``netpol_auditor_paths`` and the per-policy series, one snapshot)
  updated, for policy changes (includes the debounce delay and the recompute of every path series).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # localcluster/: test and bench infrastructure

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from localcluster.statusonly import create_namespace, create_status_only_pod, pod_ip
from prometheus_client.parser import text_string_to_metric_families

APPS = [f"app{i}" for i in range(10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def api(kubeconfig: str) -> Any:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


def populate(api_client: Any, pods: int, namespaces: int, policies_per_ns: int) -> float:
    core, net = client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)
    started = time.monotonic()
    names = [f"bench-{i:03d}" for i in range(namespaces)]
    for i, ns in enumerate(names):
        create_namespace(core, ns, {"tier": f"t{i % 5}"})

    def make_pod(n: int) -> None:
        # Deployment-like: 20 replicas share a pod-template-hash; a namespace holds deployments of every app.
        deployment = n // 20
        create_status_only_pod(
            core, names[deployment % namespaces], f"pod-{n:05d}",
            {"app": APPS[(deployment // namespaces) % len(APPS)], "pod-template-hash": f"h{deployment}"},
            [{"containerPort": 80 if n % 2 else 8080, "name": "http"}], pod_ip(n),
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make_pod, range(pods)))
    for ns in names:
        for p in range(policies_per_ns):
            target, source = APPS[p % len(APPS)], APPS[(p + 1) % len(APPS)]
            body = {
                "metadata": {"name": f"np-{p}", "namespace": ns},
                "spec": {
                    "podSelector": {"matchLabels": {"app": target}},
                    "ingress": [
                        {
                            "from": [
                                {"podSelector": {"matchLabels": {"app": source}}},
                                {"namespaceSelector": {"matchLabels": {"tier": "t0"}}},
                            ],
                            "ports": [{"port": 80}],
                        }
                    ],
                },
            }
            try:
                net.create_namespaced_network_policy(ns, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
    return time.monotonic() - started


def scrape(port: int, *names: str) -> dict[str, list[Any]]:
    """/metrics, or only the named metrics (``name[]=``: polling must not be what the operator spends time on)."""
    query = "?" + "&".join(f"name[]={n}" for n in names) if names else ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=120) as rsp:
        return {f.name: f.samples for f in text_string_to_metric_families(rsp.read().decode())}


def gauge(families: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    for s in families.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "peak_rss_mib": int(fields["VmHWM"].split()[0]) / 1024,
        "cpu_seconds": (int(parts[11]) + int(parts[12])) / ticks,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--policies-per-namespace", type=int, default=3)
    parser.add_argument("--changes", type=int, default=200, help="pod relabels for the index lag")
    parser.add_argument("--policy-changes", type=int, default=20, help="policy changes for the paths lag")
    parser.add_argument("--skip-populate", action="store_true")
    parser.add_argument("--cleanup", action="store_true", help="delete the bench namespaces at the end")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--probe", action="store_true",
                        help="run the prober too (planning only: --probe-max-pods 0, as status-only pods have no node "
                             "to clone onto); reports the time to the first plan, the paths and the event loop's lag")
    args = parser.parse_args()

    api_client = api(args.kubeconfig)
    core, net = client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)
    results: dict[str, Any] = {
        "pods": args.pods,
        "namespaces": args.namespaces,
        "policies": args.namespaces * args.policies_per_namespace,
    }
    if not args.skip_populate:
        results["populate_seconds"] = round(
            populate(api_client, args.pods, args.namespaces, args.policies_per_namespace), 1
        )
        print(f"populated {args.pods} pods in {results['populate_seconds']}s", flush=True)

    port = free_port()
    log = open("/tmp/bench-operator.log", "wb")  # noqa: SIM115 -- closed below
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "netpol_auditor.controller",
            "--kubeconfig",
            args.kubeconfig,
            "--standalone",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            str(port),
            "--liveness",
            "",
            "--no-events",
            "--resync-interval",
            "0",
            *(["--probe", "--probe-max-pods", "0", "--probe-namespaces", "bench-*"] if args.probe else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as rsp:
                    if rsp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit("the operator exited; see /tmp/bench-operator.log")
            time.sleep(0.2)
        results["ready_seconds"] = round(time.monotonic() - started, 1)
        # Wait for the first recompute of the aggregates over the full index.
        classes = "netpol_auditor_index_equivalence_classes"
        while gauge(scrape(port, classes), classes) in (None, 0.0):
            time.sleep(0.5)
        results["first_aggregates_seconds"] = round(time.monotonic() - started, 1)
        families = scrape(port)
        results["index_pods"] = gauge(families, "netpol_auditor_index_objects", kind="pod")
        results["classes"] = gauge(families, "netpol_auditor_index_equivalence_classes")
        results["path_series"] = len(families.get("netpol_auditor_paths", []))
        if args.probe:
            paths = "netpol_auditor_probe_paths"
            while not sum(s.value for s in scrape(port, paths).get(paths, [])):
                if time.monotonic() - started > 600:
                    raise SystemExit("no probe plan within 600s; see /tmp/bench-operator.log")
                time.sleep(0.5)
            results["first_plan_seconds"] = round(time.monotonic() - started, 1)
            results["probe_paths"] = sum(s.value for s in scrape(port, paths).get(paths, []))
        time.sleep(5)
        after_sync = proc_stats(proc.pid)
        results["after_sync"] = after_sync
        idle_before = proc_stats(proc.pid)["cpu_seconds"]
        time.sleep(30)
        results["idle_cpu_percent"] = round(100 * (proc_stats(proc.pid)["cpu_seconds"] - idle_before) / 30, 2)

        # Index lag: one pod relabel at a time.
        rng = random.Random(1)
        lags: list[float] = []
        churn_cpu = proc_stats(proc.pid)["cpu_seconds"]
        churn_started = time.monotonic()
        for _ in range(args.changes):
            n = rng.randrange(args.pods)
            ns, name = f"bench-{(n // 20) % args.namespaces:03d}", f"pod-{n:05d}"
            app = core.read_namespaced_pod(name, ns).metadata.labels.get("app")
            new_app = rng.choice([a for a in APPS if a != app])  # a real change: a new resourceVersion, an event
            before = time.time()
            core.patch_namespaced_pod(name, ns, {"metadata": {"labels": {"app": new_app}}})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stamp = gauge(scrape(port, "netpol_auditor_index_last_event_timestamp_seconds"),
                              "netpol_auditor_index_last_event_timestamp_seconds") or 0.0
                if stamp >= before:
                    lags.append(stamp - before)
                    break
                time.sleep(0.05)
            else:
                lags.append(10.0)
        churn_elapsed = time.monotonic() - churn_started
        results["index_lag_seconds"] = {
            "p50": round(statistics.median(lags), 3),
            "p99": round(percentile(lags, 0.99), 3),
            "max": round(max(lags), 3),
            "n": len(lags),
        }
        results["churn_cpu_percent"] = round(100 * (proc_stats(proc.pid)["cpu_seconds"] - churn_cpu) / churn_elapsed, 1)

        # Paths lag: policy changes that change path counts, until the published aggregates reflect them. The
        # aggregate series (paths, isolation, per-policy pods) are one snapshot, swapped atomically, so the new
        # policy's netpol_auditor_policy_selected_pods series (150 series to poll) appears exactly when the 16k
        # netpol_auditor_paths series change; polling the paths themselves would make the poll (rendering and
        # parsing 16k series, on the operator's event loop too) most of what is measured. Each change is then
        # checked to have changed netpol_auditor_paths, outside the timed part.
        def path_series() -> dict[tuple[str, ...], float]:
            return {
                (s.labels["source_namespace"], s.labels["destination_namespace"], s.labels["port"],
                 s.labels["verdict"]): s.value
                for s in scrape(port, "netpol_auditor_paths").get("netpol_auditor_paths", [])
            }

        path_lags: list[float] = []
        for i in range(args.policy_changes):
            ns = f"bench-{i % args.namespaces:03d}"
            old = path_series()
            before = time.monotonic()
            name = f"lag-{i}"
            net.create_namespaced_network_policy(
                ns,
                {"metadata": {"name": name, "namespace": ns}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if gauge(scrape(port, "netpol_auditor_policy_selected_pods"), "netpol_auditor_policy_selected_pods",
                         namespace=ns, policy=name) is not None:
                    path_lags.append(time.monotonic() - before)
                    break
                time.sleep(0.02)
            else:
                path_lags.append(30.0)
            if path_series() == old:
                raise SystemExit(f"policy {ns}/{name} is published but netpol_auditor_paths did not change")
            net.delete_namespaced_network_policy(name, ns)
            time.sleep(1.5)
        results["paths_lag_seconds"] = {
            "p50": round(statistics.median(path_lags), 3),
            "p99": round(percentile(path_lags, 0.99), 3),
            "max": round(max(path_lags), 3),
            "n": len(path_lags),
        }
        results["after_churn"] = proc_stats(proc.pid)
        # a histogram answers name[]= by its sample names
        lag = scrape(port, "netpol_auditor_event_loop_lag_seconds_bucket").get("netpol_auditor_event_loop_lag_seconds",
                                                                                [])
        buckets = {s.labels["le"]: s.value for s in lag if s.name.endswith("_bucket")}
        total = buckets.get("+Inf", 0.0)
        results["event_loop_lag"] = {
            "observations": total,
            "over_100ms": total - buckets.get("0.1", 0.0),
            "over_1s": total - buckets.get("1.0", 0.0),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if args.cleanup:
            for i in range(args.namespaces):
                core.delete_namespace(f"bench-{i:03d}")
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
