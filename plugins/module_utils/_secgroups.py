# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Cloud security groups and network ACLs against DNS (finding SG001). Pure: netaddr only.
#
# 1. A *model* of one VPC, cloud-neutral, built from what the cloud APIs return:
#      aws_model(amazon.aws.ec2_security_group_info .security_groups, ec2_vpc_nacl_info .nacls,
#                ec2_instance_info .instances)
#      alibaba_model(DescribeSecurityGroupAttribute bodies, DescribeInstances instances, group types)
#    model = {"provider", "groups": {id: group}, "nacls": [nacl], "interfaces": [interface]}
#      group     = {id, name, description, vpc_id, kind (aws | normal | enterprise), inner_accept, rules}
#      rule      = {direction (ingress | egress), protocol (tcp | udp | all | other), ports [lo, hi],
#                   cidrs [...], groups [...], prefix_lists [...], action (allow | deny), priority, ref}
#      nacl      = {id, subnets, ingress [entry], egress [entry]}; entry = {number, protocol, action, cidr, ports}
#      interface = {id, instance, names, subnet, groups, addresses}
# 2. evaluate(model, servers, clients, ...): for UDP and TCP 53 from every client to every DNS server,
#    which addresses and ports are blocked and by what: the server's groups (ingress), the client's
#    groups (egress), and, between subnets, the NACLs of both subnets in both directions, the replies
#    to the client's ephemeral ports included (NACLs are stateless, security groups are stateful).
# 3. fix_plan(evaluation, model, ...): the rules that let the blocked traffic through, as
#    amazon.aws.ec2_security_group rules, ec2_vpc_nacl entries and Alibaba Cloud API calls.
#
# Semantics (provider documentation):
# - AWS security groups: allow rules only, the union over all groups of the interface; stateful.
#   A rule naming a group matches traffic from (to) the interfaces in that group.
# - AWS network ACLs: per subnet, rules in ascending number, the first match decides, then deny;
#   only traffic that crosses the subnet boundary is filtered; ports are destination ports.
# - Alibaba Cloud ECS: the rules of all groups of the interface sorted by priority (1 first), Drop
#   before Accept at the same priority, the first match decides; then the default rules: basic
#   ("normal") groups accept inbound from members of the same group when InnerAccessPolicy is
#   Accept and accept all outbound; enterprise groups deny both.
# The kube-dns ClusterIP is not seen by any of these: kube-proxy translates it to a CoreDNS pod
# address on the client's own node, so the pod address (and its node's interface) is what counts.

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput

try:
    from netaddr import AddrFormatError, IPNetwork, IPSet, cidr_merge
except ImportError as exc:  # checked by require_netaddr() before any use
    NETADDR_IMPORT_ERROR = exc
    AddrFormatError = ValueError
else:
    NETADDR_IMPORT_ERROR = None

DNS_PORT = 53
PROTOCOLS = ("udp", "tcp")
# Linux net.ipv4.ip_local_port_range default; AWS documents 1024-65535 to cover every client OS.
DEFAULT_EPHEMERAL = (32768, 60999)
ALL_PORTS = (0, 65535)
EXAMPLES = 20
_PROTO_NAMES = {"-1": "all", "all": "all", "6": "tcp", "tcp": "tcp", "17": "udp", "udp": "udp",
                "1": "icmp", "icmp": "icmp", "58": "icmpv6", "icmpv6": "icmpv6", "gre": "gre", "47": "gre"}


def require_netaddr():
    if NETADDR_IMPORT_ERROR is not None:
        raise InvalidInput("the netaddr Python library is required on the controller (pip install netaddr): %s" % NETADDR_IMPORT_ERROR)


def protocol_name(value):
    """'udp', 'tcp', 'all' or the protocol as given (icmp, a number)."""
    text = str(value).strip().lower() if value is not None else "all"
    return _PROTO_NAMES.get(text, text)


def _network(text, where):
    try:
        return IPNetwork(str(text).strip())
    except (AddrFormatError, ValueError, TypeError) as exc:
        raise InvalidInput("%s: %r is not an IP address or CIDR (%s)" % (where, text, exc)) from exc


def _ipset(cidrs, where):
    return IPSet(_network(c, where) for c in cidrs or [] if c not in (None, ""))


def _ports(lo, hi, protocol):
    if protocol == "all":
        return list(ALL_PORTS)
    if lo in (None, -1, "-1") and hi in (None, -1, "-1"):
        return list(ALL_PORTS)
    lo = int(lo)
    hi = int(hi if hi is not None else lo)
    return [max(0, lo), min(65535, hi)]


# --- models ---------------------------------------------------------------------------------------

def _dig(data, *path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _aws_rules(permissions, direction, group_id):
    rules = []
    for index, perm in enumerate(permissions or []):
        if not isinstance(perm, dict):
            raise InvalidInput("security group %s: %s rule %d is not a mapping: %r" % (group_id, direction, index, perm))
        protocol = protocol_name(perm.get("ip_protocol"))
        cidrs = [r.get("cidr_ip") for r in perm.get("ip_ranges") or []] + [r.get("cidr_ipv6") for r in perm.get("ipv6_ranges") or []]
        where = "security group %s %s rule %d" % (group_id, direction, index)
        for cidr in cidrs:
            _network(cidr, where)
        rules.append({
            "direction": direction, "protocol": protocol, "ports": _ports(perm.get("from_port"), perm.get("to_port"), protocol),
            "cidrs": [c for c in cidrs if c], "groups": [p.get("group_id") for p in perm.get("user_id_group_pairs") or [] if p.get("group_id")],
            "prefix_lists": [p.get("prefix_list_id") for p in perm.get("prefix_list_ids") or [] if p.get("prefix_list_id")],
            "action": "allow", "priority": None, "ref": "%s %s #%d" % (group_id, direction, index + 1),
        })
    return rules


def _aws_nacl_entries(entries, nacl_id, direction):
    out = []
    for entry in entries or []:
        if not isinstance(entry, (list, tuple)) or len(entry) < 8:
            raise InvalidInput("network ACL %s: %s entry %r is not [number, protocol, action, cidr, icmp type, icmp code, port from, port to]"
                               % (nacl_id, direction, entry))
        protocol = protocol_name(entry[1])
        _network(entry[3], "network ACL %s %s rule %s" % (nacl_id, direction, entry[0]))
        out.append({"number": int(entry[0]), "protocol": protocol, "action": str(entry[2]).lower(), "cidr": str(entry[3]),
                    "ports": _ports(entry[6], entry[7], protocol if protocol in PROTOCOLS else "all"), "raw": list(entry[:8])})
    return sorted(out, key=lambda e: e["number"])


def aws_model(groups, nacls=None, instances=None, subnets=None):
    """Model of the results of amazon.aws ec2_security_group_info (security_groups),
    ec2_vpc_nacl_info (nacls), ec2_instance_info (instances) and ec2_vpc_subnet_info (subnets)."""
    require_netaddr()
    model = {"provider": "aws", "groups": {}, "nacls": [], "interfaces": [], "subnets": {}}
    for subnet in subnets or []:
        if isinstance(subnet, dict) and subnet.get("subnet_id"):
            model["subnets"][subnet["subnet_id"]] = [c for c in [subnet.get("cidr_block")] + [
                a.get("ipv6_cidr_block") for a in subnet.get("ipv6_cidr_block_association_set") or []] if c]
    for group in groups or []:
        if not isinstance(group, dict) or not group.get("group_id"):
            raise InvalidInput("security group without group_id: %r (pass ec2_security_group_info's security_groups)" % (group,))
        gid = group["group_id"]
        model["groups"][gid] = {
            "id": gid, "name": group.get("group_name"), "description": group.get("description"), "vpc_id": group.get("vpc_id"),
            "kind": "aws", "inner_accept": False,
            "rules": _aws_rules(group.get("ip_permissions"), "ingress", gid) + _aws_rules(group.get("ip_permissions_egress"), "egress", gid),
        }
    for nacl in nacls or []:
        if not isinstance(nacl, dict) or not nacl.get("nacl_id"):
            raise InvalidInput("network ACL without nacl_id: %r (pass ec2_vpc_nacl_info's nacls)" % (nacl,))
        model["nacls"].append({"id": nacl["nacl_id"], "vpc_id": nacl.get("vpc_id"), "subnets": list(nacl.get("subnets") or []),
                               "is_default": bool(nacl.get("is_default")),
                               "ingress": _aws_nacl_entries(nacl.get("ingress"), nacl["nacl_id"], "ingress"),
                               "egress": _aws_nacl_entries(nacl.get("egress"), nacl["nacl_id"], "egress")})
    for instance in instances or []:
        if not isinstance(instance, dict):
            raise InvalidInput("instance is not a mapping: %r (pass ec2_instance_info's instances)" % (instance,))
        names = [n for n in (instance.get("instance_id"), instance.get("private_dns_name"), _dig(instance, "tags", "Name")) if n]
        if instance.get("private_dns_name"):
            names.append(instance["private_dns_name"].split(".")[0])
        for eni in instance.get("network_interfaces") or []:
            addresses = [a.get("private_ip_address") for a in eni.get("private_ip_addresses") or [] if a.get("private_ip_address")]
            if not addresses and eni.get("private_ip_address"):
                addresses = [eni["private_ip_address"]]
            addresses += [a.get("ipv6_address") for a in eni.get("ipv6_addresses") or [] if a.get("ipv6_address")]
            model["interfaces"].append({
                "id": eni.get("network_interface_id"), "instance": instance.get("instance_id"), "names": names,
                "subnet": eni.get("subnet_id") or instance.get("subnet_id"),
                "groups": [g.get("group_id") for g in eni.get("groups") or [] if g.get("group_id")], "addresses": addresses,
            })
    return model


def _alibaba_ports(text, protocol, where):
    if protocol not in PROTOCOLS:
        return list(ALL_PORTS)
    try:
        lo, hi = str(text).split("/", 1)
        return _ports(int(lo), int(hi), protocol)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("%s: PortRange %r is not FROM/TO (for example 53/53, -1/-1)" % (where, text)) from exc


def alibaba_model(attributes, instances=None, group_types=None):
    """Model of Alibaba Cloud ECS API responses: ``attributes`` is a list of DescribeSecurityGroupAttribute
    response bodies, ``instances`` the Instances.Instance list of DescribeInstances and ``group_types``
    maps a group id to its SecurityGroupType of DescribeSecurityGroups (normal | enterprise)."""
    require_netaddr()
    group_types = group_types or {}
    model = {"provider": "alibaba", "groups": {}, "nacls": [], "interfaces": [], "subnets": {}}
    for body in attributes or []:
        gid = body.get("SecurityGroupId") if isinstance(body, dict) else None
        if not gid:
            raise InvalidInput("DescribeSecurityGroupAttribute response without SecurityGroupId: %r" % (body,))
        rules = []
        permissions = _dig(body, "Permissions", "Permission") or []
        for index, perm in enumerate(permissions):
            where = "security group %s rule %s" % (gid, perm.get("SecurityGroupRuleId") or index + 1)
            direction = str(perm.get("Direction") or "").lower()
            if direction not in ("ingress", "egress"):
                raise InvalidInput("%s: Direction %r is neither ingress nor egress" % (where, perm.get("Direction")))
            policy = str(perm.get("Policy") or "accept").lower()
            if policy not in ("accept", "drop"):
                raise InvalidInput("%s: Policy %r is neither Accept nor Drop" % (where, perm.get("Policy")))
            protocol = protocol_name(perm.get("IpProtocol"))
            side = "Source" if direction == "ingress" else "Dest"
            cidrs = [c for c in (perm.get(side + "CidrIp"), perm.get("Ipv6" + side + "CidrIp")) if c]
            for cidr in cidrs:
                _network(cidr, where)
            try:
                priority = int(perm.get("Priority") or 1)
            except (TypeError, ValueError) as exc:
                raise InvalidInput("%s: Priority %r is not a number from 1 to 100" % (where, perm.get("Priority"))) from exc
            rules.append({
                "direction": direction, "protocol": protocol, "ports": _alibaba_ports(perm.get("PortRange"), protocol, where),
                "cidrs": cidrs, "groups": [g for g in (perm.get(side + "GroupId"),) if g],
                "prefix_lists": [p for p in (perm.get(side + "PrefixListId"),) if p],
                "action": "allow" if policy == "accept" else "deny", "priority": priority,
                "ref": "%s %s" % (gid, perm.get("SecurityGroupRuleId") or "%s #%d" % (direction, index + 1)),
            })
        kind = str(group_types.get(gid) or "normal").lower()
        model["groups"][gid] = {"id": gid, "name": body.get("SecurityGroupName"), "description": body.get("Description"),
                                "vpc_id": body.get("VpcId"), "region": body.get("RegionId"), "kind": kind,
                                "inner_accept": kind == "normal" and str(body.get("InnerAccessPolicy") or "Accept").lower() == "accept",
                                "rules": rules}
    for inst in instances or []:
        groups = _dig(inst, "SecurityGroupIds", "SecurityGroupId") or []
        addresses = _dig(inst, "VpcAttributes", "PrivateIpAddress", "IpAddress") or []
        names = [n for n in (inst.get("InstanceId"), inst.get("InstanceName"), inst.get("HostName")) if n]
        enis = _dig(inst, "NetworkInterfaces", "NetworkInterface") or []
        primary = {"id": None, "instance": inst.get("InstanceId"), "names": names,
                   "subnet": _dig(inst, "VpcAttributes", "VSwitchId"), "groups": list(groups), "addresses": list(addresses)}
        for eni in enis:
            ips = [s.get("PrivateIpAddress") for s in _dig(eni, "PrivateIpSets", "PrivateIpSet") or [] if s.get("PrivateIpAddress")]
            if not ips and eni.get("PrimaryIpAddress"):
                ips = [eni["PrimaryIpAddress"]]
            if eni.get("Type") == "Primary" or set(ips) & set(addresses):
                primary["id"] = eni.get("NetworkInterfaceId")
                primary["addresses"] = sorted(set(primary["addresses"]) | set(ips), key=str)
            else:  # a secondary ENI (Terway pod addresses): DescribeInstances lists the instance's groups only
                model["interfaces"].append({"id": eni.get("NetworkInterfaceId"), "instance": inst.get("InstanceId"), "names": names,
                                            "subnet": primary["subnet"], "groups": list(groups), "addresses": ips})
        model["interfaces"].append(primary)
    return model


# --- address and port regions ---------------------------------------------------------------------
# A region is a list of (IPSet, (lo, hi)) rectangles: addresses times a port interval.

def _cut(region, ips, lo, hi):
    """Split ``region`` into the part inside (ips x [lo, hi]) and the part outside."""
    inside, outside = [], []
    for addrs, (a, b) in region:
        addrs_in = addrs & ips
        addrs_out = addrs - ips
        if addrs_out:
            outside.append((addrs_out, (a, b)))
        if not addrs_in:
            continue
        l2, h2 = max(a, lo), min(b, hi)
        if l2 > h2:
            outside.append((addrs_in, (a, b)))
            continue
        inside.append((addrs_in, (l2, h2)))
        if a < l2:
            outside.append((addrs_in, (a, l2 - 1)))
        if h2 < b:
            outside.append((addrs_in, (h2 + 1, b)))
    return inside, outside


def _cidrs(addrs):
    return [str(c) for c in cidr_merge(list(addrs.iter_cidrs()))]


def _describe(region):
    """[{cidrs, ports}] of a region, rectangles with the same ports merged."""
    by_ports = {}
    for addrs, ports in region:
        by_ports[ports] = by_ports.get(ports, IPSet()) | addrs
    return [{"cidrs": _cidrs(addrs), "ports": "%d" % ports[0] if ports[0] == ports[1] else "%d-%d" % ports}
            for ports, addrs in sorted(by_ports.items())]


def _ordered(region, rules, default):
    """First-match evaluation. ``rules``: (action, ips, lo, hi, ref) in order. Returns the denied parts
    as [(region part, ref)] (ref None for the default) and the allowed part."""
    denied, allowed, rest = [], [], region
    for action, ips, lo, hi, ref in rules:
        if not rest:
            break
        inside, rest = _cut(rest, ips, lo, hi)
        if inside:
            (allowed.extend(inside) if action == "allow" else denied.append((inside, ref)))
    if rest:
        (allowed.extend(rest) if default == "allow" else denied.append((rest, None)))
    return denied, allowed


# --- evaluation -----------------------------------------------------------------------------------

def _members(model):
    """group id -> IPSet of the addresses of its interfaces."""
    out = {}
    for iface in model["interfaces"]:
        for gid in iface["groups"]:
            out.setdefault(gid, IPSet())
            out[gid] |= _ipset(iface["addresses"], "interface %s" % iface["id"])
    return out


def _rule_ips(rule, members, prefix_lists, notes):
    ips = _ipset(rule["cidrs"], rule["ref"])
    for gid in rule["groups"]:
        if gid in members:
            ips |= members[gid]
        else:
            notes.add("%s names group %s, which no known interface is in: its traffic is not counted as allowed" % (rule["ref"], gid))
    for pl in rule["prefix_lists"]:
        if pl in prefix_lists:
            ips |= _ipset(prefix_lists[pl], "prefix list %s" % pl)
        else:
            notes.add("%s names prefix list %s, not resolved (security_groups_prefix_lists): its traffic is not counted as allowed" % (rule["ref"], pl))
    return ips


def _group_rules(model, group_ids, direction, protocol, members, prefix_lists, notes):
    """Ordered (action, ips, lo, hi, ref) for the groups of an interface, and the default action."""
    rules = []
    for gid in group_ids:
        group = model["groups"].get(gid)
        if group is None:
            notes.add("group %s of an interface was not read (not in the groups gathered): its rules are unknown" % gid)
            continue
        for rule in group["rules"]:
            if rule["direction"] != direction or rule["protocol"] not in (protocol, "all"):
                continue
            rules.append((rule["action"], _rule_ips(rule, members, prefix_lists, notes), rule["ports"][0], rule["ports"][1], rule["ref"],
                          rule["priority"] or 0))
    if model["provider"] == "alibaba":
        rules.sort(key=lambda r: (r[5], 0 if r[0] == "deny" else 1))
        groups = [model["groups"][g] for g in group_ids if g in model["groups"]]
        if direction == "ingress":
            inner = IPSet()
            for group in groups:
                if group["inner_accept"]:
                    inner |= members.get(group["id"], IPSet())
            if inner:
                rules.append(("allow", inner, ALL_PORTS[0], ALL_PORTS[1], "default: members of the same basic group", 1000))
            default = "deny"
        else:
            default = "allow" if any(g["kind"] == "normal" for g in groups) else "deny"
    else:
        default = "deny"
    return [r[:5] for r in rules], default


def _nacl_rules(nacl, direction, protocol):
    return [(e["action"], _ipset([e["cidr"]], "network ACL %s rule %d" % (nacl["id"], e["number"])), e["ports"][0], e["ports"][1],
             "%s %s rule %d" % (nacl["id"], direction, e["number"]))
            for e in nacl[direction] if e["protocol"] in (protocol, "all")]


def _nacl_of(model, subnet):
    if not subnet:
        return None
    for nacl in model["nacls"]:
        if subnet in nacl["subnets"]:
            return nacl
    return None


def _iface_for(model, address=None, node=None):
    if address:
        for iface in model["interfaces"]:
            if address in iface["addresses"]:
                return iface
    if node:
        for iface in model["interfaces"]:
            if node in iface["names"]:
                return iface
        for iface in model["interfaces"]:  # ACK node names: <region>.<primary address>
            if any(node.endswith("." + a) or node == a for a in iface["addresses"][:1]):
                return iface
    return None


def _endpoint(model, entry, kind, index):
    if not isinstance(entry, dict):
        raise InvalidInput("%s %d must be a mapping, got %r" % (kind, index, entry))
    cidrs = entry.get("cidrs") or ([entry["address"]] if entry.get("address") else [])
    iface = next((i for i in model["interfaces"] if entry.get("interface") and i["id"] == entry["interface"]), None)
    iface = iface or _iface_for(model, entry.get("address") or entry.get("node_address"), entry.get("node"))
    if not cidrs and iface:
        cidrs = iface["addresses"]
    if not cidrs:
        raise InvalidInput("%s %d (%s) has no address or cidrs" % (kind, index, entry.get("name") or entry))
    name = entry.get("name") or (iface and (iface["names"] or [iface["id"]])[0]) or ",".join(cidrs)
    groups = entry.get("groups") if entry.get("groups") is not None else (iface["groups"] if iface else None)
    subnet = entry.get("subnet") or (iface["subnet"] if iface else None)
    return {"name": name, "ips": _ipset(cidrs, "%s %s" % (kind, name)), "cidrs": [str(c) for c in cidrs], "groups": groups,
            "subnet": subnet, "interface": iface["id"] if iface else None, "instance": iface["instance"] if iface else None}


def interface_clients(model):
    """One client per interface of the model (every node interface asks the DNS servers)."""
    return [{"name": (i["names"] or [i["id"]])[0] + ("" if not i["id"] else " " + i["id"]), "cidrs": i["addresses"], "groups": i["groups"],
             "subnet": i["subnet"], "interface": i["id"]} for i in model["interfaces"] if i["addresses"]]


def evaluate(model, servers, clients=None, ephemeral=DEFAULT_EPHEMERAL, protocols=PROTOCOLS, prefix_lists=None, check_nacls=True):
    """Which UDP/TCP 53 traffic from ``clients`` to ``servers`` is blocked, and by what.

    servers: [{name, address, node?, node_address?}] - the CoreDNS pods (or their nodes); the interface
      that carries the address (or the node's interface) gives the groups and the subnet.
    clients: [{name, cidrs, groups?, subnet?}] - default: every interface of the model.
    """
    require_netaddr()
    if not isinstance(model, dict) or "groups" not in model:
        raise InvalidInput("the model must be the result of the aws_model / alibaba_model step, got %r" % (type(model).__name__,))
    if not servers:
        raise InvalidInput("no DNS server to check: give the CoreDNS pod addresses (or cluster facts with CoreDNS pods)")
    lo, hi = int(ephemeral[0]), int(ephemeral[1])
    if not 0 < lo <= hi <= 65535:
        raise InvalidInput("ephemeral port range %r must be FROM-TO within 1-65535" % (ephemeral,))
    prefix_lists = prefix_lists or {}
    notes = set()
    members = _members(model)
    server_eps = [_endpoint(model, s, "DNS server", i) for i, s in enumerate(servers)]
    client_eps = [_endpoint(model, c, "client", i) for i, c in enumerate(clients if clients else interface_clients(model))]
    blocked, checks = [], 0
    for server in server_eps:
        if server["groups"] is None:
            notes.add("DNS server %s (%s): no interface of the model carries it: its groups and subnet are unknown, not checked"
                      % (server["name"], ", ".join(server["cidrs"])))
            continue
        for client in client_eps:
            if client["instance"] and client["instance"] == server["instance"]:
                continue  # a node asking a pod on itself: the traffic does not leave the instance
            for proto in protocols:
                for check, region, rules, default in _checks(model, server, client, proto, (lo, hi), members, prefix_lists, notes, check_nacls):
                    checks += 1
                    denied, unused = _ordered(region, rules, default)
                    for part, ref in denied:
                        blocked.append({"check": check, "protocol": proto, "server": server["name"], "server_address": server["cidrs"][0],
                                        "server_groups": server["groups"], "server_subnet": server["subnet"],
                                        "client": client["name"], "client_cidrs": client["cidrs"], "client_groups": client["groups"],
                                        "client_subnet": client["subnet"], "blocked": _describe(part),
                                        "by": ref or _default_by(check, server, client, model),
                                        "explicit_deny": ref is not None})
    return {"available": True, "reason": None, "provider": model["provider"], "checks": checks,
            "servers": [{k: s[k] for k in ("name", "cidrs", "groups", "subnet", "interface", "instance")} for s in server_eps],
            "clients": [{k: c[k] for k in ("name", "cidrs", "groups", "subnet")} for c in client_eps],
            "ephemeral_ports": [lo, hi], "blocked": blocked, "notes": sorted(notes)}


def _default_by(check, server, client, model):
    if check.startswith("nacl"):
        return "default deny (no rule matches)"
    groups = server["groups"] if check == "sg_ingress" else client["groups"]
    return "no rule of %s allows it" % (", ".join(groups) or "(no group)")


def _checks(model, server, client, proto, ephemeral, members, prefix_lists, notes, check_nacls):
    """(name, region, ordered rules, default) for each filter the flow meets."""
    dns = (DNS_PORT, DNS_PORT)
    out = []
    rules, default = _group_rules(model, server["groups"], "ingress", proto, members, prefix_lists, notes)
    out.append(("sg_ingress", [(client["ips"], dns)], rules, default))
    if client["groups"] is not None:
        if client["groups"]:
            rules, default = _group_rules(model, client["groups"], "egress", proto, members, prefix_lists, notes)
            out.append(("sg_egress", [(server["ips"], dns)], rules, default))
    else:
        notes.add("client %s has no known groups: its outbound rules are not checked" % client["name"])
    if not check_nacls or not model["nacls"]:
        return out
    if client["subnet"] and client["subnet"] == server["subnet"]:
        return out  # NACLs filter only traffic that crosses the subnet boundary
    snacl = _nacl_of(model, server["subnet"])
    if snacl:
        out.append(("nacl_server_inbound", [(client["ips"], dns)], _nacl_rules(snacl, "ingress", proto), "deny"))
        out.append(("nacl_server_outbound_reply", [(client["ips"], tuple(ephemeral))], _nacl_rules(snacl, "egress", proto), "deny"))
    cnacl = _nacl_of(model, client["subnet"])
    if cnacl:
        out.append(("nacl_client_outbound", [(server["ips"], dns)], _nacl_rules(cnacl, "egress", proto), "deny"))
        out.append(("nacl_client_inbound_reply", [(server["ips"], tuple(ephemeral))], _nacl_rules(cnacl, "ingress", proto), "deny"))
    elif not client["subnet"]:
        notes.add("client %s has no known subnet: the network ACL of its side is not checked" % client["name"])
    return out


# --- fix plan -------------------------------------------------------------------------------------

CHECK_TEXT = {
    "sg_ingress": "security group ingress of the DNS server",
    "sg_egress": "security group egress of the client",
    "nacl_server_inbound": "network ACL inbound of the DNS server's subnet",
    "nacl_server_outbound_reply": "network ACL outbound (replies) of the DNS server's subnet",
    "nacl_client_outbound": "network ACL outbound of the client's subnet",
    "nacl_client_inbound_reply": "network ACL inbound (replies) of the client's subnet",
}


def summary(evaluation, limit=EXAMPLES):
    """One line per blocked flow, for findings and reports."""
    lines = []
    for b in evaluation.get("blocked") or []:
        what = "; ".join("%s port %s" % (", ".join(d["cidrs"][:4]) + (" ..." if len(d["cidrs"]) > 4 else ""), d["ports"]) for d in b["blocked"])
        lines.append("%s %s -> %s (%s): %s blocks %s [%s]" % (
            b["protocol"].upper(), b["client"], b["server"], b["server_address"], CHECK_TEXT.get(b["check"], b["check"]), what, b["by"]))
    return lines[:limit]


def _target_group(groups, preferred):
    for gid in preferred or []:
        if gid in groups:
            return gid
    return groups[0] if groups else None


def fix_plan(evaluation, model, target_groups=None, manage_nacl=False, priority=1, description="clusterdns.doctor: DNS (SG001)", server_cidrs=None):
    """What to add so the blocked DNS traffic gets through. Security group rules reference the
    client's (server's) group when it has one, CIDRs otherwise; NACL entries (with manage_nacl) go
    right before the first rule that denies the flow. Outbound rules to a DNS server without a group
    (and in Alibaba enterprise groups, which cannot name groups) name ``server_cidrs`` (the range the
    CoreDNS pods run in) or else the server address. Returns {aws_groups, nacls, alibaba_calls,
    refused, reported, actions}."""
    require_netaddr()
    aws_groups, nacl_entries, calls, refused, reported = {}, {}, [], [], []
    seen = set()
    for b in evaluation.get("blocked") or []:
        proto = b["protocol"]
        if b["check"] in ("sg_ingress", "sg_egress"):
            ingress = b["check"] == "sg_ingress"
            owner = _target_group(b["server_groups"] if ingress else (b["client_groups"] or []), target_groups)
            peer_groups = b["client_groups"] if ingress else b["server_groups"]
            cidrs = sorted({c for d in b["blocked"] for c in d["cidrs"]}, key=str)
            if owner is None:
                refused.append("%s: no security group to add the rule to" % b["client"])
                continue
            if model["provider"] == "alibaba" and b["explicit_deny"]:
                deny_priority = _priority_of(model, b["by"])
                if deny_priority is not None and deny_priority <= priority:
                    refused.append("%s (priority %d) drops %s %s -> %s: an Accept rule cannot come before it; change or remove that rule"
                                   % (b["by"], deny_priority, proto.upper(), b["client"], b["server"]))
                    continue
            by_group = peer_groups and not (model["provider"] == "alibaba" and _dig(model, "groups", owner, "kind") == "enterprise")
            if by_group:
                peers = [{"group_id": [_target_group(peer_groups, None)]}]
            else:
                peers = _cidr_peers(cidrs if ingress else (server_cidrs or [b["server_address"]]))
            for peer in peers:
                key = (owner, ingress, proto, str(sorted(peer.items())))
                if key in seen:
                    continue
                seen.add(key)
                entry = aws_groups.setdefault(owner, {"group_id": owner, "name": _dig(model, "groups", owner, "name"),
                                                      "description": _dig(model, "groups", owner, "description"),
                                                      "vpc_id": _dig(model, "groups", owner, "vpc_id"), "rules": [], "rules_egress": []})
                rule = dict(peer, proto=proto, from_port=DNS_PORT, to_port=DNS_PORT, rule_desc=description)
                entry["rules" if ingress else "rules_egress"].append(rule)
                if model["provider"] == "alibaba":
                    calls.extend(_alibaba_call(model, owner, ingress, proto, peer, priority, description))
        else:
            server_side = b["check"].startswith("nacl_server")
            nacl = _nacl_of(model, b["server_subnet"] if server_side else b["client_subnet"])
            direction = "egress" if "outbound" in b["check"] else "ingress"
            # the remote end: the other side's subnet when it is known (pods move within it), else what is blocked
            remote = (model.get("subnets") or {}).get(b["client_subnet"] if server_side else b["server_subnet"])
            for part in b["blocked"]:
                lo, _sep, hi = part["ports"].partition("-")
                for cidr in _remote_cidrs(remote, part["cidrs"]):
                    key = (nacl["id"], direction, proto, cidr, part["ports"])
                    if key in seen:
                        continue
                    seen.add(key)
                    nacl_entries.setdefault(nacl["id"], {"nacl_id": nacl["id"], "vpc_id": nacl["vpc_id"], "subnets": nacl["subnets"], "add": []})["add"].append(
                        {"direction": direction, "protocol": proto, "cidr": cidr, "from_port": int(lo), "to_port": int(hi or lo),
                         "before": b["by"] if b["explicit_deny"] else None})
    nacl_plans = []
    for plan in nacl_entries.values():
        nacl = next(n for n in model["nacls"] if n["id"] == plan["nacl_id"])
        numbered, problems = _number_entries(nacl, plan["add"])
        if manage_nacl:
            try:
                ingress, egress = _nacl_module_entries(nacl, numbered, "ingress"), _nacl_module_entries(nacl, numbered, "egress")
            except InvalidInput as exc:
                problems.append("network ACL %s: %s" % (nacl["id"], exc))
                ingress = egress = []
            refused.extend(problems)
        else:
            ingress = egress = []
        if not manage_nacl:
            reported.extend("network ACL %s %s rule %d allow %s %s port %d-%d (not applied: security_groups_manage_nacl is false)"
                            % (plan["nacl_id"], e["direction"], e["number"], e["protocol"], e["cidr"], e["from_port"], e["to_port"])
                            for e in numbered)
        nacl_plans.append(dict(plan, add=numbered, ingress=ingress, egress=egress,
                               before={"ingress": [nacl_module_entry(e) for e in nacl["ingress"] if e["protocol"] in _NACL_MODULE_PROTOCOLS],
                                       "egress": [nacl_module_entry(e) for e in nacl["egress"] if e["protocol"] in _NACL_MODULE_PROTOCOLS]}))
    actions = []
    for g in aws_groups.values():
        for key, word in (("rules", "inbound"), ("rules_egress", "outbound")):
            for r in g[key]:
                peer = r.get("group_id") or r.get("cidr_ip") or r.get("cidr_ipv6")
                actions.append("%s (%s): add %s %s %d %s %s" % (
                    g["group_id"], g["name"], word, r["proto"].upper(), DNS_PORT, "from" if key == "rules" else "to", ", ".join(peer)))
    if manage_nacl:
        for p in nacl_plans:
            actions.extend("%s: add %s rule %d allow %s %s port %d-%d" % (
                p["nacl_id"], e["direction"], e["number"], e["protocol"], e["cidr"], e["from_port"], e["to_port"]) for e in p["add"])
    return {"aws_groups": list(aws_groups.values()) if model["provider"] == "aws" else [], "nacls": nacl_plans if manage_nacl else [],
            "alibaba_calls": calls, "refused": refused, "reported": reported + ([c["cli"] for c in calls]), "actions": actions}


def _cidr_peers(cidrs):
    """One peer per address family (a rule takes cidr_ip or cidr_ipv6, not both)."""
    v4 = [c for c in cidrs if ":" not in c]
    v6 = [c for c in cidrs if ":" in c]
    peers = []
    if v4:
        peers.append({"cidr_ip": [str(c) for c in cidr_merge(v4)]})
    if v6:
        peers.append({"cidr_ipv6": [str(c) for c in cidr_merge(v6)]})
    return peers


def _priority_of(model, ref):
    for group in model["groups"].values():
        for rule in group["rules"]:
            if rule["ref"] == ref:
                return rule["priority"]
    return None


def _number_entries(nacl, adds):
    """Give each new entry a free rule number below the rule that denies it (or after the last rule)."""
    used = {d: {e["number"] for e in nacl[d]} for d in ("ingress", "egress")}
    out, problems = [], []
    for add in adds:
        taken = used[add["direction"]]
        if add["before"]:
            limit = int(add["before"].rsplit(" ", 1)[1])
            free = [n for n in range(limit - 1, 0, -1) if n not in taken]
            if not free:
                problems.append("network ACL %s: no free rule number before %s for %s %s" % (nacl["id"], add["before"], add["protocol"], add["cidr"]))
                continue
            number = free[0]
        else:
            number = next((n for n in range(max(taken | {0}) + 1, 32767) if n not in taken), None)
            if number is None:
                problems.append("network ACL %s: no free rule number left" % nacl["id"])
                continue
        taken.add(number)
        out.append(dict(add, number=number))
    return out, problems


_NACL_MODULE_PROTOCOLS = {"all": "all", "tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}


def _remote_cidrs(remote, blocked):
    """The subnet CIDRs of the same family that cover what is blocked, else the blocked CIDRs."""
    if remote:
        covering = [c for c in remote if any(IPNetwork(b) in IPNetwork(c) for b in blocked)]
        if covering and all(any(IPNetwork(b) in IPNetwork(c) for c in covering) for b in blocked):
            return covering
    return blocked


def nacl_module_entry(entry):
    """An ec2_vpc_nacl_info entry as amazon.aws.ec2_vpc_nacl takes it back unchanged
    (protocol names it knows, no port range on "all", none on ICMP)."""
    raw = entry["raw"]
    proto = _NACL_MODULE_PROTOCOLS.get(entry["protocol"])
    if proto is None:
        raise InvalidInput("network ACL rule %d uses protocol %r, which amazon.aws.ec2_vpc_nacl cannot write back: change that ACL by hand"
                           % (entry["number"], raw[1]))
    ports = [raw[6], raw[7]] if proto in PROTOCOLS else [None, None]
    return [raw[0], proto, raw[2], raw[3], raw[4], raw[5]] + ports


def _nacl_module_entries(nacl, adds, direction):
    """All entries of one direction, existing and new, in amazon.aws.ec2_vpc_nacl's list form."""
    entries = [nacl_module_entry(e) for e in nacl[direction]]
    entries += [[a["number"], a["protocol"], "allow", a["cidr"], None, None, a["from_port"], a["to_port"]] for a in adds if a["direction"] == direction]
    return sorted(entries, key=lambda e: e[0])


def _alibaba_call(model, owner, ingress, proto, peer, priority, description):
    """AuthorizeSecurityGroup (ingress) / AuthorizeSecurityGroupEgress calls, one per CIDR or group."""
    group = model["groups"][owner]
    side = "Source" if ingress else "Dest"
    action = "AuthorizeSecurityGroup" if ingress else "AuthorizeSecurityGroupEgress"
    if peer.get("group_id"):
        targets = [(side + "GroupId", g) for g in peer["group_id"]]
    elif peer.get("cidr_ip"):
        targets = [(side + "CidrIp", c) for c in peer["cidr_ip"]]
    else:
        targets = [("Ipv6" + side + "CidrIp", c) for c in peer["cidr_ipv6"]]
    calls = []
    for key, value in targets:
        perm = {"IpProtocol": proto.upper(), "PortRange": "%d/%d" % (DNS_PORT, DNS_PORT), "Policy": "accept", "Priority": str(priority),
                "Description": description, key: value}
        args = ["aliyun", "ecs", action, "--RegionId", group.get("region") or "REGION", "--SecurityGroupId", owner]
        for name in sorted(perm):
            args += ["--Permissions.1.%s" % name, perm[name]]
        calls.append({"action": action, "region": group.get("region"), "security_group_id": owner, "permissions": [perm],
                      "cli": " ".join(a if a.replace("-", "").replace(".", "").replace("/", "").replace("_", "").isalnum() else "'%s'" % a
                                      for a in args)})
    return calls


# --- backup and restore (amazon.aws.ec2_security_group rule lists) --------------------------------

def module_rules(group):
    """The rules of an ec2_security_group_info group as ec2_security_group ``rules`` / ``rules_egress``
    (to restore a backup with purge_rules: true)."""
    out = {}
    for key, perms in (("rules", group.get("ip_permissions")), ("rules_egress", group.get("ip_permissions_egress"))):
        rules = []
        for perm in perms or []:
            proto = str(perm.get("ip_protocol"))
            base = {"proto": "all" if proto == "-1" else proto}
            if proto != "-1" and perm.get("from_port") is not None:
                base.update(from_port=perm.get("from_port"), to_port=perm.get("to_port"))
            for r in perm.get("ip_ranges") or []:
                rules.append(dict(base, cidr_ip=[r["cidr_ip"]], **_desc(r)))
            for r in perm.get("ipv6_ranges") or []:
                rules.append(dict(base, cidr_ipv6=[r["cidr_ipv6"]], **_desc(r)))
            for r in perm.get("prefix_list_ids") or []:
                rules.append(dict(base, ip_prefix=[r["prefix_list_id"]], **_desc(r)))
            for r in perm.get("user_id_group_pairs") or []:
                gid = r["group_id"]
                if r.get("user_id") and r.get("user_id") != group.get("owner_id"):  # another account's group: OWNER/ID/NAME
                    gid = "%s/%s/%s" % (r["user_id"], r["group_id"], r.get("group_name") or r["group_id"])
                rules.append(dict(base, group_id=[gid], **_desc(r)))
        out[key] = rules
    return out


def _desc(entry):
    return {"rule_desc": entry["description"]} if entry.get("description") else {}
