"""`analyze --kubeconfig`: the same verdicts read from the real API server of the local cluster as from a
`kubectl get -o yaml` dump of it; pages followed; credentials that may not list a kind, and a server that cannot be
reached, give an error naming what failed (exit 2), never a traceback; `kubectl netpol-auditor` works as a plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_harness import run_cli

from netpol_auditor.live_cluster import RESOURCES, list_documents

NS_A, NS_B = "live-read-a", "live-read-b"
BIN = Path(sys.executable).parent


def kubectl(cluster: Any, *args: str, input: str | None = None, kubeconfig: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={kubeconfig or cluster.kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=120)


def _objects() -> list[dict[str, Any]]:
    container = {"name": "srv", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
                 "ports": [{"containerPort": 8080, "name": "http"}, {"containerPort": 5432}]}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS_A, "labels": {"team": "a"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS_B, "labels": {"team": "b"}}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS_A},
         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "db", "namespace": NS_A, "labels": {"app": "db"}},
         "spec": {"containers": [container]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client", "namespace": NS_B,
                                                         "labels": {"app": "client"}},
         "spec": {"containers": [container]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "db", "namespace": NS_A},
         "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                               "ports": [{"port": 5432}]}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": NS_A},
         "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}],
                               "ports": [{"port": "http"}]}]}},
    ]


@pytest.fixture(scope="module")
def live(cluster: Any) -> Iterator[Any]:
    kubectl(cluster, "delete", "namespace", NS_A, NS_B, "--ignore-not-found", "--wait=true")
    proc = kubectl(cluster, "apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in _objects()))
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = json.loads(kubectl(cluster, "get", "pods", "-n", NS_A, "-o", "json").stdout)["items"]
        pods += json.loads(kubectl(cluster, "get", "pods", "-n", NS_B, "-o", "json").stdout)["items"]
        if len(pods) == 4 and all(p.get("status", {}).get("podIP") and p["status"].get("phase") == "Running"
                                  for p in pods):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the pods never ran: {[(p['metadata']['name'], p.get('status')) for p in pods]}")
    yield cluster
    kubectl(cluster, "delete", "namespace", NS_A, NS_B, "--wait=false")


pytestmark = [pytest.mark.cluster]


def test_a_live_read_judges_as_a_dump_of_the_same_cluster(live: Any, tmp_path: Path) -> None:
    dump = tmp_path / "dump.yaml"
    listed = [kubectl(live, "get", "namespace", NS_A, NS_B, "-o", "yaml")]
    listed += [kubectl(live, "get", "pods,deployments,replicasets,networkpolicies", "-n", ns, "-o", "yaml")
               for ns in (NS_A, NS_B)]
    assert all(p.returncode == 0 for p in listed), [p.stderr for p in listed]
    dump.write_text("\n---\n".join(p.stdout for p in listed))
    from_cluster = run_cli(["analyze", "--kubeconfig", str(live.kubeconfig), "-n", NS_A, "-n", NS_B, "-o", "json",
                            "--explain"])
    from_dump = run_cli(["analyze", "-f", str(dump), "-o", "json", "--explain"])
    assert from_cluster.code == from_dump.code == 0, from_cluster.err + from_dump.err
    assert json.loads(from_cluster.out) == json.loads(from_dump.out)
    endpoints = set(json.loads(from_cluster.out)["pods"])
    assert endpoints == {f"{NS_A}/web[Deployment]", f"{NS_A}/db[Pod]", f"{NS_B}/client[Pod]"}, endpoints


def test_the_whole_cluster_is_read_without_namespaces(live: Any) -> None:
    result = run_cli(["explain", "--kubeconfig", str(live.kubeconfig), "--from", f"{NS_B}/client",
                      "--to", f"{NS_A}/web", "--port", "8080"])
    assert result.code == 0, result.err
    assert "allowed" in result.out and f"{NS_A}/web" in result.out, result.out


def test_every_page_is_read(live: Any) -> None:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(live.kubeconfig), client_configuration=configuration)
    pods = next(r for r in RESOURCES if r.kind == "Pod")
    with client.ApiClient(configuration) as api:
        pages = list(list_documents(api, pods, NS_A, page_size=1))
    names = [item["metadata"]["name"] for page in pages for item in page["items"]]
    assert len(pages) >= 3 and sorted(names) == sorted(set(names)) and len(names) == 3, names


def _token_kubeconfig(cluster: Any, account: str, path: Path) -> Path:
    kubectl(cluster, "create", "serviceaccount", account, "-n", NS_B)
    proc = kubectl(cluster, "create", "token", account, "-n", NS_B, "--duration=1h")
    assert proc.returncode == 0, proc.stderr
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
        "users": [{"name": account, "user": {"token": proc.stdout.strip()}}],
        "contexts": [{"name": account, "context": {"cluster": admin["clusters"][0]["name"], "user": account}}],
        "current-context": account}))
    return path


def test_credentials_that_may_not_list_give_an_error_naming_the_resource(live: Any, tmp_path: Path) -> None:
    nobody = _token_kubeconfig(live, "nobody", tmp_path / "nobody")
    result = run_cli(["analyze", "--kubeconfig", str(nobody)])
    assert result.code == 2 and "Traceback" not in result.err
    assert "cannot list namespaces" in result.err and "forbidden" in result.err, result.err

    # May list what verdicts need, not the workloads: a warning each, and the pods are judged one by one.
    reader = _token_kubeconfig(live, "reader", tmp_path / "reader")
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "live-read"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["list", "get"]},
                      {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "live-read"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "live-read"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS_B}]}
    try:
        proc = kubectl(live, "apply", "-f", "-", input=json.dumps(role) + "\n---\n" + json.dumps(binding))
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 30
        while True:  # the RBAC authorizer's cache takes the binding in a moment
            result = run_cli(["analyze", "--kubeconfig", str(reader), "-n", NS_A, "-n", NS_B, "-o", "json"])
            if result.code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.code == 0, result.err
        assert "cannot list deployments in namespace" in result.err and "judged one by one" in result.err
        endpoints = set(json.loads(result.out)["pods"])
        assert f"{NS_A}/db[Pod]" in endpoints and not any("[Deployment]" in e for e in endpoints), endpoints
    finally:
        kubectl(live, "delete", "clusterrolebinding,clusterrole", "live-read", "--ignore-not-found")


def test_kubectl_runs_it_as_a_plugin_on_the_current_context(live: Any) -> None:
    env = {**os.environ, "KUBECONFIG": str(live.kubeconfig), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["kubectl", "netpol-auditor", "analyze", "-n", NS_A, "-n", NS_B, "--port", "5432"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"{NS_A}/web[Deployment]" in proc.stdout and "5432/TCP" in proc.stdout, proc.stdout


def test_lint_reads_a_live_cluster(live: Any) -> None:
    result = run_cli(["lint", "--kubeconfig", str(live.kubeconfig), "-n", NS_A, "-n", NS_B, "-o", "json"])
    assert result.code == 0, result.err
    found = json.loads(result.out)
    text = json.dumps(found)
    assert "NPA006" in text and NS_B in text, text  # live-read-b has pods and no default deny
