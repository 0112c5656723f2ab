# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The security_groups role (SG001) against moto's EC2 server on loopback.

A VPC whose node security group lets TCP 53 but not UDP 53 in from the pod range: the role's facts
tasks (amazon.aws ec2_instance_info, ec2_security_group_info, ec2_vpc_nacl_info, ec2_vpc_subnet_info
through the cloud interpreter) and dns_findings report SG001 naming the group; --check adds nothing;
the role adds the rule (amazon.aws.ec2_security_group, purge_rules false) after saving the group's
rules; SG001 is gone and a second run changes nothing. A failing verification restores the saved
rules exactly; a network ACL that drops the UDP replies to the pods' ephemeral ports is only
reported unless security_groups_manage_nacl is true. The dummy credentials never reach the output.

Alibaba Cloud: clusterdns.doctor.alibaba_security_group_info calls the official ECS SDK against a
loopback HTTP server that answers with the API responses of tests/unit/fixtures/cloud/alibaba
(written to the API reference, see SOURCES.md); the role reports SG001 and the AuthorizeSecurityGroup
calls and changes nothing (a recorded response cannot prove a write).

The amazon.aws modules need boto3/botocore, which cannot share the main venv with kubernetes 37
(python-dateutil): they run in .cache/venv-cloud (tests/integration/requirements-cloud.txt), made
here when it is missing; moto's server comes from the same venv.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from conftest import ANSIBLE_BIN, COLLECTION

CLOUD_VENV = pathlib.Path(os.environ.get("CLUSTERDNS_CLOUD_VENV", str(COLLECTION / ".cache" / "venv-cloud")))
REQUIREMENTS = COLLECTION / "tests" / "integration" / "requirements-cloud.txt"
KEY_ID = "AKIACLUSTERDNSTEST01"
SECRET = "clusterdnsDummySecret0123456789abcdefWXYZ"
REGION = "us-east-1"
POD_RANGE = "10.0.128.0/17"

WORLD = r"""
import json, sys
import boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
nodes = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
pods = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.128.0/17")["Subnet"]["SubnetId"]
sg = ec2.create_security_group(GroupName="eks-nodes", Description="cluster nodes", VpcId=vpc)["GroupId"]
ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
    {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": sg, "Description": "node to node"}]},
    {"IpProtocol": "tcp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.128.0/17", "Description": "DNS from pods (TCP only)"}]},
    {"IpProtocol": "tcp", "FromPort": 10250, "ToPort": 10250, "Ipv6Ranges": [{"CidrIpv6": "2600:1f18:abc::/56"}]},
])
ids = []
for ip in ("10.0.1.10", "10.0.1.11"):
    ids += [i["InstanceId"] for i in ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.medium",
                                                        SubnetId=nodes, PrivateIpAddress=ip, SecurityGroupIds=[sg])["Instances"]]
eni = ec2.describe_instances(InstanceIds=[ids[1]])["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=["10.0.1.200"])  # the CoreDNS pod (VPC CNI)
acl = ec2.create_network_acl(VpcId=vpc)["NetworkAcl"]["NetworkAclId"]
for number, egress, proto, lo, hi in ((100, False, "6", 0, 65535), (100, True, "-1", None, None)):
    entry = dict(NetworkAclId=acl, RuleNumber=number, Protocol=proto, RuleAction="allow", Egress=egress, CidrBlock="0.0.0.0/0")
    if lo is not None:
        entry["PortRange"] = {"From": lo, "To": hi}
    ec2.create_network_acl_entry(**entry)
assoc = [a for n in ec2.describe_network_acls(Filters=[{"Name": "association.subnet-id", "Values": [pods]}])["NetworkAcls"]
         for a in n["Associations"] if a["SubnetId"] == pods][0]["NetworkAclAssociationId"]
ec2.replace_network_acl_association(AssociationId=assoc, NetworkAclId=acl)
print(json.dumps({"vpc": vpc, "sg": sg, "nodes": nodes, "pods": pods, "acl": acl, "instances": ids}))
"""

DESCRIBE = r"""
import json, sys
import boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1")
group = ec2.describe_security_groups(GroupIds=[sys.argv[2]])["SecurityGroups"][0]
acl = ec2.describe_network_acls(NetworkAclIds=[sys.argv[3]])["NetworkAcls"][0]
print(json.dumps({"ingress": group["IpPermissions"], "egress": group["IpPermissionsEgress"], "acl": acl["Entries"]}, default=str))
"""

PLAY = """---
- name: Security groups against moto
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Assess (read-only, as diagnose does)
      when: mode == 'facts'
      block:
        - name: Read and evaluate the security groups
          ansible.builtin.include_role:
            name: clusterdns.doctor.security_groups
            tasks_from: facts
        - name: Save the evaluation and the findings
          ansible.builtin.copy:
            content: >-
              {{ {'evaluation': security_groups_evaluation,
                  'findings': {} | clusterdns.doctor.dns_findings(cluster={'available': true, 'security_groups': security_groups_evaluation})}
                 | to_json }}
            dest: "{{ out }}"
            mode: "0644"
          check_mode: false
          changed_when: false

    - name: Remediate
      when: mode == 'remediate'
      block:
        - name: Run the role
          ansible.builtin.import_role:
            name: clusterdns.doctor.security_groups
      always:
        - name: Save the result
          ansible.builtin.copy:
            content: "{{ clusterdns_remediate_result_security_groups | default(none) | to_json }}"
            dest: "{{ out }}"
            mode: "0644"
          check_mode: false
          changed_when: false  # the test's output file, not a change of the role
"""


# moto 5.2.5 does not implement the "network-acl-id" filter of DescribeNetworkAcls, which
# amazon.aws.ec2_vpc_nacl uses to find the ACL it changes; the launcher adds exactly that filter (the
# ACL's own id) and starts moto's server unchanged otherwise.
MOTO_LAUNCHER = r"""
import sys
from moto.ec2.models.network_acls import NetworkAcl
from moto.server import main

_filter = NetworkAcl.get_filter_value


def get_filter_value(self, filter_name):
    return self.id if filter_name == "network-acl-id" else _filter(self, filter_name)


NetworkAcl.get_filter_value = get_filter_value
main(sys.argv[1:])
"""


def _cloud_python():
    python = CLOUD_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CLOUD_VENV)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True, timeout=900)
    return python


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cloud_python():
    return _cloud_python()


@pytest.fixture(scope="module")
def moto(cloud_python):
    port = _free_port()
    log = open(os.devnull, "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([str(cloud_python), "-c", MOTO_LAUNCHER, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("moto_server did not start on %s" % url) from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _env():
    env = dict(os.environ)
    env.update({"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": REGION,
                "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections"))})
    return env


def _boto(cloud_python, script, *args):
    env = _env()
    proc = subprocess.run([str(cloud_python), "-c", script, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture
def world(moto, cloud_python):
    """A fresh VPC per test (moto keeps state for the server's life; VPCs do not mix)."""
    return dict(_boto(cloud_python, WORLD, moto), url=moto)


def describe(cloud_python, world):
    return _boto(cloud_python, DESCRIBE, world["url"], world["sg"], world["acl"])


def run(tmp_path, cloud_python, world, mode, *args, **variables):
    out = tmp_path / ("%s.json" % mode)
    if out.exists():
        out.unlink()
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    inventory = tmp_path / "inventory.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": host}}}))
    extra = {"mode": mode, "out": str(out), "security_groups_python": str(cloud_python), "security_groups_region": REGION,
             "security_groups_endpoint_url": world["url"], "security_groups_vpc_id": world["vpc"],
             "security_groups_dns_servers": [{"name": "kube-system/coredns-5d78c9869d-7xk2p", "address": "10.0.1.200"}],
             "security_groups_clients": [{"name": "pods", "cidrs": [POD_RANGE], "subnet": world["pods"]}],
             "security_groups_backup_dir": str(tmp_path / "backups"),
             "security_groups_access_key": KEY_ID, "security_groups_secret_key": SECRET}
    extra.update(variables)
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(json.dumps(extra))
    env = _env()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the role passes them from its variables
        env.pop(key)
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-v", "-i", str(inventory), str(play), "-e", "@%s" % extra_file, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    (tmp_path / ("%s-%d.log" % (mode, time.monotonic_ns()))).write_text(proc.stdout + proc.stderr)
    assert SECRET not in proc.stdout + proc.stderr, "the secret key was printed"
    assert KEY_ID not in proc.stdout + proc.stderr, "the access key id was printed"
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def recap(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    raise AssertionError("no PLAY RECAP in:\n" + proc.stdout[-3000:] + proc.stderr[-2000:])


def udp53_from_pods(state):
    return [p for p in state["ingress"] if p["IpProtocol"] == "udp" and p.get("FromPort") == 53
            and any(r["CidrIp"] == POD_RANGE for r in p.get("IpRanges", []))]


def sg001(result):
    return [f for f in result["findings"] if f["id"] == "SG001"]


def test_sg001_found_fixed_and_gone_check_mode_and_rerun_change_nothing(tmp_path, cloud_python, world):
    proc, facts = run(tmp_path, cloud_python, world, "facts")
    assert proc.returncode == 0, proc.stdout[-4000:]
    found = sg001(facts)
    sg = [f for f in found if f["evidence"]["check"] == "sg_ingress"]
    assert len(sg) == 1, found
    assert (sg[0]["object"], sg[0]["evidence"]["protocols"], sg[0]["evidence"]["clients"]) == (world["sg"], ["UDP"], ["pods"])
    assert "10.0.128.0/17 port 53" in sg[0]["detail"]
    servers = facts["evaluation"]["servers"]
    assert servers[0]["groups"] == [world["sg"]] and servers[0]["instance"] == world["instances"][1]
    before = describe(cloud_python, world)
    assert udp53_from_pods(before) == []

    proc, result = run(tmp_path, cloud_python, world, "remediate", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "add inbound UDP 53 from %s" % POD_RANGE in proc.stdout
    assert describe(cloud_python, world) == before, "--check changed the group"

    proc, result = run(tmp_path, cloud_python, world, "remediate")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["changed"] is True
    assert result["actions"] == ["%s (eks-nodes): add inbound UDP 53 from %s" % (world["sg"], POD_RANGE)]
    after = describe(cloud_python, world)
    added = udp53_from_pods(after)
    assert len(added) == 1 and added[0]["IpRanges"][0]["Description"] == "clusterdns.doctor: DNS (SG001)"
    # nothing else changed: the old rules are all still there
    assert all(p in after["ingress"] for p in before["ingress"]) and after["egress"] == before["egress"]
    backup = json.loads(pathlib.Path(result["backups"][0]).read_text())
    assert backup["group_id"] == world["sg"] and len(backup["ip_permissions"]) == len(before["ingress"])
    assert oct(pathlib.Path(result["backups"][0]).stat().st_mode & 0o777) == "0o600"

    proc, facts = run(tmp_path, cloud_python, world, "facts")
    assert [f for f in sg001(facts) if f["evidence"]["check"] == "sg_ingress"] == []

    proc, result = run(tmp_path, cloud_python, world, "remediate")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert recap(proc)["changed"] == 0 and result["changed"] is False
    assert describe(cloud_python, world) == after


def test_network_acl_dropping_the_udp_replies_is_reported_then_fixed_with_manage_nacl(tmp_path, cloud_python, world):
    proc, facts = run(tmp_path, cloud_python, world, "facts")
    nacl = [f for f in sg001(facts) if f["evidence"]["check"].startswith("nacl")]
    assert [(f["object"], f["evidence"]["check"], f["evidence"]["protocols"]) for f in nacl] == [
        ("default deny (no rule matches)", "nacl_client_inbound_reply", ["UDP"])]
    assert nacl[0]["fix"]["variables"]["security_groups_manage_nacl"] is True

    proc, result = run(tmp_path, cloud_python, world, "remediate")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert any("network ACL %s ingress rule 101 allow udp 10.0.1.0/24 port 32768-60999 (not applied" % world["acl"] in r for r in result["reported"])
    entries = describe(cloud_python, world)["acl"]
    assert not [e for e in entries if e["Protocol"] == "17"]

    proc, result = run(tmp_path, cloud_python, world, "remediate", security_groups_manage_nacl=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["changed"] is True
    entries = describe(cloud_python, world)["acl"]
    assert [(e["RuleNumber"], e["Egress"], e["RuleAction"], e["CidrBlock"], e["PortRange"]) for e in entries if e["Protocol"] == "17"] == [
        (101, False, "allow", "10.0.1.0/24", {"From": 32768, "To": 60999})]
    assert {(e["RuleNumber"], e["Egress"]) for e in entries} >= {(100, False), (100, True), (101, False)}  # the old entries stay
    proc, facts = run(tmp_path, cloud_python, world, "facts")
    assert sg001(facts) == []
    proc, result = run(tmp_path, cloud_python, world, "remediate", security_groups_manage_nacl=True)
    assert recap(proc)["changed"] == 0


def test_failed_verification_restores_the_saved_rules_exactly(tmp_path, cloud_python, world):
    before = describe(cloud_python, world)
    proc, result = run(tmp_path, cloud_python, world, "remediate", security_groups_verify_command=["false"])
    assert proc.returncode != 0
    assert "failed verification and was undone" in proc.stdout
    assert result["changed"] is False and result["skipped_reason"].startswith("verification failed")
    after = describe(cloud_python, world)
    key = json.dumps  # order-insensitive comparison of the permission lists
    assert sorted(map(key, after["ingress"])) == sorted(map(key, before["ingress"]))
    assert sorted(map(key, after["egress"])) == sorted(map(key, before["egress"]))


def test_unreachable_api_is_reported_not_a_crash_and_nothing_changes(tmp_path, cloud_python, world):
    dead = "http://127.0.0.1:%d" % _free_port()
    proc, facts = run(tmp_path, cloud_python, dict(world, url=dead), "facts")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert facts["evaluation"]["available"] is False and facts["evaluation"]["reason"].startswith("AWS API: ")
    proc, result = run(tmp_path, cloud_python, dict(world, url=dead), "remediate")
    assert proc.returncode != 0 and "Nothing was changed: AWS API: " in proc.stdout


# --- Alibaba Cloud --------------------------------------------------------------------------------

ALIBABA = COLLECTION / "tests" / "unit" / "fixtures" / "cloud" / "alibaba"


class _EcsApi(http.server.BaseHTTPRequestHandler):
    requests = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        params.update(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        # the SDK signs with ACS3-HMAC-SHA256: the action is a header, the parameters the query
        params.setdefault("Action", self.headers.get("x-acs-action", ""))
        params["Authorization"] = self.headers.get("Authorization", "")
        type(self).requests.append(params)
        name = params.get("Action", "")
        if name == "DescribeSecurityGroupAttribute":
            name += "-" + params.get("SecurityGroupId", "")
        path = ALIBABA / ("%s.json" % name)
        body = path.read_bytes() if path.exists() else json.dumps({"Code": "InvalidAction.NotFound", "Message": name}).encode()
        self.send_response(200 if path.exists() else 404)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def ecs_api():
    _EcsApi.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EcsApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_alibaba(tmp_path, cloud_python, endpoint, mode):
    world = {"url": endpoint, "vpc": "vpc-bp1opxu1zkhn00gzv7x1", "pods": None}
    return run(tmp_path, cloud_python, world, mode, security_groups_provider="alibaba", security_groups_region="cn-hangzhou",
               security_groups_dns_servers=[{"name": "kube-system/coredns-7b4d", "address": "172.20.1.5", "node": "cn-hangzhou.192.168.0.22"}],
               security_groups_clients=[{"name": "pods", "cidrs": ["172.20.0.0/16"]}], security_groups_dns_server_cidrs=["172.20.0.0/16"])


def test_alibaba_groups_read_through_the_sdk_sg001_and_the_calls_reported_not_applied(tmp_path, cloud_python, ecs_api):
    proc, facts = run_alibaba(tmp_path, cloud_python, ecs_api, "facts")
    assert proc.returncode == 0, proc.stdout[-4000:]
    actions = [r["Action"] for r in _EcsApi.requests]
    assert actions == ["DescribeSecurityGroups", "DescribeInstances", "DescribeSecurityGroupAttribute", "DescribeSecurityGroupAttribute"]
    assert {r.get("RegionId") for r in _EcsApi.requests} == {"cn-hangzhou"}
    assert all(r["Authorization"].startswith("ACS3-HMAC-SHA256 Credential=") for r in _EcsApi.requests)  # signed by the SDK
    found = {(f["object"], f["evidence"]["check"], tuple(f["evidence"]["protocols"])) for f in sg001(facts)}
    assert found == {("sg-bp1fg655nh68xyz9i1a1 sgr-bp12kewq32dfwrdi1a04", "sg_ingress", ("UDP",)),
                     ("sg-bp1c2vvdvmtvh0vku9a2", "sg_egress", ("UDP",))}

    proc, result = run_alibaba(tmp_path, cloud_python, ecs_api, "remediate")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["changed"] is False and result["actions"] == []
    assert result["skipped_reason"].startswith("Alibaba Cloud: the missing rules are reported")
    assert [r for r in _EcsApi.requests if not r["Action"].startswith("Describe")] == []  # nothing written
    assert ("aliyun ecs AuthorizeSecurityGroup --RegionId cn-hangzhou --SecurityGroupId sg-bp1fg655nh68xyz9i1a1 --Permissions.1.Description "
            "'clusterdns.doctor: DNS (SG001)' --Permissions.1.IpProtocol UDP --Permissions.1.Policy accept --Permissions.1.PortRange 53/53 "
            "--Permissions.1.Priority 1 --Permissions.1.SourceCidrIp 172.20.0.0/16") in result["reported"]
    assert any(c["action"] == "AuthorizeSecurityGroupEgress" and c["permissions"][0]["DestCidrIp"] == "172.20.0.0/16" for c in result["alibaba_calls"])
