"""What to probe: one representative path per (source class, destination class, port), placed per node.

Pods are grouped into *probe groups*: same namespace, matched by the same pod selectors of the policies that can
apply to them (`ReachabilityIndex.pod_selectors`), same named container ports. Policies cannot tell the pods of a group
apart, so one probe pod (cloned from the group) speaks for all of them. Per node: ingress rules are enforced on the
destination's node and egress rules on the source's, so each group pair is probed from every node its sources run
on and to every node its destinations run on (paired round-robin: max(|source nodes|, |destination nodes|)
placements, not the product).

Each round picks, within the budget (pods alive at once, targets per pod): retries of paths whose observation
disagreed with the prediction, paths whose verdict changed (once settled), predicted-denied paths (what a
non-enforcing CNI gets wrong), then the paths confirmed longest ago. A *cycle* covers every path once; it starts
over when every path of it was probed.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from netpol_auditor.engine import Snapshot, Verdict
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.model import (
    ContainerPort,
    Direction,
    Labels,
    LabelSelector,
    NetworkPolicy,
    Pod,
    PodRef,
    PortProtocol,
)
from netpol_auditor.selectors import SelectorMatcher, compile_selector

__all__ = [
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "PathKey",
    "PlanBudget",
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
]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "netpol-auditor"


@dataclass(frozen=True)
class PlanBudget:
    """Budget knobs. ``ports`` empty: the ports destinations declare plus those the relevant policies name."""

    max_pods: int = 10
    targets_per_pod: int = 40
    max_ports: int = 8
    ports: tuple[PortProtocol, ...] = ()
    fallback_ports: tuple[PortProtocol, ...] = (PortProtocol(80),)
    namespaces: tuple[str, ...] = ()  # globs; "!glob" excludes; empty: every namespace
    # "balanced": one node placement per (group pair, port class), chosen so that every node is probed about as
    # often as a source and as a destination (stable between cycles, so a mismatch is re-checked where it was
    # found); "all": every paired node placement
    placements: str = "balanced"
    # probe one port per port class: ports the pair's policies treat alike (same verdict, same deciding rules)
    dedup_ports: bool = True
    settle_seconds: float = 5.0


@dataclass(frozen=True)
class ProbeGroup:
    """Pods no policy can tell apart, and what a clone of them must carry."""

    id: str
    namespace: str
    labels: Labels  # only the keys policy selectors can see
    container_ports: tuple[ContainerPort, ...]  # of the representative: named ports are what policies see
    members_by_node: Mapping[str, tuple[PodRef, ...]]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self.members_by_node))

    def member_on(self, node: str) -> PodRef:
        return self.members_by_node[node][0]


@dataclass(frozen=True, order=True)
class PathKey:
    src: str  # probe group ids
    dst: str
    port: PortProtocol
    src_node: str
    dst_node: str


@dataclass(frozen=True)
class PlannedPath:
    key: PathKey
    source: PodRef  # the real pod the probe stands in for
    destination: PodRef
    predicted: bool
    priority: str = "stale"  # "retry" | "changed" | "denied" | "stale"


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


def namespace_selected(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether ``namespace`` is opted in: no include pattern or one matches, and no ``!pattern`` matches."""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(namespace, p) for p in excludes):
        return False
    return not includes or any(fnmatch.fnmatchcase(namespace, p) for p in includes)


def _group_id(namespace: str, matched: Iterable[LabelSelector], ports: Iterable[ContainerPort]) -> str:
    named = sorted((p.name or "", p.port, p.protocol.value) for p in ports if p.name)
    text = repr((namespace, sorted(repr(s) for s in matched), named))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def probe_groups(index: ReachabilityIndex, namespaces: Sequence[str] = ()) -> dict[str, ProbeGroup]:
    """Endpoint pods grouped by what policies can see of them: the pod selectors that match them
    (`ReachabilityIndex.pod_selectors`) and their named ports. A group's clone carries the labels of its first
    member that any selector looks at; every member matches the same selectors, so the clone does too. Our own
    probe pods are never grouped."""
    selectors_by_ns: dict[str, tuple[tuple[LabelSelector, SelectorMatcher], ...]] = {}
    keys_by_ns: dict[str, frozenset[str]] = {}
    members: dict[str, dict[str, list[PodRef]]] = defaultdict(lambda: defaultdict(list))
    first: dict[str, tuple[str, Labels, tuple[ContainerPort, ...]]] = {}
    gid_by_labels: dict[tuple[str, Labels, tuple[ContainerPort, ...]], str] = {}
    endpoints = set(index.endpoints())
    for pod in index.pods():
        if pod.ref not in endpoints or pod.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
            continue
        if not namespace_selected(pod.namespace, namespaces):
            continue
        if pod.namespace not in keys_by_ns:
            selectors_by_ns[pod.namespace] = tuple((s, compile_selector(s)) for s in index.pod_selectors(pod.namespace))
            keys_by_ns[pod.namespace] = index.selector_label_keys(pod.namespace)
        visible = Labels({k: v for k, v in pod.labels.items() if k in keys_by_ns[pod.namespace]})
        seen = (pod.namespace, visible, pod.container_ports)
        gid = gid_by_labels.get(seen)
        if gid is None:
            matched = [s for s, m in selectors_by_ns[pod.namespace] if m.matches(visible)]
            gid = gid_by_labels[seen] = _group_id(pod.namespace, matched, pod.container_ports)
        first.setdefault(gid, seen)
        members[gid][pod.node_name].append(pod.ref)
    groups = {}
    for gid, (ns, labels, ports) in first.items():
        by_node = {node: tuple(sorted(refs)) for node, refs in members[gid].items()}
        groups[gid] = ProbeGroup(gid, ns, labels, ports, by_node)
    return groups


def _placements(src: ProbeGroup, dst: ProbeGroup, unavailable: Collection[str] = ()) -> list[tuple[str, str]]:
    """Node placements covering each node of both groups (paired round-robin, not the product). Nodes where no
    probe pod can run are left out while the groups have members elsewhere (their paths are reported
    inconclusive only when there is no other node to probe them from)."""
    sn = tuple(n for n in src.nodes if n not in unavailable) or src.nodes
    dn = tuple(n for n in dst.nodes if n not in unavailable) or dst.nodes
    return [(sn[i % len(sn)], dn[i % len(dn)]) for i in range(max(len(sn), len(dn)))]


def port_class(verdict: Verdict, policies: Mapping[tuple[str, str], NetworkPolicy]) -> tuple[object, ...]:
    """What a correct CNI's treatment of one port of a pair depends on: protocol, verdict, the isolating policies
    and the admitting rules (down to the peer and port entry). Two ports with the same class are treated alike, so
    one of them represents both. An endPort range's first and last port stay apart from its inside (a CNI without
    endPort support typically honours only ``port``)."""
    parts: list[object] = [verdict.port.protocol, verdict.allowed]
    for dv in (verdict.egress, verdict.ingress):
        if dv is None:
            parts.append(None)
            continue
        refs: list[object] = []
        for r in dv.admitted_by:
            edge = None
            policy = policies.get((r.namespace, r.policy))
            if policy is not None and r.port is not None:
                spec = policy.rules(r.direction)[r.rule].ports[r.port]
                if spec.end_port is not None:
                    edge = (verdict.port.port == spec.port, verdict.port.port == spec.end_port)
            refs.append((r, edge))
        parts.append((dv.isolated, dv.isolating_policies, tuple(refs)))
    return tuple(parts)


def _policy_ports(policies: Iterable[NetworkPolicy], direction: Direction) -> list[PortProtocol]:
    out: list[PortProtocol] = []
    for policy in policies:
        for rule in policy.rules(direction):
            for p in rule.ports:
                if isinstance(p.port, int):
                    out.append(PortProtocol(p.port, p.protocol))
                    if p.end_port is not None:
                        out.append(PortProtocol(p.end_port, p.protocol))
    return out


class ProbePlanner:
    """Keeps the cycle and per-path history; `plan` returns the next round, `record` takes its outcomes."""

    def __init__(self, budget: PlanBudget) -> None:
        self.budget = budget
        self.last_probed: dict[PathKey, float] = {}
        self.pending: set[PathKey] = set()
        self.cycles_completed = 0
        self.cycle_active = False
        self.retry: set[PathKey] = set()
        self.changed_at: dict[tuple[str, str], float] = {}
        # the current cycle's outcome per path: ("judged" | "inconclusive", reason); absent = not settled yet
        self.outcomes: dict[PathKey, tuple[str, str]] = {}
        self.cycle_keys: set[PathKey] = set()
        self._unsettled: dict[PathKey, int] = {}  # inconclusive attempts this cycle that may still succeed
        self.unavailable_nodes: dict[str, str] = {}  # node -> why no probe pod can run there
        self._revision: int | None = None
        self._groups: dict[str, ProbeGroup] = {}
        self._paths: dict[PathKey, PlannedPath] = {}

    # -- path enumeration --------------------------------------------------------------------------------------

    def _ports_by_group(
        self, groups: Mapping[str, ProbeGroup], snap: Snapshot
    ) -> tuple[dict[str, list[PortProtocol]], dict[str, list[PortProtocol]]]:
        """Per group: ports it declares plus those its ingress policies name; ports its egress policies name."""
        as_dst: dict[str, list[PortProtocol]] = {}
        as_src: dict[str, list[PortProtocol]] = {}
        for g in groups.values():
            clone = Pod(g.namespace, "clone", labels=g.labels)
            ingress = [cp.policy for cp in snap.selecting(clone, Direction.INGRESS)]
            egress = [cp.policy for cp in snap.selecting(clone, Direction.EGRESS)]
            declared = [PortProtocol(p.port, p.protocol) for p in g.container_ports]
            as_dst[g.id] = declared + _policy_ports(ingress, Direction.INGRESS)
            as_src[g.id] = _policy_ports(egress, Direction.EGRESS)
        return as_dst, as_src

    def enumerate_paths(self, index: ReachabilityIndex) -> dict[PathKey, PlannedPath]:
        """Every path a full cycle covers, with its predicted verdict (for clones with the real pods' IPs)."""
        groups = probe_groups(index, self.budget.namespaces)
        snap = prediction_snapshot(index)
        policies = {p.key: p for p in index.policies()}
        as_dst, as_src = self._ports_by_group(groups, snap)
        ips = {p.ref: p.pod_ips for p in index.pods()}
        src_use: dict[str, int] = defaultdict(int)
        dst_use: dict[str, int] = defaultdict(int)
        paths: dict[PathKey, PlannedPath] = {}
        for src in groups.values():
            for dst in groups.values():
                if self.budget.ports:
                    ports = list(self.budget.ports)
                else:
                    ports = list(dict.fromkeys(as_dst[dst.id] + as_src[src.id])) or list(self.budget.fallback_ports)
                placements = _placements(src, dst, self.unavailable_nodes)
                seen: set[tuple[object, ...]] = set()
                for port in ports[: self.budget.max_ports]:
                    s0, d0 = src.member_on(placements[0][0]), dst.member_on(placements[0][1])
                    verdict = predict(snap, src, dst, port, ips.get(s0, ()), ips.get(d0, ()))
                    if self.budget.dedup_ports:
                        cls = port_class(verdict, policies)
                        if cls in seen:
                            continue
                        seen.add(cls)
                    chosen = placements
                    if self.budget.placements == "balanced":
                        best = min(
                            range(len(placements)),
                            key=lambda i: (src_use[placements[i][0]] + dst_use[placements[i][1]], i),
                        )
                        chosen = [placements[best]]
                    for src_node, dst_node in chosen:
                        src_use[src_node] += 1
                        dst_use[dst_node] += 1
                        key = PathKey(src.id, dst.id, port, src_node, dst_node)
                        s, d = src.member_on(src_node), dst.member_on(dst_node)
                        if (s, d) != (s0, d0):
                            verdict = predict(snap, src, dst, port, ips.get(s, ()), ips.get(d, ()))
                        paths[key] = PlannedPath(key, s, d, bool(verdict.allowed))
        self._groups = groups
        return paths

    # -- rounds ------------------------------------------------------------------------------------------------

    def _note_changes(self, index: ReachabilityIndex, changed: set[tuple[str, str]], now: float) -> None:
        """Map the index's changed class pairs onto probe groups and remember when they changed."""
        if not changed:
            return
        by_pod = {ref: g.id for g in self._groups.values() for refs in g.members_by_node.values() for ref in refs}
        class_to_group: dict[str, str] = {}
        for cls in index.classes():
            for ref in cls.members:
                if ref in by_pod:
                    class_to_group[cls.id] = by_pod[ref]
                    break
        for s, d in changed:
            if s in class_to_group and d in class_to_group:
                self.changed_at[(class_to_group[s], class_to_group[d])] = now

    def plan(
        self,
        index: ReachabilityIndex,
        now: float,
        new_cycle: bool = True,
        blocked: Callable[[str, str], str | None] | None = None,
    ) -> Round:
        """The next round of probes within the budget (may be empty when nothing is due). ``new_cycle``: whether a
        new cycle may start when the current one is done; between cycles only retries and changed paths are due.
        ``blocked(group id, node)``: why no pod of that group can be created on that node now (backoff after a
        refusal, an unavailable node), or None; such paths come back in ``Round.unavailable`` instead."""
        changed: set[tuple[str, str]] = set()
        if self._revision is not None and index.revision != self._revision:
            changed = index.changed_class_pairs(self._revision)
        self._revision = index.revision
        self._paths = self.enumerate_paths(index)
        self._note_changes(index, changed, now)
        if new_cycle and (not self.pending or not (self.pending & self._paths.keys())):
            self.cycle_active = True
            self.pending = set(self._paths)
            self.cycle_keys = set(self._paths)
            self.outcomes = {}
            self._unsettled = {}
        self.pending &= self._paths.keys()
        self.retry &= self._paths.keys()
        for gone in [k for k in self.outcomes if k not in self._paths]:
            del self.outcomes[gone]
        candidates: list[PlannedPath] = []
        deferred = 0
        for key, path in self._paths.items():
            changed_at = self.changed_at.get((key.src, key.dst))
            fresh = changed_at is not None and now - changed_at < self.budget.settle_seconds
            probed = self.last_probed.get(key)
            if fresh:
                deferred += 1
                continue
            if key in self.retry:
                prio = "retry"
            elif changed_at is not None and (probed is None or probed < changed_at):
                prio = "changed"
            elif key in self.pending:
                prio = "denied" if not path.predicted else "stale"
            else:
                continue
            candidates.append(PlannedPath(path.key, path.source, path.destination, path.predicted, prio))
        rank = {"retry": 0, "changed": 1, "denied": 2, "stale": 3}
        candidates.sort(key=lambda p: (rank[p.priority], self.last_probed.get(p.key, float("-inf")), p.key))
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
                pod = ProbePodPlan(self._groups[k.src], k.src_node)
                probes.setdefault((k.src, k.src_node), []).append(pod)
                used += 1
            if need_responder:
                responders[(k.dst, k.dst_node)] = ResponderPlan(self._groups[k.dst], k.dst_node)
                used += 1
            probes[(k.src, k.src_node)][-1].paths.append(path)
            responders[(k.dst, k.dst_node)].ports.add(k.port)
        return Round([p for pods in probes.values() for p in pods], list(responders.values()), deferred)

    #: an inconclusive path that may succeed on a later round of the same cycle is tried this often, then settled
    MAX_UNSETTLED_ATTEMPTS = 3

    def record(
        self, key: PathKey, now: float, *, settled: bool, retry: bool = False, reason: str = "",
        touch: bool = True,
    ) -> None:
        """Take one path's outcome. ``settled``: the path is done for this cycle; ``reason`` empty: it was judged
        (the observation matched or contradicted the prediction), else why it is inconclusive. An inconclusive
        path that is not settled is tried again in this cycle, at most `MAX_UNSETTLED_ATTEMPTS` times, so that one
        path never holds a cycle open. ``retry``: observed differs from predicted and the retry budget is not
        spent — probe it again soon. ``touch``: a probe was really made (it counts for "confirmed longest ago")."""
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
            self.outcomes[key] = ("inconclusive", reason) if reason else ("judged", "")


    def cycle_done(self) -> bool:
        """Whether the current cycle has probed every one of its paths (and was not finished yet)."""
        return self.cycle_active and not self.pending

    def finish_cycle(self) -> None:
        self.cycle_active = False
        self.cycles_completed += 1

    def coverage(self) -> float:
        """Paths of this cycle whose observation was judged against the prediction / all paths planned for it.
        Inconclusive paths (whatever the reason) are not covered: they are counted apart (`path_states`)."""
        planned = self.cycle_paths()
        if not planned:
            return 0.0
        return sum(1 for k in planned if self.outcomes.get(k, ("", ""))[0] == "judged") / len(planned)

    def cycle_paths(self) -> set[PathKey]:
        """The paths the current cycle covers (those planned at its start that still exist)."""
        return self.cycle_keys & self._paths.keys()

    def path_states(self) -> dict[tuple[str, str], int]:
        """The current cycle's paths by (state, reason): ``judged``, ``inconclusive`` with its reason, or
        ``pending`` (not settled yet)."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for key in self.cycle_paths():
            out[self.outcomes.get(key, ("pending", ""))] += 1
        return dict(out)

    def group(self, gid: str) -> ProbeGroup | None:
        return self._groups.get(gid)

    def path(self, key: PathKey) -> PlannedPath | None:
        return self._paths.get(key)


def prediction_snapshot(index: ReachabilityIndex) -> Snapshot:
    """The engine's reference evaluator over the index's namespaces and policies, without pods: probe clones are
    added per question (`clone_verdict`)."""
    return Snapshot.from_objects([*index.namespaces(), *index.policies()])


def clone_pods(
    src: ProbeGroup, dst: ProbeGroup, src_ips: tuple[str, ...], dst_ips: tuple[str, ...]
) -> tuple[Pod, Pod]:
    """Model pods for a probe cloned from ``src`` and a responder cloned from ``dst``, with the given IPs."""
    s = Pod(src.namespace, "netpol-auditor-probe", labels=src.labels, pod_ips=src_ips)
    d = Pod(
        dst.namespace, "netpol-auditor-responder", labels=dst.labels, pod_ips=dst_ips,
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
