"""`helm upgrade` from earlier chart versions: their values files (kept verbatim in previous_values/, from
`git show <commit>:charts/netpol-auditor/values.yaml`) still pass the schema, lint and render with this chart.

Users upgrade with a copy of an old values.yaml or with the release's own values; a removed key that the schema now
refused, or a renamed one that silently changed behaviour, would break exactly them. `--reuse-values` renders with the
previous chart's defaults, so the chart refuses values that lack its new keys (templates/values-check.yaml). The real
`helm upgrade` and rollback on the cluster are in test_chart_upgrade_cluster.py.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CHART, NAMESPACE, RELEASE, Render, one, run_helm

from netpol_auditor.controller.settings import settings_from_args

PREVIOUS = Path(__file__).resolve().parent / "previous_values"
PREVIOUS_CHART = Path(__file__).resolve().parent / "previous_charts" / "netpol-auditor-0.1.0.tgz"
#: values.yaml of chart 0.1.0 as last changed (bf06f90); values-4b459bd.yaml is the chart's first commit.
LATEST_PREVIOUS = PREVIOUS / "values-bf06f90.yaml"
FULLNAME = f"{RELEASE}-netpol-auditor"


def _env(docs: list[dict[str, Any]]) -> dict[str, str]:
    container = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize("values", sorted(PREVIOUS.glob("values-*.yaml")), ids=lambda p: p.stem)
def test_previous_values_files_lint_and_render(helm: Path, render: Render, values: Path) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "-f", str(values))
    assert "0 chart(s) failed" in proc.stdout
    docs = render(extra=["-f", str(values)])
    settings = settings_from_args(None, env=_env(docs))  # the operator starts with what the chart gives it
    assert settings.probe_enabled


def test_latest_previous_values_keep_the_operator_configured_as_before(render: Render) -> None:
    """Its defaults are this chart's: the same objects, and the operator configured the same but for the new
    settings (which take the operator's defaults)."""
    old, new = render(extra=["-f", str(LATEST_PREVIOUS)]), render()
    assert sorted((d["kind"], d["metadata"]["name"]) for d in old) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in new)
    assert settings_from_args(None, env=_env(old)) == settings_from_args(None, env=_env(new))


def test_removed_values_are_still_accepted(render: Render) -> None:
    """probe.ownerNamespace configured nothing the operator read; an old values file setting it still installs."""
    docs = render({"probe.ownerNamespace": "elsewhere"})
    assert "NETPOL_AUDITOR_PROBE_NAMESPACE" not in _env(docs)


def _leaf_keys_new_since(old: dict[str, Any], new: dict[str, Any], path: tuple[str, ...] = ()) -> set[str]:
    """Dotted paths in ``new`` whose parent exists in ``old`` but which ``old`` lacks (a new map counts once)."""
    out: set[str] = set()
    for key, value in new.items():
        if not isinstance(old, dict) or key not in old:
            out.add(".".join((*path, key)))
        elif isinstance(value, dict) and value and isinstance(old[key], dict):
            out |= _leaf_keys_new_since(old[key], value, (*path, key))
    return out


def test_the_values_check_lists_every_key_new_since_the_previous_chart() -> None:
    """A key the previous chart lacked and the check forgets would render empty after `--reuse-values`."""
    with tarfile.open(PREVIOUS_CHART) as tar:
        member = tar.extractfile("netpol-auditor/values.yaml")
        assert member is not None
        old = yaml.safe_load(member.read())
    new = yaml.safe_load((CHART / "values.yaml").read_text())
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    listed = re.search(r'define "netpol-auditor.keysNewSince010" -}}\n(.*?)\n{{- end', helpers, re.S)
    assert listed, "the list of new keys is gone from _helpers.tpl"
    # nodeSelector's entries are defaults helm merges into the user's map; a user may drop them on purpose.
    assert set(listed.group(1).split()) == {k for k in _leaf_keys_new_since(old, new) if not k.startswith(
        "nodeSelector.")}


def test_values_without_the_new_keys_are_refused_with_the_fix(helm: Path) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--set-json", "podDisruptionBudget=null",
                    "--set-json", "probe.startDelaySeconds=null", check=False)
    assert proc.returncode != 0
    assert "(probe.startDelaySeconds, podDisruptionBudget)" in proc.stderr, proc.stderr
    assert "--reset-then-reuse-values" in proc.stderr, proc.stderr
