#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: dnsmasq_facts
short_description: dnsmasq instances of a node, their effective interface configuration, and which pod-facing interfaces they ignore
version_added: 1.0.0
description:
  - Finds the running dnsmasq processes of the node (in the network namespace the module runs in),
    reads each one's command line and the configuration files it reads (C(/etc/dnsmasq.conf) unless
    C(--conf-file) is given, C(conf-file=) and C(conf-dir=) with dnsmasq's suffix rules), and
    reports the effective interface settings, each value with the file and line it comes from.
  - For every interface of the node (C(ip -j addr)) it says whether dnsmasq answers DNS queries that
    arrive on it and which configuration line decides, and flags the pod-facing interfaces (by CNI
    naming convention, see O(pod_interface_patterns)) that dnsmasq ignores.
  - Lists the UDP and TCP sockets each instance listens on (C(ss -lnup), C(ss -lntp)) and the
    addresses its configuration asks for but that have no socket.
  - Where no dnsmasq runs the result is C(available=false) with the reason; the module does not fail.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - C(ip) and C(ss) from iproute2 4.14 or later on the node.
notes:
  - The verdict follows dnsmasq 2.90 as measured in this collection's test bed; docs/dnsmasq.md
    explains it. In the default mode and with C(bind-dynamic), dnsmasq checks the interface a query
    arrives on, so C(except-interface=cilium_*) drops pod queries even when they are sent to an
    address of another interface. With C(bind-interfaces) it does not check the ingress interface.
  - A configuration file that contains an option dnsmasq does not know makes the module fail with the
    file, the line and what was expected, because dnsmasq itself would refuse it at the next restart.
    A file named by C(conf-file=) or a C(conf-dir=) that cannot be read is reported in C(problems).
  - Reading another process's network namespace and command line needs root (C(become)).
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
  - clusterdns.doctor._attributes.root
options:
  pod_interface_patterns:
    description:
      - Names of the interfaces pod traffic enters the node through. A trailing C(*) matches any suffix,
        as in dnsmasq's own interface options.
      - The default covers Cilium, the bridge plugin, flannel, Calico, Weave, kube-router, veth pairs,
        the AWS VPC CNI, Azure CNI and GKE.
    type: list
    elements: str
    default: [cilium_host, cilium_net, lxc*, cni0, cali*, flannel.1, vxlan.calico, weave, kube-bridge, veth*, tunl0, eni*, azv*, gke*]
  extra:
    description:
      - Additional pod-facing interface patterns, added to O(pod_interface_patterns) (for example
        V(docker0) when containers query dnsmasq).
    type: list
    elements: str
    default: []
seealso:
  - module: clusterdns.doctor.iptables_facts
  - name: dnsmasq(8) manual page
    description: interface, except-interface, listen-address, bind-interfaces, bind-dynamic, conf-dir.
    link: https://thekelleys.org.uk/dnsmasq/docs/dnsmasq-man.html
"""

EXAMPLES = r"""
- name: Read the dnsmasq configuration of the node
  clusterdns.doctor.dnsmasq_facts:
  become: true

- name: Pod-facing interfaces dnsmasq ignores, with the line responsible
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.because }}"
  loop: "{{ ansible_facts.clusterdns_dnsmasq.instances | map(attribute='interfaces') | flatten
            | selectattr('pod_facing') | rejectattr('served') | list }}"
  loop_control:
    label: "{{ item.name }}"
  when: ansible_facts.clusterdns_dnsmasq.available

- name: Diagnose a saved support bundle, with docker0 counted as pod-facing
  clusterdns.doctor.dnsmasq_facts:
    root: /tmp/bundles/node1
    extra: [docker0]
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    clusterdns_dnsmasq:
      description: dnsmasq state of the node.
      returned: always
      type: dict
      contains:
        available:
          description: Whether at least one dnsmasq instance was found.
          type: bool
          returned: always
          sample: true
        reason:
          description: Why not; V(null) when available.
          type: str
          returned: always
          sample: null
        pod_interface_patterns:
          description: The pod-facing patterns used (O(pod_interface_patterns) plus O(extra)).
          type: list
          elements: str
          returned: always
          sample: [cilium_host, lxc*]
        interfaces_reason:
          description: Why the node's interfaces could not be read (C(ip -j addr)); V(null) when they could.
          type: str
          returned: always
          sample: null
        instances:
          description: One entry per dnsmasq process.
          type: list
          elements: dict
          returned: always
          contains:
            pid:
              description: Process id (V(null) when a bundle line has none).
              type: int
              sample: 1234
            cmdline:
              description: The command line, program first.
              type: list
              elements: str
              sample: [/usr/sbin/dnsmasq, --keep-in-foreground, --conf-file=/etc/dnsmasq.conf]
            config:
              description:
                - Effective interface configuration. C(mode) (V(wildcard), V(bind-interfaces), V(bind-dynamic)),
                  C(port) and C(local_service) are C({value, origin}); C(interface), C(except_interface),
                  C(listen_address) and C(auth_server) are lists of C({value, origin}). C(origin) is C(FILE:LINE),
                  V(command line), or V(null) for a default.
                - C(files) are the configuration files read, in order; C(problems) are C({origin, message}) for
                  includes that could not be read; C(options) is every option with its origin.
              type: dict
              sample: {"mode": {"value": "bind-dynamic", "origin": "/etc/dnsmasq.conf:3"},
                       "except_interface": [{"value": "cilium_*", "origin": "/etc/dnsmasq.conf:5"}]}
            sockets:
              description: Listening sockets of this process on the DNS port (C(protocol), C(address), C(port), C(interface), C(wildcard)).
              type: list
              elements: dict
              sample: [{"protocol": "udp", "address": "172.25.4.1", "port": 53, "interface": null, "wildcard": false}]
            sockets_reason:
              description: Why the sockets could not be read; V(null) when they could.
              type: str
              sample: null
            interfaces:
              description:
                - >-
                  Every interface of the node with C(name), C(addresses) (CIDR), C(pod_facing), C(served) (whether
                  dnsmasq answers DNS queries arriving on it), C(because) (the configuration line that decides, as
                  C(FILE:LINE: option=value)) and C(only_to) (the destination addresses that work when only
                  C(listen-address) admits the query, else V(null)).
              type: list
              elements: dict
              sample: [{"name": "cilium_host", "addresses": ["172.26.2.58/32"], "pod_facing": true, "served": false,
                        "because": "/etc/dnsmasq.d/10-vip.conf:2: except-interface=cilium_*", "only_to": null}]
            ignored_pod_interfaces:
              description: Names of the pod-facing interfaces with C(served=false).
              type: list
              elements: str
              sample: [cilium_host]
            missing_sockets:
              description: Addresses the configuration asks dnsmasq to listen on (C(address), C(origin), C(option)) with no UDP socket.
              type: list
              elements: dict
              sample: []
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils import _dnsmasq
from ansible_collections.clusterdns.doctor.plugins.module_utils._iptables import parse_ss
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source, exit_with_facts


def _live_instances(source):
    """(pid, argv) of the dnsmasq processes in this module's network namespace."""
    try:
        own_ns = os.readlink("/proc/self/ns/net")
    except OSError:
        own_ns = None
    found = []
    for name in source.listdir("/proc"):
        if not name.isdigit():
            continue
        comm = source.read("/proc/%s/comm" % name)
        if not comm["available"] or comm["content"].strip() != "dnsmasq":
            continue
        cmdline = source.read("/proc/%s/cmdline" % name)
        if not cmdline["available"] or not cmdline["content"]:
            continue
        try:
            if own_ns is not None and os.readlink("/proc/%s/ns/net" % name) != own_ns:
                continue  # a dnsmasq of another network namespace (a container): not this node's
        except OSError:
            continue
        found.append((int(name), cmdline["content"].rstrip("\0").split("\0")))
    return found


def _bundle_instances(source):
    """``commands/dnsmasq-cmdline.txt``: one instance per line, ``PID ARGV...`` as ``pgrep -a dnsmasq`` prints."""
    saved = source.command("dnsmasq-cmdline", ["pgrep", "-a", "dnsmasq"])
    if not saved["available"]:
        return [], saved["reason"]
    found = []
    for line in saved["content"].splitlines():
        words = line.split()
        if not words:
            continue
        pid = None
        if words[0].isdigit():
            pid, words = int(words[0]), words[1:]
        if words:
            found.append((pid, words))
    return found, None


def _reader(source):
    def read(path):
        got = source.read(path)
        return (got["content"], None) if got["available"] else (None, got["reason"])

    def listdir(path):
        try:
            return os.listdir(source.path(path)), None
        except OSError as exc:
            return None, "%s: %s" % (exc.strerror or type(exc).__name__, path)

    return read, listdir


def _sockets(source, pid, port):
    sockets, reasons = [], []
    for name, protocol, flag in (("ss-lnup", "udp", "-lnup"), ("ss-lntp", "tcp", "-lntp")):
        out = source.command(name, ["ss", flag])
        if not out["available"]:
            reasons.append(out["reason"])
            continue
        for item in parse_ss(out["content"], protocol, source=out["path"] or "ss " + flag, port=port):
            if pid is None or any(p["pid"] == pid for p in item["processes"]):
                sockets.append({k: item[k] for k in ("protocol", "address", "port", "interface", "wildcard")})
    return sockets, ("; ".join(reasons) or None) if not sockets and reasons else None


def gather(source, patterns):
    facts = {"available": False, "reason": None, "pod_interface_patterns": list(patterns), "interfaces_reason": None, "instances": []}
    if source.live:
        found, reason = _live_instances(source), "no dnsmasq process in this network namespace"
    else:
        found, reason = _bundle_instances(source)
        reason = reason or "commands/dnsmasq-cmdline.txt lists no dnsmasq process"
    if not found:
        facts["reason"] = reason
        return facts
    addr = source.command("ip-addr", ["ip", "-j", "addr"])
    interfaces = []
    if addr["available"]:
        interfaces = _dnsmasq.parse_ip_addr(addr["content"], source=addr["path"] or "ip -j addr")
    else:
        facts["interfaces_reason"] = addr["reason"]
    read, listdir = _reader(source)
    for pid, argv in found:
        loaded = _dnsmasq.load(argv, read, listdir)
        config = _dnsmasq.effective(loaded)
        sockets, sockets_reason = _sockets(source, pid, config["port"]["value"])
        verdicts = _dnsmasq.verdict(config, interfaces, patterns)
        missing = []
        if sockets_reason is None:
            missing = _dnsmasq.missing_sockets(config, interfaces, [s for s in sockets if s["protocol"] == "udp"])
        facts["instances"].append({
            "pid": pid, "cmdline": argv, "config": config, "sockets": sockets, "sockets_reason": sockets_reason,
            "interfaces": verdicts, "ignored_pod_interfaces": [v["name"] for v in verdicts if v["pod_facing"] and not v["served"]],
            "missing_sockets": missing,
        })
    facts["available"] = True
    return facts


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "pod_interface_patterns": {"type": "list", "elements": "str", "default": list(_dnsmasq.POD_INTERFACE_PATTERNS)},
            "extra": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    source = Source(module, module.params["root"])
    patterns = list(module.params["pod_interface_patterns"]) + [p for p in module.params["extra"] if p not in module.params["pod_interface_patterns"]]
    exit_with_facts(module, "clusterdns_dnsmasq", "cannot read the dnsmasq configuration", gather, source, patterns)


if __name__ == "__main__":
    main()
