"""The incremental reachability index: NetworkPolicy verdicts kept up to date as objects change.

Pods are grouped into *equivalence classes*: same namespace, same labels, same named-port map and same set of
matching ipBlocks. Namespace labels are per namespace, so pods of one class are indistinguishable to every policy:
they are selected by the same policies and get the same verdicts. Verdicts are cached per
(destination class, source class, port) for ingress and (source class, destination class, port) for egress; an
event invalidates only the caches of the classes it touches:

- a pod event moves one pod between classes (a class appears or disappears at most);
- a policy event re-selects the classes of its own namespace and drops the ingress caches of the classes it
  selects for Ingress (before or after) and the egress caches of those it selects for Egress: a policy's rules only
  ever matter to the pods it selects;
- a namespace label change drops the caches of the classes selected by policies with a namespaceSelector peer
  whose match on that namespace flips;
- an ipBlock that appears or disappears re-classes the pods whose addresses it matches (found through an address
  index, not a scan);
- a cluster policy event (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy: their subjects
  span namespaces) re-selects every class and drops the caches of the classes its subject selects (before or
  after), per direction it has rules for; its ``networks`` CIDRs are ipBlocks like the others; a namespace label
  change re-selects the classes of that namespace for cluster policies too, and drops the caches of the classes
  selected by cluster policies with a namespace selector peer whose match on it flips.

Path counts (`path_counts`) are computed with bit sets over pods in `netpol_auditor.paths`, not from the caches.
`changed_class_pairs` reads a change log of the class caches dropped and the classes created.

Not thread-safe: feed it from one thread (the operator's event loop) or guard it.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .bulk import collector_paused
from .cluster_policy import ClusterPolicy, ClusterPolicyKind, Tier
from .engine import (
    CompiledPolicy,
    DirectionVerdict,
    PeerInfo,
    PolicyKey,
    Verdict,
    compile_policy,
    external_peer,
    judge_tiers,
    make_verdict,
    not_judged,
    unjudged_pod_reason,
)
from .index_view import ClassRecord, IndexView
from .model import (
    Direction,
    Endpoint,
    IPBlock,
    Labels,
    LabelSelector,
    Namespace,
    NetworkPolicy,
    ObjectKind,
    Pod,
    PodRef,
    PortProtocol,
)
from .selectors import AddressIndex, compile_ip_block, compile_selector, parse_ip

if TYPE_CHECKING:  # paths and tiers are imported where used: a plain `analyze` never pays for them
    from .paths import PathCounts
    from .tiers import CompiledClusterPolicy

__all__ = ["EquivalenceClass", "IndexStats", "ReachabilityIndex"]

KubeObject = Namespace | Pod | NetworkPolicy | ClusterPolicy
ClusterKey = tuple[str, str]  # (kind, name)

#: How many change-log entries `changed_class_pairs` can look back over; older revisions report every pair.
CHANGE_LOG_LIMIT = 200_000


@dataclass(frozen=True)
class EquivalenceClass:
    """Pods that no NetworkPolicy can tell apart. ``id`` is stable: derived from what defines the class."""

    id: str
    namespace: str
    labels: Labels
    named_ports: Labels  # "name/PROTO" -> "port"
    members: tuple[PodRef, ...]

    @property
    def representative(self) -> PodRef:
        return self.members[0]


@dataclass(frozen=True)
class IndexStats:
    pods: int
    endpoints: int
    namespaces: int
    policies: int
    classes: int
    revision: int
    cluster_policies: int = 0


_UNISOLATED = {d: DirectionVerdict(d, False) for d in Direction}


@dataclass(eq=False)
class _Class:
    id: str
    namespace: str
    labels: Labels
    named_ports: Labels
    ip_sig: frozenset[IPBlock]
    members: set[PodRef] = field(default_factory=set)
    ips: tuple[str, ...] = ()  # of any member: members match the same ipBlocks
    selected_by: tuple[CompiledPolicy, ...] = ()  # every policy whose podSelector selects the class, by name
    sel_in: tuple[CompiledPolicy, ...] = ()  # ... of those, the ones isolating it for Ingress
    sel_eg: tuple[CompiledPolicy, ...] = ()
    # Cluster policies whose subject selects the class and that have rules for the direction, in precedence order.
    adm_in: tuple[CompiledClusterPolicy, ...] = ()
    adm_eg: tuple[CompiledClusterPolicy, ...] = ()
    base_in: tuple[CompiledClusterPolicy, ...] = ()
    base_eg: tuple[CompiledClusterPolicy, ...] = ()
    peer: PeerInfo | None = None  # how rules see this class; rebuilt when namespace labels change
    public: EquivalenceClass | None = None  # the published view; rebuilt when the members change


def _class_id(namespace: str, labels: Labels, named_ports: Labels, ip_sig: frozenset[IPBlock]) -> str:
    text = repr((namespace, tuple(labels.items()), tuple(named_ports.items()), sorted(map(repr, ip_sig))))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _policy_blocks(policy: NetworkPolicy | ClusterPolicy) -> set[IPBlock]:
    """The address blocks a policy's peers match: ipBlocks, and the ``networks`` CIDRs of cluster policies."""
    blocks: set[IPBlock] = set()
    if isinstance(policy, ClusterPolicy):
        for cluster_rule in (*policy.ingress, *policy.egress):
            blocks.update(IPBlock(cidr) for p in cluster_rule.peers for cidr in p.networks)
        return blocks
    for direction in policy.policy_types:
        for rule in policy.rules(direction):
            blocks.update(p.ip_block for p in rule.peers if p.ip_block is not None)
    return blocks


def _cluster_namespace_selectors(cp: CompiledClusterPolicy) -> list[LabelSelector]:
    """The namespace selectors of a cluster policy's peers (``namespaces``, ``pods.namespaceSelector``)."""
    found: list[LabelSelector] = []
    for rule in (*cp.policy.ingress, *cp.policy.egress):
        for peer in rule.peers:
            if peer.namespaces is not None:
                found.append(peer.namespaces)
            elif peer.pods is not None:
                found.append(peer.pods.namespace_selector)
    return found


class ReachabilityIndex:
    """What the NetworkPolicies allow between every pair of pods, maintained incrementally.

    Feed it with `upsert` / `delete`; ask `verdict`, `path_counts`, `classes`, `changed_class_pairs`.
    """

    def __init__(self) -> None:
        self.revision = 0
        self._namespaces: dict[str, Namespace] = {}
        self._pods: dict[PodRef, Pod] = {}
        self._pods_per_ns: Counter[str] = Counter()
        self._policies: dict[PolicyKey, CompiledPolicy] = {}
        self._policies_by_ns: dict[str, dict[str, CompiledPolicy]] = defaultdict(dict)
        self._cluster: dict[ClusterKey, CompiledClusterPolicy] = {}
        self._cluster_ordered: tuple[CompiledClusterPolicy, ...] = ()  # by precedence
        self._blocks: Counter[IPBlock] = Counter()
        self._addresses: AddressIndex[PodRef] = AddressIndex()  # endpoint pods by IP
        # Distinct namespaceSelectors of peers -> the policies using them, and in which directions.
        self._ns_selector_users: dict[LabelSelector, dict[PolicyKey, set[Direction]]] = {}
        self._classes: dict[str, _Class] = {}
        self._classes_by_ns: dict[str, set[str]] = defaultdict(set)
        self._pod_class: dict[PodRef, str] = {}
        self._endpoint_pods: dict[PodRef, Pod] = {}  # the pods of _pod_class, for cheap snapshots
        self._in_cache: dict[str, dict[tuple[str, PortProtocol], DirectionVerdict]] = {}
        self._eg_cache: dict[str, dict[tuple[str, PortProtocol], DirectionVerdict]] = {}
        # Change log: (revision, what, class id) with what in {"src", "dst", "new"}.
        self._log: list[tuple[int, str, str]] = []
        self._log_floor = 0  # revisions <= this are no longer fully logged

    # ----------------------------------------------------------------------------------------------------------
    # Construction and events.

    @classmethod
    def from_objects(cls, objs: Iterable[KubeObject]) -> ReachabilityIndex:
        """Build from a set of objects (order-independent: policies and namespaces are applied before pods)."""
        index = cls()
        pods: list[Pod] = []
        with collector_paused():
            for obj in objs:
                if isinstance(obj, Pod):
                    pods.append(obj)
                else:
                    index.upsert(obj)
            for pod in pods:
                index.upsert(pod)
        return index

    def upsert(self, obj: KubeObject) -> None:
        """Apply an added or modified object."""
        if isinstance(obj, Pod):
            self._upsert_pod(obj)
        elif isinstance(obj, Namespace):
            self._upsert_namespace(obj)
        elif isinstance(obj, ClusterPolicy):
            old = self._cluster.get(obj.key)
            if old is None or old.policy != obj:
                self._replace_cluster_policy(obj.key, obj)
        else:
            self._upsert_policy(obj)

    def delete(self, kind: ObjectKind | ClusterPolicyKind, namespace: str | None, name: str) -> None:
        """Apply a deletion (a cluster policy's kind is its `ClusterPolicyKind`; it has no namespace). Deleting
        something unknown is a no-op."""
        if isinstance(kind, ClusterPolicyKind):
            if (kind.value, name) in self._cluster:
                self._replace_cluster_policy((kind.value, name), None)
            return
        kind = ObjectKind(kind)
        if kind is ObjectKind.POD:
            self._delete_pod(PodRef(namespace or "default", name))
        elif kind is ObjectKind.NAMESPACE:
            if name in self._namespaces:
                self._set_namespace(name, None)
        else:
            key = (namespace or "default", name)
            if key in self._policies:
                self._replace_policy(key, None)

    # -- namespaces --------------------------------------------------------------------------------------------

    def _upsert_namespace(self, ns: Namespace) -> None:
        old = self._namespaces.get(ns.name)
        if old == ns:
            return
        self._set_namespace(ns.name, ns)

    def _set_namespace(self, name: str, ns: Namespace | None) -> None:
        old_labels = self._namespace_labels(name)
        if ns is None:
            del self._namespaces[name]
        else:
            self._namespaces[name] = ns
        self._bump()
        if self._namespace_labels(name) == old_labels:
            return
        new_labels = self._namespace_labels(name)
        for cid in self._classes_by_ns.get(name, ()):
            cls = self._classes[cid]
            cls.peer = None
            # Cluster policy subjects select by namespace labels: re-select, and drop what changed.
            before = (cls.adm_in, cls.base_in, cls.adm_eg, cls.base_eg)
            self._select_cluster(cls)
            if (cls.adm_in, cls.base_in) != before[:2]:
                self._drop_ingress(cid)
            if (cls.adm_eg, cls.base_eg) != before[2:]:
                self._drop_egress(cid)
        flipped_cluster = {
            cp.key
            for cp in self._cluster_ordered
            if any(
                compile_selector(sel).matches(old_labels) != compile_selector(sel).matches(new_labels)
                for sel in _cluster_namespace_selectors(cp)
            )
        }
        if flipped_cluster:
            for cid, cls in self._classes.items():
                if any(cp.key in flipped_cluster for cp in (*cls.adm_in, *cls.base_in)):
                    self._drop_ingress(cid)
                if any(cp.key in flipped_cluster for cp in (*cls.adm_eg, *cls.base_eg)):
                    self._drop_egress(cid)
        # Only namespaceSelector peers see namespace labels: for each distinct selector whose match on this namespace
        # flips, drop the caches of the classes its policies select in the direction of the peer.
        flipped: dict[PolicyKey, set[Direction]] = defaultdict(set)
        for selector, users in self._ns_selector_users.items():
            matcher = compile_selector(selector)
            if matcher.matches(old_labels) != matcher.matches(new_labels):
                for key, directions in users.items():
                    flipped[key] |= directions
        for key, directions in flipped.items():
            cp = self._policies[key]
            for cid in self._classes_by_ns.get(cp.policy.namespace, ()):
                cls = self._classes[cid]
                if Direction.INGRESS in directions and any(x is cp for x in cls.sel_in):
                    self._drop_ingress(cid)
                if Direction.EGRESS in directions and any(x is cp for x in cls.sel_eg):
                    self._drop_egress(cid)

    def namespace_labels(self, name: str) -> Labels | None:
        """The labels of a known namespace (its implicit name label included), None if no Namespace object of
        that name has been seen."""
        ns = self._namespaces.get(name)
        return ns.labels if ns is not None else None

    def _namespace_labels(self, name: str) -> Labels:
        ns = self._namespaces.get(name)
        return ns.labels if ns is not None else Namespace(name).labels

    # -- pods --------------------------------------------------------------------------------------------------

    def _upsert_pod(self, pod: Pod) -> None:
        ref = pod.ref
        old = self._pods.get(ref)
        if old == pod:
            return
        self._pods[ref] = pod
        if old is None:
            self._pods_per_ns[ref.namespace] += 1
        self._bump()
        self._index_addresses(old, pod)
        self._place_pod(pod)

    def _delete_pod(self, ref: PodRef) -> None:
        old = self._pods.pop(ref, None)
        if old is None:
            return
        self._pods_per_ns[ref.namespace] -= 1
        if not self._pods_per_ns[ref.namespace]:
            del self._pods_per_ns[ref.namespace]
        self._bump()
        self._index_addresses(old, None)
        self._unplace(ref)

    def _index_addresses(self, old: Pod | None, new: Pod | None) -> None:
        old_ips = old.pod_ips if old is not None and old.is_endpoint else ()
        new_ips = new.pod_ips if new is not None and new.is_endpoint else ()
        if old_ips == new_ips:
            return
        if old is not None:
            for ip in old_ips:
                self._addresses.remove(ip, old.ref)
        if new is not None:
            for ip in new_ips:
                self._addresses.add(ip, new.ref)

    def _ip_sig(self, pod: Pod) -> frozenset[IPBlock]:
        if not self._blocks or not pod.pod_ips:
            return frozenset()
        return frozenset(b for b in self._blocks if compile_ip_block(b).matches_any(pod.pod_ips))

    def _place_pod(self, pod: Pod) -> None:
        """(Re)assign a pod to its class; endpoints only."""
        ref = pod.ref
        if not pod.is_endpoint:
            self._unplace(ref)
            return
        labels, named = pod.labels, pod.named_ports()
        sig = self._ip_sig(pod)
        cid = _class_id(pod.namespace, labels, named, sig)
        current = self._pod_class.get(ref)
        if current == cid:
            self._endpoint_pods[ref] = pod
            same = self._classes[cid]
            if same.ips != pod.pod_ips:
                # Same class, new addresses (a pod recreated under its name): keep the class's addresses those of
                # a current member, or an ipBlock appearing later would be judged on addresses nobody holds.
                same.ips = pod.pod_ips
                same.peer = None
            return
        self._unplace(ref)
        cls = self._classes.get(cid)
        if cls is None:
            cls = _Class(cid, pod.namespace, labels, named, sig, ips=pod.pod_ips)
            self._select(cls)
            self._classes[cid] = cls
            self._classes_by_ns[pod.namespace].add(cid)
            self._log_change("new", cid)
        cls.members.add(ref)
        cls.public = None
        self._pod_class[ref] = cid
        self._endpoint_pods[ref] = pod

    def _unplace(self, ref: PodRef) -> None:
        cid = self._pod_class.pop(ref, None)
        self._endpoint_pods.pop(ref, None)
        if cid is None:
            return
        cls = self._classes[cid]
        cls.members.discard(ref)
        cls.public = None
        if cls.members:
            # The class's addresses may have come from this pod, whose IPs may now match other ipBlocks: keep the
            # addresses of a pod that is still a member.
            ips = self._pods[next(iter(cls.members))].pod_ips
            if ips != cls.ips:
                cls.ips = ips
                cls.peer = None
        if not cls.members:
            del self._classes[cid]
            by_ns = self._classes_by_ns[cls.namespace]
            by_ns.discard(cid)
            if not by_ns:
                del self._classes_by_ns[cls.namespace]
            self._in_cache.pop(cid, None)
            self._eg_cache.pop(cid, None)

    def _select(self, cls: _Class) -> None:
        selecting = tuple(
            cp for _, cp in sorted(self._policies_by_ns.get(cls.namespace, {}).items()) if cp.selects(cls.labels)
        )
        cls.selected_by = selecting
        cls.sel_in = tuple(cp for cp in selecting if cp.isolates(Direction.INGRESS))
        cls.sel_eg = tuple(cp for cp in selecting if cp.isolates(Direction.EGRESS))
        self._select_cluster(cls)

    def _select_cluster(self, cls: _Class) -> None:
        if not self._cluster_ordered:
            cls.adm_in = cls.adm_eg = cls.base_in = cls.base_eg = ()
            return
        ns_labels = self._namespace_labels(cls.namespace)
        selecting = [cp for cp in self._cluster_ordered if cp.selects(ns_labels, cls.labels)]
        admin = [cp for cp in selecting if cp.policy.tier is Tier.ADMIN]
        baseline = [cp for cp in selecting if cp.policy.tier is Tier.BASELINE]
        cls.adm_in = tuple(cp for cp in admin if cp.ingress)
        cls.adm_eg = tuple(cp for cp in admin if cp.egress)
        cls.base_in = tuple(cp for cp in baseline if cp.ingress)
        cls.base_eg = tuple(cp for cp in baseline if cp.egress)

    # -- policies ----------------------------------------------------------------------------------------------

    def _upsert_policy(self, policy: NetworkPolicy) -> None:
        old = self._policies.get(policy.key)
        if old is not None and old.policy == policy:
            return
        self._replace_policy(policy.key, policy)

    def _replace_policy(self, key: PolicyKey, policy: NetworkPolicy | None) -> None:
        namespace, name = key
        old = self._policies.pop(key, None)
        new = compile_policy(policy) if policy is not None else None
        if old is not None:
            self._track_namespace_selectors(old, add=False)
        if new is not None:
            self._policies[key] = new
            self._policies_by_ns[namespace][name] = new
            self._track_namespace_selectors(new, add=True)
        else:
            self._policies_by_ns[namespace].pop(name, None)
            if not self._policies_by_ns[namespace]:
                del self._policies_by_ns[namespace]
        self._bump()
        for cid in list(self._classes_by_ns.get(namespace, ())):
            cls = self._classes[cid]
            was = old is not None and old.selects(cls.labels)
            now = new is not None and new.selects(cls.labels)
            if not was and not now:
                continue
            self._select(cls)
            if (was and old is not None and old.isolates(Direction.INGRESS)) or (
                now and new is not None and new.isolates(Direction.INGRESS)
            ):
                self._drop_ingress(cid)
            if (was and old is not None and old.isolates(Direction.EGRESS)) or (
                now and new is not None and new.isolates(Direction.EGRESS)
            ):
                self._drop_egress(cid)
        self._update_blocks(
            _policy_blocks(old.policy) if old is not None else set(),
            _policy_blocks(policy) if policy is not None else set(),
        )

    def _replace_cluster_policy(self, key: ClusterKey, policy: ClusterPolicy | None) -> None:
        from .tiers import compile_cluster_policy

        old = self._cluster.pop(key, None)
        new = compile_cluster_policy(policy) if policy is not None else None
        if new is not None:
            self._cluster[key] = new
        self._cluster_ordered = tuple(sorted(self._cluster.values(), key=lambda cp: cp.order))
        self._bump()
        for cid, cls in self._classes.items():
            ns_labels = self._namespace_labels(cls.namespace)
            was = old is not None and old.selects(ns_labels, cls.labels)
            now = new is not None and new.selects(ns_labels, cls.labels)
            if not was and not now:
                continue
            self._select_cluster(cls)
            if (was and old is not None and old.ingress) or (now and new is not None and new.ingress):
                self._drop_ingress(cid)
            if (was and old is not None and old.egress) or (now and new is not None and new.egress):
                self._drop_egress(cid)
        self._update_blocks(
            _policy_blocks(old.policy) if old is not None else set(),
            _policy_blocks(policy) if policy is not None else set(),
        )

    def _update_blocks(self, old_blocks: set[IPBlock], new_blocks: set[IPBlock]) -> None:
        """Count a policy's address blocks in and out; pods move class when a block appears or disappears."""
        if old_blocks == new_blocks:
            return
        touched = old_blocks ^ new_blocks
        present_before = {b for b in touched if self._blocks[b] > 0}
        self._blocks.update(new_blocks)
        self._blocks.subtract(old_blocks)
        changed = {b for b in touched if (self._blocks[b] > 0) != (b in present_before)}
        for b in list(self._blocks):
            if self._blocks[b] <= 0:
                del self._blocks[b]
        if changed:
            self._reclassify_for_blocks(changed)

    def _track_namespace_selectors(self, cp: CompiledPolicy, add: bool) -> None:
        for direction in Direction:
            for rule in cp.rules(direction):
                for peer in rule.peers:
                    if peer.peer.namespace_selector is None:
                        continue
                    selector = peer.peer.namespace_selector
                    if add:
                        self._ns_selector_users.setdefault(selector, {}).setdefault(cp.key, set()).add(direction)
                    else:
                        users = self._ns_selector_users.get(selector)
                        if users is not None:
                            users.pop(cp.key, None)
                            if not users:
                                del self._ns_selector_users[selector]

    def _reclassify_for_blocks(self, blocks: set[IPBlock]) -> None:
        """An ipBlock appeared or disappeared: pods whose IPs it matches change class."""
        moving: set[PodRef] = set()
        for block in blocks:
            moving |= self._addresses.within(compile_ip_block(block))
        for ref in sorted(moving):
            self._place_pod(self._pods[ref])

    # -- caches and change log ---------------------------------------------------------------------------------

    def _bump(self) -> None:
        self.revision += 1

    def _log_change(self, what: str, cid: str) -> None:
        self._log.append((self.revision, what, cid))
        if len(self._log) > CHANGE_LOG_LIMIT:
            cut = len(self._log) // 2
            self._log_floor = self._log[cut - 1][0]
            del self._log[:cut]

    def _drop_ingress(self, cid: str) -> None:
        self._in_cache.pop(cid, None)
        self._log_change("dst", cid)

    def _drop_egress(self, cid: str) -> None:
        self._eg_cache.pop(cid, None)
        self._log_change("src", cid)

    def _peer(self, cls: _Class) -> PeerInfo:
        if cls.peer is None:
            cls.peer = PeerInfo(
                cls.namespace, self._namespace_labels(cls.namespace), cls.labels, cls.ips, cls.named_ports
            )
        return cls.peer

    def _ingress(self, dst: _Class, src: _Class, port: PortProtocol) -> DirectionVerdict:
        if not dst.sel_in and not dst.adm_in and not dst.base_in:
            return _UNISOLATED[Direction.INGRESS]
        cache = self._in_cache.get(dst.id)
        if cache is None:
            cache = self._in_cache[dst.id] = {}
        key = (src.id, port)
        dv = cache.get(key)
        if dv is None:
            dv = cache[key] = judge_tiers(
                Direction.INGRESS, dst.sel_in, dst.adm_in, dst.base_in, self._peer(src), port, dst.named_ports
            )
        return dv

    def _egress(self, src: _Class, dst: _Class, port: PortProtocol) -> DirectionVerdict:
        if not src.sel_eg and not src.adm_eg and not src.base_eg:
            return _UNISOLATED[Direction.EGRESS]
        cache = self._eg_cache.get(src.id)
        if cache is None:
            cache = self._eg_cache[src.id] = {}
        key = (dst.id, port)
        dv = cache.get(key)
        if dv is None:
            dv = cache[key] = judge_tiers(
                Direction.EGRESS, src.sel_eg, src.adm_eg, src.base_eg, self._peer(dst), port, dst.named_ports
            )
        return dv

    # ----------------------------------------------------------------------------------------------------------
    # Queries.

    def _resolve(self, endpoint: Endpoint) -> _Class | str | None:
        """The class of a pod endpoint, None for an IP address, or why it is not judged."""
        if isinstance(endpoint, PodRef):
            reason = unjudged_pod_reason(endpoint, self._pods.get(endpoint))
            if reason is not None:
                return reason
            return self._classes[self._pod_class[endpoint]]
        if parse_ip(endpoint) is None:
            return f"{endpoint!r} is neither a pod nor an IP address"
        return None

    def verdict(self, src: Endpoint, dst: Endpoint, port: PortProtocol) -> Verdict:
        """Whether ``src`` may connect to ``dst`` on ``port``, with the deciding policies and rules."""
        if src == dst:
            return not_judged(src, dst, port, "a pod never blocks traffic to itself")
        s = self._resolve(src)
        if isinstance(s, str):
            return not_judged(src, dst, port, s)
        d = self._resolve(dst)
        if isinstance(d, str):
            return not_judged(src, dst, port, d)
        if s is None and d is None:
            return not_judged(src, dst, port, "neither side is a pod of the cluster")
        if s is not None and d is not None:
            return make_verdict(src, dst, port, self._egress(s, d, port), self._ingress(d, s, port))
        if s is not None:
            peer = external_peer(str(dst))
            egress = judge_tiers(Direction.EGRESS, s.sel_eg, s.adm_eg, s.base_eg, peer, port, None)
            return make_verdict(src, dst, port, egress, None)
        assert d is not None
        ingress = judge_tiers(
            Direction.INGRESS, d.sel_in, d.adm_in, d.base_in, external_peer(str(src)), port, d.named_ports
        )
        return make_verdict(src, dst, port, None, ingress)

    def class_verdict(self, src_class: str, dst_class: str, port: PortProtocol) -> Verdict:
        """The verdict between two classes, reported for their representatives."""
        s, d = self._classes[src_class], self._classes[dst_class]
        src, dst = min(s.members), min(d.members)
        return make_verdict(src, dst, port, self._egress(s, d, port), self._ingress(d, s, port))

    def class_allowed(self, src_class: str, dst_class: str, port: PortProtocol) -> bool | None:
        """Fast path of `class_verdict(...).allowed` (None: out of model)."""
        s, d = self._classes[src_class], self._classes[dst_class]
        egress = self._egress(s, d, port).outcome
        if egress is False:
            return False
        ingress = self._ingress(d, s, port).outcome
        if ingress is False:
            return False
        return None if egress is None or ingress is None else True

    def path_counts(
        self, ports: Iterable[PortProtocol], limit: int | None = None
    ) -> dict[tuple[str, str, PortProtocol], PathCounts]:
        """(source namespace, destination namespace, port) -> allowed/denied ordered pairs of distinct endpoints,
        in key order. Every pair of namespaces that has endpoint pairs is listed; ``limit`` keeps only the first
        ``limit`` keys (see `path_series` for how many there are in all). Computed with bit sets over pods
        (`netpol_auditor.paths`), not pair by pair."""
        from .paths import count_paths

        return count_paths(self._classes.values(), self._namespace_labels, list(ports), limit)

    def path_series(self, ports: Iterable[PortProtocol]) -> int:
        """How many keys `path_counts` returns without a limit (cheap: no counting)."""
        from .paths import path_series

        per_ns: Counter[str] = Counter()
        for cls in self._classes.values():
            per_ns[cls.namespace] += len(cls.members)
        return path_series(per_ns.values(), len(set(ports)))

    def classes(self) -> list[EquivalenceClass]:
        """Every class, by namespace and representative."""
        return sorted(map(self._public, self._classes.values()), key=lambda c: (c.namespace, c.representative))

    def class_of(self, pod: PodRef) -> EquivalenceClass | None:
        cid = self._pod_class.get(pod)
        return None if cid is None else self._public(self._classes[cid])

    @staticmethod
    def _public(cls: _Class) -> EquivalenceClass:
        if cls.public is None:
            members = tuple(sorted(cls.members))
            cls.public = EquivalenceClass(cls.id, cls.namespace, cls.labels, cls.named_ports, members)
        return cls.public

    def changed_class_pairs(self, since_revision: int) -> set[tuple[str, str]]:
        """(source class id, destination class id) pairs whose verdict may have changed after ``since_revision``
        (a superset: every pair of a new class, every pair into a class whose ingress policies changed, every pair
        out of a class whose egress policies changed). Only classes that exist now are reported."""
        srcs, dsts = self.changed_classes(since_revision)
        current = set(self._classes)
        pairs = {(s, d) for s in srcs for d in current}
        pairs.update((s, d) for d in dsts for s in current)
        return pairs

    def changed_classes(self, since_revision: int) -> tuple[set[str], set[str]]:
        """The compact form of `changed_class_pairs`: (classes whose pairs *as source* may have changed, classes
        whose pairs *as destination* may have changed); a pair (s, d) may have changed iff s is in the first set or
        d in the second. Prefer it on large clusters: the pair set grows with the number of classes."""
        current = set(self._classes)
        if since_revision < self._log_floor:
            return set(current), set(current)
        srcs: set[str] = set()
        dsts: set[str] = set()
        for revision, what, cid in reversed(self._log):
            if revision <= since_revision:
                break
            if cid not in current:
                continue
            if what in ("src", "new"):
                srcs.add(cid)
            if what in ("dst", "new"):
                dsts.add(cid)
        return srcs, dsts

    def isolation(self, pod: PodRef) -> tuple[bool, bool]:
        """(isolated for ingress, isolated for egress) of a pod (False, False for unknown pods)."""
        cid = self._pod_class.get(pod)
        if cid is not None:
            cls = self._classes[cid]
            return (bool(cls.sel_in), bool(cls.sel_eg))
        p = self._pods.get(pod)
        if p is None:
            return (False, False)
        selecting = [cp for cp in self._policies_by_ns.get(p.namespace, {}).values() if cp.selects(p.labels)]
        return (
            any(cp.isolates(Direction.INGRESS) for cp in selecting),
            any(cp.isolates(Direction.EGRESS) for cp in selecting),
        )

    def policy_selected_pods(self) -> dict[tuple[str, str], int]:
        """(namespace, policy) -> endpoint pods its podSelector selects (every policy is listed, 0 included)."""
        counts = dict.fromkeys(sorted(self._policies), 0)
        for cls in self._classes.values():
            for cp in cls.selected_by:
                counts[cp.key] += len(cls.members)
        return counts

    def pod_selectors(self, namespace: str) -> tuple[LabelSelector, ...]:
        """Every distinct pod selector a policy can apply to pods of ``namespace``: the podSelectors of its own
        policies, and peer podSelectors (of its own policies, or of any policy when the peer also has a
        namespaceSelector). Pods of one namespace that match the same of these are selected alike by every policy."""
        found: dict[LabelSelector, None] = {}
        for ns, policies in self._policies_by_ns.items():
            for cp in policies.values():
                if ns == namespace:
                    found[cp.policy.pod_selector] = None
                for rules in (cp.ingress, cp.egress):
                    for rule in rules:
                        for peer in rule.peers:
                            if peer.pods is not None and (peer.namespace is not None or ns == namespace):
                                found[peer.pods.selector] = None
        # Cluster policies select pods of any namespace: their subject and peer pod selectors count everywhere.
        for ccp in self._cluster_ordered:
            if ccp.policy.subject.pods is not None:
                found[ccp.policy.subject.pods.pod_selector] = None
            for cluster_rule in (*ccp.policy.ingress, *ccp.policy.egress):
                for cpeer in cluster_rule.peers:
                    if cpeer.pods is not None:
                        found[cpeer.pods.pod_selector] = None
        return tuple(found)

    def selector_label_keys(self, namespace: str) -> frozenset[str]:
        """Pod label keys any policy selector can look at for pods of ``namespace``."""
        keys: set[str] = set()
        for selector in self.pod_selectors(namespace):
            keys |= selector.keys()
        return frozenset(keys)

    def endpoints(self) -> list[PodRef]:
        return sorted(self._pod_class)

    def view(self) -> IndexView:
        """A frozen copy of what the aggregate metrics and Event facts read (`netpol_auditor.index_view`): cheap to
        take here, so that those computations can run in another thread while the index takes events."""
        records = tuple(
            ClassRecord(c.id, c.namespace, c.labels, c.named_ports, c.ips, tuple(c.members), c.sel_in, c.sel_eg,
                        c.selected_by, c.adm_in, c.adm_eg, c.base_in, c.base_eg)
            for c in self._classes.values()
        )
        policies = {key: cp.policy for key, cp in self._policies.items()}
        return IndexView(self.revision, records, tuple(self.namespaces()), policies, tuple(self._pods.values()),
                         tuple(self.cluster_policies()))

    def endpoint_pods(self) -> dict[PodRef, Pod]:
        """Endpoint pods by reference, unsorted: a cheap copy (for snapshots taken on a busy event loop)."""
        return dict(self._endpoint_pods)

    def namespace_label_map(self) -> dict[str, Labels]:
        """Labels of every known Namespace object, unsorted (pods' namespaces without one are left out)."""
        return {name: ns.labels for name, ns in self._namespaces.items()}

    def policy_map(self) -> dict[PolicyKey, NetworkPolicy]:
        """Every policy by (namespace, name), unsorted."""
        return {key: cp.policy for key, cp in self._policies.items()}

    def namespaces(self) -> list[Namespace]:
        """Known namespaces, plus (with only their implicit label) namespaces that pods refer to."""
        names = set(self._namespaces) | {ns for ns, count in self._pods_per_ns.items() if count}
        return [self._namespaces.get(n) or Namespace(n) for n in sorted(names)]

    def policies(self) -> list[NetworkPolicy]:
        return [self._policies[k].policy for k in sorted(self._policies)]

    def cluster_policies(self) -> list[ClusterPolicy]:
        """AdminNetworkPolicies, BaselineAdminNetworkPolicies and ClusterNetworkPolicies, by (kind, name)."""
        return [self._cluster[k].policy for k in sorted(self._cluster)]

    def compiled_cluster_policies(self) -> tuple[CompiledClusterPolicy, ...]:
        """The cluster policies as the index judges with them, in precedence order."""
        return self._cluster_ordered

    def pods(self) -> list[Pod]:
        return [self._pods[k] for k in sorted(self._pods)]

    def get_pod(self, ref: PodRef) -> Pod | None:
        return self._pods.get(ref)

    def stats(self) -> IndexStats:
        return IndexStats(
            pods=len(self._pods),
            endpoints=len(self._pod_class),
            namespaces=len(self.namespaces()),
            policies=len(self._policies),
            classes=len(self._classes),
            revision=self.revision,
            cluster_policies=len(self._cluster),
        )
