"""The scrape config localcluster/monitoring.py derives from the chart's ServiceMonitor, checked by the real
``promtool`` (no cluster): the Prometheus Operator's relabelings, the ServiceMonitor's own ones translated."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from localcluster.monitoring import render_chart, service_monitor_scrape_config

ADD_CLUSTER = [{"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"}]
DROP_PATHS = [{"action": "drop", "sourceLabels": ["__name__"], "regex": "netpol_auditor_paths"}]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return render_chart({"serviceMonitor.enabled": True, "serviceMonitor.interval": "15s",
                         "serviceMonitor.relabelings": ADD_CLUSTER, "serviceMonitor.metricRelabelings": DROP_PATHS},
                        release="audit", namespace="monitoring-a")


def test_scrape_config_of_the_service_monitor(chart: list[dict[str, Any]], tmp_path: Path) -> None:
    config = service_monitor_scrape_config(_one(chart, "ServiceMonitor"), _one(chart, "Service"),
                                           address="127.0.0.1:9090", pod="audit-netpol-auditor-0",
                                           container="operator")
    assert config["job_name"] == "serviceMonitor/monitoring-a/audit-netpol-auditor/0"
    assert config["honor_labels"] is False, "the chart's ServiceMonitor leaves honorLabels false"
    assert (config["scrape_interval"], config["scrape_timeout"], config["metrics_path"]) == ("15s", "10s", "/metrics")
    relabel = config["relabel_configs"]
    targets = {r["target_label"]: r for r in relabel if "target_label" in r}
    assert targets["job"]["source_labels"] == ["__meta_kubernetes_service_name"]
    assert targets["namespace"]["source_labels"] == ["__meta_kubernetes_namespace"]
    assert relabel[-1] == {"action": "replace", "target_label": "cluster", "replacement": "eu-1"}
    assert config["metric_relabel_configs"] == [{"action": "drop", "source_labels": ["__name__"],
                                                 "regex": "netpol_auditor_paths"}]
    (static,) = config["static_configs"]
    assert static["labels"]["__meta_kubernetes_service_name"] == "audit-netpol-auditor-metrics"
    assert static["labels"]["__meta_kubernetes_namespace"] == "monitoring-a"
    # the selector's keep rules are satisfied by the Service's own labels
    keeps = [r for r in relabel if r.get("action") == "keep"]
    assert len(keeps) == 1 + len(_one(chart, "ServiceMonitor")["spec"]["selector"]["matchLabels"])
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: localcluster/setup.sh installs the Debian package prometheus")
    path = tmp_path / "prometheus.yaml"
    path.write_text(yaml.safe_dump({"scrape_configs": [config]}))
    proc = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_service_monitor_that_does_not_select_the_namespace_is_refused(chart: list[dict[str, Any]]) -> None:
    service = _one(chart, "Service")
    elsewhere = {**service, "metadata": {**service["metadata"], "namespace": "other"}}
    with pytest.raises(ValueError, match="does not select namespace other"):
        service_monitor_scrape_config(_one(chart, "ServiceMonitor"), elsewhere, address="127.0.0.1:9090",
                                      pod="p", container="c")
