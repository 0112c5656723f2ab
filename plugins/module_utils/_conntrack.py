# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for the kernel's connection-tracking statistics. Stdlib only.
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

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

# Counters that mean DNS packets were dropped by conntrack (the DNAT race of kubernetes#56903
# shows as insert_failed; a full table as drop and early_drop).
DROP_COUNTERS = ("insert_failed", "drop", "early_drop")

TABLE_FULL = re.compile(r"nf_conntrack: (?:nf_conntrack: )?table full, dropping packet")
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


def table_full_events(text):
    """Count the kernel's "table full, dropping packet" messages in dmesg or journal text.

    Returns ``{"table_full_events": n, "first": str|None, "last": str|None, "sample": [lines]}``;
    ``first``/``last`` are the timestamps as printed (dmesg seconds since boot, or the log's time).
    """
    hits = []
    for raw in text.splitlines():
        if TABLE_FULL.search(raw):
            hits.append(raw.strip())
    stamps = [_stamp(line) for line in hits]
    stamps = [s for s in stamps if s is not None]
    return {
        "table_full_events": len(hits),
        "first": stamps[0] if stamps else None,
        "last": stamps[-1] if stamps else None,
        "sample": hits[-5:],
    }


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
