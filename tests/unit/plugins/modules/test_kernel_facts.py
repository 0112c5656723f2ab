# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kernel_facts as a process: on bundles built from real captures and live on this machine."""

from __future__ import annotations

import os
import pathlib
import platform
import shutil

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.kernel_facts"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures" / "kernel"


def run_module(tmp_path, args):
    return run_collection_module(MODULE, tmp_path, args)[:2]


def test_old_kernel_bundle(tmp_path):
    root = tmp_path / "bundle"
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/net/core").mkdir(parents=True)
    (root / "proc/net").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("4.19.91-25.1.al7.x86_64\n")
    (root / "proc/sys/net/core/rmem_max").write_text("212992\n")
    shutil.copy(FIXTURES / "snmp-rcvbuf-netns.txt", root / "proc/net/snmp")
    rc, result = run_module(tmp_path, {"root": str(root), "interval": 5})
    facts = result["ansible_facts"]["clusterdns_kernel"]
    assert rc == 0
    assert facts["version"] == [4, 19, 91]
    assert [f["id"] for f in facts["exposure"] if not f["fixed"]] == ["nf-nat-same-origin", "nf-clash-allow-insert", "ipvs-conn-reuse"]
    assert facts["udp"]["RcvbufErrors"] == 1991 and facts["udp6"] is None
    assert facts["sysctls"]["net/core/rmem_max"] == "212992" and facts["sysctls"]["net/ipv4/ip_forward"] is None
    assert facts["interval"] == 0.0 and facts["udp_delta"] is None  # a bundle is one moment


def test_proc_version_fallback_and_unreadable_release(tmp_path):
    root = tmp_path / "bundle"
    (root / "proc").mkdir(parents=True)
    shutil.copy(FIXTURES / "proc-version-build-machine.txt", root / "proc/version")
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc == 0 and result["ansible_facts"]["clusterdns_kernel"]["release"] == "6.18.44-fc-v1045"
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, result = run_module(tmp_path, {"root": str(empty)})
    facts = result["ansible_facts"]["clusterdns_kernel"]
    assert rc == 0 and facts["available"] is False and "kernel release not readable" in facts["reason"]


def test_bad_release_fails_naming_the_file(tmp_path):
    root = tmp_path / "bundle"
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("unknown\n")
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc != 0 and "proc/sys/kernel/osrelease line 1" in result["msg"]


def test_live_machine(tmp_path):
    rc, result = run_module(tmp_path, {"interval": 0.2})
    facts = result["ansible_facts"]["clusterdns_kernel"]
    assert rc == 0 and facts["release"] == platform.release()
    assert facts["udp"]["InErrors"] >= 0 and set(facts["udp_delta"]) == {"udp", "udp6"}


def test_live_machine_reports_the_dns_sysctls_it_has(tmp_path):
    rc, result = run_module(tmp_path, {})
    sysctls = result["ansible_facts"]["clusterdns_kernel"]["sysctls"]
    assert rc == 0
    for name in ("net/core/rmem_default", "net/core/rmem_max", "net/core/wmem_max", "net/ipv4/udp_mem", "net/ipv4/udp_rmem_min",
                 "net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"):
        with open("/proc/sys/" + name) as handle:
            assert sysctls[name] == " ".join(handle.read().split()), name
    # IPVS is not loaded on the build machines: absent sysctls are null, not an error.
    assert ("net/ipv4/vs/conn_reuse_mode" in sysctls) and (sysctls["net/ipv4/vs/conn_reuse_mode"] is None) == (not os.path.exists("/proc/sys/net/ipv4/vs"))
