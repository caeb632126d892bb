"""``analyze`` and ``explain`` on manifests with all three layers: Admin tier cluster policies, namespace
NetworkPolicies, Baseline tier. One fixture is a ``kubectl get -o yaml`` dump with ClusterNetworkPolicies
(v1alpha2), the other plain manifests with an AdminNetworkPolicy and the BaselineAdminNetworkPolicy (v1alpha1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_harness import FIXTURES, Result

MATRIX = ("analyze", "--matrix")  # the per-port truth tables and verdicts
DUMP = str(FIXTURES / "cluster-tiers-dump.yaml")
ANP = str(FIXTURES / "admin-network-policies.yaml")

CASES = {
    "cluster-tiers-table.txt": [*MATRIX, "--per-pod", "-f", DUMP, "--external", "203.0.113.10",
                                "--external", "169.254.169.254", "--port", "53/UDP", "--port", "8080/TCP"],
    "cluster-tiers.json": [*MATRIX, "--per-pod", "-f", DUMP, "-o", "json", "--port", "5432/TCP",
                           "--external", "203.0.113.10"],
    "cluster-tiers-explain.md": [*MATRIX, "--per-pod", "-f", DUMP, "-o", "md", "--explain", "--port", "8080/TCP",
                                 "--from", "sandbox", "--external", "203.0.113.10"],
    "cluster-tiers-pairs.txt": ["analyze", "--per-pod", "-f", DUMP, "--external", "203.0.113.10"],
    "cluster-tiers-explain.txt": ["explain", "--per-pod", "-f", DUMP, "--from", "shop/web-0", "--to", "shop/db-0"],
    "admin-network-policies-table.txt": [*MATRIX, "--per-pod", "-f", ANP, "--port", "8080", "--port", "9000"],
    "admin-network-policies-explain.json": ["explain", "--per-pod", "-f", ANP, "--from", "frontend/web",
                                            "--to", "backend/batch", "--port", "9000", "-o", "json"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_golden(name: str, cli: Callable[..., Result], golden: Callable[[str, str], None]) -> None:
    result = cli(CASES[name])
    assert result.code == 0, result.err
    assert result.err == ""  # the cluster policies are read, not warned about
    golden(name, result.out)


def _verdicts(cli: Callable[..., Result], *argv: str) -> dict[tuple[str, str, str], dict[str, object]]:
    result = cli([*MATRIX, "--per-pod", "-o", "json", *argv])
    assert result.code == 0, result.err
    return {(v["from"], v["to"], f"{v['port']}/{v['protocol']}"): v for v in json.loads(result.out)["verdicts"]}


def test_the_deciding_tier_and_policy_per_path(cli: Callable[..., Result]) -> None:
    verdicts = _verdicts(cli, "-f", DUMP, "--port", "53/UDP", "--port", "5432/TCP", "--port", "8080/TCP",
                         "--external", "203.0.113.10", "--external", "169.254.169.254")
    expected = {
        # Admin Accept on egress (DNS); coredns' namespace is no subject of the Baseline.
        ("sandbox/runner-0", "kube-system/coredns-0", "53/UDP"): (True, ["ClusterNetworkPolicy/sandbox-guard"]),
        # Admin Deny on egress, before the NetworkPolicy that would admit it.
        ("sandbox/runner-0", "shop/web-0", "8080/TCP"): (False, ["ClusterNetworkPolicy/sandbox-guard"]),
        ("sandbox/runner-0", "169.254.169.254", "8080/TCP"): (False, ["ClusterNetworkPolicy/sandbox-guard"]),
        # A domainNames peer: the manifests cannot tell.
        ("sandbox/runner-0", "203.0.113.10", "8080/TCP"): (None, []),
        # Admin Accept on ingress, whatever the NetworkPolicies of shop say.
        ("monitoring/prometheus-0", "shop/db-0", "8080/TCP"): (True, ["ClusterNetworkPolicy/monitoring-scrape"]),
        # Pass -> NetworkPolicy.
        ("shop/web-0", "shop/db-0", "5432/TCP"): (True, ["shop/db"]),
        ("shop/db-0", "shop/web-0", "5432/TCP"): (False, ["shop/default-deny", "shop/web"]),
        # Not isolated by a NetworkPolicy: the Baseline denies.
        ("shop/web-0", "sandbox/runner-0", "8080/TCP"): (False, ["ClusterNetworkPolicy/default-deny"]),
        # An address outside the cluster is no namespaces peer of the Baseline.
        ("203.0.113.10", "sandbox/runner-0", "8080/TCP"): (True, []),
    }
    got = {k: (verdicts[k]["allowed"], verdicts[k]["decidingPolicies"]) for k in expected}
    assert got == expected
    assert verdicts[("sandbox/runner-0", "203.0.113.10", "8080/TCP")]["reason"].startswith(
        "out of model: ClusterNetworkPolicy sandbox-guard egress[3] (Accept) has a domainNames peer")


def test_strict_accepts_cluster_policies_but_not_other_versions(cli: Callable[..., Result], tmp_path: Path) -> None:
    assert cli(["analyze", "--per-pod", "--strict", "-f", ANP, "--port", "80"]).code == 0
    future = tmp_path / "future.yaml"
    future.write_text("apiVersion: policy.networking.k8s.io/v1beta1\nkind: ClusterNetworkPolicy\n"
                      "metadata: {name: later}\nspec: {}\n")
    result = cli(["analyze", "--per-pod", "--strict", "-f", ANP, "-f", str(future), "--port", "80"])
    assert result.code == 2 and "policy.networking.k8s.io/v1beta1 ClusterNetworkPolicy is not analyzed" in result.err


def test_invalid_cluster_policy_names_file_object_and_field(cli: Callable[..., Result], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\n"
                   "metadata: {name: too-high}\nspec: {priority: 1001, subject: {namespaces: {}}}\n")
    result = cli([*MATRIX, "--per-pod", "-f", ANP, "-f", str(bad), "--port", "80"])
    assert result.code == 2
    assert result.err.strip() == (
        f"netpol-auditor analyze: error: {bad}: AdminNetworkPolicy too-high: spec.priority: Invalid value: 1001: "
        "must be between 0 and 1000, inclusive"
    )


def test_explain_names_the_number_a_cluster_policy_named_port_resolved_to(cli: Callable[..., Result]) -> None:
    """The Admin tier's Pass on ``namedPort: http`` matched 9000 on the api (the batch pod has no such port)."""
    result = cli(["explain", "--per-pod", "-f", ANP, "--from", "frontend/web", "--to", "backend/api", "-o", "json"])
    assert result.code == 0, result.err
    (verdict,) = json.loads(result.out)["verdicts"]
    assert verdict["egress"]["admin"]["namedPort"] == {"name": "http", "resolvedTo": 9000}
    assert 'egress[0] "api" (to[0], ports[0]), port "http" resolved to 9000 on backend/api -> ' in (
        verdict["explanation"]
    )
