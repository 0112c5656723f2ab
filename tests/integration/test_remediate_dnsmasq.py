# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dnsmasq role through remediate.yml --tags dnsmasq on the node test bed (seed-003 fault).

The bed (``python -m testbed up --except-interface 'cilium_*'``) is a node namespace with a real
dnsmasq and a pod namespace behind ``cilium_host``; the play is the Molecule scenario's converge
(extensions/molecule/node_dnsmasq/converge.yml), which restarts the bed's dnsmasq through
``python -m testbed restart-dnsmasq``. Covered here: check mode changes nothing, no restart without
dnsmasq_allow_restart, bad input and an interface with the default route are refused before any
change, and a change whose verification fails (UDP 53 dropped by the firewall) is undone.
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
CONVERGE = COLLECTION / "extensions" / "molecule" / "node_dnsmasq" / "converge.yml"
FAULT = "except-interface=cilium_*"


def _bed_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "testbed", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _up(tmp_path, *extra):
    state_dir = tmp_path / "bed"
    proc = _bed_cli("up", str(state_dir), "--pod-if", "cilium_host", "--except-interface", "cilium_*", "--python", sys.executable,
                    "--owner-pid", str(os.getpid()), *extra)
    assert proc.returncode == 0, proc.stderr
    state = json.loads((state_dir / "state.json").read_text())
    state["dir"] = state_dir
    return state


@pytest.fixture
def bed(tmp_path, request):
    state = _up(tmp_path, *getattr(request, "param", ()))
    try:
        yield state
    finally:
        down = _bed_cli("down", str(state["dir"]))
        assert down.returncode == 0, down.stderr


def remediate(state, tmp_path, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), str(CONVERGE), "--tags", "dnsmasq", "-e", "clusterdns_molecule_bed_state=%s" % state["dir"],
           "-e", "clusterdns_molecule_tests_dir=%s" % TESTS, "-e", "clusterdns_report_dir=%s" % (tmp_path / "report"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def pid(state):
    return int(open(state["pidfile"], encoding="utf-8").read().strip())


def pod_answer(state):
    proc = subprocess.run(["ip", "netns", "exec", state["pod"], "dig", "+time=1", "+tries=1", "+short", "@" + state["vip"], "www.bed.test"],
                          capture_output=True, text=True, timeout=15, check=False)
    return proc.stdout.split() if proc.returncode == 0 else None


def conf(state):
    return open(state["conf"], encoding="utf-8").read()


def backups(state):
    return sorted(p for p in os.listdir(state["dir"]) if p.startswith("dnsmasq.conf.") and p.endswith("~"))


def result(tmp_path):
    report = json.loads((tmp_path / "report" / "findings.json").read_text())
    return report, report["remediation"]["bed-node"].get("clusterdns_remediate_result_dnsmasq")


def test_check_mode_changes_nothing(bed, tmp_path):
    before_conf, before_pid = conf(bed), pid(bed)
    proc = remediate(bed, tmp_path, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "-" + FAULT in proc.stdout  # the diff shows the line that would go
    assert conf(bed) == before_conf and pid(bed) == before_pid and backups(bed) == []
    assert pod_answer(bed) is None
    _report, res = result(tmp_path)
    assert res["changed"] is True and res["restart_required"] is True


def test_without_allow_restart_the_file_changes_and_a_restart_is_required(bed, tmp_path):
    before_pid = pid(bed)
    proc = remediate(bed, tmp_path, "-e", "dnsmasq_allow_restart=false")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert FAULT not in conf(bed).replace("# ", "\n#").split("\n") and len(backups(bed)) == 1
    assert pid(bed) == before_pid
    assert pod_answer(bed) is None  # the running dnsmasq still has the old configuration
    _report, res = result(tmp_path)
    assert res["changed"] is True and res["restart_required"] is True


@pytest.mark.parametrize("extra, message", [
    ('{"dnsmasq_pod_interfaces": ["an-interface-name-too-long"]}', "dnsmasq_pod_interfaces must be interface names"),
    ('{"dnsmasq_pod_interfaces": ["eth9"]}', "interface eth9 does not exist on the node"),
    ('{"dnsmasq_allow_restart": true, "dnsmasq_restart_command": " "}', "dnsmasq_restart_command must not be empty"),
    ('{"dnsmasq_pod_interfaces": "cilium_host,lo", "dnsmasq_pid": "one"}', "dnsmasq_pid"),
])
def test_bad_input_fails_before_any_change(bed, tmp_path, extra, message):
    before_conf, before_pid = conf(bed), pid(bed)
    proc = remediate(bed, tmp_path, "-e", extra)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert conf(bed) == before_conf and pid(bed) == before_pid and backups(bed) == []


def test_interface_with_the_default_route_is_never_admitted(bed, tmp_path):
    subprocess.run(["ip", "netns", "exec", bed["node"], "ip", "route", "add", "default", "via", "10.244.0.2", "dev", "cilium_host"], check=True)
    before_conf = conf(bed)
    proc = remediate(bed, tmp_path)
    assert proc.returncode != 0
    assert "not admitting cilium_host: cilium_host carries the default route" in proc.stdout, proc.stdout[-3000:]
    assert conf(bed) == before_conf and backups(bed) == []


@pytest.mark.parametrize("bed", [("--drop-udp53",)], indirect=True)
def test_failed_verification_restores_the_configuration(bed, tmp_path):
    before_conf = conf(bed)
    proc = remediate(bed, tmp_path)
    assert proc.returncode != 0
    assert "failed verification and was undone" in proc.stdout, proc.stdout[-3000:]
    assert "Ask dnsmasq from behind the admitted interface" in proc.stdout
    assert "dnsmasq did not answer 169.254.25.10 www.bed.test from network namespace %s after the change: 0 of 3 queries answered, timeout" \
        % bed["pod"] in proc.stdout.replace("\n", " "), proc.stdout[-3000:]
    assert conf(bed) == before_conf  # restored from the backup, which is kept
    assert len(backups(bed)) == 1
    assert "Restart dnsmasq with the restored configuration" in proc.stdout
