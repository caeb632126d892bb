"""``python -m localcluster up [--nodes N] [--enforcer kube-router|kube-network-policies|none] | down | status |
fault ...``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from localcluster import cluster
from localcluster.paths import state_dir


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m localcluster",
                                 description="A real Kubernetes control plane and netns nodes on 127.0.0.1.")
    ap.add_argument("--state", type=Path, default=None,
                    help="state directory (default: $LOCALCLUSTER_STATE or /tmp/netpol-auditor-localcluster)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the cluster (or reuse a healthy one); returns when it is Ready")
    up.add_argument("--nodes", type=int, default=2, help="simulated nodes (default 2; 0 = control plane only)")
    up.add_argument("--enforcer", choices=cluster.ENFORCERS, default="kube-router",
                    help="NetworkPolicy enforcer on every node (default kube-router; kube-network-policies also "
                         "enforces AdminNetworkPolicy/BaselineAdminNetworkPolicy v1alpha1; none = nothing enforced)")
    up.add_argument("--api-port", type=int, default=6443, help="API server port on 127.0.0.1 (default 6443; 0 = any)")
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    sub.add_parser("down", help="stop every process, delete every namespace and the state directory")
    st = sub.add_parser("status", help="endpoints, kubeconfig path, processes")
    st.add_argument("--json", action="store_true")
    fault = sub.add_parser("fault", help="fault injection (see localcluster/faults.py)", add_help=False)
    fault.add_argument("args", nargs=argparse.REMAINDER)
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # `fault` passes its options (--help too) on to faults.py
    if extra and args.cmd != "fault":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    state: Path = (args.state or state_dir()).resolve()
    if args.cmd == "up":
        c = cluster.up(cluster.ClusterConfig(state=state, nodes=args.nodes, enforcer=args.enforcer,
                                             api_port=args.api_port, timeout=args.timeout))
        if c.reused:
            print(f"localcluster is already up: {c.server} ({c.version}), {c.nodes} node(s), enforcer {c.enforcer}")
        else:
            print(f"localcluster is up in {c.up_seconds:.1f} s (control plane {c.control_plane_seconds:.1f} s, nodes "
                  f"{c.nodes_seconds:.1f} s): {c.server} ({c.version}), {c.nodes} node(s), enforcer {c.enforcer}")
        print(f"export KUBECONFIG={c.kubeconfig}")
        return 0
    if args.cmd == "down":
        cluster.down(state)
        return 0
    if args.cmd == "status":
        st = cluster.status(state)
        if args.json:
            print(json.dumps(st, indent=2))
        else:
            for k, v in st.items():
                print(f"{k:20} {v}")
        return 0 if st.get("running") else 1
    if args.cmd == "fault":
        faults = importlib.import_module("localcluster.faults")
        rc: int = faults.main([*args.args, *extra, "--state", str(state)])
        return rc
    return 2


if __name__ == "__main__":
    sys.exit(main())
