# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""collect.yml writes a bundle per node; diagnose on that bundle gives the findings of the live run."""

from __future__ import annotations

import tarfile

from conftest import load_report, run_playbook


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
