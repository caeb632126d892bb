"""`helm upgrade` from earlier chart versions: their values files (kept verbatim in previous_values/, from
`git show <commit>:charts/netpol-auditor/values.yaml`) still pass the schema, lint and render with this chart.

Users upgrade with `--reuse-values` or with a copy of an old values.yaml; a removed key that the schema now refused,
or a renamed one that silently changed behaviour, would break exactly them. A real `helm upgrade` on a cluster is not
tested yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, NAMESPACE, RELEASE, Render, one, run_helm

from netpol_auditor.controller.settings import settings_from_args

PREVIOUS = Path(__file__).resolve().parent / "previous_values"
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
