"""Kubelet's pod admission on a localcluster node: whether the node agent may run a pod bound to its node.

kubelet admits every pod bound to its node before running it (``HandlePodAdditions`` → ``canAdmitPod``), even one
the scheduler never saw (``spec.nodeName`` set at creation). The checks and their wording are kubelet v1.33's
predicate admit handler, ``pkg/kubelet/lifecycle/predicate.go`` (``predicateAdmitHandler.Admit``), in its order, and
the first failure wins:

1. ``rejectPodAdmissionBasedOnOSSelector``: the pod's *label* ``kubernetes.io/os`` (not its nodeSelector) differs
   from the kubelet's OS → ``PodOSSelectorNodeLabelDoesNotMatch``;
2. ``rejectPodAdmissionBasedOnOSField``: ``spec.os`` is set and ``spec.os.name`` differs from the kubelet's OS →
   ``PodOSNotSupported``;
3. ``generalFilter`` (``scheduler.AdmissionCheck`` then the taint check): resources (not modelled: the agent's
   allocatable is nominal), required node affinity incl. ``nodeSelector`` → ``NodeAffinity``, node name (always the
   node's own here), host ports (not modelled), then an untolerated ``NoExecute`` taint (kubelet looks only at
   NoExecute) → ``TaintToleration``. Their messages are ``PredicateFailureError.Error()``:
   ``Predicate <name> failed: <scheduler plugin's ErrReason>``.

The kubelet's OS is ``runtime.GOOS``. A simulated node is always Linux underneath, so the agent takes the node's
``kubernetes.io/os`` label as the OS of the kubelet it plays: ``kubectl label node node-1 kubernetes.io/os=windows
--overwrite`` makes node-1 a Windows kubelet for the next pod. Such a kubelet, per the checks above, refuses a pod
with ``spec.os.name: linux`` (PodOSNotSupported), a pod labelled ``kubernetes.io/os: linux``
(PodOSSelectorNodeLabelDoesNotMatch) and a pod with ``nodeSelector: {kubernetes.io/os: linux}`` (NodeAffinity, the
node's label being windows), and *admits* a pod that says nothing about its OS: on a real Windows node it is the
container runtime that fails afterwards (a Linux-only image has no Windows manifest); the agent runs it.

A rejected pod is never started: kubelet's ``rejectPod`` (pkg/kubelet/kubelet.go) posts a Warning Event with the
reason and message and sets the status to ``phase: Failed``, ``reason``, ``message: "Pod was rejected: " + message``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from localcluster.agent_api import ApiClient, ApiError
from localcluster.agent_containers import now
from localcluster.scheduler import fits, tolerates

__all__ = ["NodeView", "Rejection", "admit", "kubelet_os", "post_rejection_event"]

Obj = dict[str, Any]
OS_LABEL = "kubernetes.io/os"  # v1.LabelOSStable


@dataclass(frozen=True)
class Rejection:
    """A failed admission: kubelet's PodAdmitResult.Reason and .Message."""

    reason: str
    message: str

    @property
    def status_message(self) -> str:
        """What kubelet's rejectPod writes to status.message."""
        return f"Pod was rejected: {self.message}"


def kubelet_os(node: Obj) -> str:
    """The OS of the kubelet this node plays: its ``kubernetes.io/os`` label (``linux`` when absent)."""
    return str(((node.get("metadata") or {}).get("labels") or {}).get(OS_LABEL) or "linux")


def admit(pod: Obj, node: Obj) -> Rejection | None:
    """kubelet's predicateAdmitHandler.Admit for `pod` on `node`: None when admitted, else the first failure."""
    goos = kubelet_os(node)
    spec = pod.get("spec") or {}
    pod_labels = (pod.get("metadata") or {}).get("labels") or {}
    if OS_LABEL in pod_labels and pod_labels[OS_LABEL] != goos:
        return Rejection("PodOSSelectorNodeLabelDoesNotMatch",
                         "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label")
    if spec.get("os") is not None and (spec["os"] or {}).get("name") != goos:
        return Rejection("PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS")
    # GetRequiredNodeAffinity(pod).Match(node): nodeSelector AND required node affinity terms. scheduler.fits checks
    # exactly those plus NoSchedule/NoExecute taints, so it is asked about the node without its taints.
    untainted = {**node, "spec": {**(node.get("spec") or {}), "taints": []}}
    if not fits(pod, untainted):
        # nodeaffinity.Name, nodeaffinity.ErrReasonPod (pkg/scheduler/framework/plugins/nodeaffinity)
        return Rejection("NodeAffinity", "Predicate NodeAffinity failed: node(s) didn't match Pod's node "
                                         "affinity/selector")
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") == "NoExecute" and not tolerates(tolerations, taint):
            # tainttoleration.Name, tainttoleration.ErrReasonNotMatch
            return Rejection("TaintToleration", "Predicate TaintToleration failed: node(s) had taints that the pod "
                                                "didn't tolerate")
    return None


class NodeView:
    """The agent's own Node as admission needs it: fresh enough to include every change made before a pod's event
    reached the agent (so ``kubectl label/taint node`` then ``kubectl create pod`` always sees the label), yet one
    GET shared by a burst of pods: a cached Node is reused while its GET started after the asking pod was seen."""

    def __init__(self, api: ApiClient, name: str) -> None:
        self.api = api
        self.name = name
        self._lock = threading.Lock()
        self._node: Obj | None = None
        self._fetch_started = -1e18

    def get(self, seen_at: float) -> Obj:
        with self._lock:
            if self._node is None or self._fetch_started < seen_at:
                started = time.monotonic()
                self._node = self.api.get(f"/api/v1/nodes/{self.name}")
                self._fetch_started = started
            return self._node


def post_rejection_event(api: ApiClient, pod: Obj, node_name: str, rejection: Rejection) -> None:
    """The Warning Event kubelet's rejectPod records (recorder.Eventf(pod, Warning, reason, message))."""
    meta = pod["metadata"]
    t = now()
    body = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                           "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion", "")},
        "reason": rejection.reason, "message": rejection.message, "type": "Warning",
        "source": {"component": "kubelet", "host": node_name},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1,
        "reportingComponent": "kubelet", "reportingInstance": node_name,
    }
    with contextlib.suppress(ApiError):
        api.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)
