# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee (the finding ids themselves are stable API).
#
# The finding catalog: one entry per finding id with its default severity, scope, title, why it
# breaks DNS (cause), how to fix it (remediate tag and role) and references. Rules in
# _rules_*.py fill in host/object and evidence; everything else comes from here, so the report,
# the docs and JUnit all say the same thing.

from __future__ import annotations

SEVERITIES = ("info", "warning", "error", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}

K56903 = "https://github.com/kubernetes/kubernetes/issues/56903"
WEAVE_RACE = "https://www.weave.works/blog/racy-conntrack-and-dns-lookup-timeouts"
NODELOCAL = "https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/"
DNS_DEBUG = "https://kubernetes.io/docs/tasks/administer-cluster/dns-debugging-resolution/"
K71514 = "https://github.com/kubernetes/kubernetes/issues/71514"
RESOLV_CONF = "https://man7.org/linux/man-pages/man5/resolv.conf.5.html"
CT_SYSCTL = "https://docs.kernel.org/networking/nf_conntrack-sysctl.html"
SEED_ACK = "seeds/002: Alibaba Cloud ACK, DNS troubleshooting"
SEED_GUIDE = "seeds/000-001: DNS troubleshooting guide (imroc.cc)"
SEED_CILIUM = "seeds/003: dnsmasq ignoring pod traffic on cilium_host"
SEED_KUBECON = "seeds/004: KubeCon China 2021, DNS failure observability and diagnosis"
COREDNS_PLUGINS = "https://coredns.io/plugins/"


def _entry(severity, scope, title, cause, fix_tags, roles=(), references=(), variables=None):
    return {
        "severity": severity,
        "scope": scope,
        "title": title,
        "cause": cause,
        "fix": {
            "tags": list(fix_tags),
            "roles": list(roles),
            "variables": dict(variables or {}),
        },
        "references": list(references),
    }


CATALOG = {
    "CT001": _entry(
        "warning", "node", "Conntrack table nearly full",
        "Every UDP DNS query through the kube-dns ClusterIP needs a conntrack entry. When the table is "
        "full the kernel drops new flows ('nf_conntrack: table full, dropping packet'), so lookups time out.",
        ["conntrack"], ["clusterdns.doctor.conntrack"], [CT_SYSCTL, SEED_ACK, SEED_GUIDE]),
    "CT002": _entry(
        "error", "node", "Conntrack insert failures (DNAT race): 5 second lookups",
        "glibc and musl send A and AAAA in parallel from one socket; after DNAT to the kube-dns ClusterIP both "
        "packets race to confirm a conntrack entry and one is dropped (insert_failed). The client waits its "
        "5 s timeout and retries.",
        ["nodelocaldns", "resolver"], ["clusterdns.doctor.nodelocaldns", "clusterdns.doctor.resolver"],
        [K56903, WEAVE_RACE, NODELOCAL, SEED_GUIDE]),
    "KRN001": _entry(
        "warning", "node", "Kernel predates the conntrack DNAT race fixes",
        "Kernels before 4.19 (race 1), 5.0 (race 2) and about 5.6 (clashing entries allowed in) drop one of "
        "two parallel DNS packets that are DNATed to the kube-dns ClusterIP.",
        ["nodelocaldns", "resolver"], ["clusterdns.doctor.nodelocaldns", "clusterdns.doctor.resolver"],
        [K56903, WEAVE_RACE]),
    "IPVS001": _entry(
        "error", "node", "kube-proxy IPVS mode on a kernel older than 5.9",
        "Before 5.9, IPVS keeps sending UDP from a reused source port to a deleted backend until the IPVS UDP "
        "timeout, so lookups fail after CoreDNS scale-in or a rolling update.",
        ["ipvs"], ["clusterdns.doctor.ipvs"], [K71514]),
    "IPVS002": _entry(
        "error", "node", "IPVS virtual service for kube-dns missing or stale",
        "Without a virtual service for the kube-dns ClusterIP, or with real servers at weight 0 or not "
        "matching CoreDNS, queries to the ClusterIP are dropped or sent to dead pods.",
        ["ipvs"], ["clusterdns.doctor.ipvs"], [K71514, DNS_DEBUG]),
    "IPT001": _entry(
        "error", "node", "kube-dns ClusterIP not programmed by kube-proxy",
        "Pods send DNS to the kube-dns ClusterIP; if kube-proxy has no DNAT rules for it on this node, or the "
        "Service has no endpoints (REJECT 'has no endpoints'), every pod lookup fails.",
        ["coredns"], ["clusterdns.doctor.coredns"], [DNS_DEBUG, SEED_GUIDE]),
    "IPT002": _entry(
        "error", "node", "A firewall rule drops DNS",
        "A DROP or REJECT rule matching UDP or TCP port 53 on the pod or node path discards queries or answers.",
        ["firewall"], ["clusterdns.doctor.firewall"], [SEED_ACK, SEED_KUBECON]),
    "DMQ001": _entry(
        "critical", "node", "dnsmasq ignores the interfaces pod traffic arrives on",
        "dnsmasq filters queries by the interface they arrive on, not by the destination address. Pod traffic "
        "reaches the node through the CNI's interface (cilium_host, cni0, cali*, ...); if that interface is "
        "excluded (except-interface) or not included (interface=), dnsmasq silently drops pod queries while "
        "the node's own queries work.",
        ["dnsmasq"], ["clusterdns.doctor.dnsmasq"], [SEED_CILIUM, "https://thekelleys.org.uk/dnsmasq/docs/dnsmasq-man.html"]),
    "DMQ002": _entry(
        "warning", "node", "dnsmasq bound to interfaces that come and go, or not listening",
        "With bind-interfaces dnsmasq binds at start-up only; interfaces created later (CNI, VIPs) are never "
        "served. bind-dynamic follows them. A configured address without a socket answers nothing.",
        ["dnsmasq"], ["clusterdns.doctor.dnsmasq"], [SEED_CILIUM, "https://github.com/kubernetes-sigs/kubespray/issues/4979"]),
    "RES001": _entry(
        "critical", "node", "Node resolv.conf handed to CoreDNS points at a local stub (forwarding loop)",
        "CoreDNS pods with dnsPolicy Default (and kubelet --resolv-conf) inherit the node's resolv.conf. A "
        "loopback nameserver such as systemd-resolved's 127.0.0.53 is CoreDNS itself inside the pod: queries "
        "loop, the loop plugin makes CoreDNS exit, or upstream lookups time out.",
        ["resolver"], ["clusterdns.doctor.resolver"],
        [DNS_DEBUG, "https://coredns.io/plugins/loop/#troubleshooting-loops-in-kubernetes-clusters", SEED_CILIUM]),
    "RES002": _entry(
        "warning", "node", "Resolver options turn one lost packet into a 5 second stall",
        "With the default timeout:5 and no single-request-reopen, a query lost to the conntrack race or a "
        "drop costs the full timeout before glibc retries.",
        ["resolver"], ["clusterdns.doctor.resolver"], [RESOLV_CONF, K56903]),
    "RES003": _entry(
        "error", "node", "Invalid or over-long resolv.conf",
        "glibc uses only the first 3 nameservers and (before 2.26) 6 search domains / 256 characters; "
        "kubelet rejects or truncates longer lists and junk lines are ignored, so pods see a different "
        "resolver than intended.",
        ["resolver"], ["clusterdns.doctor.resolver"], [RESOLV_CONF, DNS_DEBUG]),
    "NLD001": _entry(
        "critical", "node", "NodeLocal DNSCache expected but not answering (black hole)",
        "Pods or kubelet point at the NodeLocal DNSCache address, or its NOTRACK rules are still installed, "
        "but no node-cache listens: every query from the node's pods is lost.",
        ["nodelocaldns"], ["clusterdns.doctor.nodelocaldns"], [NODELOCAL, "https://github.com/kubernetes/dns/issues/453"]),
    "NLD002": _entry(
        "info", "node", "NodeLocal DNSCache absent where it is the documented mitigation",
        "NodeLocal DNSCache avoids DNAT and conntrack for pod queries and uses TCP upstream, which removes the "
        "conntrack race and table pressure reported by other findings.",
        ["nodelocaldns"], ["clusterdns.doctor.nodelocaldns"], [NODELOCAL, K56903]),
    "NLD003": _entry(
        "error", "cluster", "NodeLocal DNSCache set up for the wrong kube-proxy mode",
        "In IPVS mode node-cache must not listen on the kube-dns ClusterIP (IPVS owns it on kube-ipvs0) and kubelet "
        "clusterDNS must point at the local address; in iptables mode it listens on both. kube-proxy's mode is read "
        "from its ConfigMap (config.conf) or DaemonSet arguments.",
        ["nodelocaldns"], ["clusterdns.doctor.nodelocaldns"], [NODELOCAL, "https://github.com/rancher/rke/issues/2093"]),
    "SG001": _entry(
        "error", "cluster", "Cloud security group or network ACL blocks DNS",
        "UDP and TCP 53 must be allowed between node and pod ranges and the nodes that run CoreDNS; a missing "
        "rule between node groups drops queries that land on a CoreDNS pod elsewhere.",
        ["security_groups"], ["clusterdns.doctor.security_groups"], ["https://github.com/aws/aws-cdk/issues/10884", SEED_ACK]),
    "NODE001": _entry(
        "warning", "node", "The node drops UDP itself",
        "UDP receive buffer errors (RcvbufErrors, InErrors) mean the kernel discarded datagrams, DNS answers "
        "among them, before any application read them.",
        [], [], [SEED_ACK, SEED_KUBECON, "https://docs.kernel.org/networking/snmp_counter.html"]),
    "PRB001": _entry(
        "critical", "node", "A DNS hop does not answer",
        "The probe sent real queries along the path (node resolver, pod to the kube-dns ClusterIP, pod to a CoreDNS "
        "endpoint, CoreDNS to its upstream) and got no reply at all from this hop: a firewall, an interface filter "
        "(seed 003), a dead server or a black-holed NodeLocal address. Comparing the hops says which one.",
        ["firewall", "dnsmasq", "coredns", "nodelocaldns"], [], [SEED_GUIDE, SEED_CILIUM, SEED_ACK]),
    "PRB002": _entry(
        "warning", "node", "A DNS hop loses part of the queries",
        "At least 1 % of the queries to this hop went unanswered (5 % or more is an error): conntrack races or a full "
        "table, receive-buffer drops, or an overloaded server. Clients see 5 s stalls.",
        ["nodelocaldns", "resolver", "conntrack"], [], [K56903, WEAVE_RACE, SEED_CILIUM]),
    "PRB003": _entry(
        "error", "node", "A DNS hop answers SERVFAIL or REFUSED",
        "The hop answers, but with SERVFAIL or REFUSED: the upstream is failing or refusing, or the server is not "
        "configured for the zone.",
        ["coredns"], [], [SEED_ACK]),
    "CDNS001": _entry(
        "critical", "cluster", "CoreDNS pods not ready or crash-looping",
        "Pods that are not Ready are removed from the kube-dns endpoints; crash loops (loop detected, Corefile "
        "parse errors) leave the cluster with fewer or no DNS servers.",
        ["coredns"], ["clusterdns.doctor.coredns"], [DNS_DEBUG, SEED_ACK]),
    "CDNS002": _entry(
        "warning", "cluster", "CoreDNS has a single point of failure",
        "Fewer than 2 replicas, or all replicas on one node, means one pod or node failure stops cluster DNS.",
        ["coredns"], ["clusterdns.doctor.coredns"], [SEED_ACK]),
    "CDNS003": _entry(
        "warning", "cluster", "CoreDNS older than 1.7.0",
        "Before 1.7.0 CoreDNS could stop updating after API server jitter, so headless names go stale.",
        ["coredns"], ["clusterdns.doctor.coredns"], [SEED_ACK, "https://github.com/coredns/coredns/releases/tag/v1.7.0"]),
    "CDNS004": _entry(
        "warning", "cluster", "Workloads rely on the tolerate-unready-endpoints annotation",
        "CoreDNS 1.8.4+ reads EndpointSlices and ignores service.alpha.kubernetes.io/tolerate-unready-endpoints; "
        "use spec.publishNotReadyAddresses instead.",
        [], [], [SEED_ACK]),
    "CDNS005": _entry(
        "critical", "cluster", "CoreDNS RBAC lacks what its plugins need",
        "CoreDNS 1.8.4+ lists and watches EndpointSlices; without that permission the kubernetes plugin never "
        "syncs and service names do not resolve.",
        ["coredns"], ["clusterdns.doctor.coredns"], [DNS_DEBUG, "https://github.com/coredns/coredns/issues/4758"]),
    "CDNS006": _entry(
        "warning", "cluster", "autopath in the Corefile",
        "autopath answers for search-path expansions on the server side; with pods insecure/verified it "
        "causes intermittent NXDOMAIN after pod IP reuse and high API memory.",
        ["coredns"], ["clusterdns.doctor.coredns"], ["https://coredns.io/plugins/autopath/", "https://github.com/coredns/coredns/issues/4366"]),
    "CDNS007": _entry(
        "info", "cluster", "DNS failures cannot be observed",
        "Without the errors plugin upstream failures are not logged; without log (at least class denial error) "
        "no query can be traced.",
        ["coredns"], ["clusterdns.doctor.coredns"], [DNS_DEBUG, SEED_KUBECON]),
    "CDNS008": _entry(
        "error", "cluster", "Upstream reached over TCP that cannot answer over TCP",
        "NodeLocal DNSCache forwards with force_tcp; an upstream that only answers UDP times out unless "
        "CoreDNS forwards with prefer_udp.",
        ["coredns"], ["clusterdns.doctor.coredns"], [NODELOCAL, SEED_ACK]),
    "CDNS009": _entry(
        "warning", "cluster", "CoreDNS out of CPU or over capacity",
        "CoreDNS at its CPU limit is throttled and one replica serves only so many queries per second; queries "
        "queue and time out. When more queries wait on the upstream than forward's max_concurrent allows, CoreDNS "
        "answers the rest REFUSED at once (an error). Measured from the CoreDNS pods' :9153 metrics over an interval.",
        ["coredns", "nodelocaldns"], ["clusterdns.doctor.coredns"],
        [SEED_ACK, "https://github.com/coredns/deployment/blob/master/kubernetes/Scaling_CoreDNS.md", "https://coredns.io/plugins/forward/"]),
    "CDNS010": _entry(
        "error", "cluster", "Upstream DNS failures",
        "CoreDNS logs i/o timeouts or SERVFAIL/REFUSED from its upstream; the fault is beyond the cluster. "
        "Queries CoreDNS refuses itself because forward's max_concurrent is reached are CDNS009's, not counted here.",
        [], [], [SEED_ACK, SEED_CILIUM]),
    "CDNS011": _entry(
        "critical", "cluster", "Corefile does not parse or uses an unknown plugin",
        "CoreDNS refuses to start or to reload such a Corefile ('Unknown directive').",
        ["coredns"], ["clusterdns.doctor.coredns"], [COREDNS_PLUGINS, "https://github.com/coredns/coredns/issues/2339"]),
    "SVC001": _entry(
        "warning", "cluster", "kube-dns Service uses sessionAffinity ClientIP",
        "All queries from a client go to one CoreDNS pod, which overloads it and keeps failing while that pod "
        "is unhealthy.",
        ["coredns"], ["clusterdns.doctor.coredns"], ["https://github.com/gardener/gardener/issues/3596"]),
    "SVC002": _entry(
        "critical", "cluster", "kube-dns Service without ready endpoints",
        "With no ready endpoints kube-proxy rejects queries to the ClusterIP; endpoints that do not match the "
        "CoreDNS pods send queries to the wrong place.",
        ["coredns"], ["clusterdns.doctor.coredns"], [DNS_DEBUG, SEED_GUIDE]),
    "WL001": _entry(
        "warning", "cluster", "Pod DNS policy mistakes",
        "hostNetwork pods with dnsPolicy ClusterFirst fall back to the node resolver and cannot resolve "
        "cluster names; use ClusterFirstWithHostNet.",
        [], [], ["https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/#pod-s-dns-policy"]),
    "WL002": _entry(
        "info", "cluster", "musl-based images defeat the resolver workarounds",
        "musl queries all nameservers and A/AAAA in parallel and ignores single-request-reopen.",
        [], [], [K56903]),
    "WL003": _entry(
        "warning", "cluster", "StatefulSet serviceName names no headless Service",
        "Per-pod DNS names of a StatefulSet exist only under a headless governing Service.",
        [], [], ["https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/#stable-network-id"]),
    "WL004": _entry(
        "info", "cluster", "ndots:5 search-path amplification",
        "With ndots:5 an external name with fewer than 5 dots is tried through every search domain first: "
        "up to 4 extra queries (x2 for A and AAAA) per lookup.",
        [], [], [SEED_ACK, "https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/"]),
}


def catalog_entry(finding_id):
    """Catalog entry of a finding id; KeyError names the unknown id."""
    try:
        return CATALOG[finding_id]
    except KeyError:
        raise KeyError("unknown finding id %r; known ids: %s" % (finding_id, ", ".join(sorted(CATALOG)))) from None
