"""The monitoring stack end to end, as a user runs it (localcluster/monitoring.py): Debian's Prometheus scraping
``netpol-auditor run --probe`` the way the Prometheus Operator scrapes it through the chart's ServiceMonitor, with
the chart's own alert rules (``helm template``, waits shortened through ``prometheusRule.for``), and Debian's
Alertmanager sending to a webhook receiver this test runs.

* Flannel case (every node's enforcer switched off with the ``set-none`` fault): ``NetpolAuditorCNINotEnforcing``
  and ``NetpolAuditorPoliciesNotEnforced`` reach the receiver firing, with what a person needs to act (summary,
  ``runbook_url``, the namespaces and the policy); after ``heal`` they reach it resolved.
* kube-router enforcing: over a full probe cycle no alert is pending or firing in Prometheus (its ``ALERTS``
  series), none is active in Alertmanager and the receiver gets nothing.
* Every query of every panel of the shipped dashboard (the chart's ConfigMap), its variables set to values that
  exist, returns data from that Prometheus (or the panel is named below with the reason it has none).

One operator, one Prometheus and one Alertmanager serve the whole module; the probe interval is short.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from localcluster.monitoring import MonitoringStack, render_chart, start_for_chart
from tests.prober.harness import OperatorProcess, apply, install_crd, pods_running, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

T = TypeVar("T")

RELEASE = "audit"
INSTALL_NS = "netpol-auditor"  # the namespace the rendered release (and so its scrape target) is in
FULLNAME = f"{RELEASE}-netpol-auditor"
POD = f"{FULLNAME}-7d9f8b6c5-x2x4z"  # the operator pod the scrape target stands for
NAMESPACES = ("mon-front", "mon-back")
#: Chart values of the install the stack stands for: its ServiceMonitor (scraped every 2 s), its PrometheusRule
#: (every alert waits 10 s instead of 10-30 min) and its dashboard ConfigMap.
VALUES = {"serviceMonitor.enabled": True, "serviceMonitor.interval": "2s", "serviceMonitor.scrapeTimeout": "2s",
          "prometheusRule.enabled": True, "prometheusRule.for": {"*": "10s"}, "grafanaDashboard.enabled": True}
SCRAPE_SECONDS = 2.0
ALERT_WAIT = 10.0
CYCLE = "netpol_auditor_probe_cycle_last_completed_timestamp_seconds"

# web (mon-front) may reach api (mon-back) on 8080; only api may reach db on 5432.
WORKLOAD = """
apiVersion: v1
kind: Namespace
metadata: {name: mon-front}
---
apiVersion: v1
kind: Namespace
metadata: {name: mon-back}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: mon-front, labels: {app: web}}
spec:
  nodeName: node-1
  containers: [{name: web, image: web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: mon-back, labels: {app: api}}
spec:
  nodeName: node-2
  containers: [{name: api, image: api, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: mon-back, labels: {app: db}}
spec:
  nodeName: node-1
  containers: [{name: db, image: db, ports: [{containerPort: 5432}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-from-front, namespace: mon-back}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: mon-front}}}]
      ports: [{port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-api, namespace: mon-back}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: api}}}]
      ports: [{port: 5432}]
"""
POLICIES = {"mon-back/api-from-front", "mon-back/db-from-api"}


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    """The chart's documents for VALUES, rendered by the real ``helm template``."""
    return render_chart(VALUES, release=RELEASE, namespace=INSTALL_NS)


@dataclass
class Monitored:
    """The operator and the stack scraping it."""

    operator: OperatorProcess
    stack: MonitoringStack
    started: float  # time.time() when Prometheus started

    def cycles_after(self, t: float, n: int = 2, timeout: float = 120.0) -> float:
        """Wait until ``n`` probe cycles completed after ``t`` (with n=2, a whole cycle ran after ``t``); returns
        the completion time of the last."""
        done: list[float] = []

        def completed() -> bool:
            last = self.operator.value(CYCLE)
            if last > t and (not done or last > done[-1]):
                done.append(last)
            return len(done) >= n

        wait_for(f"{n} probe cycles completed", completed, timeout=timeout, interval=0.5)
        return done[-1]


@pytest.fixture(scope="module")
def monitored(cluster: Any, chart: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Monitored]:
    """The operator probing the mon-* namespaces, scraped by the stack; then the workload deployed (its watch
    events and first probes happen under Prometheus' eyes) until a probe cycle has judged both policies."""
    tmp = tmp_path_factory.mktemp("monitoring")
    install_crd(cluster)
    cluster.kubectl("delete", "namespace", "--ignore-not-found", "--wait=true", *NAMESPACES, timeout=180)
    operator = OperatorProcess(cluster.kubeconfig, tmp / "operator.log", "--probe",
                               "--namespace", "mon-*", "--probe-namespaces", "mon-*",
                               "--probe-interval", "5", "--log-format", "text")
    try:
        wait_for("the operator's /metrics", lambda: operator.value("netpol_auditor_build_info") == 1, timeout=60)
        started = time.time()
        stack = start_for_chart(chart, tmp / "stack", address=f"127.0.0.1:{operator.metrics_port}", pod=POD)
    except BaseException:
        operator.stop()
        raise
    try:
        stack.wait_scraped()
        # Rules evaluated before the first scrape see no metrics at all: NetpolAuditorDown is pending for a moment.
        wait_for("no alert pending once scraped", lambda: not stack.rule_alerts(), timeout=30)
        apply(cluster, "", text=WORKLOAD)
        wait_for("the workload's pods", lambda: pods_running(cluster, NAMESPACES), timeout=120)
        wait_for("both policies judged by a probe cycle", lambda: {
            f"{s.labels['namespace']}/{s.labels['policy']}"
            for s in operator.samples("netpol_auditor_policy_enforced")} == POLICIES, timeout=120)
        yield Monitored(operator, stack, started)
    finally:
        stack.stop()
        operator.stop()
        cluster.kubectl("delete", "namespace", "--ignore-not-found", "--wait=false", *NAMESPACES)


@dataclass
class Episode:
    """What the receiver got while the cluster enforced nothing, and after it was healed."""

    fired: list[dict[str, Any]]  # alerts firing at the receiver once both enforcement alerts were, for each policy
    alertmanager: list[dict[str, Any]]  # Alertmanager's active alerts then
    at: float  # that moment
    after_heal: list[dict[str, Any]] | None  # every alert received since the fault, in its latest state, once all
    # were resolved or the wait ended (None: a cluster with no enforcer to heal to)


ENFORCEMENT_ALERTS = ("NetpolAuditorCNINotEnforcing", "NetpolAuditorPoliciesNotEnforced")


def _poll(check: Callable[[], T], timeout: float) -> T:
    """Call *check* until its result is truthy or *timeout* seconds passed; its last result."""
    deadline = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return result


@pytest.fixture(scope="module")
def flannel_episode(monitored: Monitored, cluster: Any) -> Episode:
    """Every node switched to the Flannel case until both enforcement alerts reach the receiver firing (the
    per-policy one for each policy), then healed until every alert that fired reaches it resolved and Prometheus
    has no pending or firing alert left. The tests judge what was received; the waits here only end early."""
    receiver = monitored.stack.receiver
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json"))["items"]
    # On a cluster that never enforced, the alerts may have reached the receiver already (and are repeated only
    # after repeat_interval).
    since = monitored.started if cluster.enforcer == "none" else time.time()
    for node in nodes:
        assert cluster.fault("set-none", node["metadata"]["name"]) == 0

    def latest() -> list[dict[str, Any]]:
        return list({a["fingerprint"]: a for a in receiver.alerts(since)}.values())  # the last received wins

    def firing() -> list[dict[str, Any]]:
        alerts = [a for a in latest() if a["status"] == "firing"]
        policies = {a["labels"].get("policy") for a in alerts
                    if a["labels"]["alertname"] == "NetpolAuditorPoliciesNotEnforced"}
        names = {a["labels"]["alertname"] for a in alerts}
        return alerts if set(ENFORCEMENT_ALERTS) <= names and policies >= POLICIES else []

    try:
        fired = _poll(firing, timeout=150) or [a for a in latest() if a["status"] == "firing"]
        at = time.time()
        alertmanager = monitored.stack.alertmanager_alerts()
    finally:  # the later test modules get the cluster as it was
        if cluster.enforcer != "none":
            assert cluster.fault("heal") == 0
    if cluster.enforcer == "none":
        return Episode(fired, alertmanager, at, None)
    _poll(lambda: all(a["status"] == "resolved" for a in latest()), timeout=150)
    after_heal = latest()
    _poll(lambda: not monitored.stack.rule_alerts(), timeout=90)
    return Episode(fired, alertmanager, at, after_heal)


def test_the_operator_is_scraped_as_through_the_service_monitor(monitored: Monitored) -> None:
    """The target labels the Prometheus Operator gives the chart's ServiceMonitor, which the chart's alerts select
    (job and namespace); the series' own `namespace` label is kept as `exported_namespace`."""
    (target,) = monitored.stack.targets()
    labels = dict(target["labels"])
    assert labels.pop("instance") == f"127.0.0.1:{monitored.operator.metrics_port}"
    assert labels == {"job": f"{FULLNAME}-metrics", "namespace": INSTALL_NS, "service": f"{FULLNAME}-metrics",
                      "endpoint": "metrics", "pod": POD, "container": "operator"}
    (series, *_) = monitored.stack.query("netpol_auditor_policy_selected_pods")
    assert (series["metric"]["namespace"], series["metric"]["exported_namespace"]) == (INSTALL_NS, "mon-back")


def test_kube_router_no_alert_over_a_full_probe_cycle(monitored: Monitored, cluster: Any) -> None:
    if cluster.enforcer == "none":
        pytest.skip("the session cluster enforces nothing (LOCALCLUSTER_TEST_ENFORCER=none)")
    # The window opens once nothing is pending: the workload's first probes (or an earlier test's heal) may race
    # kube-router's programming; a lasting fault keeps its alert pending, then firing, and fails this wait.
    wait_for("no alert pending or firing", lambda: not monitored.stack.rule_alerts(), timeout=60)
    start = time.time()
    end = monitored.cycles_after(start)
    # An alert's condition seen even once would show in the ALERTS series (alertstate pending, then firing).
    time.sleep(ALERT_WAIT + SCRAPE_SECONDS)
    now = time.time()
    alerts = monitored.stack.query(f"count_over_time(ALERTS[{now - start:.0f}s])", at=now)
    assert alerts == [], [a["metric"] for a in alerts]
    assert monitored.stack.rule_alerts() == []
    assert monitored.stack.alertmanager_alerts() == []
    assert monitored.stack.receiver.alerts(start) == []
    # and the cycle did judge the policies: enforced, as the operator says
    enforced = monitored.stack.query("netpol_auditor_policy_enforced", at=end + SCRAPE_SECONDS * 2)
    assert {(s["metric"]["exported_namespace"] + "/" + s["metric"]["policy"], s["value"][1])
            for s in enforced} == {(p, "1") for p in POLICIES}


README_RUNBOOKS = "https://github.com/netpol-auditor/netpol-auditor/blob/main/README.md#"


def test_flannel_enforcement_alerts_fire_with_what_to_act_on(flannel_episode: Episode) -> None:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for alert in flannel_episode.fired:
        by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
    # these two, and nothing else: the per-feature alert is silent while the CNI enforces nothing at all
    assert set(by_name) == set(ENFORCEMENT_ALERTS), sorted(by_name)
    (cni,) = {a["fingerprint"]: a for a in by_name["NetpolAuditorCNINotEnforcing"]}.values()
    assert cni["labels"]["severity"] == "critical"
    assert cni["annotations"]["summary"] == "The CNI enforces none of the probed NetworkPolicies."
    assert cni["annotations"]["runbook_url"] == README_RUNBOOKS + "netpolauditorcninotenforcing"
    assert "1. " in cni["annotations"]["runbook"]
    # One alert per namespace pair, port and deciding policy of the traffic the CNI lets through (e.g. web -> db
    # on 5432, db-from-api; db -> api on 8080, api-from-front), named in its labels and summary.
    unenforced = {a["fingerprint"]: a for a in by_name["NetpolAuditorPoliciesNotEnforced"]}.values()
    assert {a["labels"]["policy"] for a in unenforced} == POLICIES
    for alert in unenforced:
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] == "critical"
        assert labels["destination_namespace"] == "mon-back" and labels["source_namespace"] in NAMESPACES
        assert annotations["summary"] == (
            f"Traffic the NetworkPolicies deny gets through: {labels['source_namespace']} -> "
            f"{labels['destination_namespace']} {labels['port']}/{labels['protocol']} (policy {labels['policy']}).")
        assert annotations["runbook_url"] == README_RUNBOOKS + "netpolauditorpoliciesnotenforced"
        assert re.match(r"Probe pods keep connecting on paths the policies deny \(class pairs: \d+\)",
                        annotations["description"]), annotations["description"]
        assert "reason=PolicyNotEnforced" in annotations["runbook"]
    # Alertmanager holds them active, with the same labels
    active = {(a["labels"]["alertname"], a["labels"].get("policy")) for a in flannel_episode.alertmanager
              if a["status"]["state"] == "active"}
    assert active >= {("NetpolAuditorCNINotEnforcing", None),
                      *(("NetpolAuditorPoliciesNotEnforced", p) for p in POLICIES)}


def test_flannel_enforcement_alerts_resolve_after_the_heal(flannel_episode: Episode) -> None:
    if flannel_episode.after_heal is None:
        pytest.skip("the session cluster enforces nothing (LOCALCLUSTER_TEST_ENFORCER=none): no enforcer to heal to")
    latest = {a["fingerprint"]: a for a in flannel_episode.after_heal}
    assert {a["fingerprint"] for a in flannel_episode.fired} <= set(latest)
    still = [(a["labels"]["alertname"], a["labels"].get("policy")) for a in latest.values()
             if a["status"] != "resolved"]
    assert not still, f"received firing and never resolved: {still}"
    assert {a["labels"]["alertname"] for a in latest.values()} == set(ENFORCEMENT_ALERTS)
    assert all(a["endsAt"] > a["startsAt"] and a["received"] > flannel_episode.at for a in latest.values())


#: Dashboard queries that return nothing here although nothing is wrong: (panel title, refId) -> why.
NO_DATA = {
    ("Probe connections by result", "B"): "no probe was inconclusive, and netpol_auditor_probes_inconclusive_total "
                                          "has a series only per reason that occurred",
}
STEP = 5.0  # seconds between the points of a range query (Grafana's $__interval)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _variables(dashboard: dict[str, Any], stack: MonitoringStack, start: float, end: float) -> dict[str, str]:
    """Each query variable set to every value it offers (``label_values(selector, label)`` against the stack),
    as Grafana writes a multi-value variable into a regex matcher; plus the interval variables."""
    rate_interval = max(STEP + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)  # Grafana's definition of $__rate_interval
    out = {"$__rate_interval": f"{rate_interval:.0f}s", "$__interval": f"{STEP:.0f}s"}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"])
        assert m, variable
        selector = m.group(1)
        for name, value in out.items():
            selector = selector.replace(name, value)
        values = stack.label_values(m.group(2), selector, start, end)
        assert values and all(re.fullmatch(r"[\w.-]+", v) for v in values), (variable["name"], values)
        out[f"${variable['name']}"] = "|".join(sorted(values))
    return out


def _has_data(result: list[dict[str, Any]]) -> bool:
    points = [s["value"] for s in result if "value" in s] + [v for s in result for v in s.get("values", [])]
    return any(value not in ("NaN", "+Inf", "-Inf") for _, value in points)


def test_every_dashboard_panel_returns_data(monitored: Monitored, chart: list[dict[str, Any]],
                                            flannel_episode: Episode) -> None:
    """The dashboard the chart ships (its ConfigMap), every target of every panel, run as Grafana runs it: table
    targets (``instant``) at one moment while the Flannel case's alerts fired, the others as range queries from
    the stack's start to that moment."""
    (configmap,) = [d for d in chart if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    dashboard = json.loads(configmap["data"]["netpol-auditor.json"])
    stack, at = monitored.stack, flannel_episode.at
    variables = _variables(dashboard, stack, monitored.started, at)
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(name, value)
            assert not re.search(r"\$(?!\d)\w+|\$\{", expr), f"{panel['title']}: variable left in {expr}"
            results[(panel["title"], target["refId"])] = (
                stack.query(expr, at=at) if target.get("instant") else
                stack.query_range(expr, monitored.started, at, STEP))
    empty = {key for key, result in results.items() if not _has_data(result)}
    assert empty == set(NO_DATA), f"panels without data: {sorted(empty - set(NO_DATA))}"
    assert not monitored.operator.samples("netpol_auditor_probes_inconclusive_total")
    # The per-policy table names each policy's own namespace (not the operator pod's), violated here.
    rows = {(s["metric"]["namespace"], s["metric"]["policy"], s["value"][1])
            for s in results[("Per-policy enforcement", "A")]}
    assert rows == {(*p.split("/"), "0") for p in POLICIES}
    selected = {(s["metric"]["namespace"], s["metric"]["policy"]) for s in results[("Per-policy enforcement", "B")]}
    assert selected == {tuple(p.split("/")) for p in POLICIES}
    assert {s["metric"]["policy"] for s in results[("Current mismatches", "A")]} == POLICIES
