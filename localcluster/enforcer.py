"""NetworkPolicy enforcers per node: kube-router's policy controller inside the node's netns, or none at all
(kube-network-policies is in enforcer_knp.py).

kube-router (``--run-firewall=true --run-router=false --run-service-proxy=false``) needs, inside the node netns
(see localcluster/README.md, "Enforcer"):

* the API server: ``https://127.0.0.1:<port>`` is bridged into the netns by socat through a unix socket
  (nodes.py), so the admin kubeconfig works unchanged;
* its Node object (``--hostname-override=<node>``) with an InternalIP that is on a local interface (eth0) — it
  filters "local pods" by ``status.hostIP`` == that IP — and ``spec.podCIDR``;
* ``iptables`` (it drives whichever ``iptables`` is on PATH: Debian's iptables-nft here) and ``ipset`` (sets are per
  netns);
* ``net.bridge.bridge-nf-call-iptables=1`` in the node netns (per netns on this kernel), or same-node pod-to-pod
  traffic, which is only bridged, never reaches its FORWARD rules;
* ``--enable-cni=false`` (we wire pods ourselves), ``--metrics-port=0``, health on 20244 inside the netns.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from localcluster import network
from localcluster.controlplane import SERVICE_CIDR, process_alive, read_pid, spawn, stop_process

__all__ = [
    "ENFORCERS",
    "FORWARD_CHAIN",
    "fault_spec",
    "flush_kube_router",
    "iptables_save",
    "kill_kube_router",
    "kube_router_argv",
    "kube_router_ready",
    "process_name",
    "start_kube_router",
    "stop_kube_router",
    "wait_kube_router",
]

ENFORCERS = ("kube-router", "kube-network-policies", "none")
FORWARD_CHAIN = "KUBE-ROUTER-FORWARD"
SYNC_PERIOD = "5m0s"  # kube-router's default full resync; policy changes are applied on watch events anyway
HEALTH_PORT = 20244
WRAPPED = ("iptables-restore", "ipset")
BUILTIN = ("INPUT", "FORWARD", "OUTPUT")


def process_name(node: str) -> str:
    return f"nodes.kube-router-{node}"


def fault_spec(state: Path, node: str) -> Path:
    """While this file exists, kube-router's iptables-restore and ipset on `node` go through localcluster.rulefilter
    with the fault it describes (faults.py)."""
    return state / "nodes" / f"fault-{node}.json"


def _wrapper_dir(state: Path, node: str) -> Path:
    """A PATH entry for kube-router whose ``iptables-restore`` and ``ipset`` apply the node's fault, if any
    (rulefilter.py); a pass-through otherwise."""
    d = state / "nodes" / f"bin-{node}"
    d.mkdir(parents=True, exist_ok=True)
    spec = fault_spec(state, node)
    root = Path(__file__).resolve().parents[1]
    for tool in WRAPPED:
        real = shutil.which(tool)
        if real is None:
            raise RuntimeError(f"{tool} not found (localcluster/setup.sh installs iptables and ipset)")
        script = d / tool
        script.write_text(
            "#!/bin/sh\n"
            f"if [ -e '{spec}' ]; then\n"
            f"  PYTHONPATH='{root}' exec '{sys.executable}' -m localcluster.rulefilter {tool} '{spec}' '{real}' "
            '"$@"\n'
            "fi\n"
            f"exec '{real}' \"$@\"\n")
        script.chmod(0o755)
    return d


def kube_router_argv(binary: Path, node: network.NodeNet, kubeconfig: Path, path_prefix: Path | None = None
                     ) -> list[str]:
    search = os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env = ["env", f"PATH={path_prefix}:{search}"] if path_prefix else []
    return [
        "ip", "netns", "exec", node.netns, *env, str(binary),
        "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
        "--enable-cni=false", f"--hostname-override={node.name}", f"--kubeconfig={kubeconfig}",
        f"--health-port={HEALTH_PORT}", "--metrics-port=0", f"--iptables-sync-period={SYNC_PERIOD}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--v=1",
    ]


def start_kube_router(state: Path, node: network.NodeNet, kubeconfig: Path, binary: Path | None = None) -> int:
    if binary is None:
        from localcluster.build import binary as build_binary

        binary = build_binary("kube-router")
    argv = kube_router_argv(binary, node, kubeconfig, _wrapper_dir(state, node.name))
    return spawn(state, process_name(node.name), argv)


def iptables_save(netns: str) -> str:
    return network.run(["iptables-save", "-t", "filter"], netns=netns)


def kube_router_ready(netns: str) -> bool:
    """Its top-level rules are in place: the FORWARD chain jumps to KUBE-ROUTER-FORWARD."""
    saved = iptables_save(netns)
    return "-A FORWARD -m comment --comment" in saved and f"-j {FORWARD_CHAIN}" in saved


def _synced(state: Path, node: str) -> bool:
    """kube-router logged a completed full policy sync ("sync iptables took …"; klog lines carry the pid)."""
    rec = read_pid(state, process_name(node))
    log = state / "logs" / f"{process_name(node)}.log"
    if rec is None or not log.exists():
        return False
    pid = f" {rec['pid']} "
    return any(pid in line and "sync iptables took" in line for line in log.read_text(errors="replace").splitlines())


def wait_kube_router(state: Path, node: network.NodeNet, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(state, process_name(node.name)):
            log = state / "logs" / f"{process_name(node.name)}.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"kube-router on {node.name} exited:\n{tail}")
        if kube_router_ready(node.netns) and _synced(state, node.name):
            return
        time.sleep(0.2)
    raise TimeoutError(f"kube-router on {node.name} installed no rules within {timeout}s")


def flush_kube_router(netns: str) -> None:
    """Remove every kube-router chain, jump and ipset from the node netns: traffic then flows unfiltered."""
    kept = []
    for line in iptables_save(netns).splitlines():
        if line.startswith(":KUBE-"):
            continue
        if line.startswith("-A ") and (line.split()[1].startswith("KUBE-") or " -j KUBE-" in line):
            continue
        kept.append(line)
    network.run(["iptables-restore"], netns=netns, input="\n".join(kept) + "\n")
    subprocess.run(["ip", "netns", "exec", netns, "ipset", "destroy"], capture_output=True, check=False)


def kill_kube_router(state: Path, node: network.NodeNet) -> None:
    """SIGKILL, as a crash would: no chance to clean up, its rules stay."""
    rec = read_pid(state, process_name(node.name))
    if rec is not None and process_alive(state, process_name(node.name)):
        pid = rec["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        while process_alive(state, process_name(node.name)):
            time.sleep(0.02)
    (state / "pids" / f"{process_name(node.name)}.json").unlink(missing_ok=True)


def stop_kube_router(state: Path, node: network.NodeNet, flush: bool = True) -> None:
    stop_process(state, process_name(node.name))
    if flush and network.netns_exists(node.netns):
        flush_kube_router(node.netns)
