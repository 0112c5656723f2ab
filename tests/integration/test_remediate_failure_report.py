# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""remediate.yml writes its report when a node's fix fails, and still exits non-zero (issue 7).

Two node test beds (tests/testbed), ``bed-a`` and ``bed-b``, each with the seed-003 fault (dnsmasq
``except-interface=cilium_*``) and UDP 53 dropped on the pod interface. ``remediate.yml --tags dnsmasq``
admits cilium_host and restarts dnsmasq, but the pod's query still gets no answer (the firewall drops
it), so the dnsmasq role restores its backup and fails: the forced rollback case.

Before, a failed role with ``max_fail_percentage`` 0 ended the run before the report play. Now the
failure is recorded, the later batches are left alone when the batch failed beyond
``clusterdns_remediate_max_fail_percentage``, findings.json is written with the failures and the
nodes left alone, and the last play fails the node whose fix failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ANSIBLE_BIN, COLLECTION

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
    pytest.mark.skipif(not shutil.which("dig"), reason="dig is not installed (apt-get install bind9-dnsutils)"),
]

TESTS = COLLECTION / "tests"
FAULT = "except-interface=cilium_*"


def _bed_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "testbed", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def beds(tmp_path):
    made = {}
    try:
        for name in ("bed-a", "bed-b"):
            state_dir = tmp_path / name
            made[name] = {"dir": state_dir}  # before up: down also removes a bed whose up failed half-way
            proc = _bed_cli("up", str(state_dir), "--pod-if", "cilium_host", "--except-interface", "cilium_*", "--drop-udp53",
                            "--python", sys.executable, "--owner-pid", str(os.getpid()))
            assert proc.returncode == 0, proc.stderr
            made[name].update(json.loads((state_dir / "state.json").read_text()))
        yield made
    finally:
        # Every bed is taken down, and only then a failed down fails the test.
        downs = [_bed_cli("down", str(state["dir"])) for state in made.values()]
        assert all(proc.returncode == 0 for proc in downs), [proc.stderr for proc in downs]


def remediate(beds, tmp_path, **variables):
    hosts = {name: {
        "ansible_connection": "local",
        "ansible_python_interpreter": state["python"],
        "dnsmasq_allow_restart": True,
        "dnsmasq_restart_command": "env PYTHONPATH=%s %s -m testbed restart-dnsmasq %s" % (TESTS, sys.executable, state["dir"]),
        "dnsmasq_verify_netns": state["pod"],
        "dnsmasq_verify_server": state["vip"],
        "dnsmasq_verify_name": "www.bed.test",
    } for name, state in beds.items()}
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"clusterdns_nodes": {"hosts": hosts}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    report = tmp_path / "report"
    extra = dict(variables, clusterdns_report_dir=str(report), clusterdns_kubeconfig=str(tmp_path / "no-cluster"))
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory), str(COLLECTION / "playbooks" / "remediate.yml"),
           "--tags", "dnsmasq", "-e", json.dumps(extra)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    findings = report / "findings.json"
    return proc, (json.loads(findings.read_text()) if findings.exists() else None)


def recap(proc):
    lines = [line for line in proc.stdout.splitlines() if line.startswith("bed-") and "ok=" in line]
    return {line.split()[0]: {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())} for line in lines}


def conf(state):
    return (state["dir"] / "dnsmasq.conf").read_text()


def test_the_report_is_written_and_the_later_batch_left_alone_when_a_node_fails(beds, tmp_path):
    before = {name: conf(state) for name, state in beds.items()}
    proc, report = remediate(beds, tmp_path, clusterdns_remediate_serial=1)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-4000:]
    assert report is not None, out[-4000:]
    # The node whose fix failed: rolled back, recorded with the reason, failed at the end of the run.
    (failure,) = report["failures"]
    assert failure["host"] == "bed-a" and failure["role"] == "dnsmasq"
    assert "failed verification and was undone" in failure["reason"]
    assert "dnsmasq did not answer 169.254.25.10 www.bed.test from network namespace %s after the change: 0 of 3 queries answered, timeout" \
        % beds["bed-a"]["pod"] in failure["reason"], failure
    result = report["remediation"]["bed-a"]["clusterdns_remediate_result_dnsmasq"]
    assert result["failed"] is True and result["changed"] is False and result["skipped_reason"].startswith("verification failed")
    assert conf(beds["bed-a"]) == before["bed-a"]
    # The later batch was left alone, and the report says why.
    assert list(report["not_remediated"]) == ["bed-b"]
    assert "1 of the 1 nodes of an earlier batch (bed-a) failed, above clusterdns_remediate_max_fail_percentage=0" in report["not_remediated"]["bed-b"]
    assert "clusterdns_remediate_result_dnsmasq" not in report["remediation"]["bed-b"]
    assert conf(beds["bed-b"]) == before["bed-b"]
    # Before and after are both in the report: DMQ001 on both nodes, still there after the rollback.
    assert {(f["id"], f["host"]) for f in report["before"]["findings"] if f["id"] == "DMQ001"} == {("DMQ001", "bed-a"), ("DMQ001", "bed-b")}
    assert {f["host"] for f in report["findings"] if f["id"] == "DMQ001"} == {"bed-a", "bed-b"}
    assert (tmp_path / "report" / "report.md").exists()
    counts = recap(proc)
    assert counts["bed-a"]["failed"] == 1 and counts["bed-a"]["rescued"] >= 1 and counts["bed-b"]["failed"] == 0, counts
    assert "failed: bed-a dnsmasq; not remediated: bed-b" in proc.stdout


def test_a_failure_within_max_fail_percentage_lets_the_next_batch_run(beds, tmp_path):
    proc, report = remediate(beds, tmp_path, clusterdns_remediate_serial=1, clusterdns_remediate_max_fail_percentage=100)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and report is not None, out[-4000:]
    assert sorted(f["host"] for f in report["failures"]) == ["bed-a", "bed-b"]
    assert report["not_remediated"] == {}
    counts = recap(proc)
    assert counts["bed-a"]["failed"] == 1 and counts["bed-b"]["failed"] == 1, counts
