"""Parsing API objects and manifest files: defaulting like the API server, errors like the API server."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from core_builders import parse, pod_dict, policy_dict

from netpol_auditor.manifest_files import load_paths, load_text, read_manifests
from netpol_auditor.manifests import ManifestError, parse_object
from netpol_auditor.model import (
    NAMESPACE_NAME_LABEL,
    Direction,
    IPBlock,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPort,
    Pod,
    Protocol,
)


def netpol(spec: dict[str, Any]) -> NetworkPolicy:
    out = parse(policy_dict("x", "p", spec))
    assert isinstance(out, NetworkPolicy)
    return out


# -- defaulting (pkg/apis/networking/v1/defaults.go SetDefaults_NetworkPolicy) ----------------------------------


@pytest.mark.parametrize(
    ("spec", "types"),
    [
        ({}, {Direction.INGRESS}),
        ({"policyTypes": []}, {Direction.INGRESS}),
        ({"egress": [{}]}, {Direction.INGRESS, Direction.EGRESS}),
        ({"egress": []}, {Direction.INGRESS}),
        ({"ingress": [{}], "egress": [{}]}, {Direction.INGRESS, Direction.EGRESS}),
        ({"policyTypes": ["Egress"]}, {Direction.EGRESS}),
        ({"policyTypes": ["Egress", "Ingress"]}, {Direction.INGRESS, Direction.EGRESS}),
    ],
)
def test_policy_types_defaulting(spec: dict[str, Any], types: set[Direction]) -> None:
    assert netpol(spec).policy_types == types


def test_omitted_pod_selector_selects_everything() -> None:
    assert netpol({}).pod_selector.is_empty


def test_port_protocol_defaults_to_tcp() -> None:
    rule = netpol({"ingress": [{"ports": [{}, {"port": 53, "protocol": "UDP"}, {"port": "http"}]}]}).ingress[0]
    assert rule.ports == (
        NetworkPolicyPort(Protocol.TCP, None, None),
        NetworkPolicyPort(Protocol.UDP, 53, None),
        NetworkPolicyPort(Protocol.TCP, "http", None),
    )


def test_ip_block_and_end_port_parse() -> None:
    pol = netpol(
        {
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                    "ports": [{"port": 32000, "endPort": 32768}],
                }
            ]
        }
    )
    assert pol.egress[0].peers[0].ip_block == IPBlock("0.0.0.0/0", ("169.254.169.254/32",))
    assert pol.egress[0].ports[0].end_port == 32768


def test_namespace_gets_implicit_name_label() -> None:
    ns = parse_object({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "prod"}})
    assert isinstance(ns, Namespace)
    assert ns.labels[NAMESPACE_NAME_LABEL] == "prod"


def test_pod_fields() -> None:
    raw = pod_dict("x", "a", "10.0.0.1", {"app": "web"}, ports=[{"containerPort": 80, "name": "http"}])
    raw["status"]["podIPs"].append({"ip": "fd00::1"})
    raw["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "web-1", "controller": True}]
    p = parse(raw)
    assert isinstance(p, Pod)
    assert p.pod_ips == ("10.0.0.1", "fd00::1")
    assert p.named_ports() == {"http/TCP": "80"}
    assert p.owner_kind == "ReplicaSet"
    assert p.is_endpoint


@pytest.mark.parametrize(
    ("phase", "ip", "host_network", "endpoint"),
    [
        ("Running", "10.0.0.1", False, True),
        ("Pending", "10.0.0.1", False, False),
        ("Succeeded", "10.0.0.1", False, False),
        ("Running", None, False, False),
        ("Running", "10.0.0.1", True, False),
    ],
)
def test_pod_endpoint(phase: str, ip: str | None, host_network: bool, endpoint: bool) -> None:
    p = parse(pod_dict("x", "a", ip, phase=phase, host_network=host_network))
    assert isinstance(p, Pod)
    assert p.is_endpoint is endpoint


def test_other_kinds_are_ignored() -> None:
    assert parse_object({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "s"}}) is None
    assert parse_object({"kind": "NetworkPolicy", "apiVersion": "crd.projectcalico.org/v1", "metadata": {}}) is None


# -- files --------------------------------------------------------------------------------------------------------


KUBECTL_LIST = """\
apiVersion: v1
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    labels:
      kubernetes.io/metadata.name: x
    name: x
- apiVersion: v1
  kind: Pod
  metadata:
    labels: {pod: a}
    name: a
    namespace: x
  spec:
    containers: [{name: c, ports: [{containerPort: 80, protocol: TCP}]}]
  status:
    phase: Running
    podIP: 10.244.0.5
    podIPs: [{ip: 10.244.0.5}]
- apiVersion: v1
  kind: Service
  metadata: {name: svc, namespace: x}
kind: List
metadata:
  resourceVersion: ""
"""


def test_kubectl_list_multi_document_and_json(tmp_path: Path) -> None:
    (tmp_path / "dump.yaml").write_text(KUBECTL_LIST)
    sub = tmp_path / "policies"
    sub.mkdir()
    (sub / "p.json").write_text(json.dumps(policy_dict("x", "deny", {"podSelector": {}})))
    (sub / "two.yml").write_text(
        "---\n"
        + json.dumps(policy_dict("x", "p1", {}))
        + "\n---\n# comment only\n---\n"
        + json.dumps(policy_dict("x", "p2", {}))
    )
    (sub / "README.md").write_text("not a manifest")
    objs = load_paths([str(tmp_path)])
    kinds = [(type(o).__name__, o.name) for o in objs]
    assert kinds == [
        ("Namespace", "x"),
        ("Pod", "a"),
        ("NetworkPolicy", "deny"),
        ("NetworkPolicy", "p1"),
        ("NetworkPolicy", "p2"),
    ]


def test_the_file_of_each_object_is_kept(tmp_path: Path) -> None:
    (tmp_path / "dump.yaml").write_text(KUBECTL_LIST)
    (tmp_path / "p.json").write_text(json.dumps(policy_dict("x", "deny", {"podSelector": {}})))
    sources = read_manifests([str(tmp_path)]).sources
    assert sources == {
        ("Namespace", None, "x"): str(tmp_path / "dump.yaml"),
        ("Pod", "x", "a"): str(tmp_path / "dump.yaml"),
        ("NetworkPolicy", "x", "deny"): str(tmp_path / "p.json"),
    }


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(KUBECTL_LIST))
    assert [o.name for o in load_paths(["-"])] == ["x", "a"]


def test_missing_file_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_paths([str(tmp_path / "nope.yaml")])


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("kind: Pod\nmetadata: {name: a\n")
    with pytest.raises(ManifestError) as err:
        load_paths([str(f)])
    assert str(err.value).startswith(f"{f}: line ")


# -- errors: what the API server rejects (pkg/apis/networking/validation/validation.go) ---------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}},
            'spec.podSelector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator',
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]}},
            "spec.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is "
            "'Exists' or 'DoesNotExist'",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is "
            "'In' or 'NotIn'",
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]},
            'spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR value',
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
            'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "11.0.0.0/16": must be a strict subset of '
            "`cidr`",
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]}]},
            "must be a strict subset of `cidr`",
        ),
        (
            {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
            "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
        ),
        ({"egress": [{"to": [{}]}]}, "spec.egress[0].to[0]: Required value: must specify a peer"),
        (
            {"ingress": [{"ports": [{"port": 70000}]}]},
            "spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            {"egress": [{"ports": [{"port": 0}]}]},
            "spec.egress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            {"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        ),
        (
            {"ingress": [{"ports": [{"port": "http", "endPort": 80}]}]},
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: may not be specified when `port` is non-numeric",
        ),
        (
            {"ingress": [{"ports": [{"endPort": 80}]}]},
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: may not be specified when `port` is not specified",
        ),
        (
            {"ingress": [{"ports": [{"port": 80, "protocol": "ICMP"}]}]},
            'spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"',
        ),
        (
            {"ingress": [{"ports": [{"port": "Not_A_Name"}]}]},
            'spec.ingress[0].ports[0].port: Invalid value: "Not_A_Name": must be no more than 15 characters',
        ),
        (
            {"policyTypes": ["Ingress", "Sideways"]},
            'spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress"',
        ),
        (
            {"policyTypes": ["Ingress", "Egress", "Ingress"]},
            "spec.policyTypes: Invalid value: ",
        ),
        ({"ingress": {"from": []}}, "spec.ingress: Invalid value: "),
        ({"ingress": [{"ports": [{"port": 1.5}]}]}, "spec.ingress[0].ports[0].port: Invalid value: 1.5: "),
        ({"podSelector": {"matchLabels": {"app": "no spaces"}}}, 'spec.podSelector.matchLabels: Invalid value: "no'),
    ],
)
def test_invalid_policy_error_names_file_object_and_field(spec: dict[str, Any], message: str) -> None:
    doc = json.dumps(policy_dict("prod", "web", spec))
    with pytest.raises(ManifestError) as err:
        load_text(doc, "policies.yaml")
    text = str(err.value)
    assert text.startswith("policies.yaml: NetworkPolicy prod/web: "), text
    if "must be no more than 15" in message:
        # "Not_A_Name" is short enough: the first failing check is the character set.
        message = message.replace("must be no more than 15 characters", "must contain only alpha-numeric")
    assert message in text


def test_unquoted_number_label_value_is_rejected() -> None:
    raw = pod_dict("x", "a", "10.0.0.1", {"app": "web"})
    raw["metadata"]["labels"]["version"] = 2
    with pytest.raises(ManifestError) as err:
        load_text(json.dumps(raw), "pods.yaml")
    assert str(err.value).startswith("pods.yaml: Pod x/a: metadata.labels.version: Invalid value: 2: label values")


def test_invalid_pod_error() -> None:
    raw = pod_dict("x", "a", "10.0.0.1", ports=[{"containerPort": 99999}])
    with pytest.raises(ManifestError) as err:
        load_text(json.dumps(raw), "pods.yaml")
    assert str(err.value) == (
        "pods.yaml: Pod x/a: spec.containers[0].ports[0].containerPort: Invalid value: 99999: "
        "must be between 1 and 65535, inclusive"
    )


def test_missing_name() -> None:
    with pytest.raises(ManifestError, match=r"<input>: Pod default/<unnamed>: metadata.name: Required value"):
        parse_object({"kind": "Pod", "apiVersion": "v1", "metadata": {}})
