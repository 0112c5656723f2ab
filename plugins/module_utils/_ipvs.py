# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for the IPVS facts: ``ipvsadm -Ln``, ``ipvsadm -Ln --stats``, ``ipvsadm -Lnc``,
# ``ipvsadm -l --timeout`` and the kernel's own ``/proc/net/ip_vs`` (same layout as ``-Ln`` but
# with IPv4 addresses, ports and firewall marks in hexadecimal). Stdlib only.

from __future__ import annotations

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

SYSCTLS = ("conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template", "conntrack")
_PROTOCOLS = ("TCP", "UDP", "SCTP", "FWM")
_HEADER_RE = re.compile(r"^IP Virtual Server version (?P<version>\S+) \(size=(?P<size>\d+)\)")
_TIMEOUT_RE = re.compile(r"^Timeout \(tcp tcpfin udp\):\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_HEX_V4 = re.compile(r"^[0-9A-Fa-f]{8}$")
_SUFFIX = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}


def _hostport(text, hexadecimal, source, lineno, line):
    """``10.96.0.10:53``, ``[fd00::a]:53``, ``0A60000A:0035`` -> (address, port)."""
    if text.startswith("["):
        address, sep, port = text[1:].partition("]:")
    else:
        address, sep, port = text.rpartition(":")
    if not sep or not address:
        raise ParseError("address without a port", source=source, lineno=lineno, line=line, expected="ADDRESS:PORT (run ipvsadm with -n)")
    try:
        if hexadecimal:
            number = int(port, 16)
            if _HEX_V4.match(address):
                value = int(address, 16)
                address = ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))
        else:
            number = int(port)
    except ValueError:
        raise ParseError("port is not a number", source=source, lineno=lineno, line=line,
                         expected="a numeric port (run ipvsadm with -n)") from None
    return address, number


def _count(text):
    if text and text[-1] in _SUFFIX and text[:-1].isdigit():
        return int(text[:-1]) * _SUFFIX[text[-1]]
    return int(text)


def parse_list(text, source="ipvsadm -Ln", hexadecimal=False):
    """Virtual services and real servers from ``ipvsadm -Ln`` (ipvsadm 1.26 to 1.31), from
    ``ipvsadm -Ln --stats`` (counters instead of scheduler and weights) or, with
    ``hexadecimal=True``, from ``/proc/net/ip_vs``.

    Returns ``{"version", "size", "stats": bool, "services": [...]}``; each service is ``{protocol,
    address, port, fwmark, scheduler, persistent, flags, stats, real_servers: [...]}`` and each real
    server ``{address, port, forward, weight, active, inactive, stats}``.
    """
    result = {"version": None, "size": None, "stats": False, "services": []}
    current = None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        header = _HEADER_RE.match(stripped)
        if header:
            result["version"] = header.group("version")
            result["size"] = int(header.group("size"))
            continue
        if stripped.startswith("Prot LocalAddress"):
            result["stats"] = "Conns" in stripped
            continue
        if stripped.startswith("-> RemoteAddress"):
            continue
        words = stripped.split()
        try:
            if words[0] == "->":
                if current is None:
                    raise ParseError("real server before any virtual service", source=source, lineno=lineno, line=line,
                                     expected="a 'TCP|UDP|SCTP|FWM address scheduler' line first")
                address, port = _hostport(words[1], hexadecimal, source, lineno, line)
                server = {"address": address, "port": port, "forward": None, "weight": None, "active": None, "inactive": None, "stats": None}
                if result["stats"]:
                    server["stats"] = _stats(words[2:7], source, lineno, line)
                elif len(words) >= 6:
                    server.update(forward=words[2], weight=int(words[3]), active=int(words[4]), inactive=int(words[5]))
                else:
                    raise ParseError("too few columns for a real server", source=source, lineno=lineno, line=line,
                                     expected="'-> ADDRESS:PORT Forward Weight ActiveConn InActConn'")
                current["real_servers"].append(server)
                continue
            if words[0] not in _PROTOCOLS:
                raise ParseError("unknown line", source=source, lineno=lineno, line=line,
                                 expected="a virtual service line starting with TCP, UDP, SCTP or FWM, or '  -> ' for a real server")
            service = {"protocol": words[0], "address": None, "port": None, "fwmark": None, "scheduler": None,
                       "persistent": None, "flags": [], "stats": None, "real_servers": []}
            if words[0] == "FWM":
                service["fwmark"] = int(words[1], 16 if hexadecimal else 10)
            else:
                service["address"], service["port"] = _hostport(words[1], hexadecimal, source, lineno, line)
            rest = words[2:]
            if result["stats"]:
                service["stats"] = _stats(rest[:5], source, lineno, line)
            else:
                if not rest:
                    raise ParseError("virtual service without a scheduler", source=source, lineno=lineno, line=line,
                                     expected="'PROTO ADDRESS:PORT SCHEDULER [persistent N] [flags]'")
                service["scheduler"] = rest[0]
                flags = rest[1:]
                if "persistent" in flags:
                    at = flags.index("persistent")
                    service["persistent"] = int(flags[at + 1]) if at + 1 < len(flags) else None
                    del flags[at:at + 2]
                service["flags"] = flags
        except (ValueError, IndexError) as exc:
            if isinstance(exc, ParseError):
                raise
            raise ParseError("bad number or missing column (%s)" % exc, source=source, lineno=lineno, line=line,
                             expected="ipvsadm -Ln, ipvsadm -Ln --stats or /proc/net/ip_vs layout") from None
        current = service
        result["services"].append(service)
    if result["version"] is None:
        raise ParseError("no 'IP Virtual Server version' header", source=source,
                         expected="ipvsadm -Ln output or /proc/net/ip_vs (both start with that header)")
    return result


def _stats(words, source, lineno, line):
    if len(words) < 5:
        raise ParseError("too few counters", source=source, lineno=lineno, line=line,
                         expected="Conns InPkts OutPkts InBytes OutBytes (ipvsadm -Ln --stats)")
    conns, inpkts, outpkts, inbytes, outbytes = (_count(word) for word in words[:5])
    return {"conns": conns, "inpkts": inpkts, "outpkts": outpkts, "inbytes": inbytes, "outbytes": outbytes}


def merge_stats(services, stats_services):
    """Copy the counters of ``ipvsadm -Ln --stats`` onto the services of ``ipvsadm -Ln``."""
    index = {(s["protocol"], s["address"], s["port"], s["fwmark"]): s for s in stats_services}
    for service in services:
        other = index.get((service["protocol"], service["address"], service["port"], service["fwmark"]))
        if other is None:
            continue
        service["stats"] = other["stats"]
        servers = {(r["address"], r["port"]): r for r in other["real_servers"]}
        for server in service["real_servers"]:
            match = servers.get((server["address"], server["port"]))
            if match is not None:
                server["stats"] = match["stats"]
    return services


def parse_timeout(text, source="ipvsadm -l --timeout"):
    """``Timeout (tcp tcpfin udp): 900 120 300`` -> ``{"tcp": 900, "tcpfin": 120, "udp": 300}``."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _TIMEOUT_RE.match(line.strip())
        if not match:
            raise ParseError("not a timeout line", source=source, lineno=lineno, line=line, expected="'Timeout (tcp tcpfin udp): 900 120 300'")
        return {"tcp": int(match.group(1)), "tcpfin": int(match.group(2)), "udp": int(match.group(3))}
    raise ParseError("empty output", source=source, expected="'Timeout (tcp tcpfin udp): 900 120 300'")


def parse_connections(text, source="ipvsadm -Lnc"):
    """Connection entries of ``ipvsadm -Lnc``: ``pro expire state source virtual destination``."""
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0] in ("IPVS", "pro"):
            continue
        if len(words) < 6:
            raise ParseError("too few columns", source=source, lineno=lineno, line=line,
                             expected="'pro expire state source virtual destination' (ipvsadm -Lnc)")
        virtual = _hostport(words[4], False, source, lineno, line)
        destination = _hostport(words[5], False, source, lineno, line)
        entries.append({"protocol": words[0], "expire": words[1], "state": words[2], "virtual": "%s:%d" % virtual,
                        "destination": "%s:%d" % destination})
    return entries


def kube_dns(services, cluster_ips, port=53):
    """The virtual services of the kube-dns ClusterIPs on ``port``, as ``[{cluster_ip, protocol,
    present, service}]`` for UDP and TCP of each ClusterIP (``present`` false when IPVS has none)."""
    found = []
    for ip in cluster_ips:
        for protocol in ("UDP", "TCP"):
            match = next((s for s in services if s["protocol"] == protocol and s["address"] == ip and s["port"] == port), None)
            found.append({"cluster_ip": ip, "protocol": protocol, "port": port, "present": match is not None, "service": match})
    return found
