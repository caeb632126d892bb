"""Label selector and ipBlock matchers (apimachinery labels semantics)."""

from __future__ import annotations

import ipaddress

import pytest

from netpol_auditor.model import IPBlock, Labels, LabelSelector, SelectorOperator, SelectorRequirement
from netpol_auditor.selectors import (
    AddressIndex,
    block_intervals,
    compile_ip_block,
    compile_selector,
    parse_label_selector,
)


def sel(match_labels: dict[str, str] | None = None, *exprs: tuple[str, str, tuple[str, ...]]) -> LabelSelector:
    return LabelSelector(
        Labels(match_labels or {}), tuple(SelectorRequirement(k, SelectorOperator(op), v) for k, op, v in exprs)
    )


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (sel(), {}, True),
        (sel(), {"a": "1"}, True),
        (sel({"app": "web"}), {"app": "web", "x": "y"}, True),
        (sel({"app": "web"}), {"app": "db"}, False),
        (sel({"app": "web"}), {}, False),
        (sel(None, ("env", "In", ("prod", "stage"))), {"env": "prod"}, True),
        (sel(None, ("env", "In", ("prod", "stage"))), {"env": "dev"}, False),
        (sel(None, ("env", "In", ("prod",))), {}, False),
        # NotIn and DoesNotExist match objects without the key.
        (sel(None, ("env", "NotIn", ("prod",))), {}, True),
        (sel(None, ("env", "NotIn", ("prod",))), {"env": "dev"}, True),
        (sel(None, ("env", "NotIn", ("prod",))), {"env": "prod"}, False),
        (sel(None, ("env", "Exists", ())), {"env": ""}, True),
        (sel(None, ("env", "Exists", ())), {}, False),
        (sel(None, ("env", "DoesNotExist", ())), {}, True),
        (sel(None, ("env", "DoesNotExist", ())), {"env": "x"}, False),
        # matchLabels and every expression are ANDed.
        (sel({"app": "web"}, ("env", "In", ("prod",))), {"app": "web", "env": "prod"}, True),
        (sel({"app": "web"}, ("env", "In", ("prod",))), {"app": "web", "env": "dev"}, False),
    ],
)
def test_label_selector(selector: LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert compile_selector(selector).matches(Labels(labels)) is expected


@pytest.mark.parametrize(
    ("block", "address", "expected"),
    [
        (IPBlock("10.0.0.0/8"), "10.1.2.3", True),
        (IPBlock("10.0.0.0/8"), "11.0.0.1", False),
        (IPBlock("10.0.0.0/8", ("10.1.0.0/16",)), "10.1.2.3", False),
        (IPBlock("10.0.0.0/8", ("10.1.0.0/16",)), "10.2.0.1", True),
        (IPBlock("0.0.0.0/0", ("169.254.169.254/32",)), "169.254.169.254", False),
        (IPBlock("0.0.0.0/0", ("169.254.169.254/32",)), "169.254.169.253", True),
        # Never the other family: 0.0.0.0/0 does not contain IPv6 addresses, nor ::/0 IPv4 ones.
        (IPBlock("0.0.0.0/0"), "fd00::1", False),
        (IPBlock("::/0"), "10.0.0.1", False),
        (IPBlock("fd00::/64", ("fd00::/120",)), "fd00::1", False),
        (IPBlock("fd00::/64", ("fd00::/120",)), "fd00::1:1", True),
        # Host bits in the CIDR are masked off, like Go's net.ParseCIDR.
        (IPBlock("10.0.0.7/24"), "10.0.0.200", True),
    ],
)
def test_ip_block(block: IPBlock, address: str, expected: bool) -> None:
    assert compile_ip_block(block).contains(ipaddress.ip_address(address)) is expected
    assert compile_ip_block(block).matches_any((address,)) is expected


def test_block_intervals_subtract_excepts() -> None:
    m = compile_ip_block(IPBlock("10.0.0.0/8", ("10.1.0.0/16", "10.0.0.0/24", "10.255.255.0/24")))
    ip = lambda s: int(ipaddress.ip_address(s))  # noqa: E731
    assert block_intervals(m) == [
        (4, ip("10.0.1.0"), ip("10.0.255.255")),
        (4, ip("10.2.0.0"), ip("10.255.254.255")),
    ]
    assert block_intervals(compile_ip_block(IPBlock("10.0.0.0/8", ("10.0.0.0/8",)))) == []


def test_address_index_finds_owners_inside_a_block() -> None:
    index: AddressIndex[str] = AddressIndex()
    for owner, address in [
        ("a", "10.0.0.1"),
        ("b", "10.1.0.1"),
        ("c", "192.0.2.1"),
        ("d", "fd00::1"),
        ("e", "10.0.0.1"),
    ]:
        index.add(address, owner)
    assert index.within(compile_ip_block(IPBlock("10.0.0.0/8", ("10.1.0.0/16",)))) == {"a", "e"}
    assert index.within(compile_ip_block(IPBlock("0.0.0.0/0"))) == {"a", "b", "c", "e"}
    assert index.within(compile_ip_block(IPBlock("::/0"))) == {"d"}
    index.remove("10.0.0.1", "a")
    index.remove("10.0.0.1", "nobody")
    assert index.within(compile_ip_block(IPBlock("10.0.0.1/32"))) == {"e"}
    index.remove("10.0.0.1", "e")
    assert index.within(compile_ip_block(IPBlock("10.0.0.1/32"))) == set()


@pytest.mark.parametrize(("text", "matching", "not_matching"), [
    ("team=payments", [{"team": "payments"}], [{}, {"team": "search"}]),
    ("team==payments,env!=dev", [{"team": "payments"}, {"team": "payments", "env": "prod"}],
     [{"team": "payments", "env": "dev"}]),
    ("env in (prod, staging)", [{"env": "prod"}, {"env": "staging"}], [{}, {"env": "dev"}]),
    ("env notin (dev)", [{}, {"env": "prod"}], [{"env": "dev"}]),  # notin and != also match without the key
    ("audited", [{"audited": ""}, {"audited": "no"}], [{}]),
    ("!netpol-auditor.io/ignore", [{}, {"x": "y"}], [{"netpol-auditor.io/ignore": "true"}]),
    ("", [{}, {"any": "thing"}], []),
    ("kubernetes.io/metadata.name in (a,b),!skip", [{"kubernetes.io/metadata.name": "a"}],
     [{"kubernetes.io/metadata.name": "c"}, {"kubernetes.io/metadata.name": "a", "skip": ""}]),
])
def test_label_selector_strings_follow_kubectl(text: str, matching: list[dict[str, str]],
                                               not_matching: list[dict[str, str]]) -> None:
    """The string form of apimachinery's labels.Parse, compiled to the same matcher policies use."""
    matcher = compile_selector(parse_label_selector(text))
    assert all(matcher.matches(labels) for labels in matching)
    assert not any(matcher.matches(labels) for labels in not_matching)


@pytest.mark.parametrize("text", ["team>3", "a in ()", "a in (b c)", "a=b,a=c", ",", "a b", "a in (b", "=x"])
def test_malformed_label_selector_strings_are_rejected_naming_the_requirement(text: str) -> None:
    with pytest.raises(ValueError, match="label selector"):
        parse_label_selector(text)
