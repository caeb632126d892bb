"""Objects for the page tests: the demo's three-tier shop, a cluster of many workloads, and names made of markup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "localcluster" / "demo"


def analyze(*args: str) -> str:
    """``netpol-auditor analyze ARGS`` as a user runs it (a child process), its standard output."""
    proc = subprocess.run([sys.executable, "-m", "netpol_auditor.cli", "analyze", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _index(docs: list[dict[str, Any]]) -> ReachabilityIndex:
    parsed = [parse_object(d, "test") for d in docs]
    return ReachabilityIndex.from_objects(o for o in parsed if o is not None)


def _pod(namespace: str, name: str, labels: dict[str, str], ip: str, ports: tuple[int, ...] = (80,)) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": f"uid-{namespace}-{name}"},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"containerPort": p} for p in ports]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def many_workloads(namespaces: int = 50, per_namespace: int = 20, own_policies: bool = False) -> ReachabilityIndex:
    """``namespaces`` x ``per_namespace`` workloads (one pod each, each labelled apart): every namespace denies
    ingress but from itself, and admits ns-00's ``role=scraper`` pods on 9090. ``own_policies``: each workload also
    has a policy of its own, admitting the next workload of its namespace on 80 (so no two are alike)."""
    docs: list[dict[str, Any]] = []
    for n in range(namespaces):
        ns = f"ns-{n:02d}"
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"team": ns}}})
        for w in range(per_namespace):
            labels = {"app": f"app-{w:02d}", **({"role": "scraper"} if n == 0 and w == 0 else {})}
            docs.append(_pod(ns, f"app-{w:02d}", labels, f"10.{n // 200}.{n % 200}.{w + 1}", (80, 9090)))
            if own_policies:
                admitted = {"podSelector": {"matchLabels": {"app": f"app-{(w + 1) % per_namespace:02d}"}}}
                docs.append(_policy(ns, f"app-{w:02d}", {
                    "podSelector": {"matchLabels": {"app": f"app-{w:02d}"}}, "policyTypes": ["Ingress"],
                    "ingress": [{"from": [admitted], "ports": [{"port": 80}]}]}))
        docs.append(_policy(ns, "same-namespace", {"podSelector": {}, "policyTypes": ["Ingress"],
                                                   "ingress": [{"from": [{"podSelector": {}}]}]}))
        docs.append(_policy(ns, "scrape", {
            "podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ns-00"}},
                                   "podSelector": {"matchLabels": {"role": "scraper"}}}],
                         "ports": [{"port": 9090}]}]}))
    return _index(docs)


#: Markup where a user may put a name or a reason; each, if it ran, would mark the body.
HOSTILE = "<script>document.body.setAttribute('data-pwned','1')</script>"
HOSTILE_IMG = "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\">"
HOSTILE_END = "</script><script>document.body.setAttribute('data-pwned','3')</script>"


def hostile_cluster() -> ReachabilityIndex:
    """Objects named with markup (the parser takes names as they come: the page must not trust them)."""
    ns = f"evil{HOSTILE}"
    return _index([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"x": HOSTILE_IMG}}},
        _pod(ns, f"web{HOSTILE_IMG}", {"app": "web"}, "10.0.0.1"),
        _pod(ns, f"db{HOSTILE_END}", {"app": "db"}, "10.0.0.2"),
        _policy(ns, f"deny{HOSTILE_END}", {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}),
    ])
