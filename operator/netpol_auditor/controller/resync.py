"""Full re-lists that reconcile the index with the cluster.

kopf re-lists a resource after a watch expiry (410 Gone) or a reconnect, but a listing delivers no DELETED event
for objects that vanished meanwhile, so the index could keep ghosts forever. The Resyncer lists every watched kind
(paginated, read-only) and lets the IndexFeed reconcile: on start-up and on becoming the active replica (readiness
waits for it), shortly after kopf starts re-listing (requested by the handlers), and periodically as a safety net.

The cluster-scoped policies of policy.networking.k8s.io are listed where the cluster serves them: a 404 (no CRD)
means there are none, so any still held are dropped; a 403 leaves what the watch delivered in place and says so once.
Whether each is served is logged when it changes (the CRD installed or removed while the operator runs). The
CNI-specific policies (Cilium, Calico, Antrea) are listed the same way into their side table (`VendorFeed`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.controller.feed import FeedKind, IndexFeed, ReconcileResult
from netpol_auditor.controller.handlers import WATCHED
from netpol_auditor.controller.scope import NamespaceScope
from netpol_auditor.controller.vendor_feed import WATCHED_VENDOR_KINDS, VendorFeed
from netpol_auditor.model import Labels, Namespace, ObjectKind
from netpol_auditor.prober.podspec import RUN_LABEL

__all__ = ["Resyncer", "list_objects", "list_page"]

logger = logging.getLogger(__name__)

_PAGE = 500

#: The order of a full listing. Namespaces first: pods and policies are judged with their namespace's labels.
LISTED: tuple[FeedKind, ...] = (ObjectKind.NAMESPACE, *ClusterPolicyKind, ObjectKind.NETWORK_POLICY, ObjectKind.POD)

_RESOURCES = {kind: (group, version, plural) for kind, group, version, plural in WATCHED}


def list_page(api_client: Any, kind: FeedKind, namespace: str | None = None, token: str | None = None,
              limit: int = _PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a LIST of *kind* (in *namespace*, or cluster-wide): (items as plain dicts, continue token).

    A cluster policy kind the cluster does not serve raises the client's ApiException with status 404."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    networking = client.NetworkingV1Api(api_client)
    response: Any
    kwargs: dict[str, Any] = {"limit": limit, "_preload_content": False, "_request_timeout": 60}
    if token:
        kwargs["_continue"] = token
    if isinstance(kind, ClusterPolicyKind):
        response = client.CustomObjectsApi(api_client).list_cluster_custom_object(*_RESOURCES[kind], **kwargs)
    elif kind is ObjectKind.NAMESPACE:
        response = core.list_namespace(**kwargs)
    elif kind is ObjectKind.POD:
        kwargs["label_selector"] = f"!{RUN_LABEL}"  # the prober's own pods are never workloads
        response = (core.list_namespaced_pod(namespace, **kwargs) if namespace
                    else core.list_pod_for_all_namespaces(**kwargs))
    elif namespace:
        response = networking.list_namespaced_network_policy(namespace, **kwargs)
    else:
        response = networking.list_network_policy_for_all_namespaces(**kwargs)
    page = json.loads(response.data)
    items = page.get("items") or []
    for item in items:
        # The largest part of a listed object and never needed: who wrote which field.
        (item.get("metadata") or {}).pop("managedFields", None)
    return items, (page.get("metadata") or {}).get("continue") or None


def list_objects(api_client: Any, kind: FeedKind, namespace: str | None = None) -> list[dict[str, Any]]:
    """LIST every object of *kind* (in *namespace*, or cluster-wide), page by page, as plain dicts."""
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page, token = list_page(api_client, kind, namespace, token)
        items.extend(page)
        if not token:
            return items


def _list_custom(api_client: Any, group: str, version: str, plural: str) -> list[dict[str, Any]]:
    """Every object of a custom resource, cluster-wide, page by page; a resource not served raises (404)."""
    from kubernetes import client

    api = client.CustomObjectsApi(api_client)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": _PAGE, "_preload_content": False, "_request_timeout": 60}
        if token:
            kwargs["_continue"] = token
        response: Any = api.list_cluster_custom_object(group, version, plural, **kwargs)
        page = json.loads(response.data)
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return items


class Resyncer:
    """Runs reconciles: now (``resync_now``), soon after a request (``request``), and every *interval* seconds."""

    def __init__(self, feed: IndexFeed, api_client: Any, scope: NamespaceScope, interval: float,
                 on_change: Callable[[], None], request_delay: float = 2.0,
                 vendor: VendorFeed | None = None) -> None:
        self._feed = feed
        self._vendor = vendor
        self._api_client = api_client
        self._scope = scope
        self._interval = interval
        self._on_change = on_change
        self._request_delay = request_delay
        self._requested = asyncio.Event()
        self._lock = asyncio.Lock()
        self.completed = 0
        self.last_result = ReconcileResult()
        self.last_completed_at: float | None = None
        #: Whether the cluster serves each cluster policy kind, as the last listing found (None: not known yet).
        self.served: dict[ClusterPolicyKind, bool | None] = dict.fromkeys(ClusterPolicyKind)
        self.vendor_served: dict[str, bool | None] = {kind.label: None for kind, _, _ in WATCHED_VENDOR_KINDS}

    def request(self) -> None:
        """Ask for a reconcile soon (debounced: a re-list delivers many events)."""
        self._requested.set()

    async def resync_now(self) -> ReconcileResult:
        """List every watched kind and reconcile the index with it. Raises on API errors."""
        async with self._lock:
            total = ReconcileResult()
            started_at = time.monotonic()
            for kind in LISTED:
                reconciliation = self._feed.start_reconcile(kind, self._feed.sequence, in_scope=self._scope.watches)
                namespaces, evicted = await self._namespaces_to_list(kind)
                try:
                    for namespace in namespaces:
                        token: str | None = None
                        while True:  # page by page: a big listing is never in memory at once
                            page, token = await asyncio.to_thread(list_page, self._api_client, kind, namespace,
                                                                  token)
                            reconciliation.add(page)
                            del page
                            if not token:
                                break
                except Exception as exc:
                    status = getattr(exc, "status", None)
                    if not isinstance(kind, ClusterPolicyKind) or status not in (403, 404):
                        raise
                    self._note_served(kind, status)
                    if status == 403:
                        continue  # keep what the watch delivered: the listing says nothing
                    # 404: the cluster does not serve the kind, so it has none: the reconcile drops any held
                else:
                    if isinstance(kind, ClusterPolicyKind):
                        self._note_served(kind, 200)
                result = reconciliation.finish()
                total = ReconcileResult(total.added + result.added, total.modified + result.modified,
                                        total.deleted + result.deleted + evicted)
            vendor_changed = await self._list_vendor_policies()
            self.completed += 1
            self.last_result = total
            self.last_completed_at = time.monotonic()
            level = logging.INFO if total.changes else logging.DEBUG
            logger.log(level, "reconciled the index with a full listing in %.2fs: %d added, %d modified, %d "
                       "deleted", self.last_completed_at - started_at, total.added, total.modified, total.deleted)
            if total.changes or vendor_changed:
                self._on_change()
            return total

    async def _list_vendor_policies(self) -> bool:
        """List each Cilium, Calico and Antrea policy kind into the vendor table: a 404 means the cluster does not
        serve it (none), a 403 leaves what the watch delivered. Returns whether the table changed."""
        if self._vendor is None:
            return False
        changed = False
        for kind, version, plural in WATCHED_VENDOR_KINDS:
            started = self._vendor.sequence
            try:
                items = await asyncio.to_thread(_list_custom, self._api_client, kind.group, version, plural)
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status not in (403, 404):
                    raise
                if status == 403:
                    if self.vendor_served[kind.label] is not None or not self.completed:
                        logger.warning("cannot list %s.%s/%s: forbidden; pods its policies select are not known "
                                       "(grant get, list, watch on it)", plural, kind.group, version)
                    self.vendor_served[kind.label] = None
                    continue  # keep what the watch delivered: the listing says nothing
                self.vendor_served[kind.label] = False
                items = []
            else:
                if self.vendor_served[kind.label] is not True:
                    logger.info("%s (%s/%s) is served: the paths of the pods its policies select are out of model",
                                kind.kind, kind.group, version)
                self.vendor_served[kind.label] = True
            changed = self._vendor.reconcile(kind, items, started) or changed
        return changed

    def _note_served(self, kind: ClusterPolicyKind, status: int) -> None:
        """Record (and log when it changes) whether the cluster serves *kind*: 200 yes, 404 no, 403 unknown."""
        group, version, plural = _RESOURCES[kind]
        served = {200: True, 404: False}.get(status)
        before = self.served[kind]
        self.served[kind] = served
        if served is None:
            if before is not None or not self.completed:
                logger.warning("cannot list %s.%s/%s: forbidden; the verdicts may leave out what %ss allow or "
                               "deny (grant get, list, watch on it)", plural, group, version, kind.value)
        elif served != before:
            logger.info("%s (%s/%s) is %s", kind.value, group, version,
                        "served: its policies are in the index" if served else
                        "not served by this cluster: none in the index (watched once its CRD is installed)")

    async def _namespaces_to_list(self, kind: FeedKind) -> tuple[list[str | None], int]:
        """None (one cluster-wide LIST), or the audited namespaces when --namespace or --namespace-selector
        narrows the scope; and how many pods and policies were evicted first, still held from watched namespaces
        that the selector no longer admits, so the reconcile that follows sees only audited namespaces."""
        if kind is ObjectKind.NAMESPACE or isinstance(kind, ClusterPolicyKind) or not self._scope.restricted:
            return [None], 0
        listed = await asyncio.to_thread(list_objects, self._api_client, ObjectKind.NAMESPACE)
        audited: list[str | None] = []
        evicted = 0
        for item in listed:
            meta = item.get("metadata") or {}
            name = str(meta.get("name", ""))
            labels = Namespace(name, labels=Labels(meta.get("labels") or {})).labels  # with the implicit name label
            if self._scope.admits(name, labels):
                audited.append(name)
            elif self._scope.watches(name):
                evicted += self._feed.evict_namespace(name)
        return audited, evicted

    async def run(self, stopped: asyncio.Event) -> None:
        """Reconcile on request and periodically, until *stopped*; API errors are logged and retried."""
        next_periodic = time.monotonic() + self._interval if self._interval > 0 else None
        while not stopped.is_set():
            timeout = None if next_periodic is None else max(0.0, next_periodic - time.monotonic())
            waiter = asyncio.ensure_future(self._requested.wait())
            stopper = asyncio.ensure_future(stopped.wait())
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stopped.is_set():
                return
            if self._requested.is_set():
                await asyncio.sleep(self._request_delay)  # let the re-list that triggered it flow in first
                self._requested.clear()
            try:
                await self.resync_now()
            except Exception as exc:
                logger.warning("full re-list failed, retrying in 5s: %s", exc)
                self._requested.set()
                await asyncio.sleep(5)
                continue
            if self._interval > 0:
                next_periodic = time.monotonic() + self._interval
