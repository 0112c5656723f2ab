#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: iptables_facts
short_description: What the node's iptables rules do to DNS (kube-proxy, NodeLocal DNSCache, firewalls)
version_added: 1.0.0
description:
  - Reads C(iptables-save) and C(ip6tables-save) once each and reports, for DNS, the iptables
    backend, the kube-proxy mode, the kube-dns Service chains with their endpoints and load-balancing
    probabilities, the kube-proxy C(has no endpoints) rejects, the NodeLocal DNSCache NOTRACK and
    ACCEPT rules, and every rule that drops or rejects traffic on port 53.
  - Also reads which sockets listen on port 53 (C(ss -lnup), C(ss -lntp)), so that NOTRACK rules for
    a NodeLocal DNSCache address can be checked against something actually answering there.
  - Each dump is parsed in a single pass. Dumps with 100k+ rules (large kube-proxy clusters) take well
    under a second; see C(docs/benchmarks.md) in the collection for the measured figure.
  - A missing tool or bundle file is reported as C(available=false) with a reason,
    never as a failure. A dump that is present but cannot be parsed fails, naming the source, the line
    number and what was expected.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - C(iptables-save) (iptables 1.4 or later, legacy or nf_tables backend) on the node; C(ip6tables-save) and C(ss) (iproute2) are optional.
notes:
  - Needs root on a live node; as another user C(iptables-save) fails and the result says so.
  - Only rules that name a port are reported in RV(ansible_facts.clusterdns_iptables.dns_blocks). A
    rule that drops everything (no port match), a jump to a user chain whose own rules or policy drop,
    a C(-m set) match and a mark that a later rule drops are out of scope; the C(DROP) policies of
    built-in chains are listed in RV(ansible_facts.clusterdns_iptables.policies) as context only.
  - The kube-proxy C(has no endpoints) rejects are reported in
    RV(ansible_facts.clusterdns_iptables.no_endpoints), not in RV(ansible_facts.clusterdns_iptables.dns_blocks).
  - kube-proxy in C(nftables) mode writes no iptables rules; the mode then shows as V(null).
  - The C(iptables-save) on the node's C(PATH) is used. On a node where kube-proxy uses the other
    backend (legacy versus nf_tables) the rules it wrote are not in this dump.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
  - clusterdns.doctor._attributes.root
options:
  service_name:
    description:
      - C(namespace/name) of the cluster DNS Service as kube-proxy writes it in its rule comments.
    type: str
    default: kube-system/kube-dns
  cluster_ip:
    description:
      - ClusterIPs of the cluster DNS Service. Identifies its rules when kube-proxy comments are
        absent, and tells the finding rules which address must be programmed.
    type: list
    elements: str
    default: []
seealso:
  - module: clusterdns.doctor.ipvs_facts
  - name: Debugging DNS resolution (Kubernetes documentation)
    description: How kube-proxy rules for the kube-dns Service look and how to check them.
    link: https://kubernetes.io/docs/tasks/administer-cluster/dns-debugging-resolution/
  - name: NodeLocal DNSCache
    description: The NOTRACK rules and link-local address of the node cache.
    link: https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/
"""

EXAMPLES = r"""
- name: Read the DNS view of the node's iptables rules
  clusterdns.doctor.iptables_facts:
    cluster_ip: [10.96.0.10]
  become: true

- name: Show rules that drop DNS
  ansible.builtin.debug:
    msg: "{{ item.table }}/{{ item.chain }} #{{ item.position }}: {{ item.rule }}"
  loop: "{{ ansible_facts.clusterdns_iptables.dns_blocks }}"

- name: Read a collected support bundle instead of the live node
  clusterdns.doctor.iptables_facts:
    root: /tmp/bundles/node1
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    clusterdns_iptables:
      description: DNS-relevant facts of the node's iptables rules.
      returned: always
      type: dict
      contains:
        available:
          description: Whether C(iptables-save) output could be read.
          type: bool
          returned: always
          sample: true
        reason:
          description: Why it could not, when RV(ansible_facts.clusterdns_iptables.available=false).
          type: str
          returned: always
          sample: null
        backend:
          description: V(nft) or V(legacy), from C(iptables --version); V(null) when unknown.
          type: str
          returned: always
          sample: nft
        version:
          description: iptables version.
          type: str
          returned: always
          sample: 1.8.9
        service_name:
          description: The O(service_name) used.
          type: str
          returned: always
          sample: kube-system/kube-dns
        cluster_ips:
          description: The O(cluster_ip) values used.
          type: list
          elements: str
          returned: always
          sample: [10.96.0.10]
        sources:
          description:
            - Each source read (C(iptables-version), C(iptables-save), C(ip6tables-save), C(ss-lnup),
              C(ss-lntp)) with C(available) and C(reason).
          type: dict
          returned: always
          sample:
            iptables-save: {"available": true, "reason": null}
            ip6tables-save: {"available": false, "reason": "not found: /b/commands/ip6tables-save.txt"}
        rule_count:
          description: Rules per table, by family (V(ipv4), V(ipv6)).
          type: dict
          returned: always
          sample: {"ipv4": {"filter": 6, "nat": 24, "raw": 4}}
        kube_proxy:
          description: Whether kube-proxy rules are present and its mode guessed from them.
          type: dict
          returned: always
          contains:
            present:
              description: C(KUBE-SERVICES), C(KUBE-NODEPORTS), C(KUBE-SVC-*) or C(KUBE-IPVS-*) chains exist.
              type: bool
              sample: true
            mode:
              description:
                - V(iptables) when C(KUBE-SVC-*) or C(KUBE-SEP-*) chains exist.
                - V(ipvs) when C(KUBE-IPVS-*) or C(KUBE-LOAD-BALANCER) chains or C(KUBE-*) ipset matches exist.
                - V(null) otherwise (no kube-proxy, or kube-proxy in nftables mode).
              type: str
              sample: iptables
        services:
          description:
            - The C(KUBE-SERVICES) rules of the DNS Service (found by comment or ClusterIP) that jump to
              a C(KUBE-SVC-*) or C(KUBE-SVL-*) chain.
          type: list
          elements: dict
          returned: always
          contains:
            family:
              description: V(ipv4) or V(ipv6).
              type: str
              sample: ipv4
            service:
              description: Service from the comment.
              type: str
              sample: kube-system/kube-dns
            port_name:
              description: Service port name from the comment.
              type: str
              sample: dns
            cluster_ip:
              description: Destination address.
              type: str
              sample: 10.96.0.10
            port:
              description: Destination port.
              type: int
              sample: 53
            protocol:
              description: Protocol.
              type: str
              sample: udp
            chain:
              description: The KUBE-SVC chain.
              type: str
              sample: KUBE-SVC-TCOU7JCQXEZGVUNU
            position:
              description: 1-based position in C(KUBE-SERVICES).
              type: int
              sample: 1
            rule:
              description: Rule text as dumped.
              type: str
              sample: "-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU"
            endpoints:
              description:
                - The KUBE-SEP chains in order, with the DNAT destination (C(ip), C(port), C(to_destination)).
                - C(probability) is the C(--probability) as written (V(null) on the last endpoint).
                - C(share) is the fraction of new connections the endpoint gets.
              type: list
              elements: dict
              sample:
                - {"chain": "KUBE-SEP-AAAA", "ip": "10.244.0.2", "port": 53, "probability": 0.5, "share": 0.5}
        no_endpoints:
          description:
            - kube-proxy C(REJECT) rules whose comment says the DNS Service C(has no endpoints).
            - Fields C(family), C(table), C(chain), C(position), C(rule), C(cluster_ip), C(port), C(protocol).
          type: list
          elements: dict
          returned: always
          sample:
            - {"table": "filter", "chain": "KUBE-SERVICES", "position": 1, "cluster_ip": "10.96.0.10", "port": 53, "protocol": "udp"}
        nodelocal:
          description: NodeLocal DNSCache rules for port 53.
          type: dict
          returned: always
          contains:
            present:
              description: Whether any NOTRACK rule for port 53 is in the raw table.
              type: bool
              sample: true
            addresses:
              description: Addresses the NOTRACK rules cover (C(-d) and C(-s)).
              type: list
              elements: str
              sample: [169.254.20.10]
            notrack:
              description:
                - Raw-table C(NOTRACK) or C(CT --notrack) rules for port 53.
                - Same fields as RV(ansible_facts.clusterdns_iptables.dns_blocks), plus C(kind) and C(addresses).
              type: list
              elements: dict
              sample: []
            accept:
              description: Filter-table C(ACCEPT) rules for port 53 with a NodeLocal comment.
              type: list
              elements: dict
              sample: []
            markers:
              description: Comments on those rules.
              type: list
              elements: str
              sample: ["NodeLocal DNS Cache: skip conntrack"]
        dns_blocks:
          description:
            - Every C(DROP) or C(REJECT) rule, in any table and chain, whose protocol and port matches
              include port 53 (destination or source port; single, list or range; negation honoured).
          type: list
          elements: dict
          returned: always
          contains:
            family:
              description: V(ipv4) or V(ipv6).
              type: str
              sample: ipv4
            table:
              description: Table.
              type: str
              sample: filter
            chain:
              description: Chain.
              type: str
              sample: FORWARD
            position:
              description: 1-based position of the rule in its chain.
              type: int
              sample: 2
            lineno:
              description: Line in the dump.
              type: int
              sample: 17
            rule:
              description: Rule text as dumped.
              type: str
              sample: "-A FORWARD -i cni0 -p udp -m multiport --dports 1:1024 -j DROP"
            target:
              description: V(DROP) or V(REJECT).
              type: str
              sample: DROP
            dns_ports:
              description: The port matches that include 53.
              type: list
              elements: str
              sample: ["dports 1:1024"]
            match:
              description: Parsed match (protocol, source, destination, interfaces, port specs, comment).
              type: dict
              sample: {"protocol": "udp", "dports": ["1:1024"], "in_interface": "cni0"}
        dns_blocks_shadowed:
          description:
            - C(DROP) or C(REJECT) rules on port 53 that an earlier C(ACCEPT) in the same chain covers completely
              (same traffic, no extra condition), for example after the C(clusterdns.doctor.firewall) role inserted
              one. Same keys as RV(ansible_facts.clusterdns_iptables.dns_blocks), plus C(shadowed_by) with the
              C(position) and C(rule) of the C(ACCEPT). Not a finding.
          type: list
          elements: dict
          returned: always
          sample: [{"table": "filter", "chain": "INPUT", "position": 2, "rule": "-A INPUT -i cilium_host -p udp -m udp --dport 53 -j DROP",
                    "shadowed_by": {"position": 1, "rule": "-A INPUT -i cilium_host -p udp -m udp --dport 53 -j ACCEPT"}}]
        policies:
          description: Chains whose policy is C(DROP) (context only, not a finding by themselves).
          type: list
          elements: dict
          returned: always
          sample: [{"family": "ipv4", "table": "filter", "chain": "FORWARD", "policy": "DROP"}]
        listeners:
          description: Sockets listening on port 53, from C(ss -lnup) and C(ss -lntp).
          type: dict
          returned: always
          contains:
            available:
              description: Whether at least the UDP list could be read.
              type: bool
              sample: true
            reason:
              description: Why not.
              type: str
              sample: null
            sockets:
              description:
                - C(protocol), C(address), C(port), C(interface) (scope after C(%)), C(wildcard) and
                  C(processes) (name, pid).
              type: list
              elements: dict
              sample:
                - {"protocol": "udp", "address": "169.254.20.10", "port": 53, "wildcard": false, "processes": [{"name": "node-cache", "pid": 4121}]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils._iptables import DNS_PORT, merge, parse_save, parse_ss, parse_version
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source, exit_with_facts


def gather(source, service_name, cluster_ips):
    sources = {}
    version = source.command("iptables-version", ["iptables", "--version"])
    backend = parsed_version = None
    if version["available"]:
        info = parse_version(version["content"], source=version["path"] or "iptables --version")
        backend, parsed_version = info["backend"], info["version"]
    sources["iptables-version"] = {"available": version["available"], "reason": version["reason"]}
    parsed = []
    for name, family in (("iptables-save", "ipv4"), ("ip6tables-save", "ipv6")):
        out = source.command(name, [name])
        sources[name] = {"available": out["available"], "reason": out["reason"]}
        if out["available"]:
            parsed.append(parse_save(out["content"], source=out["path"] or name, family=family,
                                     service_name=service_name, cluster_ips=cluster_ips))
    facts = merge(parsed, backend=backend, version=parsed_version)
    facts.update(available=sources["iptables-save"]["available"], reason=sources["iptables-save"]["reason"],
                 service_name=service_name, cluster_ips=list(cluster_ips), sources=sources)
    sockets, reason = [], None
    for name, protocol, flag in (("ss-lnup", "udp", "-lnup"), ("ss-lntp", "tcp", "-lntp")):
        out = source.command(name, ["ss", flag])
        sources[name] = {"available": out["available"], "reason": out["reason"]}
        if out["available"]:
            sockets.extend(parse_ss(out["content"], protocol, source=out["path"] or "ss " + flag, port=DNS_PORT))
        elif protocol == "udp":
            reason = out["reason"]
    facts["listeners"] = {"available": sources["ss-lnup"]["available"], "reason": reason, "sockets": sockets}
    return facts


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "service_name": {"type": "str", "default": "kube-system/kube-dns"},
            "cluster_ip": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    service_name = module.params["service_name"]
    if "/" not in service_name or service_name.startswith("/") or service_name.endswith("/"):
        module.fail_json(msg="option service_name must be namespace/name as in kube-proxy comments, got %r" % service_name)
    source = Source(module, module.params["root"])
    exit_with_facts(module, "clusterdns_iptables", "cannot parse iptables facts", gather, source, service_name, module.params["cluster_ip"])


if __name__ == "__main__":
    main()
