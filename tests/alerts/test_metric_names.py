"""Every PromQL expression of the alerts and the dashboard uses metrics of README.md's catalogue, and parses.

The catalogue is the contract the operator and prober export (tests/chart/test_chart_cluster.py checks the names
against a live /metrics scrape of the operator).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RULES = ROOT / "charts" / "netpol-auditor" / "files" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "charts" / "netpol-auditor" / "files" / "dashboard.json"
METRIC = re.compile(r"\bnetpol_auditor_[a-z0-9_]+\b")
# Grafana's variables, replaced by values Prometheus accepts so promtool can parse the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$port": ".*"}
#: A Grafana variable reference (`$name`, `${name}`); `$1` is label_replace's capture group, left alone by Grafana.
GRAFANA_VARIABLE = re.compile(r"\$(?!\d)\w+|\$\{")


def catalogue() -> dict[str, str]:
    """metric name -> type, from README.md's metrics tables."""
    out = {}
    for line in README.read_text().splitlines():
        m = re.match(r"^\| `(netpol_auditor_[a-z0-9_]+)` \| ([a-z]+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def series_names() -> set[str]:
    """The series names the catalogue's metrics expose (histograms as _bucket/_sum/_count)."""
    names = set()
    for name, kind in catalogue().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def rule_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    for panel in _walk_panels(dash["panels"]):
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target['refId']}", target["expr"]
    for variable in dash["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            yield f"variable {variable['name']}", query["query"]


def all_expressions() -> list[tuple[str, str]]:
    return [*rule_expressions(), *dashboard_expressions()]


def test_catalogue_is_readable() -> None:
    cat = catalogue()
    assert len(cat) >= 20
    assert cat["netpol_auditor_mismatches"] == "gauge"
    assert cat["netpol_auditor_probes_total"] == "counter"
    assert cat["netpol_auditor_probe_pod_duration_seconds"] == "histogram"


@pytest.mark.parametrize(("where", "expr"), all_expressions(), ids=[w for w, _ in all_expressions()])
def test_expression_uses_only_catalogued_metrics(where: str, expr: str) -> None:
    used = set(METRIC.findall(expr))
    assert used, f"{where}: no netpol-auditor metric in {expr!r}"
    unknown = used - series_names()
    assert not unknown, f"{where}: not in README.md's catalogue: {sorted(unknown)}"


def test_dashboard_and_alerts_cover_the_enforcement_metrics() -> None:
    """The issue's panels and alerts: mismatches, per-policy enforcement, CNI features, probes, paths, index."""
    used = {m for _, expr in all_expressions() for m in METRIC.findall(expr)}
    for name in ("netpol_auditor_mismatches", "netpol_auditor_policy_enforced", "netpol_auditor_cni_feature_enforced",
                 "netpol_auditor_probes_total", "netpol_auditor_probe_coverage_ratio", "netpol_auditor_paths",
                 "netpol_auditor_index_objects", "netpol_auditor_index_last_event_timestamp_seconds",
                 "netpol_auditor_probe_cycle_last_completed_timestamp_seconds"):
        assert name in used, name


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses every dashboard query (wrapped as recording rules, Grafana variables substituted)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: localcluster/setup.sh installs the Debian package prometheus")
    rules = []
    for i, (_, expr) in enumerate(dashboard_expressions()):
        if expr.startswith("label_values("):
            continue  # a Grafana function, not PromQL; its metric name is checked above
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert not GRAFANA_VARIABLE.search(expr), f"unknown Grafana variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout
