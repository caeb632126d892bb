"""The operator process: kopf watches -> IndexFeed -> index; metrics, Events, readiness, HA and the prober around it.

Life cycle of one replica:

* kopf runs the watches (only event-watching handlers: nothing is ever written to watched objects) and peering;
* while this replica is the active one (kopf peering; always when ``--standalone``) an *active period* runs: a full
  listing is reconciled into the index (then ``/readyz`` says ready), then the periodic/on-relist reconciles, the
  debounced recompute of the aggregate metrics and Events, the Event poster and (with ``--probe``) the prober loop;
* when it becomes a standby, the period stops and the index is emptied (a standby exports no index series).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import gc
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import CollectorRegistry

from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.controller.endpoints import MetricsServer
from netpol_auditor.controller.feed import DELETED, FeedKind, IndexFeed
from netpol_auditor.controller.handlers import register_handlers
from netpol_auditor.controller.logs import configure_logging
from netpol_auditor.controller.looplag import LoopLagMonitor
from netpol_auditor.controller.page_cache import PageCache
from netpol_auditor.controller.resync import Resyncer
from netpol_auditor.controller.scope import NamespaceScope
from netpol_auditor.controller.settings import Settings
from netpol_auditor.controller.vendor_feed import VendorFeed
from netpol_auditor.exporters.events import EventPoster, IndexFacts, WarningGate, collect_facts, detect_notices
from netpol_auditor.exporters.html_page import render_html
from netpol_auditor.exporters.live_page import ProbeSnapshot, live_page_data
from netpol_auditor.exporters.metrics import Aggregates, IndexMetrics, choose_ports, compute_aggregates
from netpol_auditor.foreign import selected_pod_counts
from netpol_auditor.index_view import IndexView
from netpol_auditor.model import Namespace, ObjectKind
from netpol_auditor.vendor_policy import VendorKind

__all__ = ["Operator", "connection_info", "load_client_configuration", "run_operator"]

logger = logging.getLogger(__name__)

_current: contextvars.ContextVar[Operator | None] = contextvars.ContextVar("netpol_auditor_operator", default=None)

#: Listed objects further apart than this belong to different listings.
_LISTING_GAP_SECONDS = 2.0

#: kopf logs its peering decisions here; there is no other public signal of "paused in favour of a peer".
#: tests/operator/test_peering_signals.py checks these against the installed kopf.
_PEERING_LOGGER = "kopf._core.engines.peering"
_PAUSE_PREFIXES = ("Pausing operations", "Pausing all operators")
_RESUME_PREFIX = "Resuming operations"


def settle_memory() -> None:
    """After a big allocation burst (the initial listing, the first count): collect, hand freed heap back to the
    OS, and freeze what survives out of the cyclic collector's scans -- the index is large and long-lived, and
    full collections over it are the operator's longest pauses."""
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def load_client_configuration(settings: Settings) -> Any:
    """A kubernetes-client Configuration: --kubeconfig/--context, else in-cluster, else the default kubeconfig."""
    from kubernetes import client
    from kubernetes import config as kube_config

    config: Any = kube_config  # its loaders are untyped
    configuration = client.Configuration()
    if settings.kubeconfig or settings.context:
        config.load_kube_config(config_file=settings.kubeconfig, context=settings.context,
                                client_configuration=configuration)
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    return configuration


def connection_info(settings: Settings) -> kopf.ConnectionInfo:
    """kopf credentials from the same source as the kubernetes client (re-read on every login: tokens rotate)."""
    cfg = load_client_configuration(settings)
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme,
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


class _PeeringTracker(logging.Handler):
    """Follows kopf's peering decisions for the operator running in the current context."""

    def __init__(self, operator: Operator) -> None:
        super().__init__(logging.INFO)
        self._operator = operator

    def emit(self, record: logging.LogRecord) -> None:
        if _current.get() is not self._operator:
            return  # another operator in this process (tests run several)
        message = record.getMessage()
        if message.startswith(_PAUSE_PREFIXES):
            self._operator.set_active(False)
        elif message.startswith(_RESUME_PREFIX):
            self._operator.set_active(True)


class Operator:
    """One operator replica. ``await run(stop)`` until *stop* is set (or SIGTERM/SIGINT in the main thread)."""

    def __init__(self, settings: Settings, api_client: Any | None = None) -> None:
        from kubernetes import client

        self.settings = settings
        self.api_client = api_client if api_client is not None else client.ApiClient(
            load_client_configuration(settings))
        self.registry = CollectorRegistry()
        self.metrics = IndexMetrics(self.registry)
        self.feed = IndexFeed(observer=self.metrics.observe_apply)
        self.vendor = VendorFeed()  # Cilium, Calico and Antrea policies: not evaluated, their pods out of model
        self.poster = EventPoster(self.api_client, per_minute=settings.events_per_minute,
                                  dedup_seconds=settings.events_dedup_seconds)
        self.scope = NamespaceScope(settings.namespaces, settings.namespace_selector)
        self.resyncer = Resyncer(self.feed, self.api_client, self.scope, settings.resync_interval_seconds,
                                 on_change=self._changed, vendor=self.vendor)
        self.prober: Any = None  # the running ProbeLoop, while there is one (the page reads its results)
        self.page = PageCache(self._page_key, self._page_snapshot, settings.reachability_page_refresh_seconds) if (
            settings.reachability_page_enabled) else None
        self.server = MetricsServer(self.registry, self.readiness, settings.metrics_address, settings.metrics_port,
                                    page=self.reachability_page if self.page is not None else None)
        self.loop_lag = LoopLagMonitor(self.registry)
        self.kopf_registry = self._kopf_registry()
        self.active = settings.standalone  # with peering, kopf starts paused until the peering says otherwise
        self.synced = False
        self.warning_gate = WarningGate(settings.events_grace_seconds)
        self._gate_timer: asyncio.TimerHandle | None = None
        self.recomputed_revision = -1
        self.recomputes = 0
        self.last_recompute_seconds = 0.0
        self._facts: IndexFacts | None = None
        self._last_listed: dict[FeedKind, float] = {}  # when kopf last handed over a listed object, per kind
        self._watched: dict[FeedKind, bool] = {}  # whether the watch delivered an event since the last listing
        self._dirty = asyncio.Event()
        self._activity = asyncio.Event()
        self._period_stop: asyncio.Event | None = None
        self._period_tasks: list[asyncio.Task[None]] = []
        self.ready_event = asyncio.Event()  # set once the first active period has synced (tests wait on it)

    # -- kopf ----------------------------------------------------------------------------------------------------

    def _kopf_registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        register_handlers(registry, self)
        settings = self.settings

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            return connection_info(settings)

        @kopf.on.probe(registry=registry, id="index")
        async def probe(**_: Any) -> dict[str, Any]:  # async: on the loop that owns the index, not in a thread
            stats = self.feed.index.stats()
            return {"active": self.active, "synced": self.synced, "revision": self.feed.index.revision,
                    "pods": stats.pods, "namespaces": stats.namespaces, "policies": stats.policies}

        return registry

    def kopf_settings(self) -> kopf.OperatorSettings:
        settings = kopf.OperatorSettings()
        settings.posting.enabled = False  # our Events are ours (exporters.events); kopf's would go on user objects
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.watching.chunk_size = 500  # kopf's listings page by page too: a lower memory peak at start-up
        settings.networking.request_timeout = 60
        settings.peering.lifetime = self.settings.peering_lifetime_seconds
        return settings

    def on_watch_event(self, kind: FeedKind, event_type: str | None, body: Any) -> None:
        """Apply one kopf watch event to the index (called on the event loop)."""
        if not self.active:
            # A standby keeps no index (and exports none): kopf can still hand over events around a peering
            # change, and the active period starts with a full listing anyway.
            return
        # Cluster policies belong to no namespace: no namespace scope keeps them out.
        by_labels = self.scope.by_labels and not isinstance(kind, ClusterPolicyKind)
        change = self._apply_in_scope(kind, event_type, body) if by_labels else (
            self.feed.apply_event(kind, event_type, body))
        if event_type is None:
            # A listed object. kopf re-lists after a 410 Gone or a restart of the watch: objects deleted meanwhile
            # are not in the listing and no DELETED will come for them, so reconcile once the listing has flowed
            # in. kopf's initial listing is not a re-list: a re-list is a burst of listed objects that starts
            # after the watch delivered events, or after a pause of listed objects.
            now = time.monotonic()
            last = self._last_listed.get(kind)
            relist = self._watched.get(kind, False) or (last is not None and now - last > _LISTING_GAP_SECONDS)
            self._last_listed[kind] = now
            if relist and self.synced:
                self._watched[kind] = False
                self.resyncer.request()
        else:
            self._watched[kind] = True
        if change is not None:
            self._changed()
        else:  # nothing in the index changed, but a rejected object may have come or gone
            self.metrics.set_object_counts(self.feed.counts(), self.feed.skipped())

    def on_vendor_event(self, kind: VendorKind, event_type: str | None, body: Any) -> None:
        """Apply one kopf watch event of a Cilium, Calico or Antrea policy to the vendor table."""
        if self.active and self.vendor.apply_event(kind, event_type, body):
            self._changed()

    def _apply_in_scope(self, kind: FeedKind, event_type: str | None, body: Any) -> str | None:
        """Apply an event under ``--namespace-selector``: pods and policies of namespaces it does not admit stay
        out of the index; a namespace relabelled out of scope takes its pods and policies with it, one relabelled
        into scope has them listed (a reconcile)."""
        meta = body.get("metadata") or {}
        if kind is not ObjectKind.NAMESPACE:
            namespace = meta.get("namespace") or "default"
            if self.scope.admits(namespace, self.feed.index.namespace_labels(namespace)):
                return self.feed.apply_event(kind, event_type, body)
            return self.feed.evict(kind, namespace, str(meta.get("name", "")))
        name = str(meta.get("name", ""))
        before = self.scope.admits(name, self.feed.index.namespace_labels(name))
        change = self.feed.apply_event(kind, event_type, body)
        after = self.scope.admits(name, self.feed.index.namespace_labels(name))
        if before and not after:
            if self.feed.evict_namespace(name):
                change = change or DELETED
            logger.info("namespace %s left the audited scope (--namespace-selector %s)", name, self.scope.selector)
        elif after and not before and event_type is not None:
            logger.info("namespace %s entered the audited scope (--namespace-selector %s): listing its pods and "
                        "policies", name, self.scope.selector)
            self.resyncer.request()
        return change

    def _changed(self) -> None:
        self.metrics.set_object_counts(self.feed.counts(), self.feed.skipped())
        self.metrics.set_foreign_policies(self.vendor.counts())
        self._dirty.set()

    # -- activity (HA) -------------------------------------------------------------------------------------------

    def set_active(self, active: bool) -> None:
        if active != self.active:
            logger.info("this replica is now %s", "active" if active else "a standby")
            self.active = active
            self._activity.set()

    def readiness(self) -> tuple[bool, str]:
        if self.active and self.synced:
            return True, "ready"
        if self.active:
            return False, "starting: the initial listing is not in the index yet"
        return True, f"standby: another replica is active (peering {self.settings.peering_name!r})"

    async def _supervise(self) -> None:
        waited = 0.0
        while True:
            if self.active and self._period_stop is None:
                await self._start_period()
            elif not self.active and self._period_stop is not None:
                await self._stop_period()
            try:
                await asyncio.wait_for(self._activity.wait(), timeout=30)
                self._activity.clear()
            except TimeoutError:
                waited += 30
                if not self.active and waited == 30:
                    logger.info("standby for 30s: waiting for the active replica through kopf peering %r (its "
                                "CRD and object must exist; use --standalone for a single replica)",
                                self.settings.peering_name)

    async def _start_period(self) -> None:
        stop = asyncio.Event()
        self._period_stop = stop
        self._period_tasks = [asyncio.create_task(self._active_period(stop), name="active period")]

    async def _stop_period(self) -> None:
        assert self._period_stop is not None
        self._period_stop.set()
        tasks, self._period_tasks = self._period_tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._period_stop = None
        self.synced = False
        self._facts = None
        self.warning_gate = WarningGate(self.settings.events_grace_seconds)
        self.feed.clear()
        self.vendor.clear()
        self.metrics.set_foreign_policies(self.vendor.counts(), {})
        self.metrics.publish(None)
        self.metrics.set_object_counts(self.feed.counts(), self.feed.skipped())

    async def _active_period(self, stop: asyncio.Event) -> None:
        delay = 1.0
        while not stop.is_set():
            try:
                await self.resyncer.resync_now()
                break
            except Exception as exc:
                logger.warning("initial listing failed, retrying in %.0fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        settle_memory()
        self.synced = True
        self.ready_event.set()
        stats = self.feed.index.stats()
        logger.info("index ready: %d pods, %d namespaces, %d policies, %d cluster policies, %d equivalence classes",
                    stats.pods, stats.namespaces, stats.policies, stats.cluster_policies, stats.classes)
        self.metrics.set_object_counts(self.feed.counts(), self.feed.skipped())
        self._dirty.set()  # the first recompute of the aggregates runs in the recompute loop
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("resync", lambda: self.resyncer.run(stop)),
            ("recompute", lambda: self._recompute_loop(stop)),
        ]
        if self.settings.events_enabled:
            loops.append(("events", lambda: self.poster.run(stop)))
        if self.settings.probe_enabled:
            loops.append(("prober", lambda: self._run_prober(stop)))
        await asyncio.gather(*(self._guarded(name, factory, stop) for name, factory in loops))

    async def _guarded(self, name: str, factory: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        """Run one loop of the active period; restart it after a crash (never take the operator down)."""
        while not stop.is_set():
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the %s loop failed; restarting it in 5s", name)
                await asyncio.sleep(5)

    async def _run_prober(self, stop: asyncio.Event) -> None:
        try:
            from netpol_auditor.prober.loop import ProbeLoop
        except ImportError as exc:
            logger.error("--probe is set but the prober is unavailable (%s); running without probes", exc)
            return
        # One registry and one Event poster (rate limit, dedup) for the index and the prober.
        loop = ProbeLoop(self.feed.index, self.settings, self.api_client, registry=self.registry, events=self.poster,
                         foreign=self.vendor.policies)
        self.prober = loop
        try:
            await loop.run(stop)
        finally:
            self.prober = None

    # -- the reachability page -----------------------------------------------------------------------------------

    async def reachability_page(self) -> tuple[int, str]:
        """(200, the page) on the active, synced replica; (503, why not) otherwise."""
        ready, reason = self.readiness()
        if not (self.active and self.synced) or self.page is None:
            return 503, reason if not ready else f"{reason}: the active replica serves the reachability page"
        return 200, await self.page.get()

    def _page_key(self) -> Hashable:
        prober = self.prober
        return (self.feed.index.revision, id(prober), getattr(prober, "published", None))

    def _page_snapshot(self) -> Callable[[], str]:
        """Copies of the index and the prober's results (here, on the loop); the rendering runs in a thread."""
        view = self.feed.index.view()
        probes = ProbeSnapshot.of(self.prober) if self.prober is not None else None
        settings = self.settings
        vendor_policies = self.vendor.policies()

        def render() -> str:
            ports, _ = choose_ports(view, settings.ports, settings.max_ports)
            generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            data = live_page_data(view, ports, probes, max_workloads=settings.reachability_page_max_workloads,
                                  generated=f"{generated}, index revision {view.revision}",
                                  vendor_policies=vendor_policies)
            return render_html(data)

        return render

    # -- aggregates and Events -----------------------------------------------------------------------------------

    async def _recompute_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            dirty = asyncio.ensure_future(self._dirty.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({dirty, stopper}, return_when=asyncio.FIRST_COMPLETED)
            dirty.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            # Debounce: coalesce a burst of events. On a cluster where one recompute takes long (1000s of namespaces),
            # wait at least that long, so the loop never spends more than half of its time on it.
            await asyncio.sleep(max(self.settings.recompute_delay_seconds, self.last_recompute_seconds))
            await self._recompute()

    def _aggregate(self, view: IndexView) -> tuple[int, Aggregates, IndexFacts | None]:
        """The aggregates (and Event facts) of a view, with the number of ports pods declare (pure: a worker
        thread runs it)."""
        ports, declared = choose_ports(view, self.settings.ports, self.settings.max_ports)
        aggregates = compute_aggregates(view, ports, self.settings.max_path_series)
        facts = collect_facts(view, aggregates) if self.settings.events_enabled else None
        return declared, aggregates, facts

    async def _recompute(self) -> None:
        self._dirty.clear()
        started = time.perf_counter()
        # computed on a copy in a worker thread: at 50k pods the aggregates and facts take over a second of CPU,
        # which the event loop (watch handlers, /metrics, /healthz) must not wait for
        view = self.feed.index.view()
        revision = view.revision
        declared, aggregates, facts = await asyncio.to_thread(self._aggregate, view)
        self.metrics.publish(aggregates, declared, self.settings.max_ports if not self.settings.ports else 0)
        policies = self.vendor.policies()
        labels = {ns.name: ns.labels for ns in view.namespace_objects}
        selected = await asyncio.to_thread(selected_pod_counts, policies, view.pods(),
                                           lambda name: labels.get(name) or Namespace(name).labels)
        self.metrics.set_foreign_policies(self.vendor.counts(), selected)
        if facts is not None:
            self.poster.submit(self.warning_gate.filter(detect_notices(self._facts, facts), facts))
            self._facts = facts
            due = self.warning_gate.next_due()
            if self._gate_timer is not None:
                self._gate_timer.cancel()
                self._gate_timer = None
            if due is not None:  # look again when a held warning is due, even if nothing changes meanwhile
                self._gate_timer = asyncio.get_running_loop().call_later(due + 0.05, self._dirty.set)
        self.recomputed_revision = revision
        self.recomputes += 1
        if self.recomputes == 1:
            settle_memory()
        self.last_recompute_seconds = time.perf_counter() - started
        logger.debug("recomputed aggregates for index revision %d in %.3fs (%d path series)", aggregates.revision,
                     self.last_recompute_seconds, 2 * len(aggregates.paths))

    # -- running -------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        _current.set(self)
        tracker = _PeeringTracker(self)
        peering_logger = logging.getLogger(_PEERING_LOGGER)
        peering_logger.addHandler(tracker)
        if peering_logger.getEffectiveLevel() > logging.INFO:
            peering_logger.setLevel(logging.INFO)
        port = await self.server.start()
        logger.info("serving /metrics and /readyz%s on %s:%d", " and /reachability" if self.page else "",
                    self.settings.metrics_address, port)
        supervisor = asyncio.create_task(self._supervise(), name="netpol-auditor supervisor")
        lag_stop = asyncio.Event()
        lag_monitor = asyncio.create_task(self.loop_lag.run(lag_stop), name="event loop lag")
        priority = self.settings.priority * 1_000_000 + random.randrange(1, 1_000_000)
        try:
            await kopf.operator(
                registry=self.kopf_registry,
                settings=self.kopf_settings(),
                clusterwide=self.settings.clusterwide,
                namespaces=list(self.settings.namespaces),
                liveness_endpoint=self.settings.liveness_endpoint or None,
                standalone=self.settings.standalone,
                peering_name=None if self.settings.standalone else self.settings.peering_name,
                priority=priority,
                stop_flag=stop,
                memo=kopf.Memo(),
            )
        finally:
            lag_stop.set()
            supervisor.cancel()
            await asyncio.gather(supervisor, lag_monitor, return_exceptions=True)
            if self._period_stop is not None:
                await self._stop_period()
            await self.server.stop()
            peering_logger.removeHandler(tracker)


def run_operator(settings: Settings) -> int:
    """Run the operator in this process until SIGTERM/SIGINT. Returns the exit code."""
    configure_logging(settings.log_format, settings.log_level)
    logger.info("netpol-auditor starting: %s", settings.to_dict())
    if not settings.standalone and any(c in p for p in settings.namespaces for c in "*?[!"):
        # kopf holds every watch paused until it has seen the KopfPeering of each namespace it serves.
        logger.warning("--namespace %s is a pattern and peering is on: kopf stays paused until every matching "
                       "namespace has a KopfPeering %r. Prefer --namespace-selector (cluster-wide peering), or "
                       "--standalone with one replica.", ",".join(settings.namespaces), settings.peering_name)

    async def main() -> None:
        await Operator(settings).run()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    return 0
