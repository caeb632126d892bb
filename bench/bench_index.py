"""Benchmark the reachability index on a synthetic cluster (bench/generate.py).

Reports parse and build time, resident memory, incremental update latency per event type (p50/p99), verdict
query cost (cold and warm), path counting, and the wall time of ``netpol-auditor analyze -o json``.

    .venv/bin/python bench/bench_index.py --pods 10000 --namespaces 1000 --policies 2000
    .venv/bin/python bench/bench_index.py --analyze-only    # analyze 1k pods x 2 ports
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import generate
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import iter_objects
from netpol_auditor.model import Namespace, NetworkPolicy, ObjectKind, Pod, PortProtocol


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_updates(index: ReachabilityIndex, n: int, rnd: random.Random) -> dict[str, list[float]]:
    """Apply ``n`` events of each type; returns per-type latencies in seconds."""
    pods = [p for p in index.pods() if p.namespace.startswith("tenant-")]
    policies = [p for p in index.policies() if p.name == "default-deny"]
    namespaces = [ns for ns in index.namespaces() if ns.name.startswith("tenant-")]
    out: dict[str, list[float]] = {}

    def run(kind: str, fn: Callable[[int], None], count: int = n) -> None:
        samples = []
        cpu_samples = []
        for i in range(count):
            start, cpu = time.perf_counter(), time.process_time()
            fn(i)
            samples.append(time.perf_counter() - start)
            cpu_samples.append(time.process_time() - cpu)
        out[kind] = samples
        out[f"{kind} (cpu)"] = cpu_samples

    def pod_add_replica(i: int) -> None:
        base = rnd.choice(pods)
        index.upsert(_replace(base, name=f"{base.name}-extra{i}", pod_ips=(f"11.0.{i // 250}.{i % 250 + 1}",)))

    def pod_relabel(i: int) -> None:
        base = rnd.choice(pods)
        index.upsert(_replace(base, labels=base.labels.with_items(version=f"canary-{i % 3}")))

    def pod_add_new_class(i: int) -> None:
        base = rnd.choice(pods)
        labels = base.labels.with_items(app=f"new-{i}")
        index.upsert(_replace(base, name=f"new-{i}", labels=labels, pod_ips=(f"11.1.{i // 250}.{i % 250 + 1}",)))

    def pod_delete(i: int) -> None:
        victim = pods[i % len(pods)]
        index.delete(ObjectKind.POD, victim.namespace, victim.name)

    def policy_add(i: int) -> None:
        ns = rnd.choice(namespaces).name
        index.upsert(_policy(ns, f"bench-{i}", {"app": "api"}, 8080 + i % 10))

    def policy_add_ip_block(i: int) -> None:
        ns = rnd.choice(namespaces).name
        cidr = f"10.{i % 200}.{i % 250}.0/24"  # a new block matching pod addresses: the pods change class
        index.upsert(_policy(ns, f"bench-block-{i}", {"app": "db"}, 5432, {"ipBlock": {"cidr": cidr}}))

    def policy_modify(i: int) -> None:
        ns = rnd.choice(namespaces).name
        index.upsert(_policy(ns, "bench-modified", {"app": "web"}, 9000 + i))

    def policy_delete(i: int) -> None:
        victim = policies[i % len(policies)]
        index.delete(ObjectKind.NETWORK_POLICY, victim.namespace, victim.name)

    def namespace_relabel(i: int) -> None:
        ns = namespaces[i % len(namespaces)]
        index.upsert(Namespace(ns.name, ns.labels.with_items(env=f"bench-{i}")))

    run("pod added (existing class)", pod_add_replica)
    run("pod added (new class)", pod_add_new_class)
    run("pod labels changed", pod_relabel)
    run("pod deleted", pod_delete, min(n, len(pods)))
    run("policy added", policy_add)
    run("policy added (new ipBlock)", policy_add_ip_block)
    run("policy modified", policy_modify)
    run("policy deleted", policy_delete, min(n, len(policies)))
    run("namespace labels changed", namespace_relabel)
    return out


def _replace(pod: Pod, **changes: Any) -> Pod:
    from dataclasses import replace

    return replace(pod, **changes)


def _policy(
    namespace: str, name: str, target: dict[str, str], port: int, peer: dict[str, Any] | None = None
) -> NetworkPolicy:
    obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "podSelector": {"matchLabels": target},
            "ingress": [
                {"from": [peer or {"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": port}]}
            ],
        },
    }
    parsed = next(iter_objects(obj))
    assert isinstance(parsed, NetworkPolicy)
    return parsed


def bench_index(
    pods: int, namespaces: int, policies: int, events: int, seed: int, path_counts: bool = True
) -> dict[str, Any]:
    rnd = random.Random(seed)
    docs = list(generate(pods, namespaces, policies, seed))
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    del docs
    from netpol_auditor.manifest_files import load_text

    gc.collect()
    rss_before = rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    objs = load_text(text, "synthetic.json")
    parse_s, parse_cpu = time.perf_counter() - start, time.process_time() - cpu
    del text
    start, cpu = time.perf_counter(), time.process_time()
    index = ReachabilityIndex.from_objects(objs)
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
    gc.collect()
    rss_after = rss_mib()
    stats = index.stats()
    result: dict[str, Any] = {
        "pods": stats.pods,
        "namespaces": stats.namespaces,
        "policies": stats.policies,
        "classes": stats.classes,
        "parse_s": parse_s,
        "parse_cpu_s": parse_cpu,
        "build_s": build_s,
        "build_cpu_s": build_cpu,
        "rss_mib_objects_and_index": rss_after - rss_before,
        "rss_mib_total": rss_after,
    }
    del objs

    endpoints = index.endpoints()
    ports = [PortProtocol.parse("8080/TCP"), PortProtocol.parse("53/UDP")]
    pairs = [(rnd.choice(endpoints), rnd.choice(endpoints), rnd.choice(ports)) for _ in range(20000)]
    for label in ("cold", "warm", "explain"):
        start, cpu = time.perf_counter(), time.process_time()
        for s, d, p in pairs:
            v = index.verdict(s, d, p)
            if label == "explain":
                v.explain()
        result[f"verdict_{label}_us"] = (time.perf_counter() - start) / len(pairs) * 1e6
        result[f"verdict_{label}_cpu_us"] = (time.process_time() - cpu) / len(pairs) * 1e6

    start, cpu = time.perf_counter(), time.process_time()
    counts = index.path_counts(ports) if path_counts else {}
    result["path_counts_s"] = time.perf_counter() - start
    result["path_counts_cpu_s"] = time.process_time() - cpu
    result["path_count_series"] = len(counts)
    start, cpu = time.perf_counter(), time.process_time()
    limited = index.path_counts(ports, limit=20000)
    result["path_counts_limited_s"] = time.perf_counter() - start
    result["path_counts_limited_cpu_s"] = time.process_time() - cpu
    result["path_counts_limited_series"] = len(limited)

    updates = bench_updates(index, events, rnd)
    result["updates"] = {
        kind: {"p50_ms": percentile(s, 0.5) * 1e3, "p99_ms": percentile(s, 0.99) * 1e3, "max_ms": max(s) * 1e3}
        for kind, s in updates.items()
    }
    everything = [x for kind, s in updates.items() if not kind.endswith("(cpu)") for x in s]
    everything_cpu = [x for kind, s in updates.items() if kind.endswith("(cpu)") for x in s]
    result["updates_all"] = {
        "p50_ms": percentile(everything, 0.5) * 1e3,
        "p99_ms": percentile(everything, 0.99) * 1e3,
        "mean_ms": statistics.fmean(everything) * 1e3,
    }
    result["updates_all_cpu"] = {
        "p50_ms": percentile(everything_cpu, 0.5) * 1e3,
        "p99_ms": percentile(everything_cpu, 0.99) * 1e3,
        "mean_ms": statistics.fmean(everything_cpu) * 1e3,
    }
    start = time.perf_counter()
    if path_counts:
        index.path_counts(ports)
    result["path_counts_after_updates_s"] = time.perf_counter() - start
    return result


def bench_analyze(pods: int, ports: list[str], seed: int) -> dict[str, Any]:
    """Wall time of the real CLI (a fresh process, as CI runs it) on a 1k-pod cluster."""
    exe = Path(sys.executable).with_name("netpol-auditor")
    docs = list(generate(pods, max(3, pods // 20), max(1, pods // 10), seed))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.json"
        path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
        # A dump of pods, as recorded; the per-port verdicts (--matrix), as measured before the per-pair default.
        argv = [str(exe), "analyze", "--matrix", "--per-pod", "-f", str(path), "-o", "json"]
        for p in ports:
            argv += ["--port", p]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"analyze failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        verdicts = len(json.loads(proc.stdout)["verdicts"])
    return {
        "pods": pods,
        "ports": ports,
        "wall_s": wall,
        "cpu_s": cpu,
        "max_rss_mib": after.ru_maxrss / 1024,
        "verdicts": verdicts,
        "stdout_mib": len(proc.stdout) / 2**20,
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"- {result['pods']} pods, {result['namespaces']} namespaces, {result['policies']} policies, "
        f"{result['classes']} equivalence classes",
        f"- parse {result['parse_s']:.2f} s ({result['parse_cpu_s']:.2f} s CPU), build {result['build_s']:.2f} s "
        f"({result['build_cpu_s']:.2f} s CPU), "
        f"RSS +{result['rss_mib_objects_and_index']:.0f} MiB (objects + index; process total "
        f"{result['rss_mib_total']:.0f} MiB)",
        f"- verdict: {result['verdict_cold_us']:.1f} us cold, {result['verdict_warm_us']:.1f} us warm, "
        f"{result['verdict_explain_us']:.1f} us with explanation (CPU: {result['verdict_cold_cpu_us']:.1f} / "
        f"{result['verdict_warm_cpu_us']:.1f} / {result['verdict_explain_cpu_us']:.1f} us)",
        f"- path_counts (2 ports): {result['path_counts_s']:.2f} s ({result['path_counts_cpu_s']:.2f} s CPU, "
        f"{result['path_count_series']} series); first 20000 series only: {result['path_counts_limited_s']:.2f} s "
        f"({result['path_counts_limited_cpu_s']:.2f} s CPU); "
        f"after the update run {result['path_counts_after_updates_s']:.2f} s",
        "",
        "| event | p50 ms | p99 ms | max ms | CPU p50 ms | CPU p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, s in result["updates"].items():
        if kind.endswith("(cpu)"):
            continue
        c = result["updates"][f"{kind} (cpu)"]
        lines.append(
            f"| {kind} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['max_ms']:.3f} | {c['p50_ms']:.3f} | "
            f"{c['p99_ms']:.3f} |"
        )
    u, c = result["updates_all"], result["updates_all_cpu"]
    lines.append(
        f"| **all events** | {u['p50_ms']:.3f} | {u['p99_ms']:.3f} | (mean {u['mean_ms']:.3f}) | "
        f"{c['p50_ms']:.3f} | {c['p99_ms']:.3f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=2000)
    parser.add_argument("--events", type=int, default=300, help="events per event type")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--analyze-only", action="store_true", help="only time `analyze -o json` (1k pods x 2 ports)")
    parser.add_argument("--json", action="store_true", help="print raw JSON results")
    parser.add_argument("--no-path-counts", action="store_true", help="skip path_counts")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    if args.analyze_only:
        res = bench_analyze(1000, ["80/TCP", "8080/TCP"], args.seed)
        print(
            json.dumps(res)
            if args.json
            else f"- analyze -o json, {res['pods']} pods x {len(res['ports'])} ports: "
            f"{res['wall_s']:.2f} s wall ({res['cpu_s']:.2f} s CPU, peak RSS {res['max_rss_mib']:.0f} MiB), "
            f"{res['verdicts']} verdicts, {res['stdout_mib']:.0f} MiB of JSON"
        )
        return 0
    res = bench_index(args.pods, args.namespaces, args.policies, args.events, args.seed, not args.no_path_counts)
    print(json.dumps(res, indent=2) if args.json else report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
