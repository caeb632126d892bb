"""The rule rewrites of localcluster/rulefilter.py on lines kube-router v2.1.0 wrote (copied from `iptables-save` on
a local cluster node); the faults' effect on traffic is checked in test_fault_model.py."""

from __future__ import annotations

from localcluster.rulefilter import filter_ipset_restore, filter_iptables

JUMP_IN = ('-A KUBE-ROUTER-FORWARD -d 10.244.2.2/32 -m comment --comment "rule to jump traffic destined to POD '
           'name:dns namespace: pr-dns to chain KUBE-POD-FW-2J46EMUVNDL57XCV" -j KUBE-POD-FW-2J46EMUVNDL57XCV')
JUMP_OUT = ('-A KUBE-ROUTER-FORWARD -s 10.244.2.2/32 -m comment --comment "rule to jump traffic from POD name:dns '
            'namespace: pr-dns to chain KUBE-POD-FW-2J46EMUVNDL57XCV" -j KUBE-POD-FW-2J46EMUVNDL57XCV')
RANGE = ('-A KUBE-NWPLCY-GH3BGPELBDVW3EMA -p tcp -m comment --comment "rule to ACCEPT traffic from source pods to dest '
         'pods selected by policy name scrape-range namespace pr-tenant-a" -m set --match-set '
         'KUBE-SRC-OBTI7FLPWTF5AD3M src -m set --match-set KUBE-DST-BQFJGU6X6MFBE5DU dst -m tcp --dport 9000:9060 '
         '-j MARK --set-xmark 0x10000/0x10000')
# `web` ingress `[{ports: [{port: http}]}]`: its dst set is the named-port set of rule 0, named port 0
NAMED = ('-A KUBE-NWPLCY-R63IPDVRMFDIEPFI -p tcp -m comment --comment "rule to ACCEPT traffic from all sources to dest '
         'pods selected by policy name: web namespace pr-shop" -m set --match-set KUBE-DST-J74USRAL6ZW3F3AN dst -m tcp '
         '--dport 8080 -j MARK --set-xmark 0x10000/0x10000')
# `db` ingress on the numeric port 5432: the policy's target set, not a named-port set
NUMERIC = ('-A KUBE-NWPLCY-2BT3V6IOVJ4PO6BV -p tcp -m comment --comment "rule to ACCEPT traffic from source pods to '
           'dest pods selected by policy name db namespace pr-shop" -m set --match-set KUBE-SRC-ECRQQOZQEAJSJHVM '
           'src -m set --match-set KUBE-DST-W4N7FS5IQGEFRDOF dst -m tcp --dport 5432 -j MARK '
           '--set-xmark 0x10000/0x10000')
RULES = "\n".join(["*filter", JUMP_IN, JUMP_OUT, RANGE, NAMED, NUMERIC, "COMMIT"]) + "\n"


def lines(fault: dict[str, object]) -> list[str]:
    return filter_iptables(RULES, fault).splitlines()


def test_no_rewrite_without_a_matching_verb() -> None:
    assert filter_iptables(RULES, {"verb": "slow-programming", "seconds": 3}) == RULES


def test_ignore_egress_and_ignore_ingress_drop_only_their_own_jumps() -> None:
    assert lines({"verb": "ignore-egress"}) == ["*filter", JUMP_IN, RANGE, NAMED, NUMERIC, "COMMIT"]
    assert lines({"verb": "ignore-ingress"}) == ["*filter", JUMP_OUT, RANGE, NAMED, NUMERIC, "COMMIT"]


def test_ignore_udp_exempts_udp_from_the_chosen_jumps() -> None:
    both = lines({"verb": "ignore-udp", "directions": ["ingress", "egress"]})
    assert both[1].startswith("-A KUBE-ROUTER-FORWARD ! -p udp -d 10.244.2.2/32")
    assert both[2].startswith("-A KUBE-ROUTER-FORWARD ! -p udp -s 10.244.2.2/32")
    ingress = lines({"verb": "ignore-udp", "directions": ["ingress"]})
    assert "! -p udp" in ingress[1] and ingress[2] == JUMP_OUT
    assert lines({"verb": "ignore-sctp", "directions": ["egress"]})[2].startswith("-A KUBE-ROUTER-FORWARD ! -p sctp")


def test_ignore_end_port_keeps_the_first_port_of_a_range() -> None:
    out = lines({"verb": "ignore-end-port"})
    assert out[3] == RANGE.replace("--dport 9000:9060", "--dport 9000")
    assert out[4:6] == [NAMED, NUMERIC]


def test_ignore_named_ports_drops_rules_matched_through_a_named_port_set() -> None:
    assert lines({"verb": "ignore-named-ports"}) == ["*filter", JUMP_IN, JUMP_OUT, RANGE, NUMERIC, "COMMIT"]


def test_ignore_ipblock_except_drops_nomatch_members_only() -> None:
    restore = ("create KUBE-SRC-X hash:net family inet\nadd KUBE-SRC-X 10.244.0.0/16 timeout 0\n"
               "add KUBE-SRC-X 10.244.1.0/24 timeout 0 nomatch\n")
    assert filter_ipset_restore(restore, {"verb": "ignore-ipblock-except"}).splitlines() == restore.splitlines()[:2]
    assert filter_ipset_restore(restore, {"verb": "ignore-udp"}) == restore
