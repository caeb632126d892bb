"""The chart's Prometheus objects: ServiceMonitor scrape options, and the PrometheusRule of this release."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
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
