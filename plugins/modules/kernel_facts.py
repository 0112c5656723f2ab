#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_facts
short_description: Kernel release, DNS-relevant sysctls, UDP drop counters and the netfilter fixes a node's kernel predates
version_added: 1.0.0
description:
  - Reads the kernel release (C(/proc/sys/kernel/osrelease), or C(/proc/version)) and returns it as
    numbers, with the list of upstream fixes for dropped parallel DNS queries (conntrack races fixed
    in 4.19, 5.0 and 5.6; IPVS source-port reuse fixed in 5.9) and whether this release has them.
  - Reads the sysctls that shape DNS traffic through kube-proxy (conntrack limits and UDP
    timeouts, socket and UDP buffer sizes C(net.core.rmem_*)/C(wmem_*), C(net.ipv4.udp_mem),
    C(net.ipv4.udp_rmem_min), C(ip_forward), C(rp_filter), C(bridge-nf-call-iptables), and the IPVS
    C(conn_reuse_mode)/C(expire_nodest_conn) where IPVS is loaded).
  - Reads the UDP counters of C(/proc/net/snmp) and C(/proc/net/snmp6) (C(InErrors),
    C(RcvbufErrors), ...), which count datagrams the kernel dropped before any program read them.
  - With O(interval) the counters are read twice and their increase is returned.
author:
  - clusterdns.doctor developers (!UNKNOWN)
notes:
  - Release numbers are compared with the upstream version that carries each fix. Distribution
    kernels (RHEL, Alibaba Cloud Linux, ...) may carry backports; each entry names the fix so the
    vendor's changelog can be checked.
  - The UDP counters are those of the network namespace the module runs in.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
  - clusterdns.doctor._attributes.root
options:
  interval:
    description:
      - Seconds between two reads of the UDP counters, to return their increase in
        RV(ansible_facts.clusterdns_kernel.udp_delta). V(0) reads once. Ignored on a bundle.
    type: float
    default: 0
seealso:
  - module: clusterdns.doctor.conntrack_facts
  - name: SNMP counters (kernel documentation)
    description: What InErrors, RcvbufErrors and the other UDP counters count.
    link: https://docs.kernel.org/networking/snmp_counter.html
"""

EXAMPLES = r"""
- name: Read kernel facts
  clusterdns.doctor.kernel_facts:

- name: Show the fixes this kernel lacks
  ansible.builtin.debug:
    msg: "{{ ansible_facts.clusterdns_kernel.exposure | rejectattr('fixed') | map(attribute='summary') | list }}"

- name: Measure UDP drops over 10 seconds
  clusterdns.doctor.kernel_facts:
    interval: 10
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    clusterdns_kernel:
      description: Kernel facts of the node.
      returned: always
      type: dict
      contains:
        available:
          description: Whether the kernel release could be read.
          type: bool
          returned: always
          sample: true
        reason:
          description: Why the facts are not available, or V(null).
          type: str
          returned: always
          sample: null
        release:
          description: The release as C(uname -r) prints it.
          type: str
          returned: when available
          sample: 5.4.0-1045-aws
        version:
          description: The upstream version of the release as V([major, minor, patch]).
          type: list
          elements: int
          returned: when available
          sample: [5, 4, 0]
        exposure:
          description: The upstream fixes for dropped parallel DNS queries, each with C(id), C(fixed_in), C(summary), C(reference) and C(fixed).
          type: list
          elements: dict
          returned: when available
          sample: [{"id": "nf-clash-allow-insert", "fixed_in": [5, 6, 0], "fixed": false,
                    "summary": "conntrack: allow insertion of clashing UDP entries", "reference": "https://github.com/weaveworks/weave/issues/3287"}]
        sysctls:
          description: Sysctl values by their C(/proc/sys) path below C(/proc/sys) (V(null) when absent), as strings.
          type: dict
          returned: when available
          sample: {"net/netfilter/nf_conntrack_max": "262144", "net/core/rmem_max": "212992", "net/ipv4/udp_mem": "22470 29961 44940",
                   "net/ipv4/vs/conn_reuse_mode": null}
        udp:
          description: IPv4 UDP counters of C(/proc/net/snmp), or V(null) when unreadable.
          type: dict
          returned: when available
          sample: {"InDatagrams": 45, "NoPorts": 0, "InErrors": 0, "RcvbufErrors": 0}
        udp6:
          description: IPv6 UDP counters of C(/proc/net/snmp6) without the C(Udp6) prefix, or V(null).
          type: dict
          returned: when available
          sample: {"InDatagrams": 0, "InErrors": 0, "RcvbufErrors": 0}
        udp_delta:
          description: Increase of the IPv4 and IPv6 UDP counters over RV(ansible_facts.clusterdns_kernel.interval), or V(null).
          type: dict
          returned: when available
          sample: {"udp": {"RcvbufErrors": 120}, "udp6": {"RcvbufErrors": 0}}
        interval:
          description: Seconds between the two reads, V(0) when read once.
          type: float
          returned: when available
          sample: 0.0
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils._conntrack import delta
from ansible_collections.clusterdns.doctor.plugins.module_utils._kernel import (
    SYSCTLS, exposure, parse_release, parse_snmp, parse_snmp6, release_from_proc_version)
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source, check_interval, exit_with_facts


def _release(source):
    read = source.read("/proc/sys/kernel/osrelease")
    if read["available"] and read["content"].strip():
        return read["content"].strip(), read["path"], None
    version = source.read("/proc/version")
    if version["available"]:
        return release_from_proc_version(version["content"], source=version["path"]), version["path"], None
    uname = source.command("uname-r", ["uname", "-r"])
    if uname["available"]:
        return uname["content"].strip(), uname["path"] or "uname -r", None
    return None, None, "kernel release not readable: %s; %s; %s" % (read["reason"], version["reason"], uname["reason"])


def _udp(source):
    snmp = source.read("/proc/net/snmp")
    udp = parse_snmp(snmp["content"], source=snmp["path"]).get("Udp") if snmp["available"] else None
    snmp6 = source.read("/proc/net/snmp6")
    udp6 = (parse_snmp6(snmp6["content"], source=snmp6["path"]) or None) if snmp6["available"] else None
    return udp, udp6


def gather(source, interval=0.0):
    release, where, reason = _release(source)
    if release is None:
        return {"available": False, "reason": reason}
    version = parse_release(release, source=where)
    sysctls = {}
    for name in SYSCTLS:
        read = source.read("/proc/sys/" + name)
        sysctls[name] = " ".join(read["content"].split()) if read["available"] else None
    udp, udp6 = _udp(source)
    udp_delta = None
    if interval > 0 and source.live:
        time.sleep(interval)
        later, later6 = _udp(source)
        udp_delta = {"udp": delta(udp or {}, later or {}), "udp6": delta(udp6 or {}, later6 or {})}
        udp, udp6 = later, later6
    else:
        interval = 0.0
    return {
        "available": True,
        "reason": None,
        "release": release,
        "version": version,
        "exposure": exposure(version),
        "sysctls": sysctls,
        "udp": udp,
        "udp6": udp6,
        "udp_delta": udp_delta,
        "interval": interval,
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "interval": {"type": "float", "default": 0},
        },
        supports_check_mode=True,
    )
    check_interval(module)
    source = Source(module, module.params["root"])
    exit_with_facts(module, "clusterdns_kernel", "cannot parse kernel facts", gather, source, module.params["interval"])


if __name__ == "__main__":
    main()
