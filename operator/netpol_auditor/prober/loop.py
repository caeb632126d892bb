"""The probe loop: plan a round, start responders and probe pods, read their results, judge, report, clean up.

One run = one ProbeRun owner object (cluster-scoped); every pod of the run is its controlled dependent. On start
the loop sweeps leftovers of earlier runs; on stop it deletes its ProbeRun and pods. Rounds repeat until a cycle
has covered every path, then the loop waits for the next cycle (``probe_interval_seconds``) — waking early when
retries are due or the index changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from netpol_auditor.engine import PolicyKey, Verdict
from netpol_auditor.exporters.events import EventPoster, InvolvedObject, Notice
from netpol_auditor.exporters.probe_metrics import ProbeMetrics, ProbeState, count_mismatches, mismatch_labels
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import Protocol
from netpol_auditor.prober.compare import Comparator, Mismatch, MismatchKind, Outcome
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
    predict,
    prediction_snapshot,
)
from netpol_auditor.prober.podspec import (
    DEFAULT_IMAGE,
    PROBE_RUN_GROUP,
    PROBE_RUN_PLURAL,
    PROBE_RUN_VERSION,
    RESERVED_LABEL_KEYS,
    RUN_LABEL,
    RunOwner,
    clone_conflict,
    new_run_id,
    probe_pod,
    probe_run_object,
    responder_pod,
)
from netpol_auditor.prober.script import ProbeResult, ScriptTarget, parse_report, probe_script
from netpol_auditor.prober.sweep import delete_run, sweep_leftovers

__all__ = ["ProbeLoop", "ProbeOptions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeOptions:
    """The prober's knobs, read from Settings (fields absent there take these defaults)."""

    interval_seconds: float = 300.0
    image: str = DEFAULT_IMAGE
    max_pods: int = 10
    targets_per_pod: int = 40
    timeout_seconds: int = 2
    parallelism: int = 8
    settle_seconds: float = 5.0
    retry_window_seconds: float = 10.0
    max_attempts: int = 10
    pod_start_timeout_seconds: float = 60.0
    placements: str = "balanced"
    namespaces: tuple[str, ...] = ()
    ports: tuple[Any, ...] = ()
    max_ports: int = 8
    round_pause_seconds: float = 1.0
    start_delay_seconds: float = 2.0
    events_enabled: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> ProbeOptions:
        def get(name: str, default: Any) -> Any:
            return getattr(settings, name, default)

        d = cls()
        return cls(
            interval_seconds=get("probe_interval_seconds", d.interval_seconds),
            image=get("probe_image", d.image),
            max_pods=get("probe_max_pods", d.max_pods),
            targets_per_pod=get("probe_targets_per_pod", d.targets_per_pod),
            timeout_seconds=int(get("probe_timeout_seconds", d.timeout_seconds)),
            settle_seconds=get("probe_settle_seconds", d.settle_seconds),
            retry_window_seconds=get("probe_retry_seconds", d.retry_window_seconds),
            start_delay_seconds=get("probe_start_delay_seconds", d.start_delay_seconds),
            placements=get("probe_placements", d.placements),
            namespaces=tuple(get("probe_namespaces", ()) or get("namespaces", ()) or ()),
            ports=tuple(get("probe_ports", ()) or get("ports", ()) or ()),
            max_ports=get("max_ports", d.max_ports) or d.max_ports,
            events_enabled=get("events_enabled", True),
        )

    def budget(self) -> PlanBudget:
        return PlanBudget(
            max_pods=self.max_pods,
            targets_per_pod=self.targets_per_pod,
            max_ports=self.max_ports,
            ports=self.ports,
            namespaces=self.namespaces,
            placements=self.placements,
            settle_seconds=self.settle_seconds,
        )


@dataclass
class _PodRun:
    """One created pod of the current round."""

    name: str
    namespace: str
    created: float
    plan: ProbePodPlan | ResponderPlan
    ip: str = ""
    phase: str = "Pending"
    message: str | None = None
    finished: float | None = None


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
    ) -> None:
        self.index = index
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
        )
        self.metrics = ProbeMetrics(registry if registry is not None else CollectorRegistry())
        self._own_events = events is None and self.options.events_enabled
        self.events = events
        if self._own_events:
            self.events = EventPoster(
                api,
                per_minute=getattr(settings, "events_per_minute", 30),
                dedup_seconds=getattr(settings, "events_dedup_seconds", 600.0),
            )
        self.run_id = new_run_id()
        self.owner: RunOwner | None = None
        self.rounds = 0
        self._seq = 0
        self._announced: dict[tuple[str, str, str, str], Mismatch] = {}  # class-pair mismatch -> example
        self.last_round: RoundResult | None = None
        self._conflicts: dict[str, str] = {}  # probe group id -> why it is not cloned this round
        self._unlisted: set[str] = set()
        # the latest prediction and result per path (what `explain`-style tooling and tests read)
        self.observations: dict[PathKey, tuple[Verdict, ProbeResult | None, Outcome]] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(sweep_leftovers, self.api, None)
        body = probe_run_object(self.run_id, os.environ.get("HOSTNAME", "netpol-auditor"))
        created = await asyncio.to_thread(
            self.custom.create_cluster_custom_object, PROBE_RUN_GROUP, PROBE_RUN_VERSION, PROBE_RUN_PLURAL, body
        )
        meta = created["metadata"]
        self.owner = RunOwner(meta["name"], meta["uid"], self.run_id)
        logger.info("probe run %s started (owner ProbeRun %s)", self.run_id, meta["name"])

    async def stop(self) -> None:
        if self.owner is not None:
            await asyncio.to_thread(delete_run, self.api, self.owner.name, self.run_id)
            self.metrics.pods_running.set(0)
            logger.info("probe run %s stopped; its pods are deleted", self.run_id)

    async def run(self, stopped: asyncio.Event) -> None:
        poster_task = None
        if self._own_events and self.events is not None:
            poster_task = asyncio.ensure_future(self.events.run(stopped))
        await self.start()
        next_cycle = self.clock()
        try:
            while not stopped.is_set():
                result = await self.run_round(new_cycle=self.clock() >= next_cycle)
                if self.planner.cycle_done():
                    self.planner.finish_cycle()
                    self.metrics.cycle_completed.set(self.clock())
                    next_cycle = self.clock() + self.options.interval_seconds
                    logger.info("probe cycle %d complete: coverage %.2f, %d current mismatches",
                                self.planner.cycles_completed, self.planner.coverage(),
                                len(self.comparator.mismatches))
                if result is None:
                    await self._wait_for_work(stopped, next_cycle)
                else:
                    await _sleep_or_stop(stopped, self.options.round_pause_seconds)
        finally:
            await asyncio.shield(self.stop())
            if poster_task is not None:
                poster_task.cancel()

    def _workload_changed(self, since: int) -> bool:
        """Whether the index changed since ``since`` in a way that matters to probing: our own probe pods come and
        go with every round and do not count."""
        if self.index.revision == since:
            return False
        real: dict[str, bool] = {}

        def is_real(class_id: str) -> bool:
            if class_id not in real:
                cls = self.index.class_by_id(class_id)
                pods = [self.index.get_pod(ref) for ref in cls.members] if cls is not None else []
                real[class_id] = any(p is not None and p.labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE
                                     for p in pods)
            return real[class_id]

        return any(is_real(s) and is_real(d) for s, d in self.index.changed_class_pairs(since))

    async def _wait_for_work(self, stopped: asyncio.Event, next_cycle: float) -> None:
        """Sleep until a cycle is due, a retry or a changed path waits, or the workload changes."""
        revision = self.index.revision
        while not stopped.is_set() and self.clock() < next_cycle:
            await _sleep_or_stop(stopped, 1.0)
            if self.planner.retry or self._workload_changed(revision):
                return
            if any(self.clock() - t < self.options.settle_seconds + 2 for t in self.planner.changed_at.values()):
                return  # a changed path becomes due once it settles

    # -- one round ---------------------------------------------------------------------------------------------

    async def run_round(self, new_cycle: bool = True) -> RoundResult | None:
        """Plan and run one round; None when nothing was due."""
        assert self.owner is not None, "start() first"
        plan = self.planner.plan(self.index, self.clock(), new_cycle=new_cycle)
        self._forget_vanished()
        if not plan.probes:
            return None
        self.rounds += 1
        pods: dict[str, _PodRun] = {}
        await self._check_conflicts(plan)
        try:
            responders = await self._start_responders(plan, pods)
            probes = await self._start_probes(plan, responders, pods)
            await self._wait_done(probes, pods)
            return self._judge(plan, responders, probes, pods)
        finally:
            await asyncio.to_thread(self._delete, pods.values())
            self.metrics.pods_running.set(0)
            self._publish()

    async def _check_conflicts(self, plan: Round) -> None:
        """Groups whose clones would change what a Service or PodDisruptionBudget does (podspec.clone_conflict)."""
        services: list[dict[str, Any]] = []
        pdbs: list[dict[str, Any]] = []
        policy_api: Any = client.PolicyV1Api(self.api)
        for name, call in (("services", self.core.list_service_for_all_namespaces),
                           ("poddisruptionbudgets", policy_api.list_pod_disruption_budget_for_all_namespaces)):
            try:
                listed = await asyncio.to_thread(call)
            except ApiException as exc:
                if name not in self._unlisted:
                    logger.warning("cannot list %s (%s): clones are not checked against them", name, exc.reason)
                    self._unlisted.add(name)
                continue
            items = [self.api.sanitize_for_serialization(i) for i in listed.items]
            (services if name == "services" else pdbs).extend(items)
        self._conflicts = {}
        for g in [p.group for p in plan.probes] + [r.group for r in plan.responders]:
            labels = {**g.labels, MANAGED_BY_LABEL: MANAGED_BY_VALUE}
            why = clone_conflict(g.namespace, labels, services, pdbs)
            if why is None and RESERVED_LABEL_KEYS & self.index.selector_label_keys(g.namespace):
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
        if gone:
            self._publish()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _create(self, body: dict[str, Any], plan: ProbePodPlan | ResponderPlan, pods: dict[str, _PodRun]) -> None:
        meta = body["metadata"]
        try:
            await asyncio.to_thread(self.core.create_namespaced_pod, meta["namespace"], body)
        except ApiException as exc:
            logger.warning("cannot create %s/%s: %s %s", meta["namespace"], meta["name"], exc.status, exc.reason)
            return
        pods[meta["name"]] = _PodRun(meta["name"], meta["namespace"], self.clock(), plan)
        self.metrics.pods_running.set(len(pods))

    async def _start_responders(self, plan: Round, pods: dict[str, _PodRun]) -> dict[tuple[str, str], _PodRun]:
        assert self.owner is not None
        names: dict[tuple[str, str], str] = {}
        for r in plan.responders:
            if r.group.id in self._conflicts:
                continue
            member = r.group.member_on(r.node)
            body = responder_pod(
                self.owner,
                r.group,
                r.node,
                self._next_seq(),
                sorted(r.ports),
                self.options.image,
                deadline_seconds=int(self.options.pod_start_timeout_seconds * 3),
                stands_in_for=str(member),
            )
            await self._create(body, r, pods)
            names[(r.group.id, r.node)] = body["metadata"]["name"]
        await self._wait(
            pods,
            set(names.values()),
            lambda p: bool(p.ip) and p.phase == "Running",
            self.options.pod_start_timeout_seconds,
        )
        return {k: pods[n] for k, n in names.items() if n in pods and pods[n].ip and pods[n].phase == "Running"}

    async def _start_probes(
        self, plan: Round, responders: dict[tuple[str, str], _PodRun], pods: dict[str, _PodRun]
    ) -> dict[str, tuple[ProbePodPlan, list[PlannedPath]]]:
        assert self.owner is not None
        started: dict[str, tuple[ProbePodPlan, list[PlannedPath]]] = {}
        for p in plan.probes:
            if p.group.id in self._conflicts:
                continue
            paths = [path for path in p.paths if (path.key.dst, path.key.dst_node) in responders]
            if not paths:
                continue
            targets = [
                ScriptTarget(
                    responders[(path.key.dst, path.key.dst_node)].ip, path.key.port.port, path.key.port.protocol
                )
                for path in paths
            ]
            script = probe_script(
                targets,
                self.options.timeout_seconds,
                self.options.parallelism,
                start_delay_seconds=self.options.start_delay_seconds,
            )
            rounds = math.ceil(len(targets) / self.options.parallelism)
            deadline = int(
                self.options.pod_start_timeout_seconds
                + self.options.start_delay_seconds
                + rounds * (2 * self.options.timeout_seconds + 2)
                + 10
            )
            body = probe_pod(
                self.owner,
                p.group,
                p.node,
                self._next_seq(),
                script,
                self.options.image,
                deadline_seconds=deadline,
                stands_in_for=str(p.group.member_on(p.node)),
            )
            await self._create(body, p, pods)
            if body["metadata"]["name"] in pods:
                started[body["metadata"]["name"]] = (p, paths)
        return started

    async def _wait_done(
        self, probes: dict[str, tuple[ProbePodPlan, list[PlannedPath]]], pods: dict[str, _PodRun]
    ) -> None:
        longest = max((len(paths) for _, paths in probes.values()), default=0)
        budget = (
            self.options.pod_start_timeout_seconds
            + self.options.start_delay_seconds
            + math.ceil(longest / self.options.parallelism) * (2 * self.options.timeout_seconds + 2)
            + 15
        )
        await self._wait(pods, set(probes), lambda p: p.phase in ("Succeeded", "Failed"), budget)
        for name in probes:
            run = pods[name]
            if run.finished is not None:
                self.metrics.pod_duration.observe(run.finished - run.created)

    async def _wait(
        self, pods: dict[str, _PodRun], names: set[str], done: Callable[[_PodRun], bool], timeout: float
    ) -> None:
        """Poll this run's pods (one list call for all namespaces) until every one in ``names`` is done."""
        deadline = self.clock() + timeout
        pending = {n for n in names if n in pods}
        while pending and self.clock() < deadline:
            listed = await asyncio.to_thread(
                self.core.list_pod_for_all_namespaces, label_selector=f"{RUN_LABEL}={self.run_id}"
            )
            for item in listed.items:
                run = pods.get(item.metadata.name)
                if run is None:
                    continue
                status = item.status
                run.phase = status.phase or "Pending"
                run.ip = status.pod_ip or ""
                for cs in status.container_statuses or []:
                    term = cs.state.terminated if cs.state is not None else None
                    if term is not None:
                        run.message = term.message or ""
                if run.phase in ("Succeeded", "Failed") and run.finished is None:
                    run.finished = self.clock()
            pending = {n for n in pending if not done(pods[n])}
            if pending:
                await asyncio.sleep(0.3)

    def _delete(self, runs: Iterable[_PodRun]) -> None:
        for run in runs:
            try:
                self.core.delete_namespaced_pod(run.name, run.namespace, grace_period_seconds=0)
            except ApiException as exc:
                if exc.status != 404:
                    logger.warning("cannot delete probe pod %s/%s: %s", run.namespace, run.name, exc.reason)

    # -- judging and reporting ---------------------------------------------------------------------------------

    def _judge(
        self,
        plan: Round,
        responders: dict[tuple[str, str], _PodRun],
        probes: dict[str, tuple[ProbePodPlan, list[PlannedPath]]],
        pods: dict[str, _PodRun],
    ) -> RoundResult:
        now = self.clock()
        snap = prediction_snapshot(self.index)
        policies = {p.key: p for p in self.index.policies()}
        out = RoundResult()
        probed = set()
        for name, (_, paths) in probes.items():
            report = parse_report(pods[name].message, len(paths))
            src_ip = pods[name].ip
            for path, result in zip(paths, report.results, strict=True):
                probed.add(path.key)
                dst = responders[(path.key.dst, path.key.dst_node)]
                src_group, dst_group = self.planner.group(path.key.src), self.planner.group(path.key.dst)
                if src_group is None or dst_group is None:
                    continue
                prediction = predict(snap, src_group, dst_group, path.key.port, (src_ip,) if src_ip else (), (dst.ip,))
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
                    changed_at=self.planner.changed_at.get((path.key.src, path.key.dst)),
                    src_ips=(src_ip,) if src_ip else (),
                    dst_ips=(dst.ip,),
                )
                self.observations[path.key] = (prediction, result, j.outcome)
                self._account(path, j, out, now, result)
        # paths whose pods could not be created or did not start: inconclusive, tried again later in the cycle
        for path in plan.paths:
            if path.key not in probed:
                conflict = path.key.src in self._conflicts or path.key.dst in self._conflicts
                reason = "clone_conflict" if conflict else "pod_unavailable"
                self.metrics.inconclusive.labels(reason).inc()
                self.planner.record(path.key, now, settled=conflict)
                out.inconclusive += 1
                out.outcomes.append((path, Outcome.INCONCLUSIVE, reason))
        self.last_round = out
        return out

    def _account(self, path: PlannedPath, j: Any, out: RoundResult, now: float, result: ProbeResult | None) -> None:
        out.outcomes.append((path, j.outcome, j.reason))
        if j.outcome is Outcome.RETRY:
            out.retries += 1
            self.planner.record(path.key, now, settled=False, retry=True)
            return
        if j.outcome in (Outcome.INCONCLUSIVE, Outcome.TOO_FRESH):
            out.inconclusive += 1
            reason = j.reason
            if reason == "probe_error" and path.key.port.protocol is Protocol.SCTP:
                reason = "sctp_unavailable"
            self.metrics.inconclusive.labels(reason).inc()
            # a tool error will not go away by retrying in this cycle; a missing result or a fresh path may
            self.planner.record(path.key, now, settled=reason in ("probe_error", "sctp_unavailable", "not_judged"))
            return
        out.judged += 1
        self.planner.record(path.key, now, settled=True)
        if j.outcome is Outcome.MISMATCH:
            out.mismatches += 1
            if j.new:
                m: Mismatch = j.mismatch
                labels = self._labels(m)
                self.metrics.detected.labels(*labels).inc()
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
        known: list[PolicyKey] = [p.key for p in self.index.policies()]
        self.metrics.publish(
            ProbeState(
                count_mismatches(self.comparator.mismatches.values(), self._namespaces()),
                self.comparator.policy_enforced(known),
                self.comparator.feature_enforced(),
                self.planner.coverage(),
            )
        )

    # -- Events ------------------------------------------------------------------------------------------------

    @staticmethod
    def _pair(m: Mismatch) -> tuple[str, str, str, str]:
        return (m.key.src, m.key.dst, str(m.key.port), m.kind.value)

    def _involved(self, m: Mismatch) -> list[InvolvedObject]:
        uids = {p.key: p.uid for p in self.index.policies()}
        if m.policies:
            return [
                InvolvedObject("networking.k8s.io/v1", "NetworkPolicy", ns, name, uids.get((ns, name), ""))
                for ns, name in m.policies
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


async def _sleep_or_stop(stopped: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopped.wait(), timeout=seconds)
