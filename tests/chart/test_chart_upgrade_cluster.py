"""A real ``helm upgrade`` from the previous chart version on the local cluster's API server, and back.

previous_charts/netpol-auditor-0.1.0.tgz is chart 0.1.0 as ``helm package`` made it from the repository at bf06f90 (the
same commit as previous_values/values-bf06f90.yaml). What breaks users on upgrade is what the API server refuses or
what stops rolling out: a changed Deployment selector (immutable), a renamed object that leaves the old one behind, a
value the new schema refuses, or templates that fail on the old release's values. Each upgrade here goes through
helm's ``--wait``, so the new ReplicaSet must become ready.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, run_helm

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
PREVIOUS_CHART = HERE / "previous_charts" / "netpol-auditor-0.1.0.tgz"
PREVIOUS_VALUES = HERE / "previous_values" / "values-bf06f90.yaml"
NS = "netpol-auditor-upgrade"
RELEASE = "upgr"
FULLNAME = f"{RELEASE}-netpol-auditor"


def kubectl(cluster: Any, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={cluster.kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=180)


def helm_on(cluster: Any, helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, *args, "--namespace", NS, "--kubeconfig", str(cluster.kubeconfig), check=check,
                    timeout=300)


@pytest.fixture(scope="module")
def upgrade_cluster(cluster: Any, helm: Path) -> Iterator[Any]:
    helm_on(cluster, helm, "uninstall", RELEASE, "--wait", check=False)  # left by an interrupted run
    kubectl(cluster, "wait", "--for=delete", "--timeout=180s", f"namespace/{NS}")
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    proc = kubectl(cluster, "apply", "-f", "-", input=json.dumps(namespace))
    assert proc.returncode == 0, proc.stderr
    yield cluster
    helm_on(cluster, helm, "uninstall", RELEASE, "--wait", check=False)
    kubectl(cluster, "delete", "namespace", NS, "--wait=false")


def _deployment(cluster: Any) -> dict[str, Any]:
    proc = kubectl(cluster, "get", "deployment", FULLNAME, "-n", NS, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _chart_label(deployment: dict[str, Any]) -> str:
    return deployment["metadata"]["labels"]["helm.sh/chart"]  # type: ignore[no-any-return]


def _history(cluster: Any, helm: Path) -> list[dict[str, Any]]:
    return json.loads(helm_on(cluster, helm, "history", RELEASE, "-o", "json").stdout)  # type: ignore[no-any-return]


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_upgrade_from_the_previous_chart_and_roll_back(upgrade_cluster: Any, helm: Path) -> None:
    helm_on(upgrade_cluster, helm, "install", RELEASE, str(PREVIOUS_CHART), "-f", str(PREVIOUS_VALUES),
            "--set", "probe.intervalSeconds=123", "--wait", "--timeout", "180s")
    before = _deployment(upgrade_cluster)
    assert _chart_label(before) == "netpol-auditor-0.1.0"

    # `--reuse-values` renders with the previous chart's defaults, which lack this chart's new keys: the upgrade
    # stops before touching anything, saying how to upgrade, instead of failing on a nil map or rendering empty
    # settings.
    proc = helm_on(upgrade_cluster, helm, "upgrade", RELEASE, str(CHART), "--reuse-values", "--wait", check=False)
    assert proc.returncode != 0 and "--reset-then-reuse-values" in proc.stderr, proc.stderr
    assert [h["status"] for h in _history(upgrade_cluster, helm)] == ["deployed"]

    # What the message says works, keeping the user's own values.
    helm_on(upgrade_cluster, helm, "upgrade", RELEASE, str(CHART), "--reset-then-reuse-values", "--wait",
            "--timeout", "180s")
    after = _deployment(upgrade_cluster)
    assert _chart_label(after).startswith("netpol-auditor-") and _chart_label(after) != _chart_label(before)
    assert after["spec"]["selector"] == before["spec"]["selector"], "the Deployment selector is immutable"
    assert after["status"].get("updatedReplicas") == after["spec"]["replicas"] == after["status"].get("readyReplicas")
    assert _env(after)["NETPOL_AUDITOR_PROBE_INTERVAL"] == "123"

    # As does a copy of the old values.yaml.
    helm_on(upgrade_cluster, helm, "upgrade", RELEASE, str(CHART), "-f", str(PREVIOUS_VALUES), "--wait",
            "--timeout", "180s")

    # A bad upgrade must be reversible: back to the previous chart, which must roll out again.
    helm_on(upgrade_cluster, helm, "rollback", RELEASE, "1", "--wait", "--timeout", "180s")
    assert _chart_label(_deployment(upgrade_cluster)) == "netpol-auditor-0.1.0"
    history = _history(upgrade_cluster, helm)
    assert [h["status"] for h in history] == ["superseded"] * (len(history) - 1) + ["deployed"], history
    assert history[-1]["chart"] == "netpol-auditor-0.1.0"

    # Upgrading again leaves nothing behind in the namespace that the release does not own.
    helm_on(upgrade_cluster, helm, "upgrade", RELEASE, str(CHART), "--reset-then-reuse-values", "--wait",
            "--timeout", "180s")
    manifest = helm_on(upgrade_cluster, helm, "get", "manifest", RELEASE).stdout
    proc = kubectl(upgrade_cluster, "get", "deployment,service,serviceaccount,poddisruptionbudget", "-n", NS,
                   "-o", "name")
    assert proc.returncode == 0, proc.stderr
    for name in proc.stdout.split():
        if name == "serviceaccount/default":
            continue
        assert f"name: {name.partition('/')[2]}\n" in manifest, f"{name} is in the namespace but not in the release"
