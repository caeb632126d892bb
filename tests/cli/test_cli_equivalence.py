"""``analyze`` judges once per equivalence class pair and shares the cell with every member pair; check that this
sharing never changes an answer, against the engine's pod-by-pod reference evaluator (`engine.Snapshot`); and that
the default (workload) view of an input of Pods alone has the same rows as ``--per-pod``, named ``ns/name[Pod]``."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness import Result

from netpol_auditor.engine import Snapshot
from netpol_auditor.manifest_files import load_paths
from netpol_auditor.model import PodRef, PortProtocol

PORTS = ["80/TCP", "8080/TCP", "53/UDP"]
EXTERNALS = ["192.0.2.1", "10.0.1.5"]


def random_cluster(seed: int) -> list[dict[str, Any]]:
    """Replicated workloads (many pods per class), a reused IP on a finished pod, a hostNetwork pod, and policies
    with selectors, named ports and ipBlocks that split some replicas' classes but not others."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    namespaces = ["a", "b", "c"]
    for ns in namespaces:
        docs.append(
            {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": ns, "labels": {"tier": rng.choice("xy")}}}
        )
    ip = 0
    for ns in namespaces:
        for app in rng.sample(["web", "api", "db", "dns"], 3):
            for replica in range(rng.randint(1, 4)):
                ip += 1
                named = rng.choice(["http", "web", None])
                ports: list[dict[str, Any]] = [{"containerPort": rng.choice([80, 8080]), "protocol": "TCP"}]
                if named:
                    ports[0]["name"] = named
                docs.append(
                    {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "metadata": {"name": f"{app}-{replica}", "namespace": ns, "labels": {"app": app}},
                        "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]},
                        "status": {"phase": "Running", "podIP": f"10.0.{ip // 4}.{ip}"},
                    }
                )
    docs.append(
        {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "done", "namespace": "a", "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.1"},
        }
    )
    docs.append(
        {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {"name": "node-agent", "namespace": "c"},
            "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "192.168.0.10"},
        }
    )
    peers = [
        {"podSelector": {"matchLabels": {"app": "web"}}},
        {"namespaceSelector": {"matchLabels": {"tier": "x"}}},
        {
            "namespaceSelector": {},
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["db"]}]},
        },
        {"ipBlock": {"cidr": "10.0.0.0/22", "except": ["10.0.1.0/24"]}},
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "192.0.2.0/24"]}},
    ]
    port_sets: list[list[dict[str, Any]]] = [
        [],
        [{"port": "http"}],
        [{"port": 8080}],
        [{"protocol": "UDP", "port": 53}],
        [{"port": 8000, "endPort": 8090}, {"protocol": "SCTP", "port": 3868}],
    ]
    for i in range(rng.randint(2, 6)):
        ns = rng.choice(namespaces)
        spec: dict[str, Any] = {
            "podSelector": rng.choice([{}, {"matchLabels": {"app": rng.choice(["web", "api", "db"])}}])
        }
        for direction, key in (("ingress", "from"), ("egress", "to")):
            if rng.random() < 0.6:
                rules = []
                for _ in range(rng.randint(0, 2)):
                    rule: dict[str, Any] = {"ports": rng.choice(port_sets)}
                    if rng.random() < 0.8:
                        rule[key] = rng.sample(peers, rng.randint(1, 2))
                    rules.append(rule)
                spec[direction] = rules
        spec["policyTypes"] = [t for t in ("Ingress", "Egress") if t.lower() in spec] or ["Ingress"]
        docs.append(
            {
                "kind": "NetworkPolicy",
                "apiVersion": "networking.k8s.io/v1",
                "metadata": {"name": f"p{i}", "namespace": ns},
                "spec": spec,
            }
        )
    return docs


@pytest.mark.parametrize("seed", range(12))
def test_shared_cells_equal_pod_by_pod_verdicts(seed: int, tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(random_cluster(seed)))
    argv = ["analyze", "--matrix", "--per-pod", "-f", str(path), "-o", "json"]
    for port in PORTS:
        argv += ["--port", port]
    for address in EXTERNALS:
        argv += ["--external", address]
    result = cli(argv)
    assert result.code == 0, result.err
    data = json.loads(result.out)

    reference = Snapshot.from_objects(load_paths([str(path)]))
    checked = 0
    for verdict in data["verdicts"]:
        src = PodRef.parse(verdict["from"]) if "/" in verdict["from"] else verdict["from"]
        dst = PodRef.parse(verdict["to"]) if "/" in verdict["to"] else verdict["to"]
        expected = reference.verdict(src, dst, PortProtocol(verdict["port"], verdict["protocol"]))
        assert verdict["allowed"] == expected.allowed, verdict
        assert verdict["decidingPolicies"] == [f"{ns}/{n}" for ns, n in expected.deciding_policies()], verdict
        checked += 1
    pods = len(data["pods"])
    assert checked == len(PORTS) * (pods * (pods - 1) + 2 * pods * len(EXTERNALS))


@pytest.mark.parametrize("seed", range(4))
def test_pods_alone_give_the_per_pod_rows_named_as_pods(
    seed: int, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(random_cluster(seed)))
    argv = ["analyze", "--matrix", "-f", str(path), "-o", "json", "--explain", "--external", EXTERNALS[0]]
    for port in PORTS:
        argv += ["--port", port]
    per_pod, per_endpoint = cli([*argv, "--per-pod"]), cli(argv)
    assert (per_pod.code, per_endpoint.code) == (0, 0), per_endpoint.err
    expected, got = json.loads(per_pod.out), json.loads(per_endpoint.out)
    assert all(p.endswith("[Pod]") for p in got["pods"])
    assert [p.removesuffix("[Pod]") for p in got["pods"]] == expected["pods"]
    assert got["summary"] == expected["summary"]
    assert len(got["verdicts"]) == len(expected["verdicts"])
    for mine, theirs in zip(got["verdicts"], expected["verdicts"], strict=True):
        assert mine["from"].endswith("[Pod]") or mine["to"].endswith("[Pod]")
        assert json.loads(json.dumps(mine).replace("[Pod]", "")) == theirs  # names, reasons and explanations


@pytest.mark.parametrize("seed", range(12))
def test_table_from_row_bits_equals_table_from_cells(seed: int) -> None:
    """The table's fast path (rows as allowed-destination bits per class) writes what the cell-by-cell one writes,
    with externals, hostNetwork and finished pods, and --from/--to filters."""
    import dataclasses
    import io

    from netpol_auditor.cli import build_analysis
    from netpol_auditor.index import ReachabilityIndex
    from netpol_auditor.manifests import parse_object
    from netpol_auditor.render import render

    objects = [o for o in (parse_object(d) for d in random_cluster(seed)) if o is not None]
    index = ReachabilityIndex.from_objects(objects)
    rng = random.Random(seed)
    ports = [PortProtocol.parse(p) for p in PORTS]
    filters: list[dict[str, list[str]]] = [{}, {"sources": ["a"]}, {"destinations": ["b", *EXTERNALS[:1]]}]
    for kwargs in filters:
        analysis = build_analysis(index, ports=ports, externals=EXTERNALS, **kwargs)  # type: ignore[arg-type]
        assert analysis.marks is not None
        fast, slow = io.StringIO(), io.StringIO()
        render(analysis, "table", fast)
        render(dataclasses.replace(analysis, marks=None), "table", slow)
        assert fast.getvalue() == slow.getvalue()
        declared = build_analysis(index, externals=rng.sample(EXTERNALS, 1))
        fast, slow = io.StringIO(), io.StringIO()
        render(declared, "table", fast)
        render(dataclasses.replace(declared, marks=None), "table", slow)
        assert fast.getvalue() == slow.getvalue()
