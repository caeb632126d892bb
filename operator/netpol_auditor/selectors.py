"""Label selectors and ipBlocks compiled into small, fast matchers.

Semantics of metav1.LabelSelector (apimachinery pkg/labels/selector.go): requirements are ANDed; the empty selector
matches everything; ``NotIn`` and ``DoesNotExist`` also match objects that lack the key.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

from .model import IPBlock, Labels, LabelSelector, SelectorOperator, SelectorRequirement

__all__ = [
    "AddressIndex",
    "IPBlockMatcher",
    "SelectorMatcher",
    "block_intervals",
    "compile_ip_block",
    "compile_selector",
    "ip_key",
    "parse_ip",
    "parse_label_selector",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


class SelectorMatcher:
    """A compiled label selector: ``matches(labels)``."""

    __slots__ = ("_absent", "_in", "_labels", "_not_in", "_present", "matches_all", "selector")

    def __init__(self, selector: LabelSelector) -> None:
        self.selector = selector
        self._labels: tuple[tuple[str, str], ...] = tuple(selector.match_labels.items())
        self._in: list[tuple[str, frozenset[str]]] = []
        self._not_in: list[tuple[str, frozenset[str]]] = []
        self._present: list[str] = []
        self._absent: list[str] = []
        for req in selector.match_expressions:
            if req.operator is SelectorOperator.IN:
                self._in.append((req.key, frozenset(req.values)))
            elif req.operator is SelectorOperator.NOT_IN:
                self._not_in.append((req.key, frozenset(req.values)))
            elif req.operator is SelectorOperator.EXISTS:
                self._present.append(req.key)
            else:
                self._absent.append(req.key)
        self.matches_all = selector.is_empty

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.matches_all:
            return True
        for key, value in self._labels:
            if labels.get(key) != value:
                return False
        for key, values in self._in:
            got = labels.get(key)
            if got is None or got not in values:
                return False
        for key, values in self._not_in:
            got = labels.get(key)
            if got is not None and got in values:
                return False
        for key in self._present:
            if key not in labels:
                return False
        return all(key not in labels for key in self._absent)


_KEY_RE = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE_RE = r"[-A-Za-z0-9_.]*"
_SET_REQUIREMENT = re.compile(rf"^(?P<key>{_KEY_RE})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY_REQUIREMENT = re.compile(rf"^(?P<key>{_KEY_RE})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE_RE})$")
_KEY = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY_RE})$")


def parse_label_selector(text: str) -> LabelSelector:
    """The string form of a label selector, as ``kubectl -l`` takes it (apimachinery pkg/labels/selector.go
    ``Parse``): comma-separated ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k``, ``!k``.
    ``k!=v`` and ``notin`` also match objects without ``k``, like the API's ``NotIn``. Raises ValueError naming the
    requirement that does not parse."""
    requirements: list[str] = []
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            requirements.append(text[start:i])
            start = i + 1
    requirements.append(text[start:])
    labels: dict[str, str] = {}
    expressions: list[SelectorRequirement] = []
    for raw in requirements:
        req = raw.strip()
        if not req:
            if text.strip():
                raise ValueError(f"label selector {text!r}: empty requirement")
            continue
        if m := _SET_REQUIREMENT.match(req):
            values = tuple(v.strip() for v in m["values"].split(","))
            if not all(re.fullmatch(_VALUE_RE, v) and v for v in values):
                raise ValueError(f"label selector {text!r}: {req!r}: a value in the set is empty or not a label value")
            op = SelectorOperator.IN if m["op"] == "in" else SelectorOperator.NOT_IN
            expressions.append(SelectorRequirement(m["key"], op, tuple(sorted(values))))
        elif m := _EQUALITY_REQUIREMENT.match(req):
            if m["op"] == "!=":
                expressions.append(SelectorRequirement(m["key"], SelectorOperator.NOT_IN, (m["value"],)))
            elif labels.get(m["key"], m["value"]) != m["value"]:
                raise ValueError(f"label selector {text!r}: {m['key']!r} required to equal two values")
            else:
                labels[m["key"]] = m["value"]
        elif m := _KEY.match(req):
            op = SelectorOperator.DOES_NOT_EXIST if m["neg"] else SelectorOperator.EXISTS
            expressions.append(SelectorRequirement(m["key"], op))
        else:
            raise ValueError(f"label selector {text!r}: cannot parse {req!r} (expected k=v, k!=v, k in (a,b), "
                             "k notin (a,b), k or !k)")
    return LabelSelector(Labels(labels), tuple(expressions))


@lru_cache(maxsize=65536)
def compile_selector(selector: LabelSelector) -> SelectorMatcher:
    return SelectorMatcher(selector)


@lru_cache(maxsize=262144)
def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def ip_key(text: str) -> tuple[int, int] | None:
    """``(version, integer value)`` of an address, None if it is not one. Faster than `ipaddress` for the
    common case (inet_pton), with `ipaddress` deciding anything unusual."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, text)
    except OSError:
        addr = parse_ip(text)
        return None if addr is None else (addr.version, int(addr))
    return (6 if family == socket.AF_INET6 else 4, int.from_bytes(packed, "big"))


@dataclass(frozen=True)
class _Range:
    version: int
    low: int
    high: int


def _range(cidr: str) -> _Range:
    net = ipaddress.ip_network(cidr, strict=False)
    return _Range(net.version, int(net.network_address), int(net.broadcast_address))


class IPBlockMatcher:
    """An ipBlock: addresses inside ``cidr`` but in no ``except`` range; never matches the other IP family."""

    __slots__ = ("_except", "_excepts", "_high", "_low", "_range", "_version", "block")

    def __init__(self, block: IPBlock) -> None:
        self.block = block
        self._range = _range(block.cidr)
        self._except = tuple(_range(e) for e in block.except_)
        self._version, self._low, self._high = self._range.version, self._range.low, self._range.high
        self._excepts = tuple((r.low, r.high) for r in self._except if r.version == self._version)

    def contains_key(self, version: int, value: int) -> bool:
        if version != self._version or not self._low <= value <= self._high:
            return False
        return all(not low <= value <= high for low, high in self._excepts)

    def contains(self, address: IPAddress) -> bool:
        return self.contains_key(address.version, int(address))

    def matches_any(self, addresses: tuple[str, ...]) -> bool:
        """True if any of a pod's IPs lies in the block (dual-stack pods have one address per family)."""
        for text in addresses:
            key = ip_key(text)
            if key is not None and self.contains_key(*key):
                return True
        return False


@lru_cache(maxsize=16384)
def compile_ip_block(block: IPBlock) -> IPBlockMatcher:
    return IPBlockMatcher(block)


def block_intervals(matcher: IPBlockMatcher) -> list[tuple[int, int, int]]:
    """The block as disjoint ``(version, low, high)`` integer intervals: ``cidr`` minus its ``except`` ranges."""
    r = matcher._range
    holes = sorted((e.low, e.high) for e in matcher._except if e.version == r.version)
    out: list[tuple[int, int, int]] = []
    cursor = r.low
    for low, high in holes:
        if low > cursor:
            out.append((r.version, cursor, min(low - 1, r.high)))
        cursor = max(cursor, high + 1)
        if cursor > r.high:
            break
    if cursor <= r.high:
        out.append((r.version, cursor, r.high))
    return out


class AddressIndex(Generic[T]):
    """Owners (pods) by IP address, to find the owners an ipBlock matches without scanning them all."""

    def __init__(self) -> None:
        self._keys: list[tuple[int, int]] = []  # sorted (version, integer address)
        self._owners: dict[tuple[int, int], set[T]] = {}

    @staticmethod
    def _key(ip: str) -> tuple[int, int] | None:
        return ip_key(ip)

    def add(self, ip: str, owner: T) -> None:
        key = self._key(ip)
        if key is None:
            return
        owners = self._owners.get(key)
        if owners is None:
            owners = self._owners[key] = set()
            insort(self._keys, key)
        owners.add(owner)

    def remove(self, ip: str, owner: T) -> None:
        key = self._key(ip)
        owners = None if key is None else self._owners.get(key)
        if key is None or owners is None:
            return
        owners.discard(owner)
        if not owners:
            del self._owners[key]
            del self._keys[bisect_left(self._keys, key)]

    def within(self, matcher: IPBlockMatcher) -> set[T]:
        """Owners of an address the block matches."""
        found: set[T] = set()
        for version, low, high in block_intervals(matcher):
            start = bisect_left(self._keys, (version, low))
            stop = bisect_right(self._keys, (version, high))
            for key in self._keys[start:stop]:
                found |= self._owners[key]
        return found
