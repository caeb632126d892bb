"""The path counter behind netpol_auditor_paths equals the index's own path_counts, and honours the budget."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netpol_auditor.exporters.paths import PathCounter, count_paths
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifests import parse_object
from netpol_auditor.model import ObjectKind, PortProtocol

APPS = ("web", "api", "db")
NAMESPACES = ("a", "b", "c")
PORTS = (PortProtocol(80), PortProtocol(8080), PortProtocol.parse("53/UDP"))


def pod(i: int, ns: str, app: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": ns, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": port, "name": "http"}]}]},
            "status": {"phase": "Running", "podIP": f"10.0.{i // 250}.{i % 250 + 1}",
                       "podIPs": [{"ip": f"10.0.{i // 250}.{i % 250 + 1}"}]}}


def policy(i: int, ns: str, target: str | None, types: list[str], peer: str | None, peer_ns: str | None,
           port: int | str | None) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if peer is not None or peer_ns is not None:
        entry: dict[str, Any] = {}
        if peer is not None:
            entry["podSelector"] = {"matchLabels": {"app": peer}}
        if peer_ns is not None:
            entry["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": peer_ns}}
        rule["from" if "Ingress" in types else "to"] = [entry]
    if port is not None:
        rule["ports"] = [{"port": port}]
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {"app": target}} if target else {}, "policyTypes": types}
    if "Ingress" in types:
        spec["ingress"] = [rule]
    if "Egress" in types:
        spec["egress"] = [{**({"to": rule["from"]} if "from" in rule else rule), **(
            {"ports": rule["ports"]} if "ports" in rule else {})}] if rule else [{}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"np{i}", "namespace": ns}, "spec": spec}


_pods = st.lists(st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(APPS), st.sampled_from([80, 8080])),
                 min_size=0, max_size=14)
_policies = st.lists(st.tuples(
    st.sampled_from(NAMESPACES), st.one_of(st.none(), st.sampled_from(APPS)),
    st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]), st.one_of(st.none(), st.sampled_from(APPS)),
    st.one_of(st.none(), st.sampled_from(NAMESPACES)), st.one_of(st.none(), st.sampled_from([80, 8080, "http"])),
), max_size=6)


def build(pods: list[tuple[str, str, int]], policies: list[Any]) -> ReachabilityIndex:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in NAMESPACES]
    docs += [pod(i, *p) for i, p in enumerate(pods)]
    docs += [policy(i, *p) for i, p in enumerate(policies)]
    parsed = [parse_object(d) for d in docs]
    return ReachabilityIndex.from_objects(o for o in parsed if o is not None)


@settings(max_examples=200, deadline=None)
@given(_pods, _policies)
def test_count_paths_equals_the_index(pods: list[tuple[str, str, int]], policies: list[Any]) -> None:
    index = build(pods, policies)
    expected = {k: (v.allowed, v.denied) for k, v in index.path_counts(PORTS).items()}
    got, needed = count_paths(index, PORTS)
    assert got == expected
    assert needed == len(expected)


@settings(max_examples=50, deadline=None)
@given(_pods, _policies, st.integers(min_value=0, max_value=30))
def test_budget_keeps_a_sorted_prefix(pods: list[tuple[str, str, int]], policies: list[Any], budget: int) -> None:
    index = build(pods, policies)
    full, needed = count_paths(index, PORTS)
    capped, needed_capped = count_paths(index, PORTS, budget)
    assert needed_capped == needed
    assert len(capped) == min(budget, needed)
    assert capped == {k: full[k] for k in list(full)[: len(capped)]}


def test_cost_follows_the_budget_not_the_cluster() -> None:
    """400 namespaces with a default deny each: 160k namespace pairs, but a 1000-key budget is quick."""
    docs: list[dict[str, Any]] = []
    for n in range(400):
        ns = f"ns{n:03d}"
        docs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        docs += [pod(n * 2 + k, ns, APPS[k], 80) | {"metadata": {"name": f"p{k}", "namespace": ns,
                                                                  "labels": {"app": APPS[k]}}} for k in range(2)]
        docs.append(policy(0, ns, None, ["Ingress"], "web", None, 80))
    index = ReachabilityIndex.from_objects(o for o in (parse_object(d) for d in docs) if o is not None)
    started = time.perf_counter()
    counts, needed = count_paths(index, PORTS[:1], 1000)
    assert len(counts) == 1000 and needed == 400 * 400
    assert time.perf_counter() - started < 2.0


_changes = st.lists(st.tuples(st.sampled_from(["pod", "unpod", "policy", "unpolicy", "nslabel"]),
                              st.integers(min_value=0, max_value=9), st.sampled_from(NAMESPACES),
                              st.sampled_from(APPS), st.sampled_from([80, 8080])), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(_pods, _policies, _changes)
def test_incremental_counter_follows_every_change(pods: list[tuple[str, str, int]], policies: list[Any],
                                                  changes: list[tuple[str, int, str, str, int]]) -> None:
    """One PathCounter across a series of index changes answers like a fresh count after each of them."""
    index = build(pods, policies)
    counter = PathCounter()
    for op, i, ns, app, port in changes:
        if op == "pod":
            index.upsert(parse_object(pod(100 + i, ns, app, port)))  # type: ignore[arg-type]
        elif op == "unpod":
            index.delete(ObjectKind.POD, ns, f"p{100 + i}")
        elif op == "policy":
            # Re-applying a name modifies the policy: verdicts change while isolation may not.
            doc = policy(100 + i % 3, ns, APPS[i % 3], ["Ingress"] if port == 80 else ["Egress"], None,
                         NAMESPACES[i % 3], port if i % 2 else None)
            if i % 4 == 0:  # a peer chosen by a namespace label that "nslabel" changes
                rules = doc["spec"].get("ingress") or doc["spec"]["egress"]
                rules[0][("from" if "ingress" in doc["spec"] else "to")] = [
                    {"namespaceSelector": {"matchLabels": {"team": app}}}]
            index.upsert(parse_object(doc))  # type: ignore[arg-type]
        elif op == "unpolicy":
            index.delete(ObjectKind.NETWORK_POLICY, ns, f"np{100 + i % 3}")
        else:
            index.upsert(parse_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {
                "name": ns, "labels": {"team": app}}}))  # type: ignore[arg-type]
        expected = {k: (v.allowed, v.denied) for k, v in index.path_counts(PORTS).items()}
        assert counter.count(index, PORTS)[0] == expected
