"""Pods, namespaces and policies for the operator tests, made through the real API.

Pods made here use a scheduler name nobody serves and a node selector no node matches, so no node picks them
up, and the test sets their status (Running, a pod IP) itself through the status subresource: they are endpoints
without a node agent, at any scale.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

UNSERVED_SCHEDULER = "netpol-auditor-test-unscheduled"


class Workload:
    def __init__(self, api_client: Any) -> None:
        self.core = client.CoreV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)
        self._next_ip = int(ipaddress.ip_address("10.200.0.1"))

    def ip(self) -> str:
        self._next_ip += 1
        return str(ipaddress.ip_address(self._next_ip))

    def namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        body = {"metadata": {"name": name, "labels": labels or {}}}
        try:
            self.core.create_namespace(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_namespace(name, {"metadata": {"labels": labels or {}}})

    def pod(self, namespace: str, name: str, labels: dict[str, str], port: int = 80, running: bool = True,
            placed: bool = False) -> None:
        """A pod the test runs itself (default), or with *placed* one the cluster's scheduler and nodes run."""
        body: dict[str, Any] = {
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "schedulerName": UNSERVED_SCHEDULER,
                "nodeSelector": {"netpol-auditor.test/node": "none"},  # and no node would fit anyway
                "containers": [{"name": "main", "image": "registry.example/app:1",
                                "ports": [{"containerPort": port, "name": "http"}]}],
                "tolerations": [{"operator": "Exists"}],
            },
        }
        if placed:
            del body["spec"]["schedulerName"], body["spec"]["nodeSelector"]
        self.core.create_namespaced_pod(namespace, body)
        if running and not placed:
            self.run(namespace, name)

    def run(self, namespace: str, name: str) -> None:
        """Give the pod a Running status and an IP, unless a node already runs it."""
        if self.core.read_namespaced_pod(name, namespace).status.pod_ip:
            return
        ip = self.ip()
        try:
            self.core.patch_namespaced_pod_status(name, namespace, {"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
        except ApiException as exc:
            if exc.status != 422 or not self.core.read_namespaced_pod(name, namespace).status.pod_ip:
                raise

    def relabel(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self.core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": labels}})

    def delete_pod(self, namespace: str, name: str) -> None:
        self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    def policy(self, namespace: str, name: str, target: dict[str, str], sources: dict[str, str] | None,
               port: int | None = 80, egress: bool = False) -> None:
        rule: dict[str, Any] = {}
        if sources is not None:
            rule["from"] = [{"podSelector": {"matchLabels": sources}}]
        if port is not None:
            rule["ports"] = [{"port": port, "protocol": "TCP"}]
        spec: dict[str, Any] = {"podSelector": {"matchLabels": target}, "ingress": [rule]}
        if egress:
            spec["policyTypes"] = ["Ingress", "Egress"]
            spec["egress"] = [{"to": [{"namespaceSelector": {}}]}]
        body = {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
        try:
            self.net.create_namespaced_network_policy(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.net.replace_namespaced_network_policy(name, namespace, {
                **body, "metadata": {**body["metadata"], "resourceVersion": self.net.read_namespaced_network_policy(
                    name, namespace).metadata.resource_version}})

    def delete_policy(self, namespace: str, name: str) -> None:
        self.net.delete_namespaced_network_policy(name, namespace)

    def delete_namespace(self, name: str) -> None:
        self.core.delete_namespace(name)
