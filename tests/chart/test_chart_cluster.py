"""The chart against the real API server of the local cluster (the session ``cluster`` fixture, tests/conftest.py).

* the rendered manifests pass a server-side dry run (``kubectl apply --dry-run=server``) for the value sets;
* the operator pod passes the `restricted` Pod Security admission;
* ``helm install`` works, and its ServiceAccount can do the operator's job and nothing more (the real RBAC
  authorizer answers ``kubectl auth can-i``; with the ServiceAccount's own token, Secrets are forbidden);
* ``netpol-auditor run`` with that ServiceAccount's token gets ready and exports the catalogued metrics, which the
  alerts and the dashboard use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, FORBIDDEN, NEEDED, RELEASE, ROOT, run_helm, set_args
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

INSTALL_NS = "netpol-auditor-chart"
FULLNAME = f"{RELEASE}-netpol-auditor"
SA_USER = f"system:serviceaccount:{INSTALL_NS}:{FULLNAME}"
STANDIN_CRDS = Path(__file__).resolve().parent / "manifests" / "prometheus-operator-crds.yaml"
RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
METRIC = re.compile(r"\bnetpol_auditor_[a-z0-9_]+\b")
OWN_NAMESPACES = (INSTALL_NS, "chart-shop", "chart-payments", "chart-np", "chart-mon")


def kubectl(cluster: Any, *args: str, input: str | None = None, kubeconfig: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real kubectl; returns the completed process (stdout, stderr, returncode) without raising."""
    config = kubeconfig or cluster.kubeconfig
    return subprocess.run(["kubectl", f"--kubeconfig={config}", *args], input=input, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def chart_cluster(cluster: Any, helm: Path) -> Iterator[Any]:
    """The cluster with the chart's CRDs, the stand-in monitoring CRDs and a `restricted` install namespace."""
    # A release left by an interrupted run of these tests (on a reused cluster) would block `helm install`.
    run_helm(helm, "uninstall", RELEASE, "--namespace", INSTALL_NS, "--kubeconfig", str(cluster.kubeconfig),
             "--wait", "--timeout", "60s", check=False)
    # Namespaces of an earlier run on a reused cluster may still be terminating.
    kubectl(cluster, "wait", "--for=delete", "--timeout=180s", *(f"namespace/{ns}" for ns in OWN_NAMESPACES))
    for path in (CHART / "crds", STANDIN_CRDS):
        proc = kubectl(cluster, "apply", "--server-side", "-f", str(path))
        assert proc.returncode == 0, proc.stderr
    proc = kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
                   "crd/proberuns.netpol-auditor.io", "crd/clusterkopfpeerings.kopf.dev",
                   "crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com")
    assert proc.returncode == 0, proc.stderr
    namespaces = [{"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": INSTALL_NS,
                                "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                           "pod-security.kubernetes.io/warn": "restricted"}}}]
    namespaces += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
                   for ns in ("chart-shop", "chart-payments")]
    proc = kubectl(cluster, "apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(n) for n in namespaces))
    assert proc.returncode == 0, proc.stderr
    yield cluster
    run_helm(helm, "uninstall", RELEASE, "--namespace", INSTALL_NS, "--kubeconfig", str(cluster.kubeconfig),
             "--wait", "--timeout", "60s", check=False)
    kubectl(cluster, "delete", "namespace", INSTALL_NS, "chart-shop", "chart-payments", "--wait=false")
    kubectl(cluster, "delete", "-f", str(STANDIN_CRDS), "--wait=false")


def _template(helm: Path, values: dict[str, Any]) -> str:
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", INSTALL_NS, *set_args(values)).stdout


@pytest.mark.parametrize("values", [
    {"serviceMonitor.enabled": True, "prometheusRule.enabled": True, "grafanaDashboard.enabled": True,
     "networkPolicy.enabled": True},
    {"probe.namespaces": ["chart-shop", "chart-payments"], "namespaces": ["chart-shop", "chart-payments"]},
    {"replicaCount": 2, "networkPolicy.enabled": True, "networkPolicy.apiServer.cidrs": ["10.0.0.1/32"],
     "peering.enabled": False, "probe.enabled": False},
], ids=["all-toggles", "probe-restricted", "ha-standalone"])
def test_rendered_chart_passes_server_side_dry_run(chart_cluster: Any, helm: Path, values: dict[str, Any]) -> None:
    rendered = _template(helm, values)
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    proc = kubectl(chart_cluster, "apply", "--dry-run=server", "-f", "-", input=rendered)
    assert proc.returncode == 0, proc.stderr
    accepted = [ln for ln in proc.stdout.splitlines() if ln.endswith("(server dry run)")]
    assert len(accepted) == len(documents), proc.stdout
    assert "PodSecurity" not in proc.stderr, proc.stderr


def _operator_pod(helm: Path) -> dict[str, Any]:
    rendered = [d for d in yaml.safe_load_all(_template(helm, {})) if d]
    deployment = next(d for d in rendered if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "operator-pod-security", "namespace": INSTALL_NS,
                         "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def test_restricted_pod_security_admits_the_operator_pod(chart_cluster: Any, helm: Path, installed: str) -> None:
    """The Deployment's pod, created (dry run) in the install namespace, which enforces `restricted`."""
    pod = _operator_pod(helm)
    proc = kubectl(chart_cluster, "create", "--dry-run=server", "-f", "-", input=json.dumps(pod))
    assert proc.returncode == 0, proc.stderr
    # The admission is really enforcing: the same pod allowed to escalate privileges is refused.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    proc = kubectl(chart_cluster, "create", "--dry-run=server", "-f", "-", input=json.dumps(pod))
    assert proc.returncode != 0 and "violates PodSecurity" in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def installed(chart_cluster: Any, helm: Path) -> str:
    """`helm install` of the chart with default values; returns helm's output (with NOTES)."""
    proc = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", INSTALL_NS,
                    "--kubeconfig", str(chart_cluster.kubeconfig), timeout=300)
    return proc.stdout


def test_helm_install(chart_cluster: Any, helm: Path, installed: str) -> None:
    assert "STATUS: deployed" in installed
    assert f"kubectl -n {INSTALL_NS} port-forward deployment/{FULLNAME} 9090:9090" in installed
    status = json.loads(run_helm(helm, "status", RELEASE, "--namespace", INSTALL_NS, "--kubeconfig",
                                 str(chart_cluster.kubeconfig), "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    for kind, name, ns in (("deployment", FULLNAME, INSTALL_NS), ("serviceaccount", FULLNAME, INSTALL_NS),
                           ("service", f"{FULLNAME}-metrics", INSTALL_NS), ("clusterrole", FULLNAME, None),
                           ("clusterrolebinding", FULLNAME, None), ("clusterkopfpeering", FULLNAME, None),
                           ("validatingadmissionpolicy", f"{FULLNAME}-probe-pods", None),
                           ("validatingadmissionpolicybinding", f"{FULLNAME}-probe-pods", None)):
        args = ["get", kind, name, "-o", "name"] + (["-n", ns] if ns else [])
        proc = kubectl(chart_cluster, *args)
        assert proc.returncode == 0, proc.stderr
    # The controller manager, scheduler and node agent run the Deployment's pod (restricted namespace, its
    # securityContext applied by the agent); the local cluster's agent answers its declared ports.
    proc = kubectl(chart_cluster, "rollout", "status", f"deployment/{FULLNAME}", "-n", INSTALL_NS, "--timeout=120s")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _can_i(cluster: Any, verb: str, group: str, resource: str) -> bool:
    resource, _, sub = resource.partition("/")
    target = f"{resource}.{group}" if group else resource
    args = ["auth", "can-i", verb, target, f"--as={SA_USER}", "--all-namespaces"]
    if sub:
        args.append(f"--subresource={sub}")
    proc = kubectl(cluster, *args)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stdout + proc.stderr
    return answer == "yes"


CLUSTER_POLICY_CRDS = ROOT / "tests" / "operator" / "manifests" / "cluster-policy-crds.yaml"
VENDOR_POLICY_CRDS = ROOT / "tests" / "operator" / "manifests" / "vendor-policy-crds.yaml"


@pytest.fixture(scope="module")
def cluster_policy_apis(chart_cluster: Any) -> Iterator[None]:
    """The cluster-policy and CNI-specific policy APIs served while the tests ask about them: kubectl resolves a
    resource through discovery, and answers "no" for one the server does not serve, whatever the RBAC rules say."""
    for crds in (CLUSTER_POLICY_CRDS, VENDOR_POLICY_CRDS):
        proc = kubectl(chart_cluster, "apply", "-f", str(crds))
        assert proc.returncode == 0, proc.stderr
        proc = kubectl(chart_cluster, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        assert proc.returncode == 0, proc.stderr
    yield
    kubectl(chart_cluster, "delete", "-f", str(CLUSTER_POLICY_CRDS), "--ignore-not-found", "--wait=true")
    # Not waited for: the API server may hold a deleted CRD until the watches on it (the installed operator's)
    # drain, minutes later; whoever serves these kinds again deletes them first and waits (test_foreign_policy_*).
    kubectl(chart_cluster, "delete", "-f", str(VENDOR_POLICY_CRDS), "--ignore-not-found", "--wait=false")


@pytest.mark.usefixtures("cluster_policy_apis")
def test_service_account_can_do_its_job(chart_cluster: Any, installed: str) -> None:
    missing = [(verb, resource, group) for group, resource, verbs in NEEDED for verb in verbs
               if not _can_i(chart_cluster, verb, group, resource)]
    assert not missing


@pytest.mark.usefixtures("cluster_policy_apis")
def test_service_account_can_do_nothing_more(chart_cluster: Any, installed: str) -> None:
    granted = [(verb, resource, group) for group, resource, verbs in FORBIDDEN for verb in verbs
               if _can_i(chart_cluster, verb, group, resource)]
    assert not granted


@pytest.fixture(scope="module")
def sa_kubeconfig(chart_cluster: Any, installed: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount (what the operator pod would use)."""
    proc = kubectl(chart_cluster, "create", "token", FULLNAME, "-n", INSTALL_NS, "--duration=1h")
    assert proc.returncode == 0, proc.stderr
    admin = yaml.safe_load(Path(chart_cluster.kubeconfig).read_text())
    config = {"apiVersion": "v1", "kind": "Config", "clusters": admin["clusters"],
              "users": [{"name": "operator", "user": {"token": proc.stdout.strip()}}],
              "contexts": [{"name": "operator", "context": {"cluster": admin["clusters"][0]["name"],
                                                            "user": "operator"}}],
              "current-context": "operator"}
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_service_account_token_is_forbidden_on_secrets(chart_cluster: Any, sa_kubeconfig: Path) -> None:
    proc = kubectl(chart_cluster, "get", "secrets", "--all-namespaces", kubeconfig=sa_kubeconfig)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr
    proc = kubectl(chart_cluster, "get", "networkpolicies", "--all-namespaces", kubeconfig=sa_kubeconfig)
    assert proc.returncode == 0, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as rsp:
            return rsp.status, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class _Operator:
    """`netpol-auditor run` (python -m netpol_auditor.controller) as a child process on free local ports."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str, config: dict[str, str] | None = None) -> None:
        """``config``: NETPOL_AUDITOR_* variables (e.g. the chart's); the command line wins over them."""
        self.metrics_port, self.health_port = _free_port(), _free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_AUDITOR_")}
        env.update(config or {})
        argv = [sys.executable, "-m", "netpol_auditor.controller", "--kubeconfig", str(kubeconfig),
                "--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port),
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz", *args]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def readyz(self) -> tuple[int, str]:
        try:
            code, text = _get(f"http://127.0.0.1:{self.metrics_port}/readyz")
        except OSError as exc:
            return 0, str(exc)
        return code, text.strip()

    def families(self) -> dict[str, Any]:
        try:
            code, text = _get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        except OSError:
            return {}
        return {f.name: f for f in text_string_to_metric_families(text)} if code == 200 else {}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

def _catalogue() -> dict[str, str]:
    out = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `(netpol_auditor_[a-z0-9_]+)` \| ([a-z]+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _family(name: str, kind: str) -> str:
    """The family name prometheus_client's parser reports (counters without `_total`)."""
    return name.removesuffix("_total") if kind == "counter" else name


def _used_metrics() -> set[str]:
    text = RULES.read_text() + DASHBOARD.read_text()
    return {re.sub(r"_(bucket|sum|count)$", "", m) if m.endswith(("_bucket", "_sum", "_count")) else m
            for m in METRIC.findall(text)}


@pytest.fixture(scope="module")
def operator_scrape(chart_cluster: Any, sa_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[tuple[dict[str, Any], str]]:
    """`netpol-auditor run` with the chart's ServiceAccount token and the chart's peering object, until ready;
    yields (metric families by name, the operator's log) once it has stopped."""
    op = _Operator(sa_kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", "--peering", FULLNAME,
                   "--no-probe")
    try:
        deadline = time.monotonic() + 90
        while op.readyz() != (200, "ready"):
            if time.monotonic() > deadline or op.proc.poll() is not None:
                pytest.fail(f"operator not ready ({op.readyz()}, exit {op.proc.poll()}):\n{op.log_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(2)  # one debounced recompute of the aggregate metrics
        families = op.families()
        assert families
    finally:
        op.stop()  # before the other tests: a third live peer would take part in their election
    yield families, op.log_text()


def test_operator_with_chart_credentials_is_never_forbidden(operator_scrape: tuple[dict[str, Any], str]) -> None:
    _, log = operator_scrape
    assert not re.search(r"\b403\b|Forbidden", log), log[-3000:]


def test_live_metrics_are_the_catalogue(operator_scrape: tuple[dict[str, Any], str]) -> None:
    """Every netpol_auditor_ family the operator exports is catalogued, and the index metrics are all there."""
    families, _ = operator_scrape
    catalogue = _catalogue()
    by_family = {_family(name, kind): name for name, kind in catalogue.items()}
    exported = {name for name in families if name.startswith("netpol_auditor_")}
    assert exported - set(by_family) == set(), "exported but not in README.md's catalogue"
    index_metrics = [n for n in catalogue if not n.startswith(("netpol_auditor_probe", "netpol_auditor_mismatches",
                                                               "netpol_auditor_policy_enforced",
                                                               "netpol_auditor_cni_"))]
    missing = [n for n in index_metrics if _family(n, catalogue[n]) not in families]
    assert not missing, f"catalogued index metrics the operator does not export: {missing}"
    assert families["netpol_auditor_build_info"].samples[0].value == 1


def test_alert_and_dashboard_index_metrics_are_exported(operator_scrape: tuple[dict[str, Any], str]) -> None:
    """The alerts' and the dashboard's index metrics exist on a live scrape (prober metrics: see the next test)."""
    families, _ = operator_scrape
    catalogue = _catalogue()
    used = {m for m in _used_metrics() if m in catalogue}
    assert used == _used_metrics(), "metric names used that are not in the catalogue"
    index_used = {m for m in used if not m.startswith(("netpol_auditor_probe", "netpol_auditor_mismatches",
                                                       "netpol_auditor_policy_enforced", "netpol_auditor_cni_"))}
    assert index_used
    missing = sorted(m for m in index_used if _family(m, catalogue[m]) not in families)
    assert not missing


WORKLOAD = """
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: chart-shop, labels: {app: web}}
spec:
  containers: [{name: main, image: registry.example/web:1.0, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: chart-shop, labels: {app: client}}
spec:
  containers: [{name: main, image: registry.example/client:1.0}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: chart-shop, labels: {app: other}}
spec:
  containers: [{name: main, image: registry.example/other:1.0}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: chart-shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
"""


def _value(families: dict[str, Any], name: str, **labels: str) -> float | None:
    family = families.get(name)
    for sample in family.samples if family else []:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def _chart_config(helm: Path) -> dict[str, str]:
    """The NETPOL_AUDITOR_* environment the installed chart (default values) gives the operator pod, the downward
    API's namespace included: probe pods then carry this install's identity, which its admission policy checks."""
    rendered = [d for d in yaml.safe_load_all(_template(helm, {})) if d]
    (container,) = next(d for d in rendered if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    config = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config["NETPOL_AUDITOR_OPERATOR_NAMESPACE"] = INSTALL_NS
    return config


@pytest.fixture(scope="module")
def prober_scrape(chart_cluster: Any, helm: Path, sa_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[dict[str, Any], str]]:
    """`netpol-auditor run --probe` with the chart's ServiceAccount token and configuration (its admission policy in
    force), probing a small workload in the opted-in namespace chart-shop until a probe cycle has judged its policy;
    yields (metric families, log)."""
    proc = kubectl(chart_cluster, "apply", "-f", "-", input=WORKLOAD)
    assert proc.returncode == 0, proc.stderr
    proc = kubectl(chart_cluster, "wait", "-n", "chart-shop", "--for=condition=Ready", "pod", "--all",
                   "--timeout=90s")
    assert proc.returncode == 0, proc.stderr
    op = _Operator(sa_kubeconfig, tmp_path_factory.mktemp("prober") / "operator.log", "--standalone", "--probe",
                   "--probe-namespaces", "chart-shop", "--probe-namespace", INSTALL_NS, "--probe-interval", "5",
                   config=_chart_config(helm))
    try:
        deadline = time.monotonic() + 150
        while True:
            families = op.families()
            if (_value(families, "netpol_auditor_probe_cycle_last_completed_timestamp_seconds") or 0) > 0 and \
                    _value(families, "netpol_auditor_policy_enforced", policy="web-from-client") is not None:
                break
            if time.monotonic() > deadline or op.proc.poll() is not None:
                pytest.fail(f"no judged probe cycle (exit {op.proc.poll()}):\n{op.log_text()[-3000:]}")
            time.sleep(1)
    finally:
        op.stop()
    yield families, op.log_text()


def test_prober_with_chart_credentials_judges_the_policy(chart_cluster: Any,
                                                         prober_scrape: tuple[dict[str, Any], str]) -> None:
    """The probe pods, their ProbeRun owner and the results all work with the chart's RBAC alone, and its admission
    policy admits the probe pods."""
    families, log = prober_scrape
    assert "prober is unavailable" not in log
    assert "ValidatingAdmissionPolicy" not in log, log[-3000:]
    assert not re.search(r"\b403\b|Forbidden", log), log[-3000:]
    probes = sum(s.value for s in families["netpol_auditor_probes"].samples if s.name.endswith("_total"))
    assert probes > 0
    enforced = _value(families, "netpol_auditor_policy_enforced", namespace="chart-shop", policy="web-from-client")
    assert enforced == (1.0 if chart_cluster.enforcer == "kube-router" else 0.0)


def test_prober_metrics_used_by_alerts_and_dashboard_are_exported(prober_scrape: tuple[dict[str, Any], str]) -> None:
    families, _ = prober_scrape
    catalogue = _catalogue()
    exported = {name for name in families if name.startswith("netpol_auditor_")}
    assert exported <= {_family(n, k) for n, k in catalogue.items()}, "exported but not catalogued"
    missing = sorted(m for m in _used_metrics() if _family(m, catalogue[m]) not in families)
    assert not missing, f"used by the alerts or the dashboard, not exported by `netpol-auditor run --probe`: {missing}"


def test_alerts_on_the_live_metrics(chart_cluster: Any, prober_scrape: tuple[dict[str, Any], str],
                                    tmp_path: Path) -> None:
    """The enforcement alerts, evaluated by promtool on the live gauges held for 40 minutes: quiet when the cluster
    enforces (kube-router), NetpolAuditorCNINotEnforcing when nothing does (--enforcer none)."""
    families, _ = prober_scrape
    series = []
    for name in ("netpol_auditor_mismatches", "netpol_auditor_policy_enforced", "netpol_auditor_cni_feature_enforced",
                 "netpol_auditor_build_info"):
        for sample in families[name].samples if name in families else []:
            # the target labels of a scrape job named as the rules file expects (the chart substitutes its own)
            scraped = {**sample.labels, "job": "netpol-auditor", "instance": "netpol-auditor:8080"}
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(scraped.items()))
            series.append({"series": f"{sample.name}{{{labels}}}", "values": f"{sample.value:g}x40"})
    assert any("policy_enforced" in s["series"] for s in series)
    enforcing = chart_cluster.enforcer == "kube-router"
    rules = yaml.safe_load(RULES.read_text())
    cni_alert = next(r for g in rules["groups"] for r in g["rules"] if r["alert"] == "NetpolAuditorCNINotEnforcing")
    expected = [] if enforcing else [{"exp_labels": dict(cni_alert["labels"]),
                                      "exp_annotations": dict(cni_alert["annotations"])}]
    checks = [{"eval_time": "30m", "alertname": "NetpolAuditorCNINotEnforcing", "exp_alerts": expected},
              {"eval_time": "30m", "alertname": "NetpolAuditorDown", "exp_alerts": []}]
    if enforcing:
        checks += [{"eval_time": "30m", "alertname": name, "exp_alerts": []}
                   for name in ("NetpolAuditorPoliciesNotEnforced", "NetpolAuditorAllowedTrafficDropped",
                                "NetpolAuditorCNIFeatureNotEnforced")]
    test = {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}]}
    path = tmp_path / "live_test.yaml"
    path.write_text(yaml.safe_dump(test))
    proc = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _connect(cluster: Any, namespace: str, name: str, ip: str, port: int) -> bool:
    """A real connection from a pod in *namespace*: `nc -z` in a pod of the local cluster; True if it connected.

    The pod waits 2 s first: the enforcer adds a new pod's address to the sets that policy peers match (here the
    metrics rule's namespaceSelector) only after the pod runs with its IP, and a connection made before that is
    judged as from an unknown address (localcluster/README.md, "race on new pods")."""
    kubectl(cluster, "delete", "pod", "-n", namespace, name, "--ignore-not-found", "--wait=true")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "nc", "image": "busybox",
                                    "command": ["sh", "-c", f"sleep 2; exec nc -z -w 3 {ip} {port}"]}]}}
    proc = kubectl(cluster, "apply", "-f", "-", input=json.dumps(pod))
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        phase = kubectl(cluster, "get", "pod", "-n", namespace, name, "-o", "jsonpath={.status.phase}").stdout
        if phase in ("Succeeded", "Failed"):
            return phase == "Succeeded"
        time.sleep(0.5)
    pytest.fail(f"connection pod {namespace}/{name} did not finish")


def test_operator_network_policy_under_a_real_enforcer(chart_cluster: Any, helm: Path) -> None:
    """networkPolicy.enabled: scrapes from the allowed namespace reach the metrics port, others do not (with
    kube-router; with no enforcer, as with Flannel, everything connects). The operator pod's container declares
    the metrics and health ports, which the local cluster's node agent answers."""
    release, ns, monitoring = "np", "chart-np", "chart-mon"
    manifests = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                 {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": monitoring, "labels": {"monitoring": "true"}}}]
    proc = kubectl(chart_cluster, "apply", "-f", "-", input="\n---\n".join(json.dumps(m) for m in manifests))
    assert proc.returncode == 0, proc.stderr
    values = {"networkPolicy.enabled": True, "probe.enabled": False, "rbac.create": False,
              "networkPolicy.metricsFrom": [{"namespaceSelector": {"matchLabels": {"monitoring": "true"}}}]}
    kubeconfig = ["--kubeconfig", str(chart_cluster.kubeconfig)]
    try:
        run_helm(helm, "install", release, str(CHART), "--namespace", ns, *set_args(values), *kubeconfig,
                 timeout=300)
        deadline = time.monotonic() + 90
        ip = ""
        while not ip and time.monotonic() < deadline:
            ip = kubectl(chart_cluster, "get", "pods", "-n", ns, "-o", "jsonpath={.items[0].status.podIP}").stdout
            time.sleep(0.5)
        assert ip, "the operator pod got no IP"
        # Enforcers program policies asynchronously: retry the allowed connection (as upstream e2e probes do).
        allowed = any(_connect(chart_cluster, monitoring, "scrape", ip, 9090) for _ in range(5))
        assert allowed, "the allowed namespace cannot reach the metrics port"
        assert _connect(chart_cluster, "default", "health-check", ip, 8080), "the health port is open to all"
        intruder = _connect(chart_cluster, "default", "intruder", ip, 9090)
        assert intruder == (chart_cluster.enforcer == "none")
    finally:
        run_helm(helm, "uninstall", release, "--namespace", ns, *kubeconfig, "--wait", check=False)
        kubectl(chart_cluster, "delete", "pod", "-n", "default", "health-check", "intruder", "--ignore-not-found",
                "--wait=false")
        kubectl(chart_cluster, "delete", "namespace", ns, monitoring, "--wait=false")


def test_two_replicas_elect_one_through_the_chart_peering(chart_cluster: Any, sa_kubeconfig: Path,
                                                           tmp_path: Path) -> None:
    """HA as the chart deploys it: two replicas with the chart's token and ClusterKopfPeering; the higher priority
    is active, the other stands by, and takes over when the active one stops."""
    low = _Operator(sa_kubeconfig, tmp_path / "low.log", "--peering", FULLNAME, "--no-probe", "--priority", "1")
    high = _Operator(sa_kubeconfig, tmp_path / "high.log", "--peering", FULLNAME, "--no-probe", "--priority", "5")
    try:
        deadline = time.monotonic() + 90
        while not (high.readyz() == (200, "ready") and low.readyz()[1].startswith("standby")):
            if time.monotonic() > deadline:
                pytest.fail(f"no election: high {high.readyz()}, low {low.readyz()}\n{low.log_text()[-2000:]}")
            time.sleep(0.5)
        peering = json.loads(kubectl(chart_cluster, "get", "clusterkopfpeering", FULLNAME, "-o", "json").stdout)
        assert len(peering.get("status", {})) >= 2, "both replicas announce themselves in the chart's peering object"
        high.stop()
        deadline = time.monotonic() + 120
        while low.readyz() != (200, "ready"):
            if time.monotonic() > deadline:
                pytest.fail(f"the standby did not take over: {low.readyz()}\n{low.log_text()[-2000:]}")
            time.sleep(0.5)
        for op in (low, high):
            assert not re.search(r"\b403\b|Forbidden", op.log_text()), op.log_text()[-2000:]
    finally:
        low.stop()
        high.stop()


def test_probe_namespaces_that_do_not_exist_yet_do_not_fail_the_install(chart_cluster: Any, helm: Path) -> None:
    """probe.namespaces naming a namespace that does not exist: against the cluster (a server dry run, where the
    chart's lookup answers) it gets no Role instead of failing the install, and the notes name it."""
    proc = run_helm(helm, "install", "lookup", str(CHART), "--namespace", INSTALL_NS, "--dry-run=server",
                    *set_args({"probe.namespaces": ["chart-shop", "chart-not-yet"]}),
                    "--kubeconfig", str(chart_cluster.kubeconfig), timeout=120)
    manifest, _, notes = proc.stdout.partition("NOTES:")
    roles = [d["metadata"]["namespace"] for d in yaml.safe_load_all(manifest.split("MANIFEST:", 1)[1])
             if d and d["kind"] in ("Role", "RoleBinding")]
    assert roles == ["chart-shop", "chart-shop"]
    assert "do not exist yet: chart-not-yet" in notes, notes
