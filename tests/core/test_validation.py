"""Strict field validation: unknown fields by the API server's field path, only where a misspelling matters."""

from __future__ import annotations

from typing import Any

import pytest
from core_builders import ns_dict, pod_dict, policy_dict

from netpol_auditor.validation import UnknownField, unknown_fields


def paths(obj: dict[str, Any]) -> list[str]:
    return [u.path for u in unknown_fields(obj)]


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"ingres": [{}]}, "spec.ingres"),
        ({"podSelector": {"matchLabel": {"a": "b"}}}, "spec.podSelector.matchLabel"),
        ({"ingress": [{"form": [{"podSelector": {}}]}]}, "spec.ingress[0].form"),
        ({"ingress": [{"to": [{"podSelector": {}}]}]}, "spec.ingress[0].to"),  # `to` belongs to egress rules
        ({"egress": [{"from": []}]}, "spec.egress[0].from"),
        ({"egress": [{"to": [{"ipblock": {"cidr": "10.0.0.0/8"}}]}]}, "spec.egress[0].to[0].ipblock"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "exception": []}}]}]},
            "spec.egress[0].to[0].ipBlock.exception",
        ),
        ({"ingress": [{"ports": [{"port": 80, "endport": 90}]}]}, "spec.ingress[0].ports[0].endport"),
        (
            {"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "a", "operator": "Exists", "value": []},
            ]}}]}]},
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].value",
        ),
        ({"policyType": ["Ingress"]}, "spec.policyType"),
    ],
)  # fmt: skip
def test_network_policy_is_checked_in_full(spec: dict[str, Any], path: str) -> None:
    assert paths(policy_dict("x", "p", spec)) == [path]


def test_message_is_the_api_servers_with_the_closest_field() -> None:
    found = unknown_fields(policy_dict("x", "p", {"ingres": []}))
    assert found == [UnknownField("spec.ingres", "ingress")]
    assert str(found[0]) == 'unknown field "spec.ingres" (did you mean "ingress"?)'
    assert str(UnknownField("spec.zzz")) == 'unknown field "spec.zzz"'


def test_every_unknown_field_is_reported_and_known_ones_are_not() -> None:
    obj = policy_dict("x", "p", {"podSelector": {}, "ingres": [], "egres": [], "egress": [{"to": [], "ports": []}]})
    obj["metadata"]["lables"] = {"a": "b"}
    obj["spc"] = {}
    assert paths(obj) == ["metadata.lables", "spec.ingres", "spec.egres", "spc"]


def test_what_kubectl_dumps_carry_is_known() -> None:
    obj = policy_dict("x", "p", {"podSelector": {}})
    obj["metadata"].update(
        uid="u", resourceVersion="1", generation=1, creationTimestamp="t", annotations={"a": "b"},
        managedFields=[{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}], finalizers=[],
        ownerReferences=[{"apiVersion": "v1", "kind": "K", "name": "n", "uid": "u", "controller": True}],
    )  # fmt: skip
    obj["status"] = {}
    assert paths(obj) == []


def test_pods_are_checked_only_where_a_misspelling_changes_a_verdict() -> None:
    pod = pod_dict("x", "a", "10.0.0.1", {"app": "a"}, ports=[{"containerPort": 80, "name": "http", "protocol": "TCP"}])
    pod["spec"]["containers"][0].update(image="i", env=[{"name": "A", "value": "{{x}}"}], someFutureField=1)
    pod["spec"].update(volumes=[], schedulingGates=[], aFieldOfAFutureRelease={})
    pod["status"].update(conditions=[], hostIP="10.1.0.1", containerStatuses=[])
    assert paths(pod) == []

    pod["metadata"]["label"] = {"app": "a"}
    pod["spec"]["containers"][0]["ports"][0]["containerport"] = 81
    pod["status"]["podIPs"][0]["IP"] = "10.0.0.2"
    pod["sepc"] = {}
    assert paths(pod) == [
        "metadata.label", "spec.containers[0].ports[0].containerport", "status.podIPs[0].IP", "sepc",
    ]  # fmt: skip


def test_namespaces_are_checked_at_the_top_and_in_metadata() -> None:
    ns = ns_dict("x", team="a")
    ns.update(spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
    assert paths(ns) == []
    ns["metadata"]["labeles"] = {}
    assert paths(ns) == ["metadata.labeles"]


def test_wrong_types_and_other_kinds_are_left_to_others() -> None:
    assert paths(policy_dict("x", "p", {"ingress": {"from": []}, "podSelector": "app=web"})) == []  # the parser's
    assert paths({"apiVersion": "v1", "kind": "Service", "spec": {"anything": 1}}) == []
