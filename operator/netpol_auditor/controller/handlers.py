"""Thin kopf handlers: translate a watch event and hand it to the operator state.

Only ``@kopf.on.event`` handlers are used: kopf keeps no state on the objects for them -- no finalizers, no
``kopf.zalando.org/last-handled-configuration`` diff-base annotation, no progress storage. Those are written only
for change-detecting handlers (on.create/update/delete/resume), daemons and timers; event-watching handlers were
added to kopf precisely to "spy" on other resources "not storing any status fields or finalizers" (nolar/kopf#86,
docs/handlers.rst "Event-watching handlers"). kopf's own Events on handler outcomes are switched off as well
(``settings.posting.enabled = False`` in `app`). tests/operator/test_live.py proves the watched objects stay
byte-for-byte unchanged.

The cluster-scoped policies of policy.networking.k8s.io are CRDs a cluster may or may not serve. kopf resolves each
handler's resource against the API's discovery at start and, with read access to customresourcedefinitions, re-scans
a group whenever one of its CRDs is created, changed or deleted (kopf ``_core/reactor/observation.py``): a handler
whose resource is not served only logs "Unresolved resources cannot be served", and its watch starts once the CRD is
installed. The Resyncer lists them too, a 404 meaning none. The CNI-specific policies (Cilium, Calico, Antrea:
`controller.vendor_feed`) are watched the same way, where served, into a side table: they are never evaluated.
"""

from __future__ import annotations

from typing import Any, Protocol

import kopf

from netpol_auditor.cluster_policy import CLUSTER_POLICY_API_GROUP, ClusterPolicyKind
from netpol_auditor.controller.feed import FeedKind
from netpol_auditor.controller.vendor_feed import WATCHED_VENDOR_KINDS
from netpol_auditor.model import ObjectKind
from netpol_auditor.prober.podspec import RUN_LABEL
from netpol_auditor.vendor_policy import VendorKind

__all__ = ["WATCHED", "EventSink", "register_handlers"]

#: (kind, API group, version, plural)
WATCHED: tuple[tuple[FeedKind, str, str, str], ...] = (
    (ObjectKind.NAMESPACE, "", "v1", "namespaces"),
    (ObjectKind.POD, "", "v1", "pods"),
    (ObjectKind.NETWORK_POLICY, "networking.k8s.io", "v1", "networkpolicies"),
    (ClusterPolicyKind.ADMIN_NETWORK_POLICY, CLUSTER_POLICY_API_GROUP, "v1alpha1", "adminnetworkpolicies"),
    (ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY, CLUSTER_POLICY_API_GROUP, "v1alpha1",
     "baselineadminnetworkpolicies"),
    (ClusterPolicyKind.CLUSTER_NETWORK_POLICY, CLUSTER_POLICY_API_GROUP, "v1alpha2", "clusternetworkpolicies"),
)


class EventSink(Protocol):
    def on_watch_event(self, kind: FeedKind, event_type: str | None, body: Any) -> None: ...

    def on_vendor_event(self, kind: VendorKind, event_type: str | None, body: Any) -> None: ...


def register_handlers(registry: kopf.OperatorRegistry, sink: EventSink) -> None:
    """Register one event-watching handler per watched kind in *registry*."""
    for kind, group, version, plural in WATCHED:
        _register(registry, sink, kind, group, version, plural)
    for vendor, version, plural in WATCHED_VENDOR_KINDS:
        _register_vendor(registry, sink, vendor, version, plural)


def _register_vendor(registry: kopf.OperatorRegistry, sink: EventSink, kind: VendorKind, version: str,
                     plural: str) -> None:
    async def handler(**kwargs: Any) -> None:
        event = kwargs["event"]
        sink.on_vendor_event(kind, event.get("type"), event.get("object") or {})

    handler_id = f"vendor-{kind.group.replace('.', '-')}-{kind.kind.lower()}"
    kopf.on.event(kind.group, version, plural, registry=registry, id=handler_id)(handler)


def _register(registry: kopf.OperatorRegistry, sink: EventSink, kind: FeedKind, group: str, version: str,
              plural: str) -> None:
    # An async handler runs on the event loop, so index updates never race with each other or with scrapes.
    async def handler(**kwargs: Any) -> None:
        event = kwargs["event"]
        sink.on_watch_event(kind, event.get("type"), event.get("object") or {})

    # The prober's own pods carry its run label: they are never workloads, so they never reach the index (nor the
    # path metrics); the re-lists leave them out by the same label (resync.list_page).
    labels = {RUN_LABEL: kopf.ABSENT} if kind is ObjectKind.POD else None
    kopf.on.event(group, version, plural, registry=registry, id=f"index-{kind.value.lower()}", labels=labels)(handler)
