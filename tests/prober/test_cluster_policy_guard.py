"""Paths a cluster policy governs are not judged by the prober (it predicts NetworkPolicies only): they are
inconclusive with reason ``cluster_policy`` rather than read as a CNI fault. Exactly those: the subject's direction
counts, so an ingress-only AdminNetworkPolicy on the destination leaves the source's other paths judged."""

from __future__ import annotations

from kubernetes import client

from netpol_auditor.controller.settings import Settings
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import load_text
from netpol_auditor.model import PodRef
from netpol_auditor.prober.failures import INCONCLUSIVE_REASONS
from netpol_auditor.prober.loop import ProbeLoop

OBJECTS = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 5432}]}]}
status: {phase: Running, podIP: 10.0.0.2}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard-db}
spec:
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  ingress:
  - name: deny-all
    action: Deny
    from: [{namespaces: {}}]
"""


def _governed(text: str) -> object:
    index = ReachabilityIndex.from_objects(load_text(text))
    loop = ProbeLoop(index, Settings(probe_enabled=True), client.ApiClient())
    return loop._cluster_policy_subjects()


def test_only_the_paths_a_cluster_policy_governs_are_left_unjudged() -> None:
    governed = _governed(OBJECTS)
    web, db = PodRef("shop", "web"), PodRef("shop", "db")
    assert governed(web, db)  # type: ignore[operator]  # db is the subject, for ingress
    assert not governed(db, web)  # type: ignore[operator]  # db's egress: no egress rule, NetworkPolicies decide
    assert "cluster_policy" in INCONCLUSIVE_REASONS


def test_without_cluster_policies_every_path_is_judged() -> None:
    governed = _governed(OBJECTS.split("---\napiVersion: policy")[0])
    assert not governed(PodRef("shop", "web"), PodRef("shop", "db"))  # type: ignore[operator]
