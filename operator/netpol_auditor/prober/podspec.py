"""Probe and responder pod manifests, with every safety property built in.

A probe pod clones what policies can see of a real source (namespace, the label keys selectors look at, node); a
responder clones a real destination the same way (plus its named container ports) and listens on the probed ports.
Both are harmless by construction:

- ``app.kubernetes.io/managed-by: netpol-auditor``, ``netpol-auditor.io/instance``/``install`` (whose they are) and
  ``netpol-auditor.io/run: <run id>`` labels (the sweep and the planner recognise them; the operator never indexes
  them);
- a *controller* ownerReference to the run's cluster-scoped ProbeRun: no ReplicaSet/StatefulSet/Job controller
  adopts a pod that already has a controller (ClaimObject only adopts orphans, k8s.io/kubernetes
  pkg/controller/controller_ref_manager.go), and deleting the ProbeRun garbage-collects every pod of the run;
  without the ProbeRun CRD, the controller reference is the pod's own Namespace (never adopted either; the
  start-up sweep and the run's stop delete the pods by label);
- the sidecar-injection opt-outs of the common meshes (``PodOptions.mesh_opt_out``), and the prober reads back the
  admitted pod: a container it did not ask for makes the path ``sidecar_injected``, never judged;
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
from dataclasses import dataclass, field
from typing import Any

from netpol_auditor.model import ContainerPort, PortProtocol, Protocol
from netpol_auditor.prober.plan import MANAGED_BY_LABEL, MANAGED_BY_VALUE, ProbeGroup
from netpol_auditor.prober.script import responder_check_script, responder_script

__all__ = [
    "DEFAULT_IMAGE",
    "INSTALL_LABEL",
    "INSTANCE_LABEL",
    "MESH_OPT_OUT_ANNOTATIONS",
    "MESH_OPT_OUT_LABELS",
    "PROBE_RUN_GROUP",
    "PROBE_RUN_KIND",
    "PROBE_RUN_PLURAL",
    "PROBE_RUN_VERSION",
    "READINESS_GATE",
    "RESERVED_LABEL_KEYS",
    "ROLE_LABEL",
    "RUN_LABEL",
    "PodOptions",
    "RunOwner",
    "asked_containers",
    "clone_conflict",
    "new_run_id",
    "probe_pod",
    "probe_run_object",
    "responder_container",
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
#: The release and install a probe pod belongs to. Not app.kubernetes.io/instance: policies of Helm-installed apps
#: commonly select on that key, and a clone must carry the workload's own value of it.
INSTANCE_LABEL = "netpol-auditor.io/instance"
INSTALL_LABEL = "netpol-auditor.io/install"
READINESS_GATE = "netpol-auditor.io/never-ready"
#: Label keys every probe pod carries; a group whose policies look at one of them cannot be cloned faithfully.
RESERVED_LABEL_KEYS = frozenset({MANAGED_BY_LABEL, RUN_LABEL, ROLE_LABEL, INSTANCE_LABEL, INSTALL_LABEL})
#: Sidecar-injection opt-outs of the common meshes, set on the pod itself: istio (label, and the older
#: annotation; istio.io "Installing the sidecar": ``sidecar.istio.io/inject: "false"``), kuma (label and annotation
#: ``kuma.io/sidecar-injection: disabled``), linkerd (annotation ``linkerd.io/inject: disabled``), consul
#: (annotation ``consul.hashicorp.com/connect-inject: "false"``), open service mesh (annotation
#: ``openservicemesh.io/sidecar-injection: disabled``).
MESH_OPT_OUT_LABELS: Mapping[str, str] = {
    "sidecar.istio.io/inject": "false",
    "kuma.io/sidecar-injection": "disabled",
}
MESH_OPT_OUT_ANNOTATIONS: Mapping[str, str] = {
    "sidecar.istio.io/inject": "false",
    "kuma.io/sidecar-injection": "disabled",
    "linkerd.io/inject": "disabled",
    "consul.hashicorp.com/connect-inject": "false",
    "openservicemesh.io/sidecar-injection": "disabled",
}
NOBODY = 65534
#: Probe pods go to Linux nodes only (a Windows kubelet refuses them anyway).
DEFAULT_NODE_SELECTOR: Mapping[str, str] = {"kubernetes.io/os": "linux"}
#: Per container. A limit/request ratio of 2 passes the common LimitRanges (maxLimitRequestRatio is usually 2-10),
#: while the pod stays tiny.
DEFAULT_RESOURCES: Mapping[str, Any] = {
    "requests": {"cpu": "50m", "memory": "32Mi"},
    "limits": {"cpu": "100m", "memory": "64Mi"},
}


def new_run_id() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True)
class PodOptions:
    """What the cluster's rules ask of every probe pod: image, placement, identity and resources."""

    image: str = DEFAULT_IMAGE
    node_selector: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_NODE_SELECTOR))
    tolerations: tuple[Mapping[str, Any], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    image_pull_secrets: tuple[str, ...] = ()
    priority_class_name: str = ""
    resources: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    mesh_opt_out: bool = True
    instance: str = "netpol-auditor"
    install_id: str = ""

    def label_keys(self) -> frozenset[str]:
        """Every label key a probe pod carries besides the cloned ones."""
        keys = set(RESERVED_LABEL_KEYS) | set(self.labels)
        if self.mesh_opt_out:
            keys |= set(MESH_OPT_OUT_LABELS)
        return frozenset(keys)

    def identity(self) -> dict[str, str]:
        """The labels that say which install a probe pod belongs to (what the sweep selects on)."""
        out = {MANAGED_BY_LABEL: MANAGED_BY_VALUE, INSTANCE_LABEL: self.instance}
        if self.install_id:
            out[INSTALL_LABEL] = self.install_id
        return out


@dataclass(frozen=True)
class RunOwner:
    """The ProbeRun a run's pods belong to (its uid is known once the API server created it). Without the
    ProbeRun CRD there is none: ``name``/``uid`` are empty and pods are owner-less (the sweep still finds them)."""

    name: str
    uid: str
    run_id: str

    def reference(self, namespace: str = "", namespace_uid: str = "") -> dict[str, Any] | None:
        """The pod's controller reference: the ProbeRun; without one, the pod's own Namespace (cluster-scoped, so
        the garbage collector keeps the pod while it exists), so that no ReplicaSet, StatefulSet or Job whose
        selector the cloned labels match ever adopts it. None when neither is known."""
        if self.owned:
            api_version, kind, name, uid = f"{PROBE_RUN_GROUP}/{PROBE_RUN_VERSION}", PROBE_RUN_KIND, self.name, self.uid
        elif namespace_uid:
            api_version, kind, name, uid = "v1", "Namespace", namespace, namespace_uid
        else:
            return None
        return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "controller": True,
                "blockOwnerDeletion": False}

    @property
    def owned(self) -> bool:
        return bool(self.uid)


def probe_run_object(run_id: str, holder: str, identity: Mapping[str, str] | None = None) -> dict[str, Any]:
    labels = dict(identity or {MANAGED_BY_LABEL: MANAGED_BY_VALUE})
    labels[RUN_LABEL] = run_id
    return {
        "apiVersion": f"{PROBE_RUN_GROUP}/{PROBE_RUN_VERSION}",
        "kind": PROBE_RUN_KIND,
        "metadata": {"name": f"netpol-auditor-{run_id}", "labels": labels},
        "spec": {"runId": run_id, "holder": holder},
    }


def _labels(group: ProbeGroup, owner: RunOwner, role: str, options: PodOptions) -> dict[str, str]:
    labels = dict(group.labels)
    labels.update(options.labels)
    if options.mesh_opt_out:
        labels.update(MESH_OPT_OUT_LABELS)
    labels.update(options.identity())
    labels.update({RUN_LABEL: owner.run_id, ROLE_LABEL: role})
    return labels


def _name(owner: RunOwner, role: str, seq: int) -> str:
    return f"npa-{role}-{owner.run_id}-{seq}"


def _container(name: str, options: PodOptions, script: str, ports: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
        "resources": {k: dict(v) for k, v in options.resources.items()},
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
    containers: list[dict[str, Any]],
    deadline_seconds: int,
    annotations: Mapping[str, str],
    options: PodOptions,
    sysctls: list[dict[str, str]] | None = None,
    namespace_uid: str = "",
) -> dict[str, Any]:
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": NOBODY,
        "runAsGroup": NOBODY,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if sysctls:
        security["sysctls"] = sysctls
    meta_annotations = dict(options.annotations)
    if options.mesh_opt_out:
        meta_annotations.update(MESH_OPT_OUT_ANNOTATIONS)
    meta_annotations.update(annotations)
    metadata: dict[str, Any] = {
        "name": _name(owner, role, seq),
        "namespace": group.namespace,
        "labels": _labels(group, owner, role, options),
        "annotations": meta_annotations,
    }
    reference = owner.reference(group.namespace, namespace_uid)
    if reference is not None:
        metadata["ownerReferences"] = [reference]
    spec: dict[str, Any] = {
        "nodeName": node,
        # a node of another operating system refuses the pod at once (kubelet's PodOSNotSupported) instead of
        # trying to pull a Linux image
        "os": {"name": "linux"},
        "restartPolicy": "Never",
        "activeDeadlineSeconds": deadline_seconds,
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "readinessGates": [{"conditionType": READINESS_GATE}],
        "securityContext": security,
        "containers": containers,
    }
    if options.node_selector:
        spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        spec["tolerations"] = [dict(t) for t in options.tolerations]
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    if options.priority_class_name:
        spec["priorityClassName"] = options.priority_class_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def asked_containers(body: Mapping[str, Any]) -> frozenset[str]:
    """The container names a pod manifest asks for (anything else in the admitted pod was injected)."""
    spec = body.get("spec") or {}
    return frozenset(str(c["name"]) for kind in ("containers", "initContainers") for c in spec.get(kind) or [])


def probe_pod(
    owner: RunOwner,
    group: ProbeGroup,
    node: str,
    seq: int,
    script: str,
    options: PodOptions | None = None,
    deadline_seconds: int = 120,
    stands_in_for: str = "",
    namespace_uid: str = "",
) -> dict[str, Any]:
    """A probe pod: runs `script` (from `script.probe_script`) once and reports through its termination message."""
    options = options or PodOptions()
    annotations = {"netpol-auditor.io/stands-in-for": stands_in_for} if stands_in_for else {}
    return _pod(owner, group, node, "probe", seq, [_container("probe", options, script)], deadline_seconds,
                annotations, options, namespace_uid=namespace_uid)


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


def responder_container(protocol: Protocol) -> str:
    """The name of the responder container that serves one protocol."""
    return f"responder-{protocol.value.lower()}"


def responder_pod(
    owner: RunOwner,
    group: ProbeGroup,
    node: str,
    seq: int,
    ports: Iterable[PortProtocol],
    options: PodOptions | None = None,
    deadline_seconds: int = 300,
    stands_in_for: str = "",
    namespace_uid: str = "",
) -> dict[str, Any]:
    """A responder pod: one container per protocol listens on the probed ports (and declares the destination's
    named ports) until deleted. Each proves its listeners from inside the pod with a readiness probe, so a
    listener that did not start is seen (the container is not ready, or it ends) rather than read as a denial;
    one container per protocol keeps a protocol the node lacks (SCTP) from failing the others."""
    options = options or PodOptions()
    port_entries = responder_ports(group, ports)
    listen = [PortProtocol(p["containerPort"], Protocol(p["protocol"])) for p in port_entries]
    sysctls = None
    if any(pp.port < 1024 for pp in listen):
        # governs IPv6 sockets too, despite its name (net/ipv4/sysctl_net_ipv4.c, inet_sk_bind)
        sysctls = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    annotations = {"netpol-auditor.io/stands-in-for": stands_in_for} if stands_in_for else {}
    containers = []
    for protocol in sorted({pp.protocol for pp in listen}):
        mine = [pp for pp in listen if pp.protocol is protocol]
        entries = [e for e in port_entries if e["protocol"] == protocol.value]
        container = _container(responder_container(protocol), options, responder_script(mine), entries)
        container["readinessProbe"] = {
            "exec": {"command": ["sh", "-c", responder_check_script(mine)]},
            "periodSeconds": 1,
            # a UDP check waits out socat's 1 s inactivity timeout after the echo, once per address family
            "timeoutSeconds": 2 + 2 * sum(pp.protocol is Protocol.UDP for pp in mine) + len(mine) // 4,
            "successThreshold": 1,
            "failureThreshold": 3,
        }
        containers.append(container)
    return _pod(owner, group, node, "responder", seq, containers, deadline_seconds, annotations, options, sysctls,
                namespace_uid)


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
