"""Why a probe pod could not do its job, in a bounded vocabulary, and how long to wait before trying again.

Real clusters refuse, mutate and starve the pods an operator creates: quotas, LimitRanges, admission webhooks and
ValidatingAdmissionPolicies, taints, Windows nodes, images that cannot be pulled, injected sidecars, throttling.
Each of these makes a path *inconclusive* with one of the reasons below (the ``reason`` label of
``netpol_auditor_probe_paths`` and ``netpol_auditor_probes_inconclusive_total``), never "enforced": a refused or
broken probe proves nothing about the CNI. Reasons are classified from the API server's and kubelet's own status
codes and messages, which are stable strings of the Kubernetes source (cited per rule).

A (probe group, node) whose pod was refused is backed off exponentially, as client-go's
``ItemExponentialFailureRateLimiter`` does for a workqueue item: one failing placement slows itself down, never the
others, and never holds up the cycle.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FIXES",
    "INCONCLUSIVE_REASONS",
    "Backoff",
    "classify_api_error",
    "classify_pod",
    "retry_after_seconds",
]

#: Every reason a path can be inconclusive for, with the fix a person can apply (the Events say it).
FIXES: dict[str, str] = {
    "quota": "a ResourceQuota in the namespace is full or requires requests/limits the probe pods lack: raise the "
             "quota or set probe.resources",
    "limit_range": "a LimitRange in the namespace rejects the probe pods' resources: set probe.resources within it",
    "pod_security": "the namespace's Pod Security level rejects the probe pods: report it, probe pods are built to "
                    "pass the restricted profile",
    "admission_denied": "an admission webhook or ValidatingAdmissionPolicy denied the probe pod: exempt pods "
                        "labelled app.kubernetes.io/managed-by=netpol-auditor, or leave the namespace out of "
                        "probe.namespaces",
    "forbidden": "the operator may not create pods there: grant it (chart RBAC) or leave the namespace out of "
                 "probe.namespaces",
    "unschedulable": "no probe pod can run on the node (taint, nodeSelector, operating system or kubelet "
                     "admission): set probe.tolerations / probe.nodeSelector",
    "image_pull": "the probe image cannot be pulled on the node: mirror it and set probe.image and "
                  "probe.imagePullSecrets",
    "sidecar_injected": "a service mesh injected a container into the probe pod (its proxy would answer for the "
                        "destination): exempt pods labelled app.kubernetes.io/managed-by=netpol-auditor from "
                        "injection or keep probe.meshOptOut on",
    "responder_failed": "the destination clone's listener did not start, so a failed connection would prove "
                        "nothing: see the responder pod's termination message",
    "sctp_unavailable": "SCTP is not available on the node (kernel module not loaded): SCTP rules cannot be probed",
    "pod_timeout": "the probe pod did not start or finish in time: check the node's kubelet and the image",
    "throttled": "the API server throttled the operator (HTTP 429): probing slows down by itself; check API "
                 "Priority and Fairness for the operator's service account",
    "api_error": "the API server failed the request: probing retries with backoff",
    "clone_conflict": "a Service with publishNotReadyAddresses or a scale-based PodDisruptionBudget would count a "
                      "clone of this group: it is never created",
    "no_result": "the probe pod ended before reporting every target",
    "probe_error": "the probe tool failed in the pod",
    "not_judged": "the policies do not judge this path (host network)",
    "too_fresh": "the path's verdict changed moments ago; the CNI is given time to program it",
    "family_unavailable": "the probe pod has no address of the destination's IP family",
    "out_of_model": "a cluster policy rule the manifests cannot decide is reached (a nodes or domainNames peer, or "
                    "two policies of equal priority whose matching rules disagree): the prediction is unknown, so "
                    "the path is not judged; give such policies distinct priorities or narrower subjects",
    "foreign_policy": "a Cilium, Calico or Antrea policy selects the source (egress) or the destination (ingress): "
                      "this tool does not evaluate them, so the path is out of model and never judged (analyze "
                      "reports it out of model too; netpol_auditor_foreign_policy_selected_pods counts such pods)",
}
INCONCLUSIVE_REASONS: tuple[str, ...] = tuple(FIXES)

#: kubelet admission (pkg/kubelet/lifecycle/predicate.go) and eviction reasons of a pod it will not run.
_KUBELET_REJECTIONS = frozenset({
    "NodeAffinity", "NodeName", "NodePorts", "PodOSNotSupported", "PodOSSelectorNodeLabelDoesNotMatch", "Taint",
    "TaintToleration", "UnexpectedAdmissionError", "OutOfcpu", "OutOfmemory", "OutOfpods", "OutOfephemeral-storage",
    "InvalidNodeInfo", "Evicted", "NodeShutdown", "Terminated", "NodeLost",
})
#: Container waiting reasons of an image the kubelet cannot get (pkg/kubelet/images/types.go).
_IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                            "ErrImageInspect", "RegistryUnavailable", "SignatureValidationFailed"})


def _message(body: str | bytes | None) -> str:
    if not body:
        return ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        status = json.loads(text)
    except ValueError:
        return text
    return str(status.get("message") or "") if isinstance(status, dict) else text


def classify_api_error(status: int | None, body: str | bytes | None) -> tuple[str, str]:
    """(reason, message) of a failed pod create, from the API server's status code and Status message.

    Messages are those of the admission plugins in k8s.io/kubernetes: ResourceQuota "exceeded quota" / "must
    specify" (plugin/pkg/admission/resourcequota), LimitRanger "per Container" / "per Pod" limits and ratios
    (plugin/pkg/admission/limitranger), PodSecurity "violates PodSecurity", webhooks "admission webhook ... denied
    the request", or "failed calling webhook" for one that does not answer under failurePolicy Fail
    (apiserver/pkg/admission/plugin/webhook/errors), ValidatingAdmissionPolicy "ValidatingAdmissionPolicy
    '...' with binding '...' denied request" (apiserver/pkg/admission/plugin/policy/validating).
    """
    message = _message(body)
    if status == 429:
        return "throttled", message
    if "failed calling webhook" in message:
        return "admission_denied", message  # a webhook with failurePolicy Fail that does not answer
    if status is None or status >= 500:
        return "api_error", message
    if "exceeded quota" in message or ("must specify" in message and "quota" in message.lower()):
        return "quota", message
    if ("per Container" in message or "per Pod" in message or "per PersistentVolumeClaim" in message) and (
            "limit" in message or "usage" in message or "ratio" in message):
        return "limit_range", message
    if "violates PodSecurity" in message:
        return "pod_security", message
    if "admission webhook" in message or "ValidatingAdmissionPolicy" in message:
        return "admission_denied", message
    if status == 403:
        return "forbidden", message
    return "api_error", message


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The Retry-After of a 429 (APF sets it), in seconds."""
    if not headers:
        return None
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def classify_pod(pod: Mapping[str, Any], asked_containers: frozenset[str]) -> tuple[str, str] | None:
    """(reason, message) when a created pod can never do its job, else None (still starting, or fine).

    ``asked_containers``: the container names the prober put in the pod; anything else was injected.
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    admitted = {c.get("name") for kind in ("containers", "initContainers", "ephemeralContainers")
                for c in spec.get(kind) or []}
    extra = sorted(str(n) for n in admitted - asked_containers)
    if extra:
        return "sidecar_injected", f"containers {', '.join(extra)} were added at admission"
    reason = str(status.get("reason") or "")
    if status.get("phase") == "Failed" and reason in _KUBELET_REJECTIONS:
        return "unschedulable", f"{reason}: {status.get('message') or ''}".strip()
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and \
                cond.get("reason") == "Unschedulable":
            return "unschedulable", str(cond.get("message") or "Unschedulable")
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _IMAGE_REASONS:
            return "image_pull", f"{waiting['reason']}: {waiting.get('message') or cs.get('image') or ''}".strip()
    return None


@dataclass
class Backoff:
    """Per-item exponential backoff: ``base`` seconds after the first failure, doubling up to ``cap``."""

    base: float = 10.0
    cap: float = 600.0
    _failures: dict[Hashable, int] = field(default_factory=dict)
    _until: dict[Hashable, float] = field(default_factory=dict)
    _reasons: dict[Hashable, str] = field(default_factory=dict)

    def fail(self, item: Hashable, now: float, reason: str) -> float:
        """Record a failure; returns the delay until the item may be tried again."""
        n = self._failures.get(item, 0) + 1
        self._failures[item] = n
        delay = min(self.base * float(2 ** (n - 1)), self.cap)
        self._until[item] = now + delay
        self._reasons[item] = reason
        return delay

    def succeed(self, item: Hashable) -> None:
        self._failures.pop(item, None)
        self._until.pop(item, None)
        self._reasons.pop(item, None)

    def blocked(self, item: Hashable, now: float) -> str | None:
        """The reason the item is backed off now, or None when it may be tried."""
        until = self._until.get(item)
        return self._reasons.get(item) if until is not None and now < until else None

    def failures(self, item: Hashable) -> int:
        return self._failures.get(item, 0)

    def failing(self) -> dict[Hashable, int]:
        """Every item with failures since its last success, and how many."""
        return dict(self._failures)

    def forget(self, keep: set[Hashable]) -> None:
        """Drop the state of items no longer planned (bounded memory)."""
        for item in [i for i in self._failures if i not in keep]:
            self.succeed(item)
