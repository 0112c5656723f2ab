# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""iptables_facts on a real netfilter ruleset, through ansible, inside a network namespace.

The test makes a namespace, loads a kube-proxy-style ruleset with the real iptables-restore
(KUBE-SERVICES -> KUBE-SVC -> two KUBE-SEP DNAT chains for 10.96.0.10:53 UDP and TCP, the NodeLocal
DNSCache NOTRACK/ACCEPT rules for 169.254.20.10 and a FORWARD DROP covering UDP 53), and runs
``ansible localhost -m clusterdns.doctor.iptables_facts`` with a wrapper interpreter that enters the
namespace (``exec ip netns exec NS python3 "$@"``). The returned facts go through the finding engine.
A dnsmasq in the namespace stands in for node-cache, to check NLD001 both ways. The namespace and
the dnsmasq process are removed in every case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from conftest import ANSIBLE_BIN, COLLECTION, FIXTURES
from testbed.bed import remove

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and iptables"),
    pytest.mark.skipif(not shutil.which("iptables-restore"), reason="iptables is not installed (apt-get install iptables)"),
]

RULESET = FIXTURES / "iptables" / "netns-kubeproxy-input.rules"
NODELOCAL = "169.254.20.10"


def sh(*argv, netns=None, timeout=30):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [str(a) for a in argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


@pytest.fixture
def node(tmp_path):
    name = "cdipt-" + uuid.uuid4().hex[:8]
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "set", "lo", "up", netns=name)
        sh("ip", "addr", "add", NODELOCAL + "/32", "dev", "lo", netns=name)
        with RULESET.open() as rules:
            subprocess.run(["ip", "netns", "exec", name, "iptables-restore"], stdin=rules, check=True, timeout=30, capture_output=True)
        wrapper = tmp_path / "python3"
        wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (name, sys.executable))
        wrapper.chmod(0o755)
        yield name, wrapper
    finally:
        remove([name])  # kills what still runs inside; fails naming the namespace if it stays


def gather(wrapper, tmp_path):
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=%s" % wrapper,
           "-m", "clusterdns.doctor.iptables_facts", "-a", '{"cluster_ip": ["10.96.0.10"]}']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result["ansible_facts"]["clusterdns_iptables"]


def test_kube_proxy_ruleset_in_netns(node, tmp_path):
    name, wrapper = node
    facts = gather(wrapper, tmp_path)

    assert facts["available"] is True and facts["backend"] in ("nft", "legacy")
    assert facts["kube_proxy"] == {"present": True, "mode": "iptables"}
    assert facts["rule_count"]["ipv4"] == {"raw": 4, "nat": 24, "filter": 6}
    services = {(s["protocol"], s["cluster_ip"], s["port"]): s for s in facts["services"]}
    assert set(services) == {("udp", "10.96.0.10", 53), ("tcp", "10.96.0.10", 53)}
    udp = services[("udp", "10.96.0.10", 53)]
    assert udp["chain"] == "KUBE-SVC-TCOU7JCQXEZGVUNU"
    assert [(e["ip"], e["port"], e["probability"], e["share"]) for e in udp["endpoints"]] == [
        ("10.244.0.2", 53, 0.5, 0.5), ("10.244.0.3", 53, None, 0.5)]

    assert facts["nodelocal"]["present"] is True
    assert facts["nodelocal"]["addresses"] == [NODELOCAL]
    assert [(r["chain"], r["position"]) for r in facts["nodelocal"]["notrack"]] == [("PREROUTING", 1), ("PREROUTING", 2), ("OUTPUT", 1)]

    (block,) = facts["dns_blocks"]
    assert (block["table"], block["chain"], block["position"], block["target"]) == ("filter", "FORWARD", 2, "DROP")
    assert block["rule"] == "-A FORWARD -i cni0 -p udp -m multiport --dports 1:1024 -j DROP"

    result = _findings.evaluate({"node1": {"clusterdns_iptables": facts}})
    found = {f["id"]: f for f in result["findings"]}
    assert found["IPT002"]["evidence"]["position"] == 2 and found["IPT002"]["severity"] == "error"
    assert "IPT001" not in found
    # nothing listens on 169.254.20.10 in the namespace yet: the NOTRACK rules lead to a black hole
    assert found["NLD001"]["evidence"]["address"] == NODELOCAL


@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)")
def test_nodelocal_listener_clears_nld001(node, tmp_path):
    name, wrapper = node
    server = subprocess.Popen(["ip", "netns", "exec", name, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                               "--listen-address=" + NODELOCAL, "--bind-interfaces", "--port=53", "--pid-file=", "--user=root"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _attempt in range(50):  # bounded: at most 5 s for dnsmasq to bind
            if "%s:53" % NODELOCAL in sh("ss", "-lnu", netns=name).stdout:
                break
            try:
                server.wait(timeout=0.1)
                pytest.fail("dnsmasq exited: %s" % server.stderr.read().decode())
            except subprocess.TimeoutExpired:
                pass
        facts = gather(wrapper, tmp_path)
        assert [(s["protocol"], s["address"], s["processes"][0]["name"]) for s in facts["listeners"]["sockets"]] == [
            ("udp", NODELOCAL, "dnsmasq"), ("tcp", NODELOCAL, "dnsmasq")]
        checks = {c["id"]: c for c in _findings.evaluate({"node1": {"clusterdns_iptables": facts}})["checks"]}
        assert checks["NLD001"]["status"] == "pass"
        assert checks["IPT002"]["status"] == "fail"
    finally:
        server.kill()
        server.wait(timeout=10)
