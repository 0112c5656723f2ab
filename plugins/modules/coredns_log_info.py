#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: coredns_log_info
short_description: Classify CoreDNS log lines into rcode, name, client and upstream counts and support-ticket fields
version_added: 1.0.0
description:
  - Reads CoreDNS (or NodeLocal DNSCache C(node-cache)) log lines from a file (O(path)) or from a
    list (O(lines), for example the C(log_lines) of C(kubernetes.core.k8s_log)) and classifies them
    one at a time, so memory stays bounded whatever the size of the log.
  - Understands the log plugin's query lines of CoreDNS 1.0 to 1.x, errors-plugin lines (upstream
    C(i/o timeout), refused, unreachable), panics, reloads and their configuration hash, loop
    detection, kubernetes plugin warnings (RBAC C(forbidden), unsynced API) and Corefile errors
    (C(Unknown directive), a plugin used twice in a server block), with or without C(kubectl logs
    --timestamps) and C(--prefix) prefixes.
  - Returns counts by rcode, query type and protocol, the top names, failing names and clients,
    upstream errors by upstream address and class, and the fields a support ticket needs for each
    failing domain (domain, rcode, time, instance), as the managed-Kubernetes DNS troubleshooting
    guide asks for SERVFAIL, REFUSED and upstream timeouts.
author:
  - clusterdns.doctor developers (!UNKNOWN)
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.info_module
options:
  path:
    description:
      - Log file to read, for example a saved C(kubectl logs --timestamps) output. Mutually
        exclusive with O(lines).
    type: path
  lines:
    description:
      - Log lines given by the caller. Mutually exclusive with O(path).
    type: list
    elements: str
  instance:
    description:
      - Name of the CoreDNS instance (pod, or the node that hosts it) written into each ticket.
        Without it, the pod prefix of C(kubectl logs --prefix) or of C(stern) lines is used when there is one.
    type: str
  max_tickets:
    description: Most distinct (domain, rcode) tickets kept; the rest are only counted in RV(coredns_log.tickets_dropped).
    type: int
    default: 20
  top:
    description: How many entries the top lists hold.
    type: int
    default: 10
  ticket_rcodes:
    description: Response codes of query lines that make a ticket. Upstream timeouts of the errors plugin always do.
    type: list
    elements: str
    default: [SERVFAIL, REFUSED]
notes:
  - Names and clients are counted with a bounded counter (10000 distinct keys). When a log holds more,
    RV(coredns_log.counts_approximate) is V(true) and the top counts are lower bounds.
  - NXDOMAIN is normal for the search-path walk of C(ndots:5) lookups, so it makes no ticket unless
    listed in O(ticket_rcodes).
seealso:
  - name: CoreDNS log plugin
    description: Query log format.
    link: https://coredns.io/plugins/log/
  - name: CoreDNS loop plugin troubleshooting
    description: What a detected loop means in Kubernetes.
    link: https://coredns.io/plugins/loop/#troubleshooting
"""

EXAMPLES = r"""
- name: Fetch the last CoreDNS log lines through the API
  kubernetes.core.k8s_log:
    namespace: kube-system
    label_selectors: [k8s-app=kube-dns]
    since_seconds: 3600
  register: coredns_logs

- name: Classify them
  clusterdns.doctor.coredns_log_info:
    lines: "{{ coredns_logs.log_lines }}"
    instance: coredns
  register: coredns_log_result

- name: Show the ticket fields for the upstream failures
  ansible.builtin.debug:
    msg: "{{ coredns_log_result.coredns_log.tickets | map(attribute='domain') | list }}"

- name: Classify a saved log file
  clusterdns.doctor.coredns_log_info:
    path: /tmp/coredns.log
"""

RETURN = r"""
coredns_log:
  description: The classification.
  returned: success
  type: dict
  contains:
    source:
      description: The O(path) read, or V(lines).
      type: str
      returned: always
      sample: /tmp/coredns.log
    lines:
      description: Lines read.
      type: int
      returned: always
      sample: 1000000
    queries:
      description: Query lines of the log plugin.
      type: int
      returned: always
      sample: 998000
    by_rcode:
      description: Query lines per response code.
      type: dict
      returned: always
      sample: {"NOERROR": 900000, "NXDOMAIN": 90000, "SERVFAIL": 8000}
    by_qtype:
      description: Query lines per query type.
      type: dict
      returned: always
      sample: {"A": 500000, "AAAA": 498000}
    by_proto:
      description: Query lines per transport (V(udp), V(tcp)).
      type: dict
      returned: always
      sample: {"udp": 990000, "tcp": 8000}
    top_names:
      description: Most queried names, C(name) and C(count).
      type: list
      elements: dict
      returned: always
      sample: [{"name": "kubernetes.default.svc.cluster.local.", "count": 1200}]
    top_failed_names:
      description: Names most often answered with an rcode other than NOERROR and NXDOMAIN.
      type: list
      elements: dict
      returned: always
      sample: [{"name": "EXTERNALURL.", "count": 2}]
    top_clients:
      description: Client addresses with the most queries, C(client) and C(count).
      type: list
      elements: dict
      returned: always
      sample: [{"client": "10.42.192.21", "count": 5}]
    counts_approximate:
      description: Whether the top lists were bounded (more than 10000 distinct keys); counts are then lower bounds.
      type: bool
      returned: always
      sample: false
    slow_queries:
      description: Query lines that took one second or more.
      type: int
      returned: always
      sample: 0
    errors:
      description: Lines of the errors plugin.
      type: int
      returned: always
      sample: 7
    error_classes:
      description: Errors-plugin lines per class (V(timeout), V(refused), V(unreachable), V(eperm), V(no_healthy_upstream), V(max_concurrent), V(other) ...).
      type: dict
      returned: always
      sample: {"timeout": 7}
    upstream_errors:
      description: Per upstream C(ADDRESS:PORT), C(count) and C(classes).
      type: dict
      returned: always
      sample: {"172.31.136.23:53": {"count": 4, "classes": {"timeout": 4}}}
    reloads:
      description: C(count) (V(Reloading) lines), C(completed), C(failed), C(last) (the last completed reload) and C(config_hash) (last SHA512 or MD5).
      type: dict
      returned: always
      sample: {"count": 1, "completed": 1, "failed": 0, "last": null, "config_hash": "c83324bafe01d7cfab8f6662ce9f398d"}
    loop_detected:
      description: Whether the loop plugin reported a forwarding loop.
      type: bool
      returned: always
      sample: true
    loop:
      description: The loop line with C(lineno), C(line), C(time), C(instance), C(zone), C(from) and C(to), or V(null).
      type: dict
      returned: always
      sample: {"lineno": 7, "zone": ".", "from": "127.0.0.1:34614", "to": ":53", "time": "2019-04-17T00:18:44.486Z"}
    panics:
      description: C(count) and the first C(events) (C(lineno), C(line), C(time), C(instance)).
      type: dict
      returned: always
      sample: {"count": 0, "events": []}
    kubernetes:
      description: kubernetes plugin and client-go lines, C(count), C(forbidden) (resources the service account may not list or watch), C(unsynced), C(last).
      type: dict
      returned: always
      sample: {"count": 2, "forbidden": ["endpointslices"], "unsynced": false, "last": null}
    corefile_errors:
      description: Corefile and reload errors (C(lineno), C(line), C(time), C(instance)).
      type: list
      elements: dict
      returned: always
      sample: []
    tickets:
      description:
        - One per failing (domain, rcode), most frequent first, at most O(max_tickets). C(domain),
          C(rcode), C(reason) (V(rcode) or the error class such as V(timeout)), C(count), C(first_time),
          C(time) (last seen), C(instances), and the first C(lineno) and C(line).
        - The loop plugin's random HINFO probe names never make a ticket.
      type: list
      elements: dict
      returned: always
      sample: [{"domain": "EXTERNALURL.", "rcode": "SERVFAIL", "reason": "rcode", "count": 2, "time": "2020-03-25T16:36:53.166Z", "instances": []}]
    tickets_dropped:
      description: Failing lines whose (domain, rcode) did not fit in O(max_tickets).
      type: int
      returned: always
      sample: 0
    unrecognised:
      description: Lines of no known shape (start banners, plugin notices).
      type: int
      returned: always
      sample: 4
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils._corednslog import LogSummary


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path"},
            "lines": {"type": "list", "elements": "str"},
            "instance": {"type": "str"},
            "max_tickets": {"type": "int", "default": 20},
            "top": {"type": "int", "default": 10},
            "ticket_rcodes": {"type": "list", "elements": "str", "default": ["SERVFAIL", "REFUSED"]},
        },
        mutually_exclusive=[("path", "lines")],
        required_one_of=[("path", "lines")],
        supports_check_mode=True,
    )
    params = module.params
    if params["max_tickets"] < 0 or params["top"] < 0:
        module.fail_json(msg="max_tickets and top must be 0 or more")
    summary = LogSummary(instance=params["instance"], max_tickets=params["max_tickets"], top=params["top"],
                         ticket_rcodes=params["ticket_rcodes"])
    if params["path"]:
        try:
            with open(params["path"], encoding="utf-8", errors="replace") as handle:
                for lineno, line in enumerate(handle, 1):
                    summary.add(line, lineno)
        except OSError as exc:
            module.fail_json(msg="cannot read the CoreDNS log %s: %s; give a readable file, or the lines with the lines option"
                             % (params["path"], exc.strerror or exc))
        source = params["path"]
    else:
        for lineno, line in enumerate(params["lines"], 1):
            summary.add(line, lineno)
        source = "lines"
    module.exit_json(changed=False, coredns_log=dict(summary.result(), source=source))


if __name__ == "__main__":
    main()
