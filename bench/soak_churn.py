"""The churn soak's workload (bench/soak.py): seeded changes to namespaces, pods and NetworkPolicies, made through the
API by the only writer of the ``soak-*`` namespaces, which keeps a record of what it made and when.

kube-router v2.1.0 has known gaps, which the generated policies stay out of (`known_gap` tells a mismatch of their
shape, which the soak then lists apart from false alarms):

* ``same_node_egress``: no egress filtering between two pods of one node when a policy that isolates the source for
  egress also admits the destination's ingress (``kube_router_gap`` in tests/prober/test_prober_cluster.py). The
  soak's policies hold one direction each.
* ``unresolved_named_port`` (found by this soak): a rule with peers whose ports are all named, where the name
  resolves on none of the pods concerned (the policy's pods for ingress, the peers for egress), is left with no port
  at all, which kube-router programs as "every port": the peers are admitted on every port
  (pkg/controllers/netpol/policy.go: ``processNetworkPolicyPorts``, then the ``len(ports) == 0 &&
  len(namedPorts) == 0`` case of ``processIngressRules``/``processEgressRules``). The soak's rules with peers always
  carry a numeric port too.
* ``egress_named_port_without_peers`` (found by this soak): an egress rule without ``to`` resolves its named ports on
  the pods of the policy's own namespace, not on each destination (``buildNetworkPolicyInfo``:
  ``ListPodsByNamespaceAndLabels(policy.Namespace, ...)``), then admits that number to every destination: traffic
  to a destination that declares the name is dropped when no pod of the policy's namespace declares it (or declares
  it with another number), and that number is open to destinations that do not use it for the name. The soak's
  egress rules without ``to`` use numeric ports only.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

__all__ = [
    "CHANGES",
    "PREFIX",
    "ChangeRecord",
    "ChurnDriver",
    "Limits",
    "World",
    "changes_before",
    "core_api",
    "known_gap",
    "named_any",
    "named_only",
    "networking_api",
    "pod_body",
    "policy_spec",
]

PREFIX = "soak-"
APPS = ("web", "api", "db")
TEAMS = ("red", "blue")
ENVS = ("prod", "dev")
#: Declared ports by the kind a pod is created as (fixed: a pod's ports cannot change, its labels can). ``http`` is
#: 8080 on one kind and 9090 on another, so a policy naming it treats them apart.
PORTS: dict[str, list[dict[str, Any]]] = {
    "web": [{"name": "http", "containerPort": 8080}],
    "api": [{"name": "http", "containerPort": 9090}, {"name": "stats", "containerPort": 8125, "protocol": "UDP"}],
    "db": [{"name": "db", "containerPort": 5432}],
}
PORT_SPECS: tuple[list[dict[str, Any]], ...] = (
    [],
    [{"port": 8080}],
    [{"port": "http"}],
    [{"port": 5432}],
    [{"port": 9000, "endPort": 9100}],
    [{"port": "db"}, {"port": 8080}],
    [{"port": "http"}, {"port": 5432}],
    [{"port": 8125, "protocol": "UDP"}],
    [{"port": "stats", "protocol": "UDP"}, {"port": "http"}],
    [{"port": "stats", "protocol": "UDP"}, {"port": 5432}],
)


def named_only(ports: list[dict[str, Any]]) -> bool:
    return bool(ports) and all(isinstance(p["port"], str) for p in ports)


def named_any(ports: list[dict[str, Any]]) -> bool:
    return any(isinstance(p["port"], str) for p in ports)


#: Ports of a rule with peers: never named ports alone (``unresolved_named_port``, module doc).
PEER_PORT_SPECS = tuple(spec for spec in PORT_SPECS if not named_only(spec))
#: Ports of an egress rule without ``to``: numeric only (``egress_named_port_without_peers``).
NUMERIC_PORT_SPECS = tuple(spec for spec in PORT_SPECS if not named_any(spec))


def rule_ports(rng: random.Random, direction: str, has_peers: bool) -> list[dict[str, Any]]:
    """One of `PORT_SPECS`, save those that would run into a known kube-router gap (module doc)."""
    if has_peers:
        return rng.choice(PEER_PORT_SPECS)
    return rng.choice(PORT_SPECS if direction == "Ingress" else NUMERIC_PORT_SPECS)


#: Change types and their weights.
CHANGES: dict[str, float] = {
    "pod_create": 1.5,
    "pod_delete": 1.5,
    "pod_relabel": 3.0,
    "namespace_create": 0.7,
    "namespace_delete": 0.7,
    "namespace_relabel": 1.5,
    "policy_create": 2.0,
    "policy_modify": 2.0,
    "policy_delete": 1.5,
}


@dataclass(frozen=True)
class Limits:
    """The workload's size: base namespaces and their pods to start with, and the bounds the churn keeps to."""

    base_namespaces: int = 4
    pods_per_namespace: int = 3
    max_pods_per_namespace: int = 5
    max_dynamic_namespaces: int = 2
    max_policies_per_namespace: int = 4


def core_api(api: Any) -> Any:
    """The typed client's models are too strict for manifests as dicts: the APIs are used untyped."""
    return client.CoreV1Api(api)


def networking_api(api: Any) -> Any:
    return client.NetworkingV1Api(api)


@dataclass
class World:
    """What the driver has made: namespaces (labels), pods (labels, node, kind), policies (spec)."""

    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    dynamic: list[str] = field(default_factory=list)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policy_history: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # every spec it had

    def pods_in(self, ns: str) -> list[tuple[str, str]]:
        return sorted(k for k in self.pods if k[0] == ns)

    def policies_in(self, ns: str) -> list[tuple[str, str]]:
        return sorted(k for k in self.policies if k[0] == ns)


def _selector(rng: random.Random) -> dict[str, Any]:
    r = rng.random()
    if r < 0.2:
        return {}
    if r < 0.75:
        return {"matchLabels": {"app": rng.choice(APPS)}}
    return {"matchExpressions": [{"key": "app", "operator": "In", "values": sorted(rng.sample(APPS, 2))}]}


def _peer(rng: random.Random) -> dict[str, Any]:
    r = rng.random()
    if r < 0.4:
        return {"podSelector": _selector(rng)}
    if r < 0.65:
        return {"namespaceSelector": {"matchLabels": {"team": rng.choice(TEAMS)}}}
    if r < 0.9:
        return {"namespaceSelector": {"matchLabels": {"env": rng.choice(ENVS)}},
                "podSelector": {"matchLabels": {"app": rng.choice(APPS)}}}
    return {"namespaceSelector": {}}


def policy_spec(rng: random.Random, direction: str) -> dict[str, Any]:
    """A policy of one direction only (``Ingress`` or ``Egress``, which keeps kube-router's same-node gap out): 0 rules
    (deny all that way) to 2, each with 0-2 peers and ports from `rule_ports`."""
    rules = []
    for _ in range(rng.choice((0, 1, 1, 1, 2))):
        rule: dict[str, Any] = {}
        peers = [_peer(rng) for _ in range(rng.choice((0, 1, 1, 2)))]
        if peers:
            rule["from" if direction == "Ingress" else "to"] = peers
        ports = rule_ports(rng, direction, bool(peers))
        if ports:
            rule["ports"] = ports
        rules.append(rule)
    spec: dict[str, Any] = {"podSelector": _selector(rng), "policyTypes": [direction]}
    if rules:
        spec[direction.lower()] = rules
    return spec


def pod_body(name: str, kind: str, labels: dict[str, str], node: str) -> dict[str, Any]:
    """A pod pinned to ``node`` whose container has no command: the node agent answers on its declared ports."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "app", "image": kind, "ports": PORTS[kind]}]},
    }


@dataclass
class ChangeRecord:
    at: float  # seconds since the soak started
    kind: str
    what: str
    namespaces: tuple[str, ...]
    error: str = ""


class ChurnDriver:
    """Seeded changes to the soak's namespaces, pods and policies through the API (the only writer there)."""

    def __init__(self, api: Any, limits: Limits, seed: int, nodes: list[str], started: float) -> None:
        self.core = core_api(api)
        self.net = networking_api(api)
        self.limits = limits
        self.nodes = nodes
        self.rng = random.Random(seed)
        self.world = World()
        self.started = started
        self.log: list[ChangeRecord] = []
        self._serial = 0

    def _name(self, stem: str) -> str:
        self._serial += 1
        return f"{stem}-{self._serial}"

    def _ns_labels(self) -> dict[str, str]:
        return {"team": self.rng.choice(TEAMS), "env": self.rng.choice(ENVS), "soak": "true"}

    # -- population --------------------------------------------------------------------------------------------

    def populate(self) -> None:
        """The base namespaces, each with its pods and two policies (recorded as changes of kind ``initial``)."""
        for i in range(self.limits.base_namespaces):
            ns = f"{PREFIX}{chr(ord('a') + i)}"
            labels = self._ns_labels()
            self._create_namespace(ns, labels)
            made = [f"{ns} {labels}"]
            made += [self._create_pod(ns) for _ in range(self.limits.pods_per_namespace)]
            made += [self._create_policy(ns) for _ in range(2)]
            at = round(time.monotonic() - self.started, 2)
            self.log.extend(ChangeRecord(at, "initial", what, (ns,)) for what in made)

    def wait_running(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pods = self.core.list_pod_for_all_namespaces(label_selector="soak-pod=true").items
            running = {(p.metadata.namespace, p.metadata.name) for p in pods if p.status.phase == "Running"}
            if set(self.world.pods) <= running:
                return
            if time.monotonic() > deadline:
                missing = sorted(set(self.world.pods) - running)
                raise RuntimeError(f"soak pods not running after {timeout:.0f}s: {missing}")
            time.sleep(1)

    # -- primitive operations ----------------------------------------------------------------------------------

    def _create_namespace(self, ns: str, labels: dict[str, str]) -> None:
        self.core.create_namespace({"metadata": {"name": ns, "labels": labels}})
        self.world.namespaces[ns] = dict(labels)

    def _create_pod(self, ns: str) -> str:
        kind = self.rng.choice(APPS)
        name = self._name(kind)
        labels = {"app": self.rng.choice(APPS) if self.rng.random() < 0.3 else kind, "soak-pod": "true"}
        node = self.rng.choice(self.nodes)
        body = pod_body(name, kind, labels, node)
        deadline = time.monotonic() + 30
        while True:  # a new namespace's default ServiceAccount is created asynchronously
            try:
                self.core.create_namespaced_pod(ns, body)
                break
            except ApiException as exc:
                if 'serviceaccount "default" not found' not in (exc.body or "") or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.world.pods[(ns, name)] = {"labels": labels, "node": node, "kind": kind}
        return f"{ns}/{name} ({kind} on {node}, app={labels['app']})"

    def _create_policy(self, ns: str) -> str:
        direction = self.rng.choice(("Ingress", "Egress"))
        name = self._name(direction.lower())
        spec = policy_spec(self.rng, direction)
        self.net.create_namespaced_network_policy(ns, {"metadata": {"name": name}, "spec": spec})
        self.world.policies[(ns, name)] = spec
        self.world.policy_history.setdefault((ns, name), []).append(spec)
        return f"{ns}/{name}: {json.dumps(spec, separators=(',', ':'))}"

    # -- one change --------------------------------------------------------------------------------------------

    def _possible(self) -> dict[str, Callable[[], tuple[str, tuple[str, ...]]]]:
        w, cfg = self.world, self.limits
        namespaces = sorted(w.namespaces)
        out: dict[str, Callable[[], tuple[str, tuple[str, ...]]]] = {}
        roomy = [ns for ns in namespaces if len(w.pods_in(ns)) < cfg.max_pods_per_namespace]
        if roomy:
            out["pod_create"] = lambda: self._pod_create(roomy)
        deletable = [ns for ns in namespaces if len(w.pods_in(ns)) > 1]
        if deletable:
            out["pod_delete"] = lambda: self._pod_delete(deletable)
        if w.pods:
            out["pod_relabel"] = self._pod_relabel
        if len(w.dynamic) < cfg.max_dynamic_namespaces:
            out["namespace_create"] = self._namespace_create
        if w.dynamic:
            out["namespace_delete"] = self._namespace_delete
        out["namespace_relabel"] = self._namespace_relabel
        with_room = [ns for ns in namespaces if len(w.policies_in(ns)) < cfg.max_policies_per_namespace]
        if with_room:
            out["policy_create"] = lambda: self._policy_create(with_room)
        if w.policies:
            out["policy_modify"] = self._policy_modify
            out["policy_delete"] = self._policy_delete
        return out

    def change(self) -> ChangeRecord:
        """Make one change, picked by weight among those possible now; an API error is recorded, not raised."""
        possible = self._possible()
        kinds = sorted(possible)
        kind = self.rng.choices(kinds, weights=[CHANGES[k] for k in kinds])[0]
        at = time.monotonic() - self.started
        try:
            what, namespaces = possible[kind]()
            record = ChangeRecord(round(at, 2), kind, what, namespaces)
        except ApiException as exc:
            record = ChangeRecord(round(at, 2), kind, "", (), f"{exc.status} {exc.reason}")
        self.log.append(record)
        return record

    def _pod_create(self, namespaces: list[str]) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(namespaces)
        return self._create_pod(ns), (ns,)

    def _pod_delete(self, namespaces: list[str]) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(namespaces)
        _, name = self.rng.choice(self.world.pods_in(ns))
        del self.world.pods[(ns, name)]
        self.core.delete_namespaced_pod(name, ns)
        return f"{ns}/{name}", (ns,)

    def _pod_relabel(self) -> tuple[str, tuple[str, ...]]:
        ns, name = self.rng.choice(sorted(self.world.pods))
        labels = self.world.pods[(ns, name)]["labels"]
        if self.rng.random() < 0.2:  # a label no selector reads: an event that changes no verdict
            value = None if "track" in labels else self.rng.choice(("stable", "canary"))
            patch: dict[str, str | None] = {"track": value}
        else:
            patch = {"app": self.rng.choice([a for a in APPS if a != labels["app"]])}
        self.core.patch_namespaced_pod(name, ns, {"metadata": {"labels": patch}})
        for k, v in patch.items():
            if v is None:
                labels.pop(k, None)
            else:
                labels[k] = v
        return f"{ns}/{name} {patch}", (ns,)

    def _namespace_create(self) -> tuple[str, tuple[str, ...]]:
        ns = self._name(f"{PREFIX}dyn")
        labels = self._ns_labels()
        self._create_namespace(ns, labels)
        self.world.dynamic.append(ns)
        pods = [self._create_pod(ns) for _ in range(self.rng.choice((1, 2)))]
        if self.rng.random() < 0.5:
            pods.append(self._create_policy(ns))
        return f"{ns} {labels}: {'; '.join(pods)}", (ns,)

    def _namespace_delete(self) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(self.world.dynamic)
        self.world.dynamic.remove(ns)
        del self.world.namespaces[ns]
        for key in self.world.pods_in(ns):
            del self.world.pods[key]
        for key in self.world.policies_in(ns):
            del self.world.policies[key]
        self.core.delete_namespace(ns)
        return ns, (ns,)

    def _namespace_relabel(self) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(sorted(self.world.namespaces))
        labels = self.world.namespaces[ns]
        key = self.rng.choice(("team", "env"))
        value = next(v for v in (TEAMS if key == "team" else ENVS) if v != labels[key])
        self.core.patch_namespace(ns, {"metadata": {"labels": {key: value}}})
        labels[key] = value
        return f"{ns} {key}={value}", (ns,)

    def _policy_create(self, namespaces: list[str]) -> tuple[str, tuple[str, ...]]:
        ns = self.rng.choice(namespaces)
        return self._create_policy(ns), (ns,)

    def _policy_modify(self) -> tuple[str, tuple[str, ...]]:
        ns, name = self.rng.choice(sorted(self.world.policies))
        direction = self.world.policies[(ns, name)]["policyTypes"][0]
        spec = policy_spec(self.rng, direction)
        self.net.replace_namespaced_network_policy(name, ns, {"metadata": {"name": name}, "spec": spec})
        self.world.policies[(ns, name)] = spec
        self.world.policy_history[(ns, name)].append(spec)
        return f"{ns}/{name}: {json.dumps(spec, separators=(',', ':'))}", (ns,)

    def _policy_delete(self) -> tuple[str, tuple[str, ...]]:
        ns, name = self.rng.choice(sorted(self.world.policies))
        del self.world.policies[(ns, name)]
        self.net.delete_namespaced_network_policy(name, ns)
        return f"{ns}/{name}", (ns,)


def _policy_key(name: str) -> tuple[str, str]:
    ns, _, policy = name.partition("/")
    return ns, policy


def known_gap(mismatch: dict[str, Any], world: World) -> str | None:
    """Which known kube-router gap (module doc) a mismatch has the shape of, judged from every spec its policies
    (those the operator names: the denying ones for unexpectedly allowed, the admitting ones for unexpectedly denied)
    ever had. The soak's policies stay out of all three, so this is None unless that design changes."""
    specs = [spec for name in mismatch["policies"] for spec in world.policy_history.get(_policy_key(name), [])]
    rules = [(d, r) for spec in specs for d in ("ingress", "egress") for r in spec.get(d, [])]
    if any(d == "egress" and not r.get("to") and named_any(r.get("ports", [])) for d, r in rules):
        return "egress_named_port_without_peers"
    if mismatch["kind"] != "unexpectedly_allowed":
        return None
    if mismatch["src_node"] == mismatch["dst_node"] and any(
            {"Ingress", "Egress"} <= set(spec["policyTypes"]) for spec in specs):
        return "same_node_egress"
    if any((r.get("from") or r.get("to")) and named_only(r.get("ports", [])) for _, r in rules):
        return "unresolved_named_port"
    return None


def changes_before(log: list[ChangeRecord], seen_at: float, namespaces: set[str], window: float = 60.0) -> list[str]:
    """The changes made in the ``window`` seconds before a mismatch was seen (any namespace-label change and any
    change in the pair's namespaces), as evidence."""
    return [f"t={c.at:.1f}s {c.kind} {c.what}" for c in log if seen_at - window <= c.at <= seen_at
            and (c.kind == "namespace_relabel" or set(c.namespaces) & namespaces)]


# -- the soak --------------------------------------------------------------------------------------------------
