"""Cilium, Calico and Antrea policies: ``analyze`` warns, lists the endpoints each selects, and reports their
paths out of model (``?``, ``allowed: null`` with a ``foreign_policy`` reason); every other path is judged exactly
as without them; ``--strict`` makes them errors; a malformed one is an error naming object and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cli_harness import FIXTURES, Result

VENDOR = FIXTURES / "vendor-policies.yaml"
VENDOR_GROUPS = ("cilium.io/", "projectcalico.org/", "crd.projectcalico.org/", "crd.antrea.io/")

# Which endpoint each vendor policy of the fixture selects, for which direction, and the reason its paths get.
EGRESS = {
    "shop/api[Pod]": "foreign_policy: projectcalico.org/v3 NetworkPolicy shop/api-egress",
    "ops/tool[Pod]": "foreign_policy: crd.antrea.io/v1beta1 NetworkPolicy ops/tool-egress",
    "batch/job[Pod]": "foreign_policy: crd.projectcalico.org/v1 NetworkPolicy batch/batch-either",
}
INGRESS = {
    "shop/web[Pod]": "foreign_policy: cilium.io/v2 CiliumNetworkPolicy shop/web-ingress",
    "shop/db[Pod]": "foreign_policy: crd.antrea.io/v1alpha1 ClusterNetworkPolicy db-ingress",
    "ops/probe[Pod]": "foreign_policy: projectcalico.org/v3 GlobalNetworkPolicy ops-probe",
    "batch/job[Pod]": "foreign_policy: crd.projectcalico.org/v1 NetworkPolicy batch/batch-either",
}


def _verdicts(cli: Callable[..., Result], path: Path | str) -> tuple[dict[tuple[str, str], dict[str, object]], str]:
    result = cli(["analyze", "-f", str(path), "-o", "json", "--matrix"])
    assert result.code == 0, result.err
    return {(v["from"], v["to"]): v for v in json.loads(result.out)["verdicts"]}, result.err


def _without_vendor_policies(tmp_path: Path) -> Path:
    docs = [d for d in yaml.safe_load_all(VENDOR.read_text()) if not d["apiVersion"].startswith(VENDOR_GROUPS)]
    assert len(docs) == 14
    out = tmp_path / "plain.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    return out


def test_selected_paths_out_of_model_others_unchanged(tmp_path: Path, cli: Callable[..., Result]) -> None:
    with_vendor, _ = _verdicts(cli, VENDOR)
    plain, err = _verdicts(cli, _without_vendor_policies(tmp_path))
    assert err == ""
    assert with_vendor.keys() == plain.keys()
    out_of_model = 0
    for (src, dst), verdict in with_vendor.items():
        reasons = [r for r in (EGRESS.get(src), INGRESS.get(dst)) if r]
        if reasons:
            out_of_model += 1
            assert verdict["allowed"] is None, (src, dst)
            assert verdict["reason"] == "; ".join(reasons)
            assert verdict["decidingPolicies"] == []
        else:
            assert verdict == plain[(src, dst)]
    assert out_of_model == 38  # of 56 ordered pairs: every row of 3 sources, every column of 4 destinations
    # The paths that stay judged still include denials and allowances of the NetworkPolicies.
    assert with_vendor[("free/a[Pod]", "shop/api[Pod]")]["allowed"] is False
    assert with_vendor[("free/a[Pod]", "free/b[Pod]")]["allowed"] is True


def test_warnings_list_the_selected_endpoints(cli: Callable[..., Result]) -> None:
    result = cli(["analyze", "-f", str(VENDOR)])
    assert result.code == 0
    lines = [line.removeprefix("netpol-auditor analyze: warning: ") for line in result.err.splitlines()]
    assert (f"{VENDOR}: CiliumNetworkPolicy shop/web-ingress: cilium.io/v2 CiliumNetworkPolicy is not analyzed, "
            "only networking.k8s.io/v1 NetworkPolicy and the policy.networking.k8s.io kinds are: the paths of the "
            "pods it selects are out of model") in lines
    assert (f"{VENDOR}: NetworkPolicy batch/batch-either: spec.selector: \"app == 'job' || app == 'cron'\" is not "
            "one of the simple forms understood: taken to select every pod of namespace batch") in lines
    selects = [line for line in lines if not line.startswith(str(VENDOR))]
    assert selects == [
        "cilium.io/v2 CiliumClusterwideNetworkPolicy host-firewall selects no endpoint of the input",
        "cilium.io/v2 CiliumClusterwideNetworkPolicy nothing-here selects no endpoint of the input",
        "cilium.io/v2 CiliumNetworkPolicy shop/web-ingress selects 1 endpoint (shop/web[Pod]): their ingress paths "
        "are out of model (foreign_policy, ? in tables)",
        "crd.antrea.io/v1alpha1 ClusterNetworkPolicy db-ingress selects 1 endpoint (shop/db[Pod]): their ingress "
        "paths are out of model (foreign_policy, ? in tables)",
        "crd.antrea.io/v1beta1 NetworkPolicy ops/tool-egress selects 1 endpoint (ops/tool[Pod]): their egress paths "
        "are out of model (foreign_policy, ? in tables)",
        "crd.projectcalico.org/v1 NetworkPolicy batch/batch-either selects 1 endpoint (batch/job[Pod]): their "
        "ingress and egress paths are out of model (foreign_policy, ? in tables)",
        "projectcalico.org/v3 GlobalNetworkPolicy ops-probe selects 1 endpoint (ops/probe[Pod]): their ingress "
        "paths are out of model (foreign_policy, ? in tables)",
        "projectcalico.org/v3 NetworkPolicy shop/api-egress selects 1 endpoint (shop/api[Pod]): their egress paths "
        "are out of model (foreign_policy, ? in tables)",
    ]


def test_table_marks_them_with_a_question_mark(cli: Callable[..., Result]) -> None:
    result = cli(["analyze", "-f", str(VENDOR), "--from", "free/a", "--from", "shop/api", "--matrix"])
    assert result.code == 0
    assert result.out.splitlines() == [
        "80/TCP: 2 allowed, 1 denied, 11 out of model (. allowed, X denied, - not judged (host network), "
        "? out of model, ~ not a pair; rows: from, columns: to)",
        "from\\to       batch/job[Pod] free/a[Pod] free/b[Pod] ops/probe[Pod] ops/tool[Pod] shop/api[Pod] shop/db[Pod] "
        "shop/web[Pod]",
        "free/a[Pod]   ?              ~           .           ?              .             X             ?"
        "            ?",
        "shop/api[Pod] ?              ?           ?           ?              ?             ~             ?"
        "            ?",
    ]


def test_per_pair_output_lists_them_out_of_model_with_the_policy(tmp_path: Path, cli: Callable[..., Result]) -> None:
    """The default, one entry per pair: a vendor-selected path is listed out of model (whatever the NetworkPolicies
    allow), with the vendor policy as its reason; the other pairs are what they are without the vendor policies."""
    result = cli(["analyze", "-f", str(VENDOR), "-o", "json"])
    assert result.code == 0, result.err
    with_vendor = {(e["from"], e["to"]): e for e in json.loads(result.out)["connections"]}
    plain = cli(["analyze", "-f", str(_without_vendor_policies(tmp_path)), "-o", "json"])
    assert plain.code == 0, plain.err
    without = {(e["from"], e["to"]): e for e in json.loads(plain.out)["connections"]}
    pods = json.loads(result.out)["pods"]
    marked = 0
    for src in pods:
        for dst in pods:
            if src == dst:
                continue
            reasons = [r for r in (EGRESS.get(src), INGRESS.get(dst)) if r]
            entry = with_vendor.get((src, dst))
            if reasons:
                marked += 1
                assert entry is not None, (src, dst)
                assert entry["allowed"] == {} and entry["decidingPolicies"] == []
                assert entry["outOfModel"] == {p: [[1, 65535]] for p in ("SCTP", "TCP", "UDP")}
                assert entry["outOfModelReasons"] == ["; ".join(reasons)]
            else:
                assert entry == without.get((src, dst)), (src, dst)
    assert marked == 38
    table = cli(["analyze", "-f", str(VENDOR), "--from", "free/a"])
    assert "free/a[Pod] => shop/web[Pod] : out of model: All Connections" in table.out.splitlines()
    assert "Cilium, Calico or Antrea policy" in table.out


def test_explain_names_the_vendor_policy(cli: Callable[..., Result]) -> None:
    result = cli(["explain", "-f", str(VENDOR), "--from", "shop/api", "--to", "shop/web"])
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "shop/api[Pod] -> shop/web[Pod] on 80/TCP: UNKNOWN (out of model: the manifests cannot tell).",
        "Egress: foreign_policy: projectcalico.org/v3 NetworkPolicy shop/api-egress.",
        "Ingress: foreign_policy: cilium.io/v2 CiliumNetworkPolicy shop/web-ingress.",
    ]


def test_check_does_not_count_them_as_held(tmp_path: Path, cli: Callable[..., Result]) -> None:
    expect = tmp_path / "expect.yaml"
    expect.write_text(yaml.safe_dump([
        {"name": "api is closed to free", "from": "free/a", "to": "shop/api", "port": 80, "allowed": False},
        {"name": "web is closed to free", "from": "free/a", "to": "shop/web", "port": 80, "allowed": False},
    ]))
    result = cli(["check", "-f", str(VENDOR), "--expect", str(expect)])
    assert result.code == 1
    assert "ok   [0] api is closed to free (1 pair judged)" in result.out
    assert ("free/a[Pod] -> shop/web[Pod] on 80/TCP: expected DENIED, the analysis says NOT JUDGED (foreign_policy: "
            "cilium.io/v2 CiliumNetworkPolicy shop/web-ingress)") in result.out


def test_strict_makes_them_errors(cli: Callable[..., Result]) -> None:
    result = cli(["analyze", "--strict", "-f", str(VENDOR)])
    assert result.code == 2
    assert result.out == ""
    assert "error: " in result.err and "cilium.io/v2 CiliumNetworkPolicy is not analyzed" in result.err


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "x", "namespace": "shop"},
          "spec": {"endpointSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}},
         "CiliumNetworkPolicy shop/x: spec.endpointSelector.matchExpressions[0].values: Required value"),
        ({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "x"},
          "spec": {"selector": "all()", "types": ["Inbound"]}},
         'GlobalNetworkPolicy x: spec.types[0]: Unsupported value: "Inbound"'),
        ({"apiVersion": "crd.antrea.io/v1beta1", "kind": "ClusterNetworkPolicy", "metadata": {"name": "x"},
          "spec": {"ingress": [{"action": "Drop"}]}},
         "ClusterNetworkPolicy x: spec.appliedTo: Required value"),
    ],
)
def test_malformed_vendor_policy_is_an_error(
    doc: dict[str, object], message: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = cli(["analyze", "-f", str(VENDOR), "-f", str(path)])
    assert result.code == 2
    assert f"netpol-auditor analyze: error: {path}: {message}" in result.err


def test_html_page_names_them(cli: Callable[..., Result]) -> None:
    result = cli(["analyze", "-f", str(VENDOR), "-o", "html"])
    assert result.code == 0
    # the policies and their endpoints are named in the page's notes (its cells: tests/page/test_page_data.py)
    assert ("cilium.io/v2 CiliumNetworkPolicy shop/web-ingress selects 1 endpoint (shop/web[Pod]): their ingress "
            "paths are out of model (foreign_policy, not known on this page)") in result.out
