"""``netpol-auditor lint``: policies and rules that do not do what they seem to.

Argument parsing and output only: manifests are read by `netpol_auditor.manifest_files` (invalid input exits 2, as
for ``analyze``), the checks are `netpol_auditor.lint`'s. Output: one line per finding (``text``) or ``json``; a
summary on stderr. Exit status: 0, or 1 when a finding reaches ``--fail-on``; 2 for invalid input or usage.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any, TextIO

from .cli_input import PROG, InvalidInput, UsageError, add_source, read_input
from .lint import CHECKS, Finding, LintInput, Severity, lint
from .model import Namespace, NetworkPolicy, Pod
from .workloads import template_pod

__all__ = ["add_lint_parser"]

_FAIL_ON = {"never": (), "error": (Severity.ERROR,), "warning": (Severity.ERROR, Severity.WARNING)}


def _checks_help() -> str:
    lines = [f"  {c.id}  {c.severity.value:<7}  {c.title}{'' if c.default else ' (off by default)'}" for c in CHECKS]
    return "checks:\n" + "\n".join(lines)


def add_lint_parser(subparsers: Any) -> None:
    """Register ``lint`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lint",
        help="policies and rules that do not do what they seem to (offline, from manifests)",
        description="Check NetworkPolicies against the rest of the input: selectors that match nothing, named ports "
        "no pod declares, shadowed rules, ipBlocks that match pods, namespaces without a default deny. Each "
        "finding names the object and the field.",
        epilog=_checks_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_source(parser)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="default: text")
    parser.add_argument(
        "--fail-on",
        choices=tuple(_FAIL_ON),
        default="never",
        help="exit 1 when a finding of this severity or a higher one is found (default: never)",
    )
    parser.add_argument(
        "--disable", action="append", default=[], metavar="ID", help="turn a check off, e.g. NPA004; repeatable"
    )
    parser.add_argument(
        "--enable", action="append", default=[], metavar="ID", help="turn a check on that is off by default (NPA007)"
    )
    parser.add_argument(
        "--pod-cidr",
        dest="pod_cidrs",
        action="append",
        default=[],
        metavar="CIDR",
        help="the cluster's pod network, e.g. 10.244.0.0/16: ipBlocks overlapping it are reported (NPA005); "
        "repeatable",
    )
    parser.set_defaults(func=_lint_command)


def _ids(values: list[str], flag: str) -> set[str]:
    known = {c.id for c in CHECKS}
    ids = {v.strip().upper() for value in values for v in value.split(",") if v.strip()}
    unknown = sorted(ids - known)
    if unknown:
        raise UsageError(f"{flag}: unknown check {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return ids


def _lint_command(args: argparse.Namespace, out: TextIO) -> int:
    disabled, enabled = _ids(args.disable, "--disable"), _ids(args.enable, "--enable")
    checks = {c.id for c in CHECKS if c.default or c.id in enabled} - disabled
    for cidr in args.pod_cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UsageError(f"--pod-cidr {cidr!r}: not a CIDR") from None
    manifests = read_input(args)
    if manifests.errors:
        raise InvalidInput(manifests.errors)
    pods = [o for o in manifests.objects if isinstance(o, Pod)] + [template_pod(w) for w in manifests.workloads]
    data = LintInput(
        policies=[o for o in manifests.objects if isinstance(o, NetworkPolicy)],
        pods=pods,
        namespaces=[o for o in manifests.objects if isinstance(o, Namespace)],
        pod_cidrs=args.pod_cidrs,
        sources=manifests.sources,
    )
    findings = lint(data, checks)
    # The reader warns about named ports no pod declares; NPA003 reports them, so they are not said twice.
    reported = {(f.file, f"{f.kind} {f.namespace}/{f.name}", f.path) for f in findings}
    for warning in manifests.warnings:
        if (warning.source, warning.obj, warning.path) not in reported:
            print(f"{PROG} lint: warning: {warning}", file=sys.stderr)
    _write(findings, args.output, out)
    failing = [f for f in findings if f.check.severity in _FAIL_ON[args.fail_on]]
    return 1 if failing else 0


def _write(findings: list[Finding], fmt: str, out: TextIO) -> None:
    counts = {s.value: sum(1 for f in findings if f.check.severity is s) for s in Severity}
    if fmt == "json":
        json.dump({"findings": [f.to_dict() for f in findings], "summary": counts}, out, indent=2)
        out.write("\n")
    else:
        out.writelines(f"{f}\n" for f in findings)
    words = ", ".join(f"{n} {severity}{'' if n == 1 else 's'}" for severity, n in counts.items())
    print(f"{PROG} lint: {words}", file=sys.stderr)
