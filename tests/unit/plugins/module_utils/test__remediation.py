# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the conntrack and ipvs roles (_remediation), on states built from captured facts:
the build machine (kernel 6.18, 2 CPUs, 24 GiB, nf_conntrack_max 262144), the 'table full' kernel
log of kubernetes#18604 and kernel releases of the IPVS001 era."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.filter.remediation import FilterModule
from ansible_collections.clusterdns.doctor.plugins.module_utils._conntrack import table_full_events
from ansible_collections.clusterdns.doctor.plugins.module_utils._kernel import release_from_proc_version
from ansible_collections.clusterdns.doctor.plugins.module_utils._remediation import conntrack_plan, ipvs_plan, kube_proxy_max

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GIB = 1024 ** 3


def build_machine(**changes):
    state = {"max": 262144, "count": 0, "buckets": 262144, "cpus": 2, "mem_total_bytes": 24683584 * 1024,
             "max_writable": True, "buckets_writable": True, "hashsize_writable": True, "persisted_max": None}
    state.update(changes)
    return state


def test_kube_proxy_sizing_is_per_core_with_a_floor():
    assert kube_proxy_max(2) == 131072  # 2 * 32768 is below conntrack.min
    assert kube_proxy_max(16) == 524288
    assert kube_proxy_max(16, per_core=0) is None  # maxPerCore 0: kube-proxy leaves the limit alone


def test_full_small_table_is_raised_to_what_kube_proxy_would_set():
    plan = conntrack_plan(build_machine(max=200, count=170))
    assert plan["action"] == "raise" and plan["error"] is None
    assert plan["target"] == 131072 and plan["kube_proxy_max"] == 131072
    assert plan["formula"] == "kube-proxy max(maxPerCore * CPUs, min)"
    assert plan["buckets_target"] is None  # 131072 / 4 is below the 262144 buckets: raise-only


def test_busy_node_gets_headroom_over_its_use_and_more_buckets():
    plan = conntrack_plan(build_machine(max=262144, count=250000, buckets=65536))
    assert plan["action"] == "raise" and plan["target"] == 1000000
    assert plan["formula"] == "count * conntrack_headroom_factor"
    assert plan["buckets_target"] == 250000 and plan["buckets_path"] == "/proc/sys/net/netfilter/nf_conntrack_buckets"


def test_hashsize_parameter_is_used_when_buckets_is_read_only():
    plan = conntrack_plan(build_machine(max=65536, count=60000, buckets=16384, buckets_writable=False))
    assert plan["buckets_path"] == "/sys/module/nf_conntrack/parameters/hashsize" and plan["buckets_target"] == 60000


def test_table_that_is_big_enough_is_left_alone_and_never_lowered():
    plan = conntrack_plan(build_machine(count=1000))
    assert plan["action"] == "none" and plan["target"] == 262144
    assert "at or above the target" in plan["reason"]


def test_table_full_in_the_kernel_log_doubles_once():
    log = table_full_events((FIXTURES / "conntrack" / "dmesg-kubernetes-18604.txt").read_text())
    assert log["table_full_events"] > 0
    evidence = {"table_full_events": log["table_full_events"], "count": 1034, "max": 262144}
    plan = conntrack_plan(build_machine(count=1034), evidence=evidence)
    assert plan["action"] == "raise" and plan["target"] == 524288
    # After the raise the drop-in holds the live value: the old log lines do not double it again.
    again = conntrack_plan(build_machine(max=524288, count=1034, persisted_max=524288), evidence=evidence)
    assert again["action"] == "none"


def test_computed_target_is_capped_at_the_memory_budget():
    plan = conntrack_plan(build_machine(max=65536, count=120000, mem_total_bytes=2 * GIB))
    budget = 2 * GIB * 5 // 100 // 320
    assert plan["budget_max"] == budget and plan["target"] == budget and plan["action"] == "raise"
    assert plan["formula"].endswith("capped at the memory budget")


def test_budget_below_the_live_value_is_an_error():
    plan = conntrack_plan(build_machine(max=262144, count=250000, mem_total_bytes=GIB))
    assert plan["error"].startswith("the computed target 1000000") and "raise conntrack_memory_budget_percent" in plan["error"]


@pytest.mark.parametrize("options, message", [
    ({"target": 10 ** 8}, "conntrack_target 100000000 needs 30517 MiB"),
    ({"target": 100000}, "below the live nf_conntrack_max 262144: this role only raises the limit; set conntrack_allow_lower: true"),
    ({"target": 500, "allow_lower": True}, "conntrack_target 500 is below the 1000 entries in use now"),
    ({"target": -1}, "conntrack_target must be at least 0, got -1"),
    ({"headroom_factor": 0}, "conntrack_headroom_factor must be at least 1"),
    ({"memory_budget_percent": 60}, "conntrack_memory_budget_percent must be above 0 and at most 50"),
    ({"target": "lots"}, "conntrack_target must be an integer, got 'lots'"),
])
def test_refusals_name_what_to_change(options, message):
    plan = conntrack_plan(build_machine(count=1000), options)
    assert plan["action"] == "skip" and message in plan["error"]


def test_explicit_lower_is_allowed_when_asked():
    plan = conntrack_plan(build_machine(count=1000), {"target": 131072, "allow_lower": True})
    assert plan["action"] == "lower" and plan["target"] == 131072 and plan["buckets_target"] is None


def test_read_only_limit_in_a_container_is_a_skip_with_the_reason():
    plan = conntrack_plan(build_machine(max=200, count=170, max_writable=False))
    assert plan["action"] == "skip" and plan["error"] is None
    assert "not writable here" in plan["reason"] and "raise it to 131072 on the host" in plan["reason"]


def test_conntrack_not_loaded_is_a_skip():
    plan = conntrack_plan(build_machine(max=None, count=None))
    assert plan["action"] == "skip" and "nf_conntrack is not loaded" in plan["reason"]


# ipvs ------------------------------------------------------------------------------------------
KERNEL_DEFAULTS = {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0}


def ipvs_state(release, values=None, present=True, writable=True):
    return {"present": present, "writable": writable, "kernel_release": release, "values": dict(values or KERNEL_DEFAULTS)}


@pytest.mark.parametrize("release", ["4.19.0-26-amd64", "3.10.0-1160.el7.x86_64", "5.4.0-1045-aws", [5, 8, 1]])
def test_old_kernel_gets_kube_proxys_values(release):
    plan = ipvs_plan(ipvs_state(release))
    assert plan["action"] == "apply"
    assert plan["changes"] == {"conn_reuse_mode": {"before": 1, "after": 0}, "expire_nodest_conn": {"before": 0, "after": 1},
                               "expire_quiescent_template": {"before": 0, "after": 1}}


def test_build_machine_kernel_is_fixed():
    release = release_from_proc_version((FIXTURES / "kernel" / "proc-version-build-machine.txt").read_text())
    plan = ipvs_plan(ipvs_state(release))
    assert plan["action"] == "none" and plan["kernel"] == [6, 18] and "fixed in 5.9" in plan["reason"]
    assert ipvs_plan(ipvs_state(release), {"apply_on_fixed_kernel": True})["action"] == "apply"


def test_values_already_set_change_nothing_and_minus_one_leaves_conn_reuse_mode():
    assert ipvs_plan(ipvs_state("4.19.0", {"conn_reuse_mode": 0, "expire_nodest_conn": 1, "expire_quiescent_template": 1}))["action"] == "none"
    plan = ipvs_plan(ipvs_state("4.19.0"), {"conn_reuse_mode": -1})
    assert "conn_reuse_mode" not in plan["changes"] and "conn_reuse_mode" not in plan["desired"]


def test_no_ipvs_is_a_skip_and_bad_values_are_errors():
    assert ipvs_plan(ipvs_state("4.19.0", present=False))["reason"].startswith("IPVS is not loaded")
    assert ipvs_plan(ipvs_state("4.19.0", writable=False))["reason"].startswith("the net/ipv4/vs sysctls are not writable")
    assert ipvs_plan(ipvs_state("4.19.0"), {"conn_reuse_mode": 3})["error"] == "ipvs_conn_reuse_mode must be one of -1, 0, 1, 2, got 3"
    assert "set ipvs_kernel_release" in ipvs_plan(ipvs_state("linux"))["error"]


def test_filters_are_exported_and_reject_non_mappings():
    from ansible.errors import AnsibleFilterError

    filters = FilterModule().filters()
    assert set(filters) == {"conntrack_plan", "ipvs_plan"}
    with pytest.raises(AnsibleFilterError, match="conntrack_plan expects a mapping"):
        filters["conntrack_plan"]([1])
    assert filters["ipvs_plan"](ipvs_state("4.19.0"))["action"] == "apply"
