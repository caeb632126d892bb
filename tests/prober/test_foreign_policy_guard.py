"""Paths a Cilium, Calico or Antrea policy may decide are not judged by the prober (it cannot predict them): they
are inconclusive with reason ``foreign_policy``, never mismatches. Exactly those: the policy's direction counts,
so an ingress-only policy on the destination leaves the destination's own egress paths judged."""

from __future__ import annotations

import yaml
from kubernetes import client

from netpol_auditor.controller.settings import Settings
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import load_text
from netpol_auditor.model import PodRef
from netpol_auditor.prober.failures import INCONCLUSIVE_REASONS
from netpol_auditor.prober.loop import ProbeLoop
from netpol_auditor.vendor_policy import VendorPolicy, parse_vendor_policy

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
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: shop, labels: {app: batch}}
spec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}
status: {phase: Running, podIP: 10.0.0.3}
"""

CILIUM_DB_INGRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  endpointSelector: {matchLabels: {k8s:app: db}}
  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
"""

CALICO_BATCH_EGRESS = """
apiVersion: crd.projectcalico.org/v1
kind: GlobalNetworkPolicy
metadata: {name: batch}
spec:
  selector: app == 'batch'
  types: [Egress]
"""


def _foreign(*vendor: str) -> object:
    index = ReachabilityIndex.from_objects(load_text(OBJECTS))
    policies: list[VendorPolicy] = []
    for text in vendor:
        parsed = parse_vendor_policy(yaml.safe_load(text))
        assert parsed is not None
        policies.append(parsed)
    loop = ProbeLoop(index, Settings(probe_enabled=True), client.ApiClient(), foreign=lambda: tuple(policies))
    return loop._foreign_policy_subjects()


def test_only_the_paths_a_vendor_policy_may_decide_are_left_unjudged() -> None:
    foreign = _foreign(CILIUM_DB_INGRESS, CALICO_BATCH_EGRESS)
    web, db, batch = PodRef("shop", "web"), PodRef("shop", "db"), PodRef("shop", "batch")
    assert foreign(web, db)  # type: ignore[operator]  # db's ingress
    assert foreign(batch, db)  # type: ignore[operator]
    assert not foreign(db, web)  # type: ignore[operator]  # db's egress: no egress rule, NetworkPolicies decide
    assert foreign(batch, web)  # type: ignore[operator]  # batch's egress
    assert not foreign(web, batch)  # type: ignore[operator]  # batch's ingress is not selected
    assert "foreign_policy" in INCONCLUSIVE_REASONS


def test_without_vendor_policies_every_path_is_judged() -> None:
    foreign = _foreign()
    assert not foreign(PodRef("shop", "web"), PodRef("shop", "db"))  # type: ignore[operator]
