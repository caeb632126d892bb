"""Paths a Cilium, Calico or Antrea policy may decide are not judged by the prober (it cannot predict them): they
are inconclusive with reason ``foreign_policy``, never mismatches. Exactly those: the policy's direction counts
(an ingress-only policy on the destination leaves the destination's own egress paths judged), and a probe group
counts as selected when any of its members is (its probe pod speaks for all of them)."""

from __future__ import annotations

from collections.abc import Callable

import yaml
from kubernetes import client

from netpol_auditor.controller.settings import Settings
from netpol_auditor.index import ReachabilityIndex
from netpol_auditor.manifest_files import load_text
from netpol_auditor.prober.failures import INCONCLUSIVE_REASONS
from netpol_auditor.prober.loop import ProbeLoop
from netpol_auditor.vendor_policy import VendorPolicy, parse_vendor_policy


def pod(name: str, labels: str, ip: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {labels}}}
spec: {{nodeName: node-1, containers: [{{name: c, image: i, ports: [{{containerPort: 80}}]}}]}}
status: {{phase: Running, podIP: {ip}}}
"""


# web and web-2 are one probe group (the NetworkPolicy looks at `app` only); db and batch groups of their own.
OBJECTS = "---".join([
    "\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: shop}}\n",
    pod("web", "{app: web}", "10.0.0.1"),
    pod("web-2", "{app: web, canary: 'yes'}", "10.0.0.4"),
    pod("db", "{app: db}", "10.0.0.2"),
    pod("batch", "{app: batch}", "10.0.0.3"),
    """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
""",
])

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

CALICO_CANARY_EGRESS = """
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: canary, namespace: shop}
spec:
  selector: canary == 'yes'
  egress: [{action: Deny}]
"""


def _foreign(*vendor: str) -> dict[tuple[frozenset[str], frozenset[str]], bool]:
    """(source group's pods, destination group's pods) -> whether the path is left unjudged, for every planned
    path of a real plan of the objects."""
    index = ReachabilityIndex.from_objects(load_text(OBJECTS))
    policies: list[VendorPolicy] = []
    for text in vendor:
        parsed = parse_vendor_policy(yaml.safe_load(text))
        assert parsed is not None
        policies.append(parsed)
    loop = ProbeLoop(index, Settings(probe_enabled=True), client.ApiClient(), foreign=lambda: tuple(policies))
    paths = loop.planner.plan(index, 0.0).paths
    guard: Callable[..., bool] = loop._foreign_policy_subjects()

    def names(gid: str) -> frozenset[str]:
        group = loop.planner.group(gid)
        assert group is not None
        return frozenset(r.name for refs in group.members_by_node.values() for r in refs)

    return {(names(p.key.src), names(p.key.dst)): guard(p.key, p.source, p.destination) for p in paths}


WEB, DB, BATCH = frozenset({"web", "web-2"}), frozenset({"db"}), frozenset({"batch"})


def test_only_the_paths_a_vendor_policy_may_decide_are_left_unjudged() -> None:
    foreign = _foreign(CILIUM_DB_INGRESS, CALICO_BATCH_EGRESS)
    assert {WEB, DB, BATCH} == {src for src, _ in foreign}
    assert foreign[(WEB, DB)] and foreign[(BATCH, DB)]  # db's ingress
    assert foreign[(BATCH, WEB)]  # batch's egress
    assert not foreign[(DB, WEB)]  # db's egress: the Cilium policy has ingress rules only
    assert not foreign[(WEB, BATCH)]  # batch's ingress: the Calico policy is Egress only
    assert "foreign_policy" in INCONCLUSIVE_REASONS


def test_one_selected_member_makes_its_group_unjudged() -> None:
    foreign = _foreign(CALICO_CANARY_EGRESS)  # selects web-2, not web: the probe pod speaks for both
    assert foreign[(WEB, DB)] and foreign[(WEB, BATCH)]
    assert not foreign[(DB, WEB)] and not foreign[(BATCH, DB)]


def test_without_vendor_policies_every_path_is_judged() -> None:
    assert not any(_foreign().values())
