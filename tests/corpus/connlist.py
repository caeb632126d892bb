"""np-guard netpol-analyzer's connlist text format: one line per (source, destination) with the allowed connections.

A line is ``SRC => DST : CONNS`` (pkg/netpol/connlist/conns_formatter_txt.go). Peers are workloads
``namespace/name[Kind]``, address ranges ``first-last[External]``, or ``{ingress-controller}`` (the pseudo-peer of
its Route/Ingress analysis). ``CONNS`` is ``All Connections`` or protocols with port lists, e.g.
``SCTP 1-9002,9004-65535,TCP 80,UDP 53``; a pair with no connection has no line.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["ALL_PORTS", "PROTOCOLS", "Connlist", "Conns", "PortRanges", "parse_connlist", "parse_external"]

PROTOCOLS = ("TCP", "UDP", "SCTP")
ALL_PORTS = ((1, 65535),)
ALL_CONNECTIONS = "All Connections"

PortRanges = tuple[tuple[int, int], ...]  # sorted, disjoint, not adjacent; inclusive


def _normalize(ranges: Iterable[tuple[int, int]]) -> PortRanges:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


@dataclass(frozen=True)
class Conns:
    """A set of connections: per protocol, the allowed destination ports. Empty: no connection."""

    ports: Mapping[str, PortRanges] = field(default_factory=dict)

    @classmethod
    def of(cls, ports: Mapping[str, Iterable[tuple[int, int]]]) -> Conns:
        normalized = {p: _normalize(ports.get(p, ())) for p in PROTOCOLS}
        return cls({p: r for p, r in normalized.items() if r})

    @classmethod
    def everything(cls) -> Conns:
        return cls.of(dict.fromkeys(PROTOCOLS, ALL_PORTS))

    @classmethod
    def parse(cls, text: str) -> Conns:
        """``All Connections`` or ``TCP 80,8080-8090,UDP 53`` (a protocol name starts a new port list)."""
        text = text.strip()
        if text == ALL_CONNECTIONS:
            return cls.everything()
        ports: dict[str, list[tuple[int, int]]] = {}
        current: list[tuple[int, int]] | None = None
        for item in text.split(","):
            item = item.strip()
            protocol, _, rest = item.partition(" ")
            if protocol in PROTOCOLS:
                current = ports.setdefault(protocol, [])
                item = rest.strip()
            if current is None or not re.fullmatch(r"\d+(-\d+)?", item):
                raise ValueError(f"not a connlist connection set: {text!r}")
            lo, _, hi = item.partition("-")
            current.append((int(lo), int(hi or lo)))
        return cls.of(ports)

    def __bool__(self) -> bool:
        return bool(self.ports)

    def allows(self, protocol: str, port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in self.ports.get(protocol, ()))

    def __str__(self) -> str:
        if not self.ports:
            return "No Connections"
        if all(self.ports.get(p) == ALL_PORTS for p in PROTOCOLS):
            return ALL_CONNECTIONS
        parts = []
        for protocol in sorted(self.ports):  # netpol-analyzer sorts protocols by name: SCTP, TCP, UDP
            ranges = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports[protocol])
            parts.append(f"{protocol} {ranges}")
        return ",".join(parts)


_EXTERNAL = re.compile(r"^(?P<first>[0-9a-fA-F.:]+)-(?P<last>[0-9a-fA-F.:]+)\[External\]$")


def parse_external(peer: str) -> tuple[int, int] | None:
    """The address range ``(first, last)`` (integers, inclusive) of an ``a-b[External]`` peer, else None."""
    match = _EXTERNAL.match(peer)
    if match is None:
        return None
    return int(ipaddress.ip_address(match["first"])), int(ipaddress.ip_address(match["last"]))


@dataclass
class Connlist:
    """A parsed connlist: workload -> workload lines, lines with an address range on one side, and the
    ``{ingress-controller}`` lines (kept apart: Route/Ingress analysis is not NetworkPolicy semantics)."""

    workloads: dict[tuple[str, str], Conns] = field(default_factory=dict)
    externals: dict[tuple[str, str], Conns] = field(default_factory=dict)
    ingress_controller: list[str] = field(default_factory=list)


def parse_connlist(text: str) -> Connlist:
    out = Connlist()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        pair, sep, conns = line.partition(" : ")
        src, arrow, dst = pair.partition(" => ")
        if not sep or not arrow:
            raise ValueError(f"line {number}: not a connlist line: {line!r}")
        if src.startswith("{") or dst.startswith("{"):
            out.ingress_controller.append(line)
            continue
        target = out.externals if parse_external(src) or parse_external(dst) else out.workloads
        if (src, dst) in target:
            raise ValueError(f"line {number}: a second line for {src} => {dst}")
        target[(src, dst)] = Conns.parse(conns)
    return out
