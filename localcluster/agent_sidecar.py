"""Service-mesh sidecars: a container named ``istio-proxy`` or ``linkerd-proxy`` without command captures every TCP
connection of its pod, as the mesh's init container and proxy do, and answers it itself.

What the mesh's init container installs in the pod's network namespace (``istio-init`` / istio-cni run
``istio-iptables`` in its default REDIRECT mode; linkerd's ``proxy-init``): the nat table sends outbound TCP
(``OUTPUT``) to the proxy's outbound port and inbound TCP (``PREROUTING``) to its inbound port, except the proxy's
own traffic (``-m owner --uid-owner``/``--gid-owner`` of the proxy's user: 1337 for istio, 2102 for linkerd; the
container's ``runAsUser``/``runAsGroup`` when set), loopback traffic to 127.0.0.1 and the proxy's own admin ports.
The rules are the ones ``iptables-save -t nat`` shows in an injected pod.

Instead of Envoy or linkerd2-proxy, the agent listens on both capture ports in the pod's namespace and accepts
every connection, echoing what it receives and never forwarding. So from inside such a pod *every* TCP destination
"connects" — also one that does not exist (192.0.2.1:80, TEST-NET-1) or one a NetworkPolicy denies (the SYN never
leaves the pod) — and every TCP connection to the pod, on any port, is accepted by the "proxy". That is what a
prober whose probe pod got a sidecar injected sees: connect results that say nothing about the CNI.

Only the pod's own network namespace gets rules: never the host's or a node's (a ``hostNetwork`` pod is not
captured; meshes do not inject those either).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

from localcluster.responder import Listener, open_listener

__all__ = ["MESHES", "Mesh", "capture_rules", "install_capture", "mesh_of"]


@dataclass(frozen=True)
class Mesh:
    """One mesh's transparent-capture layout."""

    chain: str  # chain name prefix
    outbound_port: int
    inbound_port: int
    proxy_uid: int
    inbound_exclude: tuple[int, ...]  # the proxy's own ports, never captured inbound


MESHES = {
    # istio-iptables defaults: ISTIO_REDIRECT → 15001 (outbound), ISTIO_IN_REDIRECT → 15006 (inbound), proxy UID/GID
    # 1337; inbound excludes 15008 (HBONE), 15090 (Prometheus), 15021 (health), 15020 (merged metrics)
    "istio-proxy": Mesh("ISTIO", 15001, 15006, 1337, (15008, 15090, 15021, 15020)),
    # linkerd proxy-init: PROXY_INIT_OUTPUT → 4140, PROXY_INIT_REDIRECT → 4143, proxy UID 2102; inbound skips the
    # proxy's admin (4191) and control (4190) ports
    "linkerd-proxy": Mesh("PROXY_INIT", 4140, 4143, 2102, (4190, 4191)),
}


def mesh_of(container: dict[str, Any]) -> Mesh | None:
    """The mesh a container stands for: named istio-proxy/linkerd-proxy and without command or args."""
    if container.get("command") or container.get("args"):
        return None
    return MESHES.get(str(container.get("name")))


def capture_rules(mesh: Mesh, uid: int, gid: int) -> str:
    """The nat table of a captured pod, as iptables-restore input."""
    if mesh.chain == "ISTIO":
        lines = [
            ":ISTIO_INBOUND - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]", ":ISTIO_OUTPUT - [0:0]", ":ISTIO_REDIRECT - [0:0]",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
            *(f"-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN" for p in mesh.inbound_exclude),
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {mesh.inbound_port}",
            "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
            f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
            f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
            f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
            f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
            f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {mesh.outbound_port}",
        ]
    else:
        ports = ",".join(str(p) for p in mesh.inbound_exclude)
        lines = [
            ":PROXY_INIT_REDIRECT - [0:0]", ":PROXY_INIT_OUTPUT - [0:0]",
            "-A PREROUTING -j PROXY_INIT_REDIRECT",
            f"-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports {ports} -j RETURN",
            f"-A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-ports {mesh.inbound_port}",
            "-A OUTPUT -j PROXY_INIT_OUTPUT",
            f"-A PROXY_INIT_OUTPUT -m owner --uid-owner {uid} -j RETURN",
            f"-A PROXY_INIT_OUTPUT -m owner --gid-owner {gid} -j RETURN",
            "-A PROXY_INIT_OUTPUT -o lo -j RETURN",
            f"-A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-ports {mesh.outbound_port}",
        ]
    return "\n".join(["*nat", *lines, "COMMIT", ""])


def install_capture(netns: str, netns_path: str, mesh: Mesh, uid: int | None, gid: int | None,
                    identity: str) -> list[Listener]:
    """Install the capture rules in the pod namespace `netns` and open the proxy's two listeners there."""
    uid = mesh.proxy_uid if uid is None else uid
    gid = uid if gid is None else gid
    subprocess.run(["ip", "netns", "exec", netns, "iptables-restore", "-w", "--noflush"],
                   input=capture_rules(mesh, uid, gid), text=True, check=True, capture_output=True)
    return [Listener(open_listener("TCP", port, netns_path), "TCP", port, identity, echo=True)
            for port in (mesh.outbound_port, mesh.inbound_port)]
