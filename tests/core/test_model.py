"""The object model: port/pod references, labels, implicit namespace label."""

from __future__ import annotations

import pytest

from netpol_auditor.model import NAMESPACE_NAME_LABEL, Labels, Namespace, PodRef, PortProtocol, Protocol


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80/TCP", PortProtocol(80, Protocol.TCP)),
        ("80", PortProtocol(80, Protocol.TCP)),
        ("53/udp", PortProtocol(53, Protocol.UDP)),
        ("9000/SCTP", PortProtocol(9000, Protocol.SCTP)),
    ],
)
def test_port_protocol_parse(text: str, expected: PortProtocol) -> None:
    assert PortProtocol.parse(text) == expected
    assert str(expected) == f"{expected.port}/{expected.protocol.value}"


@pytest.mark.parametrize("text", ["http", "80/ICMP", "0/TCP", "65536", ""])
def test_port_protocol_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        PortProtocol.parse(text)


def test_port_protocol_orders_by_port_then_protocol() -> None:
    ports = [PortProtocol.parse(p) for p in ["81/UDP", "80/UDP", "80/TCP"]]
    assert [str(p) for p in sorted(ports)] == ["80/TCP", "80/UDP", "81/UDP"]


def test_pod_ref_round_trip() -> None:
    ref = PodRef.parse("x/a")
    assert ref == PodRef("x", "a")
    assert str(ref) == "x/a"
    assert hash(ref) == hash(PodRef("x", "a"))
    with pytest.raises(ValueError):
        PodRef.parse("no-namespace")


def test_labels_are_hashable_and_compare_with_dicts() -> None:
    a = Labels({"b": "2", "a": "1"})
    assert a == {"a": "1", "b": "2"}
    assert hash(a) == hash(Labels({"a": "1", "b": "2"}))
    assert list(a) == ["a", "b"]


def test_namespace_always_has_its_name_label() -> None:
    assert Namespace("prod").labels == {NAMESPACE_NAME_LABEL: "prod"}
    assert Namespace("prod", Labels({"team": "a"})).labels == {"team": "a", NAMESPACE_NAME_LABEL: "prod"}
