# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ipvs role on a sysctl tree in a temporary directory (ipvs_sysctl_root).

The build machines' kernel has no IPVS, so this covers the file half only: the live values are
files under ``<tmp>/proc/sys/net/ipv4/vs`` and the drop-in goes to ``<tmp>/etc/sysctl.d``; the
kernel release is given as 4.19 (Debian 10's), where IPVS001 applies. The machine's own
/proc/sys and /etc/sysctl.d are not touched. On this kernel (no IPVS) the real run is a skip
with the reason.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_playbook
from remediate_helpers import recap, run_role

NAMES = ("conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template")
OLD_KERNEL = "4.19.0-26-amd64"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "proc" / "sys"
    vs = root / "net" / "ipv4" / "vs"
    vs.mkdir(parents=True)
    # The kernel defaults: conn_reuse_mode 1, expire_nodest_conn 0, expire_quiescent_template 0.
    for name, value in zip(NAMES, (1, 0, 0)):
        (vs / name).write_text("%d\n" % value)
    (tmp_path / "etc" / "sysctl.d").mkdir(parents=True)
    return {"root": root, "vs": vs, "dropin": tmp_path / "etc" / "sysctl.d" / "90-clusterdns-ipvs.conf"}


def values(tree):
    return {name: int((tree["vs"] / name).read_text()) for name in NAMES}


def role_vars(tree, **extra):
    variables = {"ipvs_sysctl_root": str(tree["root"]), "ipvs_sysctl_file": str(tree["dropin"]), "ipvs_kernel_release": OLD_KERNEL}
    variables.update(extra)
    return variables


def test_remediate_sets_the_sysctls_persists_them_and_is_idempotent(tmp_path, tree):
    extra = '{"clusterdns_remediate_force": ["ipvs"], "clusterdns_report_dir": "%s"}' % (tmp_path / "report")
    args = ("--tags", "ipvs", "-e", extra, "-e", json.dumps(role_vars(tree)))
    proc = run_playbook("remediate.yml", *args)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert values(tree) == {"conn_reuse_mode": 0, "expire_nodest_conn": 1, "expire_quiescent_template": 1}
    assert sorted(tree["dropin"].read_text().splitlines()) == [
        "net.ipv4.vs.conn_reuse_mode=0", "net.ipv4.vs.expire_nodest_conn=1", "net.ipv4.vs.expire_quiescent_template=1"]
    report = json.loads((tmp_path / "report" / "findings.json").read_text())
    result = report["remediation"]["localhost"]["clusterdns_remediate_result_ipvs"]
    assert result["changed"] is True and result["restart_required"] is False
    assert "net.ipv4.vs.conn_reuse_mode 1 -> 0" in result["actions"]
    again = run_playbook("remediate.yml", *args)
    assert again.returncode == 0, again.stdout[-4000:]
    second = json.loads((tmp_path / "report" / "findings.json").read_text())["remediation"]["localhost"]["clusterdns_remediate_result_ipvs"]
    assert second["changed"] is False and second["actions"] == []
    assert second["reason"] == "the IPVS sysctls already have the wanted values"


def test_check_mode_changes_nothing_and_second_run_is_unchanged(tmp_path, tree):
    proc, result = run_role(tmp_path, "ipvs", role_vars(tree), "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["changed"] is True
    assert values(tree) == {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0}
    assert not tree["dropin"].exists()
    proc, result = run_role(tmp_path, "ipvs", role_vars(tree))
    assert proc.returncode == 0 and recap(proc)["changed"] >= 2, proc.stdout[-4000:]
    proc, result = run_role(tmp_path, "ipvs", role_vars(tree))
    assert proc.returncode == 0 and recap(proc)["changed"] == 1, proc.stdout[-4000:]  # only the result file of the test play
    assert result["changed"] is False


def test_fixed_kernel_is_left_alone(tmp_path, tree):
    proc, result = run_role(tmp_path, "ipvs", role_vars(tree, ipvs_kernel_release="5.10.0-28-amd64"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["changed"] is False and "fixed in 5.9" in result["reason"]
    assert values(tree) == {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0}


def test_no_ipvs_on_this_kernel_is_a_skip_with_the_reason(tmp_path):
    proc, result = run_role(tmp_path, "ipvs", {"ipvs_sysctl_file": str(tmp_path / "90-clusterdns-ipvs.conf"), "ipvs_kernel_release": OLD_KERNEL})
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["skipped_reason"].startswith("IPVS is not loaded")
    assert not (tmp_path / "90-clusterdns-ipvs.conf").exists()


@pytest.mark.parametrize("extra, message", [
    ({"ipvs_conn_reuse_mode": 3}, "ipvs_conn_reuse_mode"),
    ({"ipvs_expire_nodest_conn": 2}, "ipvs_expire_nodest_conn"),
    ({"ipvs_sysctl_file": "relative.conf"}, "ipvs_sysctl_file an absolute path ending in"),
])
def test_bad_input_fails_before_any_change_naming_the_valid_values(tmp_path, tree, extra, message):
    proc, result = run_role(tmp_path, "ipvs", role_vars(tree, **extra))
    assert proc.returncode != 0 and result is None
    assert message in proc.stdout
    assert values(tree) == {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0}
    assert not tree["dropin"].exists()


def test_failed_verification_restores_the_values_and_the_dropin(tmp_path, tree):
    tree["dropin"].write_text("# kept by the admin\nnet.ipv4.vs.conntrack=1\n")
    # Nothing listens on 127.0.0.1:9 (discard) over UDP DNS: the verification query fails.
    proc, result = run_role(tmp_path, "ipvs", role_vars(tree, ipvs_verify_dns_server="127.0.0.1", ipvs_verify_dns_port=9))
    assert proc.returncode != 0 and result is None
    assert "the IPVS sysctls were restored" in proc.stdout
    assert "the DNS probe of 127.0.0.1:9 for kubernetes.default.svc.cluster.local (from the node) got no answer: 3 sent, unreachable" in proc.stdout
    assert recap(proc)["rescued"] == 1
    assert values(tree) == {"conn_reuse_mode": 1, "expire_nodest_conn": 0, "expire_quiescent_template": 0}
    assert tree["dropin"].read_text() == "# kept by the admin\nnet.ipv4.vs.conntrack=1\n"
    assert list(tree["dropin"].parent.glob("*~")), "the backup of the drop-in file is kept"
