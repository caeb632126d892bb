"""What the offline commands read: the -f files or a live cluster, checked and judged into a reachability index
over the endpoints (workloads, or with ``--per-pod`` Pods), with the options that choose it.

Shared by ``analyze``, ``explain`` and ``check`` (`netpol_auditor.cli`), ``diff`` and ``lint``.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .cluster_policy import ClusterPolicy
from .foreign import ForeignPaths, describe
from .index import ReachabilityIndex
from .manifest_files import Manifests, read_manifests
from .manifests import ManifestError
from .model import Namespace, NetworkPolicy, Pod, PodRef, PortProtocol
from .workloads import endpoints, ip_block_policies

__all__ = ["PROG", "InvalidInput", "LoadedInput", "UsageError", "add_input", "add_source", "declared_ports",
           "live_pods", "load_input", "parse_address", "parse_port", "read_input"]

PROG = "netpol-auditor"


class UsageError(ValueError):
    """A request the input cannot answer (unknown pod, filter matching nothing, no ports)."""


class InvalidInput(Exception):
    """The input has problems (errors, or warnings under --strict): each is printed on a line of its own."""

    def __init__(self, errors: Sequence[ManifestError]) -> None:
        super().__init__(f"{len(errors)} problems with the input")
        self.errors = errors


def parse_port(text: str) -> PortProtocol:
    try:
        return PortProtocol.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid IP address {text!r}") from None


def add_input(parser: argparse.ArgumentParser) -> None:
    add_source(parser)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="warnings about the input are errors (exit 2): policy kinds not analyzed (Cilium, Calico, Antrea, "
        "other versions of NetworkPolicy and of the policy.networking.k8s.io kinds), documents that are not "
        "Kubernetes objects, named ports no pod declares",
    )
    parser.add_argument(
        "--per-pod",
        action="store_true",
        help="one endpoint per Pod of the input (NAMESPACE/POD), workloads left out; default: one endpoint per "
        "workload (NAMESPACE/NAME[Kind]: Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, "
        "CronJob) with the Pods it made folded in, and one per other Pod (NAMESPACE/NAME[Pod])",
    )


def add_source(parser: argparse.ArgumentParser) -> None:
    """Where the objects come from: -f files, or a live cluster (--kubeconfig, --context, -n); see `read_input`."""
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        metavar="PATH",
        help="manifest file, directory (recursive *.yaml, *.yml, *.json) or - for stdin; multi-document YAML, "
        "JSON and `kubectl get -o yaml` lists (kind: List) are read; repeatable. Without -f, the cluster of "
        "--kubeconfig is read",
    )
    live = parser.add_argument_group("reading a live cluster instead of files (read-only: list, get)")
    live.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="read the cluster's Namespaces, Pods, NetworkPolicies and workloads through this kubeconfig "
        "(paginated lists, as kubectl); as `kubectl netpol-auditor`, the current kubeconfig is the default",
    )
    live.add_argument("--context", metavar="NAME", help="the kubeconfig context to use (default: its current one)")
    live.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=[],
        metavar="NAMESPACE",
        help="read only these namespaces of the cluster (repeatable); peers elsewhere are then unknown",
    )


@dataclass(frozen=True)
class LoadedInput:
    """The input, judged: the index over its endpoints, and each Pod folded into a workload, to its endpoint."""

    index: ReachabilityIndex
    folded: Mapping[PodRef, PodRef]
    notes: tuple[str, ...] = ()
    policies: tuple[NetworkPolicy, ...] = ()
    cluster_policies: tuple[ClusterPolicy, ...] = ()
    foreign: ForeignPaths = field(default_factory=ForeignPaths)


def read_input(args: argparse.Namespace) -> Manifests:
    """The objects of -f files, or of the cluster --kubeconfig/--context/-n (or the kubectl plugin's context)."""
    live = args.kubeconfig is not None or args.context is not None or bool(args.namespaces)
    if args.files and live:
        raise UsageError("-f reads files, --kubeconfig/--context/--namespace a cluster: give one or the other")
    if args.files:
        return read_manifests(args.files)
    if not (live or getattr(args, "live_default", False)):
        raise UsageError("no input: pass -f PATH (files, - for stdin) or --kubeconfig PATH (a live cluster)")
    from .live_cluster import read_cluster  # the Kubernetes client is imported only to read a cluster

    return read_cluster(args.kubeconfig, args.context, args.namespaces)


def load_input(args: argparse.Namespace) -> LoadedInput:
    manifests = read_input(args)
    errors, warnings = manifests.errors, manifests.warnings
    if args.strict:
        errors, warnings = [*errors, *warnings], []
    for warning in warnings:
        print(f"{PROG} {args.command}: warning: {warning}", file=sys.stderr)
    if errors:
        raise InvalidInput(errors)
    pods = [o for o in manifests.objects if isinstance(o, Pod)]
    others = [o for o in manifests.objects if not isinstance(o, Pod)]
    folded: Mapping[PodRef, PodRef] = {}
    if args.per_pod:
        if not pods and manifests.workloads:
            raise UsageError("--per-pod: the input has workloads but no Pods; leave out --per-pod to judge them")
        judged = pods
    else:
        found = endpoints(manifests.workloads, pods)
        judged, folded = list(found.pods), found.folded
    blind = ip_block_policies(judged, [o for o in others if isinstance(o, (NetworkPolicy, ClusterPolicy))])
    notes: list[str] = []
    if any(isinstance(p, NetworkPolicy) for p in blind):
        names = ", ".join(f"{p.namespace}/{p.name}" for p in blind if isinstance(p, NetworkPolicy))
        notes.append(
            "workloads and Pods without status have no IP yet, so no ipBlock peer matches them: traffic between "
            f"pods that only an ipBlock admits is reported denied (ipBlock peers in {names})"
        )
    if any(isinstance(p, ClusterPolicy) for p in blind):
        names = ", ".join(f"{p.kind.value}/{p.name}" for p in blind if isinstance(p, ClusterPolicy))
        notes.append(
            "workloads and Pods without status have no IP yet, so no networks peer of a cluster policy matches "
            f"them: its Accept, Deny or Pass does not apply to their traffic (networks peers in {names})"
        )
    for note in notes:
        print(f"{PROG} {args.command}: note: {note}", file=sys.stderr)
    foreign = ForeignPaths()
    if manifests.vendor_policies:
        ns_labels = {o.name: o.labels for o in others if isinstance(o, Namespace)}
        foreign = ForeignPaths.build(manifests.vendor_policies, judged,
                                     lambda name: ns_labels.get(name) or Namespace(name).labels)
        for line in describe(foreign):
            print(f"{PROG} {args.command}: warning: {line}", file=sys.stderr)
    return LoadedInput(
        ReachabilityIndex.from_objects([*others, *judged]),
        folded,
        tuple(notes),
        tuple(o for o in others if isinstance(o, NetworkPolicy)),
        tuple(o for o in others if isinstance(o, ClusterPolicy)),
        foreign,
    )


def live_pods(index: ReachabilityIndex) -> list[PodRef]:
    """Endpoints: running pods with an IP and planned ones (workloads, Pods without status), plus hostNetwork ones
    (reported as not judged)."""
    return [p.ref for p in index.pods() if (p.phase == "Running" and p.pod_ips) or p.planned]


def declared_ports(index: ReachabilityIndex, pods: Sequence[PodRef]) -> list[PortProtocol]:
    ports: set[PortProtocol] = set()
    for ref in pods:
        pod = index.get_pod(ref)
        if pod is not None:
            ports.update(pod.declared_ports())
    return sorted(ports)
