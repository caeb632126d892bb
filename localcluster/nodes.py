"""The simulated nodes of a localcluster: namespaces, node agents, the API bridge and the enforcers.

``start_nodes`` (called by cluster.py after the control plane is up) builds, for N nodes::

    fabric netns + node netns 1..N (network.py) + an external host 203.0.113.10 answering tcp/80, tcp/443,
    tcp/8080 and udp/53 (for egress ipBlock probes)
    nodes.api-bridge          host: socat UNIX-LISTEN:<state>/nodes/api.sock -> TCP 127.0.0.1:<api port>
    nodes.api-bridge-node-N   in node N: socat TCP-LISTEN 127.0.0.1:<api port> -> the unix socket
    nodes.agent-node-N        the node agent (agent.py); node-1's agent also schedules
    nodes.kube-router-node-N  with --enforcer kube-router (enforcer.py)
    nodes.kube-network-policies-node-N  with --enforcer kube-network-policies (enforcer_knp.py), after the
                              policy.networking.k8s.io CRDs and its ServiceAccount

Every process is spawned detached and recorded in ``<state>/pids`` (controlplane.spawn), so ``up`` returns and
``down`` stops them by pid. ``<state>/nodes.json`` records the layout and each node's current enforcer mode
(faults.py changes it).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localcluster import enforcer, enforcer_knp, network
from localcluster.agent_api import ApiClient, ApiError
from localcluster.controlplane import recorded_processes, spawn, stop_process

__all__ = ["EXTERNAL_PORTS", "NodeSetConfig", "load_layout", "save_layout", "start_nodes", "stop_nodes"]

REPO = Path(__file__).resolve().parent.parent
EXTERNAL_PORTS = {"TCP": (80, 443, 8080), "UDP": (53,)}
PROCESS_PREFIX = "nodes."


@dataclass
class NodeSetConfig:
    state_dir: Path
    kubeconfig: Path
    api_host: str
    api_port: int
    count: int
    enforcer: str  # "kube-router" | "kube-network-policies" | "none"


def _python_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def layout_path(state_dir: Path) -> Path:
    return state_dir / "nodes.json"


def save_layout(state_dir: Path, layout: dict[str, Any]) -> None:
    layout_path(state_dir).write_text(json.dumps(layout, indent=2) + "\n")


def load_layout(state_dir: Path) -> dict[str, Any]:
    """{"prefix", "count", "kubeconfig", "enforcer", "modes": {node: mode}, "external_ip", ...}."""
    data: dict[str, Any] = json.loads(layout_path(state_dir).read_text())
    return data


def _wait_nodes_ready(api: ApiClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            items = api.get("/api/v1/nodes")["items"]
        except (ApiError, OSError):
            items = []
        ready = {n["metadata"]["name"] for n in items
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions",
                                                                                                        []))}
        if set(names) <= ready:
            return
        time.sleep(0.2)
    raise TimeoutError(f"nodes {names} not Ready within {timeout}s")


def start_nodes(cfg: NodeSetConfig, timeout: float = 90.0) -> None:
    """Create the namespaces, start agents and enforcers; return once every Node is Ready and enforcing."""
    if cfg.enforcer not in enforcer.ENFORCERS:
        raise ValueError(f"unknown enforcer {cfg.enforcer!r} (choose from {', '.join(enforcer.ENFORCERS)})")
    state = cfg.state_dir.resolve()
    stop_nodes(state)
    prefix = network.cluster_prefix(state)
    (state / "nodes").mkdir(parents=True, exist_ok=True)
    network.create_fabric(prefix)
    nodes = [network.create_node(prefix, i) for i in range(1, cfg.count + 1)]
    ext = network.create_external(prefix)
    layout = {"prefix": prefix, "count": cfg.count, "kubeconfig": str(cfg.kubeconfig), "enforcer": cfg.enforcer,
              "api_port": cfg.api_port, "external_ip": network.EXTERNAL_IP, "external_netns": ext,
              "modes": {n.name: cfg.enforcer for n in nodes},
              "nodes": {n.name: {"netns": n.netns, "ip": n.node_ip, "pod_cidr": n.pod_cidr} for n in nodes}}
    save_layout(state, layout)
    ports = [a for proto, ps in EXTERNAL_PORTS.items() for p in ps for a in (f"--{proto.lower()}", str(p))]
    spawn(state, PROCESS_PREFIX + "external", ["ip", "netns", "exec", ext, sys.executable, "-m",
                                               "localcluster.responder", "--identity", "external", *ports],
          env=_python_env())
    sock = state / "nodes" / "api.sock"
    sock.unlink(missing_ok=True)
    spawn(state, PROCESS_PREFIX + "api-bridge",
          ["socat", f"UNIX-LISTEN:{sock},fork,mode=600", f"TCP:{cfg.api_host}:{cfg.api_port}"])
    for n in nodes:
        spawn(state, f"{PROCESS_PREFIX}api-bridge-{n.name}",
              ["ip", "netns", "exec", n.netns, "socat",
               f"TCP-LISTEN:{cfg.api_port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{sock}"])
        argv = [sys.executable, "-m", "localcluster.agent", "--node", n.name, "--index", str(n.index),
                "--prefix", prefix, "--kubeconfig", str(cfg.kubeconfig), "--state-dir", str(state)]
        if n.index == 1:
            argv.append("--scheduler")
        spawn(state, f"{PROCESS_PREFIX}agent-{n.name}", argv, env=_python_env())
    api = ApiClient(cfg.kubeconfig)
    _wait_nodes_ready(api, [n.name for n in nodes], timeout)
    if cfg.enforcer == "kube-router":
        from localcluster.build import binary

        kr = binary("kube-router")
        for n in nodes:
            enforcer.start_kube_router(state, n, cfg.kubeconfig, kr)
        for n in nodes:
            enforcer.wait_kube_router(state, n, timeout)
    elif cfg.enforcer == "kube-network-policies":
        from localcluster.build import binary

        knp = binary("kube-network-policies")
        enforcer_knp.install_crds(cfg.kubeconfig)
        secrets = enforcer_knp.service_account_secrets(state, cfg.kubeconfig, state / "pki" / "ca.crt")
        for n in nodes:
            enforcer_knp.start(state, n, cfg.api_port, secrets, knp)
        for n in nodes:
            enforcer_knp.wait(state, n, timeout)


def stop_nodes(state_dir: Path) -> None:
    """Stop agents, enforcers and bridges by pid, delete every namespace of this cluster. Idempotent, crash-safe."""
    state = state_dir.resolve()
    if (state / "pids").is_dir():
        names = [n for n in recorded_processes(state) if n.startswith(PROCESS_PREFIX)]
        # agents first (they stop their pods' processes), then enforcers and bridges
        for name in sorted(names, key=lambda n: (".agent-" not in n, n)):
            stop_process(state, name)
    network.teardown(network.cluster_prefix(state))
    shutil.rmtree(state / "agents", ignore_errors=True)
    shutil.rmtree(state / "nodes", ignore_errors=True)
    layout_path(state).unlink(missing_ok=True)
