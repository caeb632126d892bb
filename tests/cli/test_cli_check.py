"""``netpol-auditor check``: expectations about reachability as a CI gate, on ``helm template`` output of a
three-tier chart. Exit 0 when every expectation holds, 1 when one is violated (with what was expected, what the
analysis says and the deciding policies), 2 for an expectations file that cannot be checked; ``--junit`` writes a
report CI systems read, ``--format github`` annotations."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_harness import FIXTURES, Result

HELM = FIXTURES / "helm-template-three-tier.yaml"
EXPECTATIONS = FIXTURES / "expectations-three-tier.yaml"
Cli = Callable[..., Result]

# A change to the chart that lets the frontend reach the database: both of its sides are opened on 5432.
DEBUG_POLICY = """
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: debug-frontend-to-db
  namespace: shop
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {matchLabels: {app.kubernetes.io/component: frontend}}}]
      ports: [{port: 5432}]
  egress:
    - to: [{podSelector: {matchLabels: {app.kubernetes.io/component: db}}}]
      ports: [{port: 5432}]
"""


def _junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def _expect(tmp_path: Path, text: str) -> str:
    path = tmp_path / "expectations.yaml"
    path.write_text(text)
    return str(path)


def test_expectations_that_hold_pass_and_the_report_says_so(cli: Cli, tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = cli(["check", "-f", str(HELM), "--expect", str(EXPECTATIONS), "--junit", str(report)])
    assert result.code == 0, result.err
    assert result.err == ""
    assert result.out.splitlines()[-1] == "5 expectations: 5 held, 0 violated"
    assert "ok   [2] only the api and the backup reach the database (3 pairs judged)" in result.out
    suite = _junit(report)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:2] == ["[0] the frontend reaches the api",
                                                  "[1] the frontend never reaches the database"]
    assert all(c.find("failure") is None for c in cases)
    assert cases[1].get("file") == str(EXPECTATIONS) and cases[1].get("line") == "8"


def test_a_policy_change_that_breaks_an_expectation_fails_the_build(cli: Cli, tmp_path: Path) -> None:
    """The issue's done-when: the same expectations on the chart's output with one more policy, read from stdin."""
    report = tmp_path / "report.xml"
    result = cli(
        ["check", "-f", "-", "--expect", str(EXPECTATIONS), "--junit", str(report)],
        stdin=HELM.read_text() + DEBUG_POLICY,
    )
    assert result.code == 1, result.err
    assert result.out.splitlines()[-1] == "5 expectations: 3 held, 2 violated"
    frontend_to_db = (
        "shop/shop-frontend[Deployment] -> shop/shop-db[StatefulSet] on 5432/TCP: expected DENIED, "
        "the analysis says ALLOWED."
    )
    assert f"FAIL [1] the frontend never reaches the database ({EXPECTATIONS}:8; 1 pair judged, 1 not as expected)" \
        in result.out
    assert f"  {frontend_to_db}\n    Egress: " in result.out
    assert "  # only the api and the backup hold database credentials" in result.out
    # the deciding rule, in the words of `explain`
    assert "allowed by shop/debug-frontend-to-db egress[0] (to[0], ports[0])" in result.out
    assert "allowed by shop/debug-frontend-to-db ingress[0] (from[0], ports[0])" in result.out

    suite = _junit(report)
    assert (suite.get("tests"), suite.get("failures")) == ("5", "2")
    failed = {c.get("name"): c.find("failure") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert set(failed) == {"[1] the frontend never reaches the database",
                           "[2] only the api and the backup reach the database"}
    failure = failed["[1] the frontend never reaches the database"]
    assert failure is not None
    assert failure.get("message") == frontend_to_db.removesuffix(".")
    assert failure.get("type") == "violated"
    assert "shop/debug-frontend-to-db ingress[0]" in (failure.text or "")
    assert "only the api and the backup hold database credentials" in (failure.text or "")


def test_an_expectation_that_allowed_traffic_flows_fails_when_it_is_denied(cli: Cli, tmp_path: Path) -> None:
    expect = _expect(tmp_path, "- from: shop/shop-frontend\n  to: shop/shop-db\n  port: 5432\n  allowed: true\n")
    result = cli(["check", "-f", str(HELM), "--expect", expect])
    assert result.code == 1
    assert "expected ALLOWED, the analysis says DENIED." in result.out
    assert ("Ingress: shop/shop-db[StatefulSet] is isolated for ingress by shop/default-deny, shop/shop-db; "
            "no ingress rule of these policies allows traffic from shop/shop-frontend[Deployment]") in result.out
    assert "FAIL [0] shop/shop-frontend -> shop/shop-db on 5432/TCP: allowed (" in result.out


def test_only_from_fails_on_every_other_source_that_gets_in(cli: Cli, tmp_path: Path) -> None:
    expect = _expect(tmp_path, "- to: shop/shop-db\n  port: 5432\n  onlyFrom: [shop/shop-api]\n")
    result = cli(["check", "-f", str(HELM), "--expect", expect])
    assert result.code == 1
    assert ("shop/shop-backup[CronJob] -> shop/shop-db[StatefulSet] on 5432/TCP: expected DENIED, the analysis says "
            "ALLOWED.") in result.out
    assert "; 3 pairs judged, 1 not as expected)" in result.out


def test_only_from_an_empty_list_means_nothing_gets_in(cli: Cli, tmp_path: Path) -> None:
    expect = _expect(tmp_path, "- to: shop/shop-frontend\n  port: http\n  onlyFrom: []\n")
    result = cli(["check", "-f", str(HELM), "--expect", expect])
    assert result.code == 0, result.out + result.err
    assert "ok   [0] only nothing -> shop/shop-frontend on http/TCP (3 pairs judged)" in result.out


def test_only_to_leaves_out_destinations_without_that_named_port_and_says_so(cli: Cli, tmp_path: Path) -> None:
    expect = _expect(tmp_path, "- from: shop/shop-backup\n  port: postgres\n  onlyTo: [shop/shop-db]\n")
    result = cli(["check", "-f", str(HELM), "--expect", expect])
    assert result.code == 0, result.err
    assert "1 pair judged; left out: shop/shop-api[Deployment] declares no container port named postgres/TCP" \
        in result.out


@pytest.mark.parametrize(
    ("reference", "expected_code"),
    [
        ("{namespace: shop, podSelector: {matchLabels: {app.kubernetes.io/component: frontend}}}", 0),
        ("{namespaceSelector: {}, podSelector: {matchExpressions: [{key: app.kubernetes.io/component, operator: In, "
         "values: [frontend]}]}}", 0),
        ("{namespace: shop}", 1),  # the api itself is left out (a pod never blocks itself), but the backup is denied
    ],
)
def test_selector_form_picks_endpoints_as_a_policy_peer_picks_pods(
    cli: Cli, tmp_path: Path, reference: str, expected_code: int
) -> None:
    expect = _expect(tmp_path, f"- from: {reference}\n  to: shop/shop-api\n  port: api\n  allowed: true\n")
    result = cli(["check", "-f", str(HELM), "--expect", expect])
    assert result.code == expected_code, result.out + result.err
    if expected_code == 1:
        assert "shop/shop-backup[CronJob] -> shop/shop-api[Deployment] on 9000/TCP: expected ALLOWED" in result.out


def test_github_format_annotates_the_expectation_line(cli: Cli) -> None:
    result = cli(["check", "-f", "-", "--expect", str(EXPECTATIONS), "--format", "github"],
                 stdin=HELM.read_text() + DEBUG_POLICY)
    assert result.code == 1
    lines = result.out.splitlines()
    errors = [line for line in lines if line.startswith("::error ")]
    assert len(errors) == 2
    assert errors[0].startswith(
        f"::error file={EXPECTATIONS},line=8,title=expectation [1] \"the frontend never reaches the database\" "
        "violated::shop/shop-frontend[Deployment] -> shop/shop-db[StatefulSet] on 5432/TCP: expected DENIED"
    )
    assert "%0A  Egress: " in errors[0]  # one line per command: newlines escaped
    assert lines[-1] == "5 expectations: 3 held, 2 violated"
    assert not any(line.startswith(("ok ", "FAIL ")) for line in lines)


def test_github_format_escapes_commas_and_colons_in_properties(cli: Cli, tmp_path: Path) -> None:
    expect = _expect(tmp_path, "- name: 'a, b: c 100%'\n  from: shop/shop-frontend\n  to: shop/shop-db\n"
                               "  port: 5432\n  allowed: true\n")
    result = cli(["check", "-f", str(HELM), "--expect", expect, "--format", "github"])
    assert result.code == 1
    assert 'title=expectation [0] "a%2C b%3A c 100%25" violated::' in result.out


def test_held_expectations_print_no_annotation(cli: Cli) -> None:
    result = cli(["check", "-f", str(HELM), "--expect", str(EXPECTATIONS), "--format", "github"])
    assert result.code == 0
    assert result.out == "5 expectations: 5 held, 0 violated\n"


# ----------------------------------------------------------------------------------------------------------------
# Expectations that cannot be checked: exit 2, one line per problem naming the file, line, expectation and field.


def _invalid(cli: Cli, tmp_path: Path, text: str) -> list[str]:
    expect = _expect(tmp_path, text)
    report = tmp_path / "report.xml"
    result = cli(["check", "-f", str(HELM), "--expect", expect, "--junit", str(report)])
    assert result.code == 2, result.out + result.err
    assert result.out == ""
    assert not report.exists()
    assert "Traceback" not in result.err
    prefix = f"netpol-auditor check: error: {expect}"
    lines = result.err.splitlines()
    assert all(line.startswith(prefix) for line in lines), lines
    return [line.removeprefix(prefix) for line in lines]


def test_a_name_that_matches_no_endpoint_is_an_error_not_a_pass(cli: Cli, tmp_path: Path) -> None:
    text = ("- from: shop/shop-frontend\n  to: shop/shop-api\n  port: api\n  allowed: true\n"
            "- name: db is private\n  from: shop/shop-fronted\n  to: shop/shop-db\n  port: 5432\n  allowed: false\n")
    assert _invalid(cli, tmp_path, text) == [
        ':5: expectation [1] "db is private": from: "shop/shop-fronted" matches no endpoint of the input '
        '(did you mean "shop/shop-frontend[Deployment]"?)'
    ]


def test_a_selector_that_picks_nothing_is_an_error(cli: Cli, tmp_path: Path) -> None:
    text = "- to: shop/shop-db\n  port: 5432\n  onlyFrom: [shop/shop-api, {namespace: monitoring}]\n"
    assert _invalid(cli, tmp_path, text) == [
        ":1: expectation [0]: onlyFrom[1]: selector (namespace monitoring) matches no endpoint of the input"
    ]


def test_an_unknown_key_is_an_error_naming_the_field(cli: Cli, tmp_path: Path) -> None:
    text = "- from: shop/shop-frontend\n  to: {namespace: shop, podSelectr: {}}\n  port: api\n  alowed: false\n"
    assert _invalid(cli, tmp_path, text) == [
        ':1: expectation [0]: unknown field "alowed" (did you mean "allowed"?)',
        ":1: expectation [0]: one of allowed, onlyFrom and onlyTo is required",
        ':1: expectation [0]: unknown field "to.podSelectr" (did you mean "podSelector"?)',
    ]


def test_a_named_port_the_destination_does_not_declare_is_an_error(cli: Cli, tmp_path: Path) -> None:
    text = "- from: shop/shop-frontend\n  to: shop/shop-api\n  port: http\n  allowed: false\n"
    assert _invalid(cli, tmp_path, text) == [
        ":1: expectation [0]: port: shop/shop-api[Deployment] declares no container port named http/TCP"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", ": must be a list of expectations"),
        ("from: a\nto: b\n", ": must be a list of expectations"),
        ("[]\n", ": holds no expectations: there is nothing to check"),
        ("- from: a\n  from: b\n", ':2: invalid YAML: duplicate key "from"'),
        ("- {from: shop/shop-api, to: shop/shop-db, port: '5432', allowed: true}\n",
         ':1: expectation [0]: port: Invalid value: "5432": a port number is written without quotes'),
        ("- {from: shop/shop-api, to: shop/shop-db, port: 5432, protocol: ICMP, allowed: true}\n",
         ':1: expectation [0]: protocol: Unsupported value: "ICMP"'),
        ("- {from: shop/shop-api, to: shop/shop-db, port: 5432, allowed: maybe}\n",
         ':1: expectation [0]: allowed: must be true or false, not "maybe"'),
        ("- {from: shop/shop-api, to: shop/shop-db, port: 5432}\n",
         ":1: expectation [0]: one of allowed, onlyFrom and onlyTo is required"),
        ("- {from: shop/shop-api, to: shop/shop-db, port: 5432, allowed: true, onlyFrom: []}\n",
         ":1: expectation [0]: onlyFrom: allowed and onlyFrom are two expectations"),
        ("- {to: shop/shop-db, port: 5432, allowed: true}\n",
         ":1: expectation [0]: from: Required value: allowed needs from and to"),
        ("- {from: shop/shop-api, to: shop/shop-db, port: 5432, onlyFrom: [shop/shop-api]}\n",
         ":1: expectation [0]: from: onlyFrom judges every endpoint of the input as a source"),
        ("- {from: {podSelector: {}}, to: shop/shop-db, port: 5432, allowed: true}\n",
         ":1: expectation [0]: from: a selector needs namespace or namespaceSelector"),
        ("- {from: {namespace: shop, podSelector: {matchLabels: {tier: 1}}}, to: shop/shop-db, port: 5432, "
         "allowed: true}\n",
         ":1: expectation [0]: from.podSelector.matchLabels.tier: Invalid value: 1: label values must be strings"),
        ("- {from: shop/shop-db, to: shop/shop-db, port: 5432, allowed: true}\n",
         ":1: expectation [0]: to: no pair of distinct endpoints to judge"),
    ],
    ids=lambda v: v.split("\n")[0][:60],
)
def test_malformed_expectations(cli: Cli, tmp_path: Path, text: str, problem: str) -> None:
    problems = _invalid(cli, tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems


def test_a_missing_expectations_file_is_an_error(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli(["check", "-f", str(HELM), "--expect", str(missing)])
    assert result.code == 2
    assert result.err == f"netpol-auditor check: error: {missing}: cannot read: no such file or directory\n"


def test_invalid_manifests_are_errors_as_for_analyze(cli: Cli) -> None:
    result = cli(["check", "-f", "-", "--expect", str(EXPECTATIONS)],
                 stdin="apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n"
                 "spec: {podSelector: {}, ingres: []}\n")
    assert result.code == 2
    assert 'unknown field "spec.ingres"' in result.err


def test_an_unwritable_junit_report_is_an_error(cli: Cli, tmp_path: Path) -> None:
    result = cli(["check", "-f", str(HELM), "--expect", str(EXPECTATIONS), "--junit", str(tmp_path / "no" / "r.xml")])
    assert result.code == 2
    assert result.err.startswith(f"netpol-auditor check: error: --junit {tmp_path / 'no' / 'r.xml'}: cannot write: ")


def test_text_report_of_a_violated_run(cli: Cli, golden: Callable[[str, str], None],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    result = cli(["check", "-f", "-", "--expect", EXPECTATIONS.name], stdin=HELM.read_text() + DEBUG_POLICY)
    assert result.code == 1
    golden("check-violated.txt", result.out)


def _readme_section() -> str:
    return (FIXTURES.parents[2] / "README.md").read_text().split("### `check`", 1)[1]


def _readme_example() -> str:
    return _readme_section().split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_holds_on_the_three_tier_chart_and_its_error_is_the_one_printed(cli: Cli, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("netpol-expectations.yaml").write_text(_readme_example())
    result = cli(["check", "-f", str(HELM), "--expect", "netpol-expectations.yaml"])
    assert result.code == 0, result.out + result.err
    assert result.out.endswith("3 expectations: 3 held, 0 violated\n")

    Path("netpol-expectations.yaml").write_text(_readme_example().replace("- shop/shop-api\n", "- shop/shop-apu\n"))
    result = cli(["check", "-f", str(HELM), "--expect", "netpol-expectations.yaml"])
    assert result.code == 2
    quoted = " ".join(_readme_section().split("(`error: ", 1)[1].split("`)")[0].split())
    assert result.err == f"netpol-auditor check: error: {quoted}\n"


def test_per_pod_endpoints_of_a_cluster_dump(cli: Cli, tmp_path: Path) -> None:
    expect = _expect(tmp_path, "- to: shop/db-0\n  port: 5432\n  onlyFrom: ['shop/api-*']\n")
    result = cli(["check", "--per-pod", "-f", str(FIXTURES / "kubectl-get-all.yaml"), "--expect", expect])
    assert result.code == 0, result.out + result.err
    assert "(5 pairs judged; left out: kube-system/kube-proxy-q7w2r uses the host network" in result.out
