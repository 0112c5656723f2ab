# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# What a support bundle holds (docs/bundle.md): the node paths the facts modules read and the
# commands whose output they parse. One list, so that support_bundle writes exactly what the
# facts modules read from a bundle. Stdlib only.

from __future__ import annotations

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._dnsmasq import load as dnsmasq_load
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError
from ansible_collections.clusterdns.doctor.plugins.module_utils._kernel import SYSCTLS

# Files and glob patterns, as node paths.
FILES = (
    "/proc/sys/net/netfilter/nf_conntrack_max",
    "/proc/sys/net/netfilter/nf_conntrack_count",
    "/proc/sys/net/netfilter/nf_conntrack_buckets",
    "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
    "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
    "/proc/net/stat/nf_conntrack",
    "/proc/sys/kernel/osrelease",
    "/proc/version",
    "/proc/net/snmp",
    "/proc/net/snmp6",
    "/proc/net/ip_vs",
    "/proc/sys/net/ipv4/vs/conn_reuse_mode",
    "/proc/sys/net/ipv4/vs/expire_nodest_conn",
    "/proc/sys/net/ipv4/vs/expire_quiescent_template",
    "/proc/sys/net/ipv4/vs/conntrack",
    "/etc/resolv.conf",
    "/run/systemd/resolve/resolv.conf",
    "/run/systemd/resolve/stub-resolv.conf",
    "/etc/dnsmasq.conf",
    "/etc/dnsmasq.d/*",
    "/etc/NetworkManager/dnsmasq.d/*",
    "/run/dnsmasq/resolv.conf",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
    "/etc/systemd/system/kubelet.service.d/*.conf",
    "/usr/lib/systemd/system/kubelet.service.d/*.conf",
    "/lib/systemd/system/kubelet.service.d/*.conf",
    "/lib/ld-musl-*",
) + tuple("/proc/sys/" + name for name in SYSCTLS)

# name -> argv. ``when`` names a node path that must exist for the command to run (ipvsadm would
# load the ip_vs module otherwise; conntrack -S is only the fallback of the /proc file).
COMMANDS = (
    {"name": "iptables-version", "argv": ["iptables", "--version"]},
    {"name": "iptables-save", "argv": ["iptables-save"]},
    {"name": "ip6tables-save", "argv": ["ip6tables-save"]},
    {"name": "ss-lnup", "argv": ["ss", "-lnup"]},
    {"name": "ss-lntp", "argv": ["ss", "-lntp"]},
    {"name": "ip-addr", "argv": ["ip", "-j", "addr"]},
    {"name": "dmesg", "argv": ["dmesg"]},
    {"name": "uname-r", "argv": ["uname", "-r"]},
    {"name": "ldd-version", "argv": ["ldd", "--version"], "stderr": True},
    {"name": "conntrack-S", "argv": ["conntrack", "-S"], "unless": "/proc/net/stat/nf_conntrack"},
    {"name": "ipvsadm-Ln", "argv": ["ipvsadm", "-Ln"], "when": "/proc/net/ip_vs"},
    {"name": "ipvsadm-Ln-stats", "argv": ["ipvsadm", "-Ln", "--stats"], "when": "/proc/net/ip_vs"},
    {"name": "ipvsadm-Lnc", "argv": ["ipvsadm", "-Lnc"], "when": "/proc/net/ip_vs"},
    {"name": "ipvsadm-timeout", "argv": ["ipvsadm", "-l", "--timeout"], "when": "/proc/net/ip_vs"},
)

_CONF_OPTION = re.compile(r"^--?(?:conf-file|conf-dir|C|7)(?:=(.*))?$")
_RESOLV_CONF = re.compile(r"^\s*resolvConf:\s*['\"]?([^'\"\s#]+)", re.MULTILINE)


def dnsmasq_config_paths(argv):
    """conf-file / conf-dir paths named on a dnsmasq command line (conf-dir suffix rules dropped:
    the whole directory is collected and dnsmasq_facts applies the rules)."""
    paths = []
    args = list(argv)
    for index, arg in enumerate(args):
        match = _CONF_OPTION.match(arg)
        if not match:
            continue
        value = match.group(1)
        if value is None and index + 1 < len(args):
            value = args[index + 1]
        if value:
            paths.append(value.split(",")[0])
    return paths


def dnsmasq_include_paths(argv, reader, lister):
    """Every conf-file / conf-dir path a dnsmasq instance reads: those of its command line and those
    named inside its configuration files, followed as dnsmasq follows them (``_dnsmasq.load``), so
    that a drop-in directory named in a file outside /etc/dnsmasq.d is in the bundle too.

    ``reader`` and ``lister`` as for ``_dnsmasq.load``. Returns ``(paths, problem)``: on a file that
    does not parse, the command line's paths and the parse error (the bundle still holds the file).
    """
    paths = dnsmasq_config_paths(argv)
    try:
        loaded = dnsmasq_load(argv, reader, lister)
    except ParseError as exc:
        return paths, str(exc)
    for entry in loaded["entries"]:
        if entry["option"] in ("conf-file", "conf-dir") and entry.get("value"):
            path = entry["value"].split(",")[0].strip()
            if path and path not in paths and path not in ("-", "/dev/null"):
                paths.append(path)
    return paths, None


def kubelet_resolv_conf(config_text):
    """The ``resolvConf`` path of a KubeletConfiguration text, or None."""
    match = _RESOLV_CONF.search(config_text or "")
    return match.group(1) if match else None


def process_line(pid, argv):
    """One ``PID ARGV...`` line, the ``pgrep -a`` layout the facts modules read back."""
    return "%s %s" % (pid, " ".join(argv))
