"""netpol-analyzer's connlist text format, as the corpus comparison reads it."""

from __future__ import annotations

import pytest
from connlist import ALL_PORTS, Conns, parse_connlist, parse_external


@pytest.mark.parametrize(
    "text",
    [
        "All Connections",
        "TCP 8080",
        "TCP 10053-10054,UDP 10053",
        "SCTP 1-9002,9004-65535,TCP 1-65535,UDP 1-52,54-65535",
        "SCTP 8956,9090",
    ],
)
def test_connection_sets_print_as_they_are_written(text: str) -> None:
    assert str(Conns.parse(text)) == text


def test_all_connections_is_every_port_of_every_protocol() -> None:
    every = Conns.parse("All Connections")
    assert every == Conns.parse("SCTP 1-65535,TCP 1-65535,UDP 1-65535")
    assert every.ports["UDP"] == ALL_PORTS


def test_ranges_are_normalized() -> None:
    assert Conns.parse("TCP 80,81-90,85,UDP 53") == Conns.of({"TCP": [(80, 90)], "UDP": [(53, 53)]})
    assert str(Conns.of({"TCP": [(8081, 8082), (80, 80)]})) == "TCP 80,8081-8082"


def test_no_connection() -> None:
    assert not Conns()
    assert str(Conns()) == "No Connections"
    assert Conns.of({"TCP": []}) == Conns()


def test_allows() -> None:
    conns = Conns.parse("TCP 8000-8010,UDP 53")
    assert conns.allows("TCP", 8005)
    assert not conns.allows("TCP", 8011)
    assert not conns.allows("SCTP", 53)


@pytest.mark.parametrize("text", ["8080", "TCP", "TCP x", "ICMP 1"])
def test_malformed_connection_sets_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="not a connlist connection set"):
        Conns.parse(text)


def test_external_peers() -> None:
    assert parse_external("0.0.0.0-255.255.255.255[External]") == (0, 2**32 - 1)
    assert parse_external("10.0.0.0-10.255.255.255[External]") == (10 << 24, (11 << 24) - 1)
    assert parse_external("default/web[Deployment]") is None


def test_lines_are_sorted_by_kind_of_peer() -> None:
    parsed = parse_connlist(
        "0.0.0.0-255.255.255.255[External] => default/a[Deployment] : All Connections\n"
        "default/a[Deployment] => default/b[StatefulSet] : TCP 5432\n"
        "{ingress-controller} => default/a[Deployment] : TCP 8080\n"
        "\n"
    )
    assert parsed.workloads == {("default/a[Deployment]", "default/b[StatefulSet]"): Conns.parse("TCP 5432")}
    assert list(parsed.externals) == [("0.0.0.0-255.255.255.255[External]", "default/a[Deployment]")]
    assert parsed.ingress_controller == ["{ingress-controller} => default/a[Deployment] : TCP 8080"]


@pytest.mark.parametrize(
    "text",
    ["default/a[Pod] -> default/b[Pod] : TCP 80", "a => b : TCP 80\na => b : TCP 81"],
)
def test_malformed_connlists_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="line"):
        parse_connlist(text)
