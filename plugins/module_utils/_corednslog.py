# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Streaming classifier for CoreDNS (and NodeLocal DNSCache node-cache) logs. Stdlib only.
# Line shapes accepted, each with or without a leading timestamp (``kubectl logs --timestamps``
# RFC 3339, CoreDNS 1.2-1.5 ``2019-04-17T00:18:44.485Z``, Go ``2018/11/05 13:48:16``) and with or
# without a pod prefix (``kubectl logs --prefix`` ``[pod/NAME/CONTAINER]``, ``stern`` style
# ``NAME CONTAINER``, ``node-cache``):
#   * log plugin, CoreDNS 1.3+: ``[INFO] CLIENT - ID "TYPE CLASS NAME PROTO SIZE DO BUFSIZE" RCODE FLAGS RSIZE DURs``;
#     CoreDNS 1.0-1.2: ``CLIENT - [DATE] ID "..." RCODE FLAGS RSIZE DURs`` (no level);
#   * errors plugin: ``[ERROR] plugin/errors: RCODE NAME TYPE: MESSAGE`` (upstream from ``->ADDR``);
#   * panics (``panic:``, ``Recovered from panic``), reloads (``Reloading``, ``Reloading complete``,
#     ``plugin/reload: Running configuration SHA512|MD5 = ...``, ``Corefile changed but reload failed``);
#   * loop detection: ``plugin/loop: Loop (A -> B) detected for zone "Z"`` and the 1.2 forms
#     ``Seen "HINFO IN ..." more than twice, loop detected`` / ``Forwarding loop detected in "Z" zone``;
#   * kubernetes plugin / client-go: ``plugin/kubernetes:`` warnings, ``Failed to watch *v1.X: ...
#     forbidden``, ``starting server with unsynced Kubernetes API``;
#   * Corefile errors: ``Unknown directive``, ``Error during parsing``, ``can only be used once per
#     Server Block``.

from __future__ import annotations

import re

RCODES_NUMERIC = {"0": "NOERROR", "1": "FORMERR", "2": "SERVFAIL", "3": "NXDOMAIN", "4": "NOTIMP", "5": "REFUSED"}
_LEVEL_RE = re.compile(r"\[(INFO|ERROR|WARNING|WARN|FATAL|DEBUG|PANIC)\] ")
_ERRORS_RE = re.compile(r"plugin/errors: (?P<rcode>\d+) (?P<name>\S+) (?P<qtype>[A-Z0-9]+): (?P<message>.*)$")
_UPSTREAM_RE = re.compile(r"->(\[[0-9a-fA-F:.]+\]:\d+|[0-9.]+:\d+)")
_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?|\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)")
_KPREFIX_RE = re.compile(r"^\[pod/([^/\]]+)/[^\]]*\]")
_LOOP_NEW_RE = re.compile(r'Loop \((?P<src>\S+) -> (?P<dst>\S+)\) detected for zone "(?P<zone>[^"]*)"')
_LOOP_OLD_ZONE_RE = re.compile(r'loop detected in "(?P<zone>[^"]*)" zone', re.I)
_HASH_RE = re.compile(r"Running configuration (?:SHA512|MD5) = ([0-9a-f]+)")
_PROBE_NAME_RE = re.compile(r"^\d+\.\d+\.$")
_FORBIDDEN_RE = re.compile(r'cannot (?:list|watch|get) resource "([^"]+)"')
_TICKET_CLASSES = ("timeout",)
_ERROR_CLASSES = (
    ("i/o timeout", "timeout"),
    ("timeout", "timeout"),
    ("connection refused", "refused"),
    ("no route to host", "unreachable"),
    ("network is unreachable", "unreachable"),
    ("operation not permitted", "eperm"),
    ("no healthy upstream", "no_healthy_upstream"),
    ("unreachable backend", "no_healthy_upstream"),
    ("concurrent queries exceeded", "max_concurrent"),
    ("overflow", "overflow"),
    ("no next plugin", "no_next_plugin"),
    ("connection reset", "reset"),
    ("EOF", "eof"),
)
_CONFIG_ERRORS = ("Unknown directive", "Error during parsing", "can only be used once per Server Block", "Corefile changed but reload failed",
                  "Restart failed")


class TopCounter:
    """Bounded frequency counter (Misra-Gries): at most ``capacity`` keys in memory. Counts are
    exact until a key has to be dropped; after that ``approximate`` is true and each count is a
    lower bound, off by at most ``dropped``."""

    def __init__(self, capacity=10000):
        self.capacity = capacity
        self.counts = {}
        self.dropped = 0

    @property
    def approximate(self):
        return self.dropped > 0

    def add(self, key):
        counts = self.counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < self.capacity:
            counts[key] = 1
        else:
            # Misra-Gries, batched: take the median count off every key (and off the new one),
            # so at least half the keys go and a pass costs O(capacity) per capacity/2 new keys.
            cut = sorted(counts.values())[len(counts) // 2]
            self.dropped += cut
            for other in list(counts):
                left = counts[other] - cut
                if left > 0:
                    counts[other] = left
                else:
                    del counts[other]

    def top(self, n):
        return [{"key": k, "count": c} for k, c in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def _classify_error(message):
    for needle, name in _ERROR_CLASSES:
        if needle in message:
            return name
    return "other"


def _prefix_facts(prefix):
    """(time, instance) from what comes before the CoreDNS part of a line."""
    match = _TIME_RE.search(prefix)
    when = match.group(1) if match else None
    rest = (prefix[:match.start()] + prefix[match.end():]) if match else prefix
    rest = rest.strip()
    pod = _KPREFIX_RE.match(rest)
    if pod:
        return when, pod.group(1)
    words = rest.split()
    return when, (words[0] if words else None)


class LogSummary:
    """Feed lines with ``add(line)``; ``result()`` gives the summary. Memory is bounded by
    ``track`` (distinct names and clients kept), ``max_tickets`` and ``max_events``."""

    def __init__(self, instance=None, max_tickets=20, top=10, ticket_rcodes=("SERVFAIL", "REFUSED"), track=10000, max_events=20):
        self.instance = instance
        self.max_tickets = max_tickets
        self.top_n = top
        self.ticket_rcodes = frozenset(r.upper() for r in ticket_rcodes)
        self.max_events = max_events
        self.lines = 0
        self.queries = 0
        self.by_rcode = {}
        self.by_qtype = {}
        self.by_proto = {}
        self.names = TopCounter(track)
        self.clients = TopCounter(track)
        self.failed_names = TopCounter(track)
        self.slow = 0
        self.upstreams = {}
        self.error_classes = {}
        self.errors = 0
        self.reloads = {"count": 0, "completed": 0, "failed": 0, "last": None, "config_hash": None}
        self.loop = None
        self.panics = []
        self.panic_count = 0
        self.kubernetes = {"count": 0, "forbidden": [], "unsynced": False, "last": None}
        self.corefile_errors = []
        self.tickets = {}
        self.tickets_dropped = 0
        self.unrecognised = 0

    # -- helpers -------------------------------------------------------------------------------
    def _event(self, lineno, line, prefix):
        when, instance = _prefix_facts(prefix)
        return {"lineno": lineno, "line": line, "time": when, "instance": self.instance or instance}

    def _ticket(self, name, rcode, lineno, line, prefix, reason):
        if _PROBE_NAME_RE.match(name):  # the loop plugin's random HINFO probe: not a user's domain
            return
        key = (name, rcode)
        ticket = self.tickets.get(key)
        when, instance = _prefix_facts(prefix)
        instance = self.instance or instance
        if ticket is None:
            if len(self.tickets) >= self.max_tickets:
                self.tickets_dropped += 1
                return
            ticket = self.tickets[key] = {"domain": name, "rcode": rcode, "reason": reason, "count": 0, "first_time": when,
                                          "time": when, "instances": [], "lineno": lineno, "line": line}
        ticket["count"] += 1
        ticket["time"] = when or ticket["time"]
        if instance and instance not in ticket["instances"] and len(ticket["instances"]) < 20:
            ticket["instances"].append(instance)

    # -- one line ------------------------------------------------------------------------------
    def add(self, line, lineno=None):
        self.lines += 1
        lineno = lineno or self.lines
        line = line.rstrip("\r\n")
        if '" ' in line and self._query(line, lineno):
            return
        level = _LEVEL_RE.search(line)
        body = line[level.end():] if level else line
        prefix = line[:level.start()] if level else ""
        if "plugin/errors:" in body:
            self._errors_line(body, line, lineno, prefix)
        elif "panic" in body and ("panic:" in body or "Recovered from panic" in body):
            self.panic_count += 1
            if len(self.panics) < self.max_events:
                self.panics.append(self._event(lineno, line, prefix))
        elif "plugin/loop:" in body or "loop detected" in body.lower():
            self._loop(body, line, lineno, prefix)
        elif "Reloading" in body or "plugin/reload:" in body:
            self._reload(body, line, lineno, prefix)
        elif "plugin/kubernetes" in body or "Failed to watch" in body or "Failed to list" in body or "failed to list" in body:
            self._kubernetes(body, line, lineno, prefix)
        elif any(needle in body for needle in _CONFIG_ERRORS):
            if len(self.corefile_errors) < self.max_events:
                self.corefile_errors.append(self._event(lineno, line, prefix))
        else:
            self.unrecognised += 1

    def _query(self, line, lineno):
        """A log-plugin query line (split by hand: a regex search per line is three times slower)."""
        open_quote = line.find(' "')
        close_quote = line.find('" ', open_quote + 2)
        if open_quote < 0 or close_quote < 0:
            return False
        question = line[open_quote + 2:close_quote].split(" ")
        tail = line[close_quote + 2:].split()
        head = line[:open_quote]
        dash = head.rfind(" - ")
        if len(question) != 7 or len(tail) < 4 or dash < 0 or not tail[3].endswith("s") or not tail[2].isdigit():
            return False
        qtype, _qclass, name, proto = question[:4]
        rcode = RCODES_NUMERIC.get(tail[0], tail[0])
        start = head.rfind(" ", 0, dash)
        client = head[start + 1:dash]
        self.queries += 1
        by_rcode = self.by_rcode
        by_rcode[rcode] = by_rcode.get(rcode, 0) + 1
        self.by_qtype[qtype] = self.by_qtype.get(qtype, 0) + 1
        self.by_proto[proto] = self.by_proto.get(proto, 0) + 1
        self.names.add(name)
        self.clients.add(client.rpartition(":")[0] or client)
        try:
            if float(tail[3][:-1]) >= 1.0:
                self.slow += 1
        except ValueError:
            pass
        if rcode not in ("NOERROR", "NXDOMAIN"):
            self.failed_names.add(name)
        if rcode in self.ticket_rcodes:
            self._ticket(name, rcode, lineno, line, head[:start + 1], "rcode")
        return True

    def _errors_line(self, body, line, lineno, prefix):
        self.errors += 1
        match = _ERRORS_RE.search(body)
        message = match.group("message") if match else body
        klass = _classify_error(message)
        self.error_classes[klass] = self.error_classes.get(klass, 0) + 1
        upstream = _UPSTREAM_RE.search(message)
        if upstream:
            entry = self.upstreams.setdefault(upstream.group(1), {"count": 0, "classes": {}})
            entry["count"] += 1
            entry["classes"][klass] = entry["classes"].get(klass, 0) + 1
        if match:
            rcode = RCODES_NUMERIC.get(match.group("rcode"), match.group("rcode"))
            if klass in _TICKET_CLASSES or rcode in self.ticket_rcodes:
                self._ticket(match.group("name"), rcode, lineno, line, prefix, klass)

    def _loop(self, body, line, lineno, prefix):
        if self.loop is not None:
            return
        event = self._event(lineno, line, prefix)
        new = _LOOP_NEW_RE.search(body)
        old = _LOOP_OLD_ZONE_RE.search(body)
        event.update({"zone": new.group("zone") if new else (old.group("zone") if old else None),
                      "from": new.group("src") if new else None, "to": new.group("dst") if new else None})
        self.loop = event

    def _reload(self, body, line, lineno, prefix):
        stats = self.reloads
        if "reload failed" in body or "Restart failed" in body:
            stats["failed"] += 1
            if len(self.corefile_errors) < self.max_events:
                self.corefile_errors.append(self._event(lineno, line, prefix))
            return
        digest = _HASH_RE.search(body)
        if digest:
            stats["config_hash"] = digest.group(1)
            return
        if "Reloading complete" in body:
            stats["completed"] += 1
            stats["last"] = self._event(lineno, line, prefix)
        elif body.strip() == "Reloading":
            stats["count"] += 1

    def _kubernetes(self, body, line, lineno, prefix):
        info = self.kubernetes
        info["count"] += 1
        info["last"] = self._event(lineno, line, prefix)
        if "unsynced Kubernetes API" in body:
            info["unsynced"] = True
        forbidden = _FORBIDDEN_RE.search(body)
        if forbidden and forbidden.group(1) not in info["forbidden"]:
            info["forbidden"].append(forbidden.group(1))

    # -- result --------------------------------------------------------------------------------
    def result(self):
        tickets = sorted(self.tickets.values(), key=lambda t: (-t["count"], t["domain"]))
        return {
            "lines": self.lines,
            "queries": self.queries,
            "by_rcode": dict(sorted(self.by_rcode.items())),
            "by_qtype": dict(sorted(self.by_qtype.items())),
            "by_proto": dict(sorted(self.by_proto.items())),
            "top_names": [{"name": e["key"], "count": e["count"]} for e in self.names.top(self.top_n)],
            "top_failed_names": [{"name": e["key"], "count": e["count"]} for e in self.failed_names.top(self.top_n)],
            "top_clients": [{"client": e["key"], "count": e["count"]} for e in self.clients.top(self.top_n)],
            "counts_approximate": self.names.approximate or self.clients.approximate or self.failed_names.approximate,
            "slow_queries": self.slow,
            "errors": self.errors,
            "error_classes": dict(sorted(self.error_classes.items())),
            "upstream_errors": dict(sorted(self.upstreams.items())),
            "reloads": self.reloads,
            "loop_detected": self.loop is not None,
            "loop": self.loop,
            "panics": {"count": self.panic_count, "events": self.panics},
            "kubernetes": self.kubernetes,
            "corefile_errors": self.corefile_errors,
            "tickets": tickets,
            "tickets_dropped": self.tickets_dropped,
            "unrecognised": self.unrecognised,
        }


def summarize(lines, **options):
    """Classify an iterable of log lines (a file object streams); returns ``LogSummary.result()``."""
    summary = LogSummary(**options)
    for lineno, line in enumerate(lines, 1):
        summary.add(line, lineno)
    return summary.result()
