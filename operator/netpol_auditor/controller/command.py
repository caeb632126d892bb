"""The ``netpol-auditor run`` subcommand: argument parsing only; the operator itself lives in `app`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from netpol_auditor.controller.settings import add_arguments, settings_from_args

__all__ = ["add_run_parser", "run_command"]

DESCRIPTION = """\
Run the in-cluster operator: watch Pods, Namespaces and NetworkPolicies (never writing to them), keep the
reachability index current, export Prometheus metrics on /metrics, readiness on /readyz (both on --metrics-port),
liveness on --liveness, and post Kubernetes Events on notable changes. Two replicas elect one active via kopf
peering. Every option can also be set with an environment variable (shown in brackets).
"""


def add_run_parser(subparsers: Any) -> None:
    """Register ``run`` on the CLI's subparsers; the parsed namespace's ``func(args) -> int`` runs it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run",
        help="run the in-cluster operator (watches, metrics, Events, probes)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Build Settings from *args* and the environment, then run the operator until SIGTERM/SIGINT."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"netpol-auditor run: error: {exc}", file=sys.stderr)
        return 2
    from netpol_auditor.controller.app import run_operator

    return run_operator(settings)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m netpol_auditor.controller``), same options as ``netpol-auditor run``."""
    parser = argparse.ArgumentParser(prog="netpol-auditor-run")
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    args = parser.parse_args(["run", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code
