"""Named ports no candidate destination declares: ingress against the selected pods, egress against every pod."""

from __future__ import annotations

from typing import Any

from core_builders import pod, policy

from netpol_auditor.model import Pod, Protocol
from netpol_auditor.named_ports import unresolved_named_ports

WEB = pod("shop", "web", "10.0.0.1", {"app": "web"}, ports=[{"containerPort": 8080, "name": "http"}])
DNS = pod("kube-system", "dns", "10.0.0.2", {"app": "dns"},
          ports=[{"containerPort": 53, "name": "dns", "protocol": "UDP"}])
DB = pod("shop", "db", "10.0.0.3", {"app": "db"}, ports=[{"containerPort": 5432}])


def found(spec: dict[str, Any], pods: list[Pod] | None = None) -> list[tuple[str, str, Protocol]]:
    pol = policy("shop", "p", spec)
    candidates = [WEB, DNS, DB] if pods is None else pods
    return [(u.path, u.name, u.protocol) for u in unresolved_named_ports([pol], candidates)]


def test_ingress_names_resolve_on_the_selected_pods() -> None:
    assert found({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]}) == []
    assert found({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"ports": [{"port": "http"}]}]}) == [
        ("spec.ingress[0].ports[0].port", "http", Protocol.TCP)
    ]


def test_the_protocol_is_part_of_the_name() -> None:
    spec = {"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"port": "http", "protocol": "UDP"}]}]}
    assert found(spec) == [("spec.ingress[0].ports[1].port", "http", Protocol.UDP)]


def test_egress_names_resolve_on_any_pod() -> None:
    egress = [{"ports": [{"port": "dns", "protocol": "UDP"}]}, {"ports": [{"port": "metrics"}]}]
    assert found({"podSelector": {"matchLabels": {"app": "web"}}, "egress": egress}) == [
        ("spec.egress[1].ports[0].port", "metrics", Protocol.TCP)
    ]


def test_nothing_is_said_without_candidates() -> None:
    ingress = [{"ports": [{"port": "nope"}]}]
    assert found({"podSelector": {"matchLabels": {"app": "none"}}, "ingress": ingress}) == []
    assert found({"podSelector": {}, "egress": [{"ports": [{"port": "nope"}]}]}, pods=[]) == []
