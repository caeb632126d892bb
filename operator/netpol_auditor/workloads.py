"""Workloads as endpoints: one endpoint for all the pods a Deployment, StatefulSet, DaemonSet, ReplicaSet,
ReplicationController, Job or CronJob makes.

The pods of a workload share its pod template's labels, namespace and container ports, so no NetworkPolicy can tell
them apart: one endpoint, a planned `Pod` built from the template, stands for all of them, and its verdicts are
theirs. Endpoints are named ``name[Kind]`` (``default/frontend[Deployment]``, ``shop/db-0[Pod]``), as np-guard's
netpol-analyzer names them, so that the two tools' outputs compare.

A Pod of the input that a listed workload made is folded into it and never counted twice: by its controller
reference, followed up through listed owners (Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob); a
ReplicaSet that is not listed is matched to its Deployment by name (``<deployment>-<pod-template-hash>``); without
owner references, by the label its controller stamps on its pods (``pod-template-hash``, ``controller-revision-hash``)
and the one listed workload of the kinds that stamp it whose selector matches the pod. Every other Pod is an
endpoint of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .cluster_policy import ClusterPolicy
from .model import NetworkPolicy, Pod, PodRef, Workload
from .selectors import SelectorMatcher, compile_selector

__all__ = ["EndpointSet", "endpoint_name", "endpoints", "ip_block_policies", "running_workload", "template_pod"]

#: Labels a controller puts on the pods it makes, and the kinds that put them there.
_CONTROLLER_LABELS: Mapping[str, tuple[str, ...]] = {
    "pod-template-hash": ("Deployment", "ReplicaSet"),
    "controller-revision-hash": ("StatefulSet", "DaemonSet"),
}

_Key = tuple[str, str, str]  # (namespace, kind, name)


def endpoint_name(name: str, kind: str) -> str:
    """The name of the endpoint of a workload or Pod: ``name[Kind]``."""
    return f"{name}[{kind}]"


def template_pod(workload: Workload) -> Pod:
    """The pod a workload's template makes, as a planned Pod named ``name[Kind]`` (no IP: it does not exist yet)."""
    return Pod(
        namespace=workload.namespace,
        name=endpoint_name(workload.name, workload.kind),
        uid=workload.uid,
        labels=workload.labels,
        host_network=workload.host_network,
        container_ports=workload.container_ports,
        owner_kind=workload.owner_kind,
        owner_name=workload.owner_name,
        planned=True,
    )


def running_workload(pod: Pod) -> PodRef:
    """The endpoint of a pod of the cluster, named as ``analyze`` names workloads, from its controller reference
    alone (the operator does not watch workloads): a ReplicaSet named ``<deployment>-<pod-template-hash>`` stands for
    that Deployment; any other controller for itself (a Job of a CronJob stays a Job: its name does not say whether
    a CronJob made it); a pod without a controller is its own endpoint (``name[Pod]``)."""
    kind, name = pod.owner_kind, pod.owner_name
    if not kind or not name:
        return PodRef(pod.namespace, endpoint_name(pod.name, "Pod"))
    template_hash = pod.labels.get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        kind, name = "Deployment", name.removesuffix(f"-{template_hash}")
    return PodRef(pod.namespace, endpoint_name(name, kind))


@dataclass(frozen=True)
class EndpointSet:
    """What to judge: ``pods``, one per endpoint (named ``name[Kind]``); ``folded``: each Pod of the input folded
    into a workload, to that workload's endpoint."""

    pods: tuple[Pod, ...]
    folded: Mapping[PodRef, PodRef]


def endpoints(workloads: Sequence[Workload], pods: Iterable[Pod]) -> EndpointSet:
    """One endpoint per workload that no other listed workload owns, one per Pod that no listed workload made."""
    listed: dict[_Key, Workload] = {(w.namespace, w.kind, w.name): w for w in workloads}

    def top(key: _Key) -> Workload:
        """The outermost listed owner of a listed workload (a ReplicaSet's Deployment, a Job's CronJob)."""
        seen = {key}
        workload = listed[key]
        while workload.owner_kind:
            owner = (workload.namespace, workload.owner_kind, workload.owner_name)
            if owner not in listed or owner in seen:  # an ownership cycle is malformed input: stop at it
                break
            seen.add(owner)
            workload = listed[owner]
        return workload

    def ref(workload: Workload) -> PodRef:
        return PodRef(workload.namespace, endpoint_name(workload.name, workload.kind))

    by_label: dict[tuple[str, str], list[tuple[_Key, SelectorMatcher]]] = {}
    for key, workload in listed.items():
        for label, kinds in _CONTROLLER_LABELS.items():
            if workload.kind in kinds and workload.selector is not None:
                selects = compile_selector(workload.selector)
                by_label.setdefault((workload.namespace, label), []).append((key, selects))

    def maker(pod: Pod) -> Workload | None:
        if pod.owner_kind:
            owner = (pod.namespace, pod.owner_kind, pod.owner_name)
            if owner in listed:
                return top(owner)
            template_hash = pod.labels.get("pod-template-hash")
            if pod.owner_kind == "ReplicaSet" and template_hash and pod.owner_name.endswith(f"-{template_hash}"):
                deployment = (pod.namespace, "Deployment", pod.owner_name.removesuffix(f"-{template_hash}"))
                if deployment in listed:
                    return top(deployment)
            return None
        for label in _CONTROLLER_LABELS:
            if label in pod.labels:
                candidates = by_label.get((pod.namespace, label), ())
                matching = {top(key) for key, selects in candidates if selects.matches(pod.labels)}
                if len(matching) == 1:  # two workloads selecting one pod: which one made it is unknown
                    return matching.pop()
        return None

    out: dict[PodRef, Pod] = {}
    for key in listed:
        workload = top(key)
        out.setdefault(ref(workload), template_pod(workload))
    folded: dict[PodRef, PodRef] = {}
    for pod in pods:
        made_by = maker(pod)
        if made_by is not None:
            folded[pod.ref] = ref(made_by)
            continue
        own = dataclasses.replace(pod, name=endpoint_name(pod.name, "Pod"))
        out[own.ref] = own
    return EndpointSet(tuple(out[r] for r in sorted(out)), folded)


def ip_block_policies(
    pods: Iterable[Pod], policies: Iterable[NetworkPolicy | ClusterPolicy]
) -> list[NetworkPolicy | ClusterPolicy]:
    """Policies with an ipBlock peer (or, for cluster policies, a ``networks`` peer), when some endpoint has no IP
    (planned: a workload, a Pod without status): those peers never match such an endpoint, so the verdicts hold
    only if no pod address falls in them."""
    if not any(p.is_endpoint and not p.pod_ips for p in pods):
        return []
    out: list[NetworkPolicy | ClusterPolicy] = []
    for policy in policies:
        if isinstance(policy, ClusterPolicy):
            if any(peer.networks for rule in (*policy.ingress, *policy.egress) for peer in rule.peers):
                out.append(policy)
        elif any(peer.ip_block is not None for d in policy.policy_types for r in policy.rules(d) for peer in r.peers):
            out.append(policy)
    return out
