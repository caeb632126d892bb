"""Whether a probe pod may run on a node, decided before it is created.

Probe pods name their node (``spec.nodeName``: they must run beside the pods they stand in for), which bypasses the
scheduler: the kubelet would still refuse a pod whose nodeSelector or operating system does not fit, or that does
not tolerate a ``NoExecute`` taint (pkg/kubelet/lifecycle/predicate.go), and it would *accept* one on a node tainted
``NoSchedule`` or cordoned, where the cluster's owner asked for no new pods. So the prober asks the same questions
the scheduler would (k8s.io/api/core/v1 ``Toleration.ToleratesTaint``) and places nothing where the answer is no:
such a node's paths are inconclusive (``unschedulable``), with the taint or label to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["node_unavailable", "tolerates"]


def tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """k8s.io/api/core/v1 Toleration.ToleratesTaint, for any of ``tolerations``."""
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        key = tol.get("key") or ""
        operator = tol.get("operator") or "Equal"
        if key and key != taint.get("key"):
            continue
        if not key and operator != "Exists":
            continue  # an empty key matches every taint only with operator Exists
        if operator == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_unavailable(
    node: Mapping[str, Any], node_selector: Mapping[str, str], tolerations: Sequence[Mapping[str, Any]]
) -> str | None:
    """Why no probe pod may be placed on ``node`` (a Node object as a dict), or None when one may."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    labels = meta.get("labels") or {}
    name = meta.get("name", "?")
    for key, value in node_selector.items():
        if labels.get(key) != value:
            have = labels.get(key)
            return (f"node {name} has {key}={have}" if have is not None else f"node {name} lacks label {key}") + (
                f", probe pods select {key}={value} (probe.nodeSelector)")
    if spec.get("unschedulable"):
        return f"node {name} is cordoned (spec.unschedulable)"
    for taint in spec.get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            value = f"={taint['value']}" if taint.get("value") else ""
            return (f"node {name} has taint {taint.get('key')}{value}:{taint.get('effect')} that probe pods do not "
                    "tolerate (probe.tolerations)")
    return None
