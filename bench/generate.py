"""A synthetic cluster for benchmarks: namespaces, deployments of pods, and policies of the shapes people write.

Shapes (per tenant namespace, most common first): default deny (ingress, or ingress+egress), allow from the
ingress-controller namespace, app -> app on a named or numbered port, DNS egress to kube-system, allow from other
namespaces of the same team, egress to the internet except the metadata address (ipBlock + except), Prometheus
scrape from the monitoring namespace. Pods carry the labels controllers set (app, pod-template-hash, version, tier)
and named container ports.

    python bench/generate.py --pods 10000 --namespaces 1000 --policies 2000 -o /tmp/cluster.yaml
    python bench/generate.py --pods 1000 --namespaces 50 --policies 333 --workloads -o /tmp/workloads.json
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["generate"]

TIERS = ["frontend", "backend", "data", "worker"]
APPS = ["web", "api", "auth", "cart", "search", "db", "cache", "queue", "worker", "report", "mailer", "billing"]
PORTS = {"web": 8080, "api": 8080, "auth": 9000, "cart": 8080, "search": 9200, "db": 5432, "cache": 6379, "queue": 5672}


def _pod(namespace: str, name: str, labels: dict[str, str], ip: str, port: int, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{"kind": "ReplicaSet", "name": name.rsplit("-", 1)[0], "controller": True}],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "main",
                    "ports": [
                        {"containerPort": port, "name": "http", "protocol": "TCP"},
                        {"containerPort": 9090, "name": "metrics", "protocol": "TCP"},
                    ],
                }
            ],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _deployment(namespace: str, name: str, labels: dict[str, str], replicas: int, port: int) -> dict[str, Any]:
    """The Deployment that makes ``replicas`` pods like `_pod`'s (the template without the controller's hash)."""
    template = {k: v for k, v in labels.items() if k != "pod-template-hash"}
    pod = _pod(namespace, name, template, "", port, "")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(template)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": template},
            "template": {"metadata": {"labels": template}, "spec": {"containers": pod["spec"]["containers"]}},
        },
    }


def _policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _ns(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def generate(
    pods: int, namespaces: int, policies: int, seed: int = 1, workloads: bool = False
) -> Iterator[dict[str, Any]]:
    """Yield API dicts: ``namespaces`` namespaces (3 system ones included), ``pods`` pods, ``policies`` policies.
    ``workloads``: a Deployment (with its replica count) for each group of pods instead of the pods, as
    ``helm template`` output has them; the same random choices, so the same namespaces and policies."""
    rnd = random.Random(seed)
    addresses = ipaddress.ip_network("10.0.0.0/8").hosts()
    system = ["kube-system", "ingress-nginx", "monitoring"]
    tenants = [f"tenant-{i:05d}" for i in range(max(1, namespaces - len(system)))]
    teams = [f"team-{i}" for i in range(max(1, len(tenants) // 20))]
    ns_team = {ns: rnd.choice(teams) for ns in tenants}
    for ns in system:
        yield _ns(ns, {"role": "system"})
    for ns in tenants:
        yield _ns(ns, {"team": ns_team[ns], "env": rnd.choice(["prod", "staging", "dev"])})

    # Pods: a few system pods, the rest spread over tenant namespaces in deployments of 1-6 replicas.
    system_pods = [
        ("kube-system", "coredns", {"k8s-app": "kube-dns"}, 53),
        ("ingress-nginx", "controller", {"app": "ingress"}, 80),
    ]
    system_pods.append(("monitoring", "prometheus", {"app": "prometheus"}, 9090))
    count = 0
    apps_by_ns: dict[str, list[str]] = {}
    for ns, app, labels, port in system_pods:
        if workloads:
            yield _deployment(ns, app, labels, 2, port)
        for r in range(2):
            count += 1
            ip = str(next(addresses))
            if not workloads:
                yield _pod(ns, f"{app}-{r}", labels, ip, port, f"node-{count % 50}")
    remaining = max(0, pods - count)
    per_ns = max(1, remaining // len(tenants))
    for i, ns in enumerate(tenants):
        budget = per_ns if i < len(tenants) - 1 else max(0, remaining - per_ns * (len(tenants) - 1))
        apps: list[str] = []
        while budget > 0:
            app = APPS[len(apps) % len(APPS)] if len(apps) < len(APPS) else f"job-{len(apps)}"
            apps.append(app)
            replicas = min(budget, rnd.randint(1, 6))
            template = f"{rnd.getrandbits(32):08x}"[:10]
            labels = {
                "app": app,
                "tier": TIERS[APPS.index(app) % len(TIERS)] if app in APPS else "worker",
                "version": rnd.choice(["v1", "v2"]),
                "pod-template-hash": template,
            }
            if workloads:
                yield _deployment(ns, app, labels, replicas, PORTS.get(app, 8080))
            for r in range(replicas):
                ip = str(next(addresses))
                if not workloads:
                    yield _pod(ns, f"{app}-{template}-{r}", labels, ip, PORTS.get(app, 8080), f"node-{r % 50}")
            budget -= replicas
        apps_by_ns[ns] = apps

    # Policies: a default deny in every tenant namespace first (as a platform team rolls them out), then the other
    # shapes in random namespaces.
    made = 0
    names: set[tuple[str, str]] = set()
    order = list(tenants)
    shapes = ["from-ingress", "app-to-app", "app-to-app", "dns", "same-team", "internet", "scrape"]
    attempts = 0
    while made < policies and attempts < policies * 20:
        attempts += 1
        if made < len(order):
            ns, shape = order[made], "deny"
        else:
            ns, shape = rnd.choice(tenants), rnd.choice(shapes)
        apps = apps_by_ns.get(ns) or ["web"]
        name, spec = _shape(shape, ns, apps, ns_team[ns], rnd)
        if (ns, name) in names:
            continue
        names.add((ns, name))
        made += 1
        yield _policy(ns, name, spec)


def _shape(shape: str, ns: str, apps: list[str], team: str, rnd: random.Random) -> tuple[str, dict[str, Any]]:
    if shape == "deny":
        types = ["Ingress", "Egress"] if rnd.random() < 0.3 else ["Ingress"]
        return "default-deny", {"podSelector": {}, "policyTypes": types}
    if shape == "from-ingress":
        peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
        return "allow-from-ingress", {
            "podSelector": {"matchLabels": {"tier": "frontend"}},
            "ingress": [{"from": [peer], "ports": [{"port": "http"}]}],
        }
    if shape == "app-to-app":
        src, dst = rnd.choice(apps), rnd.choice(apps)
        return f"{dst}-from-{src}", {
            "podSelector": {"matchLabels": {"app": dst}},
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": src}}}], "ports": [{"port": PORTS.get(dst, 8080)}]}
            ],
        }
    if shape == "dns":
        peer = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
        return "allow-dns", {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [peer], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}],
        }
    if shape == "same-team":
        return "allow-same-team", {
            "podSelector": {"matchLabels": {"tier": "backend"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}}}]}],
        }
    if shape == "internet":
        block = {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "169.254.169.254/32"]}
        return "allow-internet", {
            "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "worker"]}]},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": block}]}],
        }
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app": "prometheus"}},
    }
    return "allow-scrape", {"podSelector": {}, "ingress": [{"from": [peer], "ports": [{"port": "metrics"}]}]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=100)
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workloads", action="store_true", help="Deployments instead of their pods")
    parser.add_argument("-o", "--output", default="-", help="file to write (kind: List as JSON); - for stdout")
    args = parser.parse_args(argv)
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": list(generate(args.pods, args.namespaces, args.policies, args.seed, args.workloads)),
    }
    text = json.dumps(doc)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
