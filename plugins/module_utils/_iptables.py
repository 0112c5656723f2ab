# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for the netfilter facts: ``iptables --version``, ``iptables-save`` /
# ``ip6tables-save`` (legacy and nf_tables backends print the same save format) and the
# listening sockets of ``ss -lnup`` / ``ss -lntp``. Stdlib only.
#
# The save parser reads the dump ONCE, line by line. Large clusters have 100k+ rules, almost all
# of them kube-proxy's per-service chains that say nothing about DNS, so a rule is only split into
# words when a cheap substring test says it can matter (a DROP/REJECT/NOTRACK target, the kube-dns
# service name or ClusterIP). KUBE-SVC-*/KUBE-SVL-* and KUBE-SEP-* rules are kept as raw lines by
# chain, because kube-proxy does not write chains in a fixed order; after the pass only the chains
# that the kube-dns KUBE-SERVICES rules jump to are split.

from __future__ import annotations

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

DNS_PORT = 53
DEFAULT_SERVICE = "kube-system/kube-dns"

_VERSION_RE = re.compile(r"^ip6?tables v(?P<version>[0-9][0-9.]*)(?: \((?P<backend>[a-z_]+)\))?\s*$")
_BLOCK_TARGETS = ("DROP", "REJECT")
_PORT_PROTOCOLS = ("tcp", "udp", "sctp", "udplite", "6", "17", "132", "136", "all", "0")
# Options that take exactly one argument; used to step over them while reading a rule.
_PORT_OPTIONS = {
    "--dport": "dports", "--destination-port": "dports", "--dports": "dports", "--destination-ports": "dports",
    "--sport": "sports", "--source-port": "sports", "--sports": "sports", "--source-ports": "sports",
    "--ports": "ports",
}


def parse_version(text, source="iptables --version"):
    """Backend and version from ``iptables --version``.

    Accepts ``iptables v1.8.9 (nf_tables)``, ``iptables v1.8.4 (legacy)`` and the pre-1.8 form
    ``iptables v1.6.1`` (always legacy: nf_tables support arrived in 1.8).
    """
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _VERSION_RE.match(line)
        if not match:
            raise ParseError("not an iptables version line", source=source, lineno=lineno, line=line,
                             expected="'iptables vX.Y.Z (nf_tables)' or 'iptables vX.Y.Z (legacy)'")
        backend = match.group("backend")
        if backend == "nf_tables":
            backend = "nft"
        elif backend is None:
            backend = "legacy"
        return {"version": match.group("version"), "backend": backend}
    raise ParseError("empty output", source=source, expected="'iptables vX.Y.Z (nf_tables)'")


def split_rule(line, source="iptables-save", lineno=None):
    """Words of one save-format rule line; double-quoted words (comments) keep their spaces.

    iptables-save quotes a comment with ``"`` and escapes a ``"`` inside it as ``\\"``.
    """
    if '"' not in line:
        return line.split()
    words = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        if line[i] == '"':
            i += 1
            chars = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(line[i])
                i += 1
            if i >= n:
                raise ParseError("unterminated quoted word", source=source, lineno=lineno, line=line,
                                 expected='a closing " (iptables-save quotes comments)')
            i += 1
            words.append("".join(chars))
        else:
            j = line.find(" ", i)
            if j < 0:
                j = n
            words.append(line[i:j])
            i = j
    return words


def _port_set(spec):
    """``53``, ``1:1024``, ``53,853,5353:5360`` -> list of (low, high); names other than domain are kept as None."""
    ranges = []
    for part in spec.split(","):
        if ":" in part:
            low, _sep, high = part.partition(":")
            low = _port_number(low, 0)
            high = _port_number(high, 65535)
        else:
            low = high = _port_number(part, None)
        ranges.append((low, high))
    return ranges


def _port_number(text, default):
    if text == "":
        return default
    if text.isdigit():
        return int(text)
    if text == "domain":
        return DNS_PORT
    return None


def _includes(ranges, port):
    return any(low is not None and high is not None and low <= port <= high for low, high in ranges)


def rule_match(words):
    """The parts of a rule the DNS checks need, from its words (``-A CHAIN ...`` included).

    Returns a dict: ``protocol`` (None = any), ``source``, ``destination``, ``in_interface``,
    ``out_interface``, ``dports``/``sports``/``ports`` (the port specs as written, ``!`` prefixed when
    negated), ``comment``, ``target``, ``target_args`` (the words after ``-j TARGET``),
    ``probability`` (statistic match) and ``to_destination`` (DNAT).
    """
    match = {"protocol": None, "source": None, "destination": None, "in_interface": None, "out_interface": None,
             "dports": [], "sports": [], "ports": [], "comment": None, "target": None, "target_args": [],
             "probability": None, "to_destination": None}
    negate = False
    i, n = 2, len(words)
    while i < n:
        word = words[i]
        i += 1
        if word == "!":
            negate = True
            continue
        if not word.startswith("-"):
            continue  # the value of an option this reader does not need
        value = words[i] if i < n else None
        prefix = "!" if negate else ""
        negate = False
        if word in ("-p", "--protocol"):
            match["protocol"] = prefix + (value or "")
        elif word in ("-s", "--source"):
            match["source"] = prefix + (value or "")
        elif word in ("-d", "--destination"):
            match["destination"] = prefix + (value or "")
        elif word in ("-i", "--in-interface"):
            match["in_interface"] = prefix + (value or "")
        elif word in ("-o", "--out-interface"):
            match["out_interface"] = prefix + (value or "")
        elif word in _PORT_OPTIONS:
            if value == "!":  # pre-1.4.3 form: --dport ! 53
                prefix, value = "!", words[i + 1] if i + 1 < n else None
                i += 1
            match[_PORT_OPTIONS[word]].append(prefix + (value or ""))
        elif word == "--comment":
            match["comment"] = value
        elif word == "--probability":
            match["probability"] = _float(value)
        elif word in ("-j", "--jump", "-g", "--goto"):
            match["target"] = value
            match["target_args"] = args = words[i + 1:]
            if "--to-destination" in args:
                at = args.index("--to-destination")
                match["to_destination"] = args[at + 1] if at + 1 < len(args) else None
            break
    return match


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def covers_dns(match, port=DNS_PORT):
    """Whether a rule's protocol and port matches let DNS (``port``) through to its target.

    A rule must name a port (``--dport``, ``--sport``, ``--dports``, ``--sports``, ``--ports``) for
    this to be true: rules without any port match act on all traffic and are not DNS rules.
    Returns the list of port specs that include ``port`` (empty when it does not cover DNS).
    """
    protocol = match["protocol"]
    if protocol is not None:
        proto = protocol.lstrip("!")
        negated = protocol.startswith("!")
        if not negated and proto not in _PORT_PROTOCOLS:
            return []
        if negated and proto in ("all", "0"):
            return []
    hits = []
    for key in ("dports", "sports", "ports"):
        for spec in match[key]:
            negated = spec.startswith("!")
            inside = _includes(_port_set(spec.lstrip("!")), port)
            if inside != negated:
                hits.append("%s %s" % (key, spec))
    return hits


def match_atoms(words):
    """The conditions of a rule as ``(option, args)`` tuples, from its words (``-A CHAIN ...`` included).

    ``!`` is folded into the option (``("!-s", ("10.0.0.0/8",))``). Module loads (``-m udp``), the
    comment and the target with its arguments are not conditions and are left out; port options
    keep their spec, for :func:`shadows` to compare.
    """
    atoms = []
    negate = False
    i, n = 2, len(words)
    while i < n:
        word = words[i]
        i += 1
        if word == "!":
            negate = True
            continue
        if not word.startswith("-"):
            continue
        if word in ("-j", "--jump", "-g", "--goto"):
            break
        args = []
        while i < n and not words[i].startswith("-") and words[i] != "!":
            args.append(words[i])
            i += 1
        if not args and i + 1 < n and words[i] == "!" and not words[i + 1].startswith("-"):
            negate, args = True, [words[i + 1]]  # pre-1.4.3 form: --dport ! 53
            i += 2
        if word in ("-m", "--match", "--comment"):
            negate = False
            continue
        atoms.append((("!" if negate else "") + word, tuple(args)))
        negate = False
    return atoms


def shadows(accept_words, block_words, block_ports, port=DNS_PORT):
    """Whether an ACCEPT rule, earlier in the same chain, takes all the DNS traffic of a blocking rule.

    ``block_ports`` is what :func:`covers_dns` returned for the blocking rule (``["dports 53"]``). The
    ACCEPT shadows it when each of its conditions is also a condition of the blocking rule, except
    port conditions, which may instead include ``port`` in a direction the blocking rule fixes to
    ``port`` (``--dport 53`` ahead of ``--dports 53,853``). An ACCEPT with any condition the blocking
    rule does not have (another interface, address, state, mark, set) does not shadow it.
    """
    block_atoms = set(match_atoms(block_words))
    block_keys = {hit.split(" ", 1)[0] for hit in block_ports}
    for option, args in match_atoms(accept_words):
        if (option, args) in block_atoms:
            continue
        key = _PORT_OPTIONS.get(option.lstrip("!"))
        if key is None or len(args) != 1:
            return False
        negated = option.startswith("!")
        if _includes(_port_set(args[0]), port) == negated:
            return False
        if not (key in block_keys or (key == "ports" and block_keys)):
            return False
    return True


def _address(cidr):
    if not cidr or cidr.startswith("!"):
        return None
    address, _sep, length = cidr.partition("/")
    if length in ("", "32", "128"):
        return address
    return None


def _comment_service(comment):
    """``kube-system/kube-dns:dns cluster IP`` -> (``kube-system/kube-dns``, ``dns``)."""
    if not comment:
        return None, None
    head = comment.split(" ", 1)[0]
    name, _sep, port_name = head.partition(":")
    return name, port_name


def _empty_family():
    return {"tables": {}, "policies": []}


def parse_save(text, source="iptables-save", family="ipv4", service_name=DEFAULT_SERVICE, cluster_ips=()):
    """Parse one ``iptables-save`` or ``ip6tables-save`` dump in a single pass.

    Accepts the output of iptables 1.4 to 1.8 (legacy and nf_tables backends), with or without
    ``-c`` counters (``[packets:bytes]`` rule prefixes). ``service_name`` identifies the DNS
    Service in kube-proxy comments; ``cluster_ips`` identify it when comments are absent.

    Returns ``{"family", "rule_count": {table: n}, "chains": {table: n}, "kube_proxy": {...},
    "services": [...], "no_endpoints": [...], "nodelocal": [...], "dns_blocks": [...],
    "dns_blocks_shadowed": [...], "policies": [...]}``; see the iptables_facts module RETURN for each field.
    A blocking rule with an earlier ACCEPT in the same chain that takes all its DNS traffic
    (:func:`shadows`) goes to ``dns_blocks_shadowed`` with ``shadowed_by`` (position, rule), not to
    ``dns_blocks``.
    """
    cluster_ips = tuple(ip for ip in cluster_ips if ip)
    table = None
    rule_count, chain_count = {}, {}
    positions = {}
    policies = []
    kube_chains = {"KUBE-SERVICES": False, "KUBE-SVC": 0, "KUBE-SEP": 0, "KUBE-IPVS": 0, "KUBE-NODEPORTS": False}
    ipset_kube = False
    dns_service_rules = []
    svc_lines, sep_lines = {}, {}
    no_endpoints, nodelocal, dns_blocks, shadowed = [], [], [], []
    accepts = {}  # (table, chain) -> [(position, line, words)] of the ACCEPT rules seen so far
    service_key = service_name + ":"
    svc_prefixes = ("-A KUBE-SVC-", "-A KUBE-SVL-")

    for lineno, raw in enumerate(text.splitlines(), 1):
        if not raw:
            continue
        line = raw
        first = line[0]
        if first in "-[":
            if table is None:
                raise ParseError("rule before any table header", source=source, lineno=lineno, line=line,
                                 expected="a '*<table>' line first (is this iptables-save output?)")
            if first == "[":
                closing = line.find("] ")
                if closing < 0:
                    raise ParseError("bad counter prefix", source=source, lineno=lineno, line=line, expected="'[packets:bytes] -A CHAIN ...'")
                line = line[closing + 2:]
            if not line.startswith("-A "):
                raise ParseError("unknown rule command", source=source, lineno=lineno, line=line, expected="'-A CHAIN ...'")
            end = line.find(" ", 3)
            chain = line[3:end] if end > 0 else line[3:]
            key = (table, chain)
            position = positions.get(key, 0) + 1
            positions[key] = position
            rule_count[table] += 1

            if table == "nat":
                if line.startswith(svc_prefixes):
                    svc_lines.setdefault(chain, []).append(line)
                    continue
                if line.startswith("-A KUBE-SEP-"):
                    if "DNAT" in line:
                        sep_lines[chain] = line
                    continue
                if chain == "KUBE-SERVICES" and (service_key in line or any(ip in line for ip in cluster_ips)):
                    dns_service_rules.append((lineno, position, line))
                    continue
            if "--match-set KUBE-" in line:
                ipset_kube = True
            if "-j ACCEPT" in line:
                accepts.setdefault(key, []).append((position, line, split_rule(line, source, lineno)))
            blocking = "-j DROP" in line or "-j REJECT" in line
            notrack = table == "raw" and ("NOTRACK" in line or "--notrack" in line)
            nodelocal_accept = table == "filter" and "-j ACCEPT" in line and ("NodeLocal" in line or "nodelocal" in line)
            if not (blocking or notrack or nodelocal_accept):
                continue
            words = split_rule(line, source, lineno)
            match = rule_match(words)
            ports = covers_dns(match)
            entry = {"family": family, "table": table, "chain": chain, "position": position, "lineno": lineno,
                     "rule": line, "target": match["target"], "match": _public_match(match)}
            if match["target"] in _BLOCK_TARGETS and ports:
                comment = match["comment"] or ""
                if "has no endpoints" in comment and _is_dns_service(comment, match, service_key, cluster_ips):
                    entry.update(_service_fields(match))
                    no_endpoints.append(entry)
                else:
                    entry["dns_ports"] = ports
                    shadow = next((a for a in accepts.get(key, ()) if shadows(a[2], words, ports)), None)
                    if shadow is None:
                        dns_blocks.append(entry)
                    else:
                        entry["shadowed_by"] = {"position": shadow[0], "rule": shadow[1]}
                        shadowed.append(entry)
            elif (notrack or nodelocal_accept) and ports:
                entry["kind"] = "notrack" if notrack else "accept"
                entry["addresses"] = [a for a in (_address(match["destination"]), _address(match["source"])) if a]
                nodelocal.append(entry)
            continue

        if first == ":":
            if table is None:
                raise ParseError("chain before any table header", source=source, lineno=lineno, line=line, expected="a '*<table>' line first")
            parts = line[1:].split()
            if len(parts) < 2:
                raise ParseError("bad chain line", source=source, lineno=lineno, line=line, expected="':CHAIN POLICY [packets:bytes]'")
            name, policy = parts[0], parts[1]
            chain_count[table] += 1
            if name.startswith("KUBE-"):
                if name.startswith("KUBE-SVC-") or name.startswith("KUBE-SVL-"):
                    kube_chains["KUBE-SVC"] += 1
                elif name.startswith("KUBE-SEP-"):
                    kube_chains["KUBE-SEP"] += 1
                elif name.startswith("KUBE-IPVS-") or name == "KUBE-LOAD-BALANCER":
                    kube_chains["KUBE-IPVS"] += 1
                elif name == "KUBE-SERVICES":
                    kube_chains["KUBE-SERVICES"] = True
                elif name == "KUBE-NODEPORTS":
                    kube_chains["KUBE-NODEPORTS"] = True
            if policy == "DROP":
                policies.append({"family": family, "table": table, "chain": name, "policy": policy})
            continue
        if first == "*":
            table = line[1:].strip()
            if not table:
                raise ParseError("empty table name", source=source, lineno=lineno, line=line, expected="'*filter', '*nat', '*raw', ...")
            rule_count.setdefault(table, 0)
            chain_count.setdefault(table, 0)
            continue
        if first == "#" or line == "COMMIT" or line.isspace():
            continue
        raise ParseError("unexpected line", source=source, lineno=lineno, line=line,
                         expected="iptables-save output: '*table', ':CHAIN POLICY', '-A CHAIN ...', 'COMMIT' or '# comment'")

    services = [_service(lineno, position, line, family, source, svc_lines, sep_lines, service_key, cluster_ips)
                for lineno, position, line in dns_service_rules]
    if kube_chains["KUBE-SVC"] or kube_chains["KUBE-SEP"]:
        mode = "iptables"
    elif kube_chains["KUBE-IPVS"] or ipset_kube:
        mode = "ipvs"
    else:
        mode = None
    present = bool(mode) or kube_chains["KUBE-SERVICES"] or kube_chains["KUBE-NODEPORTS"]
    return {
        "family": family,
        "rule_count": rule_count,
        "chain_count": chain_count,
        "kube_proxy": {"present": present, "mode": mode, "svc_chains": kube_chains["KUBE-SVC"], "sep_chains": kube_chains["KUBE-SEP"],
                       "ipvs_chains": kube_chains["KUBE-IPVS"], "ipset_matches": ipset_kube},
        "services": [s for s in services if s is not None],
        "no_endpoints": no_endpoints,
        "nodelocal": nodelocal,
        "dns_blocks": dns_blocks,
        "dns_blocks_shadowed": shadowed,
        "policies": policies,
    }


def _public_match(match):
    return {key: match[key] for key in ("protocol", "source", "destination", "in_interface", "out_interface",
                                        "dports", "sports", "ports", "comment")}


def _is_dns_service(comment, match, service_key, cluster_ips):
    if comment.startswith(service_key):
        return True
    return _address(match["destination"]) in cluster_ips


def _service_fields(match):
    name, port_name = _comment_service(match["comment"])
    dports = [p for p in match["dports"] if not p.startswith("!")]
    port = _port_number(dports[0], None) if dports else None
    return {"service": name, "port_name": port_name, "cluster_ip": _address(match["destination"]),
            "port": port, "protocol": match["protocol"]}


def _service(lineno, position, line, family, source, svc_lines, sep_lines, service_key, cluster_ips):
    words = split_rule(line, source, lineno)
    match = rule_match(words)
    target = match["target"] or ""
    if not (target.startswith("KUBE-SVC-") or target.startswith("KUBE-SVL-")):
        return None  # e.g. the KUBE-MARK-MASQ rule of the same service, or an external IP rule
    if not _is_dns_service(match["comment"] or "", match, service_key, cluster_ips):
        return None  # the substring test matched another address (10.96.0.10 in 10.96.0.100)
    entry = {"family": family, "position": position, "lineno": lineno, "rule": line, "chain": target}
    entry.update(_service_fields(match))
    endpoints = []
    remaining = 1.0
    for rule in svc_lines.get(target, []):
        sub = rule_match(split_rule(rule, source))
        if not (sub["target"] or "").startswith("KUBE-SEP-"):
            continue
        probability = sub["probability"]
        share = remaining * (probability if probability is not None else 1.0)
        remaining -= share
        dnat = sep_lines.get(sub["target"])
        to = rule_match(split_rule(dnat, source))["to_destination"] if dnat else None
        ip, port = _split_hostport(to)
        endpoints.append({"chain": sub["target"], "probability": probability, "share": round(share, 6),
                          "ip": ip, "port": port, "to_destination": to})
    entry["endpoints"] = endpoints
    return entry


def _split_hostport(text):
    if not text:
        return None, None
    if text.startswith("["):
        host, _sep, port = text[1:].partition("]:")
    else:
        host, _sep, port = text.rpartition(":")
        if not host:
            host, port = text, ""
    return host, int(port) if port.isdigit() else None


def merge(parsed, backend=None, version=None):
    """Combine the per-family results of :func:`parse_save` into the ``clusterdns_iptables`` shape."""
    result = {"backend": backend, "version": version, "rule_count": {}, "services": [], "no_endpoints": [],
              "dns_blocks": [], "dns_blocks_shadowed": [], "policies": []}
    notrack, accept = [], []
    mode, present = None, False
    for item in parsed:
        result["rule_count"][item["family"]] = item["rule_count"]
        for key in ("services", "no_endpoints", "dns_blocks", "policies"):
            result[key].extend(item[key])
        result["dns_blocks_shadowed"].extend(item.get("dns_blocks_shadowed", []))
        for entry in item["nodelocal"]:
            (notrack if entry["kind"] == "notrack" else accept).append(entry)
        present = present or item["kube_proxy"]["present"]
        mode = mode or item["kube_proxy"]["mode"]
    addresses = []
    for entry in notrack:
        for address in entry["addresses"]:
            if address not in addresses:
                addresses.append(address)
    markers = sorted({e["match"]["comment"] for e in notrack + accept if e["match"]["comment"]})
    result["kube_proxy"] = {"present": present, "mode": mode}
    result["nodelocal"] = {"present": bool(notrack), "addresses": addresses, "notrack": notrack, "accept": accept, "markers": markers}
    return result


# ---------------------------------------------------------------------------------------------
# ss -lnup / ss -lntp

_USERS_RE = re.compile(r'\("(?P<name>[^"]*)",pid=(?P<pid>\d+)')


def parse_ss(text, protocol, source="ss", port=None):
    """Listening sockets from ``ss -lnup`` or ``ss -lntp`` (iproute2 4.x to 6.x).

    Columns: ``State Recv-Q Send-Q Local-Address:Port Peer-Address:Port [Process]``; older
    versions print ``Netid`` first when both -t and -u are given, which this parser also accepts.
    Addresses keep their ``%iface`` scope (``127.0.0.53%lo``); ``*``, ``0.0.0.0`` and ``[::]``
    are wildcards. ``port`` keeps only sockets on that port.
    """
    listeners = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        words = line.split()
        if words[0] in ("State", "Netid"):
            continue
        if words[0] in ("udp", "tcp"):
            words = words[1:]
        if len(words) < 5:
            raise ParseError("too few columns", source=source, lineno=lineno, line=line,
                             expected="'State Recv-Q Send-Q Local:Port Peer:Port [Process]' (ss -lnup / -lntp)")
        local = words[3]
        address, _sep, port_text = local.rpartition(":")
        if not port_text.isdigit():
            raise ParseError("local address has no numeric port", source=source, lineno=lineno, line=line,
                             expected="ADDRESS:PORT (run ss with -n)")
        if port is not None and int(port_text) != port:
            continue
        scope = None
        if "%" in address:
            address, _sep, scope = address.partition("%")
        address = address.strip("[]")
        rest = " ".join(words[5:])
        processes = [{"name": m.group("name"), "pid": int(m.group("pid"))} for m in _USERS_RE.finditer(rest)]
        listeners.append({"protocol": protocol, "address": address, "port": int(port_text), "interface": scope,
                          "wildcard": address in ("*", "0.0.0.0", "::"), "processes": processes})
    return listeners


def answering(listeners, address, protocol="udp", port=DNS_PORT):
    """Listeners that would receive ``protocol`` traffic to ``address``:``port``."""
    found = []
    v6 = ":" in address
    for item in listeners:
        if item["protocol"] != protocol or item["port"] != port:
            continue
        exact = item["address"] in (address, "*")
        if exact or (item["wildcard"] and (item["address"] == "::" or not v6)):
            found.append(item)
    return found
