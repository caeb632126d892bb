"""The space of connections the policies cut into pieces: port intervals per protocol, and address ranges outside
the cluster, on each of which every rule decides alike.

A verdict can only change where a rule's ports or ipBlocks begin or end, so judging one port of every interval
(and one address of every range) gives the whole space exactly, not a sample:

- ports: the bounds of every port number and ``port``-``endPort`` range of the NetworkPolicies and cluster policies,
  and the container ports their named ports resolve to (on any endpoint), per protocol;
- addresses: the bounds of every ipBlock ``cidr`` and ``except`` (and cluster policy ``networks``), per address
  family; adjacent pieces that every block treats alike are joined, so the ranges are as few as the blocks allow.
  IPv4 is always covered (``0.0.0.0-255.255.255.255`` when there is no ipBlock at all), IPv6 only when a block is
  IPv6.

`Connections` is what one (source, destination) pair may do, over the judged intervals: per protocol, port
ranges (``TCP 80,8080-8090``), written as np-guard netpol-analyzer's connlist writes them
(pkg/netpol/connlist/conns_formatter_txt.go: protocols by name, ``All Connections`` for every port of every
protocol).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .cluster_policy import ClusterPolicy
from .model import IPBlock, NetworkPolicy, Pod, PortProtocol, Protocol

__all__ = [
    "ALL_PORTS",
    "AddressRange",
    "Connections",
    "PortRanges",
    "address_ranges",
    "merge_ranges",
    "port_intervals",
]

MAX_PORT = 65535
PortRanges = tuple[tuple[int, int], ...]  # sorted, disjoint, not adjacent; inclusive
ALL_PORTS: PortRanges = ((1, MAX_PORT),)
ALL_CONNECTIONS = "All Connections"
NO_CONNECTIONS = "No Connections"


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> PortRanges:
    """Sorted, with overlapping and adjacent ranges joined."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _ranges_text(ranges: PortRanges) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


@dataclass(frozen=True)
class Connections:
    """Allowed destination ports per protocol (a protocol with none is left out)."""

    ports: Mapping[Protocol, PortRanges]

    @classmethod
    def of(cls, ports: Mapping[Protocol, Iterable[tuple[int, int]]]) -> Connections:
        merged = {p: merge_ranges(ports.get(p, ())) for p in sorted(Protocol, key=str)}
        return cls({p: r for p, r in merged.items() if r})

    @property
    def everything(self) -> bool:
        """Every port of every protocol."""
        return all(self.ports.get(p) == ALL_PORTS for p in Protocol)

    def __bool__(self) -> bool:
        return bool(self.ports)

    def __str__(self) -> str:
        if not self.ports:
            return NO_CONNECTIONS
        if self.everything:
            return ALL_CONNECTIONS
        return ",".join(f"{p.value} {_ranges_text(r)}" for p, r in self.ports.items())

    def to_dict(self) -> dict[str, list[list[int]]]:
        """``{"TCP": [[80, 80], [8080, 8090]]}``."""
        return {p.value: [[lo, hi] for lo, hi in r] for p, r in self.ports.items()}


# ----------------------------------------------------------------------------------------------------------------
# Ports


def port_intervals(
    policies: Iterable[NetworkPolicy], cluster_policies: Iterable[ClusterPolicy], pods: Iterable[Pod]
) -> dict[PortProtocol, PortRanges]:
    """Every port of TCP, UDP and SCTP in classes that every port entry of every policy treats alike: the first port
    of a class (as a `PortProtocol`, the port judged for it) -> its ranges. Entries are cut at their bounds; the
    pieces that the same numbered entries cover and no named port resolves in (on any endpoint) are one class, so
    ``80`` and ``8080`` alone make three classes (80, 8080, everything else), not five."""
    bounds: dict[Protocol, set[int]] = {p: {1} for p in Protocol}
    entries: dict[Protocol, list[tuple[int, int]]] = {p: [] for p in Protocol}
    resolved: dict[Protocol, set[int]] = {p: set() for p in Protocol}
    names: set[str] = set()

    def add(protocol: Protocol, port: int, end_port: int | None) -> None:
        bounds[protocol].update((port, (end_port or port) + 1))
        entries[protocol].append((port, end_port or port))

    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            for entry in rule.ports:
                if isinstance(entry.port, int):
                    add(entry.protocol, entry.port, entry.end_port)
                elif isinstance(entry.port, str):
                    names.add(entry.port)
    for cluster_policy in cluster_policies:
        for cluster_rule in (*cluster_policy.ingress, *cluster_policy.egress):
            for cport in cluster_rule.ports:
                if cport.named_port is not None:
                    names.add(cport.named_port)
                elif cport.port is not None and cport.protocol is not None:
                    add(cport.protocol, cport.port, cport.end_port)
    if names:
        for pod in pods:
            for container_port in pod.container_ports:
                if container_port.name in names:
                    bounds[container_port.protocol].update((container_port.port, container_port.port + 1))
                    resolved[container_port.protocol].add(container_port.port)
    out: dict[PortProtocol, PortRanges] = {}
    for protocol in sorted(Protocol, key=str):
        starts = sorted(b for b in bounds[protocol] if b <= MAX_PORT)
        classes: dict[object, list[tuple[int, int]]] = {}
        for lo, nxt in zip(starts, [*starts[1:], MAX_PORT + 1], strict=True):
            key: object = ("named", lo) if lo in resolved[protocol] else tuple(
                a <= lo <= b for a, b in entries[protocol]
            )
            classes.setdefault(key, []).append((lo, nxt - 1))
        for pieces in classes.values():
            out[PortProtocol(pieces[0][0], protocol)] = merge_ranges(pieces)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Addresses


_FAMILY_END = {4: 1 << 32, 6: 1 << 128}


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive range of addresses of one family, named ``first-last`` (netpol-analyzer's external peers, less
    its ``[External]`` suffix); judged through its first address."""

    version: int
    first: int
    last: int

    def _address(self, value: int) -> str:
        return str(ipaddress.IPv4Address(value) if self.version == 4 else ipaddress.IPv6Address(value))

    @property
    def address(self) -> str:
        """The address that stands for the range (any would do: every rule treats the range alike)."""
        return self._address(self.first)

    @property
    def name(self) -> str:
        return f"{self._address(self.first)}-{self._address(self.last)}"

    def __str__(self) -> str:
        return self.name


def _networks(policies: Iterable[NetworkPolicy], cluster_policies: Iterable[ClusterPolicy]) -> list[IPBlock]:
    blocks: list[IPBlock] = []
    for policy in policies:
        for rule in (*policy.ingress, *policy.egress):
            blocks.extend(peer.ip_block for peer in rule.peers if peer.ip_block is not None)
    for cluster_policy in cluster_policies:
        for cluster_rule in (*cluster_policy.ingress, *cluster_policy.egress):
            for cpeer in cluster_rule.peers:
                blocks.extend(IPBlock(cidr) for cidr in cpeer.networks)
    return blocks


def _span(cidr: str) -> tuple[int, int, int]:
    network = ipaddress.ip_network(cidr, strict=False)
    return network.version, int(network.network_address), int(network.broadcast_address)


def address_ranges(
    policies: Iterable[NetworkPolicy], cluster_policies: Iterable[ClusterPolicy] = ()
) -> list[AddressRange]:
    """The fewest contiguous address ranges, IPv4 first, on which every ipBlock (``cidr`` minus ``except``) and
    cluster policy ``networks`` CIDR of the policies matches all of the range or none of it."""
    blocks = list(dict.fromkeys(_networks(policies, cluster_policies)))
    spans = [(_span(b.cidr), [_span(e) for e in b.except_]) for b in blocks]
    versions = {4} | {version for (version, _, _), _ in spans}
    out: list[AddressRange] = []
    for version in sorted(versions):
        end = _FAMILY_END[version]
        bounds = {0}
        members: list[tuple[int, int, list[tuple[int, int]]]] = []
        for (v, low, high), excepts in spans:
            if v != version:
                continue
            holes = [(lo, hi) for ev, lo, hi in excepts if ev == version]
            members.append((low, high, holes))
            bounds.update((low, high + 1))
            for lo, hi in holes:
                bounds.update((lo, hi + 1))
        starts = sorted(b for b in bounds if b < end)
        previous: tuple[bool, ...] | None = None
        for lo, nxt in zip(starts, [*starts[1:], end], strict=True):
            inside = tuple(
                low <= lo <= high and not any(a <= lo <= b for a, b in holes) for low, high, holes in members
            )
            if out and previous == inside and out[-1].version == version:
                out[-1] = AddressRange(version, out[-1].first, nxt - 1)
            else:
                out.append(AddressRange(version, lo, nxt - 1))
            previous = inside
    return out
