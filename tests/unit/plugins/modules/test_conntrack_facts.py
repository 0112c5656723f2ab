# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""conntrack_facts as a process: on bundles made of real captures (module_utils/fixtures/conntrack
SOURCES.md) and live on this machine."""

from __future__ import annotations

import pathlib
import shutil

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.conntrack_facts"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures"


def run_module(tmp_path, args):
    return run_collection_module(MODULE, tmp_path, args)[:2]


def bundle(tmp_path, sysctls, stat=None, conntrack_s=None, dmesg=None):
    root = tmp_path / "bundle"
    (root / "proc/sys/net/netfilter").mkdir(parents=True)
    (root / "commands").mkdir()
    for name, value in sysctls.items():
        (root / "proc/sys/net/netfilter" / name).write_text("%s\n" % value)
    if stat:
        (root / "proc/net/stat").mkdir(parents=True)
        shutil.copy(FIXTURES / "conntrack" / stat, root / "proc/net/stat/nf_conntrack")
    if conntrack_s:
        shutil.copy(FIXTURES / "conntrack" / conntrack_s, root / "commands/conntrack-S.txt")
    if dmesg:
        shutil.copy(FIXTURES / "conntrack" / dmesg, root / "commands/dmesg.txt")
    return root


def test_full_table_bundle(tmp_path):
    root = bundle(tmp_path, {"nf_conntrack_max": 262144, "nf_conntrack_count": 262144, "nf_conntrack_buckets": 65536},
                  stat="stat-4.x-netdata-161.txt", dmesg="dmesg-kubernetes-18604.txt")
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_conntrack"]
    assert rc == 0 and result["changed"] is False
    assert (facts["count"], facts["max"], facts["usage_ratio"], facts["buckets"]) == (262144, 262144, 1.0, 65536)
    assert facts["stats_source"] == "proc" and facts["stats"]["drop"] == 0x53A + 0x8
    assert facts["kernel_log"]["table_full_events"] == 14
    assert facts["udp_timeout"] is None  # not in this bundle: reported as unknown, not as 0


def test_bundle_of_a_node_that_is_a_namespace(tmp_path):
    """The bundle's commands/netns.txt says which namespace the node was: its own "table full in
    netns N" lines count (from its oldest process on), the others' are reported apart; a bad line
    fails naming the file."""
    root = bundle(tmp_path, {"nf_conntrack_max": 65536, "nf_conntrack_count": 120}, dmesg="dmesg-6.18-netns-build-machine.txt")
    (root / "commands/netns.txt").write_text("inode=4026532454 init=no since=30000.0\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    log = result["ansible_facts"]["clusterdns_conntrack"]["kernel_log"]
    assert rc == 0 and (log["table_full_events"], log["before_netns"], log["other_netns"]) == (11, 10, {"4026532178": 1})
    assert log["netns"] == {"inode": 4026532454, "init": False, "since": 30000.0}
    (root / "commands/netns.txt").write_text("net:[4026532454]\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc != 0 and "commands/netns.txt" in result["msg"] and "inode=N" in result["msg"], result["msg"]


def test_conntrack_s_is_the_fallback_and_a_missing_dmesg_is_a_reason(tmp_path):
    root = bundle(tmp_path, {"nf_conntrack_max": 65536, "nf_conntrack_count": 120}, conntrack_s="S-percpu-telegraf-8955.txt")
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_conntrack"]
    assert rc == 0 and facts["stats_source"] == "conntrack -S" and facts["stats"]["insert_failed"] == 1
    assert facts["kernel_log"]["available"] is False and "dmesg.txt" in facts["kernel_log"]["reason"]


def test_no_conntrack_module_is_unavailable_not_a_failure(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_conntrack"]
    assert rc == 0 and facts["available"] is False and "nf_conntrack is not loaded" in facts["reason"]


def test_corrupt_stat_file_fails_naming_the_file_and_line(tmp_path):
    root = bundle(tmp_path, {"nf_conntrack_max": 65536, "nf_conntrack_count": 1})
    (root / "proc/net/stat").mkdir(parents=True)
    (root / "proc/net/stat/nf_conntrack").write_text("entries found\n00000001\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc != 0 and result["failed"]
    assert "proc/net/stat/nf_conntrack line 2" in result["msg"] and result["lineno"] == 2


def test_live_machine_matches_proc(tmp_path):
    rc, result = run_module(tmp_path, {"interval": 0.2})
    facts = result["ansible_facts"]["clusterdns_conntrack"]
    assert rc == 0
    assert facts["max"] == int(pathlib.Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    assert facts["stats_source"] == "proc" and facts["interval"] == 0.2
    assert set(facts["stats_delta"]) == set(facts["stats"])


def test_interval_out_of_range_is_refused(tmp_path):
    rc, result = run_module(tmp_path, {"interval": 1000})
    assert rc != 0 and "interval must be between 0 and 300" in result["msg"]
