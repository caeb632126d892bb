"""Node/pod network namespaces and responders, without an API server: real namespaces this test creates."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from localcluster.responder import SCTP_UNSUPPORTED_REASON, Listener, ResponderLoop, open_listener, sctp_supported

from localcluster import network

PREFIX = "lcnettest"


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[dict[str, network.PodNet]]:
    """Two nodes on a fabric, pods a and b on node 1, c on node 2, each answering tcp/80 and udp/53."""
    network.teardown(PREFIX)
    network.create_fabric(PREFIX)
    n1, n2 = network.create_node(PREFIX, 1), network.create_node(PREFIX, 2)
    network.create_external(PREFIX)
    ipam1, ipam2 = network.IPAM(n1.pod_cidr), network.IPAM(n2.pod_cidr)
    pods = {
        "a": network.create_pod(PREFIX, n1, "default/a/uid-a", ipam1.allocate()),
        "b": network.create_pod(PREFIX, n1, "default/b/uid-b", ipam1.allocate()),
        "c": network.create_pod(PREFIX, n2, "default/c/uid-c", ipam2.allocate()),
    }
    loop = ResponderLoop()
    loop.start()
    for name, pod in pods.items():
        path = f"/run/netns/{pod.netns}"
        loop.add(name, [Listener(open_listener("TCP", 80, path), "TCP", 80, name),
                        Listener(open_listener("UDP", 53, path), "UDP", 53, name)])
    yield pods
    loop.stop()
    network.teardown(PREFIX)


def nc(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", netns, "nc", "-w", "2", *args],
                          capture_output=True, text=True, input="ping\n", timeout=10)


def test_addresses_come_from_the_node_pod_cidr(two_nodes: dict[str, network.PodNet]) -> None:
    assert two_nodes["a"].ip == "10.244.1.2"
    assert two_nodes["b"].ip == "10.244.1.3"
    assert two_nodes["c"].ip == "10.244.2.2"
    addrs = network.run(["ip", "-4", "-o", "addr", "show", "eth0"], netns=two_nodes["c"].netns)
    assert "10.244.2.2/24" in addrs


@pytest.mark.parametrize(("src", "dst"), [("a", "b"), ("a", "c"), ("c", "b")])
def test_tcp_and_udp_between_pods_on_same_and_other_node(two_nodes: dict[str, network.PodNet],
                                                          src: str, dst: str) -> None:
    tcp = nc(two_nodes[src].netns, two_nodes[dst].ip, "80")
    assert tcp.returncode == 0, tcp.stderr
    assert tcp.stdout == f"{dst} tcp/80\n"
    udp = nc(two_nodes[src].netns, "-u", two_nodes[dst].ip, "53")
    assert udp.stdout == f"{dst} udp/53\n"


def test_closed_port_is_refused(two_nodes: dict[str, network.PodNet]) -> None:
    out = nc(two_nodes["a"].netns, "-z", two_nodes["c"].ip, "81")
    assert out.returncode != 0


def test_pod_reaches_external_host_with_its_own_source_address(two_nodes: dict[str, network.PodNet]) -> None:
    ext = f"{PREFIX}-ext"
    proc = subprocess.Popen(["ip", "netns", "exec", ext, "python3", "-m", "localcluster.responder",
                             "--identity", "ext", "--tcp", "8080"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "serving" line: listening now
        out = nc(two_nodes["c"].netns, network.EXTERNAL_IP, "8080")
        assert out.stdout == "ext tcp/8080\n"
        conns = network.run(["ss", "-tn", "state", "time-wait"], netns=ext, check=False)
        assert two_nodes["c"].ip in conns  # no NAT anywhere: the external host sees the pod IP
    finally:
        proc.terminate()
        proc.wait(10)


def test_host_network_namespace_untouched(two_nodes: dict[str, network.PodNet]) -> None:
    host_addrs = network.run(["ip", "-4", "-o", "addr"])
    assert "10.244." not in host_addrs
    assert "10.250." not in host_addrs


def test_delete_pod_removes_namespace_and_veth(two_nodes: dict[str, network.PodNet]) -> None:
    node = network.node_net(PREFIX, 2)
    ipam = network.IPAM(node.pod_cidr, reserved=[two_nodes["c"].ip])
    pod = network.create_pod(PREFIX, node, "default/tmp/uid-t", ipam.allocate())
    assert pod.ip == "10.244.2.3"
    assert network.netns_exists(pod.netns)
    network.delete_pod(PREFIX, node, "default/tmp/uid-t")
    assert not network.netns_exists(pod.netns)
    links = network.run(["ip", "-o", "link"], netns=node.netns)
    assert pod.host_veth not in links


def test_teardown_leaves_nothing() -> None:
    prefix = "lcnettd"
    network.create_fabric(prefix)
    node = network.create_node(prefix, 1)
    network.create_pod(prefix, node, "x/y/z", "10.244.1.2")
    sleeper = subprocess.Popen(["ip", "netns", "exec", node.netns, "sleep", "300"])
    # `ip netns exec` enters the namespace, then execs sleep: tear down only once it is in there (else the sleeper
    # could enter after the kill and outlive the namespace)
    deadline = time.monotonic() + 10
    while sleeper.pid not in network.pids_in_netns(node.netns) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleeper.pid in network.pids_in_netns(node.netns)
    assert len(network.list_netns(prefix)) == 3
    assert network.teardown(prefix)
    assert network.list_netns(prefix) == []
    assert sleeper.wait(10) != 0  # killed


@pytest.mark.xfail(condition=not sctp_supported(), reason=SCTP_UNSUPPORTED_REASON, strict=True, raises=OSError)
def test_sctp_responder_answers(two_nodes: dict[str, network.PodNet]) -> None:
    loop = ResponderLoop()
    loop.start()
    try:
        path = f"/run/netns/{two_nodes['c'].netns}"
        loop.add("sctp", [Listener(open_listener("SCTP", 9000, path), "SCTP", 9000, "c")])
        out = nc(two_nodes["a"].netns, "--sctp", two_nodes["c"].ip, "9000")
        assert out.stdout == "c sctp/9000\n"
    finally:
        loop.stop()
