# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for dns_drop_trace (stdlib only, text in, plain data out):
#   * the kfree_skb tracepoint format file (fields, and the skb_drop_reason names from the
#     ``print fmt`` __print_symbolic list: numbers are never hard-coded, they change between kernels);
#   * ``bpftrace --version``;
#   * the output of the program in _droptrace_bt (samples, in-kernel counts, markers);
#   * /proc/net/stat/nf_conntrack (per-CPU counters, summed) and the delta over the trace window;
#   * /proc/self/mountinfo (is tracefs mounted, where) and the CapEff line of /proc/self/status.

from __future__ import annotations

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._conntrack import parse_stat_file
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput, ParseError

# --- tracepoint format file -------------------------------------------------------------------

_FIELD = re.compile(r"^\s*field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);")
_SYMBOLIC = re.compile(r"__print_symbolic\(\s*REC->reason\s*,(?P<body>.*)\)\s*$")
_PAIR = re.compile(r"\{\s*(?P<num>-?\d+)\s*,\s*\"(?P<name>[A-Za-z0-9_]+)\"\s*\}")


def parse_tracepoint_format(text, source="events/skb/kfree_skb/format"):
    """Parse a tracefs ``events/<system>/<event>/format`` file.

    Accepts the layout every kernel since 2.6.3x writes (``name:``, ``ID:``, ``format:`` with
    ``field:<type> <name>;\\toffset:N;\\tsize:N;\\tsigned:N;`` lines, ``print fmt:``). Checked with
    the kfree_skb format of Linux 6.18 (reason enum up to 128) and of kernels before 5.17 (no
    ``reason`` field).

    Returns ``{"name", "id", "fields": {name: type}, "has_reason": bool, "reasons": {int: str}}``;
    ``reasons`` is read from ``__print_symbolic(REC->reason, { N, "NAME" }, ...)`` and is empty when
    the kernel has no reason field. Raises ParseError when the text is not a format file, or when a
    ``reason`` field exists but its names cannot be read.
    """
    name = None
    event_id = None
    fields = {}
    print_fmt = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("ID:"):
            try:
                event_id = int(line.split(":", 1)[1].strip())
            except ValueError:
                raise ParseError("event ID is not a number", source=source, lineno=lineno, line=line, expected="ID: <integer>") from None
        elif line.startswith("print fmt:"):
            print_fmt = (lineno, line)
        else:
            match = _FIELD.match(line)
            if match:
                decl = match.group("decl").strip()
                ftype, _sep, fname = decl.rpartition(" ")
                fname = fname.split("[", 1)[0]
                if not ftype or not fname:
                    raise ParseError("field declaration without a type", source=source, lineno=lineno, line=line,
                                     expected="field:<type> <name>;")
                fields[fname] = ftype.strip()
    if name is None or not fields:
        raise ParseError("not a tracepoint format file (no 'name:' line or no 'field:' lines)", source=source,
                         expected="the content of /sys/kernel/tracing/events/skb/kfree_skb/format")
    reasons = {}
    has_reason = "reason" in fields
    if has_reason:
        if print_fmt is None:
            raise ParseError("the 'reason' field has no 'print fmt:' line to take its names from", source=source,
                             expected="print fmt: ... __print_symbolic(REC->reason, { N, \"NAME\" }, ...)")
        lineno, line = print_fmt
        match = _SYMBOLIC.search(line)
        if match:
            reasons = {int(pair.group("num")): pair.group("name") for pair in _PAIR.finditer(match.group("body"))}
        if not reasons:
            raise ParseError("no drop reason names in the print format", source=source, lineno=lineno, line=line[:200],
                             expected="__print_symbolic(REC->reason, { N, \"NAME\" }, ...)")
    return {"name": name, "id": event_id, "fields": fields, "has_reason": has_reason, "reasons": reasons}


# --- bpftrace --version ------------------------------------------------------------------------

_VERSION = re.compile(r"^bpftrace v?(\d+)\.(\d+)\.(\d+)\S*\s*$")


def parse_bpftrace_version(text, source="bpftrace --version"):
    """``bpftrace v0.17.0`` (Debian 12), ``bpftrace v0.20.1`` or ``bpftrace v0.21.0-12-gabcdef`` -> (0, 17, 0)."""
    for lineno, line in enumerate(text.splitlines(), 1):
        match = _VERSION.match(line.strip())
        if match:
            return tuple(int(part) for part in match.groups())
        if line.strip():
            raise ParseError("unrecognised version line", source=source, lineno=lineno, line=line,
                             expected="bpftrace vMAJOR.MINOR.PATCH")
    raise ParseError("empty output", source=source, expected="bpftrace vMAJOR.MINOR.PATCH")


def probe_attach_error(stderr, symbol):
    """The ``ERROR: Error attaching probe: '...<symbol>'`` line of bpftrace's stderr, or None.

    bpftrace 0.17 prints it when a kprobe/kretprobe cannot be attached (no kprobe support, symbol
    inlined or notrace); the caller then runs again without that probe."""
    for line in stderr.splitlines():
        if line.startswith("ERROR: Error attaching probe:") and symbol in line:
            return line.strip()
    return None


# --- the trace program's output ------------------------------------------------------------------

_MAP_LINE = re.compile(r"^@(?P<map>\w+)(?:\[(?P<key>.*)\])?: (?P<value>\d+)$")
_ATTACHING = re.compile(r"^Attaching \d+ probes?\.\.\.$")
_LOST = re.compile(r"^Lost (?P<n>\d+) events$")
_SAMPLE_FIELDS = ("ns", "reason", "location", "netns", "netns_from", "interface", "ipver", "l4proto",
                  "src", "sport", "dst", "dport", "ct")
_FLOW_FIELDS = ("reason", "location", "netns", "interface", "l4proto", "src", "sport", "dst", "dport", "ct")
_L4 = {6: "tcp", 17: "udp"}


def parse_trace_output(text, reasons, ports, source="bpftrace output"):
    """Parse the stdout of the _droptrace_bt program (any bpftrace from 0.17 on, text output).

    ``reasons`` maps drop reason numbers to names (parse_tracepoint_format), or is None when the
    kernel has no reason field (records then carry ``reason: None``). ``ports`` are the DNS ports:
    a record whose destination port is one of them is a ``query``, otherwise a ``reply``.

    Returns ``{"attached", "ended", "budget_reached", "lost_events", "seen", "ct_fail_all",
    "samples": [...], "drops": [...], "flows": [...]}``; ``drops`` and ``flows`` are the in-kernel
    counts (complete), ``samples`` the first records one by one. Raises ParseError on a line that
    is none of the documented ones, naming it.
    """
    out = {"attached": None, "ended": None, "budget_reached": False, "lost_events": 0, "seen": None,
           "ct_fail_all": None, "samples": [], "drops": [], "flows": []}
    ports = set(ports)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\n")
        if not line.strip() or _ATTACHING.match(line):
            continue
        lost = _LOST.match(line)
        if lost:
            out["lost_events"] += int(lost.group("n"))
            continue
        try:
            if line.startswith("CDD-ATTACHED "):
                out["attached"] = int(line.split(" ")[1])
            elif line.startswith("CDD-END "):
                out["ended"] = int(line.split(" ")[1])
            elif line.startswith("CDD-BUDGET "):
                out["budget_reached"] = True
            elif line.startswith("CDD-SAMPLE "):
                out["samples"].append(_sample(line, reasons, ports))
            elif line.startswith("@"):
                _map_line(out, line, reasons, ports)
            else:
                raise ValueError("unknown line")
        except (ValueError, IndexError) as exc:
            raise ParseError("unexpected trace output (%s)" % exc, source=source, lineno=lineno, line=line,
                             expected="CDD-ATTACHED/CDD-SAMPLE/CDD-BUDGET/CDD-END lines or @cdd_* map lines") from None
    if out["attached"] is not None:
        for sample in out["samples"]:
            sample["t"] = round(max(sample.pop("ns") - out["attached"], 0) / 1e9, 6)
    else:
        for sample in out["samples"]:
            sample.pop("ns")
            sample["t"] = None
    return out


def _sample(line, reasons, ports):
    parts = line.split(" ")[1:]
    if len(parts) != len(_SAMPLE_FIELDS):
        raise ValueError("%d fields, expected %d" % (len(parts), len(_SAMPLE_FIELDS)))
    raw = dict(zip(_SAMPLE_FIELDS, parts))
    record = _record(raw, reasons, ports)
    record["ns"] = int(raw["ns"])
    record["netns_from"] = raw["netns_from"] if raw["netns_from"] in ("dev", "sk", "none") else _bad("netns_from")
    return record


def _map_line(out, line, reasons, ports):
    match = _MAP_LINE.match(line)
    if not match:
        raise ValueError("not a map line")
    name, key, value = match.group("map"), match.group("key"), int(match.group("value"))
    if name == "cdd_seen" and key is None:
        out["seen"] = value
    elif name == "cdd_ct_fail_all" and key is None:
        out["ct_fail_all"] = value
    elif name == "cdd_drops" and key is not None:
        code, location = key.split(", ")
        out["drops"].append({"reason": _reason_name(int(code), reasons), "reason_code": int(code),
                             "location": location or None, "count": value})
    elif name == "cdd_flows" and key is not None:
        parts = key.split(", ")
        if len(parts) != len(_FLOW_FIELDS):
            raise ValueError("%d key fields, expected %d" % (len(parts), len(_FLOW_FIELDS)))
        record = _record(dict(zip(_FLOW_FIELDS, parts)), reasons, ports)
        record["count"] = value
        out["flows"].append(record)
    else:
        raise ValueError("unknown map @%s" % name)


def _record(raw, reasons, ports):
    code = int(raw["reason"])
    l4 = int(raw["l4proto"])
    src, dst = raw["src"], raw["dst"]
    dport = int(raw["dport"])
    return {
        "reason": _reason_name(code, reasons),
        "reason_code": code,
        "location": raw["location"] or None,
        "netns": int(raw["netns"]) or None,
        "interface": raw["interface"] or None,
        "family": "ipv6" if ":" in src or ":" in dst else "ipv4",
        "protocol": _L4.get(l4) or _bad("l4proto"),
        "src": src,
        "sport": int(raw["sport"]),
        "dst": dst,
        "dport": dport,
        "direction": "query" if dport in ports else "reply",
        "conntrack_confirm_failed": int(raw["ct"]) != 0,
    }


def _reason_name(code, reasons):
    if reasons is None:
        return None
    return reasons.get(code, "UNKNOWN_%d" % code)


def _bad(what):
    raise ValueError("bad %s" % what)


# --- aggregation ---------------------------------------------------------------------------------

# Reasons that free a packet because its socket is going away, not because the network lost it:
# a TCP DNS client that closes its socket after reading the answer leaves QUEUE_PURGE frees in
# sk_stream_kill_queues (seen on Linux 6.18 for every dig +tcp). They are counted and returned
# with kind "teardown" but are not losses.
TEARDOWN_REASONS = frozenset(("QUEUE_PURGE", "SOCKET_CLOSE", "TCP_CLOSE"))


def kind_of(reason):
    """``teardown`` for the socket-teardown reasons above, ``loss`` for everything else (also
    for ``None``, the location-only mode, where nothing can be told apart)."""
    return "teardown" if reason in TEARDOWN_REASONS else "loss"


def aggregate(parsed, flow_limit=50):
    """Counts by reason, by (reason, location) and the ``flow_limit`` biggest flows, from the
    in-kernel counts of parse_trace_output. Sorted by count (descending), then name."""
    by_reason = {}
    for drop in parsed["drops"]:
        key = (drop["reason"], drop["reason_code"])
        by_reason[key] = by_reason.get(key, 0) + drop["count"]
    reasons = [{"reason": name, "reason_code": code, "kind": kind_of(name), "count": count} for (name, code), count in by_reason.items()]
    reasons.sort(key=lambda item: (-item["count"], item["reason_code"]))
    locations = [dict(item, kind=kind_of(item["reason"])) for item in parsed["drops"]]
    locations.sort(key=lambda item: (-item["count"], item["reason_code"], item["location"] or ""))
    flows = sorted(parsed["flows"], key=lambda item: (-item["count"], item["src"], item["sport"], item["dst"], item["dport"]))
    total = sum(item["count"] for item in reasons)
    teardown = sum(item["count"] for item in reasons if item["kind"] == "teardown")
    return {
        "total": total,
        "losses": total - teardown,
        "teardown": teardown,
        "by_reason": reasons,
        "by_location": locations,
        "flows": [dict(item) for item in flows[:flow_limit]],
        "flows_truncated": max(len(flows) - flow_limit, 0),
        "conntrack_confirm_failed": sum(item["count"] for item in flows if item["conntrack_confirm_failed"]),
    }


def summarize(aggregated, seconds):
    """One sentence for a report: what the kernel dropped, by reason and location; socket
    teardown frees are mentioned apart, since they lose no DNS message."""
    losses = [item for item in aggregated["by_location"] if item["kind"] == "loss"]
    total = aggregated["losses"]
    if not total:
        text = "no kernel drop of DNS packets in %.1f s" % seconds
    else:
        parts = ["%d %s in %s" % (item["count"], item["reason"] or "(no reason field)", item["location"] or "?") for item in losses[:3]]
        more = len(losses) - 3
        text = "kernel dropped %d DNS packet%s in %.1f s: %s%s" % (
            total, "" if total == 1 else "s", seconds, ", ".join(parts), ", and %d more location(s)" % more if more > 0 else "")
    if aggregated["teardown"]:
        names = sorted({item["reason"] for item in aggregated["by_location"] if item["kind"] == "teardown"})
        text += " (%d more freed at socket teardown, not a loss: %s)" % (aggregated["teardown"], ", ".join(names))
    return text


# --- /proc/net/stat/nf_conntrack -----------------------------------------------------------------

def parse_conntrack_stat(text, source="/proc/net/stat/nf_conntrack"):
    """Per-CPU rows of /proc/net/stat/nf_conntrack summed (see _conntrack.parse_stat_file), as one
    ``{column: int}`` dict with ``entries`` taken once."""
    parsed = parse_stat_file(text, source=source)
    return dict(parsed["counters"], entries=parsed["entries"])


CT_DELTA_COLUMNS = ("insert_failed", "drop", "clashres", "early_drop", "insert")


def conntrack_delta(before, after):
    """Per-column increase between two parse_conntrack_stat results (columns both have)."""
    return {name: after[name] - before[name] for name in CT_DELTA_COLUMNS if name in before and name in after}


# --- mounts and capabilities ---------------------------------------------------------------------

def tracefs_mounts(mountinfo):
    """Mount points of tracefs in a /proc/self/mountinfo text (``... - tracefs <src> <opts>``)."""
    points = []
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        if post.split(" ", 1)[0] == "tracefs":
            fields = pre.split(" ")
            if len(fields) > 4:
                points.append(fields[4].replace("\\040", " "))
    return points


CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def missing_capabilities(status):
    """Names of the capabilities a BPF tracer lacks, from /proc/self/status's CapEff line.

    Tracing needs CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON (kernel 5.8+). Returns [] when the
    set is enough, else the list of names to grant; ParseError when there is no CapEff line."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            try:
                caps = int(line.split(":", 1)[1].strip(), 16)
            except ValueError:
                raise ParseError("CapEff is not hex", source="/proc/self/status", line=line) from None
            if caps & (1 << CAP_SYS_ADMIN):
                return []
            if caps & (1 << CAP_BPF) and caps & (1 << CAP_PERFMON):
                return []
            return ["CAP_SYS_ADMIN"] if not caps & (1 << CAP_BPF | 1 << CAP_PERFMON) else \
                [name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")) if not caps & (1 << bit)]
    raise ParseError("no CapEff line", source="/proc/self/status", expected="CapEff:\t<hex>")


# --- evidence for finding rules ---------------------------------------------------------------------
# Rules read ansible_facts.clusterdns_drop_trace (the module's result) through these helpers so that
# every finding cites the trace the same way.

def _checked(trace):
    if not isinstance(trace, dict) or "available" not in trace:
        raise InvalidInput("clusterdns_drop_trace must be the dict dns_drop_trace returns, got %s" % type(trace).__name__)
    if not trace["available"]:
        return None
    for key in ("by_location", "flows", "loss_drops", "window"):
        if key not in trace:
            raise InvalidInput("clusterdns_drop_trace has no %r: not a result of dns_drop_trace" % key)
    return trace


def kernel_verdict(trace):
    """``dropped`` when the kernel dropped DNS packets in the window (socket teardown frees do not
    count), ``not_dropped`` when it dropped none, None when there was no trace."""
    trace = _checked(trace)
    if trace is None:
        return None
    return "dropped" if trace["loss_drops"] else "not_dropped"


def drop_evidence(trace, reasons=None, netns=None, direction=None, max_examples=3, protocol=None):
    """Evidence of kernel DNS drops for a finding, or None (no trace, or no matching drop).

    ``reasons`` limits it to drop reason names (for example ``("NETFILTER_DROP",)``), ``netns`` to
    namespace inodes, ``direction`` to ``query`` or ``reply``, ``protocol`` to ``udp`` or ``tcp``.
    Without ``netns``/``direction``/``protocol`` the
    count comes from the complete per-location counts; with them it comes from the flows, which
    the module bounds (``complete`` is then False when flows were left out).

    Returns ``{"count", "complete", "by_location": [...], "examples": [...], "namespaces": [...],
    "text"}``, where ``namespaces`` are the trace's entries (names under /run/netns, processes) for
    the namespaces of the examples, and ``text`` is one sentence such as "kernel dropped 4 DNS
    packets in 8.2 s: 4 NETFILTER_DROP in nft_do_chain; e.g. udp 192.0.2.1:41766 -> 192.0.2.2:53
    on cdt1s0 (netns 4026532315 cdt1s)" (the namespace's first name, when it has one).
    """
    trace = _checked(trace)
    if trace is None:
        return None
    wanted = set(reasons) if reasons else None
    netnses = set(netns) if netns else None

    def keep(item):
        return (item["kind"] if "kind" in item else kind_of(item["reason"])) == "loss" and (wanted is None or item["reason"] in wanted)

    flows = [flow for flow in trace["flows"] if keep(flow)
             and (netnses is None or flow["netns"] in netnses) and (direction is None or flow["direction"] == direction)
             and (protocol is None or flow["protocol"] == protocol)]
    if netnses is None and direction is None and protocol is None:
        locations = [item for item in trace["by_location"] if keep(item)]
        complete = True
    else:
        merged = {}
        for flow in flows:
            key = (flow["reason"], flow["reason_code"], flow["location"])
            merged[key] = merged.get(key, 0) + flow["count"]
        locations = [{"reason": name, "reason_code": code, "location": where, "count": count}
                     for (name, code, where), count in merged.items()]
        locations.sort(key=lambda item: (-item["count"], item["reason_code"], item["location"] or ""))
        complete = not trace.get("flows_truncated")
    count = sum(item["count"] for item in locations)
    if not count:
        return None
    seconds = trace["window"].get("seconds_traced") or trace["window"].get("seconds_requested") or 0
    parts = ", ".join("%d %s in %s" % (item["count"], item["reason"] or "(no reason field)", item["location"] or "?")
                      for item in locations[:3])
    examples = flows[:max_examples]
    known = {item.get("netns"): item for item in trace.get("namespaces") or [] if isinstance(item, dict)}
    namespaces = [known[inode] for inode in sorted({flow["netns"] for flow in examples if flow["netns"] in known})]
    text = "kernel dropped %d DNS packet%s in %.1f s: %s" % (count, "" if count == 1 else "s", seconds, parts)
    if examples:
        flow = examples[0]
        names = (known.get(flow["netns"]) or {}).get("names") or []
        text += "; e.g. %s %s -> %s%s (netns %s%s)" % (
            flow["protocol"], _endpoint(flow["src"], flow["sport"]), _endpoint(flow["dst"], flow["dport"]),
            " on %s" % flow["interface"] if flow["interface"] else "", flow["netns"], " %s" % names[0] if names else "")
    if not complete:
        text += " (at least; some flows were not returned)"
    return {"count": count, "complete": complete, "by_location": locations, "examples": examples, "namespaces": namespaces, "text": text}


def _endpoint(address, port):
    return "[%s]:%d" % (address, port) if ":" in address else "%s:%d" % (address, port)


def conntrack_confirmation(trace):
    """CT002 seen live: conntrack insert failures during the trace window, or None.

    Returns ``{"method", "insert_failed", "confirm_failed_dns", "dns_drops", "text"}`` when the
    kprobe saw a refused DNS packet or the node's ``insert_failed`` counter rose during the
    window; None when there was no trace, no conntrack part, or nothing was seen.

    With the counters method, ``dns_drops`` is the drop_evidence of the ``NETFILTER_DROP`` drops
    of DNS packets in the namespace whose counters were read (``conntrack.netns``) during the same
    window, or None: a packet whose conntrack entry was refused is freed as ``NETFILTER_DROP`` (in
    ``nf_hook_slow`` on Linux 6.18), so these are the DNS packets the refusals can have hit. A
    firewall DROP in that namespace in the same window would be counted with them."""
    trace = _checked(trace)
    if trace is None or not trace.get("conntrack"):
        return None
    ct = trace["conntrack"]
    delta = ct.get("counters_delta") or {}
    insert_failed = delta.get("insert_failed", 0)
    dns = ct.get("confirm_failed_dns") or 0
    if not insert_failed and not dns:
        return None
    seconds = trace["window"].get("seconds_traced") or trace["window"].get("seconds_requested") or 0
    dns_drops = None
    if ct.get("method") == "kprobe":
        text = "conntrack refused %d DNS packet%s in %.1f s (__nf_conntrack_confirm returned NF_DROP; insert_failed +%d)" % (
            dns, "" if dns == 1 else "s", seconds, insert_failed)
    else:
        text = "conntrack insert_failed rose by %d during the %.1f s trace" % (insert_failed, seconds)
        if ct.get("netns"):
            dns_drops = drop_evidence(trace, reasons=("NETFILTER_DROP",), netns=(ct["netns"],))
        if dns_drops:
            text += ", and in the same network namespace the %s" % dns_drops["text"]
    return {"method": ct.get("method"), "insert_failed": insert_failed, "confirm_failed_dns": dns if ct.get("method") == "kprobe" else None,
            "dns_drops": dns_drops, "text": text}
