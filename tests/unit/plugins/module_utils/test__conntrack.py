# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack statistics parsers on real captures (fixtures/conntrack/SOURCES.md)."""

from __future__ import annotations

import os
import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _conntrack
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "conntrack"


def fixture(name):
    return (FIXTURES / name).read_text()


def test_stat_file_4x_sums_cpus_and_keeps_entries_once():
    parsed = _conntrack.parse_stat_file(fixture("stat-4.x-netdata-161.txt"))
    assert parsed["cpus"] == 3
    assert parsed["entries"] == 0x71E  # the table size, repeated per CPU, not multiplied by 3
    assert parsed["counters"]["drop"] == 0x53A + 0x8
    assert parsed["counters"]["insert_failed"] == 0
    assert parsed["counters"]["delete_list"] == 0x5A1DA9 + 0x17D10C + 0x13A597


def test_stat_file_formats_follow_their_header():
    new = _conntrack.parse_stat_file(fixture("stat-5.x-elastic-beats-46138.txt"))
    assert new["entries"] == 0xAB and new["cpus"] == 4
    assert "clashres" in new["counters"] and "chainlength" in new["counters"] and "searched" not in new["counters"]
    machine = _conntrack.parse_stat_file(fixture("stat-6.18-build-machine.txt"))
    assert machine["cpus"] >= 1 and set(_conntrack.DROP_COUNTERS) <= set(machine["counters"])


@pytest.mark.parametrize("text, lineno, message", [
    ("", None, "empty file"),
    ("cpu found\n00 00\n", 1, "not the counter header"),
    ("entries found drop\n00000001 00000002\n", 2, "2 values for 3 counters"),
    ("entries found\n0000000g 00000001\n", 2, "not hexadecimal"),
    ("entries found\n", 1, "no per-CPU lines"),
])
def test_stat_file_bad_input_names_the_line(text, lineno, message):
    with pytest.raises(ParseError) as err:
        _conntrack.parse_stat_file(text, source="bundle/proc/net/stat/nf_conntrack")
    assert err.value.lineno == lineno
    assert message in str(err.value) and "bundle/proc/net/stat/nf_conntrack" in str(err.value)


def test_conntrack_s_per_cpu_sums_drop_counters():
    parsed = _conntrack.parse_conntrack_s(fixture("S-percpu-telegraf-8955.txt"))
    assert parsed["cpus"] == 8
    assert parsed["counters"]["insert_failed"] == 1 and parsed["counters"]["drop"] == 1
    assert parsed["counters"]["invalid"] == 516 + 583 + 9632 + 1025 + 1718 + 837 + 514 + 9927
    assert _conntrack.parse_conntrack_s(fixture("S-percpu-nftables-138.txt"))["counters"]["invalid"] == 112
    machine = _conntrack.parse_conntrack_s(fixture("S-1.4.7-build-machine.txt"))
    assert "clash_resolve" in machine["counters"] and "chaintoolong" in machine["counters"]


def test_conntrack_s_old_proc_format_and_its_error_trailer():
    parsed = _conntrack.parse_conntrack_s(fixture("S-1.4.4-proc-kubernetes-56903.txt"))
    assert parsed["cpus"] is None and parsed["entries"] == 90
    assert parsed["counters"]["found"] == 3774748 and parsed["counters"]["insert_failed"] == 0


def test_conntrack_s_rejects_other_output():
    with pytest.raises(ParseError) as err:
        _conntrack.parse_conntrack_s("usage: conntrack [options]\n", source="commands/conntrack-S.txt")
    assert err.value.lineno == 1 and "conntrack-tools" in err.value.expected


@pytest.mark.parametrize("name, events, first, last", [
    ("dmesg-kubernetes-18604.txt", 14, "1454500.910215", "1454509.461217"),
    ("dmesg-T-kubernetes-71261.txt", 4, "Tue Nov 20 22:30:22 2018", "Tue Nov 20 22:30:27 2018"),
    ("dmesg-kube-aws-476.txt", 4, "2833841.216211", "2834232.639992"),
    ("dmesg-build-machine.txt", 0, None, None),
])
def test_table_full_events(name, events, first, last):
    found = _conntrack.table_full_events(fixture(name))
    assert (found["table_full_events"], found["first"], found["last"]) == (events, first, last)
    assert len(found["sample"]) == min(events, 5)


def test_delta_and_ratio():
    assert _conntrack.delta({"drop": 5, "insert_failed": 1}, {"drop": 9, "insert_failed": 1, "new": 3}) == {"drop": 4, "insert_failed": 0}
    assert _conntrack.delta({"drop": 50}, {"drop": 2}) == {"drop": 2}  # module reloaded: counters restarted
    assert _conntrack.usage_ratio(262144, 262144) == 1.0
    assert _conntrack.usage_ratio(None, 10) is None and _conntrack.usage_ratio(5, 0) is None


NETNS_DMESG = "dmesg-6.18-netns-build-machine.txt"  # 21 lines for netns 4026532454, then one for 4026532178


def test_table_full_in_another_namespace_is_not_the_hosts():
    # Read as the host's (init) namespace, or with the namespace unknown: none of these lines is ours.
    for netns in (None, {"inode": 4026531833, "init": True, "since": None}, {"inode": 7, "init": None, "since": None}):
        found = _conntrack.table_full_events(fixture(NETNS_DMESG), netns)
        assert found["table_full_events"] == 0 and found["last"] is None
        assert found["other_netns_events"] == 22 and found["other_netns"] == {"4026532454": 21, "4026532178": 1}


def test_table_full_in_this_namespace_counts_from_its_oldest_process():
    # Two bursts for inode 4026532454, ten minutes apart: two lab runs whose node namespaces got the
    # same inode. A node whose oldest process started at 30000 s owns the second burst only.
    node = {"inode": 4026532454, "init": False, "since": 30000.0}
    found = _conntrack.table_full_events(fixture(NETNS_DMESG), node)
    assert (found["table_full_events"], found["before_netns"]) == (11, 10)
    assert (found["first"], found["last"]) == ("30085.242624", "30090.446625")
    assert found["sample"][-1].endswith("table full in netns 4026532454, dropping packet")
    assert found["other_netns"] == {"4026532178": 1}
    # Since unknown: every line naming the inode counts.
    assert _conntrack.table_full_events(fixture(NETNS_DMESG), dict(node, since=None))["table_full_events"] == 21


def test_in_a_namespace_the_hosts_own_lines_are_another_table():
    found = _conntrack.table_full_events(fixture("dmesg-kubernetes-18604.txt"), {"inode": 4026532454, "init": False, "since": 0.0})
    assert found["table_full_events"] == 0 and found["other_netns"] == {"init": 14}


def test_netns_line_round_trip_and_bad_line():
    for netns in ({"inode": 4026532454, "init": False, "since": 29000.25}, {"inode": 4026531833, "init": True, "since": None},
                  {"inode": 4026531833, "init": None, "since": None}):
        assert _conntrack.parse_netns(_conntrack.format_netns(netns)) == netns
    with pytest.raises(ParseError) as err:
        _conntrack.parse_netns("inode=net:[4026531833]\n", source="bundle/commands/netns.txt")
    assert err.value.source == "bundle/commands/netns.txt" and "inode=N" in err.value.expected


def test_init_unknown_counts_the_plain_lines_and_this_inodes():
    # pid 2 not visible (a container's own pid namespace) on a kernel without the fixed init inode:
    # the lines naming this inode are this namespace's, and so are plain lines if it is the host's.
    unknown = {"inode": 4026532454, "init": None, "since": 30000.0}
    assert _conntrack.table_full_events(fixture(NETNS_DMESG), unknown)["table_full_events"] == 11
    assert _conntrack.table_full_events(fixture("dmesg-kubernetes-18604.txt"), unknown)["table_full_events"] == 14


def test_netns_of_this_process_reads_proc():
    # This process, as the kernel shows it: its own inode, the host's namespace or not.
    netns = _conntrack.netns_of_this_process()
    own = os.readlink("/proc/self/ns/net")
    assert netns["inode"] == int(own[5:-1])
    try:
        init = os.readlink("/proc/2/ns/net") == own
    except OSError:
        init = None
    if netns["inode"] == _conntrack.INIT_NET_INODE:
        init = True
    assert netns["init"] is init
    assert (netns["since"] is None) == (init is True)
