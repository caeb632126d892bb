"""Leftovers of earlier runs of this install: ProbeRun owner objects and probe pods that are not the current run's.

Only objects of this install are touched (``app.kubernetes.io/managed-by``, ``netpol-auditor.io/instance`` and
``netpol-auditor.io/install`` labels): two releases of the operator in one cluster never delete each other's pods.
Deleting an old ProbeRun is enough for the garbage collector to delete its pods; pods are also deleted directly (by
label), so cleanup does not wait for the collector, still happens where it is not running, and covers owner-less
runs (no ProbeRun CRD). A namespace where the operator may not delete pods is logged and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from netpol_auditor.prober.plan import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from netpol_auditor.prober.podspec import PROBE_RUN_GROUP, PROBE_RUN_PLURAL, PROBE_RUN_VERSION, RUN_LABEL

__all__ = ["delete_run", "identity_selector", "sweep_leftovers"]

logger = logging.getLogger(__name__)

MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


def identity_selector(identity: Mapping[str, str] | None) -> str:
    """The label selector of one install's objects (every label of ``identity``; default: managed-by only)."""
    labels = dict(identity or {MANAGED_BY_LABEL: MANAGED_BY_VALUE})
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _ignore_missing(exc: ApiException) -> None:
    if exc.status != 404:
        raise exc


def delete_pods(api: Any, label_selector: str) -> int:
    """Delete every pod matching ``label_selector`` (all namespaces) at once; returns how many. A pod the
    operator may not delete (403) is logged and skipped."""
    core: Any = client.CoreV1Api(api)
    pods = core.list_pod_for_all_namespaces(label_selector=label_selector).items
    deleted = 0
    for pod in pods:
        try:
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0)
            deleted += 1
        except ApiException as exc:
            if exc.status == 403:
                logger.warning("may not delete probe pod %s/%s (403): left for its activeDeadlineSeconds",
                               pod.metadata.namespace, pod.metadata.name)
                continue
            _ignore_missing(exc)
    return deleted


def delete_run(api: Any, name: str, run_id: str) -> None:
    """Delete one run: its ProbeRun (the collector deletes its pods; none without the CRD) and, directly, its pods."""
    custom: Any = client.CustomObjectsApi(api)
    if name:
        try:
            custom.delete_cluster_custom_object(
                PROBE_RUN_GROUP, PROBE_RUN_VERSION, PROBE_RUN_PLURAL, name,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
        except ApiException as exc:
            if exc.status not in (403, 404):
                raise
    delete_pods(api, f"{MANAGED},{RUN_LABEL}={run_id}")


def sweep_leftovers(
    api: Any, keep_run_id: str | None = None, identity: Mapping[str, str] | None = None
) -> tuple[int, int]:
    """Delete every ProbeRun and probe pod of this install (``identity``) not of ``keep_run_id``. Returns (runs,
    pods) deleted."""
    custom: Any = client.CustomObjectsApi(api)
    selector = identity_selector(identity)
    runs = 0
    try:
        listed = custom.list_cluster_custom_object(PROBE_RUN_GROUP, PROBE_RUN_VERSION, PROBE_RUN_PLURAL,
                                                   label_selector=selector)
    except ApiException as exc:
        if exc.status not in (403, 404):
            raise
        listed = {"items": []}
        if exc.status == 404:
            logger.warning("the ProbeRun CRD is not installed: probe pods cannot be garbage-collected by owner")
    for item in listed.get("items", []):
        run_id = (item.get("spec") or {}).get("runId", "")
        if keep_run_id is not None and run_id == keep_run_id:
            continue
        try:
            custom.delete_cluster_custom_object(
                PROBE_RUN_GROUP, PROBE_RUN_VERSION, PROBE_RUN_PLURAL, item["metadata"]["name"],
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
            runs += 1
        except ApiException as exc:
            _ignore_missing(exc)
    pod_selector = selector if keep_run_id is None else f"{selector},{RUN_LABEL}!={keep_run_id}"
    pods = delete_pods(api, pod_selector)
    if runs or pods:
        logger.info("swept leftovers of earlier probe runs: %d ProbeRuns, %d pods", runs, pods)
    return runs, pods
