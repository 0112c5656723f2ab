# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Resolver rules RES001, RES002 and RES003 over clusterdns_resolver (resolver_facts).

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, hit, node_rule
from ansible_collections.clusterdns.doctor.plugins.module_utils._resolver import effective_options, is_loopback

# Options that stop one lost packet of a parallel A/AAAA pair from costing a full timeout.
MITIGATING_OPTIONS = ("single-request-reopen", "single-request", "use-vc")
STALL_TIMEOUT = 5
# Problem kinds that change which servers or domains the resolver uses (the rest are ignored lines).
SERIOUS_PROBLEMS = ("nameserver_limit", "search_limit", "invalid_nameserver")


def _files(resolver):
    """The node's /etc/resolv.conf and, when it is another file, the one kubelet hands to pods."""
    node = resolver.get("resolv_conf")
    if not isinstance(node, dict):
        raise Skip("clusterdns_resolver has no parsed resolv_conf (facts from another source?)")
    files = [("node", node)]
    kubelet = resolver.get("kubelet") or {}
    other = kubelet.get("resolv_conf_file")
    if kubelet.get("present") and isinstance(other, dict) and other.get("path") != node.get("path"):
        files.append(("kubelet", other))
    return [(role, f) for role, f in files if f.get("available")]


def _upstream(resolver):
    upstream = (resolver.get("stub") or {}).get("upstream") or {}
    servers = upstream.get("nameservers") or []
    if upstream.get("available") and servers and not any(is_loopback(ns) for ns in servers):
        return upstream
    return None


@node_rule("RES001", needs=("clusterdns_resolver",))
def kubelet_resolv_conf_loops(host, facts, ctx):
    resolver = facts["clusterdns_resolver"]
    kubelet = resolver.get("kubelet") or {}
    if not kubelet.get("present"):
        raise Skip("no kubelet on this node")
    path = kubelet.get("resolv_conf")
    if not path:
        return []
    parsed = kubelet.get("resolv_conf_file") or {}
    if not parsed.get("available"):
        raise Skip("the resolv.conf kubelet hands to pods (%s) could not be read: %s" % (path, parsed.get("reason") or "not gathered"))
    nameservers = list(kubelet.get("resolv_conf_nameservers") or parsed.get("nameservers") or [])
    loopback = [ns for ns in nameservers if is_loopback(ns)]
    cluster_dns = [ns for ns in nameservers if ns in (kubelet.get("cluster_dns") or [])]
    if not loopback and not cluster_dns:
        return []
    upstream = _upstream(resolver)
    evidence = {
        "kubelet_resolv_conf": path,
        "realpath": parsed.get("realpath"),
        "set_by": (kubelet.get("sources") or {}).get("resolv_conf") or "kubelet default",
        "nameservers": nameservers,
        "loopback_nameservers": loopback,
        "cluster_dns_nameservers": cluster_dns,
        "stub": (resolver.get("stub") or {}).get("kind"),
        "upstream_resolv_conf": upstream["path"] if upstream else None,
        "upstream_nameservers": list(upstream["nameservers"]) if upstream else [],
    }
    if loopback:
        detail = ("kubelet hands %s to pods with dnsPolicy Default (CoreDNS); its nameserver %s is on loopback, which inside the pod is CoreDNS itself"
                  % (path, ", ".join(loopback)))
    else:
        detail = "kubelet hands %s to pods with dnsPolicy Default; it lists the cluster DNS %s, so CoreDNS forwards to itself" % (path, ", ".join(cluster_dns))
    if upstream:
        detail += "; point kubelet resolvConf at %s (%s)" % (upstream["path"], ", ".join(upstream["nameservers"]))
        fix = {"resolver_kubelet_resolv_conf": upstream["path"]}
    else:
        detail += "; point kubelet resolvConf at a file that lists the real upstream servers"
        fix = None
    return [hit(evidence, detail=detail, severity="critical", fix_variables=fix)]


def _exposure(facts):
    """Why this node can lose one packet of a parallel A/AAAA pair (design: RES002 applies to nodes
    exposed to CT002/KRN001): kernel fixes it lacks, conntrack drops it counted. [] when neither
    applies, None when neither fact was gathered."""
    kernel = facts.get("clusterdns_kernel")
    conntrack = facts.get("clusterdns_conntrack")
    known = False
    reasons = []
    if isinstance(kernel, dict) and kernel.get("available"):
        known = True
        missing = [f["id"] for f in kernel.get("exposure") or [] if f.get("id", "").startswith("nf-") and not f.get("fixed")]
        if missing:
            reasons.append("kernel %s lacks %s" % (kernel.get("release"), ", ".join(missing)))
    if isinstance(conntrack, dict) and conntrack.get("available"):
        known = True
        stats = conntrack.get("stats") or {}
        dropped = sum(stats.get(name, 0) for name in ("insert_failed", "drop"))
        if dropped:
            reasons.append("conntrack insert_failed+drop = %d since boot" % dropped)
    return reasons if known else None


@node_rule("RES002", needs=("clusterdns_resolver",))
def stall_on_lost_packet(host, facts, ctx):
    resolver = facts["clusterdns_resolver"]
    libc = (resolver.get("libc") or {}).get("name")
    if libc == "musl":
        raise Skip("musl libc: it ignores single-request-reopen and use-vc, and queries nameservers in parallel (see WL002)")
    exposure = _exposure(facts)
    if exposure is None:
        raise Skip("exposure unknown: neither kernel_facts nor conntrack_facts were gathered")
    if not exposure:
        return []
    results = []
    for role, parsed in _files(resolver):
        remote = [ns for ns in parsed.get("nameservers") or [] if not is_loopback(ns)]
        if not remote:
            continue
        written = dict(parsed.get("options") or {})
        effective = effective_options(written)
        if any(written.get(name) for name in MITIGATING_OPTIONS) or effective["timeout"] < STALL_TIMEOUT:
            continue
        results.append(hit(
            {"path": parsed["path"], "used_by": "pods with dnsPolicy Default" if role == "kubelet" else "the node",
             "nameservers": remote, "options": written, "timeout": effective["timeout"], "attempts": effective["attempts"],
             "libc": libc or "unknown (glibc assumed)", "exposed_by": exposure},
            detail="%s (used by %s) has timeout:%d and none of %s: one lost A or AAAA packet stalls the lookup for %d s"
            % (parsed["path"], "pods with dnsPolicy Default" if role == "kubelet" else "the node", effective["timeout"],
               ", ".join(MITIGATING_OPTIONS), effective["timeout"])))
    return results


@node_rule("RES003", needs=("clusterdns_resolver",))
def invalid_resolv_conf(host, facts, ctx):
    resolver = facts["clusterdns_resolver"]
    results = []
    for role, parsed in _files(resolver):
        problems = parsed.get("problems") or []
        if not problems:
            continue
        serious = [p for p in problems if p.get("kind") in SERIOUS_PROBLEMS]
        summary = "; ".join("line %s: %s" % (p.get("lineno"), p.get("message")) for p in problems[:3])
        if len(problems) > 3:
            summary += "; and %d more" % (len(problems) - 3)
        results.append(hit(
            {"path": parsed["path"], "used_by": "pods with dnsPolicy Default" if role == "kubelet" else "the node",
             "problems": problems, "nameservers": parsed.get("nameservers"), "ignored_nameservers": parsed.get("ignored_nameservers") or []},
            detail="%s: %s" % (parsed["path"], summary),
            severity="error" if serious else "warning"))
    return results
