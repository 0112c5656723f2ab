# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""iptables_facts as a process, on bundles made of the real captured outputs in
module_utils/fixtures/iptables (see SOURCES.md there), and live on this machine."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.iptables_facts"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures" / "iptables"


def run_module(tmp_path, args):
    return run_collection_module(MODULE, tmp_path, args)[:2]


def bundle(tmp_path, files):
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    for name, fixture in files.items():
        shutil.copy(FIXTURES / fixture, root / "commands" / (name + ".txt"))
    return root


def test_bundle_kube_proxy_node(tmp_path):
    root = bundle(tmp_path, {"iptables-version": "local-iptables-version.txt", "iptables-save": "local-netns-kubeproxy-nft.txt",
                             "ss-lnup": "local-netns-ss-lnup-dnsmasq.txt", "ss-lntp": "local-netns-ss-lntp-dnsmasq.txt"})
    rc, result = run_module(tmp_path, {"root": str(root), "cluster_ip": ["10.96.0.10"]})
    assert rc == 0 and result["changed"] is False
    facts = result["ansible_facts"]["clusterdns_iptables"]
    assert (facts["available"], facts["backend"], facts["version"]) == (True, "nft", "1.8.9")
    assert facts["sources"]["ip6tables-save"]["available"] is False
    assert facts["sources"]["ip6tables-save"]["reason"].startswith("not found: ")
    assert facts["rule_count"] == {"ipv4": {"raw": 4, "nat": 24, "filter": 6}}
    assert facts["kube_proxy"] == {"present": True, "mode": "iptables"}
    assert [(s["protocol"], [e["ip"] for e in s["endpoints"]]) for s in facts["services"]] == [
        ("udp", ["10.244.0.2", "10.244.0.3"]), ("tcp", ["10.244.0.2", "10.244.0.3"])]
    assert [(b["chain"], b["position"]) for b in facts["dns_blocks"]] == [("FORWARD", 2)]
    assert facts["nodelocal"]["addresses"] == ["169.254.20.10"]
    assert [(s["protocol"], s["address"]) for s in facts["listeners"]["sockets"]] == [("udp", "169.254.20.10"), ("tcp", "169.254.20.10")]


def test_bundle_without_dumps_is_unavailable(tmp_path):
    root = bundle(tmp_path, {})
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_iptables"]
    assert rc == 0 and facts["available"] is False
    assert facts["reason"] == "not found: %s" % (root / "commands" / "iptables-save.txt")
    assert facts["listeners"]["available"] is False


def test_unparsable_dump_fails_naming_file_and_line(tmp_path):
    root = bundle(tmp_path, {})
    (root / "commands" / "iptables-save.txt").write_text("*filter\n:INPUT ACCEPT [0:0]\nWarning: iptables-legacy tables present\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc == 1 and result["failed"]
    assert result["msg"].startswith("cannot parse iptables facts: %s line 3: unexpected line" % (root / "commands" / "iptables-save.txt"))
    assert result["lineno"] == 3


def test_bad_service_name(tmp_path):
    rc, result = run_module(tmp_path, {"root": str(tmp_path), "service_name": "kube-dns"})
    assert rc == 1 and "option service_name must be namespace/name" in result["msg"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables-save"), reason="live iptables-save needs root and iptables")
def test_live_node_reads_real_tools(tmp_path):
    rc, result = run_module(tmp_path, {})
    facts = result["ansible_facts"]["clusterdns_iptables"]
    assert rc == 0 and facts["available"] is True
    assert facts["backend"] in ("nft", "legacy")
    assert facts["listeners"]["available"] is True
