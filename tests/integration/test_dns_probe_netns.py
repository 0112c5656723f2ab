# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dns_probe against a real dnsmasq on the node test bed (tests/testbed/bed.py).

The module runs as a process with its ``netns`` option: from the pod namespace (as a pod's probe
would) and from the node namespace (the node's own probe). Faults are real: an iptables DROP on
UDP 53, dnsmasq's ``except-interface=cilium_*`` of seed 003, no listener at all, a local zone
that answers NXDOMAIN, and kube-proxy style DNAT of a ClusterIP where conntrack and dnsmasq's
own log show what the parallel A/AAAA mode sends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import ANSIBLE_BIN, COLLECTION
from testbed.bed import run

from ansible_collections.clusterdns.doctor.plugins.module_utils import _rules_probe

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
]

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dns_probe"
COLLECTIONS = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")).split(":")[0]
NAME = "www.bed.test"
AAAA = "2001:db8::1"


def probe(tmp_path, **args):
    params = {"names": [NAME], "count": 5, "timeout": 0.5, "transports": ["udp", "tcp"]}
    params.update(args)
    argsfile = tmp_path / "probe-args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    environ = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run([sys.executable, "-m", MODULE, str(argsfile)], env=environ, capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, result
    return {item["transport"]: item for item in result["results"]}


def test_all_answered_from_the_pod_and_the_node(tmp_path, node_bed):
    node_bed.start_dnsmasq("")
    pod = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, hop="node-resolver", count=50, rate=0)
    node = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.node, count=5)
    for item in (pod["udp"], pod["tcp"], node["udp"], node["tcp"]):
        assert (item["classification"], item["lost"], item["timeouts"], item["errors"]) == ("ok", 0, 0, {}), item
        assert item["answers"] == {NAME + "./A": ["192.0.2.1"]}
    assert pod["udp"]["sent"] == pod["udp"]["answered"] == 50 and pod["udp"]["rcodes"] == {"NOERROR": 50}


def test_netns_given_as_a_process_namespace_path(tmp_path, node_bed):
    # how a pod is reached on a real node: the namespace of its sandbox process
    log = tmp_path / "dnsmasq.log"
    node_bed.start_dnsmasq("", args=["--log-queries=extra", "--log-facility=" + str(log)])
    holder = subprocess.Popen(["ip", "netns", "exec", node_bed.pod, "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        path = "/proc/%d/ns/net" % holder.pid
        while os.readlink(path) == os.readlink("/proc/self/ns/net") and time.monotonic() < deadline:
            time.sleep(0.05)  # until ip netns exec has switched and exec'd sleep
        result = probe(tmp_path, servers=[node_bed.vip], netns=path, transports=["udp"], count=3)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert result["udp"]["classification"] == "ok"
    # dnsmasq saw the pod's address and the probe's port: the probe really ran in the pod namespace
    time.sleep(0.2)
    assert "%s/%d query[A] %s" % (node_bed.pod_ip, result["udp"]["source_port"], NAME) in log.read_text()


def test_udp_drop_is_a_timeout_pointing_at_the_firewall_while_tcp_answers(tmp_path, node_bed):
    node_bed.start_dnsmasq("")
    node_bed.add_drop("udp")
    result = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, hop="node-resolver")
    udp, tcp = result["udp"], result["tcp"]
    assert (udp["classification"], udp["sent"], udp["answered"], udp["timeouts"], udp["loss_ratio"]) == ("timeout", 5, 0, 5, 1.0)
    assert "IPT002" in udp["next_hop"] and udp["latency_ms"]["max"] is None
    assert (tcp["classification"], tcp["answered"]) == ("ok", 5)


def test_seed003_except_interface_pod_times_out_while_the_node_answers(tmp_path, node_bed):
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=cilium_*\n")
    pod = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, transports=["udp"], hop="node-resolver")
    node = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.node, transports=["udp"], hop="node-resolver")
    assert (pod["udp"]["classification"], pod["udp"]["answered"]) == ("timeout", 0)
    assert "DMQ001" in pod["udp"]["next_hop"]
    assert (node["udp"]["classification"], node["udp"]["answered"]) == ("ok", 5)
    # the kernel still answers ICMP: the fault is dnsmasq's interface filter, not routing
    assert node_bed.ping(node_bed.pod)


def test_no_listener_is_unreachable_without_waiting_for_timeouts(tmp_path, node_bed):
    started = time.monotonic()
    result = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, timeout=5, hop="node-resolver")
    assert time.monotonic() - started < 5
    for item in result.values():
        assert (item["classification"], item["answered"], item["timeouts"]) == ("unreachable", 0, 0), item
        assert item["errors"] == {"unreachable": 5}
        assert "DMQ002" in item["next_hop"]


def test_nxdomain_from_a_local_zone(tmp_path, node_bed):
    node_bed.start_dnsmasq("", args=["--local=/nx.test/"])
    result = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, names=["missing.nx.test", NAME], count=4)
    for item in result.values():
        assert (item["classification"], item["rcodes"]) == ("nxdomain", {"NOERROR": 4, "NXDOMAIN": 4}), item


def test_parallel_a_aaaa_shares_one_source_port_through_the_clusterip_dnat(tmp_path, node_bed):
    log = tmp_path / "dnsmasq.log"
    node_bed.start_dnsmasq("", args=["--address=/bed.test/" + AAAA, "--log-queries=extra", "--log-facility=" + str(log)])
    node_bed.add_cluster_ip("10.96.0.10")
    result = probe(tmp_path, servers=["10.96.0.10"], netns=node_bed.pod, transports=["udp"], count=3, parallel_a_aaaa=True, hop="pod-clusterip")
    udp = result["udp"]
    assert (udp["classification"], udp["sent"], udp["answered"]) == ("ok", 6, 6)
    assert udp["answers"] == {NAME + "./A": ["192.0.2.1"], NAME + "./AAAA": [AAAA]}
    port = udp["source_port"]
    # dnsmasq saw A and AAAA alternately from the pod's one source port (after DNAT to the VIP)
    deadline = time.monotonic() + 5
    seen = []
    while time.monotonic() < deadline and len(seen) < 6:
        seen = re.findall(r"(\S+)/(\d+) query\[(A|AAAA)\] " + re.escape(NAME), log.read_text() if log.exists() else "")
        time.sleep(0.1)
    assert seen == [(node_bed.pod_ip, str(port), qtype) for qtype in ("A", "AAAA") * 3]
    # conntrack in the node namespace: one entry for the 5-tuple, DNATed to the VIP
    if shutil.which("conntrack"):
        entries = run(["conntrack", "-L", "-p", "udp", "--orig-dst", "10.96.0.10"], netns=node_bed.node).stdout.splitlines()
        assert len(entries) == 1, entries
        assert "src=%s dst=10.96.0.10 sport=%d dport=53" % (node_bed.pod_ip, port) in entries[0]
        assert "src=%s dst=%s sport=53 dport=%d" % (node_bed.vip, node_bed.pod_ip, port) in entries[0]


def test_check_mode_through_ansible(tmp_path, node_bed):
    node_bed.start_dnsmasq("")
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)
    args = {"names": [NAME], "servers": [node_bed.vip], "count": 3, "netns": node_bed.pod, "hop": "node-resolver"}
    cmd = [str(ANSIBLE_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "--check",
           "-e", "ansible_python_interpreter=%s" % sys.executable, "-m", "clusterdns.doctor.dns_probe", "-a", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    host = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert host["changed"] is False and host["ok"] is True
    assert host["results"][0]["answered"] == 3 and host["results"][0]["hop"] == "node-resolver"


def as_fact(results, hop, origin):
    return [{"hop": hop, "origin": origin, "server": item["server"], "transport": item["transport"], "result": item} for item in results.values()]


def test_located_hop_seed003_and_udp_drop(tmp_path, node_bed):
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=cilium_*\n")
    pod = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, transports=["udp"], hop="node-resolver")
    node = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.node, transports=["udp"], hop="node-resolver")
    (verdict,) = _rules_probe.locate(as_fact(pod, "node-resolver", "pod") + as_fact(node, "node-resolver", "node"))
    assert (verdict["id"], verdict["origin"], verdict["classification"]) == ("PRB001", "pod", "timeout")
    assert "DMQ001" in verdict["detail"] and "node's own query" in verdict["detail"]

    node_bed.restart_dnsmasq("")
    node_bed.add_drop("udp")
    pod = probe(tmp_path, servers=[node_bed.vip], netns=node_bed.pod, hop="node-resolver")
    (verdict,) = _rules_probe.locate(as_fact(pod, "node-resolver", "pod"))
    assert (verdict["transport"], verdict["classification"]) == ("udp", "timeout")
    assert "TCP to the same hop answers" in verdict["detail"]
