# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Pure parsers for the resolver side of a node (stdlib only): resolv.conf as glibc reads it,
# kubelet's DNS settings (KubeletConfiguration file, command line, flags files), the local
# stub in front of the real upstream servers, and the libc flavour.

from __future__ import annotations

import ipaddress
import json
import re
import shlex

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

# glibc resolv.h: MAXNS nameservers are used, the others ignored.
MAXNS = 3
# glibc before 2.26 (MAXDNSRCH, the search buffer) and kubelet before 1.28.
SEARCH_LIMIT_OLD = (6, 256)
# kubelet 1.28+ (ExpandedDNSConfig GA): MaxDNSSearchPaths / MaxDNSSearchListChars.
SEARCH_LIMIT_KUBELET = (32, 2048)
# glibc defaults (resolv.h RES_TIMEOUT, RES_DFLRETRY, ndots 1) and caps (RES_MAXNDOTS, RES_MAXRETRANS, RES_MAXRETRY).
DEFAULT_OPTIONS = {"ndots": 1, "timeout": 5, "attempts": 2}
OPTION_CAPS = {"ndots": 15, "timeout": 30, "attempts": 5}
NUMERIC_OPTIONS = ("ndots", "timeout", "attempts")
FLAG_OPTIONS = (
    "rotate", "single-request", "single-request-reopen", "use-vc", "edns0", "trust-ad", "no-aaaa",
    "no-check-names", "inet6", "ip6-bytestring", "ip6-dotint", "no-ip6-dotint", "no-tld-query",
    "no-reload", "debug",
)
KEYWORDS = ("nameserver", "domain", "search", "sortlist", "options")

SYSTEMD_STUB = "/run/systemd/resolve/stub-resolv.conf"
SYSTEMD_UPSTREAM = "/run/systemd/resolve/resolv.conf"
SYSTEMD_STUB_ADDRESSES = ("127.0.0.53", "127.0.0.54")
# Ubuntu's NetworkManager-managed dnsmasq listened on 127.0.1.1.
NM_DNSMASQ_ADDRESS = "127.0.1.1"

KUBELET_DEFAULT_RESOLV_CONF = "/etc/resolv.conf"


def _problem(kind, lineno, line, message):
    return {"kind": kind, "lineno": lineno, "line": line, "message": message}


def _address(token):
    """The nameserver address glibc would accept (IPv6 may carry a %scope), or None."""
    base = token.split("%", 1)[0] if ":" in token else token
    try:
        ipaddress.ip_address(base)
    except ValueError:
        return None
    return token


def is_loopback(address):
    """True for 127.0.0.0/8 and ::1 (what a pod's network namespace cannot reach on the node)."""
    try:
        return ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def parse_resolv_conf(text, source="resolv.conf"):
    """Parse resolv.conf the way glibc's res_init reads it (resolv.conf(5)).

    Accepted: the files glibc 2.17 to 2.41 and musl read, comments with ``#`` or ``;`` at the start
    of a line, keywords followed by blanks or tabs. Behaviour copied from glibc: keywords must
    start the line; the last ``domain`` or ``search`` line wins; only the first 3 valid
    nameservers are used; ``options`` lines accumulate, later values win, numeric options are
    capped (ndots 15, timeout 30, attempts 5); unknown keywords and options are ignored.

    Every line glibc ignores or truncates is returned in ``problems`` (kind, lineno, line,
    message), so that a typo is not silently lost. resolv.conf has no syntax errors in glibc's
    eyes, so this never raises on content; it raises ParseError only when ``text`` is not text.

    Returns ``{"nameservers", "ignored_nameservers", "search", "options", "sortlist",
    "problems"}``; ``nameservers`` are the ones the resolver uses (at most 3, file order).
    """
    if not isinstance(text, str):
        raise ParseError("resolv.conf content must be text, got %s" % type(text).__name__, source=source)
    valid, search, options, sortlist, problems = [], [], {}, [], []
    search_line = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if line[0] in " \t":
            problems.append(_problem("junk", lineno, line,
                                     "line starts with blanks: glibc only reads keywords at the start of a line, so it ignores this line"))
            continue
        fields = stripped.split()
        keyword, args = fields[0], fields[1:]
        if keyword not in KEYWORDS:
            problems.append(_problem("unknown_keyword", lineno, line, "unknown keyword %r: ignored (known: %s)" % (keyword, ", ".join(KEYWORDS))))
            continue
        if keyword == "nameserver":
            # glibc ends the address at a blank, '#' or ';' (res_init.c), then calls inet_pton.
            token = re.split(r"[#;]", args[0])[0] if args else ""
            address = _address(token) if token else None
            if address is None:
                message = "nameserver line without a valid IPv4 or IPv6 address: ignored" if token else "nameserver line without an address: ignored"
                problems.append(_problem("invalid_nameserver", lineno, line, message))
                continue
            rest = args[1:]
            if rest and not rest[0].startswith(("#", ";")):
                problems.append(_problem("junk", lineno, line, "text after the address is ignored: %s" % " ".join(rest)))
            valid.append((lineno, line, address))
        elif keyword in ("domain", "search"):
            if not args:
                problems.append(_problem("junk", lineno, line, "%s line without a domain: ignored" % keyword))
                continue
            search = args[:1] if keyword == "domain" else list(args)
            search_line = (lineno, line)
        elif keyword == "sortlist":
            sortlist = list(args)
        else:
            for option in args:
                name, _sep, value = option.partition(":")
                if name in NUMERIC_OPTIONS:
                    if not value.isdigit():
                        problems.append(_problem("invalid_option", lineno, line, "option %r needs a number (%s:N): ignored" % (option, name)))
                        continue
                    number = int(value)
                    if number > OPTION_CAPS[name]:
                        problems.append(_problem("invalid_option", lineno, line, "%s:%d is above glibc's cap, %d is used" % (name, number, OPTION_CAPS[name])))
                        number = OPTION_CAPS[name]
                    options[name] = number
                elif name in FLAG_OPTIONS and not value:
                    options[name] = True
                else:
                    problems.append(_problem("unknown_option", lineno, line, "unknown option %r: ignored by glibc" % option))
    used = [address for _lineno, _line, address in valid[:MAXNS]]
    ignored = valid[MAXNS:]
    for lineno, line, address in ignored:
        problems.append(_problem("nameserver_limit", lineno, line,
                                 "more than %d nameservers: %s is ignored (glibc and musl use the first %d; kubelet drops the rest for pods)"
                                 % (MAXNS, address, MAXNS)))
    if search_line is not None:
        chars = len(" ".join(search))
        lineno, line = search_line
        if len(search) > SEARCH_LIMIT_KUBELET[0] or chars > SEARCH_LIMIT_KUBELET[1]:
            problems.append(_problem("search_limit", lineno, line,
                                     "search list of %d domains / %d characters is over kubelet's limit of %d / %d (1.28+): kubelet truncates it for pods"
                                     % (len(search), chars, SEARCH_LIMIT_KUBELET[0], SEARCH_LIMIT_KUBELET[1])))
        elif len(search) > SEARCH_LIMIT_OLD[0] or chars > SEARCH_LIMIT_OLD[1]:
            problems.append(_problem("search_limit", lineno, line,
                                     "search list of %d domains / %d characters is over %d / %d: glibc before 2.26 and kubelet before 1.28 truncate it"
                                     % (len(search), chars, SEARCH_LIMIT_OLD[0], SEARCH_LIMIT_OLD[1])))
    problems.sort(key=lambda p: p["lineno"])
    return {"nameservers": used, "ignored_nameservers": [a for _l, _t, a in ignored], "search": search,
            "options": options, "sortlist": sortlist, "problems": problems}


def effective_options(options):
    """The options with glibc's defaults filled in (ndots 1, timeout 5, attempts 2)."""
    merged = dict(DEFAULT_OPTIONS)
    merged.update(options or {})
    return merged


# --- kubelet ---------------------------------------------------------------------------------

KUBELET_FLAGS = {"--cluster-dns": "cluster_dns", "--cluster-domain": "cluster_domain", "--resolv-conf": "resolv_conf", "--config": "config"}
_CONFIG_KEYS = {"clusterDNS": "cluster_dns", "clusterDomain": "cluster_domain", "resolvConf": "resolv_conf"}
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:(?:\s+(.*)|\s*)$")


def _scalar(value, source, lineno, line):
    value = value.strip()
    if value.startswith(('"', "'")):
        quote = value[0]
        end = value.find(quote, 1)
        if end < 0:
            raise ParseError("unterminated quoted string", source=source, lineno=lineno, line=line, expected="a closing %s" % quote)
        rest = value[end + 1:].strip()
        if rest and not rest.startswith("#"):
            raise ParseError("text after a quoted string", source=source, lineno=lineno, line=line, expected="a comment or nothing after the value")
        return value[1:end]
    if " #" in value:
        value = value.split(" #", 1)[0].rstrip()
    if value in ("", "~", "null", "Null", "NULL"):
        return None
    return value


def _flow_list(value, source, lineno, line):
    body = value.strip()
    if " #" in body:
        body = body.split(" #", 1)[0].rstrip()
    if not body.endswith("]"):
        raise ParseError("flow sequence not closed on its line", source=source, lineno=lineno, line=line, expected="[a, b] on one line")
    inner = body[1:-1].strip()
    if not inner:
        return []
    return [_scalar(item, source, lineno, line) for item in inner.split(",")]


def parse_kubelet_config(text, source="config.yaml"):
    """Read clusterDNS, clusterDomain and resolvConf from a KubeletConfiguration file.

    Accepted: JSON, and the block-style YAML that kubeadm, kubespray, EKS and k3s write
    (top-level ``key: value`` lines, nested blocks indented with spaces, block ``- item`` or
    flow ``[a, b]`` sequences, quoted or plain scalars, comments, a leading ``---``). Only the
    three DNS keys are interpreted; other keys are skipped. A tab in indentation, a top-level
    line that is not ``key: value``, a second YAML document, an unterminated quote or an
    unclosed flow sequence raises ParseError with the line: kubelet would refuse the file.

    Returns ``{"cluster_dns": [str] | None, "cluster_domain": str | None, "resolv_conf": str |
    None, "kind": str | None}``; None means the key is absent (kubelet's default applies).
    """
    result = {"cluster_dns": None, "cluster_domain": None, "resolv_conf": None, "kind": None}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            lineno = getattr(exc, "lineno", None)
            line = text.splitlines()[lineno - 1] if lineno and lineno <= len(text.splitlines()) else None
            raise ParseError("invalid JSON: %s" % getattr(exc, "msg", exc), source=source, lineno=lineno, line=line, expected="a JSON object") from None
        if not isinstance(data, dict):
            raise ParseError("the KubeletConfiguration is not an object", source=source, expected="a JSON object")
        for key, name in _CONFIG_KEYS.items():
            if key in data:
                result[name] = data[key]
        result["kind"] = data.get("kind")
    else:
        _parse_yaml_subset(text, source, result)
    dns = result["cluster_dns"]
    if dns is not None and not (isinstance(dns, list) and all(isinstance(v, str) for v in dns)):
        raise ParseError("clusterDNS must be a list of IP addresses, got %r" % (dns,), source=source, expected="clusterDNS: [10.96.0.10]")
    for key in ("cluster_domain", "resolv_conf"):
        if result[key] is not None and not isinstance(result[key], str):
            raise ParseError("%s must be a string, got %r" % (key, result[key]), source=source)
    return result


def _parse_yaml_subset(text, source, result):
    current = None
    documents = 0
    seen_content = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        body = line.rstrip()
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        if body.startswith("---"):
            documents += 1
            if documents > 1 or seen_content:
                raise ParseError("a second YAML document", source=source, lineno=lineno, line=line, expected="one KubeletConfiguration per file")
            continue
        seen_content = True
        indent = len(body) - len(body.lstrip(" \t"))
        if "\t" in body[:indent]:
            raise ParseError("tab in indentation (YAML allows only spaces)", source=source, lineno=lineno, line=line, expected="spaces")
        if indent:
            if current == "cluster_dns":
                item = body.strip()
                if not item.startswith("-"):
                    raise ParseError("clusterDNS must be a list", source=source, lineno=lineno, line=line, expected="'- <IP address>' items")
                result["cluster_dns"].append(_scalar(item[1:], source, lineno, line))
            continue
        if body.startswith("- ") or body == "-":
            if current == "cluster_dns":
                result["cluster_dns"].append(_scalar(body[1:], source, lineno, line))
                continue
            raise ParseError("a list item at the top level", source=source, lineno=lineno, line=line, expected="'key: value'")
        match = _TOP_KEY.match(body)
        if not match:
            raise ParseError("not a 'key: value' line", source=source, lineno=lineno, line=line,
                             expected="'key: value' at the top level of a KubeletConfiguration")
        key, value = match.group(1), (match.group(2) or "").strip()
        current = None
        if key == "kind":
            result["kind"] = _scalar(value, source, lineno, line)
        name = _CONFIG_KEYS.get(key)
        if name is None:
            continue
        if name == "cluster_dns":
            if not value or value.startswith("#"):
                result["cluster_dns"] = []
                current = "cluster_dns"
            elif value.startswith("["):
                result["cluster_dns"] = _flow_list(value, source, lineno, line)
            else:
                raise ParseError("clusterDNS must be a list", source=source, lineno=lineno, line=line,
                                 expected="clusterDNS: [10.96.0.10] or '- 10.96.0.10' items")
        else:
            result[name] = "" if value in ('""', "''") else _scalar(value, source, lineno, line)


def parse_kubelet_args(argv):
    """DNS flags from a kubelet argument list (``--flag=value`` or ``--flag value``; the last
    occurrence wins, as with Go's flag package). Returns only the flags present, by name
    ``cluster_dns`` (list, comma-separated values), ``cluster_domain``, ``resolv_conf``,
    ``config``."""
    found = {}
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, sep, value = arg.partition("=")
        if name in KUBELET_FLAGS:
            if not sep:
                if index + 1 < len(argv) and not argv[index + 1].startswith("--"):
                    value = argv[index + 1]
                    index += 1
                else:
                    value = ""
            key = KUBELET_FLAGS[name]
            found[key] = [v for v in value.split(",") if v] if key == "cluster_dns" else value
        index += 1
    return found


def split_cmdline(text):
    """Arguments of ``/proc/<pid>/cmdline`` (NUL-separated) or of a saved command line (spaces)."""
    if "\0" in text:
        return [arg for arg in text.split("\0") if arg]
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def is_kubelet(argv):
    return bool(argv) and argv[0].rsplit("/", 1)[-1] == "kubelet"


_ASSIGN = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def parse_flags_file(text, source="kubeadm-flags.env"):
    """kubelet arguments from an environment file (``/var/lib/kubelet/kubeadm-flags.env``
    ``KUBELET_KUBEADM_ARGS="..."``, ``/etc/default/kubelet`` ``KUBELET_EXTRA_ARGS=...``) or a
    systemd drop-in (``Environment="KUBELET_DNS_ARGS=--cluster-dns=..."`` lines). Returns the
    DNS flags found (see parse_kubelet_args); later assignments win. A quote that is not
    closed raises ParseError with the line."""
    argv = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        if line.startswith("Environment="):
            try:
                assignments = shlex.split(line[len("Environment="):])
            except ValueError:
                raise ParseError("unbalanced quotes", source=source, lineno=lineno, line=raw, expected='Environment="NAME=value"') from None
            for item in assignments:
                _name, _sep, value = item.partition("=")
                argv.extend(value.split())
            continue
        match = _ASSIGN.match(line)
        if not match:
            continue
        try:
            words = shlex.split(match.group(2), comments=True)
        except ValueError:
            raise ParseError("unbalanced quotes", source=source, lineno=lineno, line=raw, expected='NAME="--flag=value ..."') from None
        for word in words:
            argv.extend(word.split())
    return parse_kubelet_args(argv)


def kubelet_settings(config=None, flag_sets=(), config_source=None):
    """Effective kubelet DNS settings: the config file's values, overridden by command-line
    flags (kubelet gives flags precedence). ``flag_sets`` is a list of ``(source, flags)`` in
    increasing precedence. resolvConf defaults to /etc/resolv.conf; "" means pods with
    dnsPolicy Default get no nameservers from the node."""
    settings = {"cluster_dns": [], "cluster_domain": None, "resolv_conf": KUBELET_DEFAULT_RESOLV_CONF, "sources": {}}
    if config:
        for key in ("cluster_dns", "cluster_domain", "resolv_conf"):
            if config.get(key) is not None:
                settings[key] = config[key]
                settings["sources"][key] = config_source
    for source, flags in flag_sets:
        for key in ("cluster_dns", "cluster_domain", "resolv_conf"):
            if key in flags:
                settings[key] = flags[key]
                settings["sources"][key] = source
    return settings


# --- stub and libc ---------------------------------------------------------------------------

def stub_kind(realpath, nameservers, dnsmasq_configured=False):
    """What sits behind a loopback nameserver: ``systemd-resolved`` (the stub file or
    127.0.0.53/54), ``dnsmasq`` (127.0.1.1, or a local dnsmasq configuration), ``other``
    (another loopback resolver), or None when no nameserver is on loopback."""
    if realpath == SYSTEMD_STUB or any(ns in SYSTEMD_STUB_ADDRESSES for ns in nameservers):
        return "systemd-resolved"
    loopback = [ns for ns in nameservers if is_loopback(ns)]
    if not loopback:
        return None
    if NM_DNSMASQ_ADDRESS in loopback or dnsmasq_configured:
        return "dnsmasq"
    return "other"


_GLIBC = re.compile(r"^ldd \(.*\)\s+(\d+\.\d+(?:\.\d+)?)\s*$", re.MULTILINE)
_MUSL = re.compile(r"^musl libc.*(?:\n\s*Version\s+(\S+))?", re.MULTILINE)
_MUSL_LOADER = re.compile(r"^/\S*/ld-musl-[\w-]+\.so\.1: ", re.MULTILINE)


def parse_ldd_version(text):
    """libc from ``ldd --version``: glibc prints ``ldd (Debian GLIBC 2.36-9) 2.36``; musl's ldd
    prints ``musl libc (x86_64)`` and ``Version 1.2.4`` (on stderr, exit 1), or, in newer releases,
    only that its loader cannot load ``--version`` (no version then). Returns
    ``{"name": "glibc"|"musl"|None, "version": str|None}``."""
    text = text or ""
    match = _GLIBC.search(text)
    if match:
        return {"name": "glibc", "version": match.group(1)}
    match = _MUSL.search(text)
    if match:
        return {"name": "musl", "version": match.group(1)}
    if _MUSL_LOADER.search(text):
        # musl 1.1.22+ ldd passes --version to the loader as a file name:
        # "/lib/ld-musl-x86_64.so.1: cannot load --version: No such file or directory".
        return {"name": "musl", "version": None}
    return {"name": None, "version": None}


def musl_loader(names):
    """The musl dynamic loader among directory entries of /lib (``ld-musl-<arch>.so.1``), or None."""
    for name in names:
        if name.startswith("ld-musl-"):
            return name
    return None
