"""Replicas that survive node drains and failures: the PodDisruptionBudget, topology spread and node selector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, RELEASE, Render, find, one, run_helm, set_args

FULLNAME = f"{RELEASE}-netpol-auditor"
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"


def _pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"])


def _selects_the_operator(selector: dict[str, Any], docs: list[dict[str, Any]]) -> bool:
    pod_labels = one(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    return bool(selector["matchLabels"]) and selector["matchLabels"].items() <= pod_labels.items()


def test_one_replica_gets_no_budget_and_no_spread(render: Render) -> None:
    """A budget over one pod would block every node drain; spreading one pod means nothing."""
    docs = render()
    assert not find(docs, "PodDisruptionBudget")
    assert "topologySpreadConstraints" not in _pod(docs)


def test_two_replicas_get_a_budget_that_lets_a_drain_take_one(render: Render) -> None:
    docs = render({"replicaCount": 2})
    pdb = one(docs, "PodDisruptionBudget", FULLNAME)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
    assert "unhealthyPodEvictionPolicy" not in pdb["spec"]
    assert _selects_the_operator(pdb["spec"]["selector"], docs)
    assert not find(render({"replicaCount": 2, "podDisruptionBudget.enabled": False}), "PodDisruptionBudget")


def test_min_available_replaces_max_unavailable(render: Render) -> None:
    spec = one(render({"replicaCount": 3, "podDisruptionBudget.minAvailable": "50%",
                       "podDisruptionBudget.unhealthyPodEvictionPolicy": "AlwaysAllow"}),
               "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == "50%" and "maxUnavailable" not in spec
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_two_replicas_spread_over_nodes_selecting_only_their_own_pods(render: Render) -> None:
    docs = render({"replicaCount": 2})
    constraints = _pod(docs)["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["maxSkew"], c["whenUnsatisfiable"]) for c in constraints] == \
        [(HOSTNAME, 1, "ScheduleAnyway")]
    assert _selects_the_operator(constraints[0]["labelSelector"], docs)
    zoned = _pod(render({"replicaCount": 2, "topologySpread.hostname": "DoNotSchedule",
                         "topologySpread.zone": "ScheduleAnyway"}))["topologySpreadConstraints"]
    assert {c["topologyKey"]: c["whenUnsatisfiable"] for c in zoned} == \
        {HOSTNAME: "DoNotSchedule", ZONE: "ScheduleAnyway"}
    assert "topologySpreadConstraints" not in _pod(render({"replicaCount": 2, "topologySpread.hostname": ""}))


def test_own_spread_constraints_replace_the_charts_and_select_the_operator_when_they_do_not_say(
        render: Render) -> None:
    own = [{"maxSkew": 2, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule"},
           {"maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "mine"}}}]
    docs = render({"replicaCount": 2, "topologySpreadConstraints": own})
    constraints = _pod(docs)["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [ZONE, HOSTNAME]
    assert _selects_the_operator(constraints[0]["labelSelector"], docs)
    assert constraints[1]["labelSelector"] == {"matchLabels": {"app": "mine"}}
    assert constraints[0]["maxSkew"] == 2


def test_operator_pods_run_on_linux_nodes_unless_told_otherwise(render: Render) -> None:
    assert _pod(render())["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert _pod(render({"nodeSelector": {"pool": "infra"}}))["nodeSelector"] == \
        {"kubernetes.io/os": "linux", "pool": "infra"}
    assert _pod(render({"nodeSelector": {"kubernetes.io/os": None}})).get("nodeSelector") is None


@pytest.mark.parametrize(("values", "complaint"), [
    ({"podDisruptionBudget.maxUnavailable": "one"}, "/podDisruptionBudget/maxUnavailable"),
    ({"podDisruptionBudget.minAvailable": -1}, "/podDisruptionBudget/minAvailable"),
    ({"podDisruptionBudget.unhealthyPodEvictionPolicy": "Never"}, "/podDisruptionBudget/unhealthyPodEvictionPolicy"),
    ({"topologySpread.hostname": "Always"}, "/topologySpread/hostname"),
    ({"topologySpreadConstraints": [{"topologyKey": HOSTNAME}]}, "/topologySpreadConstraints"),
])
def test_schema_rejects_wrong_availability_values(helm: Path, values: dict[str, Any], complaint: str) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *set_args(values), check=False)
    assert proc.returncode != 0
    assert "schema" in proc.stderr and complaint in proc.stderr, proc.stderr
