"""What to probe, round by round: the paths of a cycle (prober/coverage.py), prioritised and packed into probe pods.

Per node: ingress rules are enforced on the destination's node and egress rules on the source's, so paths are placed
on nodes of both groups (prober/coverage.py). Each round picks, within the budget (pods alive at once, targets per
pod): retries of paths whose observation disagreed with the prediction, paths whose prediction changed (once
settled), predicted-denied paths (what a non-enforcing CNI gets wrong), then the paths confirmed longest ago. A
*cycle* covers every path once; it starts over when every path of it was probed.

Planning is split in two so that the operator's event loop never waits on it: `ProbePlanner.update` brings the
planned paths up to a snapshot of the index (`snapshot`; the heavy part, incremental, run in a worker thread), and
`ProbePlanner.next_round` picks a round from them (cheap: it looks at the retries, the changed paths and the head
of the cycle's queue, never at every path).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from netpol_auditor.engine import PolicyKey, Snapshot, Verdict
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import NetworkPolicy, Pod, PortProtocol
from netpol_auditor.prober.coverage import (
    CLONE_DESTINATION_NAME,
    CLONE_SOURCE_NAME,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    CoveragePlan,
    PathKey,
    PlanBudget,
    PlanDelta,
    PlanInputs,
    PlannedPath,
    ProbeGroup,
    namespace_selected,
    port_class,
)

__all__ = [
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "PathKey",
    "PlanBudget",
    "PlanInputs",
    "PlannedPath",
    "ProbeGroup",
    "ProbePlanner",
    "ProbePodPlan",
    "ResponderPlan",
    "Round",
    "clone_pods",
    "namespace_selected",
    "port_class",
    "predict",
    "prediction_snapshot",
    "probe_groups",
    "snapshot",
]


@dataclass
class ProbePodPlan:
    group: ProbeGroup
    node: str
    paths: list[PlannedPath] = field(default_factory=list)


@dataclass
class ResponderPlan:
    group: ProbeGroup
    node: str
    ports: set[PortProtocol] = field(default_factory=set)


@dataclass
class Round:
    probes: list[ProbePodPlan]
    responders: list[ResponderPlan]
    deferred: int = 0  # changed paths held back: too fresh to judge
    # due paths not packed because a pod of theirs cannot be placed now: (path, reason)
    unavailable: list[tuple[PlannedPath, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[PlannedPath]:
        return [p for pod in self.probes for p in pod.paths]

    @property
    def pod_count(self) -> int:
        return len(self.probes) + len(self.responders)


def snapshot(index: ReachabilityIndex, unavailable_nodes: Mapping[str, str] | None = None) -> PlanInputs:
    """What planning reads of the index, copied (cheap: no sorting, no copies of the objects themselves), so that
    planning can run in another thread while the index takes events."""
    return PlanInputs(index.revision, index.namespace_label_map(), index.policy_map(), index.endpoint_pods(),
                      dict(unavailable_nodes or {}), {cp.key: cp for cp in index.compiled_cluster_policies()})


def probe_groups(index: ReachabilityIndex, namespaces: Sequence[str] = ()) -> dict[str, ProbeGroup]:
    """Endpoint pods grouped by what policies can see of them (prober/coverage.py)."""
    plan = CoveragePlan(PlanBudget(namespaces=tuple(namespaces)))
    plan.update(snapshot(index))
    return dict(plan.groups)


class ProbePlanner:
    """Keeps the planned paths, the cycle and per-path history; `update` + `next_round` (or `plan`, both at once)
    return the next round, `record` takes its outcomes."""

    #: a round looks at most this many due paths per pod it may create (the cycle's queue is in priority order)
    SCAN_PER_POD = 4

    def __init__(self, budget: PlanBudget) -> None:
        self.budget = budget
        self.paths_plan = CoveragePlan(budget)
        self.last_probed: dict[PathKey, float] = {}
        self.pending: set[PathKey] = set()
        self.cycles_completed = 0
        self.cycle_active = False
        self.cycle_started_at: float | None = None
        self.retry: set[PathKey] = set()
        self.changed_at: dict[PathKey, float] = {}  # paths new or predicted otherwise since the first plan
        # the current cycle's outcome per path: ("judged" | "inconclusive", reason); absent = not settled yet
        self.outcomes: dict[PathKey, tuple[str, str]] = {}
        self.cycle_keys: set[PathKey] = set()
        self._cycle_planned = 0  # paths the current cycle began with
        self._queue: list[PlannedPath] = []  # the cycle's paths in priority order (settled ones dropped lazily)
        # the next cycle's queue, with the (paths version, records) it was sorted at
        self._next_queue: tuple[tuple[int, int], list[PlannedPath]] | None = None
        self._records = 0  # outcomes recorded (they change which paths were confirmed longest ago)
        self._unsettled: dict[PathKey, int] = {}  # inconclusive attempts this cycle that may still succeed
        self.unavailable_nodes: dict[str, str] = {}  # node -> why no probe pod can run there
        self._planned_once = False

    @property
    def _paths(self) -> dict[PathKey, PlannedPath]:
        return self.paths_plan.paths

    # -- planned paths -----------------------------------------------------------------------------------------

    def update(self, inputs: PlanInputs, now: float | None) -> PlanDelta:
        """Bring the planned paths up to ``inputs`` (safe to run in a worker thread while nothing else uses the
        planner); paths that are new or predicted otherwise are remembered as changed at ``now`` (None: not
        remembered). The first update changes nothing: every path is due anyway."""
        return self._take(self.paths_plan.update(inputs), now)

    def self_check(self, now: float) -> bool:
        """Whether the incrementally kept plan equals one rebuilt from scratch on the same snapshot (with the same
        group slots); if not, the rebuild replaces it, and its differences count as changes."""
        rebuilt = self.paths_plan.rebuilt()
        if rebuilt.paths == self.paths_plan.paths and rebuilt.groups == self.paths_plan.groups:
            return True
        old = self.paths_plan.paths
        delta = PlanDelta(
            {k for k, p in rebuilt.paths.items() if (o := old.get(k)) is None or o != p},
            old.keys() - rebuilt.paths.keys(),
        )
        rebuilt.version = self.paths_plan.version + 1
        self.paths_plan = rebuilt
        self._take(delta, now)
        return False

    def _take(self, delta: PlanDelta, now: float | None) -> PlanDelta:
        if self._planned_once and now is not None:
            for key in delta.changed:
                self.changed_at[key] = now
        self._planned_once = self._planned_once or now is not None
        for key in delta.removed:
            self.changed_at.pop(key, None)
            self.pending.discard(key)
            self.retry.discard(key)
            self.outcomes.pop(key, None)
            self.cycle_keys.discard(key)
            self._unsettled.pop(key, None)
            self.last_probed.pop(key, None)
        stamp = (self.paths_plan.version, self._records)
        if not self.pending and (self._next_queue is None or self._next_queue[0] != stamp):
            # the next cycle's queue, sorted here (a worker thread) rather than on the caller's event loop
            self._next_queue = (stamp, self._cycle_queue())
        return delta

    def _cycle_queue(self) -> list[PlannedPath]:
        """Every path, predicted-denied first, then confirmed longest ago, then by key (a stable order)."""
        never = -math.inf
        last = self.last_probed

        def rank(p: PlannedPath) -> tuple[object, ...]:
            k = p.key
            return (p.predicted, last.get(k, never), k.src, k.dst, k.port.port, k.port.protocol.value, k.src_node,
                    k.dst_node)

        return sorted(self._paths.values(), key=rank)

    def enumerate_paths(self, index: ReachabilityIndex) -> dict[PathKey, PlannedPath]:
        """Every path a full cycle covers, with its predicted verdict, for the index as it is now."""
        self.update(snapshot(index, self.unavailable_nodes), None)
        return dict(self._paths)

    # -- rounds ------------------------------------------------------------------------------------------------

    def plan(
        self,
        index: ReachabilityIndex,
        now: float,
        new_cycle: bool = True,
        blocked: Callable[[str, str], str | None] | None = None,
    ) -> Round:
        """`update` from the index, then `next_round` (in one go, for callers that do not mind the wait)."""
        self.update(snapshot(index, self.unavailable_nodes), now)
        return self.next_round(now, new_cycle, blocked)

    def next_round(
        self,
        now: float,
        new_cycle: bool = True,
        blocked: Callable[[str, str], str | None] | None = None,
    ) -> Round:
        """The next round of probes within the budget (may be empty when nothing is due). ``new_cycle``: whether a
        new cycle may start when the current one is done; between cycles only retries and changed paths are due.
        ``blocked(group id, node)``: why no pod of that group can be created on that node now (backoff after a
        refusal, an unavailable node), or None; such paths come back in ``Round.unavailable`` instead."""
        paths = self._paths
        if not self.pending and (new_cycle or (self.cycle_active and self._emptied())):
            self.cycle_active = True
            self.cycle_started_at = now
            self.pending = set(paths)
            self.cycle_keys = set(paths)
            self._cycle_planned = len(paths)
            self.outcomes = {}
            self._unsettled = {}
            ready = self._next_queue
            fresh = ready is not None and ready[0] == (self.paths_plan.version, self._records)
            self._queue = ready[1] if ready is not None and fresh else self._cycle_queue()
            self._next_queue = None
        settle = self.budget.settle_seconds
        deferred = 0
        candidates: list[PlannedPath] = []
        for key in sorted(self.retry):
            path = paths.get(key)
            if path is not None:
                candidates.append(_with_priority(path, "retry"))
        retries = len(candidates)
        for key, at in list(self.changed_at.items()):
            probed = self.last_probed.get(key)
            if probed is not None and probed >= at and now - at >= settle:
                del self.changed_at[key]  # probed since it changed, and no longer too fresh to judge
                continue
            if key in self.retry:
                continue
            if now - at < settle:
                deferred += 1
            elif probed is None or probed < at:
                candidates.append(_with_priority(paths[key], "changed"))
        candidates[retries:] = sorted(candidates[retries:],
                                      key=lambda p: (self.last_probed.get(p.key, -math.inf), p.key))
        limit = len(candidates) + self.SCAN_PER_POD * self.budget.max_pods * self.budget.targets_per_pod
        chosen = {p.key for p in candidates}
        kept: list[PlannedPath] = []
        for i, path in enumerate(self._queue):
            if path.key not in self.pending:
                continue  # settled (or gone): dropped from the queue
            kept.append(path)
            if len(candidates) >= limit or path.key in chosen:
                continue
            since = self.changed_at.get(path.key)
            if since is not None and now - since < settle:
                continue  # counted as deferred above
            candidates.append(_with_priority(paths[path.key], "stale" if path.predicted else "denied"))
            if len(candidates) >= limit:
                kept.extend(self._queue[i + 1:])
                break
        self._queue = kept
        unavailable: list[tuple[PlannedPath, str]] = []
        placeable = []
        for path in candidates:
            k = path.key
            # the destination first, as in a round (responders are created before probes)
            why = self.unavailable_nodes.get(k.dst_node) or self.unavailable_nodes.get(k.src_node)
            if why is None and blocked is not None:
                why = blocked(k.dst, k.dst_node) or blocked(k.src, k.src_node)
            if why is None:
                placeable.append(path)
            else:
                unavailable.append((path, why))
        out = self._pack(placeable, deferred)
        out.unavailable = unavailable
        return out

    def _pack(self, candidates: Sequence[PlannedPath], deferred: int) -> Round:
        probes: dict[tuple[str, str], list[ProbePodPlan]] = {}
        responders: dict[tuple[str, str], ResponderPlan] = {}
        used = 0
        for path in candidates:
            k = path.key
            slot = probes.get((k.src, k.src_node))
            need_probe = slot is None or len(slot[-1].paths) >= self.budget.targets_per_pod
            need_responder = (k.dst, k.dst_node) not in responders
            if used + need_probe + need_responder > self.budget.max_pods:
                continue
            if need_probe:
                pod = ProbePodPlan(self.paths_plan.groups[k.src], k.src_node)
                probes.setdefault((k.src, k.src_node), []).append(pod)
                used += 1
            if need_responder:
                responders[(k.dst, k.dst_node)] = ResponderPlan(self.paths_plan.groups[k.dst], k.dst_node)
                used += 1
            probes[(k.src, k.src_node)][-1].paths.append(path)
            responders[(k.dst, k.dst_node)].ports.add(k.port)
        return Round([p for pods in probes.values() for p in pods], list(responders.values()), deferred)

    #: an inconclusive path that may succeed on a later round of the same cycle is tried this often, then settled
    MAX_UNSETTLED_ATTEMPTS = 3

    def record(
        self, key: PathKey, now: float, *, settled: bool, retry: bool = False, reason: str = "",
        touch: bool = True, late: bool = False,
    ) -> None:
        """Take one path's outcome. ``settled``: the path is done for this cycle; ``reason`` empty: it was judged
        (the observation matched or contradicted the prediction), else why it is inconclusive. An inconclusive
        path that is not settled is tried again in this cycle, at most `MAX_UNSETTLED_ATTEMPTS` times, so that one
        path never holds a cycle open. ``retry``: observed differs from predicted and the retry budget is not
        spent — probe it again soon. ``touch``: a probe was really made (it counts for "confirmed longest ago")."""
        self._records += 1
        if touch:
            self.last_probed[key] = now
        if retry:
            self.retry.add(key)
            return
        self.retry.discard(key)
        if reason and not settled:
            self._unsettled[key] = self._unsettled.get(key, 0) + 1
            settled = self._unsettled[key] >= self.MAX_UNSETTLED_ATTEMPTS
        if settled:
            self.pending.discard(key)
            self._unsettled.pop(key, None)
            self.outcomes[key] = (("inconclusive", reason) if reason else ("late", "programming_late") if late
                                  else ("judged", ""))


    def cycle_done(self) -> bool:
        """Whether the current cycle has probed every one of its paths (and was not finished yet). A cycle whose
        paths were all replaced before any was judged (a change gave every group a new identity) is not done:
        it judged nothing, and the next round begins a new one with the paths there are now."""
        return self.cycle_active and not self.pending and not self._emptied()

    def _emptied(self) -> bool:
        return self._cycle_planned > 0 and not self.cycle_keys

    def finish_cycle(self) -> None:
        self.cycle_active = False
        self.cycles_completed += 1

    def coverage(self) -> float:
        """Paths of this cycle whose observation was judged against the prediction / all paths planned for it.
        Inconclusive paths (whatever the reason) are not covered: they are counted apart (`path_states`)."""
        planned = self.cycle_paths()
        if not planned:
            return 0.0
        return sum(1 for k in planned if self.outcomes.get(k, ("", ""))[0] in ("judged", "late")) / len(planned)

    def cycle_paths(self) -> set[PathKey]:
        """The paths the current cycle covers (those planned at its start that still exist)."""
        return self.cycle_keys

    def path_states(self) -> dict[tuple[str, str], int]:
        """The current cycle's paths by (state, reason): ``judged``, ``late`` (enforced, but only after waiting:
        reason ``programming_late``), ``inconclusive`` with its reason, or ``pending`` (not settled yet)."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for key in self.cycle_paths():
            out[self.outcomes.get(key, ("pending", ""))] += 1
        return dict(out)

    def group(self, gid: str) -> ProbeGroup | None:
        return self.paths_plan.groups.get(gid)

    def policies(self) -> Mapping[PolicyKey, NetworkPolicy]:
        """The policies the plan was made from (what `verdict` judges by)."""
        inputs = self.paths_plan.inputs
        return inputs.policies if inputs is not None else {}

    def verdict(self, key: PathKey, src_ips: tuple[str, ...], dst_ips: tuple[str, ...]) -> Verdict | None:
        """The prediction for the probe pods of ``key`` with their own addresses (None if a group is gone)."""
        src, dst = self.group(key.src), self.group(key.dst)
        if src is None or dst is None:
            return None
        return self.paths_plan.verdict(src, dst, key.port, src_ips, dst_ips)

    def path(self, key: PathKey) -> PlannedPath | None:
        return self._paths.get(key)


def _with_priority(path: PlannedPath, priority: str) -> PlannedPath:
    return PlannedPath(path.key, path.source, path.destination, path.predicted, priority)


def prediction_snapshot(index: ReachabilityIndex) -> Snapshot:
    """The engine's reference evaluator over the index's namespaces and policies (cluster policies included),
    without pods: probe clones are added per question (`clone_verdict`)."""
    return Snapshot.from_objects([*index.namespaces(), *index.policies(), *index.cluster_policies()])


def clone_pods(
    src: ProbeGroup, dst: ProbeGroup, src_ips: tuple[str, ...], dst_ips: tuple[str, ...]
) -> tuple[Pod, Pod]:
    """Model pods for a probe cloned from ``src`` and a responder cloned from ``dst``, with the given IPs."""
    s = Pod(src.namespace, CLONE_SOURCE_NAME, labels=src.labels, pod_ips=src_ips)
    d = Pod(
        dst.namespace, CLONE_DESTINATION_NAME, labels=dst.labels, pod_ips=dst_ips,
        container_ports=dst.container_ports,
    )
    return s, d


def predict(
    snap: Snapshot,
    src: ProbeGroup,
    dst: ProbeGroup,
    port: PortProtocol,
    src_ips: tuple[str, ...],
    dst_ips: tuple[str, ...],
) -> Verdict:
    """What the policies predict for a probe cloned from ``src`` connecting to a responder cloned from ``dst``.

    The clones carry the IPs given (the real pods' at planning time, the probe pods' own when judging), so
    ipBlock rules are judged on the addresses the traffic really has.
    """
    s, d = clone_pods(src, dst, src_ips or ("192.0.2.1",), dst_ips or ("192.0.2.2",))
    snap.pods = {s.ref: s, d.ref: d}
    return snap.verdict(s.ref, d.ref, port)
