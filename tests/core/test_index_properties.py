"""Property tests: the incremental index equals a rebuild and the reference evaluator, whatever happened before.

Objects are generated as API dicts over a small universe (so that selectors, IPs and names collide often) and go
through the real parser: pods, namespaces, NetworkPolicies, and the cluster policies of policy.networking.k8s.io
(AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy; with equal priorities, Pass, networks, named
ports and the occasional nodes or domainNames peer).
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netpol_auditor.cluster_policy import ClusterPolicy, ClusterPolicyKind, Tier
from netpol_auditor.engine import Snapshot
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import KubeObject, parse_object
from netpol_auditor.model import Endpoint, Namespace, NetworkPolicy, ObjectKind, Pod, PodRef, PortProtocol
from netpol_auditor.paths import PathCounts

NAMESPACES = ["x", "y"]
POD_NAMES = ["a", "b", "c"]
POLICY_NAMES = ["p", "q"]
CLUSTER_POLICY_NAMES = ["g", "h"]
IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.0.1.2", "fd00::1"]
EXTERNALS = ["10.0.0.9", "192.0.2.1"]
PORTS = [PortProtocol.parse(p) for p in ("80/TCP", "81/TCP", "80/UDP", "8080/TCP", "53/SCTP")]
LABEL_KEYS = ["app", "tier"]
LABEL_VALUES = ["web", "db", "1"]

settings.register_profile("core", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
settings.load_profile("core")

labels_st = st.dictionaries(st.sampled_from(LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=2)

requirement_st = st.one_of(
    st.builds(
        lambda k, op, vs: {"key": k, "operator": op, "values": vs},
        st.sampled_from(LABEL_KEYS),
        st.sampled_from(["In", "NotIn"]),
        st.lists(st.sampled_from(LABEL_VALUES), min_size=1, max_size=2, unique=True),
    ),
    st.builds(
        lambda k, op: {"key": k, "operator": op},
        st.sampled_from(LABEL_KEYS),
        st.sampled_from(["Exists", "DoesNotExist"]),
    ),
)


@st.composite
def selector_st(draw: st.DrawFn, keys: list[str] | None = None) -> dict[str, Any]:
    sel: dict[str, Any] = {}
    match = draw(st.dictionaries(st.sampled_from(keys or LABEL_KEYS), st.sampled_from(LABEL_VALUES), max_size=1))
    if match:
        sel["matchLabels"] = match
    exprs = draw(st.lists(requirement_st, max_size=1))
    if exprs:
        sel["matchExpressions"] = exprs
    return sel


ns_selector_st = st.one_of(
    selector_st(),
    st.builds(lambda n: {"matchLabels": {"kubernetes.io/metadata.name": n}}, st.sampled_from(NAMESPACES)),
)

ip_block_st = st.one_of(
    st.just({"cidr": "10.0.0.0/16", "except": ["10.0.1.0/24"]}),
    st.just({"cidr": "10.0.0.2/32"}),
    st.just({"cidr": "0.0.0.0/0"}),
    st.just({"cidr": "fd00::/64"}),
    st.just({"cidr": "192.0.2.0/24"}),
)

peer_st = st.one_of(
    st.builds(lambda s: {"podSelector": s}, selector_st()),
    st.builds(lambda s: {"namespaceSelector": s}, ns_selector_st),
    st.builds(lambda n, p: {"namespaceSelector": n, "podSelector": p}, ns_selector_st, selector_st()),
    st.builds(lambda b: {"ipBlock": b}, ip_block_st),
)

port_st = st.one_of(
    st.just({}),
    st.just({"port": 80}),
    st.just({"port": 80, "protocol": "UDP"}),
    st.just({"port": 53, "protocol": "SCTP"}),
    st.just({"port": 80, "endPort": 8080}),
    st.just({"port": "serve"}),
    st.just({"port": "serve", "protocol": "UDP"}),
    st.just({"protocol": "UDP"}),
)


@st.composite
def rule_st(draw: st.DrawFn, peers_key: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    peers = draw(st.one_of(st.none(), st.lists(peer_st, max_size=2)))
    if peers is not None:
        rule[peers_key] = peers
    ports = draw(st.one_of(st.none(), st.lists(port_st, max_size=2)))
    if ports is not None:
        rule["ports"] = ports
    return rule


@st.composite
def policy_dict_st(draw: st.DrawFn, namespace: str | None = None, name: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["podSelector"] = draw(selector_st())
    types = draw(st.one_of(st.none(), st.sets(st.sampled_from(["Ingress", "Egress"]), max_size=2).map(sorted)))
    if types is not None:
        spec["policyTypes"] = types
    ingress = draw(st.one_of(st.none(), st.lists(rule_st("from"), max_size=2)))
    if ingress is not None:
        spec["ingress"] = ingress
    egress = draw(st.one_of(st.none(), st.lists(rule_st("to"), max_size=2)))
    if egress is not None:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "namespace": namespace or draw(st.sampled_from(NAMESPACES)),
            "name": name or draw(st.sampled_from(POLICY_NAMES)),
        },
        "spec": spec,
    }


@st.composite
def pod_dict_st(draw: st.DrawFn) -> dict[str, Any]:
    ports = draw(
        st.lists(
            st.sampled_from(
                [
                    {"containerPort": 80, "name": "serve"},
                    {"containerPort": 8080, "name": "serve"},
                    {"containerPort": 80, "name": "serve", "protocol": "UDP"},
                    {"containerPort": 81},
                ]
            ),
            max_size=1,
        )
    )
    ip = draw(st.sampled_from([*IPS, None]))
    status: dict[str, Any] = {"phase": draw(st.sampled_from(["Running"] * 6 + ["Pending", "Succeeded"]))}
    if ip:
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": draw(st.sampled_from(NAMESPACES)),
            "name": draw(st.sampled_from(POD_NAMES)),
            "labels": draw(labels_st),
        },
        "spec": {
            "hostNetwork": draw(st.integers(0, 9)) == 0,
            "containers": [{"name": "c", "ports": ports}],
        },
        "status": status,
    }


# -- cluster policies ------------------------------------------------------------------------------------------


def _cluster_pods_st(
    namespace_selector_required: bool, ns_sel: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    def build(namespaces: dict[str, Any] | None, pods: dict[str, Any]) -> dict[str, Any]:
        out = {"podSelector": pods}
        if namespaces is not None or namespace_selector_required:
            out["namespaceSelector"] = namespaces or {}
        return {"pods": out}

    return st.builds(build, st.one_of(st.none(), ns_sel), selector_st())


# Most namespaces carry no labels but their name: every namespace, or one by name, half of the time.
cluster_ns_selector_st = st.one_of(
    st.just({}),
    st.builds(lambda n: {"matchLabels": {"kubernetes.io/metadata.name": n}}, st.sampled_from(NAMESPACES)),
    ns_selector_st,
)

_CIDRS = ["10.0.0.0/16", "10.0.0.2/32", "0.0.0.0/0", "fd00::/64", "192.0.2.0/24", "10.0.1.0/24"]


def cluster_peer_st(
    v1: bool, egress: bool, domain_names: bool, ns_sel: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    options = [
        st.builds(lambda n: {"namespaces": n}, ns_sel),
        _cluster_pods_st(v1, ns_sel),
    ]
    if egress:
        options.append(st.builds(lambda c: {"networks": c},
                                 st.lists(st.sampled_from(_CIDRS), min_size=1, max_size=2, unique=True)))
        options.append(st.just({"nodes": {}}))
        if domain_names:
            options.append(st.just({"domainNames": ["*.example.com"]}))
    return st.one_of(*options)


_V1_PORTS = [{"portNumber": {"port": 80}}, {"portNumber": {"port": 80, "protocol": "UDP"}},
             {"portNumber": {"port": 53, "protocol": "SCTP"}}, {"portRange": {"start": 80, "end": 8080}},
             {"namedPort": "serve"}]
_V2_PROTOCOLS = [{"tcp": {"destinationPort": {"number": 80}}}, {"udp": {"destinationPort": {"number": 80}}},
                 {"sctp": {"destinationPort": {"number": 53}}},
                 {"tcp": {"destinationPort": {"range": {"start": 80, "end": 8080}}}},
                 {"destinationNamedPort": "serve"}]


@st.composite
def cluster_rule_st(
    draw: st.DrawFn, kind: ClusterPolicyKind, egress: bool, ns_sel: st.SearchStrategy[dict[str, Any]]
) -> dict[str, Any]:
    v1 = kind is not ClusterPolicyKind.CLUSTER_NETWORK_POLICY
    if kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
        actions = ["Accept", "Deny", "Pass"]
    elif kind is ClusterPolicyKind.ADMIN_NETWORK_POLICY:
        actions = ["Allow", "Deny", "Pass"]
    else:
        actions = ["Allow", "Deny"]
    rule: dict[str, Any] = {"action": draw(st.sampled_from(actions))}
    domain_names = kind is not ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY
    peers = draw(st.lists(cluster_peer_st(v1, egress, domain_names, ns_sel), min_size=1, max_size=2))
    rule["to" if egress else "from"] = peers
    ports = draw(st.one_of(st.none(), st.lists(st.sampled_from(_V1_PORTS if v1 else _V2_PROTOCOLS), min_size=1,
                                                max_size=2)))
    no_named = egress and any(set(p) & {"networks", "nodes", "domainNames"} for p in peers)
    if ports is not None and no_named:  # the CRD refuses named ports with those peers
        ports = [p for p in ports if "namedPort" not in p and "destinationNamedPort" not in p] or None
    if ports is not None:
        rule["ports" if v1 else "protocols"] = ports
    return rule


@st.composite
def cluster_policy_dict_st(
    draw: st.DrawFn,
    name: str | None = None,
    kinds: tuple[ClusterPolicyKind, ...] = tuple(ClusterPolicyKind),
    ns_sel: st.SearchStrategy[dict[str, Any]] = cluster_ns_selector_st,
) -> dict[str, Any]:
    kind = draw(st.sampled_from(kinds))
    v1 = kind is not ClusterPolicyKind.CLUSTER_NETWORK_POLICY
    spec: dict[str, Any] = {
        "subject": draw(st.one_of(st.builds(lambda n: {"namespaces": n}, ns_sel), _cluster_pods_st(v1, ns_sel))),
    }
    if kind is not ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY:
        spec["priority"] = draw(st.sampled_from([1, 2, 2]))  # equal priorities too: ties
    if kind is ClusterPolicyKind.CLUSTER_NETWORK_POLICY:
        spec["tier"] = draw(st.sampled_from(["Admin", "Baseline"]))
    for key, egress in (("ingress", False), ("egress", True)):
        rules = draw(st.one_of(st.none(), st.lists(cluster_rule_st(kind, egress, ns_sel), max_size=2)))
        if rules is not None:
            spec[key] = rules
    if kind is ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY:
        name = "default"
    return {
        "apiVersion": kind.api_version,
        "kind": kind.value,
        "metadata": {"name": name or draw(st.sampled_from(CLUSTER_POLICY_NAMES))},
        "spec": spec,
    }


ns_dict_st = st.builds(
    lambda n, labels: {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": labels}},
    st.sampled_from(NAMESPACES),
    labels_st,
)

object_st = st.one_of(
    pod_dict_st(), pod_dict_st(), ns_dict_st, policy_dict_st(), policy_dict_st(), cluster_policy_dict_st()
)

delete_st = st.one_of(
    st.builds(lambda n, p: ("delete", ObjectKind.POD, n, p), st.sampled_from(NAMESPACES), st.sampled_from(POD_NAMES)),
    st.builds(lambda n: ("delete", ObjectKind.NAMESPACE, None, n), st.sampled_from(NAMESPACES)),
    st.builds(
        lambda n, p: ("delete", ObjectKind.NETWORK_POLICY, n, p),
        st.sampled_from(NAMESPACES),
        st.sampled_from(POLICY_NAMES),
    ),
    st.builds(
        lambda k, p: ("delete", k, None, "default" if k is ClusterPolicyKind.BASELINE_ADMIN_NETWORK_POLICY else p),
        st.sampled_from(list(ClusterPolicyKind)),
        st.sampled_from(CLUSTER_POLICY_NAMES),
    ),
)

event_st = st.one_of(object_st.map(lambda d: ("upsert", d)), object_st.map(lambda d: ("upsert", d)), delete_st)


Object = KubeObject
Key = tuple[ObjectKind | ClusterPolicyKind, str | None, str]


def parsed(raw: dict[str, Any]) -> Object:
    obj = parse_object(raw)
    assert obj is not None
    return obj


def key_of(obj: Object) -> Key:
    if isinstance(obj, Pod):
        return (ObjectKind.POD, obj.namespace, obj.name)
    if isinstance(obj, Namespace):
        return (ObjectKind.NAMESPACE, None, obj.name)
    if isinstance(obj, ClusterPolicy):
        return (obj.kind, None, obj.name)
    return (ObjectKind.NETWORK_POLICY, obj.namespace, obj.name)


def all_endpoints(index: ReachabilityIndex) -> list[Endpoint]:
    refs: list[Endpoint] = [PodRef(n, p) for n in NAMESPACES for p in POD_NAMES]
    return [*refs, *EXTERNALS]


def assert_same(index: ReachabilityIndex, state: dict[Key, Object]) -> None:
    rebuilt = ReachabilityIndex.from_objects(list(state.values()))
    snap = Snapshot.from_objects(list(state.values()))
    endpoints = all_endpoints(index)
    for s, d in itertools.product(endpoints, endpoints):
        for port in PORTS:
            got = index.verdict(s, d, port)
            assert got == rebuilt.verdict(s, d, port), (s, d, port)
            assert got == snap.verdict(s, d, port), (s, d, port)
    assert index.classes() == rebuilt.classes()
    assert index.path_counts(PORTS) == rebuilt.path_counts(PORTS) == brute_force_path_counts(snap, PORTS)
    assert index.policy_selected_pods() == rebuilt.policy_selected_pods()
    assert index.endpoints() == rebuilt.endpoints()
    assert index.endpoint_pods() == rebuilt.endpoint_pods() == {r: index.get_pod(r) for r in index.endpoints()}
    # the frozen view the aggregate metrics are computed from, in a worker thread, says the same
    view = index.view()
    assert view.path_counts(PORTS) == index.path_counts(PORTS)
    assert view.policy_selected_pods() == index.policy_selected_pods()
    isolation: dict[tuple[str, str], list[int]] = {}
    for ref in index.endpoints():
        for direction, isolated in zip(("ingress", "egress"), index.isolation(ref), strict=True):
            isolation.setdefault((ref.namespace, direction), [0, 0])[0 if isolated else 1] += 1
    assert view.isolation_counts() == {k: (a, b) for k, (a, b) in isolation.items()}
    assert view.namespaces() == index.namespaces() and view.policies() == index.policies()
    assert sorted(p.ref for p in view.pods()) == sorted(p.ref for p in index.pods())
    for ref in index.endpoints():
        assert index.isolation(ref) == rebuilt.isolation(ref)


def brute_force_path_counts(
    snap: Snapshot, ports: list[PortProtocol]
) -> dict[tuple[str, str, PortProtocol], PathCounts]:
    cells: dict[tuple[str, str, PortProtocol], list[int]] = {}
    for s, d in itertools.permutations(snap.endpoints(), 2):
        for port in ports:
            cell = cells.setdefault((s.namespace, d.namespace, port), [0, 0, 0])
            allowed = snap.verdict(s, d, port).allowed
            cell[0 if allowed else 2 if allowed is None else 1] += 1
    return {k: PathCounts(a, b, u) for k, (a, b, u) in sorted(cells.items())}


def class_matrix(index: ReachabilityIndex) -> dict[tuple[str, str, PortProtocol], bool | None]:
    ids = [c.id for c in index.classes()]
    return {(s, d, p): index.class_allowed(s, d, p) for s in ids for d in ids for p in PORTS}


@given(st.lists(object_st, max_size=10), st.lists(event_st, min_size=1, max_size=25))
def test_incremental_equals_rebuild(initial: list[dict[str, Any]], events: list[Any]) -> None:
    state: dict[Key, Object] = {}
    for raw in initial:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(list(state.values()))
    for event in events:
        rev = index.revision
        before = class_matrix(index)
        if event[0] == "upsert":
            obj = parsed(event[1])
            state[key_of(obj)] = obj
            index.upsert(obj)
        else:
            _, kind, namespace, name = event
            state.pop((kind, namespace, name), None)
            index.delete(kind, namespace, name)
        # Every class pair whose verdict changed is reported by changed_class_pairs.
        changed = index.changed_class_pairs(rev)
        after = class_matrix(index)
        for (s, d, port), allowed in after.items():
            if (s, d, port) not in before or before[(s, d, port)] != allowed:
                assert (s, d) in changed, (event, s, d, port)
    assert_same(index, state)


@given(st.lists(object_st, max_size=14), st.randoms(use_true_random=False))
def test_verdicts_do_not_depend_on_object_order(objects: list[dict[str, Any]], rnd: Any) -> None:
    state: dict[Key, Object] = {}
    for raw in objects:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    objs = list(state.values())
    shuffled = list(objs)
    rnd.shuffle(shuffled)
    a, b = ReachabilityIndex.from_objects(objs), ReachabilityIndex.from_objects(shuffled)
    c = ReachabilityIndex()
    for obj in shuffled:  # pods before their policies and namespaces, too
        c.upsert(obj)
    endpoints = all_endpoints(a)
    for s, d in itertools.product(endpoints, endpoints):
        for port in PORTS:
            assert a.verdict(s, d, port) == b.verdict(s, d, port) == c.verdict(s, d, port)
    assert a.classes() == b.classes() == c.classes()


@given(st.lists(object_st, max_size=14), st.data())
def test_allow_only_policy_never_removes_paths_of_pods_it_does_not_newly_isolate(
    objects: list[dict[str, Any]], data: st.DataObject
) -> None:
    state: dict[Key, Object] = {}
    for raw in objects:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(list(state.values()))
    # A fresh policy name, so the new policy adds to (never replaces) what is there.
    new = parsed(data.draw(policy_dict_st(name="added")))
    assert isinstance(new, NetworkPolicy)
    before = {
        (s, d, p): index.verdict(s, d, p) for s, d in itertools.product(all_endpoints(index), repeat=2) for p in PORTS
    }
    was_isolated = {ref: index.isolation(ref) for ref in index.endpoints()}
    index.upsert(new)
    for (s, d, p), old in before.items():
        if not old.allowed:
            continue
        newly_isolated = False
        if isinstance(d, PodRef) and not was_isolated[d][0] and index.isolation(d)[0]:
            newly_isolated = True
        if isinstance(s, PodRef) and not was_isolated[s][1] and index.isolation(s)[1]:
            newly_isolated = True
        if not newly_isolated:
            assert index.verdict(s, d, p).allowed, (s, d, p)
    # Isolation changes only for pods of the policy's own namespace.
    for ref, isolation in was_isolated.items():
        if ref.namespace != new.namespace:
            assert index.isolation(ref) == isolation


@given(st.lists(object_st, min_size=4, max_size=24))
def test_path_counts_equal_pair_by_pair_counting(objects: list[dict[str, Any]]) -> None:
    state: dict[Key, Object] = {}
    for raw in objects:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(list(state.values()))
    counts = index.path_counts(PORTS)
    assert counts == brute_force_path_counts(Snapshot.from_objects(list(state.values())), PORTS)
    assert list(counts) == sorted(counts)
    assert index.path_series(PORTS) == len(counts)
    for limit in (0, 1, 3, len(counts) + 1):
        assert list(index.path_counts(PORTS, limit=limit).items()) == list(counts.items())[:limit]


@given(st.lists(object_st, max_size=14), st.data())
def test_cluster_policies_never_isolate_and_admin_denies_never_add_paths(
    objects: list[dict[str, Any]], data: st.DataObject
) -> None:
    state: dict[Key, Object] = {}
    for raw in objects:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(list(state.values()))
    raw = data.draw(cluster_policy_dict_st(name="added", kinds=(ClusterPolicyKind.ADMIN_NETWORK_POLICY,
                                                                 ClusterPolicyKind.CLUSTER_NETWORK_POLICY)))
    if raw["kind"] == "ClusterNetworkPolicy":
        raw["spec"]["tier"] = "Admin"
    for key in ("ingress", "egress"):
        for rule in raw["spec"].get(key) or []:
            rule["action"] = "Deny"
    new = parsed(raw)
    assert isinstance(new, ClusterPolicy) and new.tier is Tier.ADMIN
    pairs = list(itertools.product(all_endpoints(index), repeat=2))
    before = {(s, d, p): index.verdict(s, d, p).allowed for s, d in pairs for p in PORTS}
    isolation = {ref: index.isolation(ref) for ref in index.endpoints()}
    index.upsert(new)
    assert {ref: index.isolation(ref) for ref in index.endpoints()} == isolation
    for (s, d, p), old in before.items():
        if index.verdict(s, d, p).allowed is True:
            assert old is True, (s, d, p)
    index.delete(new.kind, None, new.name)
    assert {(s, d, p): index.verdict(s, d, p).allowed for s, d in pairs for p in PORTS} == before


TEAMS = ["a", "b"]
team_selector_st = st.one_of(
    st.just({}),
    st.builds(lambda t: {"matchLabels": {"team": t}}, st.sampled_from(TEAMS)),
    st.builds(lambda op, t: {"matchExpressions": [{"key": "team", "operator": op, "values": [t]}]},
              st.sampled_from(["In", "NotIn"]), st.sampled_from(TEAMS)),
    st.just({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}),
)
team_ns_st = st.builds(
    lambda n, t: {"apiVersion": "v1", "kind": "Namespace",
                  "metadata": {"name": n, "labels": {"team": t} if t else {}}},
    st.sampled_from(NAMESPACES),
    st.sampled_from([*TEAMS, None]),
)


@given(
    st.lists(pod_dict_st(), min_size=2, max_size=6),
    st.lists(cluster_policy_dict_st(ns_sel=team_selector_st), min_size=1, max_size=3),
    st.lists(policy_dict_st(), max_size=1),
    st.lists(team_ns_st, min_size=1, max_size=6),
)
def test_namespace_relabels_move_cluster_policy_subjects_and_peers(
    pods: list[dict[str, Any]], cluster: list[dict[str, Any]], policies: list[dict[str, Any]],
    relabels: list[dict[str, Any]],
) -> None:
    """Namespace label changes, with every verdict asked between them (so the caches are full when labels change):
    cluster policy subjects and peers select by those labels."""
    state: dict[Key, Object] = {}
    for raw in [*pods, *cluster, *policies]:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(list(state.values()))
    endpoints = all_endpoints(index)
    for raw in relabels:
        for s, d in itertools.product(endpoints, endpoints):
            for port in PORTS[:2]:
                index.verdict(s, d, port)
        rev = index.revision
        before = class_matrix(index)
        obj = parsed(raw)
        state[key_of(obj)] = obj
        index.upsert(obj)
        changed = index.changed_class_pairs(rev)
        for (s, d, port), allowed in class_matrix(index).items():
            if (s, d, port) not in before or before[(s, d, port)] != allowed:
                assert (s, d) in changed, (raw, s, d, port)
        snap = Snapshot.from_objects(list(state.values()))
        for s, d in itertools.product(endpoints, endpoints):
            for port in PORTS:
                assert index.verdict(s, d, port) == snap.verdict(s, d, port), (raw, s, d, port)


@given(
    st.lists(pod_dict_st(), min_size=3, max_size=8),
    st.lists(cluster_policy_dict_st(), min_size=1, max_size=4),
    st.lists(st.one_of(policy_dict_st(), ns_dict_st), max_size=3),
)
def test_path_counts_with_cluster_policies_equal_pair_by_pair_counting(
    pods: list[dict[str, Any]], cluster: list[dict[str, Any]], others: list[dict[str, Any]]
) -> None:
    """The bit-set walk through the tiers (`paths.count_paths`) counts what the verdicts say, pair by pair."""
    state: dict[Key, Object] = {}
    for raw in [*pods, *cluster, *others]:
        obj = parsed(raw)
        state[key_of(obj)] = obj
    index = ReachabilityIndex.from_objects(list(state.values()))
    expected = brute_force_path_counts(Snapshot.from_objects(list(state.values())), PORTS)
    assert index.path_counts(PORTS) == expected
    assert index.view().path_counts(PORTS) == expected
