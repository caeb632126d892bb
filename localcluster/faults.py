"""Fault injection: make one node's enforcement wrong in a known, documented way (and heal it).

Verbs (``python -m localcluster fault VERB NODE`` or the functions below); "paths" are (source pod → destination
pod, port) connections, and "decided on NODE" means by the ingress rules of a destination pod on NODE or by the
egress rules of a source pod on NODE (kube-router enforces each pod's policies only on that pod's own node):

``stop-enforcer NODE``
    kube-router on NODE is killed and its chains and ipsets are flushed. Wrong afterwards: every path denied by a
    rule decided on NODE is open (both the ingress of pods on NODE and the egress of pods on NODE); paths decided
    on other nodes are unchanged. Mode "stopped".
``ignore-egress NODE``
    kube-router on NODE keeps running and keeps applying policy changes, but never intercepts traffic *from* its
    pods: its ``iptables-restore`` (found on kube-router's PATH) is a wrapper that drops the "rule to jump traffic
    from POD" lines while ``<state>/nodes/ignore-egress-NODE`` exists, and the ones already installed are removed
    now. Wrong afterwards: exactly the paths from a pod on NODE that its egress rules deny (they are open unless the
    destination's ingress denies them); ingress on NODE and everything on other nodes stay correct. Mode
    "ignore-egress".
``set-none NODE``
    switch NODE to the Flannel case while the cluster runs: no enforcer process, no rules. Same paths wrong as
    stop-enforcer (the dataplane is identical); the mode records the intent ("none") for reports.
``freeze-enforcer NODE``
    kube-router on NODE is killed (SIGKILL) and its rules are left in place — what a crashed enforcer pod leaves
    behind. Wrong afterwards: paths whose verdict on NODE would change through policy, pod or namespace changes made
    after the freeze (the node keeps enforcing the old state; new pods on NODE get no rules of their own, so their
    traffic is decided only by other pods' rules). Mode "frozen".
``ignore-ingress NODE``
    the mirror image: the "rule to jump traffic destined to POD" lines are dropped. Wrong afterwards: exactly the
    paths *into* a pod on NODE that its ingress rules deny (open unless the source's egress denies them). Mode
    "ignore-ingress".
``ignore-udp NODE [--direction ingress|egress|both]`` and ``ignore-sctp NODE [--direction ...]``
    UDP (SCTP) is not filtered on NODE: the interception jumps of that direction get ``! -p udp`` (``! -p sctp``),
    so those packets never reach the pod's firewall chain. Wrong afterwards: the UDP (SCTP) paths denied by a rule
    of that direction decided on NODE. ``ignore-sctp`` is refused with an error where the kernel has no SCTP (no
    SCTP traffic flows at all, so there is nothing to leave unfiltered). Mode "ignore-udp" (both directions) or
    "ignore-udp:ingress" / "ignore-udp:egress".
``ignore-end-port NODE``
    ``endPort`` is ignored in the rules NODE programs (both directions): ``--dport PORT:END`` becomes ``--dport
    PORT``. This is what the API documentation says of a CNI without endPort support: "the policy will be applied
    only for the single port field" (concepts/services-networking/network-policies, "Targeting a range of ports").
    Wrong afterwards: paths to a port in ``(port, endPort]`` that only such a range admits, decided on NODE —
    denied though allowed.
``ignore-named-ports NODE``
    named ports are not resolved on NODE: the rules kube-router builds for a named port (their destination ipset is
    the named-port set, see rulefilter.py) are dropped, in ingress rules and in egress rules with ``to`` peers (an
    egress rule without peers resolves a named port to a plain ``--dport`` and is unaffected). Wrong afterwards:
    paths that only a named port admits, decided on NODE — denied though allowed.
``ignore-ipblock-except NODE``
    ``ipBlock.except`` is ignored on NODE: the ipset members kube-router adds with ``nomatch`` are dropped (and
    those already in place deleted now). Wrong afterwards: paths denied only because the peer's address is in an
    ``except`` range, decided on NODE — allowed though denied.
``slow-programming NODE SECONDS``
    every rule change reaches NODE's dataplane SECONDS late: the wrapper holds each of kube-router's
    ``iptables-restore`` calls for SECONDS (ipsets are applied at once). Syncs queue behind each other, so a pod
    created while a sync is held waits up to twice that. Nothing is wrong once the rules land; before that, a new
    pod on NODE has no firewall chain (its traffic is unfiltered) and a new policy is not in force on NODE.
    Mode "slow-programming:SECONDS".

Every rewrite fault keeps kube-router running on NODE; another fault on the same node replaces it.

``heal [NODE]``
    restore the cluster's configured enforcer on NODE (default: every node): drop the rule rewrite, flush, restart
    kube-router and wait for its rules. Nothing is wrong afterwards.

``status``
    print each node's mode as JSON.

On a ``--enforcer kube-network-policies`` cluster (enforcer_knp.py) ``stop-enforcer``, ``set-none`` and ``heal``
work the same way (the queue rule is removed, then the process stopped; heal restarts it and reinstalls the rule
once it reads the queue); ``freeze-enforcer`` and the rewrite faults are refused: kube-network-policies decides
each new connection in user space, so a killed one leaves no "old state" to keep enforcing (its queue rule without
a reader drops every new connection), and there are no per-pod rules to rewrite.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from localcluster import enforcer, enforcer_knp, network, rulefilter
from localcluster.nodes import load_layout, save_layout
from localcluster.paths import state_dir
from localcluster.responder import SCTP_UNSUPPORTED_REASON, sctp_supported

__all__ = ["REWRITES", "VERBS", "FaultRefused", "freeze_enforcer", "heal", "main", "modes", "rewrite", "set_none",
           "stop_enforcer"]

#: how long `rewrite` keeps re-applying a fault while a kube-router sync in flight undoes it
REWRITE_SETTLE_SECONDS = 10.0
#: faults that keep kube-router running and rewrite what it programs (rulefilter.py)
REWRITES = ("ignore-egress", "ignore-ingress", "ignore-udp", "ignore-sctp", "ignore-end-port", "ignore-named-ports",
            "ignore-ipblock-except", "slow-programming")
DIRECTIONAL = ("ignore-udp", "ignore-sctp")
VERBS = ("stop-enforcer", "freeze-enforcer", "set-none", *REWRITES, "heal", "status")


class FaultRefused(ValueError):
    """The fault cannot be made on this machine or cluster; the message says why."""


def _node(state: Path, name: str) -> network.NodeNet:
    layout = load_layout(state)
    if name not in layout["nodes"]:
        raise FaultRefused(f"no node {name!r} (nodes: {', '.join(layout['nodes'])})")
    return network.node_net(layout["prefix"], int(name.rsplit("-", 1)[1]))


def _set_mode(state: Path, node: str, mode: str) -> None:
    layout = load_layout(state)
    layout["modes"][node] = mode
    save_layout(state, layout)


def modes(state: Path) -> dict[str, str]:
    """Each node's current enforcement mode: kube-router, none, stopped, frozen, or a rewrite fault's mode."""
    return dict(load_layout(state)["modes"])


def _stop_any(state: Path, n: network.NodeNet) -> None:
    """Stop whichever enforcer runs on the node and remove its rules (each stop is a no-op where it does not run)."""
    enforcer.fault_spec(state, n.name).unlink(missing_ok=True)
    enforcer_knp.stop(state, n)
    enforcer.stop_kube_router(state, n, flush=True)


def stop_enforcer(state: Path, node: str) -> None:
    _stop_any(state, _node(state, node))
    _set_mode(state, node, "stopped")


def freeze_enforcer(state: Path, node: str) -> None:
    if load_layout(state)["enforcer"] == "kube-network-policies":
        raise FaultRefused("freeze-enforcer keeps a dead enforcer's rules in force; kube-network-policies has no "
                           "per-policy rules (it decides each new connection in user space), and its queue rule "
                           "without a reader drops every new connection. Use stop-enforcer")
    n = _node(state, node)
    enforcer.fault_spec(state, node).unlink(missing_ok=True)
    enforcer.kill_kube_router(state, n)
    _set_mode(state, node, "frozen")


def set_none(state: Path, node: str) -> None:
    _stop_any(state, _node(state, node))
    _set_mode(state, node, "none")


def fault_mode(verb: str, directions: tuple[str, ...] = ("ingress", "egress"), seconds: float = 0.0) -> str:
    if verb == "slow-programming":
        return f"{verb}:{seconds:g}"
    if verb in DIRECTIONAL and len(set(directions)) == 1:
        return f"{verb}:{directions[0]}"
    return verb


def rewrite(state: Path, node: str, verb: str, directions: tuple[str, ...] = ("ingress", "egress"),
            seconds: float = 0.0) -> None:
    """Make one of the `REWRITES` faults on `node`: kube-router keeps running, what it programs is rewritten from
    now on, and the rules (and ipsets) already in place are rewritten the same way at once."""
    if verb not in REWRITES:
        raise FaultRefused(f"{verb!r} is not a rewrite fault ({', '.join(REWRITES)})")
    if verb == "ignore-sctp" and not sctp_supported():
        raise FaultRefused(f"ignore-sctp refused: this {SCTP_UNSUPPORTED_REASON}, so no SCTP traffic flows on any "
                           "node and there is no SCTP filtering to break")
    if verb == "slow-programming" and seconds <= 0:
        raise FaultRefused("slow-programming needs SECONDS > 0")
    if load_layout(state)["enforcer"] != "kube-router":
        raise FaultRefused(f"{verb} rewrites kube-router's rules; this cluster runs "
                           f"{load_layout(state)['enforcer']}")
    n = _node(state, node)
    if load_layout(state)["modes"][node] != "kube-router":
        heal(state, node)
    spec: dict[str, Any] = {"verb": verb, "directions": list(directions), "seconds": seconds}
    enforcer.fault_spec(state, node).write_text(json.dumps(spec))
    _rewrite_rules(n, spec, settle=verb in ("ignore-egress", "ignore-ingress"))
    if verb == "ignore-ipblock-except":
        listed = network.run(["ipset", "save"], netns=n.netns)
        for line in listed.splitlines():
            parts = line.split()
            if parts[:1] == ["add"] and parts[-1] == "nomatch":
                subprocess.run(["ip", "netns", "exec", n.netns, "ipset", "del", parts[1], parts[2]],
                               capture_output=True, check=False)
    _set_mode(state, node, fault_mode(verb, directions, seconds))



def _rewrite_rules(n: network.NodeNet, spec: dict[str, Any], settle: bool) -> None:
    """Rewrite the rules installed on the node as the fault makes them. With ``settle`` (the verbs that only drop
    lines, whose filter is idempotent), again while they do not stay so: a kube-router sync already under way when
    the fault file appeared restores its rules unfiltered after ours."""
    steady = 0
    deadline = time.monotonic() + REWRITE_SETTLE_SECONDS
    while True:
        saved = enforcer.iptables_save(n.netns)
        filtered = rulefilter.filter_iptables(saved, spec)
        if filtered != saved:
            network.run(["iptables-restore"], netns=n.netns, input=filtered)
            steady = 0
        else:
            steady += 1
        if not settle or steady >= 3 or time.monotonic() >= deadline:
            return
        time.sleep(0.5)


def heal(state: Path, node: str | None = None) -> None:
    layout = load_layout(state)
    names = [node] if node else list(layout["nodes"])
    for name in names:
        n = _node(state, name)
        _stop_any(state, n)
        if layout["enforcer"] == "kube-router":
            enforcer.start_kube_router(state, n, Path(layout["kubeconfig"]))
            enforcer.wait_kube_router(state, n)
        elif layout["enforcer"] == "kube-network-policies":
            enforcer_knp.start(state, n, int(layout["api_port"]), enforcer_knp.secrets_dir(state))
            enforcer_knp.wait(state, n)
        _set_mode(state, name, layout["enforcer"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster fault", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verb", choices=VERBS)
    parser.add_argument("node", nargs="?")
    parser.add_argument("seconds", nargs="?", type=float, default=0.0, help="slow-programming: the delay")
    parser.add_argument("--direction", choices=("ingress", "egress", "both"), default="both",
                        help="ignore-udp / ignore-sctp: which direction goes unfiltered (default both)")
    parser.add_argument("--state", type=Path, default=None)
    args = parser.parse_args(argv)
    state = (args.state or state_dir()).resolve()
    if args.verb == "status":
        print(json.dumps(modes(state), indent=2))
        return 0
    try:
        if args.verb == "heal":
            heal(state, args.node)
        elif not args.node:
            parser.error(f"{args.verb} needs a NODE")
        elif args.verb in REWRITES:
            directions = ("ingress", "egress") if args.direction == "both" else (args.direction,)
            rewrite(state, args.node, args.verb, directions, args.seconds)
        else:
            {"stop-enforcer": stop_enforcer, "freeze-enforcer": freeze_enforcer, "set-none": set_none}[args.verb](
                state, args.node)
    except FaultRefused as exc:
        print(f"fault {args.verb}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(modes(state)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
