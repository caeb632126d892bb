"""Patterns that pick endpoints by name: what ``analyze --from/--to`` and expectation files write.

An endpoint is named ``NAMESPACE/NAME[Kind]`` (`netpol_auditor.workloads`), ``NAMESPACE/NAME`` with ``--per-pod``,
or is an IP address. A pattern is a full name, ``NAMESPACE/NAME`` (of any kind), ``NAMESPACE`` (all of it), a shell
glob of these (``prod/web-*``), or an IP address. A pattern that names a Pod folded into a workload picks the
workload: the Pod's verdicts are the workload's.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Mapping, Sequence

from .model import WORKLOAD_KINDS, PodRef

__all__ = ["ENDPOINT_KINDS", "is_ip", "matches", "select", "split_kind"]

#: The kinds an endpoint name ends with.
ENDPOINT_KINDS = ("Pod", *WORKLOAD_KINDS)


def split_kind(text: str) -> tuple[str, str | None]:
    """``ns/name[Kind]`` -> (``ns/name``, ``Kind``); (text, None) without a known kind."""
    base, sep, kind = text.removesuffix("]").rpartition("[")
    if text.endswith("]") and sep and kind in ENDPOINT_KINDS:
        return base, kind
    return text, None


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def matches(endpoint: str, pattern: str) -> bool:
    """Whether ``pattern`` picks the endpoint named ``endpoint``."""
    if endpoint == pattern:
        return True
    base, kind = split_kind(endpoint)
    pattern_base, pattern_kind = split_kind(pattern)
    if pattern_kind is not None and pattern_kind != kind:
        return False
    glob = pattern_base if "/" in pattern_base or is_ip(pattern_base) else f"{pattern_base}/*"
    return fnmatch.fnmatchcase(base, glob)


def select(endpoints: Sequence[str], pattern: str, folded: Mapping[PodRef, PodRef] | None = None) -> list[str]:
    """The endpoints ``pattern`` picks, in the order of ``endpoints``; empty when it picks none.
    ``folded``: each Pod folded into a workload, to the workload's endpoint."""
    if is_ip(pattern):
        pattern = str(ipaddress.ip_address(pattern))
    chosen = {e for e in endpoints if matches(e, pattern)}
    chosen.update(str(workload) for pod, workload in (folded or {}).items() if matches(str(pod), pattern))
    return [e for e in endpoints if e in chosen]
