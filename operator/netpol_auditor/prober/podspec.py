"""Probe and responder pod manifests, with every safety property built in.

A probe pod clones what policies can see of a real source (namespace, the label keys selectors look at, node); a
responder clones a real destination the same way (plus its named container ports) and listens on the probed ports.
Both are harmless by construction:

- ``app.kubernetes.io/managed-by: netpol-auditor`` and ``netpol-auditor.io/run: <run id>`` labels (the sweep and the
  planner recognise them; the operator's index ignores them);
- a *controller* ownerReference to the run's cluster-scoped ProbeRun: no ReplicaSet/StatefulSet/Job controller
  adopts a pod that already has a controller (ClaimObject only adopts orphans, k8s.io/kubernetes
  pkg/controller/controller_ref_manager.go), and deleting the ProbeRun garbage-collects every pod of the run;
- a readiness gate nobody sets, so the pod is never Ready: an EndpointSlice lists it, if a Service selects its
  labels, only with ``ready: false, serving: false`` — kube-proxy and every conformant consumer send nothing to it
  (pod.status.conditions Ready = all containers ready AND all readinessGates True, KEP-580);
- ``activeDeadlineSeconds`` (the kubelet kills it), ``restartPolicy: Never``, ``terminationGracePeriodSeconds: 1``;
- the ``restricted`` Pod Security profile: non-root (65534), no privilege escalation, every capability dropped,
  RuntimeDefault seccomp, read-only root filesystem; responders below port 1024 use the *safe* sysctl
  ``net.ipv4.ip_unprivileged_port_start`` (allowed by the baseline and restricted profiles) instead of a capability;
- ``automountServiceAccountToken: false``, ``enableServiceLinks: false``, no hostNetwork, small requests/limits.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from netpol_auditor.model import ContainerPort, PortProtocol, Protocol
from netpol_auditor.prober.plan import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ProbeGroup
from netpol_auditor.prober.script import responder_script

__all__ = [
    "DEFAULT_IMAGE",
    "PROBE_RUN_GROUP",
    "PROBE_RUN_KIND",
    "PROBE_RUN_PLURAL",
    "PROBE_RUN_VERSION",
    "READINESS_GATE",
    "RESERVED_LABEL_KEYS",
    "ROLE_LABEL",
    "RUN_LABEL",
    "RunOwner",
    "clone_conflict",
    "new_run_id",
    "probe_pod",
    "probe_run_object",
    "responder_pod",
    "responder_ports",
]

#: Pinned: nicolaka/netshoot ships sh (busybox), nc (netcat-openbsd) and socat (its Dockerfile's apk add list).
DEFAULT_IMAGE = "nicolaka/netshoot:v0.13"
PROBE_RUN_GROUP = "netpol-auditor.io"
PROBE_RUN_VERSION = "v1alpha1"
PROBE_RUN_KIND = "ProbeRun"
PROBE_RUN_PLURAL = "proberuns"
RUN_LABEL = "netpol-auditor.io/run"
ROLE_LABEL = "netpol-auditor.io/role"
READINESS_GATE = "netpol-auditor.io/never-ready"
#: Label keys every probe pod carries; a group whose policies look at one of them cannot be cloned faithfully.
RESERVED_LABEL_KEYS = frozenset({MANAGED_BY_LABEL, RUN_LABEL, ROLE_LABEL})
NOBODY = 65534


def new_run_id() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True)
class RunOwner:
    """The ProbeRun a run's pods belong to (its uid is known once the API server created it)."""

    name: str
    uid: str
    run_id: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": f"{PROBE_RUN_GROUP}/{PROBE_RUN_VERSION}",
            "kind": PROBE_RUN_KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }


def probe_run_object(run_id: str, holder: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{PROBE_RUN_GROUP}/{PROBE_RUN_VERSION}",
        "kind": PROBE_RUN_KIND,
        "metadata": {
            "name": f"netpol-auditor-{run_id}",
            "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, RUN_LABEL: run_id},
        },
        "spec": {"runId": run_id, "holder": holder},
    }


def _labels(group: ProbeGroup, owner: RunOwner, role: str) -> dict[str, str]:
    labels = dict(group.labels)
    labels.update({MANAGED_BY_LABEL: MANAGED_BY_VALUE, RUN_LABEL: owner.run_id, ROLE_LABEL: role})
    return labels


def _name(owner: RunOwner, role: str, seq: int) -> str:
    return f"npa-{role}-{owner.run_id}-{seq}"


def _container(name: str, image: str, script: str, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": NOBODY,
            "runAsGroup": NOBODY,
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if ports:
        container["ports"] = ports
    return container


def _pod(
    owner: RunOwner,
    group: ProbeGroup,
    node: str,
    role: str,
    seq: int,
    container: dict[str, Any],
    deadline_seconds: int,
    annotations: Mapping[str, str],
    sysctls: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": NOBODY,
        "runAsGroup": NOBODY,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sysctls:
        security["sysctls"] = sysctls
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": _name(owner, role, seq),
            "namespace": group.namespace,
            "labels": _labels(group, owner, role),
            "annotations": dict(annotations),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline_seconds,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostNetwork": False,
            "readinessGates": [{"conditionType": READINESS_GATE}],
            "securityContext": security,
            "containers": [container],
        },
    }


def probe_pod(
    owner: RunOwner,
    group: ProbeGroup,
    node: str,
    seq: int,
    script: str,
    image: str = DEFAULT_IMAGE,
    deadline_seconds: int = 120,
    stands_in_for: str = "",
) -> dict[str, Any]:
    """A probe pod: runs `script` (from `script.probe_script`) once and reports through its termination message."""
    annotations = {"netpol-auditor.io/stands-in-for": stands_in_for} if stands_in_for else {}
    return _pod(owner, group, node, "probe", seq, _container("probe", image, script), deadline_seconds, annotations)


def responder_ports(group: ProbeGroup, ports: Iterable[PortProtocol]) -> list[dict[str, Any]]:
    """The destination's declared container ports (names are what named-port rules resolve against), plus every
    probed port it does not declare, unnamed."""
    out: list[dict[str, Any]] = []
    seen: set[PortProtocol] = set()
    declared: list[ContainerPort] = sorted(group.container_ports)
    for cp in declared:
        pp = PortProtocol(cp.port, cp.protocol)
        if pp in seen:
            continue
        seen.add(pp)
        entry: dict[str, Any] = {"containerPort": cp.port, "protocol": cp.protocol.value}
        if cp.name:
            entry["name"] = cp.name
        out.append(entry)
    for pp in sorted(set(ports) - seen):
        out.append({"containerPort": pp.port, "protocol": pp.protocol.value})
    return out


def responder_pod(
    owner: RunOwner,
    group: ProbeGroup,
    node: str,
    seq: int,
    ports: Iterable[PortProtocol],
    image: str = DEFAULT_IMAGE,
    deadline_seconds: int = 300,
    stands_in_for: str = "",
) -> dict[str, Any]:
    """A responder pod: listens on the probed ports (and declares the destination's named ports) until deleted."""
    port_entries = responder_ports(group, ports)
    listen = [PortProtocol(p["containerPort"], Protocol(p["protocol"])) for p in port_entries]
    sysctls = None
    if any(pp.port < 1024 for pp in listen):
        sysctls = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    annotations = {"netpol-auditor.io/stands-in-for": stands_in_for} if stands_in_for else {}
    container = _container("responder", image, responder_script(listen), port_entries)
    return _pod(owner, group, node, "responder", seq, container, deadline_seconds, annotations, sysctls)



def _selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in (selector or {}).items())


def _pdb_selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A PDB's metav1.LabelSelector (matchLabels and matchExpressions) against pod labels."""
    if selector is None:
        return False
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for req in selector.get("matchExpressions") or []:
        key, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def clone_conflict(
    namespace: str, labels: Mapping[str, str], services: Iterable[Mapping[str, Any]],
    pdbs: Iterable[Mapping[str, Any]],
) -> str | None:
    """Why a pod with these cloned labels must not be created in ``namespace``, or None when it is harmless.

    What cloned labels can touch, and why the rest is harmless:

    - a Service selecting them lists the pod in its EndpointSlices as ``ready: false, serving: false`` (the
      readiness gate is never set): kube-proxy, DNS and Ingress controllers skip it — *unless* the Service sets
      ``publishNotReadyAddresses``, which publishes not-ready pods (then: conflict);
    - a ReplicaSet/StatefulSet/Job selecting them never adopts it: it already has a controller ownerReference;
    - a PodDisruptionBudget with an integer ``minAvailable`` counts healthy (Ready) pods only: unchanged. With
      ``maxUnavailable`` or a percentage, the disruption controller looks up every selected pod's controller
      scale, finds none for a ProbeRun and blocks disruptions (disruptionsAllowed 0) while the pod exists
      (pkg/controller/disruption, getExpectedScale): conflict.
    """
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        if meta.get("namespace") != namespace or not spec.get("publishNotReadyAddresses"):
            continue
        if _selects(spec.get("selector"), labels):
            return f"Service {namespace}/{meta.get('name')} publishes not-ready addresses"
    for pdb in pdbs:
        meta, spec = pdb.get("metadata") or {}, pdb.get("spec") or {}
        if meta.get("namespace") != namespace:
            continue
        min_available = spec.get("minAvailable")
        needs_scale = spec.get("maxUnavailable") is not None or isinstance(min_available, str)
        if needs_scale and _pdb_selects(spec.get("selector"), labels):
            return f"PodDisruptionBudget {namespace}/{meta.get('name')} would count it"
    return None
