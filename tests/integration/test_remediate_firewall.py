# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall role through remediate.yml --tags firewall on the node test bed (IPT002 fault).

The bed (``python -m testbed up --drop-udp53``) is a node namespace with a real dnsmasq on the DNS
VIP and ``iptables -A INPUT -i cilium_host -p udp --dport 53 -j DROP``; the play is the Molecule
scenario's converge (extensions/molecule/node_firewall/converge.yml). Covered here: check mode
changes nothing, remove mode, bad input refused before any change, a native nftables base chain
refused, and a change whose verification fails is undone (ruleset restored from the saved copy).
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
    pytest.mark.skipif(not shutil.which("iptables-restore"), reason="iptables is not installed"),
]

TESTS = COLLECTION / "tests"
CONVERGE = COLLECTION / "extensions" / "molecule" / "node_firewall" / "converge.yml"
DROP = "-A INPUT -i cilium_host -p udp -m udp --dport 53 -j DROP"


def _bed_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    return subprocess.run([sys.executable, "-m", "testbed", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def bed(tmp_path):
    state_dir = tmp_path / "bed"
    proc = _bed_cli("up", str(state_dir), "--pod-if", "cilium_host", "--drop-udp53", "--python", sys.executable, "--owner-pid", str(os.getpid()))
    assert proc.returncode == 0, proc.stderr
    state = json.loads((state_dir / "state.json").read_text())
    state["dir"] = state_dir
    try:
        yield state
    finally:
        down = _bed_cli("down", str(state_dir))
        assert down.returncode == 0, down.stderr


def remediate(state, tmp_path, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), str(CONVERGE), "--tags", "firewall", "-e", "clusterdns_molecule_bed_state=%s" % state["dir"],
           "-e", "clusterdns_molecule_tests_dir=%s" % TESTS, "-e", "clusterdns_report_dir=%s" % (tmp_path / "report"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)


def node(state, *argv):
    return subprocess.run(["ip", "netns", "exec", state["node"], *argv], capture_output=True, text=True, timeout=30, check=True).stdout


def ruleset(state):
    """iptables-save of the node namespace without the timestamp comments and counters."""
    return [line.split(" [", 1)[0] if line.startswith(":") else line for line in node(state, "iptables-save").splitlines()
            if not line.startswith("#")]


def pod_answer(state):
    proc = subprocess.run(["ip", "netns", "exec", state["pod"], "dig", "+time=1", "+tries=1", "+short", "@" + state["vip"], "www.bed.test"],
                          capture_output=True, text=True, timeout=15, check=False)
    return proc.stdout.split() if proc.returncode == 0 else None


def backups(state):
    directory = state["dir"] / "backups"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def result(tmp_path):
    report = json.loads((tmp_path / "report" / "findings.json").read_text())
    return report["remediation"]["bed-node"].get("clusterdns_remediate_result_firewall")


def test_check_mode_changes_nothing_and_shows_the_rule(bed, tmp_path):
    before = ruleset(bed)
    proc = remediate(bed, tmp_path, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "-I INPUT 1 -i cilium_host -p udp -m udp --dport 53 -m comment" in proc.stdout  # the rule that would be inserted
    assert ruleset(bed) == before and backups(bed) == []
    assert pod_answer(bed) is None
    res = result(tmp_path)
    assert res["changed"] is True and res["persist_required"] is True


def test_remove_mode_deletes_the_drop(bed, tmp_path):
    proc = remediate(bed, tmp_path, "-e", "firewall_mode=remove")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert DROP not in ruleset(bed) and not any("-j ACCEPT" in line for line in ruleset(bed))
    assert pod_answer(bed) == ["192.0.2.1"]
    res = result(tmp_path)
    assert res["changed"] is True and any(a.startswith("iptables -t filter -D INPUT -i cilium_host") for a in res["actions"])
    (saved,) = backups(bed)
    assert DROP in (bed["dir"] / "backups" / saved).read_text()


@pytest.mark.parametrize("extra, message", [
    ('{"firewall_mode": "accept_all"}', "firewall_mode must be one of: insert_accept, remove"),
    ('{"firewall_verify_server": "dns.example"}', "firewall_verify_server an IP address"),
    ('{"firewall_backup_dir": "relative/dir"}', "firewall_backup_dir an absolute path"),
])
def test_bad_input_fails_before_any_change(bed, tmp_path, extra, message):
    before = ruleset(bed)
    proc = remediate(bed, tmp_path, "-e", extra)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert ruleset(bed) == before and backups(bed) == []


def test_native_nftables_base_chain_is_refused(bed, tmp_path):
    node(bed, "nft", "add", "table", "inet", "hostfw")
    node(bed, "nft", "add", "chain", "inet", "hostfw", "input", "{ type filter hook input priority 0; policy accept; }")
    before = ruleset(bed)
    proc = remediate(bed, tmp_path)
    assert proc.returncode != 0
    assert "native nftables table inet hostfw, base chain input (hook input" in proc.stdout, proc.stdout[-3000:]
    assert ruleset(bed) == before and backups(bed) == []


def test_failed_verification_restores_the_ruleset(bed, tmp_path):
    before = ruleset(bed)
    # nothing listens on 10.244.0.1:53 (dnsmasq only on the VIP): the query after the change fails
    proc = remediate(bed, tmp_path, "-e", "firewall_verify_server=10.244.0.1")
    assert proc.returncode != 0
    assert "failed verification and was undone" in proc.stdout, proc.stdout[-3000:]
    assert "Ask the DNS server from behind the firewall" in proc.stdout
    assert "10.244.0.1 did not answer www.bed.test from network namespace %s after the change: UDP 0 of 3 queries answered, unreachable" % bed["pod"] \
        in proc.stdout.replace("\n", " "), proc.stdout[-3000:]
    assert ruleset(bed) == before  # the ACCEPT is gone again, byte-identical but for counters
    assert len(backups(bed)) == 1
