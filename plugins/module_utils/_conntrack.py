# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for the kernel's connection-tracking statistics (and netns_of_this_process, which
# reads /proc). Stdlib only.
#
# Three real formats carry the same counters:
#   * /proc/net/stat/nf_conntrack: a header of field names, then one line of hexadecimal values per
#     CPU. The fields changed over time (4.x: "searched ... delete_list"; 5.x: "clashres";
#     6.x: "chainlength"), so fields are taken from the header, never by position.
#   * ``conntrack -S`` (conntrack-tools >= 1.4.5, ctnetlink): one "cpu=N key=value ..." line per CPU.
#   * ``conntrack -S`` (conntrack-tools 1.4.4, read from /proc): one "key<TAB><TAB>value" line per
#     counter, already summed, sometimes followed by an "Operation failed" line.
# ``entries`` is the table size repeated on every CPU line: it is taken once, never summed.

from __future__ import annotations

import os
import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

# Counters that mean DNS packets were dropped by conntrack (the DNAT race of kubernetes#56903
# shows as insert_failed; a full table as drop and early_drop).
DROP_COUNTERS = ("insert_failed", "drop", "early_drop")

# The init namespace's table: "table full, dropping packet"; any other namespace's (kernel 5.x and
# later): "table full in netns <inode>, dropping packet" (6.18 prints the prefix twice).
TABLE_FULL = re.compile(r"nf_conntrack: (?:nf_conntrack: )?table full(?: in netns (?P<netns>\d+))?, dropping packet")
# "[38775494.392631] ..." (dmesg), "[Tue Nov 20 22:30:22 2018] ..." (dmesg -T) or "2024-05-01T10:00:00+0000 ..." / "Feb 23 16:44:36 host kernel: ..."
_DMESG_TS = re.compile(r"^\[\s*(?P<mono>\d+\.\d+)\]")
_DMESG_T_TS = re.compile(r"^\[(?P<human>[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4})\]")
_ISO_TS = re.compile(r"^(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*)")
_SYSLOG_TS = re.compile(r"^(?P<sys>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)")
_CPU_LINE = re.compile(r"^cpu=(\d+)\s+(.*)$")
_KV = re.compile(r"(\w+)=(\d+)")


def parse_stat_file(text, source="/proc/net/stat/nf_conntrack"):
    """Sum the per-CPU counters of /proc/net/stat/nf_conntrack.

    Returns ``{"entries": int, "cpus": int, "counters": {field: sum}}``.
    """
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ParseError("empty file", source=source, expected="a header line of counter names and one line per CPU")
    header_no, header = lines[0]
    fields = header.split()
    if not fields or fields[0] != "entries":
        raise ParseError("first line is not the counter header", source=source, lineno=header_no, line=header,
                         expected="a line starting with 'entries'")
    counters = dict.fromkeys(fields[1:], 0)
    entries = None
    cpus = 0
    for lineno, line in lines[1:]:
        values = line.split()
        if len(values) != len(fields):
            raise ParseError("%d values for %d counters" % (len(values), len(fields)), source=source, lineno=lineno, line=line,
                             expected="one hexadecimal value per header field")
        try:
            numbers = [int(v, 16) for v in values]
        except ValueError:
            raise ParseError("value is not hexadecimal", source=source, lineno=lineno, line=line, expected="hexadecimal counters") from None
        cpus += 1
        entries = numbers[0]
        for name, number in zip(fields[1:], numbers[1:]):
            counters[name] += number
    if cpus == 0:
        raise ParseError("no per-CPU lines after the header", source=source, lineno=header_no, line=header, expected="one line per CPU")
    return {"entries": entries, "cpus": cpus, "counters": counters}


def parse_conntrack_s(text, source="conntrack -S"):
    """Sum ``conntrack -S`` in either format. Returns ``{"entries", "cpus", "counters"}``
    (``entries`` and ``cpus`` are None when the format does not carry them)."""
    counters = {}
    cpus = 0
    entries = None
    old_style = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _CPU_LINE.match(line)
        if match:
            cpus += 1
            pairs = _KV.findall(match.group(2))
            if not pairs:
                raise ParseError("cpu line without counters", source=source, lineno=lineno, line=raw, expected="cpu=N name=value ...")
            for name, value in pairs:
                counters[name] = counters.get(name, 0) + int(value)
            continue
        if line.startswith("conntrack v") or "Operation failed" in line:
            # conntrack-tools' own trailer (e.g. "must be root or get CAP_NET_ADMIN")
            continue
        parts = line.split()
        if len(parts) == 2 and re.match(r"^\w+$", parts[0]) and parts[1].isdigit():
            old_style = True
            if parts[0] == "entries":
                entries = int(parts[1])
            else:
                counters[parts[0]] = int(parts[1])
            continue
        raise ParseError("unrecognised line", source=source, lineno=lineno, line=raw,
                         expected="'cpu=N name=value ...' lines (conntrack-tools >= 1.4.5) or 'name value' lines (1.4.4)")
    if not counters:
        raise ParseError("no counters found", source=source, expected="output of conntrack -S")
    return {"entries": entries, "cpus": None if old_style else cpus, "counters": counters}


def table_full_events(text, netns=None):
    """Count the kernel's "table full, dropping packet" messages of one network namespace in dmesg
    or journal text.

    ``netns`` describes the namespace the node's facts are read in (``netns_of_this_process`` or
    ``parse_netns``): ``{"inode": int, "init": bool, "since": float|None}``. The init namespace owns
    the messages without "in netns"; another namespace (a kind node, a lab node) owns those naming
    its inode and logged at or after ``since`` (namespace inodes are reused: older lines are an
    earlier namespace's). ``init`` None (not known) counts both kinds; ``netns`` None (as in bundles
    from before this was recorded) means the init namespace.

    Returns ``{"table_full_events": n, "first": str|None, "last": str|None, "sample": [lines],
    "other_netns_events": n, "other_netns": {inode or "init": n}, "before_netns": n}``;
    ``first``/``last`` are the timestamps as printed (dmesg seconds since boot, or the log's time).
    """
    init = True if not netns else netns.get("init")
    inode = None if init is True else netns.get("inode")
    since = None if init is True else netns.get("since")
    hits, other, before = [], {}, 0
    for raw in text.splitlines():
        match = TABLE_FULL.search(raw)
        if not match:
            continue
        named = match.group("netns")
        # init unknown (None): the plain lines and those naming this inode both count; one of the two
        # kinds is never logged for this namespace, so that is what the old parser counted and more.
        mine = init is not False if named is None else (inode is not None and int(named) == inode)
        if not mine:
            key = named or "init"
            other[key] = other.get(key, 0) + 1
            continue
        stamp = _DMESG_TS.match(raw)
        if since is not None and stamp and float(stamp.group("mono")) < since:
            before += 1
            continue
        hits.append(raw.strip())
    stamps = [_stamp(line) for line in hits]
    stamps = [s for s in stamps if s is not None]
    return {
        "table_full_events": len(hits),
        "first": stamps[0] if stamps else None,
        "last": stamps[-1] if stamps else None,
        "sample": hits[-5:],
        "other_netns_events": sum(other.values()),
        "other_netns": dict(sorted(other.items(), key=lambda kv: -kv[1])[:10]),
        "before_netns": before,
    }


def _inode(link):
    match = re.match(r"^net:\[(\d+)\]$", (link or "").strip())
    return int(match.group(1)) if match else None


# The init network namespace's inode since Linux 6.14 (PROC_NET_INIT_INO); dynamic inodes start at
# 0xF0000000, so no other namespace ever has it.
INIT_NET_INODE = 0xEFFFFFF9


def netns_of_this_process(proc="/proc"):
    """The network namespace this process runs in, for ``table_full_events`` (reads ``proc``).

    ``init``: whether it is the kernel's initial one: its fixed inode (Linux 6.14+), else compared
    with kthreadd's (pid 2: kernel threads live there; pid 1 may be a container's own init, or
    unreadable), None when neither tells. Outside it, ``since`` is the start of the namespace's oldest
    process in seconds since boot, the time base of dmesg (None when none can be read)."""
    try:
        own = os.readlink(os.path.join(proc, "self/ns/net"))
    except OSError:
        return None
    inode = _inode(own)
    init = None
    if inode == INIT_NET_INODE:
        init = True
    else:
        try:
            with open(os.path.join(proc, "2/comm")) as handle:
                if handle.read().strip() == "kthreadd":
                    init = os.readlink(os.path.join(proc, "2/ns/net")) == own
        except OSError:
            pass  # not visible: unknown
    result = {"inode": inode, "init": init, "since": None}
    if init is not True:
        ticks = os.sysconf("SC_CLK_TCK")
        starts = []
        for pid in os.listdir(proc):
            if not pid.isdigit():
                continue
            try:
                if os.readlink(os.path.join(proc, pid, "ns/net")) != own:
                    continue
                with open(os.path.join(proc, pid, "stat")) as handle:
                    # field 22 (starttime), counted after the ")" that ends the command name
                    starts.append(int(handle.read().rsplit(")", 1)[1].split()[19]) / float(ticks))
            except (OSError, IndexError, ValueError):
                continue
        result["since"] = round(min(starts), 2) if starts else None
    return result


def format_netns(netns):
    """The ``commands/netns.txt`` line of a bundle: ``inode=N init=yes|no|unknown since=S|unknown``."""
    init = netns.get("init")
    return "inode=%s init=%s since=%s\n" % (netns.get("inode"), {True: "yes", False: "no"}.get(init, "unknown"),
                                            "unknown" if netns.get("since") is None else netns["since"])


def parse_netns(text, source="commands/netns.txt"):
    """Inverse of ``format_netns``."""
    fields = dict(item.split("=", 1) for item in (text or "").split() if "=" in item)
    try:
        if set(fields) != {"inode", "init", "since"} or fields["init"] not in ("yes", "no", "unknown"):
            raise ValueError("fields %s" % " ".join(sorted(fields)) if fields else "no fields")
        return {"inode": None if fields["inode"] == "None" else int(fields["inode"]),
                "init": {"yes": True, "no": False}.get(fields["init"]),
                "since": None if fields["since"] == "unknown" else float(fields["since"])}
    except ValueError as exc:
        raise ParseError("unrecognised netns line (%s)" % exc, source=source, lineno=1, line=(text or "").strip(),
                         expected="inode=N init=yes|no|unknown since=SECONDS|unknown") from None


def _stamp(line):
    for pattern in (_DMESG_TS, _DMESG_T_TS, _ISO_TS, _SYSLOG_TS):
        match = pattern.match(line)
        if match:
            return next(v for v in match.groupdict().values() if v)
    return None


def delta(before, after):
    """Per-counter increase between two summed samples (counters only grow; a smaller value
    means the module was reloaded, and the new value is the increase)."""
    out = {}
    for name, value in after.items():
        prev = before.get(name)
        if prev is None:
            continue
        out[name] = value - prev if value >= prev else value
    return out


def usage_ratio(count, maximum):
    if count is None or not maximum:
        return None
    return round(float(count) / float(maximum), 4)
