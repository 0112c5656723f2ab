# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ipvs_facts as a process: bundles made of real ipvsadm and /proc/net/ip_vs outputs from public
GitHub issues (module_utils/fixtures/ipvs/SOURCES.md), and this machine, which has no IPVS."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.ipvs_facts"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures" / "ipvs"


def run_module(tmp_path, args):
    return run_collection_module(MODULE, tmp_path, args)[:2]


def make_bundle(tmp_path, commands=None, proc=None, sysctls=None):
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    for name, fixture in (commands or {}).items():
        shutil.copy(FIXTURES / fixture, root / "commands" / (name + ".txt"))
    if proc:
        (root / "proc" / "net").mkdir(parents=True)
        shutil.copy(FIXTURES / proc, root / "proc" / "net" / "ip_vs")
    for name, value in (sysctls or {}).items():
        path = root / "proc" / "sys" / "net" / "ipv4" / "vs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("%d\n" % value)
    return root


def test_bundle_ipvsadm_with_timeout_and_connections(tmp_path):
    root = make_bundle(tmp_path, {"ipvsadm-Ln": "github-opsnull-251-ln.txt", "ipvsadm-timeout": "github-lvs-timeout.txt",
                                  "ipvsadm-Lnc": "github-lvs-lnc.txt"}, sysctls={"conn_reuse_mode": 1, "expire_nodest_conn": 0})
    rc, result = run_module(tmp_path, {"root": str(root), "cluster_ip": ["10.254.0.2"]})
    facts = result["ansible_facts"]["clusterdns_ipvs"]
    assert rc == 0 and (facts["available"], facts["source"], facts["version"]) == (True, "ipvsadm", "1.2.1")
    assert facts["timeout"] == {"tcp": 900, "tcpfin": 120, "udp": 300}
    assert facts["connections"] == {"available": True, "total": 5, "kube_dns": 0}
    assert facts["sysctls"] == {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": None, "conntrack": None}
    assert [(k["protocol"], k["present"]) for k in facts["kube_dns"]] == [("UDP", False), ("TCP", True)]


def test_bundle_proc_only(tmp_path):
    root = make_bundle(tmp_path, proc="github-lvs-notes-proc-ip_vs.txt")
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_ipvs"]
    assert rc == 0 and facts["source"] == "proc"
    assert [(r["address"], r["port"]) for r in facts["services"][0]["real_servers"]] == [("172.27.0.31", 80), ("172.27.0.30", 80)]
    assert facts["timeout"] is None


def test_bundle_without_ipvs(tmp_path):
    root = make_bundle(tmp_path)
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_ipvs"]
    assert rc == 0 and facts["available"] is False
    assert facts["reason"].startswith("IPVS not loaded: not found: %s" % (root / "proc" / "net" / "ip_vs"))
    assert "ipvsadm: not found: " in facts["reason"]


def test_saved_ipvsadm_error_means_unavailable(tmp_path):
    root = make_bundle(tmp_path)
    (root / "commands" / "ipvsadm-Ln.txt").write_text(
        "Can't initialize ipvs: Protocol not available\nAre you sure that IP Virtual Server is built in the kernel or as module?\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_ipvs"]
    assert rc == 0 and facts["available"] is False
    assert "ipvsadm: Can't initialize ipvs: Protocol not available Are you sure" in facts["reason"]


def test_unparsable_listing_fails_with_line(tmp_path):
    root = make_bundle(tmp_path)
    (root / "commands" / "ipvsadm-Ln.txt").write_text("IP Virtual Server version 1.2.1 (size=4096)\nUDP  10.96.0.10:53\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc == 1
    assert result["msg"] == ("cannot parse IPVS facts: %s line 2: virtual service without a scheduler (line: 'UDP  10.96.0.10:53'); "
                             "expected 'PROTO ADDRESS:PORT SCHEDULER [persistent N] [flags]'" % (root / "commands" / "ipvsadm-Ln.txt"))


@pytest.mark.skipif(os.path.exists("/proc/net/ip_vs"), reason="this machine has IPVS loaded")
def test_live_machine_without_ipvs(tmp_path):
    rc, result = run_module(tmp_path, {"cluster_ip": ["10.96.0.10"]})
    facts = result["ansible_facts"]["clusterdns_ipvs"]
    assert rc == 0 and facts["available"] is False
    assert facts["reason"] == "IPVS not loaded: not found: /proc/net/ip_vs"
    assert not os.path.exists("/proc/net/ip_vs"), "the module must not load ip_vs"
