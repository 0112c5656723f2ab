# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# dnsmasq rules DMQ001 and DMQ002 over clusterdns_dnsmasq (this collection's dnsmasq_facts).

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, hit, node_rule


def _instances(facts):
    instances = facts["clusterdns_dnsmasq"].get("instances") or []
    if not instances:
        raise Skip("no dnsmasq instance")
    return instances


@node_rule("DMQ001", needs=("clusterdns_dnsmasq",))
def pod_interface_ignored(host, facts, ctx):
    dmq = facts["clusterdns_dnsmasq"]
    instances = _instances(facts)
    if dmq.get("interfaces_reason") and not any(i.get("interfaces") for i in instances):
        raise Skip("the node's interfaces are unknown: %s" % dmq["interfaces_reason"])
    results = []
    for instance in instances:
        for interface in instance.get("interfaces") or []:
            if not interface.get("pod_facing") or interface.get("served"):
                continue
            because = interface.get("because") or ""
            line, _sep, _rest = because.partition(" (")
            results.append(hit(
                {"interface": interface["name"], "addresses": interface.get("addresses", []), "config_line": line,
                 "because": because, "pid": instance.get("pid"), "mode": (instance.get("config") or {}).get("mode", {}).get("value")},
                detail="dnsmasq (pid %s) ignores DNS queries arriving on pod-facing interface %s because of %s"
                % (instance.get("pid"), interface["name"], line),
                fix_variables={"dnsmasq_pod_interfaces": [interface["name"]]}))
    return results


@node_rule("DMQ002", needs=("clusterdns_dnsmasq",))
def not_listening(host, facts, ctx):
    results = []
    for instance in _instances(facts):
        if instance.get("sockets_reason"):
            continue
        mode = ((instance.get("config") or {}).get("mode") or {}).get("value")
        for want in instance.get("missing_sockets") or []:
            advice = ""
            if mode == "bind-interfaces":
                advice = "; bind-dynamic makes dnsmasq bind addresses that appear after it started"
            results.append(hit(
                {"address": want["address"], "asked_by": want.get("option"), "config_line": want.get("origin"),
                 "interface": want.get("interface"), "pid": instance.get("pid"), "mode": mode,
                 "sockets": ["%s:%s/%s" % (s["address"], s["port"], s["protocol"]) for s in instance.get("sockets") or []]},
                detail="dnsmasq (pid %s) has no UDP socket on %s although %s asks for it (%s)%s"
                % (instance.get("pid"), want["address"], want.get("option"), want.get("origin") or "default", advice)))
    return results
