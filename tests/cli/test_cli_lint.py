"""``netpol-auditor lint``: one line per finding naming file, check, object and field; json; ``--fail-on``;
``--disable``/``--enable``; invalid input and usage exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_harness import FIXTURES, Result

LINT = FIXTURES / "lint"
PROBLEMS, CLEAN = LINT / "problems", LINT / "clean"


def _lint(cli: Callable[..., Result], *argv: str) -> Result:
    result = cli(["lint", *argv])
    return Result(result.code, result.out.replace(f"{LINT}/", ""), result.err.replace(f"{LINT}/", ""))


def test_text_output_one_line_per_finding(cli: Callable[..., Result], golden: Callable[[str, str], None]) -> None:
    result = _lint(cli, "-f", str(PROBLEMS))
    assert result.code == 0
    golden("lint-problems.txt", result.out)
    assert [line.split(": ")[1] for line in result.out.splitlines()] == [
        "error NPA003", "warning NPA004", "warning NPA005", "warning NPA001", "warning NPA002", "warning NPA006",
    ]  # fmt: skip
    # The reader's warning about the same named port is not said twice; the summary goes to stderr.
    assert result.err == "netpol-auditor lint: 1 error, 5 warnings\n"


def test_json_output(cli: Callable[..., Result]) -> None:
    result = _lint(cli, "-f", str(PROBLEMS), "-o", "json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["summary"] == {"error": 1, "warning": 5}
    assert data["findings"][0] == {
        "id": "NPA003",
        "severity": "error",
        "kind": "NetworkPolicy",
        "namespace": "shop",
        "name": "api",
        "path": "spec.ingress[0].ports[0].port",
        "file": "problems/policies.yaml",
        "message": 'named port "api-port" (TCP) is declared by no container of the pods the policy selects: this '
        "port entry admits nothing",
    }
    assert data["findings"][-1]["kind"] == "Namespace" and data["findings"][-1]["namespace"] is None


@pytest.mark.parametrize(
    ("fail_on", "problems", "clean"), [("never", 0, 0), ("error", 1, 0), ("warning", 1, 0), (None, 0, 0)]
)
def test_fail_on(cli: Callable[..., Result], fail_on: str | None, problems: int, clean: int) -> None:
    flag = ["--fail-on", fail_on] if fail_on else []
    assert _lint(cli, "-f", str(PROBLEMS), *flag).code == problems
    assert _lint(cli, "-f", str(CLEAN), *flag).code == clean


def test_fail_on_error_ignores_warnings(cli: Callable[..., Result]) -> None:
    assert _lint(cli, "-f", str(PROBLEMS), "--disable", "NPA003", "--fail-on", "error").code == 0
    assert _lint(cli, "-f", str(PROBLEMS), "--disable", "NPA003", "--fail-on", "warning").code == 1


def test_disable_and_enable(cli: Callable[..., Result]) -> None:
    result = _lint(cli, "-f", str(PROBLEMS), "--disable", "NPA003,npa004", "--disable", "NPA006")
    assert "NPA003" not in result.out and "NPA004" not in result.out and "NPA006" not in result.out
    # With NPA003 off, the reader's own warning about the named port is shown.
    assert 'warning: problems/policies.yaml: NetworkPolicy shop/api: spec.ingress[0].ports[0].port: named port' in (
        result.err
    )
    assert "NPA007" not in _lint(cli, "-f", str(PROBLEMS)).out
    enabled = _lint(cli, "-f", str(PROBLEMS), "--enable", "NPA007").out.splitlines()
    assert [line for line in enabled if "NPA007" in line] == [
        "problems/workloads.yaml: warning NPA007: Namespace shop: no NetworkPolicy with an empty podSelector lists "
        "Egress in policyTypes: pods no policy selects for egress are open to every destination (a default deny "
        "for egress closes them)",
        "problems/workloads.yaml: warning NPA007: Namespace tools: no NetworkPolicy with an empty podSelector lists "
        "Egress in policyTypes: pods no policy selects for egress are open to every destination (a default deny "
        "for egress closes them)",
    ]
    clean = _lint(cli, "-f", str(CLEAN), "--enable", "NPA007", "--fail-on", "warning")
    assert (clean.code, clean.out) == (0, "")


def test_pod_cidr(cli: Callable[..., Result], tmp_path: Path) -> None:
    written = tmp_path / "no-status.yaml"
    written.write_text((PROBLEMS / "workloads.yaml").read_text().split("status:")[0])
    argv = ["-f", str(written), "-f", str(PROBLEMS / "policies.yaml")]
    assert "NPA005" not in _lint(cli, *argv).out
    found = [line for line in _lint(cli, *argv, "--pod-cidr", "10.244.0.0/16").out.splitlines() if "NPA005" in line]
    assert len(found) == 1 and "matches addresses of the pod network 10.244.0.0/16" in found[0]
    assert _lint(cli, *argv, "--pod-cidr", "10.244.0.0/33").code == 2


def test_usage_and_invalid_input_exit_2(cli: Callable[..., Result], tmp_path: Path) -> None:
    unknown = _lint(cli, "-f", str(PROBLEMS), "--disable", "NPA999")
    assert unknown.code == 2 and "--disable: unknown check NPA999" in unknown.err
    bad = tmp_path / "bad.yaml"
    bad.write_text((PROBLEMS / "policies.yaml").read_text().replace("podSelector: {}", "podSelectr: {}"))
    result = _lint(cli, "-f", str(bad), "--fail-on", "never")
    assert result.code == 2
    assert 'NetworkPolicy shop/default-deny: unknown field "spec.podSelectr"' in result.err
    assert _lint(cli, "-f", str(tmp_path / "missing.yaml")).code == 2


@pytest.mark.parametrize("command", ["lint", "diff"])
def test_run_as_a_module_invalid_input_exits_2_without_traceback(command: str, tmp_path: Path) -> None:
    """``python -m netpol_auditor.cli``: the subcommands defined outside cli.py raise the errors its main handles."""
    missing = str(tmp_path / "missing.yaml")
    argv = ["-f", missing] if command == "lint" else ["-f", missing, "-f", missing]
    proc = subprocess.run(
        [sys.executable, "-m", "netpol_auditor.cli", command, *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr == f"netpol-auditor {command}: error: {missing}: no such file or directory\n"
