# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure logic of the dns_probe module: server option parsing, the 12-byte DNS header of a reply,
# per server and transport counters, latency percentiles, and the classification of the outcome
# into the seeds' error table (NXDOMAIN, SERVFAIL, REFUSED, timeout, unreachable) with the next
# hop to check. Stdlib only; the sockets live in plugins/modules/dns_probe.py.

from __future__ import annotations

import ipaddress

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput, ParseError

# RFC 1035 4.1.1 and RFC 6895 2.3 (the codes a plain query can get back)
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
          6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}

HOPS = ("pod-clusterip", "pod-endpoint", "coredns-upstream", "node-resolver")
CLASSES = ("ok", "nxdomain", "servfail", "refused", "timeout", "loss", "unreachable", "error", "not_run")

# Error classes counted in ``errors`` (socket outcomes that are not a DNS reply).
ERROR_CLASSES = ("unreachable", "network", "malformed", "closed")

_GENERIC = {
    "ok": "",
    "not_run": "Nothing was sent: the time bound (max_seconds) ran out before this server and transport had its turn.",
    "nxdomain": "The server says the name does not exist. Check the name and the search path (ndots, WL004); "
                "for an external name, whether the upstream serves the zone (seed 002: NXDOMAIN from the upstream).",
    "servfail": "The server answered SERVFAIL: it failed to get an answer from its own upstream. "
                "Probe the next hop (CoreDNS -> upstream) and read the CoreDNS errors log for i/o timeouts (CDNS010).",
    "refused": "The server refused the query: it does not serve this client or zone (ACL, allowed interfaces, "
               "'local' zones, no upstream configured). Check the forward/upstream in the Corefile or the node resolv.conf (seed 002).",
    "timeout": "No reply at all. Packets are dropped on the way or ignored by the server: firewall rules on UDP/TCP 53 (IPT002), "
               "security groups (SG001), or a server that filters the interface the packets arrive on (DMQ001, seed 003).",
    "loss": "Some queries got no reply while others did: intermittent drops. Conntrack insert failures from parallel A/AAAA "
            "(CT002, KRN001, IPVS001), a full conntrack table (CT001), UDP receive-buffer drops or an overloaded server (NODE001, CDNS009).",
    "unreachable": "Nothing listens on that address and port (ICMP port unreachable or TCP reset): the DNS server is down "
                   "or bound to another address (DMQ002, NLD001); for a ClusterIP, kube-proxy rejects a Service without endpoints (IPT001, SVC002).",
    "error": "The replies could not be used (malformed, or the network reported an error such as no route): check routes and the server.",
}

# Hop-specific advice: what to probe or read next when this hop fails in this way.
_BY_HOP = {
    ("timeout", "pod-clusterip"): "The kube-dns ClusterIP does not answer the pod. Probe a CoreDNS endpoint from the same pod: "
                                  "if it answers, the fault is in kube-proxy's rules or conntrack on this node (IPT001, IPVS002, CT001); "
                                  "if not, a firewall or security group drops DNS on the pod path (IPT002, SG001).",
    ("timeout", "pod-endpoint"): "The CoreDNS pod does not answer the pod directly: a firewall or security group between the pod and the "
                                 "CoreDNS node (IPT002, SG001), or CoreDNS itself is unhealthy (CDNS001).",
    ("timeout", "coredns-upstream"): "The upstream does not answer CoreDNS: the upstream's ACL or firewall (SG001) or the upstream itself; "
                                     "CoreDNS logs 'i/o timeout' for it (CDNS010).",
    ("timeout", "node-resolver"): "The node's resolver does not answer: is it listening on that address and on the interface the "
                                  "packets arrive on (DMQ001, DMQ002, NLD001), or does a rule drop them (IPT002)?",
    ("unreachable", "pod-clusterip"): "The ClusterIP rejects DNS: kube-proxy's 'has no endpoints' reject (IPT001) or a kube-dns Service "
                                      "without ready endpoints (SVC002, CDNS001).",
    ("unreachable", "pod-endpoint"): "Nothing listens on the CoreDNS endpoint: the pod is gone or not ready (CDNS001); the Service "
                                     "endpoints are stale (SVC002, IPVS002).",
    ("unreachable", "node-resolver"): "Nothing listens on the node's resolver address: dnsmasq or node-cache is down or bound elsewhere "
                                      "(DMQ002, NLD001).",
    ("loss", "pod-clusterip"): "Part of the queries to the ClusterIP are lost: the DNAT conntrack race with parallel A/AAAA "
                               "(CT002, KRN001, IPVS001); compare with the same probe to a CoreDNS endpoint (no DNAT).",
}


def next_hop(classification, hop=None):
    """The advice for a classification, specific to ``hop`` (one of HOPS) when there is one."""
    return _BY_HOP.get((classification, hop)) or _GENERIC[classification]


def parse_server(text, default_port=53):
    """``10.96.0.10``, ``10.96.0.10:5353``, ``fd00::a``, ``[fd00::a]:5353`` -> (address, port).

    Raises InvalidInput naming the value and the accepted forms.
    """
    value = str(text).strip()
    address, port = value, default_port
    if value.startswith("["):
        address, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidInput("servers: %r is not a server; expected IP, IP:PORT or [IPv6]:PORT" % value)
        port = rest[1:] if rest else default_port
    elif value.count(":") == 1:
        address, port = value.split(":")
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        raise InvalidInput("servers: %r is not an IP address; expected IP, IP:PORT or [IPv6]:PORT (names are not resolved: "
                           "the probe must not depend on the DNS it tests)" % value) from None
    try:
        port = int(port)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise InvalidInput("servers: %r has no valid port; expected 1-65535" % value)
    return address, port


def parse_header(data, source="reply"):
    """(id, rcode, truncated, is_response) from the first 12 bytes of a DNS message (RFC 1035 4.1.1)."""
    if len(data) < 12:
        raise ParseError("DNS message shorter than its 12-byte header (%d bytes)" % len(data), source=source,
                         expected="a DNS reply from the server")
    flags = data[2]
    return (data[0] << 8) | data[1], data[3] & 0x0F, bool(flags & 0x02), bool(flags & 0x80)


def percentile(ordered, fraction):
    """Nearest-rank percentile of an ascending list (``fraction`` in 0..1); None for an empty list."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[min(int(rank), len(ordered)) - 1]


class TargetStats:
    """Counters for one server, port and transport."""

    def __init__(self, server, port, transport, hop=None):
        self.server = server
        self.port = port
        self.transport = transport
        self.hop = hop
        self.planned = 0
        self.sent = 0
        self.answered = 0
        self.timeouts = 0
        self.truncated = 0
        self.rcodes = {}
        self.errors = {}
        self.latencies = []
        self.source_port = None
        self.elapsed = 0.0

    def answer(self, rcode, latency, truncated=False):
        self.answered += 1
        name = RCODES.get(rcode, "RCODE%d" % rcode)
        self.rcodes[name] = self.rcodes.get(name, 0) + 1
        self.latencies.append(latency)
        if truncated:
            self.truncated += 1

    def add_replies(self, rcodes, latencies, truncated):
        """Bulk form of answer(): ``rcodes[code]`` replies per rcode, their latencies, the truncated count."""
        for code, number in enumerate(rcodes):
            if number:
                name = RCODES.get(code, "RCODE%d" % code)
                self.rcodes[name] = self.rcodes.get(name, 0) + number
                self.answered += number
        self.latencies.extend(latencies)
        self.truncated += truncated

    def error(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self):
        ordered = sorted(self.latencies)
        lost = self.sent - self.answered

        def ms(value):
            return None if value is None else round(value * 1000.0, 3)

        result = {
            "server": self.server, "port": self.port, "transport": self.transport, "hop": self.hop,
            "planned": self.planned, "sent": self.sent, "answered": self.answered, "lost": lost,
            "loss_ratio": round(lost / self.sent, 6) if self.sent else None,
            "rcodes": dict(sorted(self.rcodes.items())), "timeouts": self.timeouts, "truncated": self.truncated,
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": {"p50": ms(percentile(ordered, 0.50)), "p90": ms(percentile(ordered, 0.90)),
                           "p99": ms(percentile(ordered, 0.99)), "max": ms(ordered[-1] if ordered else None)},
            "qps": round(self.sent / self.elapsed, 1) if self.elapsed > 0 else None,
            "source_port": self.source_port,
        }
        result["classification"] = classify(result)
        result["next_hop"] = next_hop(result["classification"], self.hop)
        return result


def classify(summary):
    """One word for a target's outcome (CLASSES).

    No reply at all: ``unreachable`` when the network said so (ICMP port unreachable, TCP reset),
    else ``timeout`` (or ``error`` for other socket errors). Replies: the most frequent failing
    rcode (REFUSED, SERVFAIL, NXDOMAIN) wins over ``loss`` (some queries unanswered) when it
    counts more; a clean run is ``ok``.
    """
    if not summary["sent"]:
        return "not_run"
    errors = summary["errors"]
    if not summary["answered"]:
        if errors.get("unreachable"):
            return "unreachable"
        if summary["timeouts"]:
            return "timeout"
        return "error"
    rcodes = summary["rcodes"]
    failures = {"refused": rcodes.get("REFUSED", 0), "servfail": rcodes.get("SERVFAIL", 0),
                "nxdomain": rcodes.get("NXDOMAIN", 0),
                "loss": summary["sent"] - summary["answered"]}
    worst = max(failures, key=lambda key: (failures[key], -list(failures).index(key)))
    if failures[worst]:
        return worst
    if errors:
        return "error"
    return "ok"
