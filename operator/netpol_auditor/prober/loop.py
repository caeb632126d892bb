"""The probe loop: plan a round, start responders and probe pods, read their results, judge, report, clean up.

One run = one ProbeRun owner object (cluster-scoped); every pod of the run is its controlled dependent (without the
ProbeRun CRD, the pod's Namespace is the controller and the pods are deleted by label). On start the loop sweeps
leftovers of earlier runs of the same install; on stop it deletes its ProbeRun and pods. Rounds repeat until a cycle
has covered every path; a cycle starts every ``interval_seconds`` (or at once, when the previous one took longer),
and between cycles the loop wakes early when retries are due or the index changed.

The planned paths are kept up to date incrementally (prober/coverage.py) in a worker thread on a snapshot of the
index, so the event loop is never held by planning; the run's pods, nodes, Services and PodDisruptionBudgets are
read from watch-fed caches (prober/listwatch.py), so a round's API calls grow with its probes, not with the cluster.

Nothing that happens to one probe pod stops the loop: a refused or broken pod makes its paths inconclusive with a
reason (prober/failures.py) and backs off its (probe group, node), and the cycle completes without it. An error in a
round (the API server restarting, throttling) is logged, counted in ``netpol_auditor_probe_errors_total{stage}``
and followed by the next round after an exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from netpol_auditor.bulk import collector_paused
from netpol_auditor.cluster_policy import ClusterPolicyKind
from netpol_auditor.engine import PolicyKey, Verdict
from netpol_auditor.exporters.events import EventPoster, InvolvedObject, Notice
from netpol_auditor.exporters.policy_reports import PolicyReportWriter, build_reports, findings
from netpol_auditor.exporters.probe_metrics import ProbeMetrics, ProbeState, count_mismatches, mismatch_labels
from netpol_auditor.foreign import foreign_guard
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import Direction, Namespace, PodRef, Protocol
from netpol_auditor.prober.compare import Comparator, Mismatch, MismatchKind, Outcome, is_cluster_policy_key
from netpol_auditor.prober.coverage import PlanDelta, PlanInputs
from netpol_auditor.prober.failures import (
    FIXES,
    Backoff,
    classify_api_error,
    classify_pod,
    retry_after_seconds,
)
from netpol_auditor.prober.listwatch import ListWatch
from netpol_auditor.prober.placement import node_unavailable
from netpol_auditor.prober.plan import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PathKey,
    PlanBudget,
    PlannedPath,
    ProbePlanner,
    ProbePodPlan,
    ResponderPlan,
    Round,
    snapshot,
)
from netpol_auditor.prober.podspec import (
    DEFAULT_IMAGE,
    DEFAULT_NODE_SELECTOR,
    DEFAULT_RESOURCES,
    PROBE_RUN_GROUP,
    PROBE_RUN_PLURAL,
    PROBE_RUN_VERSION,
    RUN_LABEL,
    PodOptions,
    RunOwner,
    asked_containers,
    clone_conflict,
    new_run_id,
    probe_pod,
    probe_run_object,
    responder_container,
    responder_pod,
)
from netpol_auditor.prober.script import ProbeResult, ScriptTarget, parse_report, probe_script
from netpol_auditor.prober.sweep import delete_run, sweep_leftovers
from netpol_auditor.vendor_policy import VendorPolicy

__all__ = ["ProbeLoop", "ProbeOptions", "RoundResult"]

logger = logging.getLogger(__name__)

#: Inconclusive reasons that may clear up on a later round of the same cycle (the rest settle the path for it).
TRANSIENT_REASONS = frozenset({"api_error", "throttled", "pod_timeout", "no_result"})
#: A throttled (429) request is retried this often before it counts as a failure.
THROTTLE_RETRIES = 5
#: The incrementally kept plan is compared with a full rebuild at the end of a cycle at most this often, seconds.
SELF_CHECK_SECONDS = 3600.0
#: Backoff of the whole loop after a failed round: first wait and cap, seconds.
ROUND_BACKOFF = (1.0, 60.0)
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_POD_NAME = re.compile(r'"npa-[a-z]+-[0-9a-f]+-\d+"')


def _operator_namespace(configured: str) -> str:
    if configured:
        return configured
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return ""


@dataclass(frozen=True)
class ProbeOptions:
    """The prober's knobs, read from Settings (fields absent there take these defaults)."""

    interval_seconds: float = 30.0
    image: str = DEFAULT_IMAGE
    max_pods: int = 10
    pair_groups: int = 100
    targets_per_pod: int = 40
    timeout_seconds: int = 2
    parallelism: int = 8
    settle_seconds: float = 5.0
    retry_window_seconds: float = 10.0
    late_seconds: float = 20.0
    max_attempts: int = 10
    pod_start_timeout_seconds: float = 60.0
    placements: str = "balanced"
    namespaces: tuple[str, ...] = ()
    ports: tuple[Any, ...] = ()
    max_ports: int = 8
    round_pause_seconds: float = 1.0
    start_delay_seconds: float = 2.0
    events_enabled: bool = True
    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 600.0
    system_namespaces: bool = False
    operator_namespace: str = ""
    pod: PodOptions = field(default_factory=PodOptions)

    @classmethod
    def from_settings(cls, settings: Any) -> ProbeOptions:
        def get(name: str, default: Any) -> Any:
            return getattr(settings, name, default)

        d = cls()
        pod = PodOptions(
            image=get("probe_image", d.image),
            node_selector=get("probe_node_selector", DEFAULT_NODE_SELECTOR),
            tolerations=tuple(get("probe_tolerations", ())),
            labels=get("probe_labels", {}),
            annotations=get("probe_annotations", {}),
            image_pull_secrets=tuple(get("probe_image_pull_secrets", ())),
            priority_class_name=get("probe_priority_class_name", ""),
            resources=get("probe_resources", DEFAULT_RESOURCES),
            mesh_opt_out=get("probe_mesh_opt_out", True),
            instance=get("probe_instance", "netpol-auditor"),
            install_id=get("probe_install_id", ""),
        )
        return cls(
            interval_seconds=get("probe_interval_seconds", d.interval_seconds),
            image=pod.image,
            max_pods=get("probe_max_pods", d.max_pods),
            pair_groups=get("probe_pair_groups", d.pair_groups),
            targets_per_pod=get("probe_targets_per_pod", d.targets_per_pod),
            timeout_seconds=int(get("probe_timeout_seconds", d.timeout_seconds)),
            settle_seconds=get("probe_settle_seconds", d.settle_seconds),
            retry_window_seconds=get("probe_retry_seconds", d.retry_window_seconds),
            late_seconds=get("probe_late_seconds", d.late_seconds),
            start_delay_seconds=get("probe_start_delay_seconds", d.start_delay_seconds),
            pod_start_timeout_seconds=get("probe_pod_start_timeout_seconds", d.pod_start_timeout_seconds),
            placements=get("probe_placements", d.placements),
            # Not --namespace's kopf patterns: the index holds only the audited namespaces' pods anyway.
            namespaces=tuple(get("probe_namespaces", ()) or ()),
            ports=tuple(get("probe_ports", ()) or get("ports", ()) or ()),
            max_ports=get("max_ports", d.max_ports) or d.max_ports,
            events_enabled=get("events_enabled", True),
            backoff_seconds=get("probe_backoff_seconds", d.backoff_seconds),
            backoff_max_seconds=get("probe_backoff_max_seconds", d.backoff_max_seconds),
            system_namespaces=get("probe_system_namespaces", False),
            operator_namespace=_operator_namespace(get("operator_namespace", "")),
            pod=pod,
        )

    def probe_namespaces(self) -> tuple[str, ...]:
        """The namespace patterns probes may run in: kube-system and the operator's own namespace are left out
        unless asked for (a probe pod there could meet the cluster's most sensitive admission rules)."""
        if self.system_namespaces:
            return self.namespaces
        excluded = ["!kube-system"] + ([f"!{self.operator_namespace}"] if self.operator_namespace else [])
        return (*self.namespaces, *excluded)

    def budget(self) -> PlanBudget:
        return PlanBudget(
            max_pods=self.max_pods,
            targets_per_pod=self.targets_per_pod,
            max_ports=self.max_ports,
            ports=self.ports,
            namespaces=self.probe_namespaces(),
            placements=self.placements,
            settle_seconds=self.settle_seconds,
            max_pair_groups=self.pair_groups,
        )


@dataclass
class _PodRun:
    """One created pod of the current round, as last seen."""

    name: str
    namespace: str
    created: float
    plan: ProbePodPlan | ResponderPlan
    asked: frozenset[str]
    ip: str = ""
    phase: str = "Pending"
    message: str | None = None
    finished: float | None = None
    ready: frozenset[str] = frozenset()  # containers that passed their readiness probe (now or once)
    terminated: dict[str, str] = field(default_factory=dict)  # container -> termination message
    failure: tuple[str, str] | None = None  # (reason, message): this pod can never do its job

    @property
    def key(self) -> tuple[str, str]:
        return (self.plan.group.id, self.plan.node)


@dataclass
class RoundResult:
    judged: int = 0
    mismatches: int = 0
    retries: int = 0
    inconclusive: int = 0
    outcomes: list[tuple[PlannedPath, Outcome, str]] = field(default_factory=list)


class ProbeLoop:
    """Runs probe cycles against the API server until stopped."""

    def __init__(
        self,
        index: ReachabilityIndex,
        settings: Any,
        api: Any,
        registry: CollectorRegistry | None = None,
        events: EventPoster | None = None,
        clock: Callable[[], float] = time.time,
        foreign: Callable[[], Sequence[VendorPolicy]] = tuple,
    ) -> None:
        self.index = index
        self.foreign = foreign  # the vendor (Cilium, Calico, Antrea) policies the cluster holds now
        self.options = ProbeOptions.from_settings(settings)
        self.api = api
        # typed as Any: the client's generated models make every field Optional
        self.core: Any = client.CoreV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.clock = clock
        self.planner = ProbePlanner(self.options.budget())
        self.comparator = Comparator(
            retry_window_seconds=self.options.retry_window_seconds,
            max_attempts=self.options.max_attempts,
            settle_seconds=self.options.settle_seconds,
            late_seconds=self.options.late_seconds,
        )
        self._waits: dict[PathKey, float] = {}  # paths whose next probe waits longer before connecting
        #: probe pod name -> (how long it waits before connecting, how long its script may run at most)
        self._pod_timing: dict[str, tuple[float, float]] = {}
        self.metrics = ProbeMetrics.for_registry(registry if registry is not None else CollectorRegistry())
        self._own_events = events is None and self.options.events_enabled
        self.events = events
        if self._own_events:
            self.events = EventPoster(
                api,
                per_minute=getattr(settings, "events_per_minute", 30),
                dedup_seconds=getattr(settings, "events_dedup_seconds", 600.0),
            )
        self.reports = PolicyReportWriter(api) if getattr(settings, "policy_reports", False) else None
        self.run_id = new_run_id()
        self.owner: RunOwner | None = None
        self.rounds = 0
        self._seq = 0
        self._announced: dict[tuple[str, str, str, str], Mismatch] = {}  # class-pair mismatch -> example
        self.last_round: RoundResult | None = None
        self._conflicts: dict[str, str] = {}  # probe group id -> why it is not cloned this round
        self._unlisted: set[str] = set()
        self.backoff = Backoff(self.options.backoff_seconds, self.options.backoff_max_seconds)
        self._refused: dict[tuple[str, str], str] = {}  # (group, node) -> reason, this round
        self._path_reasons: dict[PathKey, str] = {}  # paths of this round that could not be probed, and why
        self._namespace_uids: dict[str, str] = {}
        self._stage = "start"
        self._stopped = asyncio.Event()  # the run's stop flag: waits inside a round end early on it
        self.round_failures = 0
        self._self_checked_at = self.clock()
        self.last_cycle_completed: float | None = None
        # the latest prediction and result per path (what `explain`-style tooling and tests read)
        self.observations: dict[PathKey, tuple[Verdict, ProbeResult | None, Outcome]] = {}
        # the latest inconclusive reason per path (tests and the page read it)
        self.inconclusive: dict[PathKey, str] = {}
        self.published = 0  # bumped whenever results are published: the page renders again when it changes
        # watch-fed caches: this run's pods, and what a clone could disturb (see _check_conflicts)
        self.pod_watch = ListWatch("probe pods", self.core.list_pod_for_all_namespaces, api,
                                   label_selector=f"{RUN_LABEL}={self.run_id}",
                                   on_error=lambda _: self._count_error("wait"))
        policy_api: Any = client.PolicyV1Api(api)
        self.service_watch = ListWatch("services", self.core.list_service_for_all_namespaces, api,
                                       on_error=lambda _: self._count_error("conflicts"))
        self.node_watch = ListWatch("nodes", self.core.list_node, api, on_error=lambda _: self._count_error("plan"))
        self.pdb_watch = ListWatch("poddisruptionbudgets", policy_api.list_pod_disruption_budget_for_all_namespaces,
                                   api, on_error=lambda _: self._count_error("conflicts"))

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Sweep leftovers of this install's earlier runs and create this run's ProbeRun (owner-less without the
        CRD or the right to create one)."""
        self._stage = "sweep"
        identity = self.options.pod.identity()
        try:
            await asyncio.to_thread(sweep_leftovers, self.api, None, identity)
        except ApiException as exc:
            self._count_error("sweep")
            logger.warning("cannot sweep leftover probe pods (%s %s); going on", exc.status, exc.reason)
        self._stage = "start"
        body = probe_run_object(self.run_id, os.environ.get("HOSTNAME", "netpol-auditor"), identity)
        try:
            created = await asyncio.to_thread(
                call_api, self.custom.create_cluster_custom_object, PROBE_RUN_GROUP, PROBE_RUN_VERSION,
                PROBE_RUN_PLURAL, body,
            )
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
            self.owner = RunOwner("", "", self.run_id)
            what = "the ProbeRun CRD is not installed" if exc.status == 404 else "creating ProbeRuns is forbidden"
            logger.warning("%s: probe pods of run %s are owned by their Namespace and deleted by label", what,
                           self.run_id)
            return
        meta = created["metadata"]
        self.owner = RunOwner(meta["name"], meta["uid"], self.run_id)
        logger.info("probe run %s started (owner ProbeRun %s)", self.run_id, meta["name"])

    async def stop(self) -> None:
        if self.owner is not None:
            try:
                await asyncio.to_thread(delete_run, self.api, self.owner.name, self.run_id)
                logger.info("probe run %s stopped; its pods are deleted", self.run_id)
            except Exception as exc:
                self._count_error("cleanup")
                logger.warning("probe run %s stopped, but deleting its pods failed (%s); the next start sweeps "
                               "them", self.run_id, exc)
        self.metrics.pods_running.set(0)

    async def run(self, stopped: asyncio.Event) -> None:
        self._stopped = stopped
        for cache in self._caches():
            cache.start()
        poster_task = None
        if self._own_events and self.events is not None:
            poster_task = asyncio.ensure_future(self.events.run(stopped))
        reports_task = asyncio.ensure_future(self.reports.run(stopped)) if self.reports is not None else None
        try:
            while not stopped.is_set() and self.owner is None:
                await self._guard(self.start(), stopped)
            next_cycle = self.clock()
            while not stopped.is_set():
                result: Any = await self._guard(self.run_round(new_cycle=self.clock() >= next_cycle), stopped)
                if result is False:
                    continue  # the round failed; _guard waited
                if self.planner.cycle_done():
                    await self._self_check()
                    self.planner.finish_cycle()
                    self.last_cycle_completed = self.clock()
                    # cycles start every interval (back to back when a cycle takes longer): a fault is found
                    # within an interval and a path's confirmation, however long the cycle before it was
                    started = self.planner.cycle_started_at
                    next_cycle = (self.clock() if started is None else started) + self.options.interval_seconds
                    self._publish()
                    states = self.planner.path_states()
                    logger.info("probe cycle %d complete: coverage %.2f (%d paths judged, %d inconclusive), %d "
                                "current mismatches", self.planner.cycles_completed, self.planner.coverage(),
                                sum(n for (s, _), n in states.items() if s == "judged"),
                                sum(n for (s, _), n in states.items() if s == "inconclusive"),
                                len(self.comparator.mismatches))
                if result is None:
                    # nothing due: wait for the next cycle, a retry or a change, and at least a pause (a cycle whose
                    # paths are all too fresh, or that cannot place any pod, would otherwise spin)
                    await self._wait_for_work(stopped, max(next_cycle, self.clock() + self.options.round_pause_seconds))
                else:
                    await _sleep_or_stop(stopped, self.options.round_pause_seconds)
        finally:
            for cache in self._caches():
                cache.stop()
            # this replica reports nothing once it stops probing (a standby must not export stale mismatches)
            self.metrics.clear()
            await asyncio.shield(self.stop())
            if poster_task is not None:
                poster_task.cancel()
            if reports_task is not None:
                reports_task.cancel()

    async def _guard(self, step: Any, stopped: asyncio.Event) -> Any:
        """Await one step; on failure log and count it, back off (honouring a 429's Retry-After) and return False.
        The loop never dies of a round."""
        try:
            result = await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.round_failures += 1
            stage = self._stage
            self._count_error(stage)
            delay = min(ROUND_BACKOFF[0] * 2 ** (self.round_failures - 1), ROUND_BACKOFF[1])
            if isinstance(exc, ApiException):
                delay = max(delay, retry_after_seconds(exc.headers) or 0.0)
                what = f"{exc.status} {exc.reason}"
            else:
                what = f"{type(exc).__name__}: {exc}"
            log = logger.warning if self.round_failures <= 3 else logger.debug
            log("probe %s failed (%s); retrying in %.0fs (failure %d in a row)", stage, what, delay,
                self.round_failures, exc_info=self.round_failures == 1 and not isinstance(exc, ApiException))
            await _sleep_or_stop(stopped, delay)
            return False
        self.round_failures = 0
        return result

    def _count_error(self, stage: str) -> None:
        self.metrics.errors.labels(stage).inc()

    async def _update_plan(self) -> bool:
        """Bring the planned paths up to the index, in a worker thread on a snapshot taken here (the event loop
        keeps serving watch events, metrics and probes meanwhile); True when a path is new or predicted otherwise.
        Our own probe pods never enter the index, so they change nothing."""
        inputs = snapshot(self.index, self.planner.unavailable_nodes)
        started = time.process_time()
        first = self.planner.paths_plan.inputs is None
        delta, cpu = await asyncio.to_thread(update_plan, self.planner, inputs, self.clock(), first)
        self.metrics.plan_duration.observe(cpu)
        self.comparator.restart(delta.changed | delta.removed)
        for key in delta.changed | delta.removed:
            self._waits.pop(key, None)
        if delta:
            logger.debug("planned paths updated to revision %d: %d changed, %d gone (%.3fs CPU, %d paths)",
                         inputs.revision, len(delta.changed), len(delta.removed), time.process_time() - started,
                         len(self.planner.paths_plan.paths))
        return bool(delta.changed)

    def _caches(self) -> tuple[ListWatch, ...]:
        return (self.pod_watch, self.node_watch, self.service_watch, self.pdb_watch)

    async def _self_check(self) -> None:
        """At most every `SELF_CHECK_SECONDS`, when a cycle ends: rebuild the plan from scratch (worker thread) and
        compare it with the incrementally kept one; a difference is a bug, logged and counted, and the rebuild
        replaces the kept plan."""
        now = self.clock()
        if now - self._self_checked_at < SELF_CHECK_SECONDS:
            return
        self._self_checked_at = now
        if not await asyncio.to_thread(self.planner.self_check, now):
            self.metrics.plan_self_check_failures.inc()
            logger.error("the incrementally kept probe plan differed from a full rebuild; the rebuild replaces it "
                         "(please report this, with the operator's version)")

    async def _wait_for_work(self, stopped: asyncio.Event, next_cycle: float) -> None:
        """Sleep until a cycle is due, a retry or a changed path waits, or the workload changes."""
        while not stopped.is_set() and self.clock() < next_cycle:
            await _sleep_or_stop(stopped, 1.0)
            if self.planner.retry or await self._update_plan():
                return
            if any(self.clock() - t < self.options.settle_seconds + 2 for t in self.planner.changed_at.values()):
                return  # a changed path becomes due once it settles

    # -- one round ---------------------------------------------------------------------------------------------

    async def run_round(self, new_cycle: bool = True) -> RoundResult | None:
        """Plan and run one round; None when nothing was due."""
        assert self.owner is not None, "start() first"
        self._stage = "plan"
        await self._check_nodes()
        await self._update_plan()
        now = self.clock()
        plan = self.planner.next_round(now, new_cycle=new_cycle, blocked=lambda g, n: self._blocked(g, n, now))
        self._forget_vanished()
        if not plan.probes:
            if not plan.unavailable:
                self._publish()
                return None
            out = RoundResult()
            self._settle_unavailable(plan, out)
            self.last_round = out
            self._publish()
            return out
        self.rounds += 1
        pods: dict[str, _PodRun] = {}
        self._refused = {}
        self._path_reasons = {}
        try:
            self._stage = "conflicts"
            await self._check_conflicts(plan)
            self._stage = "create"
            responders = await self._start_responders(plan, pods)
            probes = await self._start_probes(plan, responders, pods)
            self._stage = "wait"
            await self._wait_done(probes, pods)
            self._stage = "judge"
            # judge by the policies as they are now, not as the round was planned: a change made while the pods
            # ran (and applied by the CNI before they connected) must not pass for a mismatch; it is "too fresh"
            await self._update_plan()
            out = self._judge(plan, responders, probes, pods)
            self._settle_unavailable(plan, out)
            return out
        finally:
            self._stage = "cleanup"
            try:
                await asyncio.to_thread(self._delete, pods.values())
            finally:
                self.metrics.pods_running.set(0)
                self._publish()

    def _blocked(self, group: str, node: str, now: float) -> str | None:
        return self.backoff.blocked((group, node), now)

    async def _check_nodes(self) -> None:
        """Which nodes may host probe pods (nodeSelector, taints, cordon), from the watch-fed node cache. Without
        the right to list nodes, pods are placed unchecked (the kubelet refuses what does not fit); a cache that
        never listed (the API server failing) fails the round."""
        cache = self.node_watch
        await self._synced(cache)
        if cache.refused is not None:
            if "nodes" not in self._unlisted:
                logger.warning("cannot list nodes (%s %s): probe pods are placed without checking node labels and "
                               "taints (the kubelet refuses what does not fit)", cache.refused.status,
                               cache.refused.reason)
                self._unlisted.add("nodes")
            return
        unavailable: dict[str, str] = {}
        pod = self.options.pod
        for node in list(cache.objects.values()):
            why = node_unavailable(node, pod.node_selector, pod.tolerations)
            if why is not None:
                unavailable[node["metadata"]["name"]] = why
        for name, why in unavailable.items():
            if name not in self.planner.unavailable_nodes:
                logger.warning("no probe pods on %s: its paths are inconclusive (unschedulable)", why)
                self._notify(InvolvedObject("v1", "Node", None, name), "unschedulable", why)
        self.planner.unavailable_nodes = unavailable

    async def _synced(self, cache: ListWatch, timeout: float = 10.0) -> None:
        """Wait (a little) for a cache's first listing; raise if it neither listed nor was refused by then."""
        deadline = self.clock() + timeout
        while not cache.synced and cache.refused is None and self.clock() < deadline:
            await cache.wait_changed(1.0)
        if not cache.synced and cache.refused is None:
            raise RuntimeError(f"{cache.what} are not listed yet")

    def _settle_unavailable(self, plan: Round, out: RoundResult) -> None:
        """Paths due this round whose pods cannot be placed now (backed off, or no node may host them)."""
        now = self.clock()
        for path, why in plan.unavailable:
            reason = why if why in FIXES else "unschedulable"
            self._inconclusive(path, reason, out, now, touch=False)

    def _inconclusive(self, path: PlannedPath, reason: str, out: RoundResult, now: float, *,
                      touch: bool = True) -> None:
        self.metrics.inconclusive.labels(reason).inc()
        self.inconclusive[path.key] = reason
        self.planner.record(path.key, now, settled=reason not in TRANSIENT_REASONS, reason=reason, touch=touch)
        out.inconclusive += 1
        out.outcomes.append((path, Outcome.INCONCLUSIVE, reason))

    async def _check_conflicts(self, plan: Round) -> None:
        """Groups whose clones would change what a Service or PodDisruptionBudget does (podspec.clone_conflict),
        read from watch-fed caches. A cache that never listed (the API server failing) fails the round, so that
        unchecked clones are never created; one the API refuses (no RBAC) is skipped with a warning."""
        found: dict[str, list[dict[str, Any]]] = {}
        groups = [p.group for p in plan.probes] + [r.group for r in plan.responders]
        namespaces = {g.namespace for g in groups}
        for cache in (self.service_watch, self.pdb_watch):
            await self._synced(cache)
            if cache.refused is not None:
                if cache.what not in self._unlisted:
                    logger.warning("cannot list %s (%s): clones are not checked against them", cache.what,
                                   cache.refused.reason)
                    self._unlisted.add(cache.what)
                found[cache.what] = []
            else:
                found[cache.what] = [o for (ns, _), o in list(cache.objects.items()) if ns in namespaces]
        self._conflicts = {}
        own_keys = self.options.pod.label_keys()
        for g in groups:
            labels = {**g.labels, MANAGED_BY_LABEL: MANAGED_BY_VALUE}
            why = clone_conflict(g.namespace, labels, found["services"], found["poddisruptionbudgets"])
            if why is None and own_keys & self.planner.paths_plan.selector_label_keys(g.namespace):
                why = "policies select on the prober's own label keys"
            if why is not None:
                self._conflicts[g.id] = why

    def _forget_vanished(self) -> None:
        """Drop the state of paths that no longer exist (their pods, groups or policies are gone): nothing is left
        to check there, so they are neither mismatches nor resolved."""
        gone = [k for k in self.comparator.mismatches if self.planner.path(k) is None]
        for m in self.comparator.forget(gone):
            pair = self._pair(m)
            if not any(self._pair(o) == pair for o in self.comparator.mismatches.values()):
                self._announced.pop(pair, None)
        for key in [k for k in self.inconclusive if self.planner.path(k) is None]:
            del self.inconclusive[key]
        for key in [k for k in self.observations if self.planner.path(k) is None]:
            del self.observations[key]
        self.backoff.forget({(k.src, k.src_node) for k in self.planner.cycle_paths()}
                            | {(k.dst, k.dst_node) for k in self.planner.cycle_paths()})
        if gone:
            self._publish()

    def _prune_series(self) -> None:
        self.metrics.prune((ns.name for ns in self.index.namespaces()),
                           (f"{ns}/{name}" for ns, name in (*self.index.policy_map(),
                                                            *(cp.key for cp in self.index.cluster_policies()))))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _namespace_uid(self, namespace: str) -> str:
        if namespace not in self._namespace_uids:
            ns = await asyncio.to_thread(call_api, self.core.read_namespace, namespace)
            self._namespace_uids[namespace] = ns.metadata.uid
        return self._namespace_uids[namespace]

    def _refuse(self, key: tuple[str, str], namespace: str, reason: str, message: str) -> None:
        """One (group, node) cannot have a pod now: back it off, and say why and how to fix it."""
        delay = self.backoff.fail(key, self.clock(), reason)
        self._refused[key] = reason
        message = _POD_NAME.sub('"<probe pod>"', message)[:400]
        logger.warning("probe pod in %s on node %s: %s (%s); its paths are inconclusive, next try in %.0fs",
                       namespace, key[1], reason, message, delay)
        self._notify(InvolvedObject("v1", "Namespace", None, namespace), reason, message)

    def _notify(self, obj: InvolvedObject, reason: str, message: str) -> None:
        if self.events is not None:
            text = f"probe pods cannot run ({reason}): {message}. Fix: {FIXES.get(reason, '')}"
            self.events.submit([Notice(obj, "ProbeInconclusive", text, "Warning")])

    async def _create(self, plan: ProbePodPlan | ResponderPlan, pods: dict[str, _PodRun],
                      build: Callable[[str], dict[str, Any]]) -> str | None:
        """Create one pod (``build(namespace uid)`` makes its manifest; the uid is the owner without a ProbeRun);
        its name when it was admitted as asked. A refusal (any answer of the API server, a 5xx included) or an
        injected container backs off the (group, node) and is not retried within the round; an API server that
        does not answer at all fails the round."""
        key, namespace = (plan.group.id, plan.node), plan.group.namespace
        try:
            uid = "" if self.owner is not None and self.owner.owned else await self._namespace_uid(namespace)
            body = build(uid)
            created = await asyncio.to_thread(call_api, self.core.create_namespaced_pod, namespace, body)
        except ApiException as exc:
            # the API server answered: whatever it said is about this pod, and backs off only its placement
            reason, message = classify_api_error(exc.status, exc.body)
            self._refuse(key, namespace, reason, message or f"{exc.status} {exc.reason}")
            return None
        asked = asked_containers(body)
        run = _PodRun(body["metadata"]["name"], namespace, self.clock(), plan, asked)
        pods[run.name] = run
        self.metrics.pods_running.set(len(pods))
        failure = classify_pod(self.api.sanitize_for_serialization(created), asked)
        if failure is not None:
            run.failure = failure
            self._refuse(key, namespace, *failure)
            await asyncio.to_thread(self._delete, [run])
            return None
        return run.name

    async def _start_responders(self, plan: Round, pods: dict[str, _PodRun]) -> dict[tuple[str, str], _PodRun]:
        assert self.owner is not None
        runs: dict[tuple[str, str], str] = {}
        for r in plan.responders:
            if r.group.id in self._conflicts:
                continue
            owner, seq = self.owner, self._next_seq()

            def build(uid: str, r: ResponderPlan = r, owner: RunOwner = owner, seq: int = seq) -> dict[str, Any]:
                return responder_pod(
                    owner, r.group, r.node, seq, sorted(r.ports), self.options.pod,
                    # alive while the round's probe pods connect, re-checks included
                    deadline_seconds=int(self.options.pod_start_timeout_seconds * 3 + max(
                        self.options.retry_window_seconds, self.options.late_seconds)),
                    stands_in_for=str(r.group.member_on(r.node)), namespace_uid=uid,
                )

            name = await self._create(r, pods, build)
            if name is not None:
                runs[(r.group.id, r.node)] = name
        await self._wait(pods, set(runs.values()), _responder_settled, self.options.pod_start_timeout_seconds)
        usable: dict[tuple[str, str], _PodRun] = {}
        for key, name in runs.items():
            run = pods[name]
            if run.failure is not None:
                self._refuse(key, run.namespace, *run.failure)
            elif run.ip and run.phase == "Running" and run.ready:
                usable[key] = run
                self.backoff.succeed(key)
            elif run.terminated:
                sctp_only = all(c == responder_container(Protocol.SCTP) for c in run.terminated)
                reason = "sctp_unavailable" if sctp_only and self._responder_reason(
                    run, Protocol.SCTP) == "sctp_unavailable" else "responder_failed"
                self._refuse(key, run.namespace, reason, "; ".join(
                    f"{c}: {m.strip()[-200:]}" for c, m in sorted(run.terminated.items())))
            else:
                self._refuse(key, run.namespace, "pod_timeout", f"responder {run.name} did not become ready within "
                             f"{self.options.pod_start_timeout_seconds:.0f}s (phase {run.phase})")
        return usable

    def _responder_reason(self, responder: _PodRun, protocol: Protocol) -> str | None:
        """Why a responder cannot serve ``protocol`` (its container for it never proved its listeners, or ended)."""
        name = responder_container(protocol)
        if name in responder.terminated:
            message = responder.terminated[name]
            if protocol is Protocol.SCTP and "not supported" in message:
                return "sctp_unavailable"
            return "responder_failed"
        return None if name in responder.ready else "responder_failed"

    async def _start_probes(
        self, plan: Round, responders: dict[tuple[str, str], _PodRun], pods: dict[str, _PodRun]
    ) -> dict[str, tuple[ProbePodPlan, list[PlannedPath]]]:
        assert self.owner is not None
        started: dict[str, tuple[ProbePodPlan, list[PlannedPath]]] = {}
        for p in plan.probes:
            if p.group.id in self._conflicts:
                continue
            paths = []
            for path in p.paths:
                responder = responders.get((path.key.dst, path.key.dst_node))
                if responder is None:
                    continue
                why = self._responder_reason(responder, path.key.port.protocol)
                if why is not None:
                    self._path_reasons[path.key] = why
                    continue
                paths.append(path)
            if not paths:
                continue
            targets = [
                ScriptTarget(
                    responders[(path.key.dst, path.key.dst_node)].ip, path.key.port.port, path.key.port.protocol,
                    # a flagged path is re-confirmed by one disagreement: no re-check (nor its wait) for it
                    expect=None if path.key in self.comparator.mismatches else path.predicted,
                )
                for path in paths
            ]
            delay = max([self.options.start_delay_seconds, *(self._waits.get(path.key, 0.0) for path in paths)])
            recheck = self._recheck_at(delay)
            script = probe_script(
                targets,
                self.options.timeout_seconds,
                self.options.parallelism,
                start_delay_seconds=delay,
                recheck_at=recheck,
            )
            passes = 1 + (len(recheck) if any(t.expect is not None for t in targets) else 0)
            span = (max([delay, *recheck]) + passes * math.ceil(len(targets) / self.options.parallelism)
                    * (2 * self.options.timeout_seconds + 2))
            deadline = int(self.options.pod_start_timeout_seconds + span + 10)
            owner, seq = self.owner, self._next_seq()

            def build(uid: str, p: ProbePodPlan = p, owner: RunOwner = owner, seq: int = seq, script: str = script,
                      deadline: int = deadline) -> dict[str, Any]:
                return probe_pod(owner, p.group, p.node, seq, script, self.options.pod, deadline_seconds=deadline,
                                 stands_in_for=str(p.group.member_on(p.node)), namespace_uid=uid)

            name = await self._create(p, pods, build)
            if name is not None:
                started[name] = (p, paths)
                self._pod_timing[name] = (delay, span)
        return started

    def _recheck_at(self, delay: float) -> list[int]:
        """When a probe pod connects again to targets that disagreed with their prediction (seconds after its script
        started): at the retry window, then at the late check, the waits the comparator asks of a re-probe; one pod
        doing both saves a pod start per step."""
        steps = {math.ceil(self.options.retry_window_seconds), math.ceil(self.options.late_seconds)}
        return sorted(at for at in steps if at > delay)

    async def _wait_done(
        self, probes: dict[str, tuple[ProbePodPlan, list[PlannedPath]]], pods: dict[str, _PodRun]
    ) -> None:
        budget = (self.options.pod_start_timeout_seconds
                  + max((self._pod_timing.get(name, (0.0, 0.0))[1] for name in probes), default=0.0) + 15)
        await self._wait(pods, set(probes), lambda p: p.failure is not None or p.phase in ("Succeeded", "Failed"),
                         budget)
        if self._stopped.is_set():
            return  # stopping: what did not finish says nothing about the pod
        for name in probes:
            run = pods[name]
            if run.finished is not None and run.failure is None:
                self.metrics.pod_duration.observe(run.finished - run.created)
                self.backoff.succeed(run.key)
            elif run.failure is not None:
                self._refuse(run.key, run.namespace, *run.failure)
            elif run.finished is None:
                self._refuse(run.key, run.namespace, "pod_timeout", f"probe pod {run.name} did not finish within "
                             f"{budget:.0f}s (phase {run.phase})")

    async def _wait(
        self, pods: dict[str, _PodRun], names: set[str], done: Callable[[_PodRun], bool], timeout: float
    ) -> None:
        """Follow this run's pods (from the watch, no listing) until every one in ``names`` is done."""
        deadline = self.clock() + timeout
        pending = {n for n in names if n in pods}
        while pending and self.clock() < deadline and not self._stopped.is_set():
            for name in pending:
                run = pods[name]
                item = self.pod_watch.objects.get((run.namespace, name))
                if item is not None:
                    self._observe(run, item)
            pending = {n for n in pending if not done(pods[n])}
            if pending:
                await self.pod_watch.wait_changed(min(1.0, max(0.0, deadline - self.clock())))

    def _observe(self, run: _PodRun, pod: dict[str, Any]) -> None:
        status = pod.get("status") or {}
        run.phase = status.get("phase") or "Pending"
        run.ip = status.get("podIP") or ""
        ready = set(run.ready)
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            term = state.get("terminated")
            if term is not None:
                run.message = term.get("message") or ""
                run.terminated[cs["name"]] = run.message
            if cs.get("ready"):
                ready.add(cs["name"])
        run.ready = frozenset(ready)
        if run.failure is None:
            run.failure = classify_pod(pod, run.asked)
        if run.phase in ("Succeeded", "Failed") and run.finished is None:
            run.finished = self.clock()

    def _delete(self, runs: Iterable[_PodRun]) -> None:
        for run in runs:
            try:
                call_api(self.core.delete_namespaced_pod, run.name, run.namespace, grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    self._count_error("cleanup")
                    logger.warning("cannot delete probe pod %s/%s: %s", run.namespace, run.name, exc.reason)

    # -- judging and reporting ---------------------------------------------------------------------------------

    def _foreign_policy_subjects(self) -> Callable[[PathKey, PodRef, PodRef], bool]:
        """Whether a Cilium, Calico or Antrea policy may decide a path: selects a member of its source group for
        egress or of its destination group for ingress. The prober cannot predict them, so a disagreement would be
        no mismatch; the probe pod speaks for every member of its group, so one selected member is enough."""
        selection = foreign_guard(self.foreign(), self.index.get_pod,
                                  lambda ns: self.index.namespace_labels(ns) or Namespace(ns).labels)
        if not selection:
            return lambda _key, _src, _dst: False
        memo: dict[tuple[str, Direction], bool] = {}

        def selected(gid: str, fallback: PodRef, direction: Direction) -> bool:
            found = memo.get((gid, direction))
            if found is None:
                group = self.planner.group(gid)
                refs = [r for rs in group.members_by_node.values() for r in rs] if group is not None else [fallback]
                found = memo[(gid, direction)] = any(selection.selected(r, direction) for r in refs)
            return found

        return lambda key, src, dst: selected(key.src, src, Direction.EGRESS) or selected(
            key.dst, dst, Direction.INGRESS)

    def _judge(
        self,
        plan: Round,
        responders: dict[tuple[str, str], _PodRun],
        probes: dict[str, tuple[ProbePodPlan, list[PlannedPath]]],
        pods: dict[str, _PodRun],
    ) -> RoundResult:
        now = self.clock()
        policies = self.planner.policies()
        foreign = self._foreign_policy_subjects()
        out = RoundResult()
        probed = set()
        for name, (_, paths) in probes.items():
            run = pods[name]
            if run.failure is not None or run.finished is None:
                continue  # reported below with the pod's reason
            report = parse_report(run.message, len(paths))
            src_ip = run.ip
            delay, _ = self._pod_timing.pop(name, (self.options.start_delay_seconds, 0.0))
            for path, attempts in zip(paths, report.attempts, strict=True):
                self._waits.pop(path.key, None)
                dst = responders[(path.key.dst, path.key.dst_node)]
                # a listener that died while probes ran proves nothing: a failed connection to it is no denial
                why = self._responder_reason(dst, path.key.port.protocol) or (
                    "foreign_policy" if foreign(path.key, path.source, path.destination) else None)
                if why is not None:
                    self._path_reasons[path.key] = why
                    continue
                probed.add(path.key)
                prediction = self.planner.verdict(path.key, (src_ip,) if src_ip else (), (dst.ip,))
                if prediction is None:
                    continue
                # each attempt is judged in turn, with how long the pod had waited for it: the re-checks of the
                # same pod take the comparator through its retry and late steps as re-probes would
                result: ProbeResult | None = None
                for at, result in attempts or ((None, None),):
                    if result is not None:
                        self.metrics.probes.labels(path.key.port.protocol.value, result.value).inc()
                    j = self.comparator.judge(
                        path.key,
                        prediction,
                        result,
                        now,
                        source=path.source,
                        destination=path.destination,
                        policies=policies,
                        changed_at=self.planner.changed_at.get(path.key),
                        src_ips=(src_ip,) if src_ip else (),
                        dst_ips=(dst.ip,),
                        waited=delay if at is None else float(at),
                    )
                self.observations[path.key] = (prediction, result, j.outcome)
                self._account(path, j, out, now)
        # paths whose pods were refused, broken or late: inconclusive with the reason, never judged
        for path in plan.paths:
            if path.key in probed:
                continue
            k = path.key
            reason = self._path_reasons.get(k)
            if reason is None and (k.src in self._conflicts or k.dst in self._conflicts):
                reason = "clone_conflict"
            if reason is None:
                reason = self._refused.get((k.dst, k.dst_node)) or self._refused.get((k.src, k.src_node))
            self._inconclusive(path, reason or "pod_timeout", out, now)
        self.last_round = out
        return out

    def _account(self, path: PlannedPath, j: Any, out: RoundResult, now: float) -> None:
        out.outcomes.append((path, j.outcome, j.reason))
        if j.outcome is Outcome.RETRY:
            out.retries += 1
            if j.wait:
                self._waits[path.key] = j.wait
            self.planner.record(path.key, now, settled=False, retry=True)
            return
        if j.outcome in (Outcome.INCONCLUSIVE, Outcome.TOO_FRESH):
            out.inconclusive += 1
            reason = j.reason
            if reason == "probe_error" and path.key.port.protocol is Protocol.SCTP:
                reason = "sctp_unavailable"
            self.metrics.inconclusive.labels(reason).inc()
            self.inconclusive[path.key] = reason
            # a tool error will not go away by retrying in this cycle; a missing result or a fresh path may
            settled = reason in ("probe_error", "sctp_unavailable", "not_judged", "out_of_model")
            self.planner.record(path.key, now, settled=settled, reason=reason)
            return
        out.judged += 1
        self.inconclusive.pop(path.key, None)
        self.planner.record(path.key, now, settled=True, late=j.outcome is Outcome.LATE)
        if j.outcome is Outcome.LATE:
            self.metrics.late.inc()
            logger.info("path %s is enforced, but only after waiting %.0fs: the CNI programs rules later than the "
                        "retry window (%.0fs)", _describe_key(path), self.options.late_seconds,
                        self.options.retry_window_seconds)
        if j.outcome is Outcome.MISMATCH:
            out.mismatches += 1
            if j.new:
                m: Mismatch = j.mismatch
                self.metrics.count_detected(self._labels(m))
                self._announce(m)
        elif j.resolved is not None:
            self._resolve(j.resolved)

    def _labels(self, m: Mismatch) -> tuple[str, ...]:
        return mismatch_labels(m, self._namespaces())

    def _namespaces(self) -> dict[str, str]:
        out = {}
        for key in list(self.comparator.mismatches):
            for gid in (key.src, key.dst):
                g = self.planner.group(gid)
                if g is not None:
                    out[gid] = g.namespace
        return out

    def _publish(self) -> None:
        self.published += 1
        self._prune_series()
        known: list[PolicyKey] = sorted(self.index.policy_map())
        live_nodes = {k.src_node for k in self.planner.cycle_paths()} | {k.dst_node for k in self.planner.cycle_paths()}
        features = {fn: v for fn, v in self.comparator.feature_enforced().items() if fn[1] in live_nodes}
        self.metrics.publish(
            ProbeState(
                count_mismatches(self.comparator.mismatches.values(), self._namespaces()),
                self.comparator.policy_enforced(known),
                features,
                self.planner.coverage() if self.planner.cycle_paths() else None,
                self.planner.path_states(),
                self.last_cycle_completed,
            )
        )
        if self.reports is not None:
            self.reports.submit(build_reports(findings(
                self.comparator.mismatches.values(), self.comparator.policy_enforced(known),
                self._inconclusive_paths(), self._policy_uids())))

    def _inconclusive_paths(self) -> list[tuple[PathKey, str, str, str]]:
        """This cycle's paths that could not be checked: (path, reason, source namespace, destination namespace)."""
        out = []
        current = set(self.planner.cycle_paths())
        for key, (state, reason) in self.planner.outcomes.items():
            src, dst = self.planner.group(key.src), self.planner.group(key.dst)
            if state == "inconclusive" and src is not None and dst is not None and key in current:
                out.append((key, reason, src.namespace, dst.namespace))
        return out

    # -- Events ------------------------------------------------------------------------------------------------

    @staticmethod
    def _pair(m: Mismatch) -> tuple[str, str, str, str]:
        return (m.key.src, m.key.dst, str(m.key.port), m.kind.value)

    def _policy_uids(self) -> dict[PolicyKey, str]:
        """NetworkPolicies by (namespace, name), cluster policies by (kind, name)."""
        uids = {key: p.uid for key, p in self.index.policy_map().items()}
        uids.update((cp.key, cp.uid) for cp in self.index.cluster_policies())
        return uids

    def _involved(self, m: Mismatch) -> list[InvolvedObject]:
        """The policies that decide; a cluster policy's Event goes to the ``default`` namespace (events.py)."""
        uids = self._policy_uids()
        if m.policies:
            return [
                InvolvedObject(ClusterPolicyKind(first).api_version, first, None, name, uids.get((first, name), ""))
                if is_cluster_policy_key((first, name))
                else InvolvedObject("networking.k8s.io/v1", "NetworkPolicy", first, name, uids.get((first, name), ""))
                for first, name in m.policies
            ]
        return [InvolvedObject("v1", "Namespace", None, m.destination.namespace)]

    def _announce(self, m: Mismatch) -> None:
        pair = self._pair(m)
        if pair in self._announced:
            return
        self._announced[pair] = m
        if self.events is None:
            return
        reason = "PolicyNotEnforced" if m.kind is MismatchKind.UNEXPECTEDLY_ALLOWED else "AllowedTrafficDropped"
        self.events.submit(Notice(obj, reason, m.describe(), "Warning") for obj in self._involved(m))

    def _resolve(self, m: Mismatch) -> None:
        pair = self._pair(m)
        if pair not in self._announced:
            return
        if any(self._pair(other) == pair for other in self.comparator.mismatches.values()):
            return  # another node placement of the same class pair still mismatches
        example = self._announced.pop(pair)
        if self.events is None:
            return
        message = f"resolved: {example.source} → {example.destination}:{example.key.port} now behaves as predicted"
        self.events.submit(Notice(obj, "MismatchResolved", message, "Normal") for obj in self._involved(example))


def _describe_key(path: PlannedPath) -> str:
    k = path.key
    return f"{path.source} ({k.src_node}) -> {path.destination} ({k.dst_node}) {k.port}"


def _responder_settled(run: _PodRun) -> bool:
    """Done waiting for a responder: it failed, or every container proved its listeners or ended."""
    if run.failure is not None or run.phase in ("Succeeded", "Failed"):
        return True
    return bool(run.ip) and run.phase == "Running" and all(
        c in run.ready or c in run.terminated for c in run.asked)


def call_api(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the API (in a worker thread), retrying a 429 after its Retry-After as client-go's request retry does
    (rest/request.go ``checkWait``; here at most `THROTTLE_RETRIES` times, each wait capped at 2 s so that a
    stop is never held up for long). The last 429, and every other error, is raised."""
    for attempt in range(THROTTLE_RETRIES + 1):
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status != 429 or attempt == THROTTLE_RETRIES:
                raise
            time.sleep(min(retry_after_seconds(exc.headers) or 1.0, 2.0) * (1 + random.random() / 2))
    raise AssertionError("unreachable")


def update_plan(planner: ProbePlanner, inputs: PlanInputs, now: float, first: bool) -> tuple[PlanDelta, float]:
    """`ProbePlanner.update`, meant for a worker thread; returns the delta and the CPU time it took. The first, full
    plan is built with the cyclic collector paused and frozen out of its scans before it resumes: the plan is large
    and long-lived, like the index (controller/app.py settle_memory), and a full collection over it run from the
    worker thread would hold the GIL, and so the event loop, for as long as it takes (0.25 s at 20k pods)."""
    started = time.thread_time()
    if first:
        with collector_paused():
            delta = planner.update(inputs, now)
            gc.freeze()
    else:
        delta = planner.update(inputs, now)
    return delta, time.thread_time() - started


async def _sleep_or_stop(stopped: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), timeout=seconds)
