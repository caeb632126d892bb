"""``netpol-auditor diff``: the paths a change opens and closes, per workload and port, with the deciding rules on
both sides; endpoints added or removed listed as such; ``--exit-code``; table, json and md output."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cli_harness import FIXTURES, Result

DIFF = FIXTURES / "diff"
WEB, API, DB = "shop/web[Deployment]", "shop/api[Deployment]", "shop/db[StatefulSet]"
REPORT, CACHE = "shop/report[CronJob]", "shop/cache[Deployment]"
PORTS = ["5432/TCP", "8080/TCP", "9000/TCP"]


def _args(before: Sequence[str], after: Sequence[str]) -> list[str]:
    """``--base``/``--head`` for fixture files of tests/cli/fixtures/diff/."""
    return [arg for name in before for arg in ("--base", str(DIFF / name))] + [
        arg for name in after for arg in ("--head", str(DIFF / name))
    ]


def _diff(cli: Callable[..., Result], before: Sequence[str], after: Sequence[str], *argv: str) -> dict[str, Any]:
    result = cli(["diff", *_args(before, after), "-o", "json", *argv])
    assert result.code == 0, result.err
    data: dict[str, Any] = json.loads(result.out)
    return data


def _paths(data: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    return [(c["change"], c["from"], c["to"], c["port"]) for c in data["changes"]]


WIDENED = (
    ["shop.yaml", "default-deny.yaml", "api-from-web.yaml"],
    ["shop.yaml", "default-deny.yaml", "api-from-shop.yaml"],
)


def test_a_policy_added_closes_paths(cli: Callable[..., Result]) -> None:
    data = _diff(cli, ["shop.yaml"], ["shop.yaml", "default-deny.yaml"])
    assert data["ports"] == PORTS
    # Every ordered pair of the three workloads, on each of the three ports: open before, isolated after.
    assert len(data["changes"]) == 3 * 2 * 3
    assert {c["change"] for c in data["changes"]} == {"closed"}
    first = data["changes"][0]
    assert (first["from"], first["to"], first["port"]) == (API, DB, 5432)
    assert first["before"] == {
        "allowed": True,
        "decidingPolicies": [],
        "admittedBy": [],
        "reason": None,
        "decision": "allowed (no policy isolates either side)",
    }
    assert first["after"]["allowed"] is False
    assert first["after"]["decidingPolicies"] == ["shop/default-deny"]
    assert first["after"]["decision"] == "denied: ingress isolated by shop/default-deny, no rule admits"
    assert data["summary"] == {"opened": 0, "closed": 18, "notJudged": 0, "addedEndpoints": 0, "removedEndpoints": 0}


def test_a_widened_rule_opens_paths(cli: Callable[..., Result]) -> None:
    data = _diff(cli, *WIDENED)
    assert _paths(data) == [("opened", DB, API, 9000)]
    change = data["changes"][0]
    assert change["before"]["decidingPolicies"] == ["shop/api", "shop/default-deny"]
    assert change["after"]["admittedBy"] == [
        {"namespace": "shop", "policy": "api", "direction": "Ingress", "rule": 0, "peer": 0, "port": 0,
         "namedPort": {"name": "api", "resolvedTo": 9000}}
    ]
    # Narrowing it back closes the same path.
    back = _diff(cli, WIDENED[1], WIDENED[0])
    assert _paths(back) == [("closed", DB, API, 9000)]


def test_a_label_change_moves_a_workload(cli: Callable[..., Result]) -> None:
    policies = ["default-deny.yaml", "api-from-web.yaml"]
    data = _diff(cli, ["shop.yaml", "report.yaml", *policies], ["shop.yaml", "report-relabelled.yaml", *policies])
    # The report job now carries web's label, so the api's rule for web admits it; it is the same endpoint.
    assert _paths(data) == [("opened", REPORT, API, 9000)]
    assert data["addedEndpoints"] == [] and data["removedEndpoints"] == []


def test_workloads_added_or_removed_are_listed_not_their_paths(cli: Callable[..., Result]) -> None:
    added = _diff(cli, ["shop.yaml", "default-deny.yaml"], ["shop.yaml", "default-deny.yaml", "cache.yaml"])
    assert added["addedEndpoints"] == [CACHE]
    assert added["removedEndpoints"] == []
    # The cache's port is compared too, between the endpoints both sides have: nothing changed there.
    assert added["ports"] == ["5432/TCP", "6379/TCP", *PORTS[1:]]
    assert added["changes"] == []
    removed = _diff(cli, ["shop.yaml", "cache.yaml"], ["shop.yaml"])
    assert (removed["addedEndpoints"], removed["removedEndpoints"], removed["changes"]) == ([], [CACHE], [])


def test_exit_code_is_0_without_change_and_1_with_one(cli: Callable[..., Result]) -> None:
    same = cli(["diff", "-f", str(DIFF / "shop.yaml"), "-f", str(DIFF / "shop.yaml"), "--exit-code"])
    assert (same.code, same.err) == (0, "")
    assert same.out.startswith("no change in reachability\n")
    changed = cli(["diff", *_args(*WIDENED), "--exit-code"])
    assert changed.code == 1, changed.err
    added = cli(["diff", *_args(["shop.yaml"], ["shop.yaml", "cache.yaml"]), "--exit-code"])
    assert added.code == 1, added.err
    # Without --exit-code a change is not a failure.
    assert cli(["diff", *_args(*WIDENED)]).code == 0


def test_bad_input_or_usage_exits_2(cli: Callable[..., Result], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((DIFF / "api-from-web.yaml").read_text().replace("ingress:", "ingres:"))
    result = cli(["diff", "-f", str(DIFF / "shop.yaml"), "-f", str(bad), "--exit-code"])
    assert result.code == 2
    assert 'NetworkPolicy shop/api: unknown field "spec.ingres"' in result.err
    assert cli(["diff", "-f", str(DIFF / "shop.yaml"), "-f", str(tmp_path / "missing")]).code == 2
    once = cli(["diff", "-f", str(DIFF / "shop.yaml")])
    assert once.code == 2 and "give it twice" in once.err
    mixed = cli(["diff", "-f", str(DIFF / "shop.yaml"), "-f", str(DIFF / "shop.yaml"), "--head", str(DIFF)])
    assert mixed.code == 2 and "not both" in mixed.err
    assert cli(["diff", "--base", str(DIFF / "shop.yaml")]).code == 2


def test_per_pod_compares_pods(cli: Callable[..., Result], tmp_path: Path) -> None:
    def pod(name: str, app: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": f"10.0.0.{len(name)}"},
        }

    deny = (DIFF / "default-deny.yaml").read_text()
    allow_web = deny.replace("default-deny", "from-web").replace(
        "podSelector: {}", "podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]"
    )
    before, after = tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text("\n---\n".join([json.dumps(pod("a", "web")), json.dumps(pod("bb", "db")), deny, allow_web]))
    after.write_text("\n---\n".join([json.dumps(pod("a", "web")), json.dumps(pod("bb", "web")), deny, allow_web]))
    result = cli(["diff", "-f", str(before), "-f", str(after), "--per-pod", "-o", "json"])
    assert result.code == 0, result.err
    assert _paths(json.loads(result.out)) == [("opened", "shop/bb", "shop/a", 80)]


def test_external_addresses_are_compared_both_ways(cli: Callable[..., Result], tmp_path: Path) -> None:
    egress = tmp_path / "web-egress.yaml"
    egress.write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-egress, namespace: shop}\n"
        "spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Egress]}\n"
    )
    result = cli(
        ["diff", "--base", str(DIFF / "shop.yaml"), "--head", str(DIFF / "shop.yaml"), "--head", str(egress),
         "--external", "192.0.2.1", "--port", "443", "-o", "json"]
    )  # fmt: skip
    assert result.code == 0, result.err
    assert _paths(json.loads(result.out)) == [
        ("closed", WEB, API, 443), ("closed", WEB, DB, 443), ("closed", WEB, "192.0.2.1", 443),
    ]  # fmt: skip


def test_json_output_is_stable(cli: Callable[..., Result], golden: Callable[[str, str], None]) -> None:
    result = cli(["diff", *_args(*WIDENED), "-o", "json", "--explain"])
    assert result.code == 0, result.err
    golden("diff-widened.json", result.out)


def test_table_output(cli: Callable[..., Result], golden: Callable[[str, str], None]) -> None:
    result = cli(["diff", *_args(["shop.yaml", "cache.yaml"], ["shop.yaml", "default-deny.yaml"]), "--port", "9000"])
    assert result.code == 0, result.err
    golden("diff-closed-table.txt", result.out)


def test_markdown_output_for_a_pull_request(cli: Callable[..., Result], golden: Callable[[str, str], None]) -> None:
    result = cli(["diff", *_args(*WIDENED), "-o", "md"])
    assert result.code == 0, result.err
    golden("diff-widened.md", result.out)
    same = cli(["diff", *_args(WIDENED[0], WIDENED[0]), "-o", "md"])
    assert same.out.startswith("#### NetworkPolicy reachability: no change\n")


def test_a_vendor_policy_added_or_removed_makes_its_paths_not_judged(cli: Callable[..., Result]) -> None:
    """A Cilium policy selecting db for ingress: the paths into db become out of model (they were judged before),
    none other changes; removing it makes them judged again. A diff must never report an open or closed path a
    vendor policy may decide."""
    policies = ["default-deny.yaml", "api-from-web.yaml"]
    data = _diff(cli, ["shop.yaml", *policies], ["shop.yaml", *policies, "cilium-db.yaml"])
    into_db = [(src, port) for src in (API, WEB) for port in (5432, 8080, 9000)]
    assert _paths(data) == [("notJudged", src, DB, port) for src, port in into_db]
    change = data["changes"][0]
    assert change["before"]["allowed"] is False
    assert change["after"] == {
        "allowed": None,
        "decidingPolicies": [],
        "admittedBy": [],
        "reason": "foreign_policy: cilium.io/v2 CiliumNetworkPolicy shop/db-ingress",
        "decision": "not judged (foreign_policy: cilium.io/v2 CiliumNetworkPolicy shop/db-ingress)",
    }
    back = _diff(cli, ["shop.yaml", *policies, "cilium-db.yaml"], ["shop.yaml", *policies])
    assert _paths(back) == [("notJudged", src, DB, port) for src, port in into_db]
    # With the vendor policy on both sides, a NetworkPolicy change on db's ingress is no change at all.
    same = _diff(cli, ["shop.yaml", "cilium-db.yaml"], ["shop.yaml", "default-deny.yaml", "cilium-db.yaml"])
    assert all(c["to"] != DB for c in same["changes"])
    assert {c["change"] for c in same["changes"]} == {"closed"}
