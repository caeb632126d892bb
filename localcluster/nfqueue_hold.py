"""Hold an nfqueue number: bind it over nfnetlink and never read it, so no other process can bind it.

kube-network-policies v0.8.0 runs, with ``--admin-network-policy``, a DNS snooper for the experimental
``domainNames`` peers on queue ``--nfqueue-id`` + 1 (``pkg/networkpolicy/dnsagent.go``). Its nftables rule needs the
``queue`` expression this kernel lacks; when that sync fails, ``Run`` closes the queue while the receive goroutine
still runs, and its error callback (which always says "continue") spins on the closed socket: 100 % of a core
and 100 MB of "Could not receive message … bad file descriptor" log lines within seconds. When the queue is already
bound by another socket, the snooper's bind fails first (EPERM/EBUSY) and it returns cleanly ("domain cache
controller exited"). No rule feeds that queue, so nothing waits in it.

``python -m localcluster.nfqueue_hold QUEUE`` (run inside the node netns; nfqueues are per netns).
"""

from __future__ import annotations

import signal
import socket
import struct
import sys

__all__ = ["bind"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQNL_CFG_CMD_BIND = 1
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR = 2


def bind(queue: int) -> socket.socket:
    """A netlink socket bound to ``queue`` (raises OSError with the kernel's errno when it cannot be)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    cmd = struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET)  # struct nfqnl_msg_config_cmd
    attr = struct.pack("=HH", 4 + len(cmd), NFQA_CFG_CMD) + cmd
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attr  # struct nfgenmsg: res_id = queue (big endian)
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG,
                         NLM_F_REQUEST | NLM_F_ACK, 1, 0)
    s.send(header + body)
    reply = s.recv(4096)
    _, kind, _, _, _ = struct.unpack("=IHHII", reply[:16])
    if kind == NLMSG_ERROR:
        (error,) = struct.unpack("=i", reply[16:20])
        if error:
            s.close()
            raise OSError(-error, f"binding nfqueue {queue}")
    return s


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    held = bind(int(args[0]))
    print(f"holding nfqueue {args[0]} (netlink port {held.getsockname()[0]})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
