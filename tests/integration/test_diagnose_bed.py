# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml against the node test bed (tests/testbed): a healthy node has no finding at warning or
above, and the pod-facing interface list is the user's to extend (clusterdns_pod_interface_extra).

The bed's node namespace is an inventory host whose interpreter enters the namespace; there is no
cluster (the kubeconfig does not exist), so only the node checks run.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import bed_inventory, load_report, run_playbook
from testbed.bed import ZONE_ANSWER

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
    pytest.mark.skipif(not shutil.which("dig"), reason="dig is not installed (apt-get install bind9-dnsutils)"),
]

SERIOUS = ("warning", "error", "critical")


def diagnose_bed(tmp_path, name, *args):
    """diagnose.yml without a cluster; the report of ``tmp_path/name``. TMPDIR is the test's own, so a
    bundle run that left its unpacked copy behind would show."""
    run = run_playbook("diagnose.yml", *args, "-e", "clusterdns_report_dir=%s" % (tmp_path / name),
                       "-e", "clusterdns_kubeconfig=%s" % (tmp_path / "no-cluster"), env={"TMPDIR": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return load_report(tmp_path / name)


def test_a_healthy_node_has_no_finding_at_warning_or_above(node_bed, tmp_path):
    """dnsmasq on the node serving the pod interface (bind-dynamic), kube-proxy rules for the kube-dns
    ClusterIP that DNAT to a DNS pod in another namespace, nothing dropped: the pod gets its answers,
    and diagnose reports nothing at warning or above (a false positive is a bug)."""
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=eth9\n")
    dns_pod = node_bed.add_dns_pod()
    node_bed.add_cluster_ip("10.96.0.10", target=dns_pod)
    assert node_bed.dig(node_bed.pod) == [ZONE_ANSWER]
    assert node_bed.dig(node_bed.pod, server="10.96.0.10") == [ZONE_ANSWER]
    assert node_bed.dig(node_bed.pod, server="10.96.0.10", tcp=True) == [ZONE_ANSWER]
    report = diagnose_bed(tmp_path, "healthy", "-i", bed_inventory(node_bed, tmp_path), "-e", json.dumps({"clusterdns_kube_dns_ips": ["10.96.0.10"]}))
    assert report["hosts"] == ["bed-node"]
    assert [(f["id"], f["severity"], f["detail"]) for f in report["findings"] if f["severity"] in SERIOUS] == []
    statuses = {c["id"]: c["status"] for c in report["checks"] if c["scope"] == "node"}
    # the kube-proxy rules were read (IPT001 judged them, not skipped) and nothing else failed
    assert statuses["DMQ001"] == statuses["DMQ002"] == statuses["IPT001"] == statuses["IPT002"] == statuses["NLD001"] == "pass", statuses


@pytest.mark.parametrize("node_bed", ["docker0"], indirect=True)
def test_pod_facing_interfaces_are_extended_by_a_variable(node_bed, tmp_path):
    """docker0 is not a CNI interface by default: dnsmasq excluding it is no finding, until the user says
    containers query dnsmasq through it (clusterdns_pod_interface_extra)."""
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=docker0\n")
    assert node_bed.dig(node_bed.pod) is None  # the container's query is ignored
    inventory = bed_inventory(node_bed, tmp_path)
    default = diagnose_bed(tmp_path, "default", "-i", inventory)
    assert "DMQ001" not in {f["id"] for f in default["findings"]}
    extended = diagnose_bed(tmp_path, "extended", "-i", inventory, "-e", json.dumps({"clusterdns_pod_interface_extra": ["docker0"]}))
    (dmq001,) = [f for f in extended["findings"] if f["id"] == "DMQ001"]
    assert dmq001["evidence"]["interface"] == "docker0"
    assert dmq001["evidence"]["config_line"] == "%s:2: except-interface=docker0" % node_bed.conf_path
