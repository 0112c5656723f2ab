# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""collect.yml writes a bundle per node; diagnose on that bundle gives the findings of the live run: on this
machine, and on the node test bed with the seed-003 fault and a DNS-dropping rule (tests/testbed)."""

from __future__ import annotations

import json
import os
import pathlib
import tarfile

import pytest
from conftest import load_report, run_playbook
from test_diagnose_bed import bed_inventory, diagnose_bed


def _checks(report):
    # dns_drop_trace is live-only by design; everything else must agree
    return sorted((c["id"], c["status"]) for c in report["checks"] if c["scope"] == "node")


def _findings(report):
    return sorted((f["id"], f["severity"], f["detail"]) for f in report["findings"])


def test_collect_then_diagnose_offline_matches_the_live_run(tmp_path):
    bundles = tmp_path / "bundles"
    collect = run_playbook("collect.yml", "-e", "clusterdns_bundle_dir=%s" % bundles)
    assert collect.returncode == 0, collect.stdout + collect.stderr
    archive = bundles / "localhost.tar.gz"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"localhost/proc/sys/net/netfilter/nf_conntrack_max", "localhost/etc/resolv.conf", "localhost/commands/iptables-save.txt",
            "localhost/commands/ss-lnup.txt", "localhost/proc/net/snmp"} <= names
    assert not any(n.startswith("localhost/commands/ipvsadm") for n in names)  # no /proc/net/ip_vs here: ipvsadm never ran

    live = run_playbook("diagnose.yml", "-e", "clusterdns_report_dir=%s" % (tmp_path / "live"))
    scratch = tmp_path / "tmp"  # where diagnose unpacks the bundles (TMPDIR)
    scratch.mkdir()
    offline = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundles, "-e", "clusterdns_report_dir=%s" % (tmp_path / "offline"),
                           env={"TMPDIR": str(scratch)})
    assert live.returncode == 0 and offline.returncode == 0, offline.stdout
    assert not [p for p in scratch.iterdir() if p.name.startswith("clusterdns-bundles-")]  # the unpacked bundles are removed
    live_report, offline_report = load_report(tmp_path / "live"), load_report(tmp_path / "offline")
    assert offline_report["hosts"] == ["localhost"]
    assert _findings(offline_report) == _findings(live_report)
    assert _checks(offline_report) == _checks(live_report)


def test_collect_check_mode_writes_nothing(tmp_path):
    bundles = tmp_path / "bundles"
    run = run_playbook("collect.yml", "--check", "-e", "clusterdns_bundle_dir=%s" % bundles)
    assert run.returncode == 0, run.stdout
    assert not bundles.exists() or not list(bundles.iterdir())


def test_a_bundle_that_does_not_parse_fails_the_run_naming_the_line_and_leaves_no_unpacked_copy(tmp_path):
    # The only bundle fails: the report play never runs, yet the scratch copy (node configuration
    # files) must not stay in TMPDIR.
    node = tmp_path / "src" / "bad-node" / "commands"
    node.mkdir(parents=True)
    (node / "iptables-save.txt").write_text("*filter\n:INPUT ACCEPT [0:0]\nWarning: iptables-legacy tables present\n")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    with tarfile.open(bundles / "bad-node.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "bad-node", arcname="bad-node")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundles, "-e", "clusterdns_report_dir=%s" % (tmp_path / "report"),
                       env={"TMPDIR": str(scratch)})
    assert run.returncode != 0
    assert "bad-node/commands/iptables-save.txt line 3: unexpected line" in run.stdout, run.stdout[-3000:]
    assert list(scratch.iterdir()) == []


# --- the same on the node test bed: a node with findings, reached through its namespace -------------------------

BED_FAULT = "# keep dnsmasq off the CNI interfaces (seed 003)\nexcept-interface=cilium_*\n"


@pytest.mark.netns
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")
@pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)")
def test_collect_from_the_broken_bed_then_offline_gives_the_live_findings(node_bed, tmp_path):
    """The seed-003 node (dnsmasq except-interface=cilium_* in a conf-dir drop-in) with UDP 53 also
    dropped on the pod interface: live diagnose, collect.yml, then diagnose on the bundle. Every
    finding (id, host, severity, detail, evidence) is the same, and DMQ001 and IPT002 are among them."""
    dropin = node_bed.write_conf(BED_FAULT, "dnsmasq.d/10-cni.conf")
    node_bed.write_conf("except-interface=lo\n", "dnsmasq.d/10-cni.conf.dpkg-old")  # not read: no .conf suffix
    node_bed.start_dnsmasq("bind-dynamic\nconf-dir=%s,*.conf\n" % os.path.dirname(dropin))
    node_bed.add_drop("udp")
    inventory = bed_inventory(node_bed, tmp_path)

    live = diagnose_bed(tmp_path, "live", "-i", inventory)
    bundles = tmp_path / "bundles"
    collect = run_playbook("collect.yml", "-i", inventory, "-e", "clusterdns_bundle_dir=%s" % bundles)
    assert collect.returncode == 0, collect.stdout[-4000:]
    with tarfile.open(bundles / "bed-node.tar.gz") as tar:
        names = set(tar.getnames())
        # The node is a network namespace: the bundle says which, so that the kernel log's
        # "table full in netns N" lines are attributed to it only when N is its inode.
        netns = tar.extractfile("bed-node/commands/netns.txt").read().decode()
    assert {"bed-node/commands/dnsmasq-cmdline.txt", "bed-node/commands/iptables-save.txt", "bed-node" + dropin} <= names
    inode, init, since = netns.split()
    assert (inode, init) == ("inode=%d" % os.stat("/run/netns/%s" % node_bed.node).st_ino, "init=no"), netns
    assert 0 < float(since.split("=")[1]) <= float(pathlib.Path("/proc/uptime").read_text().split()[0]), netns
    offline = diagnose_bed(tmp_path, "offline", "-e", "clusterdns_bundle_dir=%s" % bundles)

    assert offline["hosts"] == live["hosts"] == ["bed-node"]
    assert {f["id"] for f in live["findings"]} >= {"DMQ001", "IPT002"}
    (dmq001,) = [f for f in live["findings"] if f["id"] == "DMQ001"]
    assert dmq001["evidence"]["interface"] == "cilium_host" and dmq001["evidence"]["config_line"] == "%s:2: except-interface=cilium_*" % dropin
    assert sorted(offline["findings"], key=json.dumps) == sorted(live["findings"], key=json.dumps)
    assert _checks(offline) == _checks(live)
