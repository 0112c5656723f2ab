# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ipvsadm and /proc/net/ip_vs parsers on real outputs from public GitHub issues (fixtures/ipvs/SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _ipvs
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "ipvs"


def load(name):
    return (FIXTURES / name).read_text()


def test_kube_proxy_listing_with_kube_dns_tcp():
    table = _ipvs.parse_list(load("github-opsnull-251-ln.txt"))
    assert (table["version"], table["size"], table["stats"]) == ("1.2.1", 4096, False)
    assert len(table["services"]) == 7
    api = next(s for s in table["services"] if s["port"] == 443 and s["address"] == "10.254.0.1")
    assert (api["scheduler"], api["persistent"], api["flags"]) == ("rr", 10800, [])
    (udp, tcp) = _ipvs.kube_dns(table["services"], ["10.254.0.2"])
    assert (udp["protocol"], udp["present"]) == ("UDP", False)
    assert tcp["present"] and [(r["address"], r["port"], r["forward"], r["weight"], r["active"], r["inactive"])
                               for r in tcp["service"]["real_servers"]] == [("10.253.7.5", 53, "Masq", 1, 0, 0), ("10.253.35.5", 53, "Masq", 1, 0, 0)]


def test_kube_dns_services_without_real_servers():
    table = _ipvs.parse_list(load("github-k8s-ipvs-readme-noservers.txt"))
    found = _ipvs.kube_dns(table["services"], ["10.0.0.10"])
    assert [(f["protocol"], f["present"], f["service"]["real_servers"]) for f in found] == [("UDP", True, []), ("TCP", True, [])]


def test_stats_listing_and_merge():
    stats = _ipvs.parse_list(load("github-kube-router-160-stats.txt"))
    assert stats["stats"] is True
    dns = stats["services"][1]
    assert (dns["address"], dns["port"], dns["scheduler"]) == ("10.3.0.10", 53, None)
    assert dns["stats"] == {"conns": 0, "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0}
    listing = [{"protocol": "TCP", "address": "10.3.0.10", "port": 53, "fwmark": None, "stats": None,
                "real_servers": [{"address": "10.2.0.3", "port": 53, "stats": None}]}]
    _ipvs.merge_stats(listing, stats["services"])
    assert listing[0]["real_servers"][0]["stats"]["conns"] == 0


def test_proc_hex_equals_ipvsadm_view():
    proc = _ipvs.parse_list(load("github-lvs-notes-proc-ip_vs.txt"), hexadecimal=True)
    adm = _ipvs.parse_list(load("github-lvs-notes-ln-fwm.txt"))
    assert proc["services"][0]["fwmark"] == adm["services"][0]["fwmark"] == 1
    assert sorted((r["address"], r["port"]) for r in proc["services"][0]["real_servers"]) == \
        sorted((r["address"], r["port"]) for r in adm["services"][0]["real_servers"]) == [("172.27.0.30", 80), ("172.27.0.31", 80)]


def test_timeout_and_connections():
    assert _ipvs.parse_timeout(load("github-lvs-timeout.txt")) == {"tcp": 900, "tcpfin": 120, "udp": 300}
    entries = _ipvs.parse_connections(load("github-lvs-lnc.txt"))
    assert len(entries) == 5
    assert entries[0] == {"protocol": "TCP", "expire": "01:14", "state": "TIME_WAIT", "virtual": "192.168.146.100:80", "destination": "192.168.177.20:80"}


def test_counter_suffixes():
    text = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n" \
           "UDP  10.96.0.10:53                  12K     3M       3M     200M     300M\n"
    assert _ipvs.parse_list(text)["services"][0]["stats"]["inpkts"] == 3_000_000


@pytest.mark.parametrize(("text", "message"), [
    ("Prot LocalAddress:Port Scheduler Flags\n", r"no 'IP Virtual Server version' header"),
    ("IP Virtual Server version 1.2.1 (size=4096)\n  -> 10.0.0.1:53 Masq 1 0 0\n", r"x line 2: real server before any virtual service"),
    ("IP Virtual Server version 1.2.1 (size=4096)\nUDP  kube-dns.example:domain rr\n", r"x line 2: port is not a number"),
    ("IP Virtual Server version 1.2.1 (size=4096)\nICMP 10.0.0.1:0 rr\n", r"x line 2: unknown line"),
    ("IP Virtual Server version 1.2.1 (size=4096)\nUDP  10.0.0.1:53 rr\n  -> 10.0.0.2:53 Masq\n", r"x line 3: too few columns for a real server"),
])
def test_bad_listing_names_line(text, message):
    with pytest.raises(ParseError, match=message):
        _ipvs.parse_list(text, source="x")
