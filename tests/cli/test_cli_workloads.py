"""Workloads as endpoints: ``helm template`` output judged per workload (``ns/name[Kind]``), Pods made by a listed
workload folded into it (never counted twice), Pods without status judged, and ``--per-pod``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness import FIXTURES, Result

HELM = FIXTURES / "helm-template-three-tier.yaml"
FRONTEND = "shop/shop-frontend[Deployment]"
API = "shop/shop-api[Deployment]"
DB = "shop/shop-db[StatefulSet]"
BACKUP = "shop/shop-backup[CronJob]"
WORKLOADS = [API, BACKUP, DB, FRONTEND]
LABELS = {"app.kubernetes.io/instance": "shop"}


def _verdicts(cli: Callable[..., Result], *argv: str, stdin: str | None = None) -> dict[str, Any]:
    result = cli(["analyze", "--matrix", *argv, "-o", "json"], stdin=stdin)
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    data["by_pair"] = {(v["from"], v["to"], v["port"]): v for v in data["verdicts"]}
    return data


def _helm_docs() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(HELM.read_text()))


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if (d["kind"], d["metadata"]["name"]) == (kind, name))


def _pod(name: str, component: str, *, owner: tuple[str, str] | None = None, status: bool = True,
         extra_labels: dict[str, str] | None = None, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {**LABELS, "app.kubernetes.io/component": component, **(extra_labels or {})},
        },
        "spec": {"containers": [{"name": "c", "image": "i", "ports": ports or []}]},
    }
    if owner is not None:
        kind, owner_name = owner
        pod["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "uid": f"uid-{owner_name}", "controller": True}
        ]
    if status:
        pod["status"] = {"phase": "Running", "podIP": f"10.244.0.{len(name)}"}
    return pod


def test_helm_template_output_is_judged_per_workload(cli: Callable[..., Result]) -> None:
    data = _verdicts(cli, "-f", str(HELM))
    assert data["pods"] == WORKLOADS
    assert data["ports"] == ["5432/TCP", "8080/TCP", "9000/TCP", "9102/TCP"]
    verdict = data["by_pair"]
    # Allowed: each allow policy pairs one egress rule with one ingress rule, named ports resolved on the template.
    assert verdict[(FRONTEND, API, 9000)]["allowed"] is True
    assert verdict[(FRONTEND, API, 9000)]["decidingPolicies"] == ["shop/shop-frontend", "shop/shop-api"]
    assert verdict[(API, DB, 5432)]["allowed"] is True
    assert verdict[(BACKUP, DB, 5432)]["allowed"] is True
    # Denied: default deny, and no rule admitting these.
    assert verdict[(FRONTEND, DB, 5432)]["allowed"] is False
    assert verdict[(BACKUP, API, 9000)]["allowed"] is False
    assert verdict[(DB, API, 9000)]["allowed"] is False
    assert verdict[(API, FRONTEND, 8080)]["allowed"] is False
    assert verdict[(API, FRONTEND, 8080)]["decidingPolicies"] == [
        "shop/allow-dns", "shop/default-deny", "shop/shop-api", "shop/shop-frontend",
    ]  # fmt: skip
    # Every ordered pair of distinct workloads on every port, once.
    assert len(data["verdicts"]) == len(data["by_pair"]) == 4 * 3 * 4
    assert data["summary"]["5432/TCP"] == {"allowed": 2, "denied": 10, "notJudged": 0}


def test_explain_names_a_workload_with_or_without_its_kind(cli: Callable[..., Result]) -> None:
    short = cli(["explain", "-f", str(HELM), "--from", "shop/shop-backup", "--to", "shop/shop-db"])
    full = cli(["explain", "-f", str(HELM), "--from", BACKUP, "--to", DB])
    assert (short.code, short.err) == (0, "")
    assert short.out == full.out
    assert short.out.startswith(f"{BACKUP} -> {DB} on 5432/TCP: ALLOWED.\n")
    assert "allowed by shop/shop-db ingress[0] (from[1], ports[0])" in short.out


def test_from_and_to_take_workload_names_kinds_and_globs(cli: Callable[..., Result]) -> None:
    data = _verdicts(cli, "-f", str(HELM), "--port", "5432", "--from", "shop/*[Deployment]", "--to", "shop/shop-db")
    assert {(v["from"], v["to"]) for v in data["verdicts"]} == {(API, DB), (FRONTEND, DB)}
    missing = cli(["analyze", "-f", str(HELM), "--from", "shop/shop-db[Deployment]"])
    assert missing.code == 2 and "matches no endpoint" in missing.err


def test_pods_made_by_listed_workloads_are_folded_in_never_counted_twice(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    """A dump with the workloads and their pods (kubectl get deploy,rs,sts,pods): every pod speaks through its
    workload, by owner reference (Pod -> ReplicaSet -> Deployment; a ReplicaSet not listed, by its name), or
    without owner references by pod-template-hash and the Deployment's selector."""
    docs = _helm_docs()
    hash_label = {"pod-template-hash": "7c9d8f6b5"}
    docs += [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "shop-api-5f7b9c8d4",
                "namespace": "shop",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop-api",
                                     "uid": "u1", "controller": True}],
            },
            "spec": {
                "selector": {"matchLabels": {**LABELS, "app.kubernetes.io/component": "api"}},
                "template": {
                    "metadata": {"labels": {**LABELS, "app.kubernetes.io/component": "api",
                                            "pod-template-hash": "5f7b9c8d4"}},
                    "spec": {"containers": [{"name": "api", "ports": [{"name": "api", "containerPort": 9000}]}]},
                },
            },
        },
        _pod("shop-api-5f7b9c8d4-a1", "api", owner=("ReplicaSet", "shop-api-5f7b9c8d4"),
             extra_labels={"pod-template-hash": "5f7b9c8d4"}),
        _pod("shop-frontend-7c9d8f6b5-b2", "frontend", owner=("ReplicaSet", "shop-frontend-7c9d8f6b5"),
             extra_labels=hash_label),  # its ReplicaSet is not listed
        _pod("shop-frontend-7c9d8f6b5-c3", "frontend", extra_labels=hash_label),  # no owner references
        _pod("shop-db-0", "db", owner=("StatefulSet", "shop-db"),
             extra_labels={"controller-revision-hash": "shop-db-6d5f"}),
    ]  # fmt: skip
    path = tmp_path / "dump.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    data = _verdicts(cli, "-f", str(path))
    assert data["pods"] == WORKLOADS  # no ReplicaSet, no Pod
    assert len(data["verdicts"]) == 4 * 3 * 4
    reference = _verdicts(cli, "-f", str(HELM))
    assert data["verdicts"] == reference["verdicts"]

    # A folded Pod's name selects its workload.
    picked = _verdicts(cli, "-f", str(path), "--port", "5432", "--from", "shop/shop-api-5f7b9c8d4-a1", "--to", "shop")
    assert {v["from"] for v in picked["verdicts"]} == {API}
    explained = cli(["explain", "-f", str(path), "--from", "shop/shop-frontend-7c9d8f6b5-c3", "--to", "shop/shop-api"])
    assert explained.out.startswith(f"{FRONTEND} -> {API} on 9000/TCP: ALLOWED.")


def test_a_pod_two_workloads_select_is_not_guessed_into_either(tmp_path: Path, cli: Callable[..., Result]) -> None:
    docs = _helm_docs()
    twin = json.loads(json.dumps(_named(docs, "Deployment", "shop-frontend")))  # same selector, another name
    twin["metadata"]["name"] = "shop-frontend-canary"
    docs += [twin, _pod("shop-frontend-7c9d8f6b5-c3", "frontend", extra_labels={"pod-template-hash": "7c9d8f6b5"})]
    path = tmp_path / "twins.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    data = _verdicts(cli, "-f", str(path), "--port", "9000")
    assert "shop/shop-frontend-7c9d8f6b5-c3[Pod]" in data["pods"]
    assert "shop/shop-frontend-canary[Deployment]" in data["pods"]


def test_pods_without_status_are_judged_like_running_pods(tmp_path: Path, cli: Callable[..., Result]) -> None:
    plain = [
        _pod("web", "frontend", status=False, ports=[{"name": "http", "containerPort": 8080}]),
        _pod("api", "api", status=False, ports=[{"name": "api", "containerPort": 9000}]),
        _pod("db", "db", status=False, ports=[{"name": "postgres", "containerPort": 5432}]),
    ]
    policies = [d for d in yaml.safe_load_all(HELM.read_text()) if d["kind"] == "NetworkPolicy"]
    path = tmp_path / "pods.yaml"
    path.write_text(yaml.safe_dump_all([*plain, *policies]))
    data = _verdicts(cli, "-f", str(path))
    assert data["pods"] == ["shop/api[Pod]", "shop/db[Pod]", "shop/web[Pod]"]
    verdict = data["by_pair"]
    assert verdict[("shop/web[Pod]", "shop/api[Pod]", 9000)]["allowed"] is True
    assert verdict[("shop/api[Pod]", "shop/db[Pod]", 5432)]["allowed"] is True
    assert verdict[("shop/web[Pod]", "shop/db[Pod]", 5432)]["allowed"] is False

    per_pod = _verdicts(cli, "-f", str(path), "--per-pod")
    assert per_pod["pods"] == ["shop/api", "shop/db", "shop/web"]
    assert per_pod["by_pair"][("shop/web", "shop/api", 9000)]["allowed"] is True
    assert per_pod["by_pair"][("shop/web", "shop/db", 5432)]["allowed"] is False


def test_ip_block_peers_cannot_match_endpoints_without_an_ip(tmp_path: Path, cli: Callable[..., Result]) -> None:
    docs = _helm_docs()
    docs.append({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "db-from-nodes", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "db"}},
                 "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
    })  # fmt: skip
    path = tmp_path / "ipblock.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = cli(["analyze", "-f", str(path), "--port", "5432", "--strict"])
    assert result.code == 0
    assert result.err == (
        "netpol-auditor analyze: note: workloads and Pods without status have no IP yet, so no ipBlock peer matches "
        "them: traffic between pods that only an ipBlock admits is reported denied (ipBlock peers in "
        "shop/db-from-nodes)\n"
    )
    assert cli(["analyze", "-f", str(HELM), "--port", "5432"]).err == ""


def test_per_pod_leaves_workloads_out(tmp_path: Path, cli: Callable[..., Result]) -> None:
    result = cli(["analyze", "--per-pod", "-f", str(HELM)])
    assert result.code == 2
    assert "--per-pod: the input has workloads but no Pods" in result.err

    docs = [*_helm_docs(), _pod("debug", "debug", ports=[{"containerPort": 80}])]
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    assert _verdicts(cli, "-f", str(path), "--per-pod")["pods"] == ["shop/debug"]
    assert _verdicts(cli, "-f", str(path))["pods"] == ["shop/debug[Pod]", API, BACKUP, DB, FRONTEND]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["spec"].pop("template"), "Deployment shop/shop-frontend: spec.template: Required value"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(containerPort=0),
         "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 0"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(nmae="http"),
         'unknown field "spec.template.spec.containers[0].ports[0].nmae" (did you mean "name"?)'),
        (lambda d: d["spec"]["template"].update(metdata={}), 'unknown field "spec.template.metdata"'),
    ],
)
def test_workload_templates_are_read_strictly(
    change: Callable[[dict[str, Any]], object], message: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    docs = _helm_docs()
    change(_named(docs, "Deployment", "shop-frontend"))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = cli(["analyze", "-f", str(path)])
    assert result.code == 2
    assert message in result.err
