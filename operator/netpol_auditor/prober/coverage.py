"""The paths a probe cycle covers, kept up to date from the cluster's objects instead of enumerated every round.

A *probe group* is pods no policy can tell apart (same namespace, matched by the same pod selectors, same named
ports). Which group pairs are probed depends on the cluster's size:

- **pairs** (up to ``PlanBudget.max_pair_groups`` groups): every ordered pair of groups, one path per port class;
- **decisions** (beyond): every *decision* a correct enforcer makes is probed once, not every pair. For each
  destination group, the sources are split into *cells* by which peers of its ingress rules they match (sources of a
  cell are admitted, or not, by exactly the same rule entries); each cell is probed from one source, chosen among
  those whose egress is not isolated where there is one, so that the result shows the ingress decision alone. For
  each egress-isolated source group, the destinations are split the same way by its egress rules' peers and the
  named ports they resolve, and each cell is probed to one destination whose ingress is not isolated where there is
  one. The number of paths grows with groups times rule peers, not with groups squared: at 10k pods (2.5k groups)
  the pairs would be 6.5M.

Either way, within a cell one port per port class is probed (`port_class`) and each path gets one node placement,
chosen by a hash of the path, so that placements are spread over the nodes and stay the same from cycle to cycle.

The state is incremental: `CoveragePlan.update` takes the current objects, works out which groups changed, and
recomputes only their own cells and the cells whose representative changed; nothing is done when nothing changed.
Bit sets over group *slots* make a cell split a few integer operations. Representatives are the lowest slot of a
cell, so the plan depends on the slot table; `rebuilt` recomputes everything from scratch with the same slots,
which is what the incremental plan must equal (the periodic self-check, and the property test).

Pure and I/O-free: runs on a snapshot of the index's objects (`PlanInputs`), in a worker thread if need be.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netpol_auditor.bulk import collector_paused
from netpol_auditor.cluster_policy import ClusterPolicy, Tier
from netpol_auditor.engine import (
    CompiledPeer,
    CompiledPolicy,
    PeerInfo,
    PolicyKey,
    Verdict,
    compile_policy,
    judge_tiers,
    make_verdict,
)
from netpol_auditor.model import (
    ContainerPort,
    Direction,
    Labels,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    Pod,
    PodRef,
    PortProtocol,
    Protocol,
)
from netpol_auditor.prober.features import excepted, exercised_features
from netpol_auditor.selectors import SelectorMatcher, compile_selector
from netpol_auditor.tiers import CompiledClusterPeer, CompiledClusterPolicy, compile_cluster_policy

__all__ = [
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "CoveragePlan",
    "PathKey",
    "PlanBudget",
    "PlanDelta",
    "PlanInputs",
    "PlannedPath",
    "ProbeGroup",
    "namespace_selected",
    "port_class",
]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "netpol-auditor"
CLONE_SOURCE_NAME = "netpol-auditor-probe"  # the model pods a prediction is made for
CLONE_DESTINATION_NAME = "netpol-auditor-responder"


@dataclass(frozen=True)
class PlanBudget:
    """Budget knobs. ``ports`` empty: the ports destinations declare plus those the relevant policies name."""

    max_pods: int = 10
    targets_per_pod: int = 40
    max_ports: int = 8
    ports: tuple[PortProtocol, ...] = ()
    fallback_ports: tuple[PortProtocol, ...] = (PortProtocol(80),)
    namespaces: tuple[str, ...] = ()  # globs; "!glob" excludes; empty: every namespace
    # "balanced": one node placement per path, spread by hash; "all": every paired node placement
    placements: str = "balanced"
    # probe one port per port class: ports the pair's policies treat alike (same verdict, same deciding rules)
    dedup_ports: bool = True
    settle_seconds: float = 5.0
    # up to this many probe groups every ordered group pair is probed; beyond, every decision (module doc)
    max_pair_groups: int = 100


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

    @property
    def primary(self) -> PodRef:
        return self.member_on(self.nodes[0])


@dataclass(frozen=True, order=True)
class PathKey:
    src: str  # probe group ids
    dst: str
    port: PortProtocol
    src_node: str
    dst_node: str


#: (feature, direction, predicted allowed, node): "this feature, enforced in this direction on this node, works"
#: is what a probe agreeing with that prediction proves (features.exercised_features, ``proven``)
Obligation = tuple[str, str, bool, str]


@dataclass(frozen=True)
class PlannedPath:
    key: PathKey
    source: PodRef  # the real pod the probe stands in for
    destination: PodRef
    predicted: bool
    priority: str = "stale"  # "retry" | "changed" | "denied" | "stale"
    #: the pair's node placements, each with what a probe there would prove (derived: not part of identity)
    placements: tuple[tuple[str, str, frozenset[Obligation]], ...] = field(default=(), compare=False)


@dataclass
class PlanDelta:
    """What an update changed: paths that are new or predicted otherwise, and paths that are gone."""

    changed: set[PathKey] = field(default_factory=set)
    removed: set[PathKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.changed or self.removed)


@dataclass(frozen=True)
class PlanInputs:
    """What planning reads: a consistent copy of the index's objects (cheap to take: dict copies)."""

    revision: int
    namespaces: Mapping[str, Labels]
    policies: Mapping[PolicyKey, NetworkPolicy]
    endpoints: Mapping[PodRef, Pod]  # pods that are judged (running, with an IP, not host-networked)
    unavailable_nodes: Mapping[str, str] = field(default_factory=dict)
    #: AdminNetworkPolicies, BaselineAdminNetworkPolicies, ClusterNetworkPolicies as the index compiled them
    cluster_policies: Mapping[tuple[str, str], CompiledClusterPolicy] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: Iterable[Namespace | NetworkPolicy | Pod | ClusterPolicy], revision: int = 0,
           unavailable_nodes: Mapping[str, str] | None = None) -> PlanInputs:
        namespaces: dict[str, Labels] = {}
        policies: dict[PolicyKey, NetworkPolicy] = {}
        endpoints: dict[PodRef, Pod] = {}
        cluster: dict[tuple[str, str], CompiledClusterPolicy] = {}
        for obj in objects:
            if isinstance(obj, Namespace):
                namespaces[obj.name] = obj.labels
            elif isinstance(obj, NetworkPolicy):
                policies[obj.key] = obj
            elif isinstance(obj, ClusterPolicy):
                cluster[obj.key] = compile_cluster_policy(obj)
            elif isinstance(obj, Pod) and obj.is_endpoint:
                endpoints[obj.ref] = obj
        return cls(revision, namespaces, policies, endpoints, dict(unavailable_nodes or {}), cluster)

    def namespace_labels(self, name: str) -> Labels:
        labels = self.namespaces.get(name)
        return labels if labels is not None else Namespace(name).labels


def namespace_selected(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether ``namespace`` is opted in: no include pattern or one matches, and no ``!pattern`` matches."""
    includes = [p for p in patterns if not p.startswith("!")]
    excludes = [p[1:] for p in patterns if p.startswith("!")]
    if any(fnmatch.fnmatchcase(namespace, p) for p in excludes):
        return False
    return not includes or any(fnmatch.fnmatchcase(namespace, p) for p in includes)


def port_class(verdict: Verdict, policies: Mapping[PolicyKey, NetworkPolicy], src_ips: tuple[str, ...] = (),
               dst_ips: tuple[str, ...] = ()) -> tuple[object, ...]:
    """What a correct CNI's treatment of one port of a pair depends on: protocol, verdict, the isolating policies
    and the admitting rules (down to the peer and port entry). Two ports with the same class are treated alike, so
    one of them represents both. An endPort range's first and last port stay apart from its inside (a CNI without
    endPort support typically honours only ``port``), and so does a port an ipBlock ``except`` denies (for the
    addresses given) from one denied for want of any rule."""
    parts: list[object] = [verdict.port.protocol, verdict.allowed]
    for dv, other_ips in ((verdict.egress, dst_ips), (verdict.ingress, src_ips)):
        if dv is None:
            parts.append(None)
            continue
        if not dv.allowed:
            parts.append(excepted(policies, dv, other_ips, verdict.port))
        refs: list[object] = []
        for r in dv.admitted_by:
            edge = None
            policy = policies.get((r.namespace, r.policy))
            if policy is not None and r.port is not None:
                spec = policy.rules(r.direction)[r.rule].ports[r.port]
                if spec.end_port is not None:
                    edge = (verdict.port.port == spec.port, verdict.port.port == spec.end_port)
            refs.append((r, edge))
        parts.append((dv.isolated, dv.isolating_policies, tuple(refs), dv.admin, dv.baseline, dv.unknown))
    return tuple(parts)


def _group_id(namespace: str, matched: Iterable[LabelSelector], ports: Iterable[ContainerPort]) -> str:
    named = sorted((p.name or "", p.port, p.protocol.value) for p in ports if p.name)
    text = repr((namespace, sorted(repr(s) for s in matched), named))
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _policy_ports(policies: Iterable[CompiledPolicy], direction: Direction,
                  cluster: Iterable[CompiledClusterPolicy] = ()) -> list[PortProtocol]:
    out: list[PortProtocol] = []
    for cp in policies:
        for rule in cp.policy.rules(direction):
            for p in rule.ports:
                if isinstance(p.port, int):
                    out.append(PortProtocol(p.port, p.protocol))
                    if p.end_port is not None:
                        out.append(PortProtocol(p.end_port, p.protocol))
    for ccp in cluster:
        for cluster_rule in ccp.policy.rules(direction):
            for cport in cluster_rule.ports:
                if cport.port is not None and cport.protocol is not None:
                    out.append(PortProtocol(cport.port, cport.protocol))
                    if cport.end_port is not None:
                        out.append(PortProtocol(cport.end_port, cport.protocol))
    return out


@dataclass(frozen=True)
class Judges:
    """What judges one direction of a group, tier by tier: the cluster policies of the Admin tier that select it,
    the NetworkPolicies that isolate it, the cluster policies of the Baseline tier (each in the order
    `netpol_auditor.engine.judge_tiers` takes them)."""

    admin: tuple[CompiledClusterPolicy, ...] = ()
    policies: tuple[CompiledPolicy, ...] = ()
    baseline: tuple[CompiledClusterPolicy, ...] = ()

    @property
    def cluster(self) -> tuple[CompiledClusterPolicy, ...]:
        return self.admin + self.baseline

    def __bool__(self) -> bool:
        """Whether anything but the default (allow) can decide this direction."""
        return bool(self.admin or self.policies or self.baseline)


def _clone_verdict(src_egress: Judges, src: PeerInfo, dst_ingress: Judges, dst: PeerInfo,
                   port: PortProtocol) -> Verdict:
    """The verdict for a probe clone connecting to a responder clone, through the tiers (the same evaluation as
    the index and analyze): the source's egress judges the destination, the destination's ingress the source;
    named ports resolve on the destination."""
    eg = judge_tiers(Direction.EGRESS, src_egress.policies, src_egress.admin, src_egress.baseline, dst, port,
                     dst.named_ports)
    ing = judge_tiers(Direction.INGRESS, dst_ingress.policies, dst_ingress.admin, dst_ingress.baseline, src, port,
                      dst.named_ports)
    return make_verdict(PodRef(src.namespace or "", CLONE_SOURCE_NAME),
                        PodRef(dst.namespace or "", CLONE_DESTINATION_NAME), port, eg, ing)


def _same(a: Sequence[object], b: Sequence[object]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


#: node combinations judged apart for a pair whose policies have an ipBlock ``except`` (nodes x nodes, capped)
MAX_ADDRESS_PLACEMENTS = 64


def _telling(proves: frozenset[Obligation]) -> frozenset[Obligation]:
    """What one probe tells apart: a feature exercised on both sides, on two nodes, is proven only if the probe
    agrees; if it does not, nothing says which node failed. Those count for neither node (a placement with both
    ends on one node does tell)."""
    nodes: dict[tuple[str, bool], set[str]] = defaultdict(set)
    for f, _, predicted, node in proves:
        nodes[(f, predicted)].add(node)
    return frozenset(o for o in proves if len(nodes[(o[0], o[2])]) == 1)


def _stable_hash(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=4).digest(), "big")


def _placements(src: ProbeGroup, dst: ProbeGroup, unavailable: Mapping[str, str]) -> list[tuple[str, str]]:
    """Node placements covering each node of both groups (paired round-robin, not the product). Nodes where no
    probe pod can run are left out while the groups have members elsewhere (their paths are reported
    inconclusive only when there is no other node to probe them from)."""
    sn = tuple(n for n in src.nodes if n not in unavailable) or src.nodes
    dn = tuple(n for n in dst.nodes if n not in unavailable) or dst.nodes
    return [(sn[i % len(sn)], dn[i % len(dn)]) for i in range(max(len(sn), len(dn)))]


# -- peers as bit sets -----------------------------------------------------------------------------------------

PeerKey = tuple[str, Any, Any, Any]  # (namespace scope or "", namespace selector, pod selector, ipBlock)
PAIRS: tuple[str] = ("pairs",)  # the split of a side in pairs mode


def _peer_key(peer: CompiledPeer | CompiledClusterPeer) -> PeerKey:
    if isinstance(peer, CompiledClusterPeer):
        return ("", "cluster", peer.peer, None)  # never a NetworkPolicy peer's key (a selector or None there)
    if peer.ip_block is not None:
        return ("", None, None, peer.ip_block.block)
    scope = peer.policy_namespace if peer.namespace is None else ""
    return (
        scope,
        None if peer.namespace is None else peer.namespace.selector,
        None if peer.pods is None else peer.pods.selector,
        None,
    )


@dataclass(frozen=True)
class _NamedPort:
    """A cell split by the value of one named port (``name/PROTO``) of the destination (egress rules resolve named
    ports on the destination)."""

    name: str


@dataclass(eq=False)
class _Member:
    """One probe group and what planning needs of it. ``token`` changes whenever anything of it changes."""

    group: ProbeGroup
    slot: int
    token: int
    seen: ProbeGroup | None  # the group as the rest was computed for
    info: PeerInfo  # the group as a rule sees it (selector-visible labels, its primary member's addresses)
    sel_in: tuple[CompiledPolicy, ...]
    sel_eg: tuple[CompiledPolicy, ...]
    ports_in: tuple[PortProtocol, ...]  # declared, plus those its ingress policies name
    ports_eg: tuple[PortProtocol, ...]  # those its egress policies name
    judges_in: Judges = Judges()  # the tiers of its ingress (sel_in the NetworkPolicy one)
    judges_eg: Judges = Judges()


@dataclass(eq=False)
class _Cell:
    bits: int
    rep: int = -1  # slot of the representative the paths were computed for
    rep_token: int = -1
    paths: tuple[PlannedPath, ...] = ()


@dataclass(eq=False)
class _Side:
    """The cells of one group's decisions: its ingress (a *column*: cells of sources) or its egress (a *row*:
    cells of destinations)."""

    owner: str
    ingress: bool
    split: tuple[Any, ...]  # PeerKeys (bool components) then _NamedPorts (value components); PAIRS: one cell a group
    cells: dict[tuple[Any, ...], _Cell] = field(default_factory=dict)


class CoveragePlan:
    """The planned paths of a probe cycle, maintained incrementally (module doc)."""

    def __init__(self, budget: PlanBudget) -> None:
        self.budget = budget
        self.inputs: PlanInputs | None = None
        self.paths: dict[PathKey, PlannedPath] = {}  # the cells' paths and the node cover (replaced, never mutated)
        self._base: dict[PathKey, PlannedPath] = {}  # the cells' paths
        self.cover: dict[PathKey, PlannedPath] = {}  # extra node placements (`_node_cover`)
        self.groups: dict[str, ProbeGroup] = {}
        self.mode = "pairs"
        self.version = 0  # counts the updates that changed the paths
        self._members: dict[str, _Member] = {}
        self._by_slot: dict[int, str] = {}
        self._free_slots: list[int] = []
        self._next_slot = 0
        self._tokens = 0
        self._groups_by_ns: dict[str, set[str]] = defaultdict(set)
        self._compiled: dict[PolicyKey, CompiledPolicy] = {}
        self._policies_by_ns: dict[str, list[CompiledPolicy]] = defaultdict(list)
        self._global_selectors: tuple[LabelSelector, ...] = ()
        self._cluster_ordered: tuple[CompiledClusterPolicy, ...] = ()  # by precedence
        self._pods_by_ns: dict[str, dict[PodRef, Pod]] = defaultdict(dict)
        self._peer_bits: dict[PeerKey, int] = {}
        self._peer_matchers: dict[PeerKey, CompiledPeer | CompiledClusterPeer] = {}
        self._live_peers = 0  # peers in use at the last prune
        self._named_bits: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._all = 0
        self._open_in = 0  # groups not isolated for ingress
        self._open_eg = 0
        self._sides: dict[tuple[str, bool], _Side] = {}
        self._refs: dict[PathKey, int] = defaultdict(int)
        self._touched: dict[PathKey, PlannedPath | None] = {}  # paths an update touched, as they were before it
        self._rules_changed: set[str] = set()  # groups whose policies or peer view an update changed

    # -- public ----------------------------------------------------------------------------------------------

    def update(self, inputs: PlanInputs) -> PlanDelta:
        """Bring the plan up to ``inputs``; says which paths are new or predicted otherwise, and which are gone."""
        old = self.inputs
        if old is not None and old.revision == inputs.revision and old.unavailable_nodes == inputs.unavailable_nodes:
            return PlanDelta()
        version = self.version
        # a cluster policy selects and names pods of any namespace: rare changes, recomputed from scratch
        if (old is None or old.unavailable_nodes != inputs.unavailable_nodes
                or old.cluster_policies != inputs.cluster_policies):
            with collector_paused():
                delta = self._rebuild(inputs, self._slots())
        else:
            self._touched = {}
            self._rules_changed = set()
            before = self.paths
            old_cover = self.cover
            self._apply(old, inputs)
            if self._mode_for(len(self._members)) != self.mode:
                with collector_paused():
                    delta = self._rebuild(inputs, self._slots())
            else:
                self._finish()
                keys = self._touched.keys() | old_cover.keys() | self.cover.keys()
                delta = self._delta({k: before.get(k) for k in keys})
        self.version = version + 1 if delta else version
        return delta

    def _finish(self) -> None:
        self.cover = self._node_cover()
        self.paths = {**self._base, **self.cover}

    def _node_cover(self) -> dict[PathKey, PlannedPath]:
        """Extra placements so that every node is probed for every feature it must enforce.

        A port class of a group pair is probed at one node placement ("balanced"), so a feature broken on one
        node only (endPort ignored there, one node's agent down) would go unseen wherever the classes that
        exercise it were placed elsewhere. For each obligation (feature, direction, prediction, node) that some
        placement of a planned pair could prove and none planned does, the first path (by key) whose pair can
        prove it gets that placement too: at most features x directions x 2 x nodes extra paths."""
        if self.budget.placements != "balanced":
            return {}
        covered: set[Obligation] = set()
        possible: set[Obligation] = set()
        for p in self._base.values():
            for sn, dn, proves in p.placements:
                possible |= proves
                if (sn, dn) == (p.key.src_node, p.key.dst_node):
                    covered |= _telling(proves)
        missing = possible - covered
        out: dict[PathKey, PlannedPath] = {}
        if not missing:
            return out
        for p in sorted(self._base.values(), key=lambda p: p.key):
            for sn, dn, proves in p.placements:
                proves = _telling(proves)
                if proves & missing:
                    key = PathKey(p.key.src, p.key.dst, p.key.port, sn, dn)
                    if key in self._base or key in out:
                        continue
                    src, dst = self.groups[key.src], self.groups[key.dst]
                    out[key] = PlannedPath(key, src.member_on(sn), dst.member_on(dn), p.predicted)
                    missing -= proves
            if not missing:
                break
        return out

    def _delta(self, before: Mapping[PathKey, PlannedPath | None]) -> PlanDelta:
        """Paths gone, and paths changed: new, predicted otherwise, or of a group whose policies or peer view
        changed (the enforcer reprograms them even where the verdict stays). A group that only gained or lost
        members changes nothing of its other paths."""
        delta = PlanDelta()
        rules = self._rules_changed
        for k, prev in before.items():
            p = self.paths.get(k)
            if p is None:
                if prev is not None:
                    delta.removed.add(k)
            elif prev is None or prev.predicted != p.predicted or k.src in rules or k.dst in rules:
                delta.changed.add(k)
        return delta

    def rebuilt(self) -> CoveragePlan:
        """A plan computed from scratch on the same inputs and with the same slot table (the self-check)."""
        other = CoveragePlan(self.budget)
        if self.inputs is not None:
            other._rebuild(self.inputs, self._slots())
        return other

    def _slots(self) -> dict[str, int]:
        return {gid: m.slot for gid, m in self._members.items()}

    def verdict(self, src: ProbeGroup, dst: ProbeGroup, port: PortProtocol, src_ips: tuple[str, ...],
                dst_ips: tuple[str, ...]) -> Verdict:
        """What the policies predict for a probe cloned from ``src`` connecting to a responder cloned from ``dst``
        with the given addresses (the probe pods' own when judging, so ipBlock rules see the real traffic)."""
        assert self.inputs is not None
        s_info = self._info(src, src_ips or ("192.0.2.1",))
        d_info = self._info(dst, dst_ips or ("192.0.2.2",))
        return _clone_verdict(self._judges(src, Direction.EGRESS), s_info, self._judges(dst, Direction.INGRESS),
                              d_info, port)

    # -- full build and incremental update ---------------------------------------------------------------------

    def _mode_for(self, groups: int) -> str:
        return "pairs" if groups <= self.budget.max_pair_groups else "decisions"

    def _rebuild(self, inputs: PlanInputs, slots: Mapping[str, int]) -> PlanDelta:
        """Everything from scratch; groups that exist in ``slots`` keep their slot."""
        before = self.paths
        self.__init__(self.budget)  # type: ignore[misc]
        self.inputs = inputs
        for key, policy in inputs.policies.items():
            self._compiled[key] = compile_policy(policy)
        self._cluster_ordered = tuple(sorted(inputs.cluster_policies.values(), key=lambda cp: cp.order))
        self._index_policies()
        for ref, pod in inputs.endpoints.items():
            self._pods_by_ns[ref.namespace][ref] = pod
        groups: dict[str, ProbeGroup] = {}
        for ns in self._pods_by_ns:
            groups.update(self._group_namespace(ns))
        self.mode = self._mode_for(len(groups))
        kept = [g for g in groups if g in slots]
        for gid in sorted(kept, key=lambda g: slots[g]):
            self._add_member(groups[gid], slots[gid])
        for gid in sorted(g for g in groups if g not in slots):
            self._add_member(groups[gid], None)
        for gid in sorted(self._members):
            self._update_bits(gid)
        for gid in sorted(self._members):
            self._build_sides(gid)
        self._finish()
        return self._delta({**before, **dict.fromkeys(self.paths.keys() - before.keys())})

    def _apply(self, old: PlanInputs, new: PlanInputs) -> None:
        self.inputs = new
        labels_changed = {n for n in old.namespaces.keys() | new.namespaces.keys()
                          if old.namespaces.get(n) != new.namespaces.get(n)}
        changed_policies = {k for k in old.policies.keys() | new.policies.keys()
                            if old.policies.get(k) is not new.policies.get(k)
                            and old.policies.get(k) != new.policies.get(k)}
        regroup: set[str] = set()
        for ref in old.endpoints.keys() - new.endpoints.keys():
            self._pods_by_ns[ref.namespace].pop(ref, None)
            regroup.add(ref.namespace)
        for ref, pod in new.endpoints.items():
            was = old.endpoints.get(ref)
            if was is not pod and was != pod:
                self._pods_by_ns[ref.namespace][ref] = pod
                regroup.add(ref.namespace)
        if changed_policies:
            global_before = self._global_selectors
            for key in changed_policies:
                policy = new.policies.get(key)
                if policy is None:
                    self._compiled.pop(key, None)
                else:
                    self._compiled[key] = compile_policy(policy)
                regroup.add(key[0])
            self._index_policies()
            if set(self._global_selectors) != set(global_before):
                regroup |= set(self._pods_by_ns)
        refacts = set(regroup) | labels_changed
        changed: set[str] = set()
        removed: set[str] = set()
        for ns in regroup:
            fresh = self._group_namespace(ns)
            for gid in self._groups_by_ns.get(ns, set()) - fresh.keys():
                removed.add(gid)
            for gid, group in fresh.items():
                if gid in self._members and self._members[gid].group == group:
                    continue
                changed.add(gid)
                if gid in self._members:
                    self._members[gid].group = group
                else:
                    self._add_member(group, None)
        removed_slots = {gid: self._members[gid].slot for gid in removed}
        for gid in removed:
            self._remove_member(gid)
        for ns in refacts:
            for gid in self._groups_by_ns.get(ns, ()):
                if self._refresh_member(gid):
                    changed.add(gid)
        if not changed and not removed:
            return
        for gid in changed:
            self._update_bits(gid)
        for gid in removed:
            for owner_ingress in ((gid, True), (gid, False)):
                side = self._sides.pop(owner_ingress, None)
                if side is not None:
                    self._drop_side_paths(side)
        for gid in changed:
            self._build_sides(gid)
        for (owner, _), side in list(self._sides.items()):
            if owner not in changed:
                self._move_members(side, changed, set(removed_slots.values()))
        if changed_policies:
            self._prune_peers()

    # -- groups ------------------------------------------------------------------------------------------------

    def _index_policies(self) -> None:
        by_ns: dict[str, list[CompiledPolicy]] = defaultdict(list)
        global_sel: dict[LabelSelector, None] = {}
        for key in sorted(self._compiled):
            cp = self._compiled[key]
            by_ns[key[0]].append(cp)
            for rules in (cp.ingress, cp.egress):
                for rule in rules:
                    for peer in rule.peers:
                        if peer.pods is not None and peer.namespace is not None:
                            global_sel[peer.pods.selector] = None
        for ccp in self._cluster_ordered:  # their subjects and pod peers select pods of any namespace
            if ccp.policy.subject.pods is not None:
                global_sel[ccp.policy.subject.pods.pod_selector] = None
            for cluster_rule in (*ccp.policy.ingress, *ccp.policy.egress):
                for cpeer in cluster_rule.peers:
                    if cpeer.pods is not None:
                        global_sel[cpeer.pods.pod_selector] = None
        self._policies_by_ns = by_ns
        self._global_selectors = tuple(global_sel)

    def selector_label_keys(self, namespace: str) -> frozenset[str]:
        """Pod label keys any policy selector can look at for pods of ``namespace``."""
        return frozenset().union(*(s.keys() for s, _ in self._pod_selectors(namespace)))

    def _pod_selectors(self, namespace: str) -> tuple[tuple[LabelSelector, SelectorMatcher], ...]:
        """Every distinct pod selector a policy can apply to pods of ``namespace`` (as
        `ReachabilityIndex.pod_selectors`, with the cross-namespace ones collected once)."""
        found: dict[LabelSelector, None] = {}
        for cp in self._policies_by_ns.get(namespace, ()):
            found[cp.policy.pod_selector] = None
            for rules in (cp.ingress, cp.egress):
                for rule in rules:
                    for peer in rule.peers:
                        if peer.pods is not None and peer.namespace is None:
                            found[peer.pods.selector] = None
        found.update(dict.fromkeys(self._global_selectors))
        return tuple((s, compile_selector(s)) for s in found)

    def _group_namespace(self, namespace: str) -> dict[str, ProbeGroup]:
        """The groups of one namespace's endpoint pods (none for a namespace the budget leaves out, and never our
        own probe pods). A group's clone carries the labels of its first member (by name) that any selector looks
        at; every member matches the same selectors, so the clone does too."""
        pods = self._pods_by_ns.get(namespace)
        if not pods or not namespace_selected(namespace, self.budget.namespaces):
            return {}
        selectors = self._pod_selectors(namespace)
        keys = frozenset().union(*(s.keys() for s, _ in selectors))
        members: dict[str, dict[str, list[PodRef]]] = defaultdict(lambda: defaultdict(list))
        first: dict[str, tuple[Labels, tuple[ContainerPort, ...]]] = {}
        seen_ids: dict[tuple[Labels, tuple[ContainerPort, ...]], str] = {}
        for ref in sorted(pods):
            pod = pods[ref]
            if pod.labels.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
                continue
            visible = Labels({k: v for k, v in pod.labels.items() if k in keys})
            seen = (visible, pod.container_ports)
            gid = seen_ids.get(seen)
            if gid is None:
                matched = [s for s, m in selectors if m.matches(visible)]
                gid = seen_ids[seen] = _group_id(namespace, matched, pod.container_ports)
            first.setdefault(gid, seen)
            members[gid][pod.node_name].append(ref)
        return {
            gid: ProbeGroup(gid, namespace, labels, ports, {n: tuple(refs) for n, refs in sorted(members[gid].items())})
            for gid, (labels, ports) in first.items()
        }

    def _add_member(self, group: ProbeGroup, slot: int | None) -> None:
        """File a new group under ``slot`` (kept slots come in increasing order) or the lowest free one."""
        if slot is None:
            slot = heapq.heappop(self._free_slots) if self._free_slots else self._next_slot
        for gap in range(self._next_slot, slot):  # a kept slot beyond the others leaves a gap
            heapq.heappush(self._free_slots, gap)
        self._next_slot = max(self._next_slot, slot + 1)
        self._by_slot[slot] = group.id
        self._members[group.id] = _Member(group, slot, -1, None, self._info(group, ()), (), (), (), ())
        self._groups_by_ns[group.namespace].add(group.id)
        self.groups[group.id] = group
        self._refresh_member(group.id)

    def _remove_member(self, gid: str) -> None:
        m = self._members.pop(gid)
        del self._by_slot[m.slot]
        heapq.heappush(self._free_slots, m.slot)
        self._groups_by_ns[m.group.namespace].discard(gid)
        self.groups.pop(gid, None)
        self._clear_bits(m.slot)

    def _info(self, group: ProbeGroup, ips: tuple[str, ...]) -> PeerInfo:
        assert self.inputs is not None
        if not ips:
            pod = self.inputs.endpoints.get(group.primary)
            ips = pod.pod_ips if pod is not None else ()
        named = Pod(group.namespace, "clone", container_ports=group.container_ports).named_ports()
        return PeerInfo(group.namespace, self.inputs.namespace_labels(group.namespace), group.labels, ips, named)

    def _selecting(self, group: ProbeGroup, direction: Direction) -> tuple[CompiledPolicy, ...]:
        """The policies that isolate the group for ``direction``, by name (`_index_policies` keeps them so)."""
        return tuple(cp for cp in self._policies_by_ns.get(group.namespace, ())
                     if cp.isolates(direction) and cp.selects(group.labels))

    def _judges(self, group: ProbeGroup, direction: Direction) -> Judges:
        """The tiers of one direction of the group: cluster policies whose subject selects it and that have rules
        for ``direction``, in precedence order, around its isolating NetworkPolicies."""
        policies = self._selecting(group, direction)
        if not self._cluster_ordered:
            return Judges(policies=policies)
        assert self.inputs is not None
        ns_labels = self.inputs.namespace_labels(group.namespace)
        selecting = [cp for cp in self._cluster_ordered
                     if cp.rules(direction) and cp.selects(ns_labels, group.labels)]
        return Judges(tuple(cp for cp in selecting if cp.policy.tier is Tier.ADMIN), policies,
                      tuple(cp for cp in selecting if cp.policy.tier is Tier.BASELINE))

    def _refresh_member(self, gid: str) -> bool:
        """Recompute what planning needs of a group; True when anything changed (a new token)."""
        m = self._members[gid]
        g = m.group
        info = self._info(g, ())
        judges_in = self._judges(g, Direction.INGRESS)
        judges_eg = self._judges(g, Direction.EGRESS)
        sel_in, sel_eg = judges_in.policies, judges_eg.policies
        # compiled policies compare by identity: a changed policy is compiled anew
        same_rules = (m.seen is not None and m.info == info and _same(m.sel_in, sel_in) and _same(m.sel_eg, sel_eg)
                      and _same(m.judges_in.cluster, judges_in.cluster)
                      and _same(m.judges_eg.cluster, judges_eg.cluster))
        if same_rules and m.seen == g:
            return False
        if m.seen is not None and not same_rules:
            self._rules_changed.add(gid)
        self.groups[gid] = g
        declared = [PortProtocol(p.port, p.protocol) for p in g.container_ports]
        self._tokens += 1
        m.token, m.seen, m.info, m.sel_in, m.sel_eg = self._tokens, g, info, sel_in, sel_eg
        m.judges_in, m.judges_eg = judges_in, judges_eg
        m.ports_in = tuple(declared + _policy_ports(sel_in, Direction.INGRESS, judges_in.cluster))
        m.ports_eg = tuple(_policy_ports(sel_eg, Direction.EGRESS, judges_eg.cluster))
        return True

    # -- bit sets ----------------------------------------------------------------------------------------------

    def _clear_bits(self, slot: int) -> None:
        mask = ~(1 << slot)
        self._all &= mask
        self._open_in &= mask
        self._open_eg &= mask
        for key in self._peer_bits:
            self._peer_bits[key] &= mask
        for values in self._named_bits.values():
            for v in values:
                values[v] &= mask

    def _update_bits(self, gid: str) -> None:
        m = self._members[gid]
        bit = 1 << m.slot
        self._clear_bits(m.slot)
        self._all |= bit
        if not m.judges_in:
            self._open_in |= bit
        if not m.judges_eg:
            self._open_eg |= bit
        for key, matcher in self._peer_matchers.items():
            if (not key[0] or key[0] == m.group.namespace) and matcher.matches(m.info):
                self._peer_bits[key] |= bit
        for name, value in (m.info.named_ports or Labels()).items():
            self._named_bits[name][value] |= bit

    def _prune_peers(self) -> None:
        """Forget the bit sets of peers no side uses any more (their policies changed or are gone) once they
        outnumber the live ones: every cached bit set is kept up to date on every group change."""
        if len(self._peer_bits) < 2 * self._live_peers + 64:
            return
        live = {k for side in self._sides.values() if side.split != PAIRS for k in side.split
                if not isinstance(k, _NamedPort)}
        for key in [k for k in self._peer_bits if k not in live]:
            del self._peer_bits[key]
            del self._peer_matchers[key]
        self._live_peers = len(live)

    def _peer(self, peer: CompiledPeer | CompiledClusterPeer) -> PeerKey:
        key = _peer_key(peer)
        if key not in self._peer_bits:
            bits = 0
            candidates = self._groups_by_ns.get(key[0], ()) if key[0] else self._members
            for gid in candidates:
                m = self._members[gid]
                if peer.matches(m.info):
                    bits |= 1 << m.slot
            self._peer_bits[key] = bits
            self._peer_matchers[key] = peer
        return key

    # -- sides and cells ---------------------------------------------------------------------------------------

    def _build_sides(self, gid: str) -> None:
        m = self._members[gid]
        for ingress in (True, False):
            old = self._sides.pop((gid, ingress), None)
            if old is not None:
                self._drop_side_paths(old)
        self._sides[(gid, True)] = self._new_side(m, ingress=True)
        if self.mode == "decisions" and m.judges_eg:
            self._sides[(gid, False)] = self._new_side(m, ingress=False)

    def _new_side(self, m: _Member, ingress: bool) -> _Side:
        if self.mode == "pairs":
            split: tuple[Any, ...] = PAIRS
        else:
            direction = Direction.INGRESS if ingress else Direction.EGRESS
            judges = m.judges_in if ingress else m.judges_eg
            rules = [r for cp in judges.policies for r in cp.rules(direction)]
            cluster_rules = [r for cp in judges.cluster for r in cp.rules(direction)]
            peers = {self._peer(p): None for r in rules for p in r.peers}
            peers.update((self._peer(p), None) for r in cluster_rules for p in r.peers)
            names: dict[str, None] = {}
            if not ingress:
                for r in rules:
                    for port in r.ports:
                        if isinstance(port.port.port, str):
                            names[f"{port.port.port}/{port.port.protocol.value}"] = None
                for cluster_rule in cluster_rules:
                    for cport in cluster_rule.ports:
                        if cport.port.named_port is not None:  # it takes the protocol of the pod's port
                            names.update(dict.fromkeys(f"{cport.port.named_port}/{proto.value}" for proto in Protocol))
            split = (*peers, *(_NamedPort(n) for n in names))
        side = _Side(m.group.id, ingress, split)
        for vec, bits in self._partition(split).items():
            side.cells[vec] = _Cell(bits)
        for vec in list(side.cells):
            self._refresh_cell(side, vec)
        return side

    def _partition(self, split: tuple[Any, ...]) -> dict[tuple[Any, ...], int]:
        if split == PAIRS:
            return {(gid,): 1 << m.slot for gid, m in self._members.items()}
        cells: dict[tuple[Any, ...], int] = {(): self._all} if self._all else {}
        for key in split:
            out: dict[tuple[Any, ...], int] = {}
            if isinstance(key, _NamedPort):
                for vec, bits in cells.items():
                    rest = bits
                    for value, vbits in self._named_bits[key.name].items():
                        if bits & vbits:
                            out[(*vec, value)] = bits & vbits
                            rest &= ~vbits
                    if rest:
                        out[(*vec, None)] = rest
            else:
                pbits = self._peer_bits[key]
                for vec, bits in cells.items():
                    if bits & pbits:
                        out[(*vec, True)] = bits & pbits
                    if bits & ~pbits:
                        out[(*vec, False)] = bits & ~pbits
            cells = out
        return cells

    def _vector(self, side: _Side, m: _Member) -> tuple[Any, ...]:
        if side.split == PAIRS:
            return (m.group.id,)
        bit = 1 << m.slot
        out: list[Any] = []
        for key in side.split:
            if isinstance(key, _NamedPort):
                out.append((m.info.named_ports or Labels()).get(key.name))
            else:
                out.append(bool(self._peer_bits[key] & bit))
        return tuple(out)

    def _move_members(self, side: _Side, changed: set[str], removed: set[int]) -> None:
        """Re-file groups that changed among a side's cells, drop the slots of removed ones; recompute the cells
        whose representative changed."""
        touched: set[tuple[Any, ...]] = set()
        slots = removed | {self._members[gid].slot for gid in changed}
        for vec, cell in side.cells.items():
            for slot in slots:
                if cell.rep == slot or cell.bits >> slot & 1:
                    cell.bits &= ~(1 << slot)
                    touched.add(vec)
        for gid in changed:
            m = self._members[gid]
            vec = self._vector(side, m)
            side.cells.setdefault(vec, _Cell(0)).bits |= 1 << m.slot
            touched.add(vec)
        for vec in touched:
            cell = side.cells[vec]
            if not cell.bits:
                self._set_cell_paths(cell, ())
                del side.cells[vec]
            else:
                self._refresh_cell(side, vec)

    def _pick(self, bits: int, preferred: int) -> int:
        best = bits & preferred or bits
        return (best & -best).bit_length() - 1

    def _refresh_cell(self, side: _Side, vec: tuple[Any, ...]) -> None:
        cell = side.cells[vec]
        rep = self._pick(cell.bits, self._open_eg if side.ingress else self._open_in)
        rep_member = self._members[self._by_slot[rep]]
        if rep == cell.rep and rep_member.token == cell.rep_token:
            return
        owner = self._members[side.owner]
        src, dst = (rep_member, owner) if side.ingress else (owner, rep_member)
        self._set_cell_paths(cell, self._cell_paths(src, dst))
        cell.rep, cell.rep_token = rep, rep_member.token

    def _set_cell_paths(self, cell: _Cell, paths: tuple[PlannedPath, ...]) -> None:
        for p in (*cell.paths, *paths):
            if p.key not in self._touched:
                self._touched[p.key] = self._base.get(p.key)
        for p in cell.paths:
            self._refs[p.key] -= 1
            if not self._refs[p.key]:
                del self._refs[p.key]
                del self._base[p.key]
        for p in paths:
            self._refs[p.key] += 1
            self._base[p.key] = p
        cell.paths = paths

    def _drop_side_paths(self, side: _Side) -> None:
        for cell in side.cells.values():
            self._set_cell_paths(cell, ())

    def _cell_paths(self, src: _Member, dst: _Member) -> tuple[PlannedPath, ...]:
        """One path per port class of the pair, each at its node placement."""
        assert self.inputs is not None
        b = self.budget
        declared = list(dict.fromkeys(dst.ports_in + src.ports_eg)) or list(b.fallback_ports)
        ports = list(b.ports) or declared
        placements = _placements(src.group, dst.group, self.inputs.unavailable_nodes)
        # an ipBlock `except` decides by address, and a clone takes its node's: judge each placement apart then
        by_address = any(peer.ip_block is not None and peer.ip_block.except_
                         for direction, sel in ((Direction.EGRESS, src.sel_eg), (Direction.INGRESS, dst.sel_in))
                         for cp in sel for rule in cp.policy.rules(direction) for peer in rule.peers)
        seen: set[tuple[object, ...]] = set()
        out: list[PlannedPath] = []
        for port in ports[: b.max_ports]:
            verdict = _clone_verdict(src.judges_eg, src.info, dst.judges_in, dst.info, port)
            if b.dedup_ports:
                cls = port_class(verdict, self.inputs.policies, src.info.ips, dst.info.ips)
                if cls in seen:
                    continue
                seen.add(cls)
            if by_address:
                # which side's node CIDR an `except` names decides: every node combination is a candidate
                candidates = [(sn, dn) for sn in src.group.nodes for dn in dst.group.nodes][:MAX_ADDRESS_PLACEMENTS]
                proofs = tuple((sn, dn, self._obligations(*self._placed_verdict(src, dst, port, sn, dn), sn, dn))
                               for sn, dn in candidates)
            else:
                proofs = tuple((sn, dn, self._obligations(verdict, (), (), sn, dn)) for sn, dn in placements)
            chosen = placements
            if b.placements == "balanced":
                chosen = [placements[_stable_hash(src.group.id, dst.group.id, str(port)) % len(placements)]]
            for src_node, dst_node in chosen:
                key = PathKey(src.group.id, dst.group.id, port, src_node, dst_node)
                out.append(PlannedPath(key, src.group.member_on(src_node), dst.group.member_on(dst_node),
                                       bool(verdict.allowed), placements=proofs))
        return tuple(out)

    def _placed_verdict(self, src: _Member, dst: _Member, port: PortProtocol, sn: str, dn: str
                        ) -> tuple[Verdict, tuple[str, ...], tuple[str, ...]]:
        """The verdict for clones on these nodes, with the addresses of the members there."""
        assert self.inputs is not None
        ips: list[tuple[str, ...]] = []
        for group, node in ((src.group, sn), (dst.group, dn)):
            pod = self.inputs.endpoints.get(group.member_on(node))
            ips.append(pod.pod_ips if pod is not None else ())
        verdict = _clone_verdict(src.judges_eg, self._info(src.group, ips[0]), dst.judges_in,
                                 self._info(dst.group, ips[1]), port)
        return verdict, ips[0], ips[1]

    def _obligations(self, verdict: Verdict, src_ips: tuple[str, ...], dst_ips: tuple[str, ...], sn: str,
                     dn: str) -> frozenset[Obligation]:
        assert self.inputs is not None
        if verdict.allowed is None:
            return frozenset()
        proven = exercised_features(verdict, self.inputs.policies, sn, dn, src_ips, dst_ips, proven=True)
        return frozenset((f, d, verdict.allowed, node) for f, node, d in proven)
