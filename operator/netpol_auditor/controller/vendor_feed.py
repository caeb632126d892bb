"""The vendor policies the cluster holds (Cilium, Calico, Antrea): a side table next to the index.

They are not evaluated, so they never enter the reachability index; the prober reads which pods they select (those
paths are inconclusive, ``foreign_policy``) and the metrics count them. Fed like the index: watch events per
object, and full listings that replace what a kind holds, except objects the watch touched since the listing
started (the watch is newer). It never writes to the API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netpol_auditor.manifests import ManifestError
from netpol_auditor.vendor_policy import (
    VENDOR_KINDS,
    VendorKind,
    VendorPolicy,
    parse_vendor_policy,
    widened_vendor_policy,
)

__all__ = ["WATCHED_VENDOR_KINDS", "VendorFeed"]

logger = logging.getLogger(__name__)

#: (kind, version watched and listed, plural): the newest version of each group's kinds.
WATCHED_VENDOR_KINDS: tuple[tuple[VendorKind, str, str], ...] = tuple(
    (kind, kind.versions[0], kind.kind.lower().removesuffix("policy") + "policies") for kind in VENDOR_KINDS)

_Key = tuple[str, str | None, str]  # (kind label, namespace, name)


@dataclass
class _Held:
    policy: VendorPolicy
    seq: int


class VendorFeed:
    """The vendor policies held, by kind and (namespace, name); ``revision`` changes with every change."""

    def __init__(self) -> None:
        self._held: dict[_Key, _Held] = {}
        self._seq = 0
        self.revision = 0
        self._policies: tuple[VendorPolicy, ...] | None = ()

    @property
    def sequence(self) -> int:
        return self._seq

    def policies(self) -> tuple[VendorPolicy, ...]:
        if self._policies is None:
            self._policies = tuple(h.policy for _, h in sorted(self._held.items(), key=lambda kv: str(kv[0])))
        return self._policies

    def counts(self) -> dict[VendorKind, int]:
        out = dict.fromkeys(VENDOR_KINDS, 0)
        for held in self._held.values():
            out[held.policy.kind] += 1
        return out

    def clear(self) -> None:
        if self._held:
            self._held.clear()
            self._changed()

    def apply_event(self, kind: VendorKind, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """Apply one watch event; returns whether what is held changed."""
        self._seq += 1
        key = _key(kind, body)
        if event_type == "DELETED":
            if self._held.pop(key, None) is None:
                return False
            self._changed()
            return True
        policy = _parse(kind, body)
        held = self._held.get(key)
        self._held[key] = _Held(policy, self._seq)
        if held is not None and held.policy == policy:
            return False
        _log_notes(policy)
        self._changed()
        return True

    def reconcile(self, kind: VendorKind, listed: Iterable[Mapping[str, Any]], started_seq: int) -> bool:
        """Hold exactly *listed* for *kind*, except objects the watch touched after *started_seq*; returns
        whether anything changed."""
        changed = False
        seen: set[_Key] = set()
        for body in listed:
            key = _key(kind, body)
            seen.add(key)
            held = self._held.get(key)
            if held is not None and held.seq > started_seq:
                continue
            policy = _parse(kind, body)
            if held is None or held.policy != policy:
                self._held[key] = _Held(policy, started_seq)
                _log_notes(policy)
                changed = True
        for key in [k for k, h in self._held.items() if k[0] == kind.label and k not in seen]:
            if self._held[key].seq <= started_seq:
                del self._held[key]
                changed = True
        if changed:
            self._changed()
        return changed

    def _changed(self) -> None:
        self.revision += 1
        self._policies = None


def _key(kind: VendorKind, body: Mapping[str, Any]) -> _Key:
    meta = body.get("metadata") or {}
    namespace = (meta.get("namespace") or "default") if kind.namespaced else None
    return (kind.label, namespace, str(meta.get("name", "")))


def _parse(kind: VendorKind, body: Mapping[str, Any]) -> VendorPolicy:
    doc = body if body.get("kind") else {**body, "kind": kind.kind, "apiVersion": f"{kind.group}/{kind.versions[0]}"}
    try:
        policy = parse_vendor_policy(doc, source="api")
    except ManifestError as exc:
        # The API server accepted it: taken to select every pod of its scope, both ways.
        logger.warning("cannot read %s: %s; taken to select every pod of its scope", kind.label, exc)
        policy = widened_vendor_policy(doc)
    assert policy is not None
    return policy


def _log_notes(policy: VendorPolicy) -> None:
    for note in policy.notes:
        logger.warning("%s %s %s: %s", policy.api_version, policy.kind.kind, policy.display_name, note)
