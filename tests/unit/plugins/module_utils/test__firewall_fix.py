# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall fix of IPT002 (_firewall_fix) and the ACCEPT-shadows-DROP rule of _iptables, on
real iptables-save and nft dumps captured in a namespace (fixtures/iptables/SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings, _firewall_fix, _iptables

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "iptables"
DROP = "-A INPUT -i cilium_host -p udp -m udp --dport 53 -j DROP"
REJECT = "-A INPUT -s 10.244.0.0/16 -p tcp -m multiport --dports 53,853 -j REJECT --reject-with icmp-port-unreachable"


def load(name):
    return (FIXTURES / name).read_text()


def findings_of(text):
    facts = _iptables.merge([_iptables.parse_save(text)], backend="nft", version="1.8.9")
    facts.update(available=True, reason=None, cluster_ips=[], listeners={"available": False, "reason": "not gathered", "sockets": []})
    return [f for f in _findings.evaluate({"node1": {"clusterdns_iptables": facts}})["findings"] if f["id"] == "IPT002"]


def test_ipt002_fires_on_the_drop_and_the_reject():
    assert sorted(f["evidence"]["rule"] for f in findings_of(load("local-netns-firewall-drop.txt"))) == sorted([DROP, REJECT])


def test_an_accept_ahead_of_the_drop_shadows_it_and_ipt002_passes():
    parsed = _iptables.parse_save(load("local-netns-firewall-accepted.txt"))
    assert parsed["dns_blocks"] == []
    assert [(b["rule"], b["shadowed_by"]["position"]) for b in parsed["dns_blocks_shadowed"]] == [(DROP, 1), (REJECT, 3)]
    assert findings_of(load("local-netns-firewall-accepted.txt")) == []


@pytest.mark.parametrize(("accept", "shadowed"), [
    ("-A INPUT -i cilium_host -p udp -m udp --dport 53 -j ACCEPT", True),
    ("-A INPUT -i cilium_host -j ACCEPT", True),                          # everything on the interface
    ("-A INPUT -p udp -m udp --dport 1:1024 -j ACCEPT", True),            # a range that includes 53
    ("-A INPUT -i lxc+ -p udp -m udp --dport 53 -j ACCEPT", False),       # another interface
    ("-A INPUT -i cilium_host -p tcp -m tcp --dport 53 -j ACCEPT", False),  # another protocol
    ("-A INPUT -i cilium_host -p udp -m udp --sport 53 -j ACCEPT", False),  # answers, not queries
    ("-A INPUT -i cilium_host -p udp -m udp --dport 5353 -j ACCEPT", False),
    ("-A INPUT -i cilium_host -p udp -m conntrack --ctstate ESTABLISHED -m udp --dport 53 -j ACCEPT", False),  # only part of it
    ("-A INPUT -s 10.0.0.0/8 -i cilium_host -p udp -m udp --dport 53 -j ACCEPT", False),  # only some sources
])
def test_which_earlier_accept_shadows_a_drop(accept, shadowed):
    text = "*filter\n:INPUT ACCEPT [0:0]\n%s\n%s\nCOMMIT\n" % (accept, DROP)
    parsed = _iptables.parse_save(text)
    assert (parsed["dns_blocks"] == []) is shadowed
    assert len(parsed["dns_blocks_shadowed"]) == (1 if shadowed else 0)


def test_an_accept_after_the_drop_or_in_another_chain_does_not_shadow_it():
    for lines in (DROP + "\n-A INPUT -i cilium_host -j ACCEPT", "-A FORWARD -i cilium_host -j ACCEPT\n" + DROP):
        parsed = _iptables.parse_save("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n%s\nCOMMIT\n" % lines)
        assert [b["rule"] for b in parsed["dns_blocks"]] == [DROP]


def test_accept_rule_keeps_the_interface_and_narrows_the_ports_to_53():
    assert _firewall_fix.accept_rule(DROP) == (
        '-A INPUT -i cilium_host -p udp -m udp --dport 53 -m comment --comment "%s" -j ACCEPT' % _firewall_fix.COMMENT)
    assert _firewall_fix.accept_rule(REJECT).startswith("-A INPUT -s 10.244.0.0/16 -p tcp -m multiport --dports 53 -m comment")
    assert _firewall_fix.accept_rule("-A FORWARD -p udp -m udp ! --dport 123 -j DROP").startswith("-A FORWARD -p udp -m udp --dport 53 ")
    commented = _firewall_fix.accept_rule('-A INPUT -p udp -m comment --comment "block dns" -m udp --dport 53 -j DROP')
    assert commented.count("--comment") == 1 and "block dns" not in commented


def _ipt002(text):
    return [{"id": "IPT002", "evidence": {k: b[k] for k in ("family", "table", "chain", "position", "rule", "target")}}
            for b in _iptables.parse_save(text)["dns_blocks"]]


def test_plan_insert_accept_puts_each_accept_right_ahead_of_its_rule():
    before = load("local-netns-firewall-drop.txt")
    plan = _firewall_fix.plan(_ipt002(before), {"ipv4": before})
    assert plan["refused"] == [] and plan["tables"] == {"ipv4": ["filter"]}
    # highest position first, so the first insert does not move the second rule
    assert plan["restore"]["ipv4"].splitlines()[0] == "*filter"
    assert [c["command"].split()[:3] for c in plan["changes"]] == [["-I", "INPUT", "2"], ["-I", "INPUT", "1"]]
    # what the plan says the chain becomes is what iptables-restore made of it (the captured after-dump)
    after = [line for line in load("local-netns-firewall-accepted.txt").splitlines() if line.startswith("-A ")]
    assert plan["diff"]["after"].splitlines()[1:] == after
    assert "ahead of rule 1: " + DROP in "\n".join(plan["actions"])


def test_plan_is_idempotent_once_the_accepts_are_in():
    before = load("local-netns-firewall-drop.txt")
    plan = _firewall_fix.plan(_ipt002(before), {"ipv4": load("local-netns-firewall-accepted.txt")})
    assert plan["changes"] == [] and plan["restore"] == {} and len(plan["already"]) == 2


def test_plan_remove_deletes_the_rule_by_its_spec_and_notices_when_it_is_gone():
    before = load("local-netns-firewall-drop.txt")
    plan = _firewall_fix.plan(_ipt002(before)[:1], {"ipv4": before}, mode="remove")
    assert plan["restore"]["ipv4"] == "*filter\n-D INPUT -i cilium_host -p udp -m udp --dport 53 -j DROP\nCOMMIT\n"
    assert plan["diff"]["after"].splitlines()[1:] == [REJECT]
    gone = before.replace(DROP + "\n", "")
    assert _firewall_fix.plan(_ipt002(before)[:1], {"ipv4": gone}, mode="remove")["already"][0].startswith("iptables filter INPUT: the rule is gone")


def test_plan_refuses_a_native_nftables_ruleset_naming_table_and_chain():
    before = load("local-netns-firewall-drop.txt")
    plan = _firewall_fix.plan(_ipt002(before), {"ipv4": before}, nft_ruleset=load("local-netns-nft-native-inet.json"))
    assert plan["changes"] == [] and plan["restore"] == {}
    assert plan["refused"] and "native nftables table inet filter, base chain input (hook input" in plan["refused"][0]
    # the iptables-nft tables alone are not native
    assert _firewall_fix.native_nft_chains(load("local-netns-nft-iptables-only.json")) == []


def test_plan_bad_input():
    with pytest.raises(ValueError, match="firewall_mode must be one of insert_accept, remove, got 'accept'"):
        _firewall_fix.plan([], {}, mode="accept")
    with pytest.raises(ValueError, match="nft -j list ruleset: not JSON"):
        _firewall_fix.native_nft_chains("table inet filter {")
    plan = _firewall_fix.plan([{"id": "IPT002", "evidence": {"family": "ipv4"}}], {"ipv4": ""})
    assert "IPT002 evidence without family/table/chain/rule" in plan["refused"][0]
