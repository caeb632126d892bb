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
``heal [NODE]``
    restore the cluster's configured enforcer on NODE (default: every node): drop the egress filter, flush, restart
    kube-router and wait for its rules. Nothing is wrong afterwards.
``status``
    print each node's mode as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from localcluster import enforcer, network
from localcluster.nodes import load_layout, save_layout
from localcluster.paths import state_dir

__all__ = ["VERBS", "freeze_enforcer", "heal", "ignore_egress", "main", "modes", "set_none", "stop_enforcer"]

VERBS = ("stop-enforcer", "freeze-enforcer", "ignore-egress", "set-none", "heal", "status")


def _node(state: Path, name: str) -> network.NodeNet:
    layout = load_layout(state)
    if name not in layout["nodes"]:
        raise ValueError(f"no node {name!r} (nodes: {', '.join(layout['nodes'])})")
    return network.node_net(layout["prefix"], int(name.rsplit("-", 1)[1]))


def _set_mode(state: Path, node: str, mode: str) -> None:
    layout = load_layout(state)
    layout["modes"][node] = mode
    save_layout(state, layout)


def modes(state: Path) -> dict[str, str]:
    """Each node's current enforcement mode: kube-router, none, stopped or ignore-egress."""
    return dict(load_layout(state)["modes"])


def stop_enforcer(state: Path, node: str) -> None:
    n = _node(state, node)
    enforcer.egress_flag(state, node).unlink(missing_ok=True)
    enforcer.stop_kube_router(state, n, flush=True)
    _set_mode(state, node, "stopped")


def freeze_enforcer(state: Path, node: str) -> None:
    n = _node(state, node)
    enforcer.egress_flag(state, node).unlink(missing_ok=True)
    enforcer.kill_kube_router(state, n)
    _set_mode(state, node, "frozen")


def set_none(state: Path, node: str) -> None:
    n = _node(state, node)
    enforcer.egress_flag(state, node).unlink(missing_ok=True)
    enforcer.stop_kube_router(state, n, flush=True)
    _set_mode(state, node, "none")


def ignore_egress(state: Path, node: str) -> None:
    n = _node(state, node)
    if load_layout(state)["modes"][node] != "kube-router":
        heal(state, node)
    enforcer.egress_flag(state, node).touch()
    saved = enforcer.iptables_save(n.netns)
    kept = [line for line in saved.splitlines() if enforcer.EGRESS_MARKER not in line]
    network.run(["iptables-restore"], netns=n.netns, input="\n".join(kept) + "\n")
    _set_mode(state, node, "ignore-egress")


def heal(state: Path, node: str | None = None) -> None:
    layout = load_layout(state)
    names = [node] if node else list(layout["nodes"])
    for name in names:
        n = _node(state, name)
        enforcer.egress_flag(state, name).unlink(missing_ok=True)
        enforcer.stop_kube_router(state, n, flush=True)
        if layout["enforcer"] == "kube-router":
            enforcer.start_kube_router(state, n, Path(layout["kubeconfig"]))
            enforcer.wait_kube_router(state, n)
        _set_mode(state, name, layout["enforcer"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster fault", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("verb", choices=VERBS)
    parser.add_argument("node", nargs="?")
    parser.add_argument("--state", type=Path, default=None)
    args = parser.parse_args(argv)
    state = (args.state or state_dir()).resolve()
    if args.verb == "status":
        print(json.dumps(modes(state), indent=2))
        return 0
    if args.verb == "heal":
        heal(state, args.node)
    else:
        if not args.node:
            parser.error(f"{args.verb} needs a NODE")
        {"stop-enforcer": stop_enforcer, "freeze-enforcer": freeze_enforcer, "ignore-egress": ignore_egress,
         "set-none": set_none}[args.verb](
            state, args.node)
    print(json.dumps(modes(state)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
