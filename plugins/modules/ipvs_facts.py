#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: ipvs_facts
short_description: IPVS virtual services, real servers and settings of a node, for kube-proxy IPVS mode
version_added: 1.0.0
description:
  - Reads the IPVS table with C(ipvsadm -Ln) (and C(ipvsadm -Ln --stats), C(ipvsadm -Lnc),
    C(ipvsadm -l --timeout) when they work), or from the kernel's C(/proc/net/ip_vs) when
    C(ipvsadm) is not installed.
  - Reports each virtual service (protocol, address, port or firewall mark, scheduler, persistence)
    with its real servers (address, port, forwarding method, weight, active and inactive
    connections), the virtual services of the kube-dns ClusterIPs on UDP and TCP port 53, and the
    IPVS sysctls that matter for DNS after CoreDNS pods go away.
  - Where IPVS is absent (no C(/proc/net/ip_vs), so the C(ip_vs) module is not loaded) the result is
    C(available=false) with the reason; the module does not fail.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - Optional C(ipvsadm) 1.26 or later on the node; without it C(/proc/net/ip_vs) is read.
notes:
  - C(ipvsadm) is only run when C(/proc/net/ip_vs) exists, because C(ipvsadm) loads the C(ip_vs)
    kernel module when it is missing, and this module must not change the node.
  - C(/proc/net/ip_vs) has no counters and no timeouts, so RV(ansible_facts.clusterdns_ipvs.timeout)
    is V(null) and C(stats) stay V(null) when only the file could be read.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
  - clusterdns.doctor._attributes.root
options:
  cluster_ip:
    description:
      - ClusterIPs of the kube-dns Service. Their UDP and TCP port 53 virtual services are reported
        in RV(ansible_facts.clusterdns_ipvs.kube_dns).
    type: list
    elements: str
    default: []
seealso:
  - module: clusterdns.doctor.iptables_facts
  - name: IPVS-based in-cluster load balancing (kube-proxy IPVS mode)
    description: How kube-proxy uses IPVS.
    link: https://kubernetes.io/blog/2018/07/09/ipvs-based-in-cluster-load-balancing-deep-dive/
  - name: IPVS sysctls (kernel documentation)
    description: conn_reuse_mode, expire_nodest_conn, expire_quiescent_template, conntrack.
    link: https://docs.kernel.org/networking/ipvs-sysctl.html
"""

EXAMPLES = r"""
- name: Read IPVS state for the kube-dns ClusterIP
  clusterdns.doctor.ipvs_facts:
    cluster_ip: [10.96.0.10]
  become: true

- name: Show the real servers behind kube-dns UDP
  ansible.builtin.debug:
    msg: "{{ ansible_facts.clusterdns_ipvs.kube_dns | selectattr('protocol', 'equalto', 'UDP') | list }}"
  when: ansible_facts.clusterdns_ipvs.available
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    clusterdns_ipvs:
      description: IPVS state of the node.
      returned: always
      type: dict
      contains:
        available:
          description: Whether the IPVS table could be read.
          type: bool
          returned: always
          sample: false
        reason:
          description: Why not.
          type: str
          returned: always
          sample: "IPVS not loaded: not found: /proc/net/ip_vs"
        source:
          description: V(ipvsadm) or V(proc) (C(/proc/net/ip_vs)); V(null) when not available.
          type: str
          returned: always
          sample: ipvsadm
        version:
          description: IPVS version from the table header.
          type: str
          returned: always
          sample: 1.2.1
        cluster_ips:
          description: The O(cluster_ip) values used.
          type: list
          elements: str
          returned: always
          sample: [10.96.0.10]
        services:
          description: Virtual services.
          type: list
          elements: dict
          returned: always
          contains:
            protocol:
              description: V(TCP), V(UDP), V(SCTP) or V(FWM).
              type: str
              sample: UDP
            address:
              description: Virtual address (V(null) for FWM).
              type: str
              sample: 10.96.0.10
            port:
              description: Virtual port (V(null) for FWM).
              type: int
              sample: 53
            fwmark:
              description: Firewall mark of an FWM service.
              type: int
              sample: null
            scheduler:
              description: Scheduler.
              type: str
              sample: rr
            persistent:
              description: Persistence timeout in seconds; V(null) when not persistent.
              type: int
              sample: null
            flags:
              description: Other flags printed after the scheduler.
              type: list
              elements: str
              sample: []
            stats:
              description: Counters from C(--stats) (C(conns), C(inpkts), C(outpkts), C(inbytes), C(outbytes)), or V(null).
              type: dict
              sample: null
            real_servers:
              description: C(address), C(port), C(forward) (Masq, Route, Tunnel), C(weight), C(active), C(inactive), C(stats).
              type: list
              elements: dict
              sample: [{"address": "10.244.0.2", "port": 53, "forward": "Masq", "weight": 1, "active": 0, "inactive": 3, "stats": null}]
        kube_dns:
          description: For each O(cluster_ip) and protocol V(UDP) and V(TCP), whether a virtual service exists on port 53 and which.
          type: list
          elements: dict
          returned: always
          sample: [{"cluster_ip": "10.96.0.10", "protocol": "UDP", "port": 53, "present": true, "service": {"scheduler": "rr"}}]
        sysctls:
          description: C(net.ipv4.vs.*) values C(conn_reuse_mode), C(expire_nodest_conn), C(expire_quiescent_template), C(conntrack); V(null) when unreadable.
          type: dict
          returned: always
          sample: {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0, "conntrack": 1}
        timeout:
          description: C(ipvsadm -l --timeout) as C(tcp), C(tcpfin), C(udp) seconds, or V(null).
          type: dict
          returned: always
          sample: {"tcp": 900, "tcpfin": 120, "udp": 300}
        connections:
          description: C(ipvsadm -Lnc) summary, C(available), C(total) and C(kube_dns) (entries to a kube-dns ClusterIP port 53).
          type: dict
          returned: always
          sample: {"available": true, "total": 12, "kube_dns": 4}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils._ipvs import SYSCTLS, kube_dns, merge_stats, parse_connections, parse_list, parse_timeout
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source, exit_with_facts


def _sysctls(source):
    values = {}
    for name in SYSCTLS:
        read = source.read("/proc/sys/net/ipv4/vs/" + name)
        text = (read["content"] or "").strip()
        values[name] = int(text) if read["available"] and text.lstrip("-").isdigit() else None
    return values


def gather(source, cluster_ips):
    facts = {"available": False, "reason": None, "source": None, "version": None, "cluster_ips": list(cluster_ips),
             "services": [], "kube_dns": [], "sysctls": _sysctls(source), "timeout": None,
             "connections": {"available": False, "total": None, "kube_dns": None}}
    proc = source.read("/proc/net/ip_vs")
    listing = None
    if proc["available"] or not source.live:
        # Live: only run ipvsadm when the kernel table exists (ipvsadm would modprobe ip_vs).
        listing = source.command("ipvsadm-Ln", ["ipvsadm", "-Ln"])
    if listing is not None and listing["available"] and listing["content"].startswith("Can't initialize ipvs"):
        # ipvsadm's own message when the kernel has no IPVS (saved in a bundle as the command's output)
        listing = dict(listing, available=False, reason=listing["content"].strip().replace("\n", " "))
    if listing is not None and listing["available"]:
        table = parse_list(listing["content"], source=listing["path"] or "ipvsadm -Ln")
        facts["source"] = "ipvsadm"
        stats = source.command("ipvsadm-Ln-stats", ["ipvsadm", "-Ln", "--stats"])
        if stats["available"]:
            merge_stats(table["services"], parse_list(stats["content"], source=stats["path"] or "ipvsadm -Ln --stats")["services"])
        timeout = source.command("ipvsadm-timeout", ["ipvsadm", "-l", "--timeout"])
        if timeout["available"]:
            facts["timeout"] = parse_timeout(timeout["content"], source=timeout["path"] or "ipvsadm -l --timeout")
        conns = source.command("ipvsadm-Lnc", ["ipvsadm", "-Lnc"])
        if conns["available"]:
            entries = parse_connections(conns["content"], source=conns["path"] or "ipvsadm -Lnc")
            targets = {"%s:53" % ip for ip in cluster_ips}
            facts["connections"] = {"available": True, "total": len(entries), "kube_dns": sum(1 for e in entries if e["virtual"] in targets)}
    elif proc["available"]:
        table = parse_list(proc["content"], source=proc["path"], hexadecimal=True)
        facts["source"] = "proc"
    else:
        reasons = ["IPVS not loaded: %s" % proc["reason"]]
        if listing is not None:
            reasons.append("ipvsadm: %s" % listing["reason"])
        facts["reason"] = "; ".join(reasons)
        return facts
    facts.update(available=True, version=table["version"], services=table["services"], kube_dns=kube_dns(table["services"], cluster_ips))
    return facts


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "cluster_ip": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    source = Source(module, module.params["root"])
    exit_with_facts(module, "clusterdns_ipvs", "cannot parse IPVS facts", gather, source, module.params["cluster_ip"])


if __name__ == "__main__":
    main()
