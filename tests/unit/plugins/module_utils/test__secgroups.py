# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cloud security group / network ACL evaluation of DNS (_secgroups) and finding SG001.

AWS data has the shape of amazon.aws's ec2_security_group_info / ec2_vpc_nacl_info /
ec2_instance_info results (the integration test test_security_groups_moto.py gets the same from
the modules against moto); Alibaba data are the API responses in tests/unit/fixtures/cloud/alibaba
(SOURCES.md)."""

from __future__ import annotations

import json
import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings, _secgroups
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput

ALIBABA = pathlib.Path(__file__).resolve().parents[2] / "fixtures" / "cloud" / "alibaba"


def perm(proto, lo=None, hi=None, cidrs=(), groups=(), v6=(), prefix=()):
    return {"ip_protocol": proto, "from_port": lo, "to_port": hi, "ip_ranges": [{"cidr_ip": c} for c in cidrs],
            "ipv6_ranges": [{"cidr_ipv6": c} for c in v6], "user_id_group_pairs": [{"group_id": g, "user_id": "123456789012"} for g in groups],
            "prefix_list_ids": [{"prefix_list_id": p} for p in prefix]}


ALL_OUT = [perm("-1", cidrs=["0.0.0.0/0"], v6=["::/0"])]


def group(gid, ingress, egress=None):
    return {"group_id": gid, "group_name": gid.replace("sg-", ""), "description": "test", "vpc_id": "vpc-1", "owner_id": "123456789012",
            "ip_permissions": ingress, "ip_permissions_egress": ALL_OUT if egress is None else egress}


def instance(iid, subnet, groups, *addresses, v6=()):
    return {"instance_id": iid, "private_dns_name": "ip-%s.ec2.internal" % addresses[0].replace(".", "-"), "subnet_id": subnet,
            "network_interfaces": [{"network_interface_id": "eni-" + iid[2:], "subnet_id": subnet, "groups": [{"group_id": g} for g in groups],
                                    "private_ip_addresses": [{"private_ip_address": a} for a in addresses],
                                    "ipv6_addresses": [{"ipv6_address": a} for a in v6]}]}


def nacl(nid, subnets, ingress, egress=None):
    return {"nacl_id": nid, "vpc_id": "vpc-1", "subnets": subnets, "ingress": ingress,
            "egress": egress if egress is not None else [[100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]]}


SERVER = [{"name": "kube-system/coredns-1", "address": "10.0.1.200"}]
PODS = {"name": "pods", "cidrs": ["10.0.128.0/17"]}


def blocked(evaluation, check=None, proto=None, client=None):
    return [b for b in evaluation["blocked"] if (check is None or b["check"] == check) and (proto is None or b["protocol"] == proto)
            and (client is None or b["client"] == client)]


def aws(groups, instances=None, nacls=None, subnets=None):
    insts = instances if instances is not None else [instance("i-1", "subnet-a", ["sg-nodes"], "10.0.1.10"),
                                                     instance("i-2", "subnet-a", ["sg-nodes"], "10.0.1.11", "10.0.1.200")]
    return _secgroups.aws_model(groups, nacls, insts, subnets)


# --- AWS security groups ---------------------------------------------------------------------------

def test_node_group_missing_udp_53_from_the_pod_range_blocks_only_udp_from_the_pods():
    model = aws([group("sg-nodes", [perm("-1", groups=["sg-nodes"]), perm("tcp", 53, 53, cidrs=["10.0.128.0/17"])])])
    ev = _secgroups.evaluate(model, SERVER, _secgroups.interface_clients(model) + [PODS])
    assert [(b["check"], b["protocol"], b["client"], b["blocked"]) for b in ev["blocked"]] == [
        ("sg_ingress", "udp", "pods", [{"cidrs": ["10.0.128.0/17"], "ports": "53"}])]
    assert ev["blocked"][0]["by"] == "no rule of sg-nodes allows it"
    # i-1: 2 protocols x (ingress + egress); pods: ingress only (no group known); i-2 carries the server: its traffic stays on it
    assert ev["checks"] == 2 * 2 + 2


def test_overlapping_cidrs_leave_only_the_uncovered_part_blocked():
    model = aws([group("sg-nodes", [perm("udp", 53, 53, cidrs=["10.0.128.0/18", "10.0.160.0/19"]), perm("udp", 50, 60, cidrs=["10.0.128.0/20"]),
                                    perm("-1", groups=["sg-nodes"]), perm("tcp", 0, 65535, cidrs=["10.0.0.0/8"])])])
    ev = _secgroups.evaluate(model, SERVER, [PODS])
    assert [b["blocked"] for b in ev["blocked"]] == [[{"cidrs": ["10.0.192.0/18"], "ports": "53"}]]


@pytest.mark.parametrize(("rule", "udp_blocked", "tcp_blocked"), [
    (perm("udp", 50, 60, cidrs=["0.0.0.0/0"]), False, True),
    (perm("udp", 54, 60, cidrs=["0.0.0.0/0"]), True, True),
    (perm("tcp", 1, 1024, cidrs=["10.0.0.0/8"]), True, False),
    (perm("-1", cidrs=["10.0.0.0/8"]), False, False),
    (perm("17", 53, 53, cidrs=["10.0.128.0/17"]), False, True),  # protocol numbers as AWS returns them for rules made by number
    (perm("icmp", -1, -1, cidrs=["0.0.0.0/0"]), True, True),
])
def test_port_ranges_and_protocols(rule, udp_blocked, tcp_blocked):
    ev = _secgroups.evaluate(aws([group("sg-nodes", [rule])]), SERVER, [PODS])
    assert bool(blocked(ev, "sg_ingress", "udp")) is udp_blocked
    assert bool(blocked(ev, "sg_ingress", "tcp")) is tcp_blocked


def test_group_reference_allows_exactly_the_member_interfaces():
    groups = [group("sg-nodes", [perm("-1", groups=["sg-a"])]), group("sg-a", [])]
    instances = [instance("i-1", "subnet-a", ["sg-a"], "10.0.2.5"), instance("i-2", "subnet-a", ["sg-nodes"], "10.0.1.11", "10.0.1.200"),
                 instance("i-3", "subnet-a", ["sg-b"], "10.0.3.7"), instance("i-4", "subnet-a", ["sg-nodes"], "10.0.1.12")]
    ev = _secgroups.evaluate(aws(groups, instances), SERVER)
    assert sorted({b["client"] for b in ev["blocked"]}) == ["i-3 eni-3", "i-4 eni-4"]
    assert any("group sg-b of an interface was not read" in n for n in ev["notes"])


def test_egress_of_the_client_group_is_checked_against_the_server_address():
    groups = [group("sg-nodes", [perm("-1", cidrs=["10.0.0.0/16"])]),
              group("sg-batch", [], egress=[perm("tcp", 0, 65535, cidrs=["0.0.0.0/0"]), perm("udp", 53, 53, cidrs=["10.0.2.0/24"])])]
    instances = [instance("i-2", "subnet-a", ["sg-nodes"], "10.0.1.11", "10.0.1.200"), instance("i-9", "subnet-b", ["sg-batch"], "10.0.9.9")]
    ev = _secgroups.evaluate(aws(groups, instances), SERVER)
    assert [(b["check"], b["protocol"], b["client"], b["blocked"]) for b in ev["blocked"]] == [
        ("sg_egress", "udp", "i-9 eni-9", [{"cidrs": ["10.0.1.200/32"], "ports": "53"}])]
    plan = _secgroups.fix_plan(ev, aws(groups, instances))
    assert plan["aws_groups"] == [{"group_id": "sg-batch", "name": "batch", "description": "test", "vpc_id": "vpc-1", "rules": [],
                                   "rules_egress": [{"group_id": ["sg-nodes"], "proto": "udp", "from_port": 53, "to_port": 53,
                                                     "rule_desc": "clusterdns.doctor: DNS (SG001)"}]}]


def test_unresolved_prefix_list_is_reported_and_resolved_one_counts():
    model = aws([group("sg-nodes", [perm("udp", 53, 53, prefix=["pl-0a1b"]), perm("-1", groups=["sg-nodes"]), perm("tcp", 53, 53, cidrs=["10.0.0.0/8"])])])
    ev = _secgroups.evaluate(model, SERVER, [PODS])
    assert blocked(ev, "sg_ingress", "udp") and any("pl-0a1b" in n for n in ev["notes"])
    ev = _secgroups.evaluate(model, SERVER, [PODS], prefix_lists={"pl-0a1b": ["10.0.128.0/17"]})
    assert ev["blocked"] == []


def test_ipv6_client_range_needs_an_ipv6_rule():
    groups = [group("sg-nodes", [perm("-1", cidrs=["10.0.0.0/8"]), perm("tcp", 53, 53, v6=["2600:1f18:abc::/56"])])]
    v6pods = {"name": "pods6", "cidrs": ["2600:1f18:abc:80::/64"]}
    ev = _secgroups.evaluate(aws(groups), SERVER, [PODS, v6pods])
    assert [(b["protocol"], b["client"], b["blocked"][0]["cidrs"]) for b in ev["blocked"]] == [("udp", "pods6", ["2600:1f18:abc:80::/64"])]
    plan = _secgroups.fix_plan(ev, aws(groups))
    assert plan["aws_groups"][0]["rules"] == [{"cidr_ipv6": ["2600:1f18:abc:80::/64"], "proto": "udp", "from_port": 53, "to_port": 53,
                                               "rule_desc": "clusterdns.doctor: DNS (SG001)"}]


def test_server_found_by_node_name_when_the_pod_address_is_on_no_interface():
    model = aws([group("sg-nodes", [perm("-1", groups=["sg-nodes"])])])
    ev = _secgroups.evaluate(model, [{"name": "coredns-2", "address": "10.244.1.5", "node": "ip-10-0-1-10.ec2.internal"}])
    assert ev["servers"][0]["interface"] == "eni-1" and ev["servers"][0]["groups"] == ["sg-nodes"]
    ev = _secgroups.evaluate(model, [{"name": "coredns-3", "address": "10.244.9.9", "node": "elsewhere"}])
    assert ev["checks"] == 0 and "not checked" in ev["notes"][0]


# --- AWS network ACLs ---------------------------------------------------------------------------

OPEN = [group("sg-nodes", [perm("-1", cidrs=["0.0.0.0/0"])])]
TWO_SUBNETS = [instance("i-1", "subnet-b", ["sg-nodes"], "10.0.2.10"), instance("i-2", "subnet-a", ["sg-nodes"], "10.0.1.11", "10.0.1.200")]
SUBNETS = [{"subnet_id": "subnet-a", "cidr_block": "10.0.1.0/24"}, {"subnet_id": "subnet-b", "cidr_block": "10.0.2.0/24"}]


def test_nacl_deny_before_allow_blocks_and_names_the_rule_number():
    nacls = [nacl("acl-a", ["subnet-a"], [[90, "udp", "deny", "10.0.2.0/24", None, None, 53, 53], [100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]]),
             nacl("acl-b", ["subnet-b"], [[100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]])]
    ev = _secgroups.evaluate(aws(OPEN, TWO_SUBNETS, nacls), SERVER)
    assert [(b["check"], b["protocol"], b["by"], b["explicit_deny"]) for b in ev["blocked"]] == [
        ("nacl_server_inbound", "udp", "acl-a ingress rule 90", True)]


def test_nacl_allow_with_a_lower_number_wins_over_the_deny():
    nacls = [nacl("acl-a", ["subnet-a"], [[80, "udp", "allow", "10.0.2.10/32", None, None, 53, 53], [90, "udp", "deny", "10.0.2.0/24", None, None, 0, 65535],
                                          [100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]])]
    ev = _secgroups.evaluate(aws(OPEN, TWO_SUBNETS, nacls), SERVER)
    assert ev["blocked"] == []


def test_stateless_nacl_needs_the_ephemeral_replies_and_the_gap_is_found():
    # the client subnet lets replies in only on 1024-40000: Linux resolvers use 32768-60999
    nacls = [nacl("acl-b", ["subnet-b"], [[100, "tcp", "allow", "0.0.0.0/0", None, None, 0, 65535],
                                          [110, "udp", "allow", "10.0.0.0/16", None, None, 1024, 40000]])]
    model = aws(OPEN, TWO_SUBNETS, nacls, SUBNETS)
    ev = _secgroups.evaluate(model, SERVER)
    assert [(b["check"], b["protocol"], b["blocked"], b["by"]) for b in ev["blocked"]] == [
        ("nacl_client_inbound_reply", "udp", [{"cidrs": ["10.0.1.200/32"], "ports": "40001-60999"}], "default deny (no rule matches)")]
    plan = _secgroups.fix_plan(ev, model, manage_nacl=True)
    # the entry names the DNS server's subnet (CoreDNS pods move within it), after the last rule
    assert plan["nacls"][0]["add"] == [{"direction": "ingress", "protocol": "udp", "cidr": "10.0.1.0/24", "from_port": 40001, "to_port": 60999,
                                        "before": None, "number": 111}]
    assert plan["nacls"][0]["ingress"][-1] == [111, "udp", "allow", "10.0.1.0/24", None, None, 40001, 60999]
    assert plan["nacls"][0]["egress"] == [[100, "all", "allow", "0.0.0.0/0", None, None, None, None]]  # "all" without ports, as AWS keeps it
    assert _secgroups.fix_plan(ev, model)["nacls"] == []  # not managed by default: only reported
    assert "not applied" in _secgroups.fix_plan(ev, model)["reported"][0]
    wide = _secgroups.evaluate(model, SERVER, ephemeral=(1024, 40000))
    assert wide["blocked"] == []


def test_nacl_entry_goes_right_before_the_deny_and_is_refused_without_room():
    nacls = [nacl("acl-a", ["subnet-a"], [[1, "udp", "deny", "0.0.0.0/0", None, None, 0, 65535], [100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]]),
             nacl("acl-b", ["subnet-b"], [[50, "udp", "deny", "10.0.1.0/24", None, None, 53, 53], [100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]],
                  egress=[[20, "udp", "deny", "10.0.1.0/24", None, None, 0, 65535], [100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]])]
    model = aws(OPEN, TWO_SUBNETS, nacls, SUBNETS)
    plan = _secgroups.fix_plan(_secgroups.evaluate(model, SERVER), model, manage_nacl=True)
    assert any("no free rule number before acl-a ingress rule 1" in r for r in plan["refused"])
    assert [(p["nacl_id"], a["direction"], a["number"]) for p in plan["nacls"] for a in p["add"]] == [("acl-b", "egress", 19)]


def test_nacls_do_not_filter_traffic_inside_one_subnet():
    nacls = [nacl("acl-a", ["subnet-a"], [[10, "all", "deny", "0.0.0.0/0", None, None, 0, 65535]])]
    ev = _secgroups.evaluate(aws(OPEN, None, nacls), SERVER)
    assert ev["blocked"] == []


def test_nacl_with_a_protocol_the_module_cannot_write_back_is_refused():
    nacls = [nacl("acl-a", ["subnet-a"], [[10, "47", "allow", "0.0.0.0/0", None, None, 0, 65535]])]
    model = aws(OPEN, TWO_SUBNETS, nacls, SUBNETS)
    plan = _secgroups.fix_plan(_secgroups.evaluate(model, SERVER), model, manage_nacl=True)
    assert any("protocol '47'" in r and "by hand" in r for r in plan["refused"])


# --- Alibaba Cloud ------------------------------------------------------------------------------

def alibaba():
    groups = json.loads((ALIBABA / "DescribeSecurityGroups.json").read_text())["SecurityGroups"]["SecurityGroup"]
    attrs = [json.loads((ALIBABA / ("DescribeSecurityGroupAttribute-%s.json" % g["SecurityGroupId"])).read_text()) for g in groups]
    instances = json.loads((ALIBABA / "DescribeInstances.json").read_text())["Instances"]["Instance"]
    return _secgroups.alibaba_model(attrs, instances, {g["SecurityGroupId"]: g["SecurityGroupType"] for g in groups})


ACK_SERVER = [{"name": "kube-system/coredns-7b4d", "address": "172.20.1.5", "node": "cn-hangzhou.192.168.0.22"}]
ACK_PODS = {"name": "pods", "cidrs": ["172.20.0.0/16"]}
ACK_PODS6 = {"name": "pods6", "cidrs": ["2408:4005:3a0::/56"]}


def test_alibaba_parser_on_the_recorded_responses():
    model = alibaba()
    nodes = model["groups"]["sg-bp1fg655nh68xyz9i1a1"]
    assert (nodes["kind"], nodes["inner_accept"], len(nodes["rules"])) == ("normal", True, 5)
    assert nodes["rules"][3] == {"direction": "ingress", "protocol": "udp", "ports": [1, 65535], "cidrs": ["0.0.0.0/0"], "groups": [],
                                 "prefix_lists": [], "action": "deny", "priority": 50, "ref": "sg-bp1fg655nh68xyz9i1a1 sgr-bp12kewq32dfwrdi1a04"}
    assert nodes["rules"][0]["protocol"] == "all" and nodes["rules"][0]["ports"] == [0, 65535]
    batch = model["groups"]["sg-bp1c2vvdvmtvh0vku9a2"]
    assert (batch["kind"], batch["inner_accept"]) == ("enterprise", False)
    assert [(i["instance"], i["addresses"], i["subnet"]) for i in model["interfaces"]] == [
        ("i-bp67acfmxazb4ph1n001", ["192.168.0.21"], "vsw-bp1s5fnvk4gn2tws0a01"),
        ("i-bp67acfmxazb4ph1n002", ["192.168.0.22"], "vsw-bp1s5fnvk4gn2tws0a01"),
        ("i-bp67acfmxazb4ph1n003", ["192.168.1.31"], "vsw-bp1s5fnvk4gn2tws0b01")]


def test_alibaba_drop_with_a_higher_priority_beats_the_pod_cidr_accept():
    model = alibaba()
    ev = _secgroups.evaluate(model, ACK_SERVER, _secgroups.interface_clients(model) + [ACK_PODS, ACK_PODS6])
    assert ev["servers"][0]["instance"] == "i-bp67acfmxazb4ph1n002"  # ACK node name <region>.<address>
    found = sorted((b["check"], b["protocol"], b["client"].split()[0], b["by"]) for b in ev["blocked"])
    drop = "sg-bp1fg655nh68xyz9i1a1 sgr-bp12kewq32dfwrdi1a04"
    assert found == [
        # enterprise group: outbound denied by default, only TCP and NTP allowed
        ("sg_egress", "udp", "i-bp67acfmxazb4ph1n003", "no rule of sg-bp1c2vvdvmtvh0vku9a2 allows it"),
        # IPv6 pods: a UDP 53 rule only
        ("sg_ingress", "tcp", "pods6", "no rule of sg-bp1fg655nh68xyz9i1a1 allows it"),
        # the priority-50 Drop comes before the intra-group default and the priority-100 pod CIDR Accept
        ("sg_ingress", "udp", "i-bp67acfmxazb4ph1n001", drop),
        ("sg_ingress", "udp", "i-bp67acfmxazb4ph1n003", drop),
        ("sg_ingress", "udp", "pods", drop),
    ]  # node 2 itself is not checked: its own pod's traffic does not leave the instance


def test_alibaba_fix_plan_gives_api_calls_and_cli_with_a_priority_ahead_of_the_drop():
    model = alibaba()
    ev = _secgroups.evaluate(model, ACK_SERVER, _secgroups.interface_clients(model) + [ACK_PODS, ACK_PODS6])
    plan = _secgroups.fix_plan(ev, model, server_cidrs=["172.20.0.0/16"])
    assert plan["aws_groups"] == [] and plan["refused"] == []
    calls = {(c["security_group_id"], c["action"], tuple(sorted((k, v) for k, v in c["permissions"][0].items() if k not in ("Description",))))
             for c in plan["alibaba_calls"]}
    nodes, batch = "sg-bp1fg655nh68xyz9i1a1", "sg-bp1c2vvdvmtvh0vku9a2"
    base = (("PortRange", "53/53"), ("Policy", "accept"), ("Priority", "1"))
    assert calls == {
        (nodes, "AuthorizeSecurityGroup", tuple(sorted(base + (("IpProtocol", "UDP"), ("SourceGroupId", nodes))))),
        (nodes, "AuthorizeSecurityGroup", tuple(sorted(base + (("IpProtocol", "UDP"), ("SourceGroupId", batch))))),
        (nodes, "AuthorizeSecurityGroup", tuple(sorted(base + (("IpProtocol", "UDP"), ("SourceCidrIp", "172.20.0.0/16"))))),
        (nodes, "AuthorizeSecurityGroup", tuple(sorted(base + (("IpProtocol", "TCP"), ("Ipv6SourceCidrIp", "2408:4005:3a0::/56"))))),
        # an enterprise group cannot name a group: the DNS servers' range instead
        (batch, "AuthorizeSecurityGroupEgress", tuple(sorted(base + (("IpProtocol", "UDP"), ("DestCidrIp", "172.20.0.0/16"))))),
    }
    cli = [c["cli"] for c in plan["alibaba_calls"] if "SourceCidrIp" in c["permissions"][0]][0]
    assert cli.startswith("aliyun ecs AuthorizeSecurityGroup --RegionId cn-hangzhou --SecurityGroupId sg-bp1fg655nh68xyz9i1a1 ")
    assert "--Permissions.1.SourceCidrIp 172.20.0.0/16" in cli and "--Permissions.1.Description 'clusterdns.doctor: DNS (SG001)'" in cli


def test_alibaba_drop_at_priority_1_cannot_be_overridden_and_is_refused():
    model = alibaba()
    for rule in model["groups"]["sg-bp1fg655nh68xyz9i1a1"]["rules"]:
        if rule["action"] == "deny":
            rule["priority"] = 1
    ev = _secgroups.evaluate(model, ACK_SERVER, [ACK_PODS])
    plan = _secgroups.fix_plan(ev, model)
    assert plan["alibaba_calls"] == []
    assert plan["refused"] == ["sg-bp1fg655nh68xyz9i1a1 sgr-bp12kewq32dfwrdi1a04 (priority 1) drops UDP pods -> kube-system/coredns-7b4d: "
                               "an Accept rule cannot come before it; change or remove that rule"]


def test_alibaba_basic_group_with_isolated_members_drops_node_traffic():
    model = alibaba()
    model["groups"]["sg-bp1fg655nh68xyz9i1a1"]["inner_accept"] = False
    ev = _secgroups.evaluate(model, ACK_SERVER)
    assert ("sg_ingress", "tcp", "i-bp67acfmxazb4ph1n001") in {(b["check"], b["protocol"], b["client"].split()[0]) for b in ev["blocked"]}


# --- fix plan, backup rules, bad input ----------------------------------------------------------

def test_aws_fix_plan_references_the_client_group_and_merges_duplicates():
    groups = [group("sg-nodes", [perm("tcp", 53, 53, groups=["sg-a"]), perm("-1", groups=["sg-nodes"])]), group("sg-a", [])]
    instances = [instance("i-1", "subnet-a", ["sg-a"], "10.0.2.5"), instance("i-3", "subnet-a", ["sg-a"], "10.0.2.6"),
                 instance("i-2", "subnet-a", ["sg-nodes"], "10.0.1.11", "10.0.1.200")]
    model = aws(groups, instances)
    plan = _secgroups.fix_plan(_secgroups.evaluate(model, SERVER), model)
    assert [g["group_id"] for g in plan["aws_groups"]] == ["sg-nodes"]
    assert plan["aws_groups"][0]["rules"] == [{"group_id": ["sg-a"], "proto": "udp", "from_port": 53, "to_port": 53,
                                               "rule_desc": "clusterdns.doctor: DNS (SG001)"}]
    assert plan["actions"] == ["sg-nodes (nodes): add inbound UDP 53 from sg-a"]


def test_module_rules_turn_the_info_result_back_into_module_rules():
    g = group("sg-nodes", [perm("tcp", 53, 53, cidrs=["10.0.0.0/16"], v6=["2600:1f18::/56"]), perm("-1", groups=["sg-nodes"]),
                           perm("udp", 53, 53, prefix=["pl-0a1b"])])
    g["ip_permissions"][0]["ip_ranges"][0]["description"] = "nodes"
    g["ip_permissions"][1]["user_id_group_pairs"].append({"group_id": "sg-0ther", "user_id": "210987654321", "group_name": "peer"})
    rules = _secgroups.module_rules(g)
    assert rules["rules"] == [
        {"proto": "tcp", "from_port": 53, "to_port": 53, "cidr_ip": ["10.0.0.0/16"], "rule_desc": "nodes"},
        {"proto": "tcp", "from_port": 53, "to_port": 53, "cidr_ipv6": ["2600:1f18::/56"]},
        {"proto": "all", "group_id": ["sg-nodes"]},
        {"proto": "all", "group_id": ["210987654321/sg-0ther/peer"]},
        {"proto": "udp", "from_port": 53, "to_port": 53, "ip_prefix": ["pl-0a1b"]},
    ]
    assert rules["rules_egress"] == [{"proto": "all", "cidr_ip": ["0.0.0.0/0"]}, {"proto": "all", "cidr_ipv6": ["::/0"]}]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: _secgroups.aws_model([group("sg-x", [perm("udp", 53, 53, cidrs=["10.0.0.300/24"])])]), "security group sg-x ingress rule 0: '10.0.0.300/24'"),
    (lambda: _secgroups.aws_model([{"group_name": "x"}]), "security group without group_id"),
    (lambda: _secgroups.aws_model([], [nacl("acl-1", [], [[100, "all", "allow"]])]), "network ACL acl-1: ingress entry [100, 'all', 'allow']"),
    (lambda: _secgroups.alibaba_model([{"SecurityGroupId": "sg-1", "Permissions": {"Permission": [
        {"Direction": "ingress", "IpProtocol": "UDP", "PortRange": "53", "Policy": "Accept"}]}}]), "security group sg-1 rule 1: PortRange '53'"),
    (lambda: _secgroups.alibaba_model([{"SecurityGroupId": "sg-1", "Permissions": {"Permission": [
        {"Direction": "in", "IpProtocol": "UDP", "PortRange": "53/53"}]}}]), "Direction 'in' is neither ingress nor egress"),
    (lambda: _secgroups.evaluate(aws(OPEN), []), "no DNS server to check"),
    (lambda: _secgroups.evaluate(aws(OPEN), SERVER, [{"name": "x", "cidrs": ["pods"]}]), "client x: 'pods' is not an IP address"),
    (lambda: _secgroups.evaluate(aws(OPEN), SERVER, ephemeral=(60999, 32768)), "ephemeral port range"),
])
def test_bad_input_names_the_object(call, message):
    with pytest.raises(InvalidInput, match=None) as exc:
        call()
    assert message in str(exc.value)


# --- finding SG001 --------------------------------------------------------------------------------

def sg001(cluster):
    result = _findings.evaluate({}, cluster)
    return [f for f in result["findings"] if f["id"] == "SG001"], [c for c in result["checks"] if c["id"] == "SG001"]


def test_sg001_fires_with_the_blocking_group_and_examples():
    model = aws([group("sg-nodes", [perm("-1", groups=["sg-nodes"]), perm("tcp", 53, 53, cidrs=["10.0.128.0/17"])])])
    ev = _secgroups.evaluate(model, SERVER, _secgroups.interface_clients(model) + [PODS])
    findings, _checks = sg001({"available": True, "security_groups": ev})
    assert len(findings) == 1
    f = findings[0]
    assert (f["severity"], f["object"], f["evidence"]["check"], f["evidence"]["protocols"]) == ("error", "sg-nodes", "sg_ingress", ["UDP"])
    assert f["detail"].startswith("sg-nodes (inbound rules of the DNS server's security groups) blocks UDP 53 from 1 client(s) to 1 DNS server(s)")
    assert "10.0.128.0/17 port 53" in f["detail"]
    assert f["fix"]["command"] == "ansible-playbook clusterdns.doctor.remediate --tags security_groups"


def test_sg001_one_finding_per_blocking_nacl_rule_with_the_nacl_variable():
    nacls = [nacl("acl-a", ["subnet-a"], [[90, "udp", "deny", "10.0.2.0/24", None, None, 53, 53], [100, "all", "allow", "0.0.0.0/0", None, None, 0, 65535]])]
    ev = _secgroups.evaluate(aws(OPEN, TWO_SUBNETS, nacls), SERVER)
    findings, _checks = sg001({"available": True, "security_groups": ev})
    assert [(f["object"], f["fix"]["variables"].get("security_groups_manage_nacl")) for f in findings] == [("acl-a ingress rule 90", True)]


def test_sg001_passes_when_nothing_is_blocked_and_skips_when_not_gathered():
    ev = _secgroups.evaluate(aws(OPEN), SERVER)
    assert sg001({"available": True, "security_groups": ev}) == ([], [{"id": "SG001", "scope": "cluster", "host": None, "status": "pass", "reason": None}])
    _f, checks = sg001({"available": True})
    assert checks[0]["status"] == "skip" and "not gathered" in checks[0]["reason"]
    _f, checks = sg001({"available": True, "security_groups": {"available": False, "reason": "AuthFailure"}})
    assert checks[0]["reason"] == "cloud security groups unavailable: AuthFailure"
