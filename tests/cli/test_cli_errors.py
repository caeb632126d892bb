"""Malformed input and bad requests: exit status 2, nothing on stdout, one line on stderr naming the file, the
object and the field (the API server's field path and wording), never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_harness import FIXTURES, Result

DUMP = str(FIXTURES / "kubectl-get-all.yaml")


def _policy(spec: str) -> str:
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: shop\nspec:\n" + spec
    )


# name -> (manifest, object, field path, problem)
MALFORMED = {
    "unknown selector operator": (
        _policy("  podSelector:\n    matchExpressions:\n    - {key: app, operator: Contains, values: [web]}\n"),
        "NetworkPolicy shop/p",
        "spec.podSelector.matchExpressions[0].operator",
        '"Contains"',
    ),
    "values with Exists": (
        _policy(
            "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector:\n"
            "        matchExpressions:\n        - {key: app, operator: Exists, values: [web]}\n"
        ),
        "NetworkPolicy shop/p",
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].values",
        "Exists",
    ),
    "bad CIDR": (
        _policy("  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/33}\n"),
        "NetworkPolicy shop/p",
        "spec.egress[0].to[0].ipBlock.cidr",
        '"10.0.0.0/33"',
    ),
    "an address, not a CIDR (the API server refuses it too)": (
        _policy("  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.1}\n"),
        "NetworkPolicy shop/p",
        "spec.egress[0].to[0].ipBlock.cidr",
        '"10.0.0.1"',
    ),
    "except outside the CIDR": (
        _policy(
            "  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/16, except: [192.168.0.0/24]}\n"
        ),
        "NetworkPolicy shop/p",
        "spec.egress[0].to[0].ipBlock.except[0]",
        '"192.168.0.0/24"',
    ),
    "port out of range": (
        _policy("  podSelector: {}\n  ingress:\n  - ports:\n    - port: 70000\n"),
        "NetworkPolicy shop/p",
        "spec.ingress[0].ports[0].port",
        "70000",
    ),
    "endPort below port": (
        _policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 8080, endPort: 80}\n"),
        "NetworkPolicy shop/p",
        "spec.ingress[0].ports[0].endPort",
        "80",
    ),
    "endPort with a named port": (
        _policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {port: http, endPort: 9000}\n"),
        "NetworkPolicy shop/p",
        "spec.ingress[0].ports[0].endPort",
        "non-numeric",
    ),
    "selector of the wrong type": (
        _policy("  podSelector: app=web\n"),
        "NetworkPolicy shop/p",
        "spec.podSelector",
        '"app=web"',
    ),
    "unknown policy type": (
        _policy("  podSelector: {}\n  policyTypes: [Both]\n"),
        "NetworkPolicy shop/p",
        "spec.policyTypes[0]",
        '"Both"',
    ),
    "unknown protocol": (
        _policy("  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, protocol: ICMP}\n"),
        "NetworkPolicy shop/p",
        "spec.ingress[0].ports[0].protocol",
        '"ICMP"',
    ),
    "bad pod IP": (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec: {containers: []}\n"
        "status: {phase: Running, podIP: 10.0.0.300}\n",
        "Pod shop/web",
        "status.podIP",
        '"10.0.0.300"',
    ),
    "policy inside a kubectl List": (
        "apiVersion: v1\nkind: List\nitems:\n- "
        + _policy("  podSelector: {}\n  ingress:\n  - ports:\n    - port: 0\n").replace("\n", "\n  ").rstrip()
        + "\n",
        "NetworkPolicy shop/p",
        "spec.ingress[0].ports[0].port",
        "0",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_manifest_exits_2_naming_file_object_and_field(
    name: str, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    manifest, obj, field, problem = MALFORMED[name]
    path = tmp_path / "policies.yaml"
    path.write_text(manifest)
    result = cli(["analyze", "-f", str(path), "--port", "80/TCP"])
    assert result.code == 2
    assert result.out == ""
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith(f"netpol-auditor analyze: error: {path}: {obj}: {field}: "), lines[0]
    assert problem in lines[0].removeprefix(f"netpol-auditor analyze: error: {path}: {obj}: {field}: ")


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels:\n    app: [1\n")
    result = cli(["analyze", "-f", str(path)])
    assert (result.code, result.out) == (2, "")
    assert result.err.startswith(f"netpol-auditor analyze: error: {path}: line ")
    assert "invalid YAML" in result.err and result.err.count("\n") == 1


def test_missing_file(tmp_path: Path, cli: Callable[..., Result]) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli(["analyze", "-f", str(missing)])
    assert (result.code, result.out) == (2, "")
    assert result.err == f"netpol-auditor analyze: error: {missing}: no such file or directory\n"


def test_error_on_stdin_is_named_stdin(cli: Callable[..., Result]) -> None:
    result = cli(["analyze", "-f", "-"], stdin=_policy("  podSelector: {}\n  policyTypes: [Both]\n"))
    assert result.code == 2
    assert result.err.startswith("netpol-auditor analyze: error: <stdin>: NetworkPolicy shop/p: spec.policyTypes[0]:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "-f", DUMP, "--port", "70000"], "argument --port: port 70000 out of range"),
        (["analyze", "-f", DUMP, "--port", "80/ICMP"], "argument --port: invalid protocol"),
        (["analyze", "-f", DUMP, "--external", "example.com"], "argument --external: invalid IP address"),
        (["analyze", "-f", DUMP, "-o", "xml"], "argument -o/--output: invalid choice: 'xml'"),
        (["analyze", "--port", "80"], "no input: pass -f PATH (files, - for stdin) or --kubeconfig PATH"),
        (["analyze", "-f", DUMP, "--from", "billing"], "--from 'billing' matches no endpoint"),
        (["analyze", "-f", DUMP, "--to", "shop/cart-*"], "--to 'shop/cart-*' matches no endpoint"),
        (["explain", "-f", DUMP, "--from", "shop/nope", "--to", "shop/db-0"], "--from 'shop/nope': no such pod"),
        (["explain", "-f", DUMP, "--from", "shop", "--to", "shop/db-0"], "--from 'shop': invalid pod reference"),
        (["explain", "-f", DUMP, "--from", "shop/db-0", "--to", "203.0.113.1"], "no ports to judge"),
        ([], "usage: netpol-auditor"),
    ],
)
def test_bad_request_exits_2_with_one_message(argv: list[str], message: str, cli: Callable[..., Result]) -> None:
    result = cli(argv)
    assert result.code == 2
    assert result.out == ""
    assert message in result.err
    assert "Traceback" not in result.err


def test_no_declared_ports_asks_for_port_in_the_matrix(tmp_path: Path, cli: Callable[..., Result]) -> None:
    path = tmp_path / "pods.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{name: c, image: i}]}\n"
        "status: {phase: Running, podIP: 10.0.0.1}\n"
    )
    result = cli(["analyze", "--matrix", "-f", str(path)])
    assert result.code == 2
    assert "no ports to judge" in result.err and "--port" in result.err
    # One line per pair judges every port, declared or not: an unisolated pod allows every connection.
    result = cli(["analyze", "-f", str(path)])
    assert (result.code, result.err) == (0, "")
    assert "x/a[Pod] => 0.0.0.0-255.255.255.255 : All Connections\n" in result.out


def test_console_script_reports_malformed_input_without_traceback(tmp_path: Path) -> None:
    """The installed ``netpol-auditor`` executable, as CI runs it."""
    path = tmp_path / "bad.yaml"
    path.write_text(_policy("  podSelector: {}\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/33}\n"))
    exe = Path(sys.executable).with_name("netpol-auditor")
    proc = subprocess.run([str(exe), "analyze", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        f"netpol-auditor analyze: error: {path}: NetworkPolicy shop/p: spec.egress[0].to[0].ipBlock.cidr: "
        'Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)\n'
    )


def test_input_is_files_or_a_cluster_never_both_nor_none(cli: Callable[[list[str]], Result], tmp_path: Path) -> None:
    result = cli(["analyze"])
    assert result.code == 2 and "no input: pass -f PATH" in result.err and "--kubeconfig" in result.err
    result = cli(["analyze", "-f", str(FIXTURES), "--kubeconfig", str(tmp_path / "kubeconfig")])
    assert result.code == 2 and "give one or the other" in result.err
    result = cli(["analyze", "-f", str(FIXTURES), "-n", "shop"])
    assert result.code == 2 and "give one or the other" in result.err


def test_an_unreadable_kubeconfig_and_an_unreachable_cluster_are_errors(cli: Callable[[list[str]], Result],
                                                                        tmp_path: Path) -> None:
    result = cli(["analyze", "--kubeconfig", str(tmp_path / "missing")])
    assert result.code == 2 and f"{tmp_path / 'missing'}: cannot load" in result.err, result.err
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n")
    result = cli(["analyze", "--kubeconfig", str(config)])
    assert result.code == 2 and "Traceback" not in result.err
    assert "cannot reach the API server at https://127.0.0.1:1" in result.err, result.err
    assert result.err.count("error:") == 1, "one line for an unreachable server, not one per resource"
