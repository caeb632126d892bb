"""Generate the Grafana dashboard the chart ships (charts/netpol-auditor/files/dashboard.json).

The JSON is written from this file so panels stay consistent (one datasource variable, one layout grid) and the
metric names stay those of README.md's catalogue; tests/chart/test_dashboard.py checks the committed JSON is what
this script produces. Usage: python charts/generate_dashboard.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARD_PATH", "dashboard", "render"]

DASHBOARD_PATH = Path(__file__).resolve().parent / "netpol-auditor" / "files" / "dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Every query is restricted to the selected operator instances.
SEL = 'job=~"$job"'
# The target labels a ServiceMonitor scrape adds (the operator pod's own namespace, pod, ...): noise in tables.
TARGET_LABELS = ("job", "instance", "namespace", "pod", "service", "container", "endpoint")


def _own_namespace(selector: str) -> str:
    """The series' own `namespace` label (a policy's, a pod's), however the operator is scraped: through a
    ServiceMonitor (`honorLabels` false) the scrape target's `namespace` (the operator's) wins and the series' own is
    kept as `exported_namespace`, which this copies back; scraped without a `namespace` target label it is left
    alone."""
    return f'label_replace({selector}, "namespace", "$1", "exported_namespace", "(.+)")'


class _Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to new rows."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, width: int, height: int) -> dict[str, int]:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = {"x": self.x, "y": self.y, "w": width, "h": height}
        self.x += width
        self.row_height = max(self.row_height, height)
        return pos

    def row(self, title: str) -> dict[str, Any]:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel = {"type": "row", "title": title, "id": self._id(), "collapsed": False, "panels": [],
                 "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}}
        self.y += 1
        return panel

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "refId": ref, "legendFormat": legend}
    if instant:
        target.update({"instant": True, "range": False, "format": "table"})
    return target


def _panel(layout: _Layout, kind: str, title: str, description: str, targets: list[dict[str, Any]],
           width: int, height: int, **extra: Any) -> dict[str, Any]:
    panel: dict[str, Any] = {"type": kind, "title": title, "description": description, "id": layout._id(),
                             "datasource": DATASOURCE, "gridPos": layout.place(width, height), "targets": targets}
    panel.update(extra)
    return panel


def _unit(unit: str, **defaults: Any) -> dict[str, Any]:
    return {"fieldConfig": {"defaults": {"unit": unit, **defaults}, "overrides": []}}


def _thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def dashboard() -> dict[str, Any]:
    """The dashboard as a Python object."""
    lay = _Layout()
    panels: list[dict[str, Any]] = []
    add = panels.append

    add(lay.row("Enforcement"))
    add(_panel(lay, "stat", "Mismatches now", "Class pairs where the CNI does not do what the policies say.",
               [_target(f"sum(netpol_auditor_mismatches{{{SEL}}}) or vector(0)")], 4, 4,
               **_unit("none", thresholds=_thresholds((None, "green"), (1, "red")))))
    add(_panel(lay, "stat", "Policies enforced", "Probed NetworkPolicies confirmed enforced.",
               [_target(f"count(netpol_auditor_policy_enforced{{{SEL}}} == 1) or vector(0)")], 4, 4,
               **_unit("none")))
    add(_panel(lay, "stat", "Policies violated", "Probed NetworkPolicies the CNI does not enforce.",
               [_target(f"count(netpol_auditor_policy_enforced{{{SEL}}} == 0) or vector(0)")], 4, 4,
               **_unit("none", thresholds=_thresholds((None, "green"), (1, "red")))))
    add(_panel(lay, "stat", "Probe coverage", "Class pairs confirmed in the current cycle / all planned.",
               [_target(f"max(netpol_auditor_probe_coverage_ratio{{{SEL}}})")], 4, 4,
               **_unit("percentunit", min=0, max=1)))
    add(_panel(lay, "stat", "Last probe cycle", "Time since the last complete probe cycle.",
               [_target(f"time() - max(netpol_auditor_probe_cycle_last_completed_timestamp_seconds{{{SEL}}})")],
               4, 4, **_unit("s", thresholds=_thresholds((None, "green"), (3600, "red")))))
    add(_panel(lay, "stat", "Path series capped", "1 when the path metrics hit --max-path-series.",
               [_target(f"max(netpol_auditor_path_series_capped{{{SEL}}})")], 4, 4,
               **_unit("bool", thresholds=_thresholds((None, "green"), (1, "orange")))))
    add(_panel(lay, "timeseries", "Mismatches over time",
               "Current prediction/observation mismatches by kind and namespace pair.",
               [_target(f"sum by (kind, source_namespace, destination_namespace) "
                        f"(netpol_auditor_mismatches{{{SEL}}})",
                        "{{kind}} {{source_namespace}} → {{destination_namespace}}"),
                _target(f"sum by (kind) (increase(netpol_auditor_mismatches_detected_total{{{SEL}}}"
                        f"[$__rate_interval]))", "detected {{kind}}", ref="B")], 12, 8, **_unit("none")))
    add(_panel(lay, "table", "Current mismatches", "Every current mismatch, with the deciding policy.",
               [_target(f"netpol_auditor_mismatches{{{SEL}}} > 0", instant=True)], 12, 8,
               transformations=[{"id": "organize", "options": {"excludeByName": {
                   "Time": True, "__name__": True, **dict.fromkeys(TARGET_LABELS, True)}}}]))
    add(_panel(lay, "table", "Per-policy enforcement",
               "1: confirmed enforced, 0: violated; pods each policy selects.",
               [_target(f"max by (namespace, policy) ({_own_namespace(f'netpol_auditor_policy_enforced{{{SEL}}}')})",
                        instant=True),
                _target(f"max by (namespace, policy) "
                        f"({_own_namespace(f'netpol_auditor_policy_selected_pods{{{SEL}}}')})", instant=True,
                        ref="B")], 12, 8,
               transformations=[{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                               "renameByName": {"Value #A": "enforced",
                                                                                "Value #B": "selected pods"}}}]))
    add(_panel(lay, "table", "CNI capabilities per node",
               "Which NetworkPolicy features the CNI enforces on each node (1 yes, 0 no; absent until probed).",
               [_target(f"max by (node, feature) (netpol_auditor_cni_feature_enforced{{{SEL}}})", instant=True)],
               12, 8,
               transformations=[{"id": "groupingToMatrix", "options": {"columnField": "feature", "rowField": "node",
                                                                       "valueField": "Value"}}]))

    add(lay.row("Paths (what the policies allow)"))
    add(_panel(lay, "table", "Allowed vs denied paths per namespace pair",
               "Ordered pod pairs the policies allow / deny, for the selected ports.",
               [_target(f'sum by (source_namespace, destination_namespace) '
                        f'(netpol_auditor_paths{{{SEL}, verdict="allowed", port=~"$port"}})', instant=True),
                _target(f'sum by (source_namespace, destination_namespace) '
                        f'(netpol_auditor_paths{{{SEL}, verdict="denied", port=~"$port"}})', instant=True, ref="B")],
               12, 10,
               transformations=[{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                               "renameByName": {"Value #A": "allowed",
                                                                                "Value #B": "denied"}}}]))
    add(_panel(lay, "table", "Denied share, source by destination namespace",
               "Fraction of pod pairs the policies deny: rows are source namespaces, columns destinations.",
               [_target(f'sum by (source_namespace, destination_namespace) '
                        f'(netpol_auditor_paths{{{SEL}, verdict="denied", port=~"$port"}}) / '
                        f'sum by (source_namespace, destination_namespace) '
                        f'(netpol_auditor_paths{{{SEL}, port=~"$port"}})', instant=True)], 12, 10,
               fieldConfig={"defaults": {"unit": "percentunit", "min": 0, "max": 1,
                                         "color": {"mode": "continuous-GrYlRd"},
                                         "custom": {"cellOptions": {"type": "color-background"}}},
                            "overrides": []},
               transformations=[{"id": "groupingToMatrix", "options": {"columnField": "destination_namespace",
                                                                       "rowField": "source_namespace",
                                                                       "valueField": "Value"}}]))
    add(_panel(lay, "timeseries", "Allowed and denied paths", "Totals over time.",
               [_target(f'sum by (verdict) (netpol_auditor_paths{{{SEL}, port=~"$port"}})', "{{verdict}}")],
               12, 8, **_unit("none")))
    add(_panel(lay, "timeseries", "Pods by isolation", "Pods isolated / not isolated, per direction.",
               [_target(f"sum by (direction, isolation) (netpol_auditor_pods{{{SEL}}})",
                        "{{direction}} {{isolation}}")], 12, 8, **_unit("none")))

    add(lay.row("Probes"))
    add(_panel(lay, "timeseries", "Probe connections by result", "Probe connections per second.",
               [_target(f"sum by (result) (rate(netpol_auditor_probes_total{{{SEL}}}[$__rate_interval]))",
                        "{{result}}"),
                _target(f"sum by (reason) (rate(netpol_auditor_probes_inconclusive_total{{{SEL}}}"
                        f"[$__rate_interval]))", "inconclusive: {{reason}}", ref="B")], 8, 8, **_unit("ops")))
    add(_panel(lay, "timeseries", "Probe pods", "Probe and responder pods alive (the budget caps it).",
               [_target(f"sum(netpol_auditor_probe_pods_running{{{SEL}}})", "running")], 8, 8, **_unit("none")))
    add(_panel(lay, "timeseries", "Probe pod run time", "Creation to result, 50th and 95th percentile.",
               [_target(f"histogram_quantile(0.5, sum by (le) (rate(netpol_auditor_probe_pod_duration_seconds_bucket"
                        f"{{{SEL}}}[$__rate_interval])))", "p50"),
                _target(f"histogram_quantile(0.95, sum by (le) (rate(netpol_auditor_probe_pod_duration_seconds_bucket"
                        f"{{{SEL}}}[$__rate_interval])))", "p95", ref="B")], 8, 8, **_unit("s")))
    add(_panel(lay, "timeseries", "Probe coverage", "Class pairs confirmed in the current cycle / all planned.",
               [_target(f"max(netpol_auditor_probe_coverage_ratio{{{SEL}}})", "coverage")], 12, 8,
               **_unit("percentunit", min=0, max=1)))
    add(_panel(lay, "timeseries", "Time since last probe cycle", "Alert NetpolAuditorProbesStale fires above 1h.",
               [_target(f"time() - max(netpol_auditor_probe_cycle_last_completed_timestamp_seconds{{{SEL}}})",
                        "age")], 12, 8, **_unit("s")))

    add(lay.row("Index"))
    add(_panel(lay, "timeseries", "Index size", "Objects in the reachability index, and pod equivalence classes.",
               [_target(f"sum by (kind) (netpol_auditor_index_objects{{{SEL}}})", "{{kind}}"),
                _target(f"sum(netpol_auditor_index_equivalence_classes{{{SEL}}})", "equivalence classes",
                        ref="B")], 8, 8, **_unit("none")))
    add(_panel(lay, "timeseries", "Watch events applied", "Events per second by kind and type.",
               [_target(f"sum by (kind, type) (rate(netpol_auditor_index_events_total{{{SEL}}}[$__rate_interval]))",
                        "{{kind}} {{type}}")], 8, 8, **_unit("ops")))
    add(_panel(lay, "timeseries", "Index lag", "Event apply time (p99) and time since the index last changed.",
               [_target(f"histogram_quantile(0.99, sum by (le, kind) "
                        f"(rate(netpol_auditor_index_event_apply_duration_seconds_bucket{{{SEL}}}"
                        f"[$__rate_interval])))", "apply p99 {{kind}}"),
                _target(f"time() - max(netpol_auditor_index_last_event_timestamp_seconds{{{SEL}}})",
                        "since last change", ref="B")], 8, 8, **_unit("s")))
    add(_panel(lay, "table", "CNI-specific policies (out of model)",
               "Cilium, Calico and Antrea policies per kind, and the pods they select: those pods' paths are out of "
               "model, never judged by the prober (inconclusive, foreign_policy).",
               [_target(f"max by (group, kind) (netpol_auditor_foreign_policies{{{SEL}}})", instant=True),
                _target(f"max by (group, kind) (netpol_auditor_foreign_policy_selected_pods{{{SEL}}})",
                        instant=True, ref="B")], 12, 8,
               transformations=[{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True},
                                                               "renameByName": {"Value #A": "policies",
                                                                                "Value #B": "selected pods"}}}]))

    variables = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
         "current": {}, "hide": 0},
        {"name": "job", "type": "query", "label": "Job", "datasource": DATASOURCE,
         "query": {"query": "label_values(netpol_auditor_build_info, job)", "refId": "job"},
         "definition": "label_values(netpol_auditor_build_info, job)", "includeAll": True, "multi": True,
         "allValue": ".*", "current": {}, "refresh": 2, "hide": 0},
        {"name": "port", "type": "query", "label": "Port", "datasource": DATASOURCE,
         "query": {"query": 'label_values(netpol_auditor_paths{job=~"$job"}, port)', "refId": "port"},
         "definition": 'label_values(netpol_auditor_paths{job=~"$job"}, port)', "includeAll": True,
         "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "hide": 0},
    ]
    return {
        "title": "netpol-auditor",
        "uid": "netpol-auditor",
        "description": "Are the NetworkPolicies enforced? Predictions, probes and mismatches from netpol-auditor.",
        "tags": ["netpol-auditor", "networkpolicy", "kubernetes"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "1m",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": variables},
        "panels": panels,
    }


def render() -> str:
    """The dashboard JSON text, exactly as committed."""
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if DASHBOARD_PATH.read_text(encoding="utf-8") != text:
            print(f"{DASHBOARD_PATH} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
