# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml with probing and the kernel drop trace, on the lab's node1 (issue 9's proof).

node1's network namespace is the inventory host (its interpreter enters the namespace); pod1's
namespace probes the kube-dns ClusterIP. With ``firewall-udp53`` (node1 drops forwarded UDP 53) the
kernel trace names NETFILTER_DROP with the namespace and the flow, as evidence on IPT002 and on the
probe's PRB001. With ``dnsmasq-except-interface`` (seed 003 on node1) pod1's queries to node1's
dnsmasq time out and the trace shows that the kernel dropped no UDP DNS packet: the packets reached
dnsmasq's socket and dnsmasq discarded them.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import lab, labctl

COLLECTION = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("healed"), pytest.mark.skipif(not shutil.which("bpftrace"), reason="bpftrace is not installed")]
POD1, NODE1 = lab.pod_ns(1), lab.node_ns(1)


def diagnose(tmp_path, server):
    wrapper = tmp_path / "python3"
    wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (NODE1, sys.executable))
    wrapper.chmod(0o755)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"clusterdns_nodes": {"hosts": {"lab-node1": {
        "ansible_connection": "local", "ansible_python_interpreter": str(wrapper)}}}}))
    report = tmp_path / "report"
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(COLLECTION / ".venv" / "bin" / "ansible-playbook"), str(COLLECTION / "playbooks" / "diagnose.yml"), "-i", str(inventory),
           "-e", "clusterdns_report_dir=%s" % report, "-e", "clusterdns_kubeconfig=%s" % lab.sp("kubeconfig"),
           "-e", "clusterdns_probe=true", "-e", "clusterdns_probe_netns=%s" % POD1, "-e", json.dumps({"clusterdns_kube_dns_ips": [server]}),
           "-e", "clusterdns_probe_count=8", "-e", "clusterdns_trace_seconds=15", "-e", "clusterdns_log_seconds=0"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return json.loads((report / "findings.json").read_text())


def pod_udp_silent(report, server):
    return [f for f in report["findings"] if f["id"] == "PRB001" and f["evidence"]["hop"] == "pod-clusterip"
            and f["evidence"]["transport"] == "udp" and f["evidence"]["server"] == server]


def test_firewall_udp53_drops_are_named_by_the_kernel(api, tmp_path):
    labctl("fault", "firewall-udp53")
    report = diagnose(tmp_path, "10.96.0.10")
    (ipt002,) = [f for f in report["findings"] if f["id"] == "IPT002" and f["host"] == "lab-node1"]
    kernel = ipt002["evidence"]["kernel_drops"]
    assert kernel["count"] >= 1 and "NETFILTER_DROP" in ipt002["detail"]
    # the flow: pod1's query to a CoreDNS endpoint (after kube-proxy's DNAT), dropped in node1's
    # FORWARD chain, in node1's namespace, which the evidence names
    node1 = os.stat("/run/netns/%s" % NODE1).st_ino
    flow = kernel["examples"][0]
    assert (flow["reason"], flow["protocol"], flow["dport"], flow["src"], flow["netns"]) == ("NETFILTER_DROP", "udp", 53, lab.pod_net(1) + ".2", node1)
    assert "(netns %d %s)" % (node1, NODE1) in ipt002["detail"]
    assert NODE1 in kernel["namespaces"][0]["names"]
    (prb001,) = pod_udp_silent(report, "10.96.0.10")
    assert "NETFILTER_DROP" in prb001["detail"]
    print("\nIPT002 on lab-node1: %s\nPRB001: %s" % (ipt002["detail"], prb001["detail"]))


def test_seed003_on_node1_the_kernel_dropped_nothing(api, tmp_path):
    labctl("fault", "dnsmasq-except-interface")
    server = lab.node_ip(1)
    report = diagnose(tmp_path, server)
    (prb001,) = pod_udp_silent(report, server)
    assert prb001["evidence"]["kernel_drops"] is None
    assert "dropped no UDP DNS packet" in prb001["detail"] and "the server discarded them" in prb001["detail"]
    print("\nPRB001: %s" % prb001["detail"])
    dmq001 = [f for f in report["findings"] if f["id"] == "DMQ001" and f["host"] == "lab-node1"]
    assert dmq001 and "cilium_host" in json.dumps(dmq001[0]["evidence"])
