"""The chart documents itself: every value has a helm-docs comment, a schema entry and a README row."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import yaml
from chart_helpers import CHART, ROOT

VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
CHART_README = CHART / "README.md"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")


def documented_values() -> dict[str, str]:
    """Dotted key -> its `# --` description, for every key helm-docs documents (leaves or documented maps).

    A key is documented by a comment block starting with `# --` right above it; keys inside a documented map are
    covered by it. Fails on a leaf nobody documents.
    """
    out: dict[str, str] = {}
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    comment: list[str] = []
    undocumented = []
    for line in VALUES.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        m = KEY.match(line)
        if not m:
            if not stripped:
                comment = []
            continue
        indent = len(m.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k, _ in stack] + [m.group("key")])
        doc_start = next((i for i, c in enumerate(comment) if c.startswith("-- ")), None)
        documented = doc_start is not None
        covered = any(d for _, _, d in stack)
        if documented:
            out[path] = " ".join(comment[doc_start:]).removeprefix("-- ")
        is_leaf = m.group("rest").strip() not in ("",)
        if is_leaf and not documented and not covered:
            undocumented.append(path)
        stack.append((indent, m.group("key"), documented or covered))
        comment = []
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
    return out


def _schema_has(schema: dict[str, Any], path: str) -> bool:
    node = schema
    for part in path.split("."):
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


def test_every_value_is_documented_helm_docs_style() -> None:
    docs = documented_values()
    assert len(docs) >= 40
    for key in ("replicaCount", "probe.image.repository", "probe.maxPods", "probe.intervalSeconds", "metrics.port",
                "serviceMonitor.enabled", "prometheusRule.enabled", "grafanaDashboard.enabled",
                "networkPolicy.enabled", "nodeSelector", "tolerations", "affinity", "priorityClassName",
                "probe.namespaces", "namespaces"):
        assert docs.get(key), key


def test_schema_covers_every_documented_value() -> None:
    schema = json.loads(SCHEMA.read_text())
    missing = [k for k in documented_values() if not _schema_has(schema, k)]
    assert not missing, missing


def test_values_file_matches_the_schema_types() -> None:
    """The defaults themselves are valid (helm would refuse the chart otherwise); spot-check the typed leaves."""
    values = yaml.safe_load(VALUES.read_text())
    schema = json.loads(SCHEMA.read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_chart_readme_lists_every_value() -> None:
    text = CHART_README.read_text()
    missing = [k for k in documented_values() if f"`{k}`" not in text]
    assert not missing, f"charts/netpol-auditor/README.md does not document: {missing}"


def test_chart_readme_lists_every_alert() -> None:
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    text = CHART_README.read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"`{rule['alert']}`" in text, rule["alert"]


def test_dashboard_json_is_generated() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "charts" / "generate_dashboard.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_dashboard_layout_is_valid() -> None:
    """Unique panel ids, every panel inside Grafana's 24-column grid, no two panels overlapping."""
    dash = json.loads((CHART / "files" / "dashboard.json").read_text())
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    assert dash["uid"] == "netpol-auditor"
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "job", "port"}
