"""``decidingPolicies`` names only the policies that decide: for an allowed path the policies whose rules admit it
on each isolated side (not every policy isolating it); for a denied path the isolating policies of the side(s) that
deny, not those of a side that allows. ``explain`` names the number a named port resolved to."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_harness import Result

Verdicts = dict[tuple[str, str, int], dict[str, Any]]

MANIFESTS = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: a}}
spec: {containers: [{name: c, image: i}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: t, labels: {app: b}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 8080, name: http}]}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: t}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-out, namespace: t}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: b}}}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-in, namespace: t}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: http}]}]
"""


@pytest.fixture
def verdicts(tmp_path: Path, cli: Callable[..., Result]) -> Verdicts:
    path = tmp_path / "t.yaml"
    path.write_text(MANIFESTS)
    result = cli(["analyze", "--matrix", "--per-pod", "-f", str(path), "-o", "json", "--external", "203.0.113.1",
                  "--port", "8080", "--port", "9000"])
    assert (result.code, result.err) == (0, "")
    return {(v["from"], v["to"], v["port"]): v for v in json.loads(result.out)["verdicts"]}


def test_an_allowed_path_names_the_admitting_policies_of_each_side_only(verdicts: Verdicts) -> None:
    got = verdicts[("t/a", "t/b", 8080)]
    assert got["allowed"] is True
    assert got["decidingPolicies"] == ["t/a-out", "t/b-in"]  # deny-all isolates both sides but admits nothing


def test_a_path_only_the_ingress_side_denies_names_that_side(verdicts: Verdicts) -> None:
    got = verdicts[("t/a", "t/b", 9000)]  # a's egress allows (a-out admits b on any port); b's ingress denies 9000
    assert got["allowed"] is False
    assert got["decidingPolicies"] == ["t/b-in", "t/deny-all"]


def test_a_path_both_sides_deny_names_the_isolating_policies_of_both(verdicts: Verdicts) -> None:
    got = verdicts[("t/b", "t/a", 8080)]  # b's egress: deny-all only; a's ingress: deny-all only
    assert got["allowed"] is False
    assert got["decidingPolicies"] == ["t/deny-all"]
    outside = verdicts[("203.0.113.1", "t/b", 8080)]  # no egress side: the ingress side alone decides
    assert outside["allowed"] is False and outside["decidingPolicies"] == ["t/b-in", "t/deny-all"]


def test_the_per_pair_output_names_the_policies_that_admit_its_connections(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MANIFESTS)
    result = cli(["analyze", "--per-pod", "-f", str(path), "-o", "json"])
    assert result.code == 0, result.err
    pairs = {(c["from"], c["to"]): c for c in json.loads(result.out)["connections"]}
    assert set(pairs) == {("t/a", "t/b")}
    assert pairs[("t/a", "t/b")]["connections"] == "TCP 8080"
    assert pairs[("t/a", "t/b")]["decidingPolicies"] == ["t/a-out", "t/b-in"]


def test_explain_names_the_number_a_named_port_resolved_to(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(MANIFESTS)
    result = cli(["explain", "--per-pod", "-f", str(path), "--from", "t/a", "--to", "t/b"])
    assert result.code == 0, result.err
    assert 'allowed by t/b-in ingress[0] (from[0], ports[0]), port "http" resolved to 8080 on t/b.' in result.out
    assert "allowed by t/a-out egress[0] (to[0], any port)." in result.out  # no named port: nothing to resolve
