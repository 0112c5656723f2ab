# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Cloud network rules: SG001. Input: the cluster facts with the security group evaluation of
# _secgroups.evaluate (the clusterdns.doctor.security_groups_evaluate filter, gathered by the
# security_groups role's facts tasks) under the key ``security_groups``.

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, cluster_rule, hit

EXAMPLES = 10
CHECK_TEXT = {
    "sg_ingress": "inbound rules of the DNS server's security groups",
    "sg_egress": "outbound rules of the client's security groups",
    "nacl_server_inbound": "network ACL of the DNS server's subnet (inbound queries)",
    "nacl_server_outbound_reply": "network ACL of the DNS server's subnet (outbound replies to ephemeral ports)",
    "nacl_client_outbound": "network ACL of the client's subnet (outbound queries)",
    "nacl_client_inbound_reply": "network ACL of the client's subnet (inbound replies to ephemeral ports)",
}


def _blocker(entry):
    """What blocks: the rule that denies it, or the groups / ACL whose rules allow none of it."""
    by = entry.get("by") or ""
    if entry.get("explicit_deny"):
        return by
    if entry["check"] == "sg_ingress":
        return ", ".join(entry.get("server_groups") or []) or by
    if entry["check"] == "sg_egress":
        return ", ".join(entry.get("client_groups") or []) or by
    return by


@cluster_rule("SG001")
def security_groups_block_dns(cluster, ctx):
    evaluation = cluster.get("security_groups")
    if not isinstance(evaluation, dict):
        raise Skip("cloud security groups not gathered (the clusterdns.doctor.security_groups role's facts tasks evaluate them)")
    if evaluation.get("available") is False:
        raise Skip("cloud security groups unavailable: %s" % (evaluation.get("reason") or "no reason given"))
    groups = {}
    for entry in evaluation.get("blocked") or []:
        key = (entry["check"], _blocker(entry))
        groups.setdefault(key, []).append(entry)
    results = []
    for (check, blocker), entries in sorted(groups.items()):
        protocols = sorted({e["protocol"].upper() for e in entries})
        clients = sorted({e["client"] for e in entries})
        servers = sorted({"%s (%s)" % (e["server"], e["server_address"]) for e in entries})
        first = entries[0]
        blocked = "; ".join("%s port %s" % (", ".join(b["cidrs"][:3]) + (" ..." if len(b["cidrs"]) > 3 else ""), b["ports"]) for b in first["blocked"])
        nacl = check.startswith("nacl")
        evidence = {
            "provider": evaluation.get("provider"), "check": check, "blocked_by": blocker, "explicit_deny": bool(first.get("explicit_deny")),
            "protocols": protocols, "clients": clients[:EXAMPLES], "client_count": len(clients), "servers": servers[:EXAMPLES],
            "server_count": len(servers), "example": {"protocol": first["protocol"], "client": first["client"], "server": first["server"],
                                                      "server_address": first["server_address"], "blocked": first["blocked"]},
            "ephemeral_ports": evaluation.get("ephemeral_ports"), "notes": (evaluation.get("notes") or [])[:EXAMPLES],
        }
        detail = "%s (%s) blocks %s 53 from %d client(s) to %d DNS server(s), e.g. %s -> %s: %s" % (
            blocker, CHECK_TEXT.get(check, check), "/".join(protocols), len(clients), len(servers), first["client"], first["server"], blocked)
        results.append(hit(evidence, detail=detail, obj=blocker, fix_variables={"security_groups_manage_nacl": True} if nacl else None))
    return results
