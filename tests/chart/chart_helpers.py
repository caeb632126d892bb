"""Helpers of the chart tests: where the chart is, running the real ``helm``, picking rendered objects."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from netpol_auditor.controller.settings import ENV_PREFIX, add_arguments

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "netpol-auditor"
INSTALL_HELM = ROOT / "charts" / "install-helm.sh"
README = ROOT / "README.md"
RELEASE = "audit"
NAMESPACE = "netpol-auditor"

Render = Callable[..., list[dict[str, Any]]]

# (API group, resource, verbs): what the operator needs, and what it must never be able to do.
NEEDED = [
    ("", "pods", ("get", "list", "watch", "create", "delete")),
    ("", "namespaces", ("get", "list", "watch")),
    ("networking.k8s.io", "networkpolicies", ("get", "list", "watch")),
    ("policy.networking.k8s.io", "adminnetworkpolicies", ("get", "list", "watch")),
    ("policy.networking.k8s.io", "baselineadminnetworkpolicies", ("get", "list", "watch")),
    ("policy.networking.k8s.io", "clusternetworkpolicies", ("get", "list", "watch")),
    # CNI-specific policies: read where served, never written
    ("cilium.io", "ciliumnetworkpolicies", ("get", "list", "watch")),
    ("cilium.io", "ciliumclusterwidenetworkpolicies", ("get", "list", "watch")),
    ("projectcalico.org", "networkpolicies", ("get", "list", "watch")),
    ("projectcalico.org", "globalnetworkpolicies", ("get", "list", "watch")),
    ("crd.projectcalico.org", "networkpolicies", ("get", "list", "watch")),
    ("crd.projectcalico.org", "globalnetworkpolicies", ("get", "list", "watch")),
    ("crd.antrea.io", "networkpolicies", ("get", "list", "watch")),
    ("crd.antrea.io", "clusternetworkpolicies", ("get", "list", "watch")),
    ("", "events", ("create", "patch")),
    ("events.k8s.io", "events", ("create", "patch")),
    ("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch")),
    ("netpol-auditor.io", "proberuns", ("create", "delete", "get", "list", "watch")),
    ("", "nodes", ("get", "list", "watch")),
]
FORBIDDEN = [
    ("", "secrets", ("get", "list", "watch", "create")),
    ("", "configmaps", ("get", "list", "create")),
    ("", "pods", ("update", "patch")),
    ("", "pods/exec", ("create", "get")),
    ("", "namespaces", ("create", "update", "patch", "delete")),
    ("networking.k8s.io", "networkpolicies", ("create", "update", "patch", "delete")),
    ("policy.networking.k8s.io", "adminnetworkpolicies", ("create", "update", "patch", "delete")),
    ("policy.networking.k8s.io", "baselineadminnetworkpolicies", ("create", "update", "patch", "delete")),
    ("policy.networking.k8s.io", "clusternetworkpolicies", ("create", "update", "patch", "delete")),
    ("cilium.io", "ciliumnetworkpolicies", ("create", "update", "patch", "delete")),
    ("cilium.io", "ciliumclusterwidenetworkpolicies", ("create", "update", "patch", "delete")),
    ("projectcalico.org", "networkpolicies", ("create", "update", "patch", "delete")),
    ("projectcalico.org", "globalnetworkpolicies", ("create", "update", "patch", "delete")),
    ("crd.projectcalico.org", "networkpolicies", ("create", "update", "patch", "delete")),
    ("crd.projectcalico.org", "globalnetworkpolicies", ("create", "update", "patch", "delete")),
    ("crd.antrea.io", "networkpolicies", ("create", "update", "patch", "delete")),
    ("crd.antrea.io", "clusternetworkpolicies", ("create", "update", "patch", "delete")),
    ("", "serviceaccounts/token", ("create",)),
    ("rbac.authorization.k8s.io", "clusterroles", ("escalate", "bind", "create")),
    ("", "nodes", ("update", "patch", "delete")),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies", ("update", "patch", "delete")),
]


def run_helm(helm: Path, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def set_args(values: dict[str, Any] | None) -> list[str]:
    """``--set-json key=value`` for each dotted key (JSON keeps booleans and numbers typed)."""
    out: list[str] = []
    for key, value in (values or {}).items():
        out += ["--set-json", f"{key}={json.dumps(value)}"]
    return out


def find(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}: {[d['metadata'] for d in found]}"
    return found[0]


def copy_chart(tmp_path: Path) -> Path:
    dest = tmp_path / "netpol-auditor"
    shutil.copytree(CHART, dest)
    return dest


def operator_options() -> dict[str, str]:
    """NETPOL_AUDITOR_* variable -> `--option`, for every option `netpol-auditor run` has."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and not flag.startswith("--no-") and flag != "--help":
                out[ENV_PREFIX + flag[2:].upper().replace("-", "_")] = flag
    return out

