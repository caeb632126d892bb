"""A minimal scheduler: binds unscheduled pods round robin over Ready, schedulable nodes that fit.

Fit = ``spec.nodeSelector`` labels, required node affinity (``matchExpressions`` on labels with In/NotIn/Exists/
DoesNotExist/Gt/Lt, ``matchFields`` on ``metadata.name``), and NoSchedule/NoExecute taints tolerated
(``spec.tolerations``). A pod that names its node (``spec.nodeName``) never reaches here: it is bound at creation.
Binding goes through the ``pods/binding`` subresource, which also sets PodScheduled=True as the real scheduler's
binder does. Pods that fit nowhere get PodScheduled=False/Unschedulable and are retried every few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from localcluster.agent_api import ApiClient, ApiError, pod_path
from localcluster.agent_containers import now

__all__ = ["Scheduler", "fits", "ours", "tolerates"]

log = logging.getLogger("localcluster.scheduler")
Obj = dict[str, Any]
RETRY_SECONDS = 3.0
DEFAULT_SCHEDULER = "default-scheduler"
NODE_CACHE_SECONDS = 1.0


def _expr_ok(expr: Obj, values: dict[str, str]) -> bool:
    key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
    have = key in values
    if op == "In":
        return have and values[key] in vals
    if op == "NotIn":
        return not have or values[key] not in vals
    if op == "Exists":
        return have
    if op == "DoesNotExist":
        return not have
    if op in ("Gt", "Lt") and have:
        try:
            a, b = int(values[key]), int(vals[0])
        except (ValueError, IndexError):
            return False
        return a > b if op == "Gt" else a < b
    return False


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    """k8s.io/api/core/v1 Toleration.ToleratesTaint."""
    for tol in tolerations:
        if tol.get("effect") and tol["effect"] != taint.get("effect"):
            continue
        if tol.get("key") and tol["key"] != taint.get("key"):
            continue
        op = tol.get("operator") or "Equal"
        if op == "Exists" or (op == "Equal" and (tol.get("value") or "") == (taint.get("value") or "")):
            if not tol.get("key") and op != "Exists":
                continue
            return True
    return False


def fits(pod: Obj, node: Obj) -> bool:
    spec = pod["spec"]
    labels = node["metadata"].get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    req = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = req.get("nodeSelectorTerms") or []
    if terms:
        fields = {"metadata.name": node["metadata"]["name"]}
        if not any(all(_expr_ok(e, labels) for e in t.get("matchExpressions") or [])
                   and all(_expr_ok(e, fields) for e in t.get("matchFields") or []) for t in terms):
            return False
    tolerations = spec.get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


def ours(pod: Obj) -> bool:
    """Whether this scheduler is the pod's: kube-scheduler serves only pods that name it (or no scheduler, which the
    API server defaults to ``default-scheduler``); a pod naming another scheduler waits for that one."""
    return pod["spec"].get("schedulerName", DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER


def _ready(node: Obj) -> bool:
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


class Scheduler:
    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.counter = 0
        self.pending: dict[str, Obj] = {}
        self.lock = threading.Lock()
        self._nodes: list[Obj] = []
        self._nodes_at = -1e9

    def nodes(self) -> list[Obj]:
        """Ready, schedulable nodes (listed at most once a second: a burst of pods shares one list)."""
        with self.lock:
            if time.monotonic() - self._nodes_at > NODE_CACHE_SECONDS:
                items = self.api.get("/api/v1/nodes").get("items", [])
                self._nodes = sorted((n for n in items if _ready(n)), key=lambda n: n["metadata"]["name"])
                self._nodes_at = time.monotonic()
            return list(self._nodes)

    def schedule(self, pod: Obj) -> bool:
        meta = pod["metadata"]
        candidates = [n for n in self.nodes() if fits(pod, n)]
        if not candidates:
            msg = f"0/{len(self.nodes())} nodes are available: no Ready node matches the pod's constraints."
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
                    "lastProbeTime": None, "lastTransitionTime": now()}
            with contextlib.suppress(ApiError):
                self.api.patch(pod_path(meta["namespace"], meta["name"], "status"),
                               {"status": {"conditions": [cond]}})
            return False
        with self.lock:
            node = candidates[self.counter % len(candidates)]
            self.counter += 1
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node["metadata"]["name"]}}
        try:
            self.api.create(pod_path(meta["namespace"], meta["name"], "binding"), body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("binding %s/%s: %s", meta["namespace"], meta["name"], exc)
                return False
        return True

    def retry_loop(self) -> None:
        while True:
            time.sleep(RETRY_SECONDS)
            with self.lock:
                pods = list(self.pending.values())
            for pod in pods:
                try:
                    if self.schedule(pod):
                        with self.lock:
                            self.pending.pop(pod["metadata"]["uid"], None)
                except Exception:
                    log.exception("scheduling retry failed")

    def run(self) -> None:
        threading.Thread(target=self.retry_loop, daemon=True, name="sched-retry").start()
        for kind, pod in self.api.list_and_watch("/api/v1/pods", fieldSelector="spec.nodeName="):
            if kind in ("RELIST", "SYNCED"):
                continue
            uid = pod["metadata"]["uid"]
            if kind == "DELETED" or pod["metadata"].get("deletionTimestamp") or pod["spec"].get("nodeName") \
                    or not ours(pod):
                with self.lock:
                    self.pending.pop(uid, None)
                continue
            with self.lock:
                if uid in self.pending:
                    self.pending[uid] = pod
                    continue
            try:
                if not self.schedule(pod):
                    with self.lock:
                        self.pending[uid] = pod
            except Exception:
                log.exception("scheduling %s failed", pod["metadata"].get("name"))
                with self.lock:
                    self.pending[uid] = pod
