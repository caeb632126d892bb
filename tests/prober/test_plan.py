"""The probe planner, over the real reachability index: representatives, priorities, budgets, full cycles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import Namespace, NetworkPolicy, Pod, PortProtocol
from netpol_auditor.prober.plan import PathKey, PlanBudget, ProbePlanner, namespace_selected, probe_groups, snapshot

NODES = ("node-a", "node-b", "node-c")


def pod(ns: str, name: str, labels: dict[str, str], ip: str, node: str, ports: Iterable[tuple[str, int]] = ()) -> Pod:
    obj = parse_object({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": labels, "uid": f"uid-{ns}-{name}"},
        "spec": {"nodeName": node, "containers": [
            {"name": "c", "image": "x", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
    assert isinstance(obj, Pod)
    return obj


def namespace(name: str, **labels: str) -> Namespace:
    obj = parse_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    assert isinstance(obj, Namespace)
    return obj


def policy(ns: str, name: str, spec: dict[str, Any]) -> NetworkPolicy:
    obj = parse_object({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                        "metadata": {"namespace": ns, "name": name}, "spec": spec})
    assert isinstance(obj, NetworkPolicy)
    return obj


def three_tier_cluster(replicas: int = 6) -> ReachabilityIndex:
    """web -> api -> db in namespace shop, spread over three nodes; ingress default-deny plus allow rules. Every
    replica carries a distinct pod-template-hash-like label that no policy looks at."""
    objs: list[Any] = [namespace("shop"), namespace("other")]
    ip = 10
    for tier, port in (("web", 8080), ("api", 9090), ("db", 5432)):
        for i in range(replicas):
            ip += 1
            objs.append(pod("shop", f"{tier}-{i}", {"tier": tier, "pod-template-hash": f"h{i}"}, f"10.1.0.{ip}",
                            NODES[i % 3], [("http" if tier != "db" else "pg", port)]))
    objs.append(pod("other", "client", {"app": "client"}, "10.1.1.1", "node-a"))
    objs.append(policy("shop", "default-deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    objs.append(policy("shop", "api-from-web", {
        "podSelector": {"matchLabels": {"tier": "api"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}], "ports": [{"port": "http"}]}]}))
    objs.append(policy("shop", "db-from-api", {
        "podSelector": {"matchLabels": {"tier": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "api"}}}], "ports": [{"port": 5432}]}]}))
    return ReachabilityIndex.from_objects(objs)


def test_groups_keep_only_labels_policies_can_see() -> None:
    index = three_tier_cluster()
    groups = probe_groups(index)
    shop = sorted((str(g.labels), g.nodes) for g in groups.values() if g.namespace == "shop")
    # pod-template-hash is invisible to every policy: 18 pods, 3 groups, each on all three nodes
    assert shop == [(f"tier={t}", NODES) for t in ("api", "db", "web")]
    # namespace "other" has no policy looking at its pods: the client's labels are all invisible
    (other,) = [g for g in groups.values() if g.namespace == "other"]
    assert dict(other.labels) == {}


def test_pods_the_same_selectors_match_share_a_group_and_its_verdicts() -> None:
    """app=web and app=cart differ in a key a selector looks at (app), but every selector matches both or neither:
    one group, one clone. app=db is picked out by a selector: a group of its own. Every member of a group gets the
    verdicts of every other member, pod for pod, so one clone stands for all of them."""
    objs: list[Any] = [namespace("shop"), namespace("ops", team="ops")]
    ip = 10
    for app in ("web", "cart", "db"):
        for i in range(2):
            ip += 1
            objs.append(pod("shop", f"{app}-{i}", {"app": app, "rev": f"r{i}"}, f"10.1.0.{ip}", NODES[i],
                            [("http", 8080)]))
    objs.append(pod("ops", "backup", {"app": "backup"}, "10.1.1.1", "node-a"))
    objs.append(policy("shop", "default-deny", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    objs.append(policy("shop", "front", {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "cart"]}]},
        "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]}]}))
    objs.append(policy("shop", "db-from-ops", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                               "podSelector": {"matchLabels": {"app": "backup"}}}]}]}))
    index = ReachabilityIndex.from_objects(objs)
    groups = probe_groups(index)
    members = {g.id: sorted(r for refs in g.members_by_node.values() for r in refs) for g in groups.values()}
    shop = sorted(sorted(r.name for r in refs) for gid, refs in members.items() if groups[gid].namespace == "shop")
    assert shop == [["cart-0", "cart-1", "web-0", "web-1"], ["db-0", "db-1"]]
    endpoints = index.endpoints()
    for refs in members.values():
        for port in (PortProtocol(8080), PortProtocol(5432)):
            for other in endpoints:
                seen = {(index.verdict(m, other, port).allowed, index.verdict(other, m, port).allowed)
                        for m in refs if m != other}
                assert len(seen) <= 1, (refs, other, port, seen)


def test_one_path_per_group_pair_port_and_node_placement() -> None:
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget(placements="all"))
    paths = planner.enumerate_paths(index)
    groups = probe_groups(index)
    # every ordered group pair appears, with node placements covering each node on both sides
    pairs = {(k.src, k.dst) for k in paths}
    assert pairs == {(s, d) for s in groups for d in groups}
    api = next(g for g in groups.values() if g.labels.get("tier") == "api")
    web = next(g for g in groups.values() if g.labels.get("tier") == "web")
    placed = {(k.src_node, k.dst_node) for k in paths if (k.src, k.dst, k.port) == (web.id, api.id,
                                                                                    PortProtocol(9090))}
    assert {s for s, _ in placed} == set(NODES) and {d for _, d in placed} == set(NODES)
    assert len(placed) == 3  # paired round-robin, not the 3x3 product
    # predictions follow the policies: web -> api:9090 allowed (named port http), web -> db denied
    by = {(k.src, k.dst, k.port): p.predicted for k, p in paths.items()}
    db = next(g for g in groups.values() if g.labels.get("tier") == "db")
    assert by[(web.id, api.id, PortProtocol(9090))] is True
    assert by[(web.id, db.id, PortProtocol(5432))] is False
    assert by[(api.id, db.id, PortProtocol(5432))] is True


def test_probe_economy_against_all_pod_pairs() -> None:
    index = three_tier_cluster(replicas=30)  # 91 pods
    paths = ProbePlanner(PlanBudget()).enumerate_paths(index)
    pods = len(index.endpoints())
    ports = {k.port for k in paths}
    all_pairs = pods * (pods - 1) * len(ports)
    assert all_pairs / len(paths) >= 20, (all_pairs, len(paths))


def test_rounds_respect_budget_and_cover_every_path_once_per_cycle() -> None:
    index = three_tier_cluster()
    budget = PlanBudget(max_pods=4, targets_per_pod=5)
    planner = ProbePlanner(budget)
    every = set(planner.enumerate_paths(index))
    seen: list[Any] = []
    now = 1000.0
    for _ in range(200):
        rnd = planner.plan(index, now)
        assert rnd.pod_count <= budget.max_pods
        assert all(len(p.paths) <= budget.targets_per_pod for p in rnd.probes)
        # responders cover exactly the ports their paths need
        for path in rnd.paths:
            assert any(r.group.id == path.key.dst and r.node == path.key.dst_node and path.key.port in r.ports
                       for r in rnd.responders)
        for path in rnd.paths:
            seen.append(path.key)
            planner.record(path.key, now, settled=True)
        now += 1
        if planner.cycle_done():
            break
    assert planner.cycle_done()
    assert sorted(seen) == sorted(every)  # each path exactly once
    assert planner.coverage() == 1.0


def test_predicted_denied_paths_come_first_then_least_recently_probed() -> None:
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget(max_pods=2, targets_per_pod=3))
    rnd = planner.plan(index, 0.0)
    assert rnd.paths and all(not p.predicted and p.priority == "denied" for p in rnd.paths)


def test_changed_paths_wait_until_settled_then_jump_the_queue() -> None:
    index = three_tier_cluster()
    budget = PlanBudget(max_pods=2, targets_per_pod=4, settle_seconds=5)
    planner = ProbePlanner(budget)
    planner.plan(index, 0.0)
    # open web -> db
    index.upsert(policy("shop", "db-from-web", {
        "podSelector": {"matchLabels": {"tier": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}]}]}))
    fresh = planner.plan(index, 1.0)
    assert fresh.deferred > 0
    groups = probe_groups(index)
    db = next(g.id for g in groups.values() if g.labels.get("tier") == "db")
    assert all(p.key.dst != db for p in fresh.paths), "too fresh to judge: not probed yet"
    settled = planner.plan(index, 7.0)
    assert settled.paths and all(p.priority == "changed" and p.key.dst == db for p in settled.paths)


def test_retries_come_before_everything() -> None:
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget(max_pods=2, targets_per_pod=2))
    first = planner.plan(index, 0.0)
    target = first.paths[0].key
    planner.record(target, 0.0, settled=False, retry=True)
    again = planner.plan(index, 1.0)
    assert again.paths[0].key == target and again.paths[0].priority == "retry"


def test_namespace_opt_in_and_out() -> None:
    assert namespace_selected("shop", [])
    assert not namespace_selected("kube-system", ["!kube-*"])
    assert namespace_selected("team-a", ["team-*", "!team-sandbox"])
    assert not namespace_selected("team-sandbox", ["team-*", "!team-sandbox"])
    assert not namespace_selected("shop", ["team-*"])
    index = three_tier_cluster()
    groups = probe_groups(index, ["!other"])
    assert {g.namespace for g in groups.values()} == {"shop"}


def test_balanced_placements_probe_every_node_as_source_and_destination() -> None:
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget())
    paths = planner.enumerate_paths(index)
    # one placement per (group pair, port), plus the node cover
    cover = planner.paths_plan.cover
    assert len({(k.src, k.dst, k.port) for k in paths if k not in cover}) == len(paths) - len(cover)
    for side in ("src_node", "dst_node"):
        for node in NODES:
            denied = [k for k, p in paths.items() if getattr(k, side) == node and not p.predicted]
            assert denied, f"no predicted-denied path with {side}={node}: a fault there would go unseen"
    # placements are stable: the next cycle re-checks the same node pairs
    planner.cycles_completed += 1
    assert set(planner.enumerate_paths(index)) == set(paths)


def test_node_cover_proves_every_feature_on_every_node_it_can() -> None:
    """Balanced placements put each port class on one node pair; the cover adds placements until every
    (feature, direction, prediction, node) that some placement could prove is proven by a planned path, so a
    feature broken on one node only is still probed there. Without it, something would be left unproven here."""
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget())
    paths = planner.enumerate_paths(index)
    plan = planner.paths_plan
    possible = {o for p in plan.paths.values() for *_, proves in p.placements for o in proves}

    def proven(keys: Iterable[PathKey]) -> set[tuple[str, str, bool, str]]:
        out: set[tuple[str, str, bool, str]] = set()
        for k in keys:
            base = plan.paths.get(k)
            source = base if base is not None and base.placements else next(
                p for p in plan.paths.values() if (p.key.src, p.key.dst, p.key.port) == (k.src, k.dst, k.port)
                and p.placements)
            out |= next(proves for sn, dn, proves in source.placements if (sn, dn) == (k.src_node, k.dst_node))
        return out

    assert plan.cover, "the balanced placements alone leave something unproven in this cluster"
    assert proven(paths) == possible
    assert proven(k for k in paths if k not in plan.cover) != possible
    # bounded: one extra path per obligation at most
    assert len(plan.cover) <= len(possible - proven(k for k in paths if k not in plan.cover))
    # and a rebuild agrees
    assert set(plan.rebuilt().paths) == set(paths)


def test_ports_the_policies_treat_alike_are_probed_once() -> None:
    """Ports 80, 8080, 9090, 5432. From db to web, every port is denied by default-deny alone: one of them
    represents all. From web to api, 9090 is admitted through the named port and the others are not: two probes."""
    index = three_tier_cluster()
    groups = probe_groups(index)
    by_tier = {g.labels.get("tier"): g.id for g in groups.values() if g.namespace == "shop"}
    ports_ = tuple(PortProtocol(p) for p in (80, 8080, 9090, 5432))
    deduped = ProbePlanner(PlanBudget(ports=ports_)).enumerate_paths(index)
    every = ProbePlanner(PlanBudget(ports=ports_, dedup_ports=False)).enumerate_paths(index)

    def ports(paths: Any, src: str, dst: str) -> set[str]:
        return {str(k.port) for k in paths if (k.src, k.dst) == (by_tier[src], by_tier[dst])}

    assert len(ports(every, "db", "web")) == 4 and len(ports(deduped, "db", "web")) == 1
    assert "9090/TCP" in ports(deduped, "web", "api")
    assert len(ports(deduped, "web", "api")) == 2  # the admitted named port, and one denied port


def test_a_refused_placement_never_holds_the_cycle_open_and_coverage_stays_honest() -> None:
    """One (group, node) whose pods the cluster refuses (a full quota, a webhook...): its paths come back as
    unavailable with the reason, are settled inconclusive, and the cycle completes with everything else judged;
    coverage counts only what was judged."""
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget(max_pods=4, targets_per_pod=5))
    every = set(planner.enumerate_paths(index))
    db = next(g.id for g in probe_groups(index).values() if g.labels.get("tier") == "db")

    def blocked(group: str, node: str) -> str | None:
        return "quota" if group == db else None

    now, refused = 0.0, set()
    for _ in range(200):
        rnd = planner.plan(index, now, blocked=blocked)
        assert all(db not in (p.key.src, p.key.dst) for p in rnd.paths), "a refused group is never packed"
        for path, reason in rnd.unavailable:
            assert reason == "quota"
            refused.add(path.key)
            planner.record(path.key, now, settled=True, reason=reason, touch=False)
        for path in rnd.paths:
            planner.record(path.key, now, settled=True)
        now += 1
        if planner.cycle_done():
            break
    assert planner.cycle_done()
    assert refused == {k for k in every if db in (k.src, k.dst)}
    states = planner.path_states()
    assert states == {("judged", ""): len(every) - len(refused), ("inconclusive", "quota"): len(refused)}
    assert planner.coverage() == (len(every) - len(refused)) / len(every)


def test_an_inconclusive_path_is_tried_again_in_its_cycle_a_bounded_number_of_times() -> None:
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget(max_pods=2, targets_per_pod=2))
    key = planner.plan(index, 0.0).paths[0].key
    for attempt in range(1, ProbePlanner.MAX_UNSETTLED_ATTEMPTS + 1):
        assert key in planner.pending
        planner.record(key, float(attempt), settled=False, reason="api_error")
    assert key not in planner.pending
    assert planner.outcomes[key] == ("inconclusive", "api_error")


def test_paths_are_placed_away_from_nodes_no_probe_pod_may_run_on() -> None:
    """A tainted or Windows node cannot host probe pods: while a group has members elsewhere its paths are probed
    from those nodes; the unavailable node's own paths are reported, never silently dropped."""
    index = three_tier_cluster()
    planner = ProbePlanner(PlanBudget(placements="all"))
    planner.unavailable_nodes = {"node-c": "node node-c has taint dedicated:NoSchedule"}
    paths = planner.enumerate_paths(index)
    assert paths and not any("node-c" in (k.src_node, k.dst_node) for k in paths)
    # a group living only on the unavailable node keeps its paths there, and they come back unavailable
    index.upsert(pod("shop", "lonely", {"tier": "lonely"}, "10.1.2.1", "node-c", [("http", 8080)]))
    index.upsert(policy("shop", "lonely", {"podSelector": {"matchLabels": {"tier": "lonely"}},
                                           "policyTypes": ["Ingress"]}))
    rnd = planner.plan(index, 0.0)
    stuck = [(p.key, why) for p, why in rnd.unavailable]
    assert stuck and all("node-c" in (k.src_node, k.dst_node) and "taint" in why for k, why in stuck)


def test_a_cycle_whose_paths_were_all_replaced_is_not_counted_done_and_begins_again() -> None:
    """A change that gives every group a new identity (here: a policy that looks at a label every pod has, with
    another value on each tier) removes every path of the running cycle before any was judged. That cycle judged
    nothing: it is not done (no coverage-0 completion), and the next round begins a new cycle with the paths
    there are now, without waiting for the next interval."""
    index = three_tier_cluster()
    budget = PlanBudget(max_pods=2, targets_per_pod=2, settle_seconds=0)
    planner = ProbePlanner(budget)
    planner.plan(index, 0.0)
    before = set(planner.cycle_paths())
    assert before and not planner.cycle_done()
    # every group's identity changes: the client's (a policy now looks at `app`) and the shop's (at the hash)
    index.upsert(policy("other", "looks-at-labels", {
        "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {
            "matchExpressions": [{"key": "pod-template-hash", "operator": "Exists"}]}}]}]}))
    planner.update(snapshot(index, {}), 1.0)
    assert not planner.cycle_paths() & before and not planner.pending
    assert not planner.cycle_done(), "a cycle emptied by a change judged nothing: it is not done"
    rnd = planner.next_round(2.0, new_cycle=False)
    assert planner.cycle_paths() == set(planner.enumerate_paths(index)) and planner.cycle_paths() != before
    assert rnd.paths
    assert planner.cycles_completed == 0


def test_a_cluster_with_nothing_to_probe_still_completes_its_cycles() -> None:
    planner = ProbePlanner(PlanBudget(max_pods=2, targets_per_pod=2))
    planner.plan(ReachabilityIndex.from_objects([namespace("empty")]), 0.0)
    assert planner.cycle_done() and planner.coverage() == 0.0
