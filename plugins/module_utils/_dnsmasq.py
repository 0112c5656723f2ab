# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# dnsmasq: command line and configuration files -> effective interface configuration, where every
# value remembers its origin ("/etc/dnsmasq.d/10-k8s.conf:3" or "command line"), and the verdict
# for each interface: does dnsmasq answer DNS queries that arrive on it? Stdlib only: files are
# read through the caller's ``reader`` / ``lister`` callbacks.
#
# Behaviour modelled (dnsmasq(8), and checked against the real dnsmasq 2.90 in
# tests/integration/test_seed003_incident.py and docs/dnsmasq.md):
# * interface= / except-interface= take a name or a prefix ending in one "*" (dnsmasq compares the
#   name up to the first "*"); except-interface always wins; with no interface= and no
#   listen-address= every interface is used except the excluded ones; interface= implies lo.
# * listen-address= accepts queries sent to that address whatever interface they arrive on.
# * default (wildcard socket) and bind-dynamic check the interface a query arrives on; with
#   bind-interfaces the kernel delivers to the per-address sockets and dnsmasq does not check the
#   ingress interface again, so an excluded interface only loses its own addresses.
# * local-service (no interface / except-interface / listen-address / auth-server options) only
#   answers sources on a directly connected subnet.

from __future__ import annotations

import ipaddress

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

COMMAND_LINE = "command line"
DEFAULT_CONF = "/etc/dnsmasq.conf"
DEFAULT_PORT = 53
MAX_INCLUDE_DEPTH = 16

# CNI interfaces pod traffic enters a node through: Cilium (cilium_host, cilium_net, lxc*),
# bridge plugin / flannel (cni0, flannel.1), Calico (cali*, vxlan.calico, tunl0), Weave (weave),
# kube-router (kube-bridge), generic veth, AWS VPC CNI (eni*), Azure CNI (azv*), GKE (gke*).
POD_INTERFACE_PATTERNS = ("cilium_host", "cilium_net", "lxc*", "cni0", "cali*", "flannel.1", "vxlan.calico", "weave",
                          "kube-bridge", "veth*", "tunl0", "eni*", "azv*", "gke*")

# Long option names of dnsmasq 2.90 (``dnsmasq --help``, Debian 12 dnsmasq-base 2.90).
OPTION_NAMES = frozenset("""
    add-cpe-id add-mac add-subnet addn-hosts address alias all-servers auth-peer auth-sec-servers
    auth-server auth-soa auth-ttl auth-zone bind-dynamic bind-interfaces bogus-nxdomain bogus-priv
    bootp-dynamic bridge-interface caa-record cache-rr cache-size clear-on-reload cname conf-dir
    conf-file conf-script connmark-allowlist connmark-allowlist-enable conntrack dhcp-alternate-port
    dhcp-authoritative dhcp-boot dhcp-broadcast dhcp-circuitid dhcp-client-update dhcp-duid
    dhcp-fqdn dhcp-generate-names dhcp-host dhcp-hostsdir dhcp-hostsfile dhcp-ignore
    dhcp-ignore-clid dhcp-ignore-names dhcp-lease-max dhcp-leasefile dhcp-luascript dhcp-mac
    dhcp-match dhcp-name-match dhcp-no-override dhcp-option dhcp-option-force dhcp-optsdir
    dhcp-optsfile dhcp-proxy dhcp-pxe-vendor dhcp-range dhcp-rapid-commit dhcp-relay dhcp-remoteid
    dhcp-reply-delay dhcp-script dhcp-scriptuser dhcp-sequential-ip dhcp-subscrid dhcp-ttl
    dhcp-userclass dhcp-vendorclass dns-forward-max dns-loop-detect dns-rr dnssec
    dnssec-check-unsigned dnssec-debug dnssec-limits dnssec-no-timecheck dnssec-timestamp domain
    domain-needed dumpfile dumpmask dynamic-host edns-packet-max enable-dbus enable-ra enable-tftp
    enable-ubus except-interface expand-hosts fast-dns-retry filter-A filter-AAAA filter-rr
    filterwin2k group help host-record hostsdir ignore-address interface interface-name ipset
    keep-in-foreground leasefile-ro listen-address local local-service local-ttl localise-queries
    localmx log-async log-debug log-dhcp log-facility log-queries max-cache-ttl max-port
    max-tcp-connections max-ttl min-cache-ttl min-port mx-host mx-target naptr-record neg-ttl nftset
    no-daemon no-dhcp-interface no-dhcpv4-interface no-dhcpv6-interface no-hosts no-ident
    no-negcache no-ping no-poll no-resolv no-round-robin pid-file port port-limit proxy-dnssec
    ptr-record pxe-prompt pxe-service query-port quiet-dhcp quiet-dhcp6 quiet-ra quiet-tftp ra-param
    read-ethers rebind-domain-ok rebind-localhost-ok resolv-file rev-server script-arp
    script-on-renewal selfmx server servers-file shared-network srv-host stop-dns-rebind
    strict-order strip-mac strip-subnet synth-domain tag-if test tftp-lowercase tftp-max tftp-mtu
    tftp-no-blocksize tftp-no-fail tftp-port-range tftp-root tftp-secure tftp-single-port
    tftp-unique-root trust-anchor txt-record umbrella use-stale-cache user version
""".split())

# Short options: letter -> (long name, takes an argument). Optional-argument ones (-1, -3) are flags here.
SHORT_OPTIONS = {
    "a": ("listen-address", True), "A": ("address", True), "b": ("bogus-priv", False), "B": ("bogus-nxdomain", True),
    "c": ("cache-size", True), "C": ("conf-file", True), "d": ("no-daemon", False), "D": ("domain-needed", False),
    "e": ("selfmx", False), "E": ("expand-hosts", False), "f": ("filterwin2k", False), "F": ("dhcp-range", True),
    "g": ("group", True), "G": ("dhcp-host", True), "h": ("no-hosts", False), "H": ("addn-hosts", True),
    "i": ("interface", True), "I": ("except-interface", True), "j": ("dhcp-userclass", True), "J": ("dhcp-ignore", True),
    "k": ("keep-in-foreground", False), "K": ("dhcp-authoritative", False), "l": ("dhcp-leasefile", True),
    "L": ("localmx", False), "m": ("mx-host", True), "M": ("dhcp-boot", True), "n": ("no-poll", False),
    "N": ("no-negcache", False), "o": ("strict-order", False), "O": ("dhcp-option", True), "p": ("port", True),
    "P": ("edns-packet-max", True), "q": ("log-queries", False), "Q": ("query-port", True), "R": ("no-resolv", False),
    "r": ("resolv-file", True), "S": ("server", True), "s": ("domain", True), "t": ("mx-target", True),
    "T": ("local-ttl", True), "u": ("user", True), "U": ("dhcp-vendorclass", True), "v": ("version", False),
    "V": ("alias", True), "W": ("srv-host", True), "w": ("help", False), "x": ("pid-file", True),
    "X": ("dhcp-lease-max", True), "y": ("localise-queries", False), "Y": ("txt-record", True),
    "z": ("bind-interfaces", False), "Z": ("read-ethers", False), "1": ("enable-dbus", False),
    "2": ("no-dhcp-interface", True), "3": ("bootp-dynamic", False), "4": ("dhcp-mac", True), "5": ("no-ping", False),
    "6": ("dhcp-script", True), "7": ("conf-dir", True), "8": ("log-facility", True), "9": ("leasefile-ro", False),
    "0": ("dns-forward-max", True),
}
# Long options that take no separate value on the command line (flags and optional-value options,
# whose value GNU getopt only takes when attached with "=").
FLAGS = frozenset(name for name, arg in SHORT_OPTIONS.values() if not arg) | frozenset("""
    add-mac all-servers bind-dynamic clear-on-reload connmark-allowlist-enable conntrack dhcp-alternate-port
    dhcp-broadcast dhcp-client-update dhcp-fqdn dhcp-generate-names dhcp-ignore-clid dhcp-ignore-names
    dhcp-no-override dhcp-proxy dhcp-rapid-commit dhcp-sequential-ip dns-loop-detect dnssec
    dnssec-check-unsigned dnssec-debug dnssec-no-timecheck enable-ra enable-tftp enable-ubus filter-A
    filter-AAAA local-service log-async log-debug log-dhcp no-ident no-round-robin proxy-dnssec quiet-dhcp
    quiet-dhcp6 quiet-ra quiet-tftp rebind-localhost-ok script-arp script-on-renewal stop-dns-rebind strip-mac
    strip-subnet test tftp-lowercase tftp-no-blocksize tftp-no-fail tftp-secure tftp-single-port
    tftp-unique-root umbrella use-stale-cache
""".split())

_EXPECTED_NAME = "a dnsmasq option name (dnsmasq --help lists them), written without the leading --"


def _entry(option, value, origin):
    return {"option": option, "value": value, "origin": origin}


# ---------------------------------------------------------------------------------------------
# command line


def parse_cmdline(argv, source=COMMAND_LINE):
    """Options of a dnsmasq command line (``/proc/PID/cmdline`` split on NUL, program first).

    Accepts ``--name=value``, ``--name value`` (for options that need a value), ``-i eth0``,
    ``-ieth0`` and grouped short flags (``-kz``), as GNU getopt does. Returns entries
    ``{"option", "value", "origin"}`` (value None for flags). An unknown option raises ParseError.
    """
    entries = []
    args = list(argv[1:])
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            if name not in OPTION_NAMES:
                raise ParseError("unknown dnsmasq option --%s" % name, source=source, line=arg, expected=_EXPECTED_NAME)
            if not sep:
                value = None
                if name not in FLAGS:
                    if index >= len(args):
                        raise ParseError("option --%s needs a value" % name, source=source, line=arg, expected="--%s=VALUE" % name)
                    value = args[index]
                    index += 1
            entries.append(_entry(name, value, source))
        elif arg.startswith("-") and len(arg) > 1:
            letters = arg[1:]
            while letters:
                letter, letters = letters[0], letters[1:]
                if letter not in SHORT_OPTIONS:
                    raise ParseError("unknown dnsmasq option -%s" % letter, source=source, line=arg, expected=_EXPECTED_NAME)
                name, takes = SHORT_OPTIONS[letter]
                value = None
                if takes:
                    if letters:
                        value, letters = letters, ""
                    elif index < len(args):
                        value = args[index]
                        index += 1
                    else:
                        raise ParseError("option -%s needs a value" % letter, source=source, line=arg, expected="-%s VALUE" % letter)
                entries.append(_entry(name, value, source))
        else:
            raise ParseError("dnsmasq takes no positional arguments", source=source, line=arg, expected="options starting with - or --")
    return entries


# ---------------------------------------------------------------------------------------------
# configuration files


def parse_conf(text, source):
    """Options of one dnsmasq configuration file: one option per line, its long name without the
    leading ``--`` (``interface=eth0``, ``bind-interfaces``); blank lines and lines starting with
    ``#`` are ignored, as dnsmasq does. An unknown name raises ParseError naming the file and line
    (dnsmasq itself refuses to start with ``bad option at line N of FILE``)."""
    entries = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if name.startswith("-"):
            raise ParseError("option written with a leading '-' in a configuration file", source=source, lineno=lineno, line=raw,
                             expected="%s=VALUE without the leading --" % name.lstrip("-"))
        if name not in OPTION_NAMES:
            raise ParseError("unknown dnsmasq option %r" % name, source=source, lineno=lineno, line=raw, expected=_EXPECTED_NAME)
        entries.append(_entry(name, value.strip() if sep else None, "%s:%d" % (source, lineno)))
    return entries


def conf_dir_spec(value):
    """``conf-dir=DIR[,.ext...][,*.ext...]`` -> (dir, excluded suffixes, required suffixes)."""
    parts = [p.strip() for p in (value or "").split(",")]
    directory, exclude, include = parts[0], [], []
    for part in parts[1:]:
        if not part:
            continue
        if part.startswith("*"):
            include.append(part[1:])
        else:
            exclude.append(part)
    return directory, exclude, include


def conf_dir_files(names, exclude=(), include=()):
    """Which directory entries dnsmasq reads, in its order (alphabetical): never names ending in
    ``~``, starting with ``.`` or starting and ending with ``#``; never names ending in an excluded
    suffix; when ``*.ext`` suffixes are given, only names ending in one of them."""
    chosen = []
    for name in sorted(names):
        if name.endswith("~") or name.startswith(".") or (len(name) > 1 and name.startswith("#") and name.endswith("#")):
            continue
        if any(name.endswith(suffix) for suffix in exclude):
            continue
        if include and not any(name.endswith(suffix) for suffix in include):
            continue
        chosen.append(name)
    return chosen


def _join(directory, name):
    return directory.rstrip("/") + "/" + name


def load(argv, reader, lister, default_conf=DEFAULT_CONF):
    """Every option of a dnsmasq instance: its command line, then the configuration files it reads.

    ``reader(path)`` returns ``(text, None)`` or ``(None, reason)``; ``lister(path)`` returns
    ``(names, None)`` or ``(None, reason)``; paths are the node's absolute paths. Without
    ``-C/--conf-file`` on the command line dnsmasq reads ``default_conf`` when it exists.
    Returns ``{"entries", "files", "problems"}``: a file named by conf-file or a conf-dir that
    cannot be read is a problem entry ``{"origin", "message"}`` (the running dnsmasq read it at
    start, it has gone since); content that does not parse raises ParseError.
    """
    state = {"entries": [], "files": [], "problems": [], "seen": set()}
    cmdline = parse_cmdline(argv)
    state["entries"].extend(cmdline)
    if not any(e["option"] == "conf-file" for e in cmdline):
        text, _reason = reader(default_conf)
        if text is not None:
            _include_file(state, default_conf, text, reader, lister, 0)
    _follow(state, cmdline, reader, lister, 0)
    del state["seen"]
    return state


def _include_file(state, path, text, reader, lister, depth):
    state["seen"].add(path)
    state["files"].append(path)
    entries = parse_conf(text, path)
    state["entries"].extend(entries)
    _follow(state, entries, reader, lister, depth + 1)


def _follow(state, entries, reader, lister, depth):
    for entry in entries:
        if entry["option"] not in ("conf-file", "conf-dir"):
            continue
        if depth > MAX_INCLUDE_DEPTH:
            state["problems"].append({"origin": entry["origin"], "message": "includes nested deeper than %d levels" % MAX_INCLUDE_DEPTH})
            continue
        if entry["option"] == "conf-file":
            path = entry["value"]
            if not path or path == "-" or path in state["seen"]:
                continue
            if path == "/dev/null":
                state["files"].append(path)
                continue
            text, reason = reader(path)
            if text is None:
                state["problems"].append({"origin": entry["origin"], "message": "conf-file=%s cannot be read: %s" % (path, reason)})
                continue
            _include_file(state, path, text, reader, lister, depth)
        else:
            directory, exclude, include = conf_dir_spec(entry["value"])
            names, reason = lister(directory)
            if names is None:
                state["problems"].append({"origin": entry["origin"], "message": "conf-dir=%s cannot be read: %s" % (directory, reason)})
                continue
            for name in conf_dir_files(names, exclude, include):
                path = _join(directory, name)
                if path in state["seen"]:
                    continue
                text, reason = reader(path)
                if text is None:
                    state["problems"].append({"origin": entry["origin"], "message": "%s in conf-dir cannot be read: %s" % (path, reason)})
                    continue
                _include_file(state, path, text, reader, lister, depth)


# ---------------------------------------------------------------------------------------------
# effective configuration


def effective(loaded):
    """The interface-related settings of the loaded options, each with its origin.

    ``mode`` is ``wildcard`` (default), ``bind-interfaces`` or ``bind-dynamic`` (which wins when
    both are given); ``port`` 0 disables DNS.
    """
    entries = loaded["entries"]

    def values(name):
        found = []
        for entry in entries:
            if entry["option"] == name and entry["value"] is not None:
                for item in entry["value"].split(","):
                    if item.strip():
                        found.append({"value": item.strip(), "origin": entry["origin"]})
        return found

    def last(name):
        found = [e for e in entries if e["option"] == name]
        return found[-1] if found else None

    dynamic, interfaces_opt = last("bind-dynamic"), last("bind-interfaces")
    if dynamic:
        mode = {"value": "bind-dynamic", "origin": dynamic["origin"]}
    elif interfaces_opt:
        mode = {"value": "bind-interfaces", "origin": interfaces_opt["origin"]}
    else:
        mode = {"value": "wildcard", "origin": None}
    port_entry = last("port")
    port = {"value": DEFAULT_PORT, "origin": None}
    if port_entry:
        text = (port_entry["value"] or "").strip()
        if not text.isdigit() or int(text) > 65535:
            raise ParseError("port is not a number from 0 to 65535", source=port_entry["origin"], line="port=%s" % text, expected="port=53")
        port = {"value": int(text), "origin": port_entry["origin"]}
    auth = []
    for entry in entries:
        if entry["option"] == "auth-server" and entry["value"]:
            # first field is the server's name; the rest are interfaces or addresses
            auth.extend({"value": item.strip(), "origin": entry["origin"]} for item in entry["value"].split(",")[1:] if item.strip())
    local_service = last("local-service")
    return {
        "interface": values("interface"),
        "except_interface": values("except-interface"),
        "listen_address": values("listen-address"),
        "auth_server": auth,
        "mode": mode,
        "port": port,
        "local_service": {"value": local_service["value"] or "net", "origin": local_service["origin"]} if local_service else None,
        "files": list(loaded["files"]),
        "problems": list(loaded["problems"]),
        "options": entries,
    }


# ---------------------------------------------------------------------------------------------
# interfaces and the verdict


def name_matches(pattern, name):
    """dnsmasq's interface wildcard: the name must equal the pattern up to its first ``*``."""
    star = pattern.find("*")
    if star < 0:
        return pattern == name
    return name.startswith(pattern[:star])


def is_pod_facing(name, patterns=POD_INTERFACE_PATTERNS):
    return any(name_matches(p, name) for p in patterns)


def parse_ip_addr(text, source="ip -j addr"):
    """Interfaces from ``ip -j addr`` (iproute2 4.14 and later): ``[{"name", "addresses":
    [{"address", "prefixlen", "family"}], "loopback"}]``."""
    import json

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ParseError("not JSON: %s" % exc, source=source, expected="the output of 'ip -j addr'") from None
    if not isinstance(data, list):
        raise ParseError("not a JSON list", source=source, expected="the output of 'ip -j addr' (a list of links)")
    interfaces = []
    for link in data:
        if not isinstance(link, dict) or "ifname" not in link:
            raise ParseError("link without ifname", source=source, line=str(link)[:200], expected="objects with ifname and addr_info, as ip -j addr prints")
        addresses = []
        for info in link.get("addr_info") or []:
            if info.get("family") in ("inet", "inet6") and info.get("local"):
                addresses.append({"address": info["local"], "prefixlen": int(info.get("prefixlen", 0)), "family": info["family"],
                                  "label": info.get("label")})
        interfaces.append({"name": link["ifname"], "addresses": addresses, "loopback": "LOOPBACK" in (link.get("flags") or [])})
    return interfaces


def _describe(item, option):
    return "%s: %s=%s" % (item["origin"] or "default", option, item["value"])


def _connected(address, prefixlen):
    """Whether an interface address has a subnet other hosts (pods) can be on (not a /32 or /128)."""
    return ipaddress.ip_interface("%s/%d" % (address, prefixlen)).network.num_addresses > 1


def interface_verdict(config, interface):
    """Does dnsmasq answer DNS queries arriving on ``interface``? -> (served, because, only_to).

    ``because`` names the configuration line responsible; ``only_to`` lists the destination
    addresses that work when only listen-address= admits the query (None otherwise).
    """
    name = interface["name"]
    if config["port"]["value"] == 0:
        return False, _describe(config["port"], "port") + " (DNS disabled)", None
    excluded = [e for e in config["except_interface"] if name_matches(e["value"], name)]
    if config["mode"]["value"] == "bind-interfaces":
        # Real dnsmasq 2.90: per-address sockets, the ingress interface is not checked again.
        note = " (the ingress interface is not checked; queries to the addresses dnsmasq bound are answered"
        if excluded:
            note += "; %s only drops the addresses of %s" % (_describe(excluded[0], "except-interface"), name)
        return True, "%s: bind-interfaces%s)" % (config["mode"]["origin"], note), None
    if excluded:
        return False, _describe(excluded[0], "except-interface"), None
    if not config["interface"] and not config["listen_address"]:
        if config["local_service"] and not config["auth_server"]:
            origin = config["local_service"]["origin"]
            if any(_connected(a["address"], a["prefixlen"]) for a in interface["addresses"]):
                return True, "%s: local-service (sources on the subnets of %s are answered)" % (origin, name), None
            return False, "%s: local-service (%s has no connected subnet for pod sources)" % (origin, name), None
        return True, "no interface= or listen-address=: every interface that is not excluded", None
    included = [e for e in config["interface"] if name_matches(e["value"], name)]
    if included:
        return True, _describe(included[0], "interface"), None
    if name == "lo" and config["interface"]:
        first = config["interface"][0]
        return True, "%s: interface=%s (dnsmasq adds lo)" % (first["origin"], first["value"]), None
    own = {a["address"] for a in interface["addresses"]}
    listens = [e for e in config["listen_address"] if e["value"] in own]
    if listens:
        return True, _describe(listens[0], "listen-address"), None
    if config["listen_address"]:
        addresses = [e["value"] for e in config["listen_address"]]
        return True, _describe(config["listen_address"][0], "listen-address") + " (only queries sent to %s)" % ", ".join(addresses), addresses
    return False, "%s (%s is not included)" % (_describe(config["interface"][0], "interface"), name), None


def verdict(config, interfaces, patterns=POD_INTERFACE_PATTERNS):
    """Per interface: name, addresses, pod_facing, served, because, only_to."""
    result = []
    for interface in interfaces:
        served, because, only_to = interface_verdict(config, interface)
        result.append({"name": interface["name"], "addresses": ["%s/%d" % (a["address"], a["prefixlen"]) for a in interface["addresses"]],
                       "pod_facing": is_pod_facing(interface["name"], patterns), "served": served, "because": because, "only_to": only_to})
    return result


def expected_sockets(config, interfaces):
    """Addresses dnsmasq should hold a socket on, with the configuration line that asks for it.

    Wildcard mode: one ``0.0.0.0`` socket. bind-interfaces / bind-dynamic: every listen-address and
    every address of an interface the configuration serves (excluded interfaces are left out).
    """
    if config["port"]["value"] == 0:
        return []
    if config["mode"]["value"] == "wildcard":
        return [{"address": "0.0.0.0", "origin": None, "option": "wildcard (no bind-interfaces / bind-dynamic)"}]
    wanted = [{"address": e["value"], "origin": e["origin"], "option": "listen-address=%s" % e["value"]} for e in config["listen_address"]]
    for interface in interfaces:
        excluded = any(name_matches(e["value"], interface["name"]) for e in config["except_interface"])
        if excluded:
            continue
        if config["interface"] or config["listen_address"]:
            matches = [e for e in config["interface"] if name_matches(e["value"], interface["name"])]
            if not matches and interface["name"] == "lo" and config["interface"]:
                matches = [config["interface"][0]]
            if not matches:
                continue
            origin, option = matches[0]["origin"], "interface=%s" % matches[0]["value"]
        else:
            origin, option = config["mode"]["origin"], "%s (all interfaces)" % config["mode"]["value"]
        for address in interface["addresses"]:
            if address["family"] == "inet6" and address["address"].startswith("fe80"):
                continue  # dnsmasq binds link-local IPv6 only with a scope; not reported
            if address["address"] not in [w["address"] for w in wanted]:
                wanted.append({"address": address["address"], "origin": origin, "option": option, "interface": interface["name"]})
    return wanted


def missing_sockets(config, interfaces, sockets):
    """expected_sockets() that no UDP socket of the instance covers (``sockets`` from ss, port filtered)."""
    have = {s["address"] for s in sockets}
    wildcard = any(s.get("wildcard") for s in sockets)
    missing = []
    for want in expected_sockets(config, interfaces):
        if want["address"] == "0.0.0.0":
            if not wildcard:
                missing.append(want)
        elif want["address"] not in have and not wildcard:
            missing.append(want)
    return missing
