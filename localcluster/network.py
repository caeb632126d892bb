"""Network namespaces standing in for nodes and pods, wired like a routed cluster.

Topology (every name carries a per-cluster prefix, every address exists only inside these namespaces; the host's own
network namespace is never touched)::

    <prefix>-ext  eth0 203.0.113.10/24 ──── ext0 203.0.113.1/24 ┐
                                                               <prefix>-fabric   (router: ip_forward=1,
    <prefix>-node-N  eth0 10.250.N.1/24 ─── nN 10.250.N.254/24 ┘                  10.244.N.0/24 via 10.250.N.1)
         cbr0 10.244.N.1/24 (bridge; br_netfilter on, so kube-router sees bridged pod-to-pod traffic)
           └─ v<hash> ──── eth0 10.244.N.x/24 in <prefix>-p-<hash> (one namespace per pod, default via 10.244.N.1)

Traffic between nodes is routed through the fabric namespace (no NAT, no encapsulation: like flannel host-gw or
kube-router's own routing), so source addresses are pod IPs everywhere and ipBlock rules see the real peers.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EXTERNAL_GATEWAY",
    "EXTERNAL_IP",
    "EXTERNAL_NET",
    "IPAM",
    "NETNS_DIR",
    "NodeNet",
    "PodNet",
    "cluster_prefix",
    "create_external",
    "create_fabric",
    "create_node",
    "create_pod",
    "delete_netns",
    "delete_pod",
    "list_netns",
    "netns_exists",
    "node_name",
    "node_net",
    "pids_in_netns",
    "pod_netns_name",
    "run",
    "sysctl",
    "teardown",
]

NETNS_DIR = Path("/run/netns")
POD_CIDR_BASE = "10.244.{index}.0/24"
NODE_LINK = "10.250.{index}.{host}/24"
BRIDGE = "cbr0"
EXTERNAL_NET = ipaddress.ip_network("203.0.113.0/24")  # TEST-NET-3 (RFC 5737): never a real host
EXTERNAL_IP = "203.0.113.10"
EXTERNAL_GATEWAY = "203.0.113.1"


def run(args: Sequence[str], *, netns: str | None = None, check: bool = True, input: str | None = None) -> str:
    """Run a command (inside `netns` if given) and return its stdout; raise with stderr on failure."""
    cmd = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """`ip [-n netns] ARGS` — `-n` avoids a fork of `ip netns exec` per call."""
    return run(["ip", *(["-n", netns] if netns else []), *args], check=check)


def sysctl(netns: str, key: str, value: str | int) -> None:
    """Set a sysctl inside `netns` (net.* sysctls are per network namespace)."""
    run(["sysctl", "-qw", f"{key}={value}"], netns=netns)


def cluster_prefix(state_dir: Path) -> str:
    """A short namespace-name prefix unique to one cluster (state dir), so two clusters never share a name."""
    return "lc" + hashlib.sha1(str(state_dir.resolve()).encode()).hexdigest()[:5]


def node_name(index: int) -> str:
    """Kubernetes Node name of node `index` (1-based)."""
    return f"node-{index}"


@dataclass(frozen=True)
class NodeNet:
    """Addresses of one node: its namespace, its fabric address (the Node's InternalIP) and its pod CIDR."""

    index: int
    netns: str
    name: str
    node_ip: str
    fabric_ip: str
    pod_cidr: str
    gateway: str


def node_net(prefix: str, index: int) -> NodeNet:
    """The (deterministic) addressing of node `index`: 10.250.N.1 on the fabric, pods in 10.244.N.0/24."""
    cidr = ipaddress.ip_network(POD_CIDR_BASE.format(index=index))
    return NodeNet(
        index=index,
        netns=f"{prefix}-node-{index}",
        name=node_name(index),
        node_ip=NODE_LINK.format(index=index, host=1).split("/")[0],
        fabric_ip=NODE_LINK.format(index=index, host=254).split("/")[0],
        pod_cidr=str(cidr),
        gateway=str(cidr.network_address + 1),
    )


def list_netns(prefix: str) -> list[str]:
    """Names of the network namespaces this cluster created (also after a crash)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix + "-"))


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def _add_netns(name: str) -> None:
    if netns_exists(name):
        delete_netns(name)
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def delete_netns(name: str) -> None:
    """Delete a namespace (its veth pairs vanish with it). Processes still inside must be killed first."""
    ip("netns", "del", name, check=False)


def create_fabric(prefix: str) -> str:
    """The router namespace joining all nodes (and the external host)."""
    ns = f"{prefix}-fabric"
    _add_netns(ns)
    sysctl(ns, "net.ipv4.ip_forward", 1)
    sysctl(ns, "net.ipv4.conf.all.rp_filter", 0)
    return ns


def create_node(prefix: str, index: int) -> NodeNet:
    """A node namespace: uplink to the fabric, a bridge for its pods, routes so the fabric reaches its pod CIDR."""
    node = node_net(prefix, index)
    fabric = f"{prefix}-fabric"
    _add_netns(node.netns)
    ns = node.netns
    ip("link", "add", f"n{index}", "type", "veth", "peer", "name", "eth0", "netns", ns, netns=fabric)
    ip("addr", "add", NODE_LINK.format(index=index, host=254), "dev", f"n{index}", netns=fabric)
    ip("link", "set", f"n{index}", "up", netns=fabric)
    ip("addr", "add", NODE_LINK.format(index=index, host=1), "dev", "eth0", netns=ns)
    ip("link", "set", "eth0", "up", netns=ns)
    ip("route", "add", "default", "via", node.fabric_ip, netns=ns)
    ip("route", "replace", node.pod_cidr, "via", node.node_ip, netns=fabric)
    prefix_len = ipaddress.ip_network(node.pod_cidr).prefixlen
    ip("link", "add", BRIDGE, "type", "bridge", netns=ns)
    ip("addr", "add", f"{node.gateway}/{prefix_len}", "dev", BRIDGE, netns=ns)
    ip("link", "set", BRIDGE, "up", netns=ns)
    sysctl(ns, "net.ipv4.ip_forward", 1)
    sysctl(ns, "net.ipv4.conf.all.rp_filter", 0)
    # br_netfilter is per network namespace on this kernel: bridged (same-node) pod traffic must traverse iptables
    # or a policy enforcer only ever sees routed (cross-node) traffic.
    sysctl(ns, "net.bridge.bridge-nf-call-iptables", 1)
    sysctl(ns, "net.bridge.bridge-nf-call-ip6tables", 1)
    return node


def create_external(prefix: str) -> str:
    """An "outside the cluster" host on the fabric, 203.0.113.10 (TEST-NET-3), for egress ipBlock probes."""
    ns = f"{prefix}-ext"
    fabric = f"{prefix}-fabric"
    _add_netns(ns)
    ip("link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ns, netns=fabric)
    ip("addr", "add", f"{EXTERNAL_GATEWAY}/{EXTERNAL_NET.prefixlen}", "dev", "ext0", netns=fabric)
    ip("link", "set", "ext0", "up", netns=fabric)
    ip("addr", "add", f"{EXTERNAL_IP}/{EXTERNAL_NET.prefixlen}", "dev", "eth0", netns=ns)
    ip("link", "set", "eth0", "up", netns=ns)
    ip("route", "add", "default", "via", EXTERNAL_GATEWAY, netns=ns)
    return ns


@dataclass(frozen=True)
class PodNet:
    """One pod's sandbox: its namespace, address and the host end of its veth (in the node namespace)."""

    netns: str
    ip: str
    host_veth: str


def _pod_hash(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def pod_netns_name(prefix: str, key: str) -> str:
    """Namespace name of the pod identified by `key` (namespace/name/uid)."""
    return f"{prefix}-p-{_pod_hash(key)}"


def ip_batch(netns: str, commands: list[str], force: bool = False) -> None:
    """Several `ip` commands in one process (`ip -n NETNS -batch -`): pod set-up is mostly fork+exec otherwise."""
    run(["ip", "-n", netns, *(["-force"] if force else []), "-batch", "-"], input="\n".join(commands) + "\n",
        check=not force)


def create_pod(prefix: str, node: NodeNet, key: str, pod_ip: str) -> PodNet:
    """Create the pod's namespace with eth0 = `pod_ip` on the node bridge (idempotent: recreates on reuse)."""
    ns = pod_netns_name(prefix, key)
    veth = f"v{_pod_hash(key)}"
    if netns_exists(ns):
        delete_netns(ns)
    ip("netns", "add", ns)
    prefix_len = ipaddress.ip_network(node.pod_cidr).prefixlen
    # forget any leftover veth and any neighbour entry a previous holder of this address left on the node
    ip_batch(node.netns, [f"link del {veth}", f"neigh del {pod_ip} dev {BRIDGE}"], force=True)
    ip_batch(node.netns, [f"link add {veth} type veth peer name eth0 netns {ns}",
                          f"link set {veth} master {BRIDGE} up"])
    ip_batch(ns, ["link set lo up", f"addr add {pod_ip}/{prefix_len} dev eth0", "link set eth0 up",
                  f"route add default via {node.gateway}"])
    return PodNet(netns=ns, ip=pod_ip, host_veth=veth)


def delete_pod(prefix: str, node: NodeNet, key: str) -> None:
    """Remove the pod's veth (synchronously: namespace destruction itself is deferred by the kernel) and netns."""
    ip("link", "del", f"v{_pod_hash(key)}", netns=node.netns, check=False)
    delete_netns(pod_netns_name(prefix, key))


class IPAM:
    """Host-local address allocation from one node's pod CIDR (.1 is the bridge gateway). Thread-safe."""

    def __init__(self, cidr: str, reserved: Iterable[str] = ()) -> None:
        net = ipaddress.ip_network(cidr)
        self._free = [str(h) for h in net.hosts()][1:]  # skip the gateway
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self._next = 0
        for addr in reserved:
            self.reserve(addr)

    def reserve(self, addr: str) -> None:
        with self._lock:
            self._used.add(addr)

    def allocate(self) -> str:
        """The next free address after the last one handed out (round robin, like CNI host-local): a just-freed
        address is reused last, so stale ARP entries and conntrack state for it have long expired by then."""
        with self._lock:
            n = len(self._free)
            for i in range(n):
                addr = self._free[(self._next + i) % n]
                if addr not in self._used:
                    self._used.add(addr)
                    self._next = (self._next + i + 1) % n
                    return addr
        raise RuntimeError("pod CIDR exhausted")

    def release(self, addr: str) -> None:
        with self._lock:
            self._used.discard(addr)

    @property
    def used(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._used)


def pids_in_netns(name: str) -> list[int]:
    """Processes whose network namespace is `name` (to kill before deleting it)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def teardown(prefix: str) -> list[str]:
    """Kill whatever still runs inside this cluster's namespaces and delete them all; returns the names deleted."""
    import signal

    names = list_netns(prefix)
    for name in names:
        for pid in pids_in_netns(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for name in names:
        delete_netns(name)
    return names
