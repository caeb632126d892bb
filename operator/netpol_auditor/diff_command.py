"""``netpol-auditor diff``: the paths a change to the manifests opens and closes.

Argument parsing and wiring only: each side is read and judged as ``analyze`` reads and judges its input (same
endpoints, same choice of ports), compared by `netpol_auditor.reach_diff` and printed by
`netpol_auditor.diff_render`. Exit status: 0, or with ``--exit-code`` 1 when anything changed (as ``git diff
--exit-code``); 2 for invalid input or usage.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from .cli_input import UsageError, declared_ports, live_pods, load_input, parse_address, parse_port
from .diff_render import DIFF_FORMATS, render_diff
from .model import Endpoint, PortProtocol
from .reach_diff import PathChange, diff_reachability, explain_change

__all__ = ["add_diff_parser"]

DESCRIPTION = """\
Judge the manifests before and after a change, as `analyze` does, and list the paths the change opens and closes:
per endpoint pair (workloads by default, pods with --per-pod) and per port, with the rules that decide each path on
both sides. Endpoints found on one side only are listed as added or removed. Ports: --port, or every port the
endpoints of either side declare.
"""


def add_diff_parser(subparsers: Any) -> None:
    """Register ``diff`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "diff",
        help="the paths a change to the manifests opens and closes (offline, two sets of manifests)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        default=[],
        metavar="PATH",
        help="given twice: the manifests before (first) and after (second) the change; a file, a directory "
        "(recursive *.yaml, *.yml, *.json) or - for stdin (one side only)",
    )
    parser.add_argument("--base", action="append", default=[], metavar="PATH", help="before the change; repeatable")
    parser.add_argument("--head", action="append", default=[], metavar="PATH", help="after the change; repeatable")
    parser.add_argument("--strict", action="store_true", help="warnings about the input are errors (exit 2)")
    parser.add_argument(
        "--per-pod", action="store_true", help="one endpoint per Pod, workloads left out (as analyze --per-pod)"
    )
    parser.add_argument(
        "--port",
        dest="ports",
        action="append",
        type=parse_port,
        metavar="PORT[/PROTOCOL]",
        help="destination port to compare on; repeatable; default: every port the endpoints of either side declare",
    )
    parser.add_argument(
        "--external",
        dest="externals",
        action="append",
        type=parse_address,
        default=[],
        metavar="IP",
        help="an address outside the cluster: also compare IP -> pod and pod -> IP; repeatable",
    )
    parser.add_argument("-o", "--output", choices=DIFF_FORMATS, default="table", help="default: table")
    parser.add_argument("--explain", action="store_true", help="add the explanation of each changed path, both sides")
    parser.add_argument(
        "--exit-code", action="store_true", help="exit 1 when anything changed (paths or endpoints), 0 otherwise"
    )
    parser.set_defaults(func=_diff_command)


def _sides(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    if args.files and (args.base or args.head):
        raise UsageError("give the two sides either as -f BEFORE -f AFTER or as --base and --head, not both")
    if args.files:
        if len(args.files) != 2:
            raise UsageError(f"-f given {len(args.files)} times: give it twice, -f BEFORE -f AFTER")
        return [args.files[0]], [args.files[1]]
    if not args.base or not args.head:
        raise UsageError("two sides are needed: -f BEFORE -f AFTER, or --base PATH --head PATH")
    return args.base, args.head


def _side(args: argparse.Namespace, paths: list[str]) -> argparse.Namespace:
    """The arguments ``analyze`` would get for one side: its files, none of the options that read a cluster."""
    return argparse.Namespace(**{**vars(args), "files": paths, "kubeconfig": None, "context": None, "namespaces": []})


def _diff_command(args: argparse.Namespace, out: TextIO) -> int:
    base, head = _sides(args)
    if [*base, *head].count("-") > 1:
        raise UsageError("stdin (-) can be one side only")
    loaded_before, loaded_after = load_input(_side(args, base)), load_input(_side(args, head))
    before, after = loaded_before.index, loaded_after.index
    externals: list[Endpoint] = list(dict.fromkeys(args.externals))
    pods_before, pods_after = live_pods(before), live_pods(after)
    ports: list[PortProtocol] = list(dict.fromkeys(args.ports or []))
    if not ports:
        ports = sorted({*declared_ports(before, pods_before), *declared_ports(after, pods_after)})
        if not ports:
            raise UsageError("no ports to compare: no endpoint of either side declares containerPorts; pass --port")
    diff = diff_reachability(before, after, [*pods_before, *externals], [*pods_after, *externals], ports,
                             loaded_before.foreign, loaded_after.foreign)

    def explain(change: PathChange) -> tuple[str, str]:
        return explain_change(before, after, change, loaded_before.foreign, loaded_after.foreign)

    render_diff(diff, args.output, out, explain if args.explain else None)
    return 1 if args.exit_code and not diff.empty else 0
