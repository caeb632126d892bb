"""What the local cluster's dataplane lets through: kube-router's enforcement, its known gap, and each fault of
faults.py, computed from the policies — the ground truth the prober's reports are compared with.

kube-router enforces a pod's ingress rules on the pod's own node and its egress rules on the source pod's node
(faults.py), so a path (source on node S, destination on node D) is decided by S's egress and D's ingress, each as
the fault of that node makes it. tests/localcluster/test_faults.py checks this model against real connections; the
policies' semantics come from the product's engine (itself checked against upstream's truth tables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from netpol_auditor.engine import DirectionVerdict, Snapshot, Verdict, compile_policy
from netpol_auditor.model import (
    Direction,
    Namespace,
    NetworkPolicy,
    NetworkPolicyPeer,
    NetworkPolicyRule,
    Pod,
    PodRef,
    PortProtocol,
    Protocol,
)

__all__ = ["ClusterModel", "NodeFault", "fault_args", "kube_router_gap", "scenario_objects", "stand_in"]

#: modes in which the node has no rules at all
UNENFORCED = ("none", "stopped")


@dataclass(frozen=True)
class NodeFault:
    """One node's enforcement, from its mode (faults.modes): "kube-router", "none", "ignore-udp:ingress", ..."""

    mode: str

    @property
    def verb(self) -> str:
        return self.mode.split(":", 1)[0]

    @property
    def directions(self) -> frozenset[Direction]:
        if self.verb in ("ignore-udp", "ignore-sctp") and ":" in self.mode:
            return frozenset({Direction(self.mode.split(":", 1)[1].capitalize())})
        return frozenset(Direction)

    @property
    def has_rules(self) -> bool:
        return self.verb not in UNENFORCED

    def enforces(self, direction: Direction, protocol: Protocol) -> bool:
        """Whether rules of this direction are applied to traffic of this protocol at all on the node."""
        if self.verb == "frozen":
            raise ValueError("a frozen enforcer keeps rules of an earlier state: no model from current policies")
        if not self.has_rules:
            return False
        if self.verb == f"ignore-{direction.value.lower()}":
            return False
        proto = {"ignore-udp": Protocol.UDP, "ignore-sctp": Protocol.SCTP}.get(self.verb)
        return not (proto is protocol and direction in self.directions)

    def transform(self, policy: NetworkPolicy) -> NetworkPolicy:
        """The policy as this node programs it."""
        if self.verb == "ignore-end-port":
            return _map_rules(policy, lambda d, r: dataclasses.replace(
                r, ports=tuple(dataclasses.replace(p, end_port=None) for p in r.ports)))
        if self.verb == "ignore-named-ports":
            return _map_rules(policy, _without_named_ports)
        if self.verb == "ignore-ipblock-except":
            return _map_rules(policy, lambda d, r: dataclasses.replace(r, peers=tuple(_without_except(p)
                                                                                    for p in r.peers)))
        return policy


def _map_rules(policy: NetworkPolicy, fn: object) -> NetworkPolicy:
    def rules(direction: Direction, rs: tuple[NetworkPolicyRule, ...]) -> tuple[NetworkPolicyRule, ...]:
        out = (fn(direction, r) for r in rs)  # type: ignore[operator]
        return tuple(r for r in out if r is not None)

    return dataclasses.replace(policy, ingress=rules(Direction.INGRESS, policy.ingress),
                               egress=rules(Direction.EGRESS, policy.egress))


def _without_named_ports(direction: Direction, rule: NetworkPolicyRule) -> NetworkPolicyRule | None:
    # kube-router resolves an egress rule's named port without `to` peers to a plain port (policy.go "to all
    # destinations"): only rules matched through the named-port ipset lose it
    if direction is Direction.EGRESS and not rule.peers:
        return rule
    ports = tuple(p for p in rule.ports if not isinstance(p.port, str))
    if rule.ports and not ports:
        return None  # every port was named: the rule admits nothing (with no ports it would admit everything)
    return dataclasses.replace(rule, ports=ports)


def _without_except(peer: NetworkPolicyPeer) -> NetworkPolicyPeer:
    if peer.ip_block is None or not peer.ip_block.except_:
        return peer
    return dataclasses.replace(peer, ip_block=dataclasses.replace(peer.ip_block, except_=()))


def kube_router_gap(egress: DirectionVerdict | None, ingress: DirectionVerdict | None) -> bool:
    """kube-router's own gap between two pods on one node (both nodes healthy): the source's egress rules deny, the
    destination's ingress admits through a policy that also isolates the source for egress. kube-router runs one
    chain per policy for both directions of a local pod, so that policy's ingress rule also accepts the source's
    egress (compare cloudnativelabs/kube-router#916, policies of same-node pods not fully enforced)."""
    if egress is None or ingress is None or egress.allowed or not ingress.allowed or not ingress.isolated:
        return False
    admitting = {(r.namespace, r.policy) for r in ingress.admitted_by}
    return bool(admitting & set(egress.isolating_policies))


class ClusterModel:
    """Judges paths as the local cluster's dataplane does under the given node modes."""

    def __init__(self, objects: Iterable[Namespace | Pod | NetworkPolicy], modes: Mapping[str, str]) -> None:
        objs = list(objects)
        self.faults = {node: NodeFault(mode) for node, mode in modes.items()}
        self.intended = Snapshot.from_objects(objs)
        self._snapshots: dict[str, Snapshot] = {}
        for node, fault in self.faults.items():
            snap = Snapshot(self.intended.namespaces, self.intended.pods)
            snap.policies = {k: compile_policy(fault.transform(cp.policy))
                             for k, cp in self.intended.policies.items()}
            self._snapshots[node] = snap

    def _twin(self, ref: PodRef) -> PodRef:
        """Another pod just like `ref` (a probe and a responder cloned from one pod are two pods)."""
        twin = PodRef(ref.namespace, f"{ref.name}~twin")
        if twin not in self.intended.pods:
            self.intended.pods[twin] = dataclasses.replace(self.intended.pods[ref], name=twin.name)
        return twin

    def allowed(self, src: PodRef, dst: PodRef, port: PortProtocol, src_node: str, dst_node: str) -> bool:
        """Whether a connection from a pod like `src` on `src_node` to one like `dst` on `dst_node` gets through."""
        if src == dst:
            dst = self._twin(dst)
        egress = self._snapshots[src_node].verdict(src, dst, port).egress
        ingress = self._snapshots[dst_node].verdict(src, dst, port).ingress
        eg_fault, in_fault = self.faults[src_node], self.faults[dst_node]
        eg_ok = egress is None or egress.allowed or not eg_fault.enforces(Direction.EGRESS, port.protocol)
        in_ok = ingress is None or ingress.allowed or not in_fault.enforces(Direction.INGRESS, port.protocol)
        if eg_ok and in_ok:
            return True
        same_node_gap = (src_node == dst_node and eg_fault.has_rules and in_ok
                         and kube_router_gap(egress, ingress))
        return same_node_gap

    def intended_verdict(self, src: PodRef, dst: PodRef, port: PortProtocol) -> Verdict:
        return self.intended.verdict(src, dst, port)

    def wrong(self, src: PodRef, dst: PodRef, port: PortProtocol, src_node: str, dst_node: str) -> bool:
        """The dataplane does otherwise than the policies say."""
        intended = self.intended_verdict(src, self._twin(dst) if src == dst else dst, port).allowed
        return intended is not None and intended != self.allowed(src, dst, port, src_node, dst_node)


# -- a scenario in which every fault class changes some paths -------------------------------------------------------

#: node-1's pod CIDR: the ipBlock `except` below, so whether a peer is excepted depends only on its node
EXCEPTED_CIDR = "10.244.1.0/24"
SERVER_PORTS: tuple[dict[str, object], ...] = (
    {"name": "http", "containerPort": 8080}, {"containerPort": 9000}, {"containerPort": 9005},
    {"containerPort": 7000}, {"name": "dns", "containerPort": 5353, "protocol": "UDP"})
OTHER_PORTS: tuple[dict[str, object], ...] = ({"containerPort": 8080}, {"containerPort": 5353, "protocol": "UDP"})
#: the faults the scenario tells apart, each on one node
SCENARIO_FAULTS = (
    ("ignore-end-port", "node-1"), ("ignore-named-ports", "node-2"), ("ignore-udp", "node-1"),
    ("ignore-udp:ingress", "node-2"), ("ignore-udp:egress", "node-1"), ("ignore-ipblock-except", "node-2"),
    ("ignore-ipblock-except", "node-1"), ("ignore-egress", "node-2"), ("ignore-ingress", "node-1"),
    ("stop-enforcer", "node-2"),
)


def scenario_objects(namespace: str) -> list[dict[str, object]]:
    """Servers, clients and other pods on both nodes, and two policies that use every feature a fault breaks:
    servers admit clients on a named port, a port range and UDP, and anyone outside node-1's pod CIDR on 7000
    (ipBlock except); clients may egress only to the servers, on the same ports, and to 7000 outside node-1's
    CIDR. Other pods are not isolated. No policy isolates both ends of a path (kube-router's same-node gap does
    not arise)."""
    def pod(name: str, node: str, app: str, ports: tuple[dict[str, object], ...]) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
                "spec": {"nodeName": node, "containers": [{"name": app, "image": app, "ports": list(ports)}]}}

    ports = [{"port": "http"}, {"port": 9000, "endPort": 9005}, {"port": 5353, "protocol": "UDP"}]
    block = {"ipBlock": {"cidr": "10.244.0.0/16", "except": [EXCEPTED_CIDR]}}
    netpol = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy"}
    return [
        *(pod(f"{app}-{i}", f"node-{i}", app, p) for app, p in (("server", SERVER_PORTS), ("client", OTHER_PORTS),
                                                                 ("other", OTHER_PORTS)) for i in (1, 2)),
        {**netpol, "metadata": {"name": "server-in", "namespace": namespace},
         "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": ports},
                              {"from": [block], "ports": [{"port": 7000}]}]}},
        {**netpol, "metadata": {"name": "client-out", "namespace": namespace},
         "spec": {"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
                  "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": ports},
                             {"to": [block], "ports": [{"port": 7000}]}]}},
    ]


def fault_args(mode: str, node: str) -> list[str]:
    """``python -m localcluster fault`` arguments that put `node` in `mode` ("ignore-udp:ingress" -> ``ignore-udp
    NODE --direction ingress``)."""
    verb, _, direction = mode.partition(":")
    return [verb, node, *(["--direction", direction] if direction else [])]


def stand_in(ref: PodRef, node: str) -> PodRef:
    """The scenario's pod of the same kind as `ref` on `node` (a probe clone takes its node's pod CIDR, which the
    ipBlock ``except`` looks at)."""
    return PodRef(ref.namespace, f"{ref.name.rsplit('-', 1)[0]}-{node.rsplit('-', 1)[1]}")
