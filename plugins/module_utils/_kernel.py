# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for kernel facts: the release string, /proc/net/snmp and /proc/net/snmp6 UDP
# counters, and which of the upstream DNS-relevant netfilter/IPVS fixes a release predates.
# Stdlib only.

from __future__ import annotations

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

# Upstream fixes that decide whether parallel DNS queries through a Service can be dropped.
# Versions are upstream mainline releases; distribution kernels may carry backports, which is why
# findings name the fix and its commit so that a vendor changelog can be checked.
FIXES = (
    {"id": "nf-clash-same-tuple", "fixed_in": [4, 19, 0],
     "summary": "conntrack: resolve the clash of two packets of one UDP flow racing to confirm the same entry (race 1)",
     "reference": "https://github.com/kubernetes/kubernetes/issues/56903"},
    {"id": "nf-nat-same-origin", "fixed_in": [5, 0, 0],
     "summary": "NAT: skip clash resolution for same-origin entries, so a DNATed A/AAAA pair no longer drops one packet (race 2)",
     "reference": "https://github.com/kubernetes/kubernetes/issues/56903"},
    {"id": "nf-clash-allow-insert", "fixed_in": [5, 6, 0],
     "summary": "conntrack: allow insertion of clashing UDP entries when DNAT picked different backends (race 3)",
     "reference": "https://github.com/weaveworks/weave/issues/3287"},
    {"id": "ipvs-conn-reuse", "fixed_in": [5, 9, 0],
     "summary": "IPVS: stop sending a reused UDP source port to a deleted real server (kube-proxy IPVS mode)",
     "reference": "https://github.com/kubernetes/kubernetes/issues/71514"},
)

_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")

# The sysctls diagnose reports (read from /proc/sys). Missing ones are reported as null.
SYSCTLS = (
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_buckets",
    "net/netfilter/nf_conntrack_udp_timeout",
    "net/netfilter/nf_conntrack_udp_timeout_stream",
    "net/core/rmem_default",
    "net/core/rmem_max",
    "net/core/wmem_default",
    "net/core/wmem_max",
    "net/ipv4/udp_mem",
    "net/ipv4/udp_rmem_min",
    "net/core/netdev_max_backlog",
    "net/ipv4/ip_forward",
    "net/ipv4/ip_local_port_range",
    "net/ipv4/conf/all/rp_filter",
    "net/ipv4/conf/default/rp_filter",
    "net/bridge/bridge-nf-call-iptables",
    "net/ipv4/vs/conn_reuse_mode",
    "net/ipv4/vs/expire_nodest_conn",
)


def parse_release(release, source="/proc/sys/kernel/osrelease"):
    """``"5.4.0-1045-aws"`` -> ``[5, 4, 0]``; ``"3.10.0-1160.el7.x86_64"`` -> ``[3, 10, 0]``."""
    text = (release or "").strip()
    match = _RELEASE.match(text)
    if not match:
        raise ParseError("not a kernel release", source=source, lineno=1, line=text, expected="MAJOR.MINOR[.PATCH][-suffix], as printed by uname -r")
    return [int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)]


def release_from_proc_version(text, source="/proc/version"):
    """The release word of /proc/version ("Linux version 5.10.0-9-amd64 (...) ...")."""
    match = re.match(r"^Linux version (\S+)", (text or "").strip())
    if not match:
        raise ParseError("not a /proc/version line", source=source, lineno=1, line=(text or "").strip()[:120],
                         expected="'Linux version <release> ...'")
    return match.group(1)


def parse_snmp(text, source="/proc/net/snmp"):
    """/proc/net/snmp: pairs of "Proto: names" / "Proto: values" lines -> ``{proto: {name: int}}``."""
    tables = {}
    pending = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        proto, sep, rest = line.partition(":")
        if not sep:
            raise ParseError("line without 'Proto:' prefix", source=source, lineno=lineno, line=line, expected="'Udp: InDatagrams ...' header and value lines")
        words = rest.split()
        if proto not in pending:
            pending[proto] = (lineno, words)
            continue
        header_no, names = pending.pop(proto)
        if len(names) != len(words):
            raise ParseError("%d values for the %d names of line %d" % (len(words), len(names), header_no), source=source, lineno=lineno, line=line,
                             expected="one value per name")
        try:
            tables[proto] = {name: int(value) for name, value in zip(names, words)}
        except ValueError:
            raise ParseError("non-numeric value", source=source, lineno=lineno, line=line, expected="integers") from None
    return tables


def parse_snmp6(text, source="/proc/net/snmp6", prefix="Udp6"):
    """/proc/net/snmp6: "Udp6InErrors   0" lines -> ``{"InErrors": 0, ...}`` for one prefix."""
    out = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ParseError("expected a name and a value", source=source, lineno=lineno, line=line, expected="'Udp6InErrors 0'")
        name, value = parts
        if name.startswith(prefix) and not name.startswith(prefix + "Lite"):
            try:
                out[name[len(prefix):]] = int(value)
            except ValueError:
                raise ParseError("non-numeric value", source=source, lineno=lineno, line=line, expected="an integer") from None
    return out


def exposure(version):
    """The FIXES a kernel ``[major, minor, patch]`` predates, each with ``fixed`` true/false."""
    out = []
    for fix in FIXES:
        entry = dict(fix)
        entry["fixed"] = list(version) >= fix["fixed_in"]
        out.append(entry)
    return out


def udp_drop_counters(udp):
    """The UDP counters that mean the node itself dropped datagrams."""
    return {name: udp.get(name) for name in ("InErrors", "RcvbufErrors", "MemErrors", "InCsumErrors") if udp.get(name) is not None}
