"""Rewrite what kube-router programs on one node, as a partially broken CNI would (the faults of faults.py).

kube-router finds ``iptables-restore`` and ``ipset`` on its PATH (``exec.LookPath``, pkg/utils/iptables.go and
ipset.go); enforcer.py puts a wrapper of each first on that PATH. While ``<state>/nodes/fault-<node>.json`` exists the
wrappers run ``python -m localcluster.rulefilter`` instead of the real tool, which rewrites the input as the fault
says and passes it on. The rewrites key on what kube-router v2.1.0 writes (pkg/controllers/netpol/pod.go and
policy.go), all of it visible in ``iptables-save`` on a node:

* interception: ``-A KUBE-ROUTER-{FORWARD,INPUT,OUTPUT}`` jumps commented "rule to jump traffic destined to POD"
  (the pod's ingress) and "rule to jump traffic from POD" (its egress) into the pod's ``KUBE-POD-FW-*`` chain;
* one ``KUBE-NWPLCY-*`` chain per policy, each admitting rule commented "... selected by policy name[:] NAME
  namespace NS", matching ``-p PROTO`` and ``--dport PORT`` or ``--dport PORT:ENDPORT`` (``endPort``), peers and
  targets as ipsets (``--match-set SET src|dst``);
* a named port becomes a rule whose ``dst`` set holds the pods declaring that port, named
  ``policyIndexed{Ingress,Egress}NamedPortIPSetName`` (policy.go): ``KUBE-DST-`` + base32(sha256(namespace + name +
  "ingressrule"|"egressrule" + rule index + named-port index + "IPv4" + "namedport"))[:16];
* an ipBlock ``except`` entry is an ipset member added with the ``nomatch`` option (policy.go, evalIPBlockPeer).

Only the standard library is imported here: this runs on every kube-router sync.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["EGRESS_MARKER", "INGRESS_MARKER", "apply_fault", "filter_ipset_restore", "filter_iptables", "main"]

INGRESS_MARKER = "rule to jump traffic destined to POD"
EGRESS_MARKER = "rule to jump traffic from POD"
_POLICY_OF_RULE = re.compile(r'selected by policy name:? (\S+) namespace (\S+?)"')
_DST_SET = re.compile(r"--match-set (\S+) dst")
_PORT_RANGE = re.compile(r"--dport (\d+):(\d+)")
#: named-port ipset candidates per rule and named port: kube-router numbers them from 0 in the order it meets them
_MAX_INDEX = 32


def _named_port_sets(namespace: str, name: str) -> frozenset[str]:
    out = set()
    for direction in ("ingressrule", "egressrule"):
        for rule in range(_MAX_INDEX):
            for port in range(_MAX_INDEX):
                raw = f"{namespace}{name}{direction}{rule}{port}IPv4namedport".encode()
                out.add("KUBE-DST-" + base64.b32encode(hashlib.sha256(raw).digest()).decode()[:16])
    return frozenset(out)


def _with_not_protocol(line: str, protocol: str) -> str:
    """``-A CHAIN ...`` → ``-A CHAIN ! -p PROTO ...``: the jump no longer catches that protocol."""
    head, chain, rest = line.split(" ", 2)
    return f"{head} {chain} ! -p {protocol} {rest}"


def filter_iptables(text: str, fault: dict[str, Any]) -> str:
    """The filter-table rules kube-router asked for, as the node with this fault programs them."""
    verb = fault.get("verb")
    directions = set(fault.get("directions") or ("ingress", "egress"))
    if verb in ("ignore-egress", "ignore-ingress"):
        directions = {verb.removeprefix("ignore-")}
    markers = [m for d, m in (("ingress", INGRESS_MARKER), ("egress", EGRESS_MARKER)) if d in directions]
    named_sets: dict[tuple[str, str], frozenset[str]] = {}
    out = []
    for line in text.splitlines():
        jump = any(m in line for m in markers)
        if verb in ("ignore-egress", "ignore-ingress") and jump:
            continue
        if verb in ("ignore-udp", "ignore-sctp") and jump and line.startswith("-A "):
            line = _with_not_protocol(line, "udp" if verb == "ignore-udp" else "sctp")
        elif line.startswith("-A KUBE-NWPLCY-"):
            if verb == "ignore-end-port":
                line = _PORT_RANGE.sub(r"--dport \1", line)
            elif verb == "ignore-named-ports":
                policy = _POLICY_OF_RULE.search(line)
                dst = _DST_SET.search(line)
                if policy and dst:
                    key = (policy.group(2), policy.group(1))
                    if key not in named_sets:
                        named_sets[key] = _named_port_sets(*key)
                    if dst.group(1) in named_sets[key]:
                        continue
        out.append(line)
    return "\n".join(out) + "\n"


def filter_ipset_restore(text: str, fault: dict[str, Any]) -> str:
    """``ipset restore`` input as the node with this fault applies it."""
    if fault.get("verb") != "ignore-ipblock-except":
        return text
    kept = [line for line in text.splitlines() if not (line.startswith("add ") and line.split()[-1] == "nomatch")]
    return "\n".join(kept) + "\n"


def apply_fault(tool: str, fault: dict[str, Any], argv: Sequence[str], stdin: str) -> tuple[list[str], str]:
    """(argv, stdin) to run instead of ``tool argv`` with ``stdin``."""
    if tool == "iptables-restore":
        return list(argv), filter_iptables(stdin, fault)
    if tool == "ipset" and argv[:1] == ["restore"]:
        return list(argv), filter_ipset_restore(stdin, fault)
    return list(argv), stdin


def main(argv: Sequence[str] | None = None) -> int:
    """``rulefilter TOOL SPEC REAL [ARGS...]``: run REAL with ARGS and stdin rewritten per the fault in SPEC."""
    tool, spec, real, *args = argv if argv is not None else sys.argv[1:]
    try:
        fault = json.loads(Path(spec).read_text())
    except FileNotFoundError:  # healed meanwhile
        os.execv(real, [real, *args])
    reads_stdin = tool == "iptables-restore" or args[:1] == ["restore"]
    if not reads_stdin:
        os.execv(real, [real, *args])
    args, data = apply_fault(tool, fault, args, sys.stdin.read())
    delay = float(fault.get("seconds") or 0)
    if fault.get("verb") == "slow-programming" and tool == "iptables-restore" and delay > 0:
        time.sleep(delay)
    return subprocess.run([real, *args], input=data, text=True, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
