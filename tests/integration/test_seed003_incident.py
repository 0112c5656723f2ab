# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seed 003 reproduced with a real dnsmasq: ``except-interface=cilium_*`` drops pod DNS.

Node test bed (tests/testbed/bed.py): a node namespace with the DNS VIP 169.254.25.10 on lo and a
real dnsmasq, a pod namespace joined by a veth whose node side is ``cilium_host``. With the
incident's exclusion, dig from the pod to the VIP times out while the node's own query answers and
ping from the pod to the VIP works (the kernel answers ICMP; dnsmasq filters by ingress interface).
dnsmasq_facts runs through ansible inside the node namespace, the finding engine reports DMQ001
naming cilium_host and the configuration line; after the fix and a restart the pod gets its
answer and DMQ001 passes. A bundle saved from the broken node gives the same findings offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ANSIBLE_BIN, COLLECTION
from testbed.bed import ZONE_ANSWER, run

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings
from ansible_collections.clusterdns.doctor.plugins.module_utils import _rules_dnsmasq

# Importing the rule module registers DMQ001/DMQ002 (until _findings.RULE_MODULES lists it).
DMQ_RULES = (_rules_dnsmasq.pod_interface_ignored, _rules_dnsmasq.not_listening)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
    pytest.mark.skipif(not shutil.which("dig"), reason="dig is not installed (apt-get install bind9-dnsutils)"),
]

MAIN_CONF = "# node DNS VIP for pods and the node (seed 003)\nbind-dynamic\nconf-dir={dir},*.conf\n"
EXCLUDE_CONF = "# keep dnsmasq off the CNI interfaces\nexcept-interface=cilium_*\nexcept-interface=vxlan*\n"
FIXED_CONF = "# keep dnsmasq off the CNI interfaces\nexcept-interface=vxlan*\n"


def write_incident(bed, exclude=EXCLUDE_CONF):
    confdir = os.path.join(bed.dir, "dnsmasq.d")
    bed.write_conf(exclude, "dnsmasq.d/10-cni.conf")
    bed.write_conf("except-interface=cilium_*\n", "dnsmasq.d/10-cni.conf.dpkg-old")  # not read: no .conf suffix
    return MAIN_CONF.format(dir=confdir), os.path.join(confdir, "10-cni.conf")


def wrapper_for(bed, tmp_path):
    wrapper = tmp_path / "python3"
    wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (bed.node, sys.executable))
    wrapper.chmod(0o755)
    return wrapper


def facts_module(tmp_path, interpreter, name, key):
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % interpreter, "-m", "clusterdns.doctor.%s" % name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["ansible_facts"][key]


def dnsmasq_facts(tmp_path, interpreter=None, args=None):
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % (interpreter or sys.executable),
           "-m", "clusterdns.doctor.dnsmasq_facts"] + (["-a", json.dumps(args)] if args else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["ansible_facts"]["clusterdns_dnsmasq"]


def dmq(facts):
    result = _findings.evaluate({"node1": {"clusterdns_dnsmasq": facts}})
    findings = [f for f in result["findings"] if f["id"].startswith("DMQ")]
    checks = {c["id"]: c["status"] for c in result["checks"] if c["id"].startswith("DMQ")}
    return findings, checks


def save_bundle(bed, root, config_files):
    """What the collect playbook saves for dnsmasq_facts, taken from the live node namespace."""
    commands = root / "commands"
    commands.mkdir(parents=True)
    with open("/proc/%d/cmdline" % bed.dnsmasq.pid, encoding="utf-8") as handle:
        cmdline = handle.read().rstrip("\0").split("\0")
    (commands / "dnsmasq-cmdline.txt").write_text("%d %s\n" % (bed.dnsmasq.pid, " ".join(cmdline)))
    (commands / "ip-addr.txt").write_text(run(["ip", "-j", "addr"], netns=bed.node).stdout)
    (commands / "ss-lnup.txt").write_text(run(["ss", "-lnup"], netns=bed.node).stdout)
    (commands / "ss-lntp.txt").write_text(run(["ss", "-lntp"], netns=bed.node).stdout)
    for path in config_files:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def test_incident_detected_fixed_and_replayed_from_bundle(node_bed, tmp_path):
    bed = node_bed
    main, exclude_file = write_incident(bed)
    bed.start_dnsmasq(main)

    # the incident's symptoms
    assert bed.dig(bed.node) == [ZONE_ANSWER], "the node's own query must answer"
    assert bed.dig(bed.pod) is None, "the pod's query to the VIP must time out"
    if shutil.which("ping"):
        assert bed.ping(bed.pod), "ICMP from the pod to the VIP works: the kernel answers, dnsmasq filters"

    wrapper = wrapper_for(bed, tmp_path)
    facts = dnsmasq_facts(tmp_path, wrapper)
    (instance,) = facts["instances"]
    assert instance["pid"] == bed.dnsmasq.pid
    assert instance["config"]["mode"]["value"] == "bind-dynamic"
    assert [e["origin"] for e in instance["config"]["except_interface"]] == [exclude_file + ":2", exclude_file + ":3"]
    assert instance["config"]["files"] == [bed.conf_path, exclude_file]
    assert instance["ignored_pod_interfaces"] == ["cilium_host"]

    findings, checks = dmq(facts)
    assert [f["id"] for f in findings] == ["DMQ001"]
    evidence = findings[0]["evidence"]
    assert evidence["interface"] == "cilium_host"
    assert evidence["addresses"][0] == bed.node_ip + "/24"  # then its fe80:: link-local address
    assert evidence["config_line"] == "%s:2: except-interface=cilium_*" % exclude_file
    assert evidence["pid"] == bed.dnsmasq.pid
    assert findings[0]["severity"] == "critical" and checks["DMQ002"] == "pass"

    # the same node, saved as a bundle and diagnosed offline
    bundle = tmp_path / "bundle"
    save_bundle(bed, bundle, [bed.conf_path, exclude_file])
    offline = dnsmasq_facts(tmp_path, args={"root": str(bundle)})
    offline_findings, offline_checks = dmq(offline)
    assert offline_findings == findings and offline_checks == checks

    # the fix of the incident: drop the cilium_* exclusion, restart dnsmasq
    bed.write_conf(FIXED_CONF, "dnsmasq.d/10-cni.conf")
    bed.restart_dnsmasq(main)
    assert bed.dig(bed.pod) == [ZONE_ANSWER]
    findings, checks = dmq(dnsmasq_facts(tmp_path, wrapper))
    assert findings == [] and checks == {"DMQ001": "pass", "DMQ002": "pass"}


@pytest.mark.parametrize("node_bed", ["lxc12ab34cd", "cni0", "cali1a2b3c4d5e"], indirect=True)
def test_drop_rule_on_the_pod_path_gives_ipt002(node_bed, tmp_path):
    """The other way pod DNS dies on a node: a firewall rule. dnsmasq serves the pod interface, but an
    INPUT DROP for UDP 53 from the pod interface makes the pod's query time out; IPT002 names it."""
    node_bed.start_dnsmasq("bind-dynamic\n")
    assert node_bed.dig(node_bed.pod) == [ZONE_ANSWER]
    node_bed.add_drop("udp")
    assert node_bed.dig(node_bed.pod) is None
    assert node_bed.dig(node_bed.pod, tcp=True) == [ZONE_ANSWER]  # only UDP is dropped
    wrapper = wrapper_for(node_bed, tmp_path)
    facts = {"clusterdns_iptables": facts_module(tmp_path, wrapper, "iptables_facts", "clusterdns_iptables"),
             "clusterdns_dnsmasq": dnsmasq_facts(tmp_path, wrapper)}
    result = _findings.evaluate({"node1": facts})
    (ipt002,) = [f for f in result["findings"] if f["id"] == "IPT002"]
    assert (ipt002["evidence"]["table"], ipt002["evidence"]["chain"], ipt002["evidence"]["position"]) == ("filter", "INPUT", 1)
    assert "-i %s " % node_bed.pod_if in ipt002["evidence"]["rule"] and "DROP" in ipt002["evidence"]["rule"]
    assert not [f for f in result["findings"] if f["id"].startswith("DMQ")]


def test_healthy_node_has_no_dmq_finding(node_bed, tmp_path):
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=eth9\n")
    assert node_bed.dig(node_bed.pod) == [ZONE_ANSWER]
    facts = dnsmasq_facts(tmp_path, wrapper_for(node_bed, tmp_path))
    assert facts["instances"][0]["ignored_pod_interfaces"] == []
    verdicts = {i["name"]: i for i in facts["instances"][0]["interfaces"]}
    assert verdicts[node_bed.pod_if]["pod_facing"] and verdicts[node_bed.pod_if]["served"]
    assert dmq(facts) == ([], {"DMQ001": "pass", "DMQ002": "pass"})


@pytest.mark.parametrize("node_bed", ["cni0"], indirect=True)
def test_interface_list_without_the_bridge(node_bed, tmp_path):
    """interface=lo only (a node-local cache): the pod's query arriving on cni0 is ignored."""
    node_bed.start_dnsmasq("interface=lo\n")
    assert node_bed.dig(node_bed.node) == [ZONE_ANSWER]
    assert node_bed.dig(node_bed.pod) is None
    findings, _checks = dmq(dnsmasq_facts(tmp_path, wrapper_for(node_bed, tmp_path)))
    assert [(f["id"], f["evidence"]["interface"], f["evidence"]["config_line"]) for f in findings] == [
        ("DMQ001", "cni0", "%s:1: interface=lo" % node_bed.conf_path)]


def test_listen_address_without_socket(node_bed, tmp_path):
    """bind-dynamic with a listen-address that no interface has yet: DMQ002 until the address exists."""
    missing = "169.254.25.11"
    node_bed.start_dnsmasq("bind-dynamic\nlisten-address=%s\nlisten-address=%s\n" % (node_bed.vip, missing), wait_for=node_bed.vip)
    wrapper = wrapper_for(node_bed, tmp_path)
    findings, checks = dmq(dnsmasq_facts(tmp_path, wrapper))
    assert [(f["id"], f["evidence"]["address"], f["evidence"]["config_line"]) for f in findings] == [
        ("DMQ002", missing, node_bed.conf_path + ":3")]
    assert checks["DMQ001"] == "pass"

    run(["ip", "addr", "add", missing + "/32", "dev", "lo"], netns=node_bed.node)
    for _attempt in range(50):  # bounded: bind-dynamic binds new addresses within a few seconds
        if "%s:53 " % missing in run(["ss", "-lnup"], netns=node_bed.node).stdout:
            break
        run(["sleep", "0.1"])
    assert node_bed.dig(node_bed.pod, missing) == [ZONE_ANSWER]
    assert dmq(dnsmasq_facts(tmp_path, wrapper)) == ([], {"DMQ001": "pass", "DMQ002": "pass"})
