"""The stable ``analyze -o json`` contract and the inputs it must accept (kubectl dumps as YAML or JSON, stdin,
directories), independent of object order. Per pod (``--per-pod``): the dump has Pods and no workloads; the
workload view of the same input is checked against this one in test_cli_equivalence.py."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cli_harness import FIXTURES, Result

DUMP = FIXTURES / "kubectl-get-all.yaml"
RUNNING = {
    "kube-system/coredns-7db6d8ff4d-2xk9p",
    "monitoring/prometheus-0",
    "shop/api-85d4c6f9b7-x2c4z",
    "shop/db-0",
    "shop/web-6f9c8b7d5c-h4k2m",
    "shop/web-6f9c8b7d5c-p8n3v",
}
HOST_NETWORK = "kube-system/kube-proxy-q7w2r"
EXTERNALS = ["203.0.113.10", "2001:db8::7"]


def _json(cli: Callable[..., Result], *argv: str, stdin: str | None = None) -> dict[str, Any]:
    result = cli(["analyze", "--matrix", "--per-pod", *argv, "-o", "json"], stdin=stdin)
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def test_json_covers_every_ordered_pair_and_external_on_every_port(cli: Callable[..., Result]) -> None:
    ports = [(8080, "TCP"), (53, "UDP"), (9102, "TCP")]
    argv = ["-f", str(DUMP)]
    for number, proto in ports:
        argv += ["--port", f"{number}/{proto}"]
    for address in EXTERNALS:
        argv += ["--external", address]
    data = _json(cli, *argv)

    pods = RUNNING | {HOST_NETWORK}
    expected = {(s, d) for s in pods for d in pods if s != d}
    expected |= {(a, p) for a in EXTERNALS for p in pods} | {(p, a) for a in EXTERNALS for p in pods}
    for number, proto in ports:
        got = [(v["from"], v["to"]) for v in data["verdicts"] if (v["port"], v["protocol"]) == (number, proto)]
        assert len(got) == len(set(got)), "each pair exactly once"
        assert set(got) == expected
    for verdict in data["verdicts"]:
        assert {"from", "to", "port", "protocol", "allowed", "decidingPolicies"} <= verdict.keys()
        hostnet = HOST_NETWORK in (verdict["from"], verdict["to"])
        assert (verdict["allowed"] is None) == hostnet, verdict
        if hostnet:
            assert "host network" in verdict["reason"]
        else:
            assert isinstance(verdict["allowed"], bool)
    assert data["ports"] == ["8080/TCP", "53/UDP", "9102/TCP"]
    assert data["externals"] == EXTERNALS
    assert set(data["pods"]) == pods
    counted = sum(sum(c.values()) for c in data["summary"].values())
    assert counted == len(data["verdicts"])


def test_json_verdicts_say_what_the_policies_of_the_dump_allow(cli: Callable[..., Result]) -> None:
    data = _json(cli, "-f", str(DUMP), "--port", "9000/TCP", "--port", "5432/TCP", "--external", "203.0.113.10")
    verdict = {(v["from"], v["to"], v["port"]): v for v in data["verdicts"]}
    web, api, db = "shop/web-6f9c8b7d5c-h4k2m", "shop/api-85d4c6f9b7-x2c4z", "shop/db-0"
    # web -> api on api's named port "http" (9000): web's egress rule and api's ingress rule both name it.
    assert verdict[(web, api, 9000)]["allowed"] is True
    assert verdict[(web, api, 9000)]["decidingPolicies"] == ["shop/web", "shop/api"]
    assert verdict[(api, db, 5432)]["allowed"] is True
    assert verdict[(web, db, 5432)]["allowed"] is False
    assert verdict[("203.0.113.10", db, 5432)]["allowed"] is False
    # The Succeeded migrate pod still reports api's IP; it is not an endpoint and never appears.
    assert not any("migrate" in v["from"] + v["to"] or "pending" in v["from"] + v["to"] for v in data["verdicts"])


def test_default_ports_are_those_the_running_pods_declare(cli: Callable[..., Result]) -> None:
    data = _json(cli, "-f", str(DUMP))
    assert data["ports"] == [
        "53/TCP", "53/UDP", "5432/TCP", "8080/TCP", "9000/TCP", "9090/TCP", "9102/TCP", "9153/TCP",
    ]  # fmt: skip


def test_kubectl_json_dump_stdin_and_directory_give_the_same_answer(tmp_path: Path, cli: Callable[..., Result]) -> None:
    reference = _json(cli, "-f", str(DUMP), "--port", "8080/TCP", "--port", "53/UDP")
    dump = yaml.safe_load(DUMP.read_text())

    as_json = tmp_path / "dump.json"
    as_json.write_text(json.dumps(dump, indent=4))  # what `kubectl get ... -o json` writes
    assert _json(cli, "-f", str(as_json), "--port", "8080/TCP", "--port", "53/UDP") == reference

    assert _json(cli, "-f", "-", "--port", "8080/TCP", "--port", "53/UDP", stdin=DUMP.read_text()) == reference

    tree = tmp_path / "tree"
    for i, item in enumerate(dump["items"]):
        sub = tree / item["kind"].lower()
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:02d}-{item['metadata']['name']}.yaml").write_text(yaml.safe_dump(item))
    (tree / "README.txt").write_text("not a manifest")
    assert _json(cli, "-f", str(tree), "--port", "8080/TCP", "--port", "53/UDP") == reference


def test_answer_does_not_depend_on_object_order(tmp_path: Path, cli: Callable[..., Result]) -> None:
    reference = _json(cli, "-f", str(DUMP), "--port", "9000/TCP", "--port", "53/UDP")
    dump = yaml.safe_load(DUMP.read_text())
    rng = random.Random(7)
    for attempt in range(3):
        rng.shuffle(dump["items"])
        path = tmp_path / f"shuffled-{attempt}.yaml"
        path.write_text(yaml.safe_dump_all(dump["items"]))  # also: plain multi-document YAML instead of a List
        assert _json(cli, "-f", str(path), "--port", "9000/TCP", "--port", "53/UDP") == reference


def test_from_and_to_filter_rows_and_columns(cli: Callable[..., Result]) -> None:
    data = _json(cli, "-f", str(DUMP), "--port", "53/UDP", "--from", "shop/web-*", "--to", "kube-system",
                 "--external", "203.0.113.10", "--to", "203.0.113.10")  # fmt: skip
    pairs = {(v["from"], v["to"]) for v in data["verdicts"]}
    sources = {"shop/web-6f9c8b7d5c-h4k2m", "shop/web-6f9c8b7d5c-p8n3v"}
    targets = {"kube-system/coredns-7db6d8ff4d-2xk9p", HOST_NETWORK, "203.0.113.10"}
    assert pairs == {(s, t) for s in sources for t in targets}

    data = _json(cli, "-f", str(DUMP), "--port", "53/UDP", "--external", "2001:DB8::7", "--from", "2001:db8:0::7")
    assert {v["from"] for v in data["verdicts"]} == {"2001:db8::7"}
    assert {v["to"] for v in data["verdicts"]} == RUNNING | {HOST_NETWORK}


def test_a_finished_pod_sharing_an_ip_grants_nothing(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """Identity is the pod, not the IP: the Succeeded pod's labels must not admit the Running pod now holding
    its address."""
    path = tmp_path / "reused-ip.yaml"
    path.write_text(
        """
apiVersion: v1
kind: Pod
metadata: {name: old-job, namespace: a, labels: {role: trusted}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Succeeded, podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: newcomer, namespace: a, labels: {role: other}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: a, labels: {app: server}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.0.0.6}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: trusted-only, namespace: a}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: trusted}}
"""
    )
    data = _json(cli, "-f", str(path))
    assert data["pods"] == ["a/newcomer", "a/server"]
    verdict = {(v["from"], v["to"]): v for v in data["verdicts"]}
    assert verdict[("a/newcomer", "a/server")]["allowed"] is False
    assert verdict[("a/newcomer", "a/server")]["decidingPolicies"] == ["a/trusted-only"]


def test_explain_adds_an_explanation_to_every_verdict(cli: Callable[..., Result]) -> None:
    data = _json(cli, "-f", str(DUMP), "--port", "5432/TCP", "--to", "shop/db-0", "--external", "203.0.113.10",
                 "--explain")  # fmt: skip
    assert data["verdicts"]
    for verdict in data["verdicts"]:
        first = verdict["explanation"].splitlines()[0]
        assert first.startswith(f"{verdict['from']} -> {verdict['to']} on 5432/TCP: ")
        word = {True: "ALLOWED.", False: "DENIED.", None: "not judged"}[verdict["allowed"]]
        assert word in first
