"""Port intervals and address ranges the policies cut the connection space into, and how connections are written."""

from __future__ import annotations

from netpol_auditor.cluster_policy import ClusterPolicy
from netpol_auditor.connection_space import AddressRange, Connections, address_ranges, port_intervals
from netpol_auditor.model import (
    ContainerPort,
    IPBlock,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyPort,
    NetworkPolicyRule,
    Pod,
    PortProtocol,
    Protocol,
)


def _policy(*peers: NetworkPolicyPeer, ports: tuple[NetworkPolicyPort, ...] = ()) -> NetworkPolicy:
    return NetworkPolicy("ns", "p", ingress=(NetworkPolicyRule(ports=ports, peers=peers),))


def _block(cidr: str, *excepts: str) -> NetworkPolicyPeer:
    return NetworkPolicyPeer(ip_block=IPBlock(cidr, excepts))


def test_no_ipblock_leaves_the_whole_ipv4_space_as_one_range() -> None:
    assert [r.name for r in address_ranges([_policy()])] == ["0.0.0.0-255.255.255.255"]


def test_cidr_minus_except_gives_the_fewest_ranges_each_block_treats_alike() -> None:
    ranges = address_ranges([_policy(_block("10.0.0.0/8", "10.1.0.0/16"))])
    assert [r.name for r in ranges] == [
        "0.0.0.0-9.255.255.255",
        "10.0.0.0-10.0.255.255",
        "10.1.0.0-10.1.255.255",
        "10.2.0.0-10.255.255.255",
        "11.0.0.0-255.255.255.255",
    ]
    assert ranges[1].address == "10.0.0.0"


def test_adjacent_pieces_alike_for_every_block_are_joined() -> None:
    # 10.0.0.0/9 and 10.128.0.0/9 are both inside the one block: its two halves are one range.
    ranges = address_ranges([_policy(_block("10.0.0.0/8")), _policy(_block("10.0.0.0/9"), _block("10.0.0.0/8"))])
    assert [r.name for r in ranges] == [
        "0.0.0.0-9.255.255.255",
        "10.0.0.0-10.127.255.255",
        "10.128.0.0-10.255.255.255",
        "11.0.0.0-255.255.255.255",
    ]
    same = address_ranges([_policy(_block("0.0.0.0/1"), _block("128.0.0.0/1"))])
    assert [r.name for r in same] == ["0.0.0.0-127.255.255.255", "128.0.0.0-255.255.255.255"]


def test_ipv6_is_covered_only_when_a_block_is_ipv6() -> None:
    ranges = address_ranges([_policy(_block("2001:db8::/32"))])
    assert [r for r in ranges if r.version == 4] == [AddressRange(4, 0, 2**32 - 1)]
    assert [r.name for r in ranges if r.version == 6] == [
        "::-2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:db9::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]


def test_port_classes_cut_at_port_ranges_and_resolved_named_ports() -> None:
    policy = _policy(
        ports=(
            NetworkPolicyPort(Protocol.TCP, 8080, 8090),
            NetworkPolicyPort(Protocol.UDP, 53),
            NetworkPolicyPort(Protocol.TCP, "metrics"),
            NetworkPolicyPort(Protocol.TCP, 80),
        )
    )
    pod = Pod("ns", "a", container_ports=(ContainerPort(9090, Protocol.TCP, "metrics"), ContainerPort(7000)))
    classes = port_intervals([policy], list[ClusterPolicy](), [pod])
    tcp = {k.port: v for k, v in classes.items() if k.protocol is Protocol.TCP}
    # The ports no entry covers (and no named port resolves to) are one class, judged through port 1.
    assert tcp == {
        1: ((1, 79), (81, 8079), (8091, 9089), (9091, 65535)),
        80: ((80, 80),),
        8080: ((8080, 8090),),
        9090: ((9090, 9090),),
    }
    assert {k.port: v for k, v in classes.items() if k.protocol is Protocol.UDP} == {1: ((1, 52), (54, 65535)),
                                                                                   53: ((53, 53),)}
    assert {k.port: v for k, v in classes.items() if k.protocol is Protocol.SCTP} == {1: ((1, 65535),)}
    assert PortProtocol(8080, Protocol.TCP) in classes


def test_connections_are_written_as_netpol_analyzer_writes_them() -> None:
    assert str(Connections.of({Protocol.TCP: [(80, 80), (8080, 8090), (8091, 8091)], Protocol.UDP: [(53, 53)]})) == (
        "TCP 80,8080-8091,UDP 53"
    )
    everything = Connections.of({p: [(1, 65535)] for p in Protocol})
    assert str(everything) == "All Connections" and everything.everything
    assert str(Connections.of({Protocol.SCTP: [(1, 65535)], Protocol.TCP: [(1, 65535)]})) == "SCTP 1-65535,TCP 1-65535"
    assert str(Connections.of({})) == "No Connections" and not Connections.of({})
