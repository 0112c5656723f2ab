#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: alibaba_security_group_info
short_description: Alibaba Cloud ECS security groups, their rules and the instances in them
version_added: 1.0.0
description:
  - Reads, through the official Alibaba Cloud ECS SDK (C(alibabacloud_ecs20140526)), what the
    C(clusterdns.doctor.security_groups_model) filter needs to check UDP and TCP 53 between the
    nodes, the pods and the CoreDNS pods of an ACK (or self-managed) cluster.
  - C(DescribeSecurityGroups) lists the groups of O(vpc_id) with their type (basic C(normal) or
    C(enterprise)); C(DescribeInstances) lists the instances of O(vpc_id) or O(instance_ids) with their
    private addresses, network interfaces and groups; C(DescribeSecurityGroupAttribute) reads the rules
    of every group found and of O(security_group_ids), all pages.
  - The responses are returned as the API documents them (keys such as C(Permissions.Permission),
    C(SecurityGroupIds.SecurityGroupId)), so they can be compared with the API reference and recorded.
  - Runs where the SDK is installed, usually the controller (C(delegate_to localhost)); it only reads.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - alibabacloud_ecs20140526 (the official ECS SDK, C(pip install alibabacloud-ecs20140526))
notes:
  - Credentials come from O(access_key_id) / O(access_key_secret) / O(security_token) or the SDK's
    environment variables C(ALIBABA_CLOUD_ACCESS_KEY_ID), C(ALIBABA_CLOUD_ACCESS_KEY_SECRET),
    C(ALIBABA_CLOUD_SECURITY_TOKEN). A RAM policy with C(ecs:DescribeSecurityGroups),
    C(ecs:DescribeSecurityGroupAttribute) and C(ecs:DescribeInstances) is enough.
  - Network ACLs of vSwitches (VPC API) are not read.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.info_module
options:
  region_id:
    description: Region of the VPC, for example V(cn-hangzhou).
    type: str
    required: true
  vpc_id:
    description: VPC whose security groups and instances are read.
    type: str
  instance_ids:
    description: Instances (the cluster nodes) to read instead of every instance of O(vpc_id); at most 100.
    type: list
    elements: str
    default: []
  security_group_ids:
    description: Further groups whose rules are read.
    type: list
    elements: str
    default: []
  access_key_id:
    description: AccessKey ID. Default C(ALIBABA_CLOUD_ACCESS_KEY_ID).
    type: str
  access_key_secret:
    description: AccessKey secret. Default C(ALIBABA_CLOUD_ACCESS_KEY_SECRET).
    type: str
  security_token:
    description: STS token of temporary credentials. Default C(ALIBABA_CLOUD_SECURITY_TOKEN).
    type: str
  endpoint:
    description: API endpoint (host or host:port). Default the SDK's endpoint of O(region_id), C(ecs.<region>.aliyuncs.com).
    type: str
  protocol:
    description: V(https), or V(http) for a local test endpoint.
    type: str
    choices: [https, http]
    default: https
  timeout:
    description: Seconds to wait for each API call.
    type: int
    default: 20
seealso:
  - module: amazon.aws.ec2_security_group_info
  - name: DescribeSecurityGroupAttribute (Alibaba Cloud API reference)
    description: The response this module returns in RV(security_groups).
    link: https://www.alibabacloud.com/help/en/ecs/developer-reference/api-ecs-2014-05-26-describesecuritygroupattribute
  - name: Security group rules (Alibaba Cloud documentation)
    description: Priorities, Accept and Drop, default rules of basic and enterprise groups.
    link: https://www.alibabacloud.com/help/en/ecs/user-guide/security-group-rules
"""

EXAMPLES = r"""
- name: Read the groups and nodes of the cluster VPC
  clusterdns.doctor.alibaba_security_group_info:
    region_id: cn-hangzhou
    vpc_id: vpc-bp1opxu1zkhn00gzvxxxx
  delegate_to: localhost
  register: alibaba

- name: Check UDP and TCP 53 to the CoreDNS pods
  ansible.builtin.set_fact:
    evaluation: >-
      {{ alibaba.security_groups | clusterdns.doctor.security_groups_model(provider='alibaba', instances=alibaba.instances,
                                                                          group_types=alibaba.group_types)
         | clusterdns.doctor.security_groups_evaluate(servers=[{'name': 'coredns', 'address': '172.20.1.5', 'node': 'cn-hangzhou.192.168.0.21'}]) }}
"""

RETURN = r"""
security_groups:
  description: One C(DescribeSecurityGroupAttribute) response body per group, the rules of all pages in C(Permissions.Permission).
  returned: success
  type: list
  elements: dict
  sample: [{"SecurityGroupId": "sg-bp1fg655nh68xyz9i1xx", "InnerAccessPolicy": "Accept", "VpcId": "vpc-bp1opxu1zkhn00gzvxxxx",
            "Permissions": {"Permission": [{"Direction": "ingress", "IpProtocol": "TCP", "PortRange": "53/53",
                                            "SourceCidrIp": "172.20.0.0/16", "Policy": "Accept", "Priority": 1}]}}]
group_types:
  description: Group id to C(SecurityGroupType) (V(normal) or V(enterprise)) from C(DescribeSecurityGroups).
  returned: success
  type: dict
  sample: {"sg-bp1fg655nh68xyz9i1xx": "normal"}
instances:
  description: The C(Instances.Instance) entries of C(DescribeInstances), all pages.
  returned: success
  type: list
  elements: dict
  sample: [{"InstanceId": "i-bp67acfmxazb4ph1xxxx", "SecurityGroupIds": {"SecurityGroupId": ["sg-bp1fg655nh68xyz9i1xx"]},
            "VpcAttributes": {"PrivateIpAddress": {"IpAddress": ["192.168.0.21"]}, "VSwitchId": "vsw-bp1s5fnvk4gn2tws0xxxx"}}]
requests:
  description: The API calls made (action and parameters, no credentials), in order.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "DescribeSecurityGroups", "parameters": {"RegionId": "cn-hangzhou", "VpcId": "vpc-bp1opxu1zkhn00gzvxxxx"}}]
"""

import json
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

try:
    from alibabacloud_ecs20140526 import models as ecs_models
    from alibabacloud_ecs20140526.client import Client as EcsClient
    from alibabacloud_tea_openapi import models as openapi_models

    HAS_SDK = True
    SDK_IMPORT_ERROR = None
except ImportError:
    HAS_SDK = False
    SDK_IMPORT_ERROR = traceback.format_exc()

PAGES = 100  # upper bound on pages of one call (100 x 100 instances, 100 x 1000 rules)


class ApiCaller:
    def __init__(self, module, client):
        self.module = module
        self.client = client
        self.requests = []

    def call(self, action, method, request_class, **params):
        """All pages of one Describe call: a list of response bodies (dicts as the API documents them)."""
        bodies, token = [], None
        for _page in range(PAGES):
            page = dict(params, **({"NextToken": token} if token else {}))
            self.requests.append({"action": action, "parameters": page})
            try:
                response = getattr(self.client, method)(request_class(**_snake(page)))
            except Exception as exc:  # the SDK raises its own exception classes with code and message
                self.module.fail_json(msg="Alibaba Cloud %s failed: %s" % (action, getattr(exc, "message", None) or exc),
                                      code=getattr(exc, "code", None), requests=self.requests)
            body = response.body.to_map() if response is not None and response.body is not None else {}
            bodies.append(body)
            token = body.get("NextToken")
            if not token:
                break
        return bodies


def _snake(params):
    names = {"RegionId": "region_id", "VpcId": "vpc_id", "InstanceIds": "instance_ids", "SecurityGroupId": "security_group_id",
             "MaxResults": "max_results", "NextToken": "next_token", "Direction": "direction"}
    return {names[k]: v for k, v in params.items()}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            region_id=dict(type="str", required=True),
            vpc_id=dict(type="str"),
            instance_ids=dict(type="list", elements="str", default=[]),
            security_group_ids=dict(type="list", elements="str", default=[]),
            access_key_id=dict(type="str", no_log=True, fallback=(env_fallback, ["ALIBABA_CLOUD_ACCESS_KEY_ID"])),
            access_key_secret=dict(type="str", no_log=True, fallback=(env_fallback, ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"])),
            security_token=dict(type="str", no_log=True, fallback=(env_fallback, ["ALIBABA_CLOUD_SECURITY_TOKEN"])),
            endpoint=dict(type="str"),
            protocol=dict(type="str", choices=["https", "http"], default="https"),
            timeout=dict(type="int", default=20),
        ),
        required_one_of=[["vpc_id", "instance_ids", "security_group_ids"]],
        supports_check_mode=True,
    )
    if not HAS_SDK:
        module.fail_json(msg=missing_required_lib("alibabacloud_ecs20140526"), exception=SDK_IMPORT_ERROR)
    p = module.params
    if len(p["instance_ids"]) > 100:
        module.fail_json(msg="instance_ids: at most 100 instances per call, got %d; use vpc_id to read all instances of the VPC" % len(p["instance_ids"]))
    if not p["access_key_id"] or not p["access_key_secret"]:
        module.fail_json(msg="no Alibaba Cloud credentials: set access_key_id and access_key_secret "
                             "(or ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET)")
    config = openapi_models.Config(access_key_id=p["access_key_id"], access_key_secret=p["access_key_secret"],
                                   security_token=p["security_token"], region_id=p["region_id"], protocol=p["protocol"],
                                   connect_timeout=p["timeout"] * 1000, read_timeout=p["timeout"] * 1000)
    if p["endpoint"]:
        config.endpoint = p["endpoint"]
    api = ApiCaller(module, EcsClient(config))
    region = p["region_id"]

    group_ids, group_types, instances = list(p["security_group_ids"]), {}, []
    if p["vpc_id"]:
        for body in api.call("DescribeSecurityGroups", "describe_security_groups", ecs_models.DescribeSecurityGroupsRequest,
                             RegionId=region, VpcId=p["vpc_id"], MaxResults=100):
            for group in (body.get("SecurityGroups") or {}).get("SecurityGroup") or []:
                group_types[group["SecurityGroupId"]] = group.get("SecurityGroupType") or "normal"
                group_ids.append(group["SecurityGroupId"])
    if p["vpc_id"] or p["instance_ids"]:
        params = {"RegionId": region, "MaxResults": 100}
        if p["instance_ids"]:
            params["InstanceIds"] = json.dumps(p["instance_ids"])
        else:
            params["VpcId"] = p["vpc_id"]
        for body in api.call("DescribeInstances", "describe_instances", ecs_models.DescribeInstancesRequest, **params):
            instances.extend((body.get("Instances") or {}).get("Instance") or [])
        for instance in instances:
            group_ids.extend((instance.get("SecurityGroupIds") or {}).get("SecurityGroupId") or [])

    groups = []
    for gid in sorted(set(group_ids)):
        bodies = api.call("DescribeSecurityGroupAttribute", "describe_security_group_attribute",
                          ecs_models.DescribeSecurityGroupAttributeRequest, RegionId=region, SecurityGroupId=gid, MaxResults=1000)
        merged = dict(bodies[0])
        merged.pop("NextToken", None)
        merged["Permissions"] = {"Permission": [perm for body in bodies for perm in (body.get("Permissions") or {}).get("Permission") or []]}
        groups.append(merged)
    module.exit_json(changed=False, security_groups=groups, group_types=group_types, instances=instances, requests=api.requests)


if __name__ == "__main__":
    main()
