# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Netfilter and IPVS rules: IPT001, IPT002, IPVS001, IPVS002 and the node side of NLD001.
# Input facts: clusterdns_iptables and clusterdns_ipvs (this collection's iptables_facts and
# ipvs_facts), clusterdns_kernel (``version`` = [major, minor, patch]) and, when present, the
# kubelet clusterDNS of clusterdns_resolver and the kube-dns Service of the cluster facts. Those
# last two are owned by other modules and read defensively: a missing key means "unknown".

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._droptrace import drop_evidence
from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, hit, node_rule
from ansible_collections.clusterdns.doctor.plugins.module_utils._iptables import answering
from ansible_collections.clusterdns.doctor.plugins.module_utils._ipvs import kube_dns

IPVS_FIXED_KERNEL = (5, 9)


def _dig(data, *path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _as_list(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, str)]
    return []


def kube_dns_ips(facts, ctx):
    """The kube-dns ClusterIPs known for a node, first source first: the facts modules'
    ``cluster_ip`` option, the cluster facts' kube-dns Service, then kubelet clusterDNS."""
    ips = []
    candidates = [
        _dig(facts, "clusterdns_iptables", "cluster_ips"),
        _dig(facts, "clusterdns_ipvs", "cluster_ips"),
        _dig(ctx.cluster, "kube_dns", "cluster_ips"),
        _dig(ctx.cluster, "kube_dns", "cluster_ip"),
        _dig(ctx.cluster, "dns_service", "cluster_ip"),
        _dig(facts, "clusterdns_resolver", "kubelet", "cluster_dns"),
        _dig(facts, "clusterdns_resolver", "cluster_dns"),
    ]
    for value in candidates:
        for ip in _as_list(value):
            if ip not in ips:
                ips.append(ip)
    return ips


def _rule_evidence(entry):
    return {key: entry.get(key) for key in ("family", "table", "chain", "position", "rule")}


@node_rule("IPT001", needs=("clusterdns_iptables",))
def kube_dns_not_programmed(host, facts, ctx):
    ipt = facts["clusterdns_iptables"]
    results = []
    for entry in ipt.get("no_endpoints", []):
        results.append(hit(
            dict(_rule_evidence(entry), cluster_ip=entry.get("cluster_ip"), port=entry.get("port"), protocol=entry.get("protocol")),
            detail="kube-proxy rejects %s %s:%s with 'has no endpoints' (%s %s rule %d): the kube-dns Service has no ready endpoints on this node's view"
            % (entry.get("protocol"), entry.get("cluster_ip"), entry.get("port"), entry["table"], entry["chain"], entry["position"])))
    mode = _dig(ipt, "kube_proxy", "mode")
    if mode != "iptables":
        if results:
            return results
        raise Skip("kube-proxy is not in iptables mode on this node (mode: %s)" % (mode or "no kube-proxy rules"))
    services = ipt.get("services", [])
    expected = kube_dns_ips(facts, ctx)
    if not expected:
        if not services:
            if results:
                return results
            raise Skip("no KUBE-SERVICES rule carries the kube-dns Service comment and no kube-dns ClusterIP is known "
                       "(set the cluster_ip option of iptables_facts)")
        expected = sorted({s["cluster_ip"] for s in services if s.get("cluster_ip")})
    for ip in expected:
        mine = [s for s in services if s.get("cluster_ip") == ip]
        if not mine and not any(e.get("cluster_ip") == ip for e in ipt.get("no_endpoints", [])):
            results.append(hit({"cluster_ip": ip, "kube_proxy_mode": mode, "services_found": [s.get("cluster_ip") for s in services]},
                               detail="no KUBE-SERVICES rule sends %s to a KUBE-SVC chain: kube-proxy has not programmed the kube-dns ClusterIP" % ip))
        for service in mine:
            if not service.get("endpoints"):
                results.append(hit(dict(_rule_evidence(service), cluster_ip=ip, svc_chain=service.get("chain"), endpoints=[]),
                                   detail="KUBE-SERVICES jumps to %s for %s %s:%s, but that chain sends nothing to a KUBE-SEP endpoint"
                                   % (service.get("chain"), service.get("protocol"), ip, service.get("port"))))
    return results


@node_rule("IPT002", needs=("clusterdns_iptables",))
def firewall_drops_dns(host, facts, ctx):
    results = []
    # With clusterdns_trace_seconds, the kernel's own record of the drops (dns_drop_trace) is cited.
    trace = facts.get("clusterdns_drop_trace")
    kernel = drop_evidence(trace, reasons=("NETFILTER_DROP",)) if trace else None
    for entry in facts["clusterdns_iptables"].get("dns_blocks", []):
        evidence = dict(_rule_evidence(entry), target=entry.get("target"), dns_ports=entry.get("dns_ports"))
        detail = "%s %s rule %d (%s) %ss traffic that includes port 53: %s" % (
            entry["family"], entry["table"], entry["position"], entry["chain"], entry.get("target", "DROP").lower(), entry["rule"])
        if kernel:
            evidence["kernel_drops"] = kernel
            detail += "; %s" % kernel["text"]
        results.append(hit(evidence, severity="error", detail=detail))
    return results


def _proxy_mode(facts):
    mode = _dig(facts, "clusterdns_iptables", "kube_proxy", "mode")
    if mode:
        return mode, "iptables rules"
    ipvs = facts.get("clusterdns_ipvs")
    if isinstance(ipvs, dict) and ipvs.get("available") and ipvs.get("services"):
        return "ipvs", "IPVS virtual services"
    return None, None


@node_rule("IPVS001", needs=("clusterdns_kernel",))
def ipvs_old_kernel(host, facts, ctx):
    mode, seen_in = _proxy_mode(facts)
    if mode is None:
        raise Skip("kube-proxy mode unknown: neither clusterdns_iptables nor clusterdns_ipvs shows kube-proxy")
    if mode != "ipvs":
        return []
    version = _dig(facts, "clusterdns_kernel", "version")
    if not (isinstance(version, (list, tuple)) and len(version) >= 2 and all(isinstance(v, int) for v in version[:2])):
        raise Skip("clusterdns_kernel.version is not [major, minor, patch]: %r" % (version,))
    if tuple(version[:2]) >= IPVS_FIXED_KERNEL:
        return []
    sysctls = _dig(facts, "clusterdns_ipvs", "sysctls") or {}
    evidence = {"kube_proxy_mode": mode, "mode_seen_in": seen_in, "kernel_version": list(version), "fixed_in": list(IPVS_FIXED_KERNEL),
                "sysctls": {k: sysctls.get(k) for k in ("conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template")}}
    release = ".".join(str(v) for v in version)
    if sysctls.get("conn_reuse_mode") == 0 and sysctls.get("expire_nodest_conn") == 1:
        # The documented workaround (the ipvs role) is in place: reported, no longer a warning.
        return [hit(evidence, severity="info",
                    detail="kube-proxy runs in IPVS mode on kernel %s, older than 5.9; mitigated by conn_reuse_mode=0 and expire_nodest_conn=1" % release)]
    return [hit(evidence, detail="kube-proxy runs in IPVS mode on kernel %s, older than 5.9" % release)]


@node_rule("IPVS002", needs=("clusterdns_ipvs",))
def ipvs_kube_dns_stale(host, facts, ctx):
    mode = _proxy_mode(facts)[0]
    if mode != "ipvs":
        raise Skip("kube-proxy is not in IPVS mode on this node (mode: %s)" % (mode or "unknown"))
    ipvs = facts["clusterdns_ipvs"]
    ips = kube_dns_ips(facts, ctx)
    if not ips:
        raise Skip("no kube-dns ClusterIP known (set the cluster_ip option of ipvs_facts)")
    ready = _as_list(_dig(ctx.cluster, "kube_dns", "endpoints", "ready"))
    results = []
    for entry in kube_dns(ipvs.get("services", []), ips):
        where = "%s %s:%d" % (entry["protocol"], entry["cluster_ip"], entry["port"])
        service = entry["service"]
        if service is None:
            results.append(hit({"cluster_ip": entry["cluster_ip"], "protocol": entry["protocol"], "port": entry["port"],
                                "virtual_services": len(ipvs.get("services", []))},
                               detail="IPVS has no virtual service for %s" % where))
            continue
        servers = service.get("real_servers") or []
        live = [s for s in servers if s.get("weight") != 0]
        if not live:
            results.append(hit({"cluster_ip": entry["cluster_ip"], "protocol": entry["protocol"], "port": entry["port"],
                                "real_servers": servers},
                               detail="IPVS virtual service %s has %s" % (where, "no real servers" if not servers else "only real servers at weight 0")))
            continue
        # Stale: a real server that is no ready CoreDNS endpoint (a deleted pod), when the cluster facts know them.
        stale = [s for s in live if s.get("address") not in ready] if ready else []
        if stale:
            results.append(hit({"cluster_ip": entry["cluster_ip"], "protocol": entry["protocol"], "port": entry["port"],
                                "stale_real_servers": stale, "ready_endpoints": ready},
                               detail="IPVS virtual service %s sends to %s, not a ready kube-dns endpoint (ready: %s)"
                               % (where, ", ".join("%s:%s" % (s.get("address"), s.get("port")) for s in stale), ", ".join(ready))))
    return results


@node_rule("NLD001", needs=("clusterdns_iptables",))
def nodelocal_black_hole(host, facts, ctx):
    ipt = facts["clusterdns_iptables"]
    nodelocal = ipt.get("nodelocal") or {}
    addresses = nodelocal.get("addresses") or []
    if not addresses:
        return []
    listeners = ipt.get("listeners") or {}
    if not listeners.get("available"):
        raise Skip("NodeLocal DNSCache NOTRACK rules present but listening sockets unknown: %s" % (listeners.get("reason") or "not gathered"))
    sockets = listeners.get("sockets") or []
    results = []
    for address in addresses:
        if answering(sockets, address, "udp"):
            continue
        rules = [_rule_evidence(r) for r in nodelocal.get("notrack", []) if address in r.get("addresses", [])]
        results.append(hit({"address": address, "notrack_rules": rules, "udp_listeners_on_53": [
            "%s:%d" % (s["address"], s["port"]) for s in sockets if s["protocol"] == "udp"]},
            detail="NOTRACK rules send DNS for %s past conntrack, but nothing listens on %s:53/udp" % (address, address)))
    return results
