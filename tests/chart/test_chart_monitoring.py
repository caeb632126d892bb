"""The chart's Prometheus objects: ServiceMonitor scrape options, and the PrometheusRule of this release."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, RELEASE, Render, one, run_helm, set_args

FULLNAME = f"{RELEASE}-netpol-auditor"
DROP_PATHS = [{"action": "drop", "sourceLabels": ["__name__"], "regex": "netpol_auditor_paths"}]
ADD_CLUSTER = [{"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"}]


def _endpoint(docs: list[dict[str, Any]]) -> dict[str, Any]:
    endpoints = one(docs, "ServiceMonitor", FULLNAME)["spec"]["endpoints"]
    assert len(endpoints) == 1
    return dict(endpoints[0])


def test_service_monitor_scrape_options(render: Render) -> None:
    docs = render({"serviceMonitor.enabled": True, "serviceMonitor.interval": "1m",
                   "serviceMonitor.scrapeTimeout": "20s", "serviceMonitor.relabelings": ADD_CLUSTER,
                   "serviceMonitor.metricRelabelings": DROP_PATHS,
                   "serviceMonitor.labels": {"release": "prom"},
                   "serviceMonitor.annotations": {"example.com/owner": "netsec"}})
    endpoint = _endpoint(docs)
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "20s")
    assert endpoint["relabelings"] == ADD_CLUSTER and endpoint["metricRelabelings"] == DROP_PATHS
    metadata = one(docs, "ServiceMonitor", FULLNAME)["metadata"]
    assert metadata["labels"]["release"] == "prom"
    assert metadata["annotations"] == {"example.com/owner": "netsec"}


def test_service_monitor_defaults_and_empty_options(render: Render) -> None:
    endpoint = _endpoint(render({"serviceMonitor.enabled": True}))
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")
    assert "relabelings" not in endpoint and "metricRelabelings" not in endpoint
    bare = _endpoint(render({"serviceMonitor.enabled": True, "serviceMonitor.interval": "",
                             "serviceMonitor.scrapeTimeout": ""}))
    assert "interval" not in bare and "scrapeTimeout" not in bare  # Prometheus' own defaults


@pytest.mark.parametrize(("values", "complaint"), [
    ({"serviceMonitor.interval": "30"}, "/serviceMonitor/interval"),
    ({"serviceMonitor.scrapeTimeout": 10}, "/serviceMonitor/scrapeTimeout"),
    ({"serviceMonitor.relabelings": {"action": "drop"}}, "/serviceMonitor/relabelings"),
    ({"serviceMonitor.metricRelabelings": ["drop"]}, "/serviceMonitor/metricRelabelings"),
])
def test_schema_rejects_wrong_service_monitor_values(helm: Path, values: dict[str, Any], complaint: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *set_args(values), check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr and complaint in proc.stderr, proc.stderr


RULES = CHART / "files" / "prometheus-rules.yaml"
PLACEHOLDER = 'job="netpol-auditor"'
RUNBOOK_BASE = "https://github.com/netpol-auditor/netpol-auditor/blob/main/README.md"


def _alerts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = one(docs, "PrometheusRule", FULLNAME)["spec"]
    return [r for g in spec["groups"] for r in g["rules"] if "alert" in r]


def test_alerts_select_this_releases_metrics(render: Render) -> None:
    """The job the ServiceMonitor gives the metrics is the Service's name; the namespace label is the Service's."""
    docs = render({"prometheusRule.enabled": True, "serviceMonitor.enabled": True}, namespace="monitoring-a")
    service = one(docs, "Service", f"{FULLNAME}-metrics")
    release_selector = f'job="{service["metadata"]["name"]}",namespace="monitoring-a"'
    plain = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    for alert in _alerts(docs):
        assert PLACEHOLDER not in alert["expr"]
        assert alert["expr"] == plain[alert["alert"]]["expr"].replace(PLACEHOLDER, release_selector)
        assert release_selector in alert["expr"]
    other = render({"prometheusRule.enabled": True}, namespace="monitoring-b")
    assert {a["expr"] for a in _alerts(other)}.isdisjoint({a["expr"] for a in _alerts(docs)})


def test_alerts_take_an_own_selector_and_runbook_base(render: Render) -> None:
    docs = render({"prometheusRule.enabled": True, "prometheusRule.selector": 'job="kubernetes-pods",app="auditor"',
                   "prometheusRule.runbookBaseUrl": "https://wiki.example.com/netpol-auditor"})
    for alert in _alerts(docs):
        assert 'job="kubernetes-pods",app="auditor"' in alert["expr"] and PLACEHOLDER not in alert["expr"]
        assert alert["annotations"]["runbook_url"] == \
            f"https://wiki.example.com/netpol-auditor#{alert['alert'].lower()}"
    default = _alerts(render({"prometheusRule.enabled": True}))
    assert all(a["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{a['alert'].lower()}" for a in default)


def test_rendered_rules_are_valid_for_promtool(render: Render, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: localcluster/setup.sh installs the Debian package prometheus")
    for i, values in enumerate([{}, {"prometheusRule.selector": 'job=~"netpol.*",cluster!="dev"'}]):
        spec = one(render({"prometheusRule.enabled": True, **values}), "PrometheusRule")["spec"]
        path = tmp_path / f"rules-{i}.yaml"
        path.write_text(yaml.safe_dump(spec))
        proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_waits_from_values(render: Render) -> None:
    """prometheusRule.for replaces the `for:` of the alerts it names, "*" that of every other one; nothing else of
    the rules changes. Without it the rules file's own waits stay."""
    plain = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    default = {a["alert"]: a["for"] for a in _alerts(render({"prometheusRule.enabled": True}))}
    assert default == {name: rule["for"] for name, rule in plain.items()}
    named = {a["alert"]: a["for"] for a in _alerts(render({"prometheusRule.enabled": True, "prometheusRule.for": {
        "NetpolAuditorDown": "2m", "NetpolAuditorCNINotEnforcing": "90s"}}))}
    assert named == {**default, "NetpolAuditorDown": "2m", "NetpolAuditorCNINotEnforcing": "90s"}
    short = _alerts(render({"prometheusRule.enabled": True,
                            "prometheusRule.for": {"*": "10s", "NetpolAuditorDown": "1m"}}))
    assert {a["alert"]: a["for"] for a in short} == {name: "1m" if name == "NetpolAuditorDown" else "10s"
                                                     for name in plain}
    unchanged = {a["alert"]: {k: v for k, v in a.items() if k != "for"} for a in _alerts(
        render({"prometheusRule.enabled": True, "prometheusRule.selector": PLACEHOLDER}))}
    assert unchanged == {name: {k: v for k, v in rule.items() if k != "for"} for name, rule in plain.items()}


def test_schema_knows_exactly_the_alerts_a_wait_can_name() -> None:
    """A misspelt alert name in prometheusRule.for would change nothing: the schema lists the rules file's alerts."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["properties"]["prometheusRule"]["properties"]["for"]["propertyNames"]["enum"]
    alerts = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert sorted(names) == sorted(["*", *alerts])


@pytest.mark.parametrize(("values", "complaint"), [
    ({"prometheusRule.for": {"NetpolAuditorDwn": "1m"}}, "invalid propertyName 'NetpolAuditorDwn'"),
    ({"prometheusRule.for": {"*": "5 minutes"}}, "/prometheusRule/for/*"),
    ({"prometheusRule.for": {"NetpolAuditorDown": 300}}, "/prometheusRule/for/NetpolAuditorDown"),
    ({"prometheusRule.selector": "job=netpol"}, "/prometheusRule/selector"),
    ({"prometheusRule.selector": '{job="netpol"}'}, "/prometheusRule/selector"),
    ({"prometheusRule.runbookBaseUrl": "README.md"}, "/prometheusRule/runbookBaseUrl"),
    ({"prometheusRule.runbookBaseUrl": "https://example.com/x#alerts"}, "/prometheusRule/runbookBaseUrl"),
])
def test_schema_rejects_wrong_prometheus_rule_values(helm: Path, values: dict[str, Any], complaint: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *set_args(values), check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr and complaint in proc.stderr, proc.stderr
