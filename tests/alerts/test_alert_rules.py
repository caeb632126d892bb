"""The alerts, checked and unit-tested by the real ``promtool`` (Debian package ``prometheus``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "netpol-auditor" / "files" / "prometheus-rules.yaml"
UNIT_TESTS = Path(__file__).resolve().parent / "netpol_auditor_rules_test.yaml"
SEVERITIES = {"critical", "warning", "info"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: localcluster/setup.sh installs the Debian package prometheus")
    return path


def _alerts() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout


def test_promtool_unit_tests(promtool: str) -> None:
    proc = subprocess.run([promtool, "test", "rules", UNIT_TESTS.name], cwd=UNIT_TESTS.parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_catch_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: with the Flannel-case inhibition removed, the feature alert fires where it must not."""
    broken = RULES.read_text().replace("unless on ()", "or on ()")
    assert broken != RULES.read_text()
    rules_dir = tmp_path / "charts" / "netpol-auditor" / "files"
    rules_dir.mkdir(parents=True)
    (rules_dir / RULES.name).write_text(broken)
    tests_dir = tmp_path / "tests" / "alerts"
    tests_dir.mkdir(parents=True)
    shutil.copy(UNIT_TESTS, tests_dir)
    proc = subprocess.run([promtool, "test", "rules", UNIT_TESTS.name], cwd=tests_dir, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert "NetpolAuditorCNIFeatureNotEnforced" in proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"
    assert firing | quiet <= names


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_alert_has_severity_duration_and_runbook(alert: dict[str, Any]) -> None:
    assert alert["alert"].startswith("NetpolAuditor")
    assert alert["labels"]["severity"] in SEVERITIES
    assert alert.get("for"), "every alert waits before firing (no flapping on one scrape)"
    annotations = alert["annotations"]
    assert {"summary", "description", "runbook"} <= set(annotations)
    assert "1. " in annotations["runbook"] and "2. " in annotations["runbook"], "the runbook gives steps"


def test_event_reasons_in_runbooks_are_ones_the_operator_posts() -> None:
    """`--field-selector reason=X` in the runbooks and the chart's NOTES names an Event reason the package posts."""
    texts = RULES.read_text() + (ROOT / "charts" / "netpol-auditor" / "templates" / "NOTES.txt").read_text()
    reasons = set(re.findall(r"reason=([A-Za-z]+)", texts))
    assert reasons
    source = "".join(p.read_text() for p in (ROOT / "operator" / "netpol_auditor").rglob("*.py"))
    missing = sorted(r for r in reasons if f'"{r}"' not in source)
    assert not missing, f"Event reasons the operator never posts: {missing}"


def test_readme_alerts_reference_lists_exactly_the_alerts() -> None:
    """README.md's alerts table and the rules file name the same alerts, with the same severities."""
    rows = re.findall(r"^\| `(NetpolAuditor[A-Za-z]+)` \| ([a-z]+) \|", (ROOT / "README.md").read_text(), re.M)
    assert dict(rows) == {a["alert"]: a["labels"]["severity"] for a in _alerts()}


RUNBOOK_BASE = "https://github.com/netpol-auditor/netpol-auditor/blob/main/README.md"
#: The placeholder selector of one install's metrics; the chart replaces it with the release's own.
INSTALL_SELECTOR = 'job="netpol-auditor"'


def _readme_sections() -> dict[str, str]:
    """`#### <heading>` of README.md -> its text, whitespace collapsed and list numbers kept."""
    text = (ROOT / "README.md").read_text()
    out = {}
    for match in re.finditer(r"^#### (\S+)\n(.*?)(?=^#{1,4} |\Z)", text, re.M | re.S):
        out[match.group(1)] = " ".join(match.group(2).split())
    return out


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_alert_runbook_url_points_at_its_steps_in_the_readme(alert: dict[str, Any]) -> None:
    """`runbook_url` is the README heading of the alert (GitHub's anchor: the heading in lower case), and that
    section gives the same steps as the `runbook` annotation."""
    assert alert["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{alert['alert'].lower()}"
    sections = _readme_sections()
    assert alert["alert"] in sections, f"README.md has no '#### {alert['alert']}' runbook"
    assert sections[alert["alert"]] == " ".join(alert["annotations"]["runbook"].split())


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_every_selector_picks_one_installs_metrics(alert: dict[str, Any]) -> None:
    """Each metric in an expression carries the install selector: with two installs in one Prometheus, an absent()
    or a count() over both would let one hide the other's state."""
    selectors = re.findall(r"(netpol_auditor_\w+)(\{[^}]*\})?", alert["expr"])
    assert selectors
    unscoped = [name for name, labels in selectors if INSTALL_SELECTOR not in labels]
    assert not unscoped, f"metrics without {INSTALL_SELECTOR}: {unscoped}"
