# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# NodeLocal DNSCache (node-cache) logic for the nodelocaldns role, stdlib only:
#   * listen_addresses: the -localip list for the kube-proxy mode (iptables: the local address and
#     the kube-dns ClusterIP; IPVS: the local address only, kube-ipvs0 owns the ClusterIP);
#   * parse_ip_addr: ``ip -j addr show`` (iproute2 JSON);
#   * cleanup_plan: what node-cache left behind where nothing answers any more (its iptables rules,
#     found by their comments, and its addresses on lo or on its own link), as one
#     ``iptables-restore --noflush`` input per family plus ``ip`` commands;
#   * rollout: whether the DaemonSet's pods are Ready on every node;
#   * kubelet_cluster_dns: the KubeletConfiguration text with clusterDNS replaced (IPVS mode).

from __future__ import annotations

import ipaddress
import json
import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError
from ansible_collections.clusterdns.doctor.plugins.module_utils._iptables import _address, answering, rule_match, split_rule
from ansible_collections.clusterdns.doctor.plugins.module_utils._resolver import parse_kubelet_config

MODES = ("iptables", "ipvs")
# The comments node-cache (k8s.io/dns cmd/node-cache) puts on every rule it installs.
COMMENTS = ("NodeLocal DNS Cache: skip conntrack", "NodeLocal DNS Cache: allow DNS traffic")
_TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}
_ULA = ipaddress.ip_network("fc00::/7")


def _ip(text, what):
    try:
        return ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise ValueError("%s must be an IP address, got %r" % (what, text)) from None


def listen_addresses(mode, local_ip, cluster_ips=()):
    """The addresses node-cache binds (its ``-localip`` and the Corefile ``bind``) for a kube-proxy mode.

    iptables mode: the local address and the kube-dns ClusterIPs of the same family, so pods that
    use the ClusterIP reach the cache with no kubelet change. IPVS mode: the local address only
    (kube-proxy owns the ClusterIP on kube-ipvs0), so kubelet clusterDNS must point at it.
    node-cache takes one address family; ClusterIPs of the other family are left out.
    """
    if mode not in MODES:
        raise ValueError("kube-proxy mode must be one of %s, got %r" % (", ".join(MODES), mode))
    local = _ip(local_ip, "nodelocaldns_local_ip")
    if str(local) in [str(c).strip() for c in cluster_ips or ()]:
        raise ValueError("nodelocaldns_local_ip %s is the kube-dns ClusterIP: choose an unused link-local address such as 169.254.20.10" % local)
    if not (local.is_link_local or (local.version == 6 and local in _ULA)):
        raise ValueError("nodelocaldns_local_ip %s must be a link-local (169.254.0.0/16) or fd00::/8 address "
                         "that cannot collide with a node, pod or Service address" % local)
    result = [str(local)]
    if mode == "iptables":
        for text in cluster_ips or ():
            ip = _ip(text, "kube-dns ClusterIP")
            if ip.version == local.version and str(ip) not in result:
                result.append(str(ip))
    return result


def parse_ip_addr(text, source="ip -j addr show"):
    """Addresses from ``ip -j addr show`` (``-d`` optional; iproute2 4.13 and later print JSON).

    Returns ``[{"dev", "kind", "family", "address", "prefixlen"}]``; ``kind`` is the link kind
    (``dummy``, ``veth``, ...) with ``-d``, ``loopback`` for lo, else None.
    """
    try:
        links = json.loads(text or "[]")
    except ValueError as exc:
        raise ParseError("not JSON: %s" % exc, source=source, expected="the output of 'ip -j addr show' (iproute2 4.13 or later)") from None
    if not isinstance(links, list):
        raise ParseError("not a list of links", source=source, expected="a JSON list, as 'ip -j addr show' prints")
    result = []
    for link in links:
        if not isinstance(link, dict) or "ifname" not in link:
            raise ParseError("a link without ifname: %r" % (link,), source=source, expected="objects with ifname and addr_info")
        kind = (link.get("linkinfo") or {}).get("info_kind")
        if kind is None and link.get("link_type") == "loopback":
            kind = "loopback"
        for addr in link.get("addr_info") or []:
            if "local" not in addr:
                continue
            family = {"inet": "ipv4", "inet6": "ipv6"}.get(addr.get("family"))
            if family is None:
                continue
            result.append({"dev": link["ifname"], "kind": kind, "family": family, "address": addr["local"],
                           "prefixlen": addr.get("prefixlen")})
    return result


def nodecache_rules(text, family="ipv4", source="iptables-save"):
    """node-cache's rules in one ``iptables-save`` dump (found by their comments).

    Returns ``[{"family", "table", "chain", "rule", "addresses", "comment"}]`` in dump order;
    ``rule`` is the line as dumped, without a counter prefix.
    """
    rules, table = [], None
    for lineno, raw in enumerate((text or "").splitlines(), 1):
        if raw.startswith("*"):
            table = raw[1:].strip()
            continue
        if not raw or raw[0] not in "-[" or "NodeLocal DNS Cache" not in raw:
            continue
        line = raw[raw.find("] ") + 2:] if raw[0] == "[" else raw
        match = rule_match(split_rule(line, source, lineno))
        if match["comment"] not in COMMENTS:
            continue
        if table is None:
            raise ParseError("rule before any table header", source=source, lineno=lineno, line=raw, expected="iptables-save output")
        addresses = [a for a in (_address(match["destination"]), _address(match["source"])) if a]
        rules.append({"family": family, "table": table, "chain": line[3:].split(" ", 1)[0], "rule": line,
                      "addresses": addresses, "comment": match["comment"]})
    return rules


def cleanup_plan(saves, sockets, addresses, local_ips=(), interface="nodelocaldns"):
    """What node-cache left behind on a node where nothing answers on its addresses any more (NLD001).

    ``saves`` maps ``ipv4`` / ``ipv6`` to ``iptables-save`` / ``ip6tables-save`` output; ``sockets``
    is ``clusterdns_iptables.listeners.sockets`` (``ss -lnup``); ``addresses`` is
    :func:`parse_ip_addr` output; ``local_ips`` are the NodeLocal addresses expected (the role's
    ``nodelocaldns_local_ip``); ``interface`` is node-cache's own link (``-interfacename``).

    An address is left over when a node-cache rule names it (or it is in ``local_ips`` and sits on
    lo or on ``interface``) and no UDP socket listens on it, port 53. Planned: deleting every
    node-cache rule whose addresses are all left over (raw NOTRACK and filter ACCEPT, port 53 and
    the health port), deleting ``interface`` when none of its addresses answers, and deleting left
    over addresses from lo. No other interface is touched (kube-ipvs0 holds the kube-dns ClusterIP
    in IPVS mode): a left over address found there is only reported in ``kept``.

    Returns ``{"changes", "leftover", "answering", "rules", "restore", "tables", "link",
    "addresses", "commands", "undo", "actions", "kept", "diff"}``.
    """
    listening = [dict(s) for s in sockets or []]
    rules = []
    for family in ("ipv4", "ipv6"):
        if saves.get(family):
            rules.extend(nodecache_rules(saves[family], family, "%s-save" % _TOOLS[family]))
    candidates = []
    for item in [a for r in rules for a in r["addresses"]] + [str(a) for a in local_ips or ()]:
        if item not in candidates:
            candidates.append(item)
    on_nodecache_links = {a["address"] for a in addresses if a["dev"] == interface or a["kind"] == "loopback" or a["dev"] == "lo"}
    answered = [a for a in candidates if answering(listening, a, "udp")]
    leftover = [a for a in candidates if a not in answered and (any(a in r["addresses"] for r in rules) or a in on_nodecache_links)]
    result = {"changes": False, "leftover": leftover, "answering": answered, "rules": [], "restore": {}, "tables": {},
              "link": None, "addresses": [], "commands": [], "undo": [], "actions": [], "kept": [],
              "diff": {"before": "", "after": ""}}
    for address in answered:
        result["kept"].append("%s answers on port 53 (node-cache runs): its rules and address are kept" % address)

    by_table = {}
    for rule in rules:
        if rule["addresses"] and all(a in leftover for a in rule["addresses"]):
            result["rules"].append(rule)
            by_table.setdefault((rule["family"], rule["table"]), []).append(rule)
    for (family, table), items in sorted(by_table.items()):
        chunk = "*%s\n%s\nCOMMIT\n" % (table, "\n".join("-D " + r["rule"][3:] for r in items))
        result["restore"][family] = result["restore"].get(family, "") + chunk
        result["tables"].setdefault(family, []).append(table)
        for r in items:
            result["actions"].append("%s -t %s -D %s" % (_TOOLS[family], table, r["rule"][3:]))

    link_addresses = [a for a in addresses if a["dev"] == interface]
    link_seen = any(a["dev"] == interface for a in addresses)
    if link_seen and not any(a["address"] in answered for a in link_addresses):
        result["link"] = interface
        result["commands"].append(["ip", "link", "del", interface])
        result["undo"].append(["ip", "link", "add", interface, "type", "dummy"])
        for a in link_addresses:
            result["undo"].append(["ip", "addr", "add", "%s/%s" % (a["address"], a["prefixlen"]), "dev", interface])
        result["actions"].append("ip link del %s (node-cache's link, with %s)" % (
            interface, ", ".join(a["address"] for a in link_addresses) or "no address"))
    for a in addresses:
        if a["address"] not in leftover or a["dev"] == interface:
            continue
        if a["kind"] == "loopback" or a["dev"] == "lo":
            cidr = "%s/%s" % (a["address"], a["prefixlen"])
            result["addresses"].append(a)
            result["commands"].append(["ip", "addr", "del", cidr, "dev", a["dev"]])
            result["undo"].append(["ip", "addr", "add", cidr, "dev", a["dev"]])
            result["actions"].append("ip addr del %s dev %s" % (cidr, a["dev"]))
        else:
            result["kept"].append("%s on %s is not node-cache's (only lo and %s are cleaned): left alone" % (a["address"], a["dev"], interface))

    result["changes"] = bool(result["rules"] or result["commands"])
    if rules:
        removed = {id(r) for r in result["rules"]}
        before = ["# %s -t %s: %s" % (_TOOLS[r["family"]], r["table"], r["rule"]) for r in rules]
        after = ["# %s -t %s: %s" % (_TOOLS[r["family"]], r["table"], r["rule"]) for r in rules if id(r) not in removed]
        result["diff"] = {"before": "\n".join(before) + "\n", "after": "\n".join(after) + ("\n" if after else "")}
    return result


def _condition(obj, kind):
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def _labels_match(selector, labels):
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def rollout(daemonset, pods=(), nodes=()):
    """Whether a DaemonSet's pods run and are Ready on every node.

    With a DaemonSet controller (``status.observedGeneration`` set): the status counters
    (``updatedNumberScheduled``, ``numberReady``, ``numberAvailable`` equal to
    ``desiredNumberScheduled``, for the current generation). Without one (status never written,
    as in the clusterdns lab): one Ready pod matching the selector on every Ready node that matches
    the pod template's nodeSelector.

    Returns ``{"ready", "desired", "ready_count", "source", "summary"}``.
    """
    if not daemonset:
        return {"ready": False, "desired": None, "ready_count": 0, "source": None, "summary": "DaemonSet not found"}
    meta = daemonset.get("metadata") or {}
    status = daemonset.get("status") or {}
    name = "%s/%s" % (meta.get("namespace"), meta.get("name"))
    if status.get("observedGeneration") is not None:
        desired = int(status.get("desiredNumberScheduled") or 0)
        current = int(status["observedGeneration"]) >= int(meta.get("generation") or 0)
        counts = {key: int(status.get(key) or 0) for key in ("updatedNumberScheduled", "numberReady", "numberAvailable")}
        ready = current and all(v >= desired for v in counts.values()) and not int(status.get("numberUnavailable") or 0)
        lag = "" if current else " (controller has not seen the latest change yet)"
        summary = "%s: %d of %d pods ready, %d updated%s" % (name, counts["numberReady"], desired, counts["updatedNumberScheduled"], lag)
        return {"ready": ready, "desired": desired, "ready_count": counts["numberReady"], "source": "status", "summary": summary}
    spec = daemonset.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    node_selector = (((spec.get("template") or {}).get("spec")) or {}).get("nodeSelector") or {}
    ready_nodes = sorted((n.get("metadata") or {}).get("name") for n in nodes or ()
                         if _condition(n, "Ready") and _labels_match(node_selector, (n.get("metadata") or {}).get("labels")))
    pods_ready = set()
    for pod in pods or ():
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if _labels_match(selector, labels) and _condition(pod, "Ready") \
                and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            pods_ready.add((pod.get("spec") or {}).get("nodeName"))
    missing = [n for n in ready_nodes if n not in pods_ready]
    count = len([n for n in ready_nodes if n in pods_ready])
    summary = "%s: %d of %d nodes have a Ready pod%s" % (name, count, len(ready_nodes), ("; waiting on " + ", ".join(missing)) if missing else "")
    return {"ready": not missing, "desired": len(ready_nodes), "ready_count": count, "source": "pods", "summary": summary}


_CLUSTER_DNS_LINE = re.compile(r"^clusterDNS\s*:(.*)$")


def kubelet_cluster_dns(text, ips, source="config.yaml"):
    """The KubeletConfiguration ``text`` with ``clusterDNS`` set to ``ips`` (other lines kept).

    JSON files are rewritten as JSON (2-space indent); YAML files get their top-level
    ``clusterDNS`` block (block or flow sequence) replaced, or a ``clusterDNS`` block appended.
    The result is read back with the same parser as resolver_facts; ParseError when the input
    cannot be read (kubelet would refuse it too). Returns ``{"text", "changed", "before", "after"}``.
    """
    ips = [str(_ip(ip, "clusterDNS address")) for ip in ips]
    if not ips:
        raise ValueError("clusterDNS needs at least one address")
    current = parse_kubelet_config(text, source)
    before = current["cluster_dns"]
    if before == ips:
        return {"text": text, "changed": False, "before": before, "after": ips}
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        data["clusterDNS"] = ips
        new = json.dumps(data, indent=2) + "\n"
    else:
        lines = text.splitlines(True)
        newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
        block = "clusterDNS:" + newline + "".join("- %s%s" % (ip, newline) for ip in ips)
        out, i, done = [], 0, False
        while i < len(lines):
            if not done and _CLUSTER_DNS_LINE.match(lines[i].rstrip("\r\n")):
                out.append(block)
                done = True
                i += 1
                # the old items: indented or "- " lines, blank lines between them included
                end = i
                j = i
                while j < len(lines):
                    body = lines[j].rstrip("\r\n")
                    if body.startswith((" ", "-")) and not body.startswith("---"):
                        j += 1
                        end = j
                    elif not body.strip():
                        j += 1
                    else:
                        break
                i = end
                continue
            out.append(lines[i])
            i += 1
        if not done:
            if out and not out[-1].endswith("\n"):
                out.append(newline)
            out.append(block)
        new = "".join(out)
    check = parse_kubelet_config(new, source)
    if check["cluster_dns"] != ips:
        raise ValueError("%s: clusterDNS could not be set to %s (read back %r); edit the file by hand" % (source, ips, check["cluster_dns"]))
    return {"text": new, "changed": True, "before": before, "after": ips}
