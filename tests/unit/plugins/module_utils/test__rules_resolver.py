# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""RES001, RES002 and RES003 through the finding engine, on facts built by the real parsers from
the captured files in fixtures/resolver (SOURCES.md)."""

from __future__ import annotations

import pathlib

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings, _kernel, _resolver

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "resolver"


def resolv_file(name, path):
    parsed = _resolver.parse_resolv_conf((FIXTURES / name).read_text(), name)
    realpath = _resolver.SYSTEMD_STUB if "stub" in name else path
    return dict(parsed, path=path, realpath=realpath, available=True, reason=None)


def resolver_facts(node, kubelet_config=None, kubelet_file=None, upstream=None, libc="glibc", present=True):
    resolv = resolv_file(node, "/etc/resolv.conf")
    stub = {"kind": _resolver.stub_kind(resolv["realpath"], resolv["nameservers"]), "upstream": {"path": None, "available": False, "nameservers": []}}
    if upstream:
        stub["upstream"] = resolv_file(upstream, _resolver.SYSTEMD_UPSTREAM)
    config = _resolver.parse_kubelet_config((FIXTURES / kubelet_config).read_text(), kubelet_config) if kubelet_config else None
    settings = _resolver.kubelet_settings(config, config_source="/var/lib/kubelet/config.yaml")
    if settings["resolv_conf"] == "/etc/resolv.conf":
        handed = resolv
    elif kubelet_file:
        handed = resolv_file(kubelet_file, settings["resolv_conf"])
    else:
        handed = {"path": settings["resolv_conf"], "available": False, "reason": "not found: %s" % settings["resolv_conf"], "nameservers": []}
    kubelet = {"present": present, "cluster_dns": settings["cluster_dns"], "resolv_conf": settings["resolv_conf"],
               "sources": settings["sources"], "resolv_conf_file": handed if present else None,
               "resolv_conf_nameservers": list(handed["nameservers"]) if present else []}
    return {"clusterdns_resolver": {"available": True, "reason": None, "resolv_conf": resolv, "stub": stub, "kubelet": kubelet,
                                    "libc": {"name": libc, "version": None}}}


def run(facts, rule):
    result = _findings.evaluate({"node1": facts})
    check = next(c for c in result["checks"] if c["id"] == rule)
    return check, [f for f in result["findings"] if f["id"] == rule]


# RES001 -------------------------------------------------------------------------------------

def test_res001_kubeadm_default_on_systemd_resolved_node():
    facts = resolver_facts("github-ubuntu-stub-resolv.conf", "github-kubeadm-1.32-config.yaml", upstream="github-ubuntu-upstream-resolv.conf")
    check, (finding,) = run(facts, "RES001")
    assert check["status"] == "fail" and finding["severity"] == "critical"
    evidence = finding["evidence"]
    assert (evidence["kubelet_resolv_conf"], evidence["loopback_nameservers"], evidence["set_by"]) == ("/etc/resolv.conf", ["127.0.0.53"], "kubelet default")
    assert (evidence["stub"], evidence["upstream_resolv_conf"], evidence["upstream_nameservers"]) == (
        "systemd-resolved", "/run/systemd/resolve/resolv.conf", ["8.8.8.8", "8.8.4.4"])
    assert finding["fix"]["variables"]["resolver_kubelet_resolv_conf"] == "/run/systemd/resolve/resolv.conf"
    assert finding["fix"]["command"] == "ansible-playbook clusterdns.doctor.remediate --tags resolver --limit node1"


def test_res001_passes_when_kubelet_uses_the_upstream_file():
    facts = resolver_facts("github-ubuntu-stub-resolv.conf", "github-kubeadm-resolvconf-config.yaml",
                           kubelet_file="github-ubuntu-upstream-resolv.conf", upstream="github-ubuntu-upstream-resolv.conf")
    assert run(facts, "RES001") == ({"id": "RES001", "scope": "node", "host": "node1", "status": "pass", "reason": None}, [])


def test_res001_local_dnsmasq_without_known_upstream_has_no_fix_variable():
    facts = resolver_facts("github-coredns-1712-inline-comments.conf", "github-kubeadm-1.32-config.yaml")
    check, (finding,) = run(facts, "RES001")
    assert finding["evidence"]["loopback_nameservers"] == ["127.0.0.1"]
    assert "resolver_kubelet_resolv_conf" not in finding["fix"]["variables"]
    assert "a file that lists the real upstream servers" in finding["detail"]


def test_res001_skipped_without_kubelet():
    check, findings = run(resolver_facts("github-ubuntu-stub-resolv.conf", present=False), "RES001")
    assert (check["status"], check["reason"], findings) == ("skip", "no kubelet on this node", [])


def test_res001_skipped_when_kubelet_file_is_missing():
    facts = resolver_facts("github-ubuntu-stub-resolv.conf", "github-kubeadm-resolvconf-config.yaml")
    check = run(facts, "RES001")[0]
    assert check["status"] == "skip"
    assert "(/run/systemd/resolve/resolv.conf) could not be read: not found" in check["reason"]


# RES002 -------------------------------------------------------------------------------------

# A node exposed to the DNAT race (KRN001): kernel 4.19 lacks the 5.0 and 5.6 conntrack fixes.
EXPOSED_KERNEL = {"available": True, "release": "4.19.91-25.1.al7.x86_64", "version": [4, 19, 91], "exposure": _kernel.exposure([4, 19, 91])}
FIXED_KERNEL = {"available": True, "release": "6.18.44-fc-v1045", "version": [6, 18, 44], "exposure": _kernel.exposure([6, 18, 44])}


def exposed(facts):
    facts["clusterdns_kernel"] = EXPOSED_KERNEL
    return facts


def test_res002_glibc_defaults_on_a_real_node():
    check, (finding,) = run(exposed(resolver_facts("github-aks-node-resolv.conf")), "RES002")
    assert finding["severity"] == "warning"
    assert finding["evidence"]["exposed_by"] == ["kernel 4.19.91-25.1.al7.x86_64 lacks nf-nat-same-origin, nf-clash-allow-insert"]
    assert (finding["evidence"]["path"], finding["evidence"]["timeout"], finding["evidence"]["attempts"]) == ("/etc/resolv.conf", 5, 2)
    assert finding["evidence"]["nameservers"] == ["168.63.129.16"]


def test_res002_passes_with_short_timeout_or_reopen():
    assert run(exposed(resolver_facts("github-eksctl-550-pod-dnsconfig.conf")), "RES002")[0]["status"] == "pass"
    facts = exposed(resolver_facts("github-aks-node-resolv.conf"))
    facts["clusterdns_resolver"]["resolv_conf"]["options"] = {"single-request-reopen": True}
    assert run(facts, "RES002")[0]["status"] == "pass"


def test_res002_loopback_stub_is_not_exposed_but_the_kubelet_file_is():
    facts = exposed(resolver_facts("github-ubuntu-stub-resolv.conf", "github-kubeadm-resolvconf-config.yaml",
                                   kubelet_file="github-ubuntu-upstream-resolv.conf", upstream="github-ubuntu-upstream-resolv.conf"))
    check, (finding,) = run(facts, "RES002")
    assert (finding["evidence"]["path"], finding["evidence"]["used_by"]) == ("/run/systemd/resolve/resolv.conf", "pods with dnsPolicy Default")


def test_res002_not_exposed_node_passes_and_unknown_exposure_skips():
    facts = resolver_facts("github-aks-node-resolv.conf")
    check = run(facts, "RES002")[0]
    assert check["status"] == "skip" and "exposure unknown" in check["reason"]
    facts["clusterdns_kernel"] = FIXED_KERNEL
    facts["clusterdns_conntrack"] = {"available": True, "stats": {"insert_failed": 0, "drop": 0}}
    assert run(facts, "RES002")[0]["status"] == "pass"
    facts["clusterdns_conntrack"] = {"available": True, "stats": {"insert_failed": 7, "drop": 7}}
    check, (finding,) = run(facts, "RES002")
    assert finding["evidence"]["exposed_by"] == ["conntrack insert_failed+drop = 14 since boot"]


def test_res002_skipped_on_musl():
    check = run(resolver_facts("github-aks-node-resolv.conf", libc="musl"), "RES002")[0]
    assert check["status"] == "skip" and check["reason"].startswith("musl libc")


# RES003 -------------------------------------------------------------------------------------

def test_res003_too_many_nameservers_in_the_file_kubelet_hands_out():
    facts = resolver_facts("github-ubuntu-stub-resolv.conf", "github-kubeadm-resolvconf-config.yaml",
                           kubelet_file="github-rke2-upstream-too-many.conf")
    check, (finding,) = run(facts, "RES003")
    assert finding["severity"] == "error"
    assert finding["evidence"]["path"] == "/run/systemd/resolve/resolv.conf"
    assert finding["evidence"]["ignored_nameservers"] == ["8.8.4.4"]
    assert [(p["lineno"], p["kind"]) for p in finding["evidence"]["problems"]] == [(21, "nameserver_limit")]
    assert "line 21: more than 3 nameservers" in finding["detail"]


def test_res003_junk_nameserver_lines_on_the_node():
    check, (finding,) = run(resolver_facts("github-coredns-1712-inline-comments.conf"), "RES003")
    assert finding["severity"] == "error" and [p["lineno"] for p in finding["evidence"]["problems"]] == [2, 3]


def test_res003_only_ignored_options_is_a_warning():
    facts = resolver_facts("github-aks-node-resolv.conf")
    facts["clusterdns_resolver"]["resolv_conf"]["problems"] = _resolver.parse_resolv_conf("options timeout:2 rotat\n", "t")["problems"]
    assert run(facts, "RES003")[1][0]["severity"] == "warning"


def test_res003_passes_on_clean_files():
    for name in ("github-ubuntu-stub-resolv.conf", "github-aks-node-resolv.conf", "local-debian12-resolv.conf"):
        assert run(resolver_facts(name), "RES003") == ({"id": "RES003", "scope": "node", "host": "node1", "status": "pass", "reason": None}, [])


def test_all_three_skip_when_resolv_conf_is_unreadable():
    facts = {"clusterdns_resolver": {"available": False, "reason": "not found: /etc/resolv.conf"}}
    result = _findings.evaluate({"node1": facts})
    for rule in ("RES001", "RES002", "RES003"):
        check = next(c for c in result["checks"] if c["id"] == rule)
        assert check["status"] == "skip" and "not found: /etc/resolv.conf" in check["reason"]


def test_partial_resolver_facts_skip_instead_of_crashing():
    # Other rules' tests (and older fact sources) carry only clusterdns_resolver.kubelet.cluster_dns.
    result = _findings.evaluate({"node1": {"clusterdns_resolver": {"kubelet": {"cluster_dns": ["10.43.0.10"]}}}})
    checks = {c["id"]: c for c in result["checks"] if c["id"].startswith("RES")}
    assert checks["RES001"]["reason"] == "no kubelet on this node"
    assert checks["RES002"]["status"] == checks["RES003"]["status"] == "skip"
    assert "no parsed resolv_conf" in checks["RES003"]["reason"]
