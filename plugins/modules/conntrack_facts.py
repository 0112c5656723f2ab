#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: conntrack_facts
short_description: Connection-tracking table size, use, drop counters and "table full" kernel messages of a node
version_added: 1.0.0
description:
  - Reads the size (C(nf_conntrack_max)), the current use (C(nf_conntrack_count)), the hash size
    (C(nf_conntrack_buckets)) and the UDP timeouts from C(/proc/sys/net/netfilter).
  - Sums the per-CPU counters of C(/proc/net/stat/nf_conntrack) (or of C(conntrack -S) when that
    file is missing), so that C(insert_failed), C(drop) and C(early_drop), the counters of the
    DNAT race of kubernetes issue 56903 and of a full table, are one number each.
  - With O(interval) the counters are read twice, that many seconds apart, and the increase is
    returned, which tells a counter that is rising now from one that rose once since boot.
  - "Counts the kernel's C(nf_conntrack: table full, dropping packet) messages in C(dmesg), those of the
    network namespace it runs in (C(table full in netns INODE) outside the host's namespace)."
  - Where the C(nf_conntrack) module is not loaded the result is C(available=false) with the
    reason; the module does not fail.
author:
  - clusterdns.doctor developers (!UNKNOWN)
notes:
  - The conntrack counters of a network namespace are its own, but C(nf_conntrack_max) is global
    to the kernel. In a container, RV(ansible_facts.clusterdns_conntrack.count) is the container's
    share and RV(ansible_facts.clusterdns_conntrack.max) the kernel's limit.
  - Reading C(dmesg) needs root where C(kernel.dmesg_restrict=1); without it the C(available) key of
    RV(ansible_facts.clusterdns_conntrack.kernel_log) is V(false) with the reason.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
  - clusterdns.doctor._attributes.root
options:
  interval:
    description:
      - Seconds between two reads of the counters, to return their increase in
        RV(ansible_facts.clusterdns_conntrack.stats_delta). V(0) reads once.
      - Ignored on a bundle (a bundle is one moment).
    type: float
    default: 0
  kernel_log:
    description:
      - Whether to read the kernel log (C(dmesg), or C(commands/dmesg.txt) of a bundle) for
        C(table full, dropping packet) messages.
    type: bool
    default: true
  remediation_file:
    description:
      - The sysctl drop-in the C(clusterdns.doctor.conntrack) role writes when it raises the limit. On a
        live node, C(table full) messages logged before that file was last written are marked as
        history (C(before_remediation)), so that CT001 does not keep reporting a table that has
        since been enlarged.
    type: path
    default: /etc/sysctl.d/90-clusterdns-conntrack.conf
seealso:
  - module: clusterdns.doctor.kernel_facts
  - name: Netfilter conntrack sysctls (kernel documentation)
    description: nf_conntrack_max, nf_conntrack_buckets, nf_conntrack_udp_timeout.
    link: https://docs.kernel.org/networking/nf_conntrack-sysctl.html
  - name: DNS intermittent delays of 5s (kubernetes issue 56903)
    description: The DNAT race that shows as insert_failed.
    link: https://github.com/kubernetes/kubernetes/issues/56903
"""

EXAMPLES = r"""
- name: Read conntrack use and counters, sampling the counters 5 seconds apart
  clusterdns.doctor.conntrack_facts:
    interval: 5
  become: true

- name: Warn when the table is more than 80 % full
  ansible.builtin.debug:
    msg: "conntrack {{ ansible_facts.clusterdns_conntrack.count }}/{{ ansible_facts.clusterdns_conntrack.max }}"
  when:
    - ansible_facts.clusterdns_conntrack.available
    - ansible_facts.clusterdns_conntrack.usage_ratio > 0.8

- name: Read a collected bundle instead of the live node
  clusterdns.doctor.conntrack_facts:
    root: /tmp/bundles/node-1
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    clusterdns_conntrack:
      description: Connection tracking state of the node.
      returned: always
      type: dict
      contains:
        available:
          description: Whether C(nf_conntrack) is loaded and its sysctls could be read.
          type: bool
          returned: always
          sample: true
        reason:
          description: Why the facts are not available, or V(null).
          type: str
          returned: always
          sample: null
        max:
          description: C(net.netfilter.nf_conntrack_max), the table limit.
          type: int
          returned: when available
          sample: 262144
        count:
          description: C(net.netfilter.nf_conntrack_count), entries in use now.
          type: int
          returned: when available
          sample: 1034
        buckets:
          description: C(net.netfilter.nf_conntrack_buckets), the hash table size, or V(null).
          type: int
          returned: when available
          sample: 262144
        usage_ratio:
          description: RV(ansible_facts.clusterdns_conntrack.count) divided by RV(ansible_facts.clusterdns_conntrack.max).
          type: float
          returned: when available
          sample: 0.0039
        udp_timeout:
          description: C(nf_conntrack_udp_timeout) seconds (unreplied UDP, such as a lost DNS query), or V(null).
          type: int
          returned: when available
          sample: 30
        udp_timeout_stream:
          description: C(nf_conntrack_udp_timeout_stream) seconds, or V(null).
          type: int
          returned: when available
          sample: 120
        stats:
          description: Counters summed over all CPUs (names as the kernel prints them), or V(null) when neither source could be read.
          type: dict
          returned: when available
          sample: {"insert": 0, "insert_failed": 3, "drop": 3, "early_drop": 0, "clash_resolve": 12}
        stats_source:
          description: Where RV(ansible_facts.clusterdns_conntrack.stats) came from, C(proc) or C(conntrack -S), or V(null).
          type: str
          returned: when available
          sample: proc
        stats_delta:
          description: Increase of each counter over RV(ansible_facts.clusterdns_conntrack.interval), or V(null) when read once.
          type: dict
          returned: when available
          sample: {"insert_failed": 2, "drop": 2}
        interval:
          description: Seconds between the two reads, V(0) when read once.
          type: float
          returned: when available
          sample: 5.0
        kernel_log:
          description:
            - C(table full, dropping packet) messages of this node's network namespace in the kernel log
              (C(table_full_events), C(first), C(last), C(sample)).
            - The kernel log is shared by all namespaces. The host's (init) namespace logs C(table full,
              dropping packet); any other (a kind or lab node, a pod with its own rules) logs C(table full in
              netns INODE, dropping packet). C(netns) says which namespace the facts were read in
              (C(inode), C(init), C(since)); messages of other namespaces are only counted in
              C(other_netns_events) and C(other_netns) (by inode, V(init) for the host's).
            - Namespace inodes are reused once a namespace is gone, so outside the init namespace only
              messages logged at or after C(since) (the start of the oldest process in the namespace, seconds
              since boot) are this node's; older ones naming the same inode are counted in C(before_netns).
            - A bundle records the namespace in C(commands/netns.txt); an older bundle without it is read as
              the host's namespace.
          type: dict
          returned: when available
          sample: {"available": true, "reason": null, "table_full_events": 2, "first": "38775494.392631",
                   "last": "38775494.393661", "sample": ["[38775494.392631] nf_conntrack: table full, dropping packet"],
                   "last_age_seconds": 5400.2, "before_remediation": false, "other_netns_events": 0, "other_netns": {},
                   "before_netns": 0, "netns": {"inode": 4026531833, "init": true, "since": null}}
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils._conntrack import (
    delta, netns_of_this_process, parse_conntrack_s, parse_netns, parse_stat_file, table_full_events, usage_ratio)
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source, check_interval, exit_with_facts

SYSCTL_DIR = "/proc/sys/net/netfilter/"


def _int(source, name):
    read = source.read(SYSCTL_DIR + name)
    text = (read["content"] or "").strip()
    return int(text) if read["available"] and text.isdigit() else None


def _stats(source):
    stat = source.read("/proc/net/stat/nf_conntrack")
    if stat["available"]:
        return parse_stat_file(stat["content"], source=stat["path"])["counters"], "proc"
    saved = source.command("conntrack-S", ["conntrack", "-S"])
    if saved["available"]:
        return parse_conntrack_s(saved["content"], source=saved["path"] or "conntrack -S")["counters"], "conntrack -S"
    return None, None


def _netns(source):
    """The namespace the facts are read in (live), or as the bundle recorded it (None: unknown)."""
    if source.live:
        return netns_of_this_process()
    saved = source.read("/commands/netns.txt")  # written by support_bundle; there is no command to run
    return parse_netns(saved["content"], source=saved["path"]) if saved["available"] else None


def _kernel_log(source, remediation_file):
    log = source.command("dmesg", ["dmesg"])
    if not log["available"]:
        return {"available": False, "reason": log["reason"], "table_full_events": None, "first": None, "last": None, "sample": [],
                "last_age_seconds": None, "before_remediation": False}
    netns = _netns(source)
    found = dict(table_full_events(log["content"], netns), available=True, reason=None, last_age_seconds=None, before_remediation=False,
                 netns=netns)
    if source.live and found["last"] and re.match(r"^\d+\.\d+$", found["last"]):
        uptime = source.read("/proc/uptime")
        if uptime["available"]:
            age = float(uptime["content"].split()[0]) - float(found["last"])
            found["last_age_seconds"] = round(age, 1)
            try:
                written = time.time() - os.stat(source.path(remediation_file)).st_mtime
            except OSError:
                written = None
            found["before_remediation"] = written is not None and written < age
    return found


def gather(source, interval=0.0, kernel_log=True, remediation_file="/etc/sysctl.d/90-clusterdns-conntrack.conf"):
    maximum = _int(source, "nf_conntrack_max")
    if maximum is None:
        read = source.read(SYSCTL_DIR + "nf_conntrack_max")
        return {"available": False, "reason": "nf_conntrack is not loaded or not readable (%s)" % read["reason"]}
    count = _int(source, "nf_conntrack_count")
    stats, stats_source = _stats(source)
    stats_delta = None
    if stats is not None and interval > 0 and source.live:
        time.sleep(interval)
        later, dummy = _stats(source)
        stats_delta = delta(stats, later)
        stats = later
    else:
        interval = 0.0
    return {
        "available": True,
        "reason": None,
        "max": maximum,
        "count": count,
        "buckets": _int(source, "nf_conntrack_buckets"),
        "usage_ratio": usage_ratio(count, maximum),
        "udp_timeout": _int(source, "nf_conntrack_udp_timeout"),
        "udp_timeout_stream": _int(source, "nf_conntrack_udp_timeout_stream"),
        "stats": stats,
        "stats_source": stats_source,
        "stats_delta": stats_delta,
        "interval": interval,
        "kernel_log": _kernel_log(source, remediation_file) if kernel_log else {
            "available": False, "reason": "not requested (kernel_log=false)", "table_full_events": None, "first": None, "last": None,
            "sample": [], "last_age_seconds": None, "before_remediation": False},
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "interval": {"type": "float", "default": 0},
            "kernel_log": {"type": "bool", "default": True},
            "remediation_file": {"type": "path", "default": "/etc/sysctl.d/90-clusterdns-conntrack.conf"},
        },
        supports_check_mode=True,
    )
    check_interval(module)
    source = Source(module, module.params["root"])
    exit_with_facts(module, "clusterdns_conntrack", "cannot parse conntrack facts", gather,
                    source, module.params["interval"], module.params["kernel_log"], module.params["remediation_file"])


if __name__ == "__main__":
    main()
