"""The expectation helper reproduces upstream's own printed tables, and rejects what upstream would reject."""

from __future__ import annotations

import pytest
from corpus_truthtable import E2E_MODEL_PODS, ExpectError, Reachability, TruthTable

# kubernetes/kubernetes test/e2e/network/netpol/network_policy.go (commit 9db638c0807a), comment in "should support
# denying of egress traffic on the client side (even if the server explicitly allows this traffic)", "Expected
# results" (the *X* highlight is upstream's annotation of an X cell).
UPSTREAM_EXPECTED = """
-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
x/a X   X   X   .   X   X   X   X   X
x/b .   .   .   X   X   .   .   .   .
x/c .   .   .   X   X   .   .   .   .
y/a .   .   .   X   X   .   .   .   .
y/b .   .   .   X   X   .   .   .   .
y/c .   .   .   X   X   .   .   .   .
z/a .   .   .   X   X   .   .   .   .
z/b .   .   .   X   X   .   .   .   .
z/c .   .   .   X   X   .   .   .   .
"""


def test_expect_calls_reproduce_the_table_upstream_prints() -> None:
    reach = Reachability(E2E_MODEL_PODS)
    for call in [
        'reachability.ExpectPeer(&Peer{Namespace: nsX, Pod: "a"}, &Peer{}, false)',
        'reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsY, Pod: "a"}, false)',
        'reachability.ExpectPeer(&Peer{Namespace: nsX, Pod: "a"}, &Peer{Namespace: nsY, Pod: "a"}, true)',
        'reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsY, Pod: "b"}, false)',
    ]:
        reach.apply(call)
    assert reach.table.values == TruthTable.parse(UPSTREAM_EXPECTED).values


def test_table_text_round_trips() -> None:
    table = TruthTable.parse(UPSTREAM_EXPECTED)
    assert TruthTable.parse(table.pretty()).values == table.values
    assert TruthTable.parse(table.aligned()).values == table.values


@pytest.mark.parametrize(
    "call",
    [
        'reachability.Expect(NewPodString(nsQ, "a"), NewPodString(nsX, "a"), false)',  # unknown namespace
        'reachability.Expect(NewPodString(nsX, "d"), NewPodString(nsX, "a"), false)',  # not in the model
        'reachability.ExpectAllIngress(NewPodString(nsX, "a"), maybe)',
        'reachability.ExpectPeer(&Peer{Name: "a"}, &Peer{}, false)',
        "reachability.AllowLoopback()",
    ],
)
def test_malformed_expectations_are_rejected(call: str) -> None:
    with pytest.raises(ExpectError):
        Reachability(E2E_MODEL_PODS).apply(call)


def test_poke_server_fills_one_cell_of_an_empty_table() -> None:
    items = ["gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1", "172.18.0.3"]
    reach = Reachability(items, default=None)
    reach.apply("kubernetes.PokeServer(gryffindor/harry-potter-0, ravenclaw/luna-lovegood-1, tcp, 80, false)", "80/TCP")
    reach.apply("kubernetes.PokeServer(gryffindor/harry-potter-0, 172.18.0.3, udp, 53, true)", "53/UDP")
    assert reach.table.values == {
        ("gryffindor/harry-potter-0", "ravenclaw/luna-lovegood-1"): False,
        ("gryffindor/harry-potter-0", "172.18.0.3"): True,
    }
    with pytest.raises(ExpectError, match="listed under 81/TCP"):
        reach.apply("kubernetes.PokeServer(gryffindor/harry-potter-0, ravenclaw/luna-lovegood-1, tcp, 80, true)",
                    "81/TCP")
    full = Reachability(["ns-x/a", "ns-y/b"], default=None)
    full.apply("kubernetes.PokeServer(x/a, y/b, sctp, 9003, true)", "9003/SCTP", lambda name: f"ns-{name}")
    assert full.table.values == {("ns-x/a", "ns-y/b"): True}
