"""Status-only pods: endpoints of the NetworkPolicy index without network namespaces, for scale tests and benches.

A pod names a scheduler nobody serves (localcluster's scheduler, like kube-scheduler, leaves it alone), so it is
never bound or run; its status (Running, a pod IP) is then written through the status subresource, which is all the
operator's index reads of a pod. Thousands of them cost the API server and etcd, not the machine's network.
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client.exceptions import ApiException

__all__ = ["UNSERVED_SCHEDULER", "create_namespace", "create_status_only_pod", "pod_ip"]

UNSERVED_SCHEDULER = "netpol-auditor-bench-unscheduled"


def pod_ip(n: int, first_octet: int = 10, base: int = 100) -> str:
    """A distinct IPv4 address for pod number ``n`` (``10.<base + n // 65536>.x.y``)."""
    return f"{first_octet}.{base + n // 65536}.{(n // 256) % 256}.{n % 256}"


def create_namespace(core: Any, name: str, labels: dict[str, str]) -> None:
    try:
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
    except ApiException as exc:
        if exc.status != 409:
            raise


def create_status_only_pod(core: Any, namespace: str, name: str, labels: dict[str, str],
                           ports: list[dict[str, Any]], ip: str) -> None:
    """Create the pod (an existing one is kept) and make it Running with ``ip``. A namespace created a moment ago
    may not have its ``default`` ServiceAccount yet (the admission plugin refuses the pod): retried for 30 s."""
    body = {"metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"schedulerName": UNSERVED_SCHEDULER, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "main", "image": "registry.example/app:1", "ports": ports}]}}
    for _ in range(60):
        try:
            core.create_namespaced_pod(namespace, body)
            break
        except ApiException as exc:
            if exc.status == 409:
                break
            if exc.status == 403 and "serviceaccount" in str(exc.body):
                time.sleep(0.5)
                continue
            raise
    core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running", "podIP": ip,
                                                                  "podIPs": [{"ip": ip}]}})
