# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The iptables-save, iptables --version and ss parsers on real captured outputs (fixtures/iptables/SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _iptables
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "iptables"


def load(name):
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def kubeproxy():
    return _iptables.parse_save(load("local-netns-kubeproxy-nft.txt"), "local-netns-kubeproxy-nft.txt")


@pytest.fixture(scope="module")
def noendpoints():
    return _iptables.parse_save(load("github-kubeadm-noendpoints.txt"), "github-kubeadm-noendpoints.txt")


def test_version_backends():
    assert _iptables.parse_version(load("local-iptables-version.txt")) == {"version": "1.8.9", "backend": "nft"}
    assert _iptables.parse_version(load("local-iptables-legacy-version.txt")) == {"version": "1.8.9", "backend": "legacy"}


def test_version_garbage_names_the_line():
    with pytest.raises(ParseError, match=r"iptables --version line 1: not an iptables version line .*'bash: iptables: command not found'"):
        _iptables.parse_version("bash: iptables: command not found\n")


def test_kube_dns_service_endpoints_and_probabilities(kubeproxy):
    assert kubeproxy["kube_proxy"]["mode"] == "iptables"
    assert kubeproxy["rule_count"] == {"raw": 4, "nat": 24, "filter": 6}
    udp, tcp = kubeproxy["services"]
    assert (udp["cluster_ip"], udp["port"], udp["protocol"], udp["chain"], udp["port_name"]) == ("10.96.0.10", 53, "udp", "KUBE-SVC-TCOU7JCQXEZGVUNU", "dns")
    assert tcp["chain"] == "KUBE-SVC-ERIFXISQEP7F7OF4" and tcp["protocol"] == "tcp"
    assert [(e["ip"], e["port"], e["probability"], e["share"]) for e in udp["endpoints"]] == [
        ("10.244.0.2", 53, 0.5, 0.5), ("10.244.0.3", 53, None, 0.5)]
    # the KUBE-MARK-MASQ rule of the SVC chain is not an endpoint
    assert all(e["chain"].startswith("KUBE-SEP-") for e in udp["endpoints"])


def test_service_found_by_cluster_ip_when_comments_are_stripped():
    text = load("local-netns-kubeproxy-nft.txt").replace("kube-system/kube-dns", "x/y")
    assert _iptables.parse_save(text)["services"] == []
    found = _iptables.parse_save(text, cluster_ips=["10.96.0.10"])["services"]
    assert [s["protocol"] for s in found] == ["udp", "tcp"]
    assert len(found[0]["endpoints"]) == 2


def test_cluster_ip_match_is_exact():
    text = load("local-netns-kubeproxy-nft.txt").replace("kube-system/kube-dns", "x/y").replace("10.96.0.10/32", "10.96.0.100/32")
    assert _iptables.parse_save(text, cluster_ips=["10.96.0.10"])["services"] == []
    assert len(_iptables.parse_save(text, cluster_ips=["10.96.0.100"])["services"]) == 2


def test_ct_notrack_form_is_nodelocal():
    text = "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -j CT --notrack\nCOMMIT\n"
    (entry,) = _iptables.parse_save(text)["nodelocal"]
    assert (entry["kind"], entry["target"], entry["addresses"]) == ("notrack", "CT", ["169.254.20.10"])


def test_ipv6_dump_addresses():
    text = ("*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -d fd00::a/128 -p udp -m udp --dport 53 -j NOTRACK\nCOMMIT\n"
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s fd00::/8 -p udp -m udp --sport 53 -j DROP\nCOMMIT\n")
    parsed = _iptables.parse_save(text, family="ipv6")
    assert parsed["nodelocal"][0]["addresses"] == ["fd00::a"]
    assert [(b["family"], b["dns_ports"]) for b in parsed["dns_blocks"]] == [("ipv6", ["sports 53"])]


def test_dns_block_with_range_and_position(kubeproxy):
    (block,) = kubeproxy["dns_blocks"]
    assert (block["table"], block["chain"], block["position"], block["target"]) == ("filter", "FORWARD", 2, "DROP")
    assert block["dns_ports"] == ["dports 1:1024"]
    assert block["rule"] == "-A FORWARD -i cni0 -p udp -m multiport --dports 1:1024 -j DROP"
    assert block["match"]["in_interface"] == "cni0"


def test_portless_drops_are_not_dns_blocks(kubeproxy, noendpoints):
    # KUBE-FIREWALL drops (mark / localnet) and DOCKER-ISOLATION drops name no port
    assert all("KUBE-FIREWALL" not in b["rule"] for b in kubeproxy["dns_blocks"] + noendpoints["dns_blocks"])
    assert noendpoints["dns_blocks"] == []


def test_nodelocal_notrack_and_accept(kubeproxy):
    kinds = [(n["kind"], n["chain"], n["position"]) for n in kubeproxy["nodelocal"]]
    # the sport 8080 health NOTRACK rule is not a DNS rule
    assert kinds == [("notrack", "PREROUTING", 1), ("notrack", "PREROUTING", 2), ("notrack", "OUTPUT", 1),
                     ("accept", "INPUT", 1), ("accept", "OUTPUT", 1)]
    merged = _iptables.merge([kubeproxy], backend="nft", version="1.8.9")
    assert merged["nodelocal"]["addresses"] == ["169.254.20.10"]
    assert merged["nodelocal"]["markers"] == ["NodeLocal DNS Cache: allow DNS traffic", "NodeLocal DNS Cache: skip conntrack"]


def test_no_endpoints_rejects_on_real_2018_dump(noendpoints):
    rejects = [(r["table"], r["chain"], r["position"], r["cluster_ip"], r["port"], r["protocol"], r["port_name"]) for r in noendpoints["no_endpoints"]]
    assert rejects == [("filter", "KUBE-SERVICES", 1, "10.96.0.10", 53, "udp", "dns"), ("filter", "KUBE-SERVICES", 2, "10.96.0.10", 53, "tcp", "dns-tcp")]
    assert noendpoints["services"] == []
    assert noendpoints["policies"] == [{"family": "ipv4", "table": "filter", "chain": "FORWARD", "policy": "DROP"}]
    assert noendpoints["kube_proxy"]["mode"] == "iptables"


def test_empty_ip6_dump():
    parsed = _iptables.parse_save(load("local-netns-ip6-empty.txt"), family="ipv6")
    assert parsed["rule_count"] == {} and parsed["kube_proxy"] == {
        "present": False, "mode": None, "svc_chains": 0, "sep_chains": 0, "ipvs_chains": 0, "ipset_matches": False}


@pytest.mark.parametrize(("rule", "blocked"), [
    ("-A INPUT -p udp -m udp --dport 53 -j DROP", ["dports 53"]),
    ("-A INPUT -p tcp -m tcp --sport 53 -j REJECT --reject-with tcp-reset", ["sports 53"]),
    ("-A INPUT -p udp -m multiport --dports 80,53,5353 -j DROP", ["dports 80,53,5353"]),
    ("-A INPUT -p udp -m multiport --ports 50:60 -j DROP", ["ports 50:60"]),
    ("-A INPUT -p udp -m udp ! --dport 53 -j DROP", []),
    ("-A INPUT -p udp -m udp ! --dport 123 -j DROP", ["dports !123"]),
    ("-A INPUT -p icmp -j DROP", []),
    ("-A INPUT -p udp -m udp --dport 5353 -j DROP", []),
    ("-A INPUT -p udp -m udp --dport 53 -j ACCEPT", []),
    ("-A INPUT -p udp -m comment --comment \"block \\\"dns\\\" here\" -m udp --dport 53 -j DROP", ["dports 53"]),
])
def test_port_matching(rule, blocked):
    parsed = _iptables.parse_save("*filter\n:INPUT ACCEPT [0:0]\n%s\nCOMMIT\n" % rule)
    assert [b["dns_ports"] for b in parsed["dns_blocks"]] == ([blocked] if blocked else [])


def test_counters_prefix_is_accepted():
    parsed = _iptables.parse_save("*filter\n:INPUT ACCEPT [1:2]\n[7:420] -A INPUT -p udp -m udp --dport 53 -j DROP\nCOMMIT\n")
    assert parsed["dns_blocks"][0]["position"] == 1
    assert parsed["dns_blocks"][0]["rule"] == "-A INPUT -p udp -m udp --dport 53 -j DROP"


@pytest.mark.parametrize(("text", "message"), [
    ("-A INPUT -j DROP\n", r"dump line 1: rule before any table header"),
    ("*filter\n-I INPUT -j DROP\n", r"dump line 2: unknown rule command"),
    ("*filter\nhello\n", r"dump line 2: unexpected line"),
    ("*filter\n-A INPUT -m comment --comment \"open -j DROP\n", r"dump line 2: unterminated quoted word"),
])
def test_bad_dump_names_line(text, message):
    with pytest.raises(ParseError, match=message):
        _iptables.parse_save(text.replace("-j DROP\n", "-p udp --dport 53 -j DROP\n"), source="dump")


def test_ss_listeners_real():
    sockets = _iptables.parse_ss(load("local-netns-ss-lnup-dnsmasq.txt"), "udp")
    assert sockets == [{"protocol": "udp", "address": "169.254.20.10", "port": 53, "interface": None, "wildcard": False,
                        "processes": [{"name": "dnsmasq", "pid": 11296}]}]
    assert _iptables.parse_ss(load("local-netns-ss-lnup-empty.txt"), "udp") == []
    resolved = _iptables.parse_ss(load("github-ss-aunp-resolved.txt"), "udp", port=53)
    assert [(s["address"], s["interface"]) for s in resolved] == [("127.0.0.54", None), ("127.0.0.53", "lo")]


def test_answering_wildcards():
    sockets = _iptables.parse_ss(load("local-netns-ss-lnup-dnsmasq.txt"), "udp")
    assert _iptables.answering(sockets, "169.254.20.10")
    assert not _iptables.answering(sockets, "10.96.0.10")
    assert not _iptables.answering(sockets, "169.254.20.10", protocol="tcp")
    wildcard = [{"protocol": "udp", "address": "0.0.0.0", "port": 53, "wildcard": True}]
    assert _iptables.answering(wildcard, "10.96.0.10")
    assert not _iptables.answering(wildcard, "fd00::a")


def test_ss_bad_line():
    with pytest.raises(ParseError, match=r"ss line 2: local address has no numeric port"):
        _iptables.parse_ss("State Recv-Q Send-Q Local Address:Port Peer Address:Port\nUNCONN 0 0 1.2.3.4:domain 0.0.0.0:*\n", "udp")
