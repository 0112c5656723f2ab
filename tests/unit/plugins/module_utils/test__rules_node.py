# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CT001, CT002, KRN001 and NODE001 through the finding engine, on facts made by the real parsers
from captured fixtures (fixtures/conntrack, fixtures/kernel, fixtures/iptables SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _conntrack, _findings, _iptables, _kernel

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def conntrack(count, maximum=262144, stat="stat-6.18-build-machine.txt", dmesg="dmesg-build-machine.txt", delta=None):
    stats = _conntrack.parse_stat_file((FIXTURES / "conntrack" / stat).read_text())["counters"] if stat else None
    log = dict(_conntrack.table_full_events((FIXTURES / "conntrack" / dmesg).read_text()), available=True, reason=None)
    return {"available": True, "reason": None, "count": count, "max": maximum, "buckets": 65536,
            "usage_ratio": _conntrack.usage_ratio(count, maximum), "stats": stats, "stats_source": "proc" if stat else None,
            "stats_delta": delta, "interval": 5.0 if delta is not None else 0.0, "kernel_log": log}


def kernel(release, snmp="snmp-build-machine.txt", udp_delta=None):
    version = _kernel.parse_release(release)
    udp = _kernel.parse_snmp((FIXTURES / "kernel" / snmp).read_text())["Udp"]
    return {"available": True, "release": release, "version": version, "exposure": _kernel.exposure(version),
            "sysctls": {"net/core/rmem_default": "212992", "net/core/rmem_max": "212992"}, "udp": udp, "udp6": None,
            "udp_delta": udp_delta, "interval": 10.0 if udp_delta else 0.0}


def kube_proxy_iptables(name="github-kubeadm-noendpoints.txt"):
    text = (FIXTURES / "iptables" / name).read_text()
    facts = _iptables.merge([_iptables.parse_save(text, name, cluster_ips=["10.96.0.10"])], backend="nft", version="1.8.9")
    facts.update(available=True, reason=None)
    return facts


def run(facts, rule):
    result = _findings.evaluate({"node1": facts})
    check = next(c for c in result["checks"] if c["id"] == rule)
    return check, [f for f in result["findings"] if f["id"] == rule]


# CT001 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("count, severity", [(262144, "error"), (250000, "error"), (215000, "warning"), (1034, None)])
def test_ct001_thresholds(count, severity):
    check, findings = run({"clusterdns_conntrack": conntrack(count)}, "CT001")
    assert [f["severity"] for f in findings] == ([severity] if severity else [])
    assert check["status"] == ("fail" if severity else "pass")
    if findings:
        assert findings[0]["evidence"]["count"] == count and findings[0]["evidence"]["max"] == 262144
        assert findings[0]["fix"]["command"] == "ansible-playbook clusterdns.doctor.remediate --tags conntrack --limit node1"


def test_ct001_table_full_in_kernel_log_is_an_error_even_when_the_table_drained():
    check, findings = run({"clusterdns_conntrack": conntrack(1034, dmesg="dmesg-kubernetes-18604.txt")}, "CT001")
    assert [f["severity"] for f in findings] == ["error"]
    evidence = findings[0]["evidence"]
    assert evidence["table_full_events"] == 14 and evidence["log_last"] == "1454509.461217"
    assert "table full, dropping packet" in evidence["log_sample"][-1]


def test_ct001_options_change_thresholds():
    result = _findings.evaluate({"n": {"clusterdns_conntrack": conntrack(150000)}}, options={"conntrack_usage_warning": 0.5})
    assert [f["id"] for f in result["findings"]] == ["CT001"]


def test_ct001_skipped_without_conntrack():
    check, findings = run({"clusterdns_conntrack": {"available": False, "reason": "nf_conntrack is not loaded"}}, "CT001")
    assert check["status"] == "skip" and "nf_conntrack is not loaded" in check["reason"] and not findings


# CT002 ----------------------------------------------------------------------------------------

def test_ct002_counters_since_boot_are_a_warning():
    check, findings = run({"clusterdns_conntrack": conntrack(10, stat="stat-4.x-netdata-161.txt")}, "CT002")
    assert [f["severity"] for f in findings] == ["warning"]
    assert findings[0]["evidence"]["since_boot"]["drop"] == 0x53A + 0x8
    assert "since boot" in findings[0]["detail"]


def test_ct002_rising_counters_are_an_error_and_flat_ones_pass():
    rising = conntrack(10, stat="stat-4.x-netdata-161.txt", delta={"insert_failed": 3, "drop": 3, "early_drop": 0})
    check, findings = run({"clusterdns_conntrack": rising}, "CT002")
    assert [f["severity"] for f in findings] == ["error"] and findings[0]["evidence"]["increase"]["insert_failed"] == 3
    flat = conntrack(10, stat="stat-4.x-netdata-161.txt", delta={"insert_failed": 0, "drop": 0, "early_drop": 0})
    check, findings = run({"clusterdns_conntrack": flat}, "CT002")
    assert check["status"] == "pass" and not findings


def test_ct002_clean_counters_pass_and_missing_counters_skip():
    assert run({"clusterdns_conntrack": conntrack(10)}, "CT002")[0]["status"] == "pass"
    check = run({"clusterdns_conntrack": conntrack(10, stat=None)}, "CT002")[0]
    assert check["status"] == "skip" and "conntrack -S" in check["reason"]


# KRN001 ---------------------------------------------------------------------------------------

def test_krn001_old_kernel_with_kube_proxy_dnat():
    check, findings = run({"clusterdns_kernel": kernel("4.19.91-25.1.al7.x86_64"), "clusterdns_iptables": kube_proxy_iptables()}, "KRN001")
    assert check["status"] == "fail"
    evidence = findings[0]["evidence"]
    assert evidence["dns_path"] == "iptables"
    assert [f["fixed_in"] for f in evidence["missing_fixes"]] == ["5.0.0", "5.6.0"]


def test_krn001_nodelocal_dnscache_takes_dns_out_of_conntrack():
    facts = {"clusterdns_kernel": kernel("4.19.91-25.1.al7.x86_64"), "clusterdns_iptables": kube_proxy_iptables("local-netns-kubeproxy-nft.txt")}
    assert facts["clusterdns_iptables"]["nodelocal"]["present"]
    check, findings = run(facts, "KRN001")
    assert check["status"] == "pass" and not findings


def test_krn001_new_kernel_passes_and_no_dnat_skips():
    assert run({"clusterdns_kernel": kernel("6.18.44-fc-v1045"), "clusterdns_iptables": kube_proxy_iptables()}, "KRN001")[0]["status"] == "pass"
    empty = _iptables.merge([_iptables.parse_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "empty")], backend="nft", version="1.8.9")
    empty.update(available=True, reason=None)
    check = run({"clusterdns_kernel": kernel("3.10.0-1160.el7.x86_64"), "clusterdns_iptables": empty}, "KRN001")[0]
    assert check["status"] == "skip" and "no kube-proxy DNAT" in check["reason"]


def test_krn001_unknown_path_still_reports_the_kernel():
    check, findings = run({"clusterdns_kernel": kernel("3.10.0-1160.el7.x86_64")}, "KRN001")
    assert check["status"] == "fail" and len(findings[0]["evidence"]["missing_fixes"]) == 3
    assert findings[0]["evidence"]["dns_path"].startswith("unknown")


# NODE001 --------------------------------------------------------------------------------------

def test_node001_receive_buffer_drops_of_a_real_namespace():
    check, findings = run({"clusterdns_kernel": kernel("6.18.44-fc-v1045", snmp="snmp-rcvbuf-netns.txt")}, "NODE001")
    assert check["status"] == "fail"
    assert findings[0]["evidence"]["udp"]["RcvbufErrors"] == 1991 and findings[0]["evidence"]["window"] == "since boot"
    assert "1991 for a full receive buffer" in findings[0]["detail"]


def test_node001_uses_the_increase_when_sampled():
    quiet = kernel("6.18.44-fc-v1045", snmp="snmp-rcvbuf-netns.txt", udp_delta={"udp": {"InErrors": 0, "RcvbufErrors": 0}, "udp6": {}})
    assert run({"clusterdns_kernel": quiet}, "NODE001")[0]["status"] == "pass"
    busy = kernel("6.18.44-fc-v1045", udp_delta={"udp": {"InErrors": 40, "RcvbufErrors": 40}, "udp6": {}})
    check, findings = run({"clusterdns_kernel": busy}, "NODE001")
    assert findings[0]["evidence"]["window"] == "in 10.0 s"


def test_node001_clean_counters_pass():
    assert run({"clusterdns_kernel": kernel("6.18.44-fc-v1045")}, "NODE001")[0]["status"] == "pass"


def test_ct001_table_full_before_the_limit_was_raised_is_history():
    ct = conntrack(1034, dmesg="dmesg-kubernetes-18604.txt")
    ct["kernel_log"].update(before_remediation=True, last_age_seconds=420.0)
    check, findings = run({"clusterdns_conntrack": ct}, "CT001")
    assert [f["severity"] for f in findings] == ["info"] and "before the limit was raised" in findings[0]["detail"]
