# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""IPT001, IPT002, IPVS001, IPVS002 and NLD001 through the finding engine, on facts built by the
real parsers from the captured fixtures (fixtures/iptables and fixtures/ipvs SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings, _iptables, _ipvs

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def iptables_facts(name, cluster_ips=(), ss="local-netns-ss-lnup-dnsmasq.txt"):
    text = (FIXTURES / "iptables" / name).read_text()
    facts = _iptables.merge([_iptables.parse_save(text, name, cluster_ips=cluster_ips)], backend="nft", version="1.8.9")
    sockets = _iptables.parse_ss((FIXTURES / "iptables" / ss).read_text(), "udp", port=53) if ss else []
    facts.update(available=True, reason=None, cluster_ips=list(cluster_ips),
                 listeners={"available": ss is not None, "reason": None if ss else "ss not found on PATH", "sockets": sockets})
    return facts


def ipvs_facts(name, cluster_ips=()):
    table = _ipvs.parse_list((FIXTURES / "ipvs" / name).read_text(), name)
    return {"available": True, "reason": None, "services": table["services"], "cluster_ips": list(cluster_ips),
            "kube_dns": _ipvs.kube_dns(table["services"], cluster_ips)}


def run(facts, rule, cluster=None):
    result = _findings.evaluate({"node1": facts}, cluster=cluster)
    check = next(c for c in result["checks"] if c["id"] == rule)
    return check, [f for f in result["findings"] if f["id"] == rule]


def run_check(facts, rule, cluster=None):
    return run(facts, rule, cluster=cluster)[0]


# IPT001 ---------------------------------------------------------------------------------------

def test_ipt001_no_endpoints_reject_real_dump():
    check, findings = run({"clusterdns_iptables": iptables_facts("github-kubeadm-noendpoints.txt")}, "IPT001")
    assert check["status"] == "fail"
    assert [(f["evidence"]["chain"], f["evidence"]["position"], f["evidence"]["protocol"]) for f in findings] == [
        ("KUBE-SERVICES", 1, "udp"), ("KUBE-SERVICES", 2, "tcp")]
    assert "has no endpoints" in findings[0]["detail"]


def test_ipt001_passes_when_programmed():
    check, findings = run({"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt", ["10.96.0.10"])}, "IPT001")
    assert (check["status"], findings) == ("pass", [])


def test_ipt001_expected_ip_from_kubelet_not_programmed():
    facts = {"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt"),
             "clusterdns_resolver": {"kubelet": {"cluster_dns": ["10.43.0.10"]}}}
    check, findings = run(facts, "IPT001")
    assert check["status"] == "fail"
    assert findings[0]["evidence"]["cluster_ip"] == "10.43.0.10"
    assert "10.43.0.10" in findings[0]["detail"]


def test_ipt001_expected_ip_from_cluster_facts():
    cluster = {"kube_dns": {"cluster_ip": "10.96.0.10"}}
    check = run_check({"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt")}, "IPT001", cluster=cluster)
    assert check["status"] == "pass"


def test_ipt001_skips_without_name_or_ip():
    text = (FIXTURES / "iptables" / "local-netns-kubeproxy-nft.txt").read_text().replace("kube-system/kube-dns", "kube-system/rke2-coredns")
    facts = _iptables.merge([_iptables.parse_save(text)])
    facts.update(available=True, cluster_ips=[], listeners={"available": False, "reason": "x", "sockets": []})
    check, findings = run({"clusterdns_iptables": facts}, "IPT001")
    assert check["status"] == "skip" and "no kube-dns ClusterIP is known" in check["reason"] and findings == []


def test_ipt001_svc_chain_without_endpoints():
    text = "\n".join(line for line in (FIXTURES / "iptables" / "local-netns-kubeproxy-nft.txt").read_text().splitlines()
                     if "-j KUBE-SEP-" not in line or "TCOU7" not in line) + "\n"
    facts = _iptables.merge([_iptables.parse_save(text)])
    facts.update(available=True, cluster_ips=[], listeners={"available": True, "reason": None, "sockets": []})
    check, findings = run({"clusterdns_iptables": facts}, "IPT001")
    assert check["status"] == "fail"
    assert [f["evidence"]["svc_chain"] for f in findings] == ["KUBE-SVC-TCOU7JCQXEZGVUNU"]


# IPT002 ---------------------------------------------------------------------------------------

def test_ipt002_drop_rule_with_position():
    check, findings = run({"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt")}, "IPT002")
    assert check["status"] == "fail"
    (finding,) = findings
    assert finding["severity"] == "error"
    assert finding["evidence"] == {"family": "ipv4", "table": "filter", "chain": "FORWARD", "position": 2, "target": "DROP",
                                   "rule": "-A FORWARD -i cni0 -p udp -m multiport --dports 1:1024 -j DROP", "dns_ports": ["dports 1:1024"]}


def test_ipt002_passes_on_real_dump_with_portless_drops():
    # the 2018 dump has KUBE-FIREWALL and DOCKER-ISOLATION drops and the "has no endpoints" rejects: none is IPT002
    check, findings = run({"clusterdns_iptables": iptables_facts("github-kubeadm-noendpoints.txt")}, "IPT002")
    assert (check["status"], findings) == ("pass", [])


# IPVS001 --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "status"), [([4, 19, 0], "fail"), ([5, 8, 18], "fail"), ([5, 9, 0], "pass"), ([6, 18, 0], "pass")])
def test_ipvs001_kernel_versions(version, status):
    facts = {"clusterdns_ipvs": ipvs_facts("github-opsnull-251-ln.txt"), "clusterdns_kernel": {"version": version}}
    check, findings = run(facts, "IPVS001")
    assert check["status"] == status
    if status == "fail":
        assert findings[0]["evidence"]["kernel_version"] == version
        assert findings[0]["evidence"]["mode_seen_in"] == "IPVS virtual services"
        assert findings[0]["severity"] == "error"


def test_ipvs001_old_kernel_with_the_ipvs_role_sysctls_is_info():
    ipvs = ipvs_facts("github-opsnull-251-ln.txt")
    ipvs["sysctls"] = {"conn_reuse_mode": 0, "expire_nodest_conn": 1, "expire_quiescent_template": 1}
    check, findings = run({"clusterdns_ipvs": ipvs, "clusterdns_kernel": {"version": [4, 19, 0]}}, "IPVS001")
    assert [f["severity"] for f in findings] == ["info"] and "mitigated" in findings[0]["detail"]
    ipvs["sysctls"] = {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0}
    check, findings = run({"clusterdns_ipvs": ipvs, "clusterdns_kernel": {"version": [4, 19, 0]}}, "IPVS001")
    assert [f["severity"] for f in findings] == ["error"]


def test_ipvs001_iptables_mode_on_old_kernel_passes():
    facts = {"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt"), "clusterdns_kernel": {"version": [4, 19, 0]}}
    check = run_check(facts, "IPVS001")
    assert check["status"] == "pass"


def test_ipvs001_skips_without_kernel_facts():
    check = run_check({"clusterdns_ipvs": ipvs_facts("github-opsnull-251-ln.txt")}, "IPVS001")
    assert check["status"] == "skip" and "clusterdns_kernel not gathered" in check["reason"]


# IPVS002 --------------------------------------------------------------------------------------

def test_ipvs002_kube_dns_without_real_servers():
    check, findings = run({"clusterdns_ipvs": ipvs_facts("github-k8s-ipvs-readme-noservers.txt", ["10.0.0.10"])}, "IPVS002")
    assert check["status"] == "fail"
    assert sorted(f["detail"] for f in findings) == ["IPVS virtual service TCP 10.0.0.10:53 has no real servers",
                                                     "IPVS virtual service UDP 10.0.0.10:53 has no real servers"]


def test_ipvs002_missing_udp_service():
    check, findings = run({"clusterdns_ipvs": ipvs_facts("github-opsnull-251-ln.txt", ["10.254.0.2"])}, "IPVS002")
    assert check["status"] == "fail"
    assert [f["detail"] for f in findings] == ["IPVS has no virtual service for UDP 10.254.0.2:53"]


def test_ipvs002_weight_zero():
    facts = ipvs_facts("github-opsnull-251-ln.txt", ["10.254.0.2"])
    tcp = next(s for s in facts["services"] if s["address"] == "10.254.0.2")
    udp = dict(tcp, protocol="UDP", real_servers=[dict(r) for r in tcp["real_servers"]])
    facts["services"].append(udp)
    for server in udp["real_servers"]:
        server["weight"] = 0
    check, findings = run({"clusterdns_ipvs": facts}, "IPVS002")
    assert [f["detail"] for f in findings] == ["IPVS virtual service UDP 10.254.0.2:53 has only real servers at weight 0"]


def test_ipvs002_healthy_and_not_applicable():
    facts = ipvs_facts("github-kube-router-160-stats.txt", ["10.3.0.10"])
    tcp = facts["services"][1]
    facts["services"].append(dict(tcp, protocol="UDP"))
    check, findings = run({"clusterdns_ipvs": facts}, "IPVS002")
    assert (check["status"], findings) == ("pass", [])
    unavailable = {"available": False, "reason": "IPVS not loaded: not found: /proc/net/ip_vs"}
    check = run_check({"clusterdns_ipvs": unavailable}, "IPVS002")
    assert check["status"] == "skip" and "IPVS not loaded" in check["reason"]


def test_ipvs002_real_server_that_is_no_ready_coredns_endpoint():
    # kube-router's capture: kube-dns 10.3.0.10:53 TCP -> 10.2.66.2:53 (one real server)
    facts = ipvs_facts("github-kube-router-160-stats.txt", ["10.3.0.10"])
    tcp = facts["services"][1]
    facts["services"].append(dict(tcp, protocol="UDP"))
    server = tcp["real_servers"][0]["address"]
    matching = {"kube_dns": {"cluster_ip": "10.3.0.10", "endpoints": {"ready": [server], "not_ready": []}}}
    assert run({"clusterdns_ipvs": facts}, "IPVS002", cluster=matching)[0]["status"] == "pass"
    moved = {"kube_dns": {"cluster_ip": "10.3.0.10", "endpoints": {"ready": ["10.2.70.9"], "not_ready": [server]}}}
    check, findings = run({"clusterdns_ipvs": facts}, "IPVS002", cluster=moved)
    assert check["status"] == "fail"
    assert sorted(f["detail"] for f in findings) == [
        "IPVS virtual service %s 10.3.0.10:53 sends to %s:53, not a ready kube-dns endpoint (ready: 10.2.70.9)" % (proto, server)
        for proto in ("TCP", "UDP")]
    assert findings[0]["evidence"]["stale_real_servers"][0]["address"] == server
    unknown = {"kube_dns": {"cluster_ip": "10.3.0.10"}}  # endpoints not readable: no opinion on staleness
    assert run({"clusterdns_ipvs": facts}, "IPVS002", cluster=unknown)[0]["status"] == "pass"


# NLD001 ---------------------------------------------------------------------------------------

def test_nld001_notrack_but_nothing_listens():
    facts = {"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt", ss="local-netns-ss-lnup-empty.txt")}
    check, findings = run(facts, "NLD001")
    assert check["status"] == "fail"
    (finding,) = findings
    assert finding["severity"] == "critical"
    assert finding["evidence"]["address"] == "169.254.20.10"
    assert [(r["table"], r["chain"], r["position"]) for r in finding["evidence"]["notrack_rules"]] == [
        ("raw", "PREROUTING", 1), ("raw", "PREROUTING", 2), ("raw", "OUTPUT", 1)]


def test_nld001_passes_when_listener_answers():
    check, findings = run({"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt")}, "NLD001")
    assert (check["status"], findings) == ("pass", [])


def test_nld001_no_notrack_rules_pass_and_unknown_listeners_skip():
    check = run_check({"clusterdns_iptables": iptables_facts("github-kubeadm-noendpoints.txt", ss=None)}, "NLD001")
    assert check["status"] == "pass"
    check = run_check({"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt", ss=None)}, "NLD001")
    assert check["status"] == "skip" and "ss not found" in check["reason"]


def test_ipt002_cites_the_kernel_drop_trace_when_there_is_one():
    import json
    trace = json.loads((FIXTURES / "droptrace" / "module-result-netfilter-drop.json").read_text())
    trace = trace.get("ansible_facts", {}).get("clusterdns_drop_trace", trace)
    facts = {"clusterdns_iptables": iptables_facts("local-netns-kubeproxy-nft.txt"), "clusterdns_drop_trace": trace}
    facts["clusterdns_iptables"]["dns_blocks"] = [{"family": "ipv4", "table": "filter", "chain": "INPUT", "position": 1,
                                                   "rule": "-A INPUT -p udp -m udp --dport 53 -j DROP", "target": "DROP", "dns_ports": [53]}]
    check, findings = run(facts, "IPT002")
    assert findings[0]["evidence"]["kernel_drops"]["count"] > 0
    assert "NETFILTER_DROP" in findings[0]["detail"] and "kernel dropped" in findings[0]["detail"]
    clean = json.loads((FIXTURES / "droptrace" / "module-result-clean.json").read_text())
    facts["clusterdns_drop_trace"] = clean.get("ansible_facts", {}).get("clusterdns_drop_trace", clean)
    check, findings = run(facts, "IPT002")
    assert "kernel_drops" not in findings[0]["evidence"]
