# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml with probing and kernel drop tracing on the node test bed (seed 003).

The bed's node runs dnsmasq with except-interface=cilium_*, and a kube-proxy style DNAT of the
ClusterIP 10.96.0.10 to the node's DNS VIP. diagnose runs against the node namespace with
clusterdns_probe (the node's resolver, and the ClusterIP from the pod's namespace) and
clusterdns_trace_seconds. The pod's queries time out while the node's own are answered: PRB001 on
the pod->ClusterIP hop, and the kernel trace shows that no DNS packet was dropped by the kernel, so
the report says the packets reached dnsmasq's socket and dnsmasq discarded them. With a firewall
DROP instead, the same hop fails and the trace names NETFILTER_DROP. Traffic stays inside the bed.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest
from conftest import bed_inventory, load_report, run_playbook

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and BPF"),
    pytest.mark.skipif(not shutil.which("bpftrace"), reason="bpftrace is not installed (apt-get install bpftrace)"),
]


@pytest.fixture
def bed_host(node_bed, tmp_path):
    """The bed's node as an inventory host; inside its namespace /etc/resolv.conf names the VIP."""
    etc = pathlib.Path("/etc/netns") / node_bed.node
    etc.mkdir(parents=True)
    try:
        (etc / "resolv.conf").write_text("nameserver %s\n" % node_bed.vip)
        node_bed.add_cluster_ip("10.96.0.10")
        yield bed_inventory(node_bed, tmp_path)
    finally:
        shutil.rmtree(etc, ignore_errors=True)


def diagnose(bed, inventory, report_dir, *extra):
    run = run_playbook("diagnose.yml", "-i", str(inventory), "-e", "clusterdns_report_dir=%s" % report_dir, *extra,
                       "-e", "clusterdns_probe=true", "-e", "clusterdns_probe_netns=%s" % bed.pod,
                       "-e", '{"clusterdns_kube_dns_ips": ["10.96.0.10"]}', "-e", "clusterdns_probe_resolver_name=www.bed.test",
                       "-e", "clusterdns_probe_count=10", "-e", "clusterdns_trace_seconds=12",
                       "-e", "clusterdns_kubeconfig=/nonexistent/kubeconfig")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return load_report(report_dir)


def prb001_on_clusterip(report):
    return [f for f in report["findings"] if f["id"] == "PRB001" and f["evidence"]["hop"] == "pod-clusterip"]


def test_seed003_pod_path_fails_and_the_kernel_dropped_nothing(node_bed, bed_host, tmp_path):
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=cilium_*\n")
    report = diagnose(node_bed, bed_host, tmp_path / "report")
    found = [f for f in prb001_on_clusterip(report) if f["evidence"]["transport"] == "udp"]
    assert found, [(f["id"], f["detail"]) for f in report["findings"]]
    assert found[0]["evidence"]["origin"] == "pod" and found[0]["evidence"]["kernel_drops"] is None
    assert "reached the server's socket and the server discarded them" in found[0]["detail"]
    # the node's own queries to the same dnsmasq are answered: no finding on the node-resolver hop
    assert not [f for f in report["findings"] if f["id"].startswith("PRB") and f["evidence"]["hop"] == "node-resolver"]
    assert "DMQ001" in {f["id"] for f in report["findings"]}


def test_firewall_drop_is_named_by_the_kernel(node_bed, bed_host, tmp_path):
    node_bed.start_dnsmasq("bind-dynamic\n")
    node_bed.add_drop("udp")
    # another DNS port named besides 53: port 53 stays traced
    report = diagnose(node_bed, bed_host, tmp_path / "report", "-e", '{"clusterdns_trace_ports": [1053]}')
    found = [f for f in prb001_on_clusterip(report) if f["evidence"]["transport"] == "udp"]
    assert found, [(f["id"], f["detail"]) for f in report["findings"]]
    assert found[0]["evidence"]["kernel_drops"]["count"] >= 1
    assert "NETFILTER_DROP" in found[0]["detail"]
    ipt002 = [f for f in report["findings"] if f["id"] == "IPT002"]
    assert ipt002 and "NETFILTER_DROP" in ipt002[0]["detail"]
