# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Node rules over conntrack_facts and kernel_facts: CT001, CT002, KRN001, NODE001.
# clusterdns_iptables / clusterdns_ipvs (other modules) are read defensively to tell whether the
# node DNATs DNS to the kube-dns ClusterIP at all, and whether NodeLocal DNSCache takes DNS out of
# conntrack.

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._conntrack import DROP_COUNTERS
from ansible_collections.clusterdns.doctor.plugins.module_utils._droptrace import conntrack_confirmation
from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, hit, node_rule
from ansible_collections.clusterdns.doctor.plugins.module_utils._kernel import udp_drop_counters

CONNTRACK_RACE_FIXES = ("nf-clash-same-tuple", "nf-nat-same-origin", "nf-clash-allow-insert")


def _dig(data, *path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


@node_rule("CT001", needs=("clusterdns_conntrack",))
def conntrack_table_full(host, facts, ctx):
    ct = facts["clusterdns_conntrack"]
    ratio = ct.get("usage_ratio")
    log = ct.get("kernel_log") or {}
    events = log.get("table_full_events") or 0
    if ratio is None and not events:
        raise Skip("nf_conntrack_count not readable")
    evidence = {"count": ct.get("count"), "max": ct.get("max"), "usage_ratio": ratio, "buckets": ct.get("buckets"),
                "table_full_events": events, "log_first": log.get("first"), "log_last": log.get("last"), "log_sample": log.get("sample") or []}
    ratio = ratio or 0.0
    if ratio >= ctx.option("conntrack_usage_error"):
        return [hit(evidence, severity="error",
                    detail="conntrack table %d/%d (%.0f %%) on %s: new DNS flows are dropped once it is full" % (ct["count"], ct["max"], ratio * 100, host))]
    if events and log.get("before_remediation"):
        evidence["log_last_age_seconds"] = log.get("last_age_seconds")
        return [hit(evidence, severity="info",
                    detail="the kernel logged 'table full, dropping packet' %d time(s) on %s before the limit was raised (last %s s ago); "
                    "table now %s/%s" % (events, host, log.get("last_age_seconds"), ct.get("count"), ct.get("max")))]
    if events:
        return [hit(evidence, severity="error",
                    detail="the kernel logged 'nf_conntrack: table full, dropping packet' %d time(s) on %s (last %s); table now %s/%s"
                    % (events, host, log.get("last") or "time unknown", ct.get("count"), ct.get("max")))]
    if ratio >= ctx.option("conntrack_usage_warning"):
        return [hit(evidence, severity="warning",
                    detail="conntrack table %d/%d (%.0f %%) on %s" % (ct["count"], ct["max"], ratio * 100, host))]
    return []


@node_rule("CT002", needs=("clusterdns_conntrack",))
def conntrack_insert_failures(host, facts, ctx):
    ct = facts["clusterdns_conntrack"]
    stats = ct.get("stats")
    if not stats:
        raise Skip("no conntrack counters: neither /proc/net/stat/nf_conntrack nor conntrack -S could be read")
    minimum = ctx.option("conntrack_insert_failed_min")
    rising = ct.get("stats_delta")
    evidence = {"stats_source": ct.get("stats_source"), "since_boot": {k: stats.get(k) for k in DROP_COUNTERS if k in stats},
                "clash_resolve": stats.get("clash_resolve", stats.get("clashres"))}
    trace = facts.get("clusterdns_drop_trace")
    seen = conntrack_confirmation(trace) if trace else None
    if seen:
        # dns_drop_trace saw conntrack refuse DNS packets during its window: confirmed live.
        evidence["kernel_trace"] = seen
        return [hit(evidence, severity="error", detail="%s on %s" % (seen["text"], host))]
    if rising is not None:
        evidence["interval"] = ct.get("interval")
        evidence["increase"] = {k: rising.get(k) for k in DROP_COUNTERS if k in rising}
        now = sum(rising.get(k, 0) for k in ("insert_failed", "drop"))
        if now >= minimum:
            return [hit(evidence, severity="error",
                        detail="conntrack insert_failed/drop rose by %d in %s s on %s: DNS packets are being dropped now" % (now, ct.get("interval"), host))]
        return []
    total = sum(stats.get(k, 0) for k in ("insert_failed", "drop"))
    if total >= minimum:
        return [hit(evidence, severity="warning",
                    detail="conntrack insert_failed=%d drop=%d since boot on %s; sample twice (-e clusterdns_sample_interval=10) to see whether they still rise"
                    % (stats.get("insert_failed", 0), stats.get("drop", 0), host))]
    return []


def _dns_path(facts):
    """How DNS leaves this node's pods: 'nodelocal', 'iptables', 'ipvs', 'none' or None (unknown)."""
    ipt = facts.get("clusterdns_iptables")
    ipvs = facts.get("clusterdns_ipvs")
    if isinstance(ipt, dict) and ipt.get("available", True) is not False:
        if _dig(ipt, "nodelocal", "present"):
            return "nodelocal"
        mode = _dig(ipt, "kube_proxy", "mode")
        if mode == "iptables":
            return "iptables"
    if isinstance(ipvs, dict) and ipvs.get("available") and ipvs.get("services"):
        return "ipvs"
    if isinstance(ipt, dict) and ipt.get("available", True) is not False:
        return "none"
    return None


@node_rule("KRN001", needs=("clusterdns_kernel",))
def kernel_predates_race_fixes(host, facts, ctx):
    kernel = facts["clusterdns_kernel"]
    missing = [f for f in kernel.get("exposure") or [] if f["id"] in CONNTRACK_RACE_FIXES and not f["fixed"]]
    if not missing:
        return []
    path = _dns_path(facts)
    if path == "nodelocal":
        return []
    if path == "none":
        raise Skip("no kube-proxy DNAT for DNS on this node (no KUBE-SERVICES rules, no IPVS services)")
    evidence = {"release": kernel.get("release"), "version": kernel.get("version"), "dns_path": path or "unknown (iptables facts not gathered)",
                "missing_fixes": [{"id": f["id"], "fixed_in": ".".join(str(n) for n in f["fixed_in"]), "summary": f["summary"]} for f in missing]}
    return [hit(evidence, detail="kernel %s on %s predates %s of the conntrack DNAT race fixes (last one in %s); parallel A/AAAA lookups can lose a packet"
                % (kernel.get("release"), host, len(missing), ".".join(str(n) for n in missing[-1]["fixed_in"])))]


@node_rule("NODE001", needs=("clusterdns_kernel",))
def node_drops_udp(host, facts, ctx):
    kernel = facts["clusterdns_kernel"]
    udp, udp6 = kernel.get("udp"), kernel.get("udp6")
    if udp is None and udp6 is None:
        raise Skip("/proc/net/snmp not readable")
    minimum = ctx.option("udp_errors_min")
    rising = kernel.get("udp_delta")
    if rising is not None:
        counts = {"udp": udp_drop_counters(rising.get("udp") or {}), "udp6": udp_drop_counters(rising.get("udp6") or {})}
        window = "in %s s" % kernel.get("interval")
    else:
        counts = {"udp": udp_drop_counters(udp or {}), "udp6": udp_drop_counters(udp6 or {})}
        window = "since boot"
    errors = (counts["udp"].get("InErrors") or 0) + (counts["udp6"].get("InErrors") or 0)
    if errors < minimum:
        return []
    evidence = {"window": window, "interval": kernel.get("interval"), "udp": counts["udp"], "udp6": counts["udp6"],
                "rmem_default": _dig(kernel, "sysctls", "net/core/rmem_default"), "rmem_max": _dig(kernel, "sysctls", "net/core/rmem_max")}
    buffers = (counts["udp"].get("RcvbufErrors") or 0) + (counts["udp6"].get("RcvbufErrors") or 0)
    return [hit(evidence, detail="%d UDP datagrams dropped by the kernel %s on %s (%d for a full receive buffer)" % (errors, window, host, buffers))]
