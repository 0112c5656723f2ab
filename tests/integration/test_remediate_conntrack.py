# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The conntrack role on this machine's kernel (CT001 made real, then fixed).

The fixture lowers the GLOBAL nf_conntrack_max to 200 and inserts 170 conntrack entries into the
root namespace's table with ``conntrack -I`` (documentation addresses 198.51.100.7 -> .8, no
packet is sent), so the table is 85 % full and diagnose reports CT001. Every case restores the
original nf_conntrack_max (262144 on the build machines) and hash size and deletes the entries in
a ``finally``. The drop-in and modules-load files go to a temporary directory, never to /etc.
Other network namespaces (the lab, test beds) count their own entries against the same limit;
theirs are a handful, far below 200. When the lab's own ``conntrack-full`` fault is active the
test is skipped: the lab owns the limit then.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest
from conftest import COLLECTION, load_report, run_playbook
from remediate_helpers import recap, run_role

MAX = "/proc/sys/net/netfilter/nf_conntrack_max"
BUCKETS = "/proc/sys/net/netfilter/nf_conntrack_buckets"
COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"
SRC, DST = "198.51.100.7", "198.51.100.8"
LOW_MAX, ENTRIES = 200, 170

pytestmark = [
    pytest.mark.destructive,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: changes the global nf_conntrack_max"),
    pytest.mark.skipif(not os.path.exists(MAX), reason="nf_conntrack is not loaded"),
    pytest.mark.skipif(not shutil.which("conntrack"), reason="conntrack is not installed (apt-get install conntrack)"),
]


def read_int(path):
    with open(path, encoding="ascii") as handle:
        return int(handle.read())


def write_int(path, value):
    with open(path, "w", encoding="ascii") as handle:
        handle.write("%d\n" % value)


def lab_owns_the_limit():
    labctl = COLLECTION / "tests" / "lab" / "labctl"
    try:
        out = subprocess.run([str(labctl), "status"], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.startswith("faults:") and "conntrack-full" in line for line in out.splitlines())


@pytest.fixture
def full_table():
    if lab_owns_the_limit():
        pytest.skip("the lab's conntrack-full fault is active: it owns nf_conntrack_max now")
    original, buckets = read_int(MAX), read_int(BUCKETS)
    try:
        write_int(MAX, LOW_MAX)
        for port in range(ENTRIES):
            subprocess.run(["conntrack", "-I", "-p", "udp", "-s", SRC, "-d", DST, "--sport", str(20000 + port), "--dport", "53",
                            "-t", "900"], capture_output=True, check=True, timeout=30)
        assert read_int(COUNT) >= ENTRIES
        yield {"original": original}
    finally:
        subprocess.run(["conntrack", "-D", "-s", SRC], capture_output=True, check=False, timeout=60)
        write_int(MAX, original)
        if read_int(BUCKETS) != buckets:
            write_int(BUCKETS, buckets)
        assert read_int(MAX) == original


@pytest.fixture
def files(tmp_path):
    (tmp_path / "sysctl.d").mkdir()
    (tmp_path / "modules-load.d").mkdir()
    return {"conntrack_sysctl_file": str(tmp_path / "sysctl.d" / "90-clusterdns-conntrack.conf"),
            "conntrack_modules_load_file": str(tmp_path / "modules-load.d" / "clusterdns-conntrack.conf")}


@pytest.fixture
def dns_server(tmp_path):
    """A real dnsmasq on 127.0.0.1 (free UDP port) answering probe.test, for the verification query."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--user=root",
                             "--port=%d" % port, "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                             "--address=/probe.test/192.0.2.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if subprocess.run(["dig", "+time=1", "+tries=1", "+short", "-p", str(port), "@127.0.0.1", "probe.test"],
                              capture_output=True, text=True, check=False, timeout=10).stdout.strip() == "192.0.2.1":
                break
            time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def remediate(tmp_path, variables, *args):
    extra = dict(variables, clusterdns_report_dir=str(tmp_path / "report"))
    proc = run_playbook("remediate.yml", "--tags", "conntrack", "-e", json.dumps(extra), *args)
    return proc, (load_report(tmp_path / "report") if (tmp_path / "report" / "findings.json").exists() else None)


def ct001(report_part):
    return [f for f in report_part["findings"] if f["id"] == "CT001"]


@pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed")
def test_remediate_raises_the_full_table_persists_it_and_ct001_goes_away(tmp_path, full_table, files, dns_server):
    variables = dict(files, conntrack_verify_dns_server="127.0.0.1", conntrack_verify_dns_port=dns_server,
                     conntrack_verify_dns_name="probe.test")
    # Dry run: CT001 before, nothing written.
    proc, report = remediate(tmp_path, variables, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "CT001" in report["before"]["ids"]
    assert read_int(MAX) == LOW_MAX
    assert not os.path.exists(files["conntrack_sysctl_file"]) and not os.path.exists(files["conntrack_modules_load_file"])
    # Real run: raised to kube-proxy's own sizing for this machine, persisted, verified by a real query.
    cpus = len(os.sched_getaffinity(0))
    expected = max(32768 * cpus, 131072, ENTRIES * 4)
    proc, report = remediate(tmp_path, variables)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert read_int(MAX) == expected
    assert pathlib.Path(files["conntrack_sysctl_file"]).read_text() == "net.netfilter.nf_conntrack_max=%d\n" % expected
    assert pathlib.Path(files["conntrack_modules_load_file"]).read_text().splitlines()[-1] == "nf_conntrack"
    result = report["remediation"]["localhost"]["clusterdns_remediate_result_conntrack"]
    assert result["changed"] is True and result["restart_required"] is False and result["skipped_reason"] is None
    assert result["conntrack_kube_proxy_max"] == max(32768 * cpus, 131072)
    assert result["before"] == LOW_MAX and result["target"] == expected
    assert any(a.startswith("nf_conntrack_max %d -> %d" % (LOW_MAX, expected)) for a in result["actions"])
    assert "CT001" in report["before"]["ids"] and not ct001(report)
    # Second run, forced (CT001 is gone, so remediate would not even import the role): nothing changes.
    proc, report = remediate(tmp_path, dict(variables, clusterdns_remediate_force=["conntrack"]))
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = report["remediation"]["localhost"]["clusterdns_remediate_result_conntrack"]
    assert result["changed"] is False and result["actions"] == []
    # >=: the limit is global, another process may have raised it meanwhile; the role never lowers it.
    assert read_int(MAX) >= expected
    # Diagnose agrees. Given the drop-in, "table full" lines the kernel logged before it was written
    # (another test's full table, earlier in this boot) count as history: at most an info.
    diag = run_playbook("diagnose.yml", "-e", json.dumps({"clusterdns_report_dir": str(tmp_path / "diag"),
                                                          "conntrack_sysctl_file": files["conntrack_sysctl_file"]}))
    assert diag.returncode == 0, diag.stdout[-4000:]
    assert [f for f in ct001(load_report(tmp_path / "diag")) if f["severity"] != "info"] == []


@pytest.mark.parametrize("extra, message", [
    ({"conntrack_target": -5}, "conntrack_target 0 (computed) or a positive"),
    ({"conntrack_target": 180}, "conntrack_target 180 is below the live nf_conntrack_max 200: this role only raises the limit"),
    ({"conntrack_target": 100, "conntrack_allow_lower": True}, "conntrack_target 100 is below the 170 entries in use now"),
    ({"conntrack_target": 10 ** 9}, "above conntrack_memory_budget_percent=5 %"),
    ({"conntrack_memory_budget_percent": 80}, "conntrack_memory_budget_percent above 0 and at most 50"),
])
def test_bad_input_fails_before_any_change(tmp_path, full_table, files, extra, message):
    proc, result = run_role(tmp_path, "conntrack", dict(files, **extra))
    assert proc.returncode != 0 and result is None
    assert message in proc.stdout, proc.stdout[-3000:]
    assert read_int(MAX) == LOW_MAX
    assert not os.path.exists(files["conntrack_sysctl_file"])


def test_failed_verification_restores_the_limit_and_the_files(tmp_path, full_table, files):
    with open(files["conntrack_sysctl_file"], "w", encoding="ascii") as handle:
        handle.write("# the admin's\nnet.netfilter.nf_conntrack_tcp_timeout_established=86400\n")
    # Nothing answers DNS on 127.0.0.1:9: the verification query fails after the raise.
    proc, result = run_role(tmp_path, "conntrack", dict(files, conntrack_verify_dns_server="127.0.0.1", conntrack_verify_dns_port=9))
    assert proc.returncode != 0 and result is None
    assert recap(proc)["rescued"] == 1
    assert "was rolled back" in proc.stdout and "the DNS probe of 127.0.0.1:9 for kubernetes.default.svc.cluster.local" in proc.stdout
    assert "got no answer: 3 sent, unreachable" in proc.stdout
    assert read_int(MAX) == LOW_MAX
    with open(files["conntrack_sysctl_file"], encoding="ascii") as handle:
        assert handle.read() == "# the admin's\nnet.netfilter.nf_conntrack_tcp_timeout_established=86400\n"
    assert not os.path.exists(files["conntrack_modules_load_file"])


def test_not_writable_in_a_network_namespace_is_a_skip_with_the_reason(tmp_path, files):
    # A fresh network namespace per module run (unshare -n): nf_conntrack_max is read-only there.
    wrapper = tmp_path / "python3"
    wrapper.write_text('#!/bin/sh\nexec unshare -n %s "$@"\n' % os.path.realpath(shutil.which("python3", path=str(COLLECTION / ".venv" / "bin"))))
    wrapper.chmod(0o755)
    before = read_int(MAX)
    proc, result = run_role(tmp_path, "conntrack", dict(files, conntrack_target=before + 4096), interpreter=wrapper)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert result["changed"] is False
    assert "is not writable here" in result["skipped_reason"] and str(before + 4096) in result["skipped_reason"]
    assert read_int(MAX) == before
    assert not os.path.exists(files["conntrack_sysctl_file"])


KERNEL_HOST_PLAY = """---
- name: Run the conntrack role on a node that shares the kernel of another inventory host
  hosts: node
  gather_facts: false
  tasks:
    - name: Import the role
      ansible.builtin.import_role:
        name: clusterdns.doctor.conntrack
    - name: Save the result fact
      ansible.builtin.copy:
        content: "{{ clusterdns_remediate_result_conntrack | to_json }}"
        dest: "%s"
        mode: "0644"
      delegate_to: kernel
      check_mode: false
"""


def run_with_kernel_host(tmp_path, node_wrapper, kernel_wrapper, variables, *args):
    """The role on host ``node`` (interpreter ``node_wrapper``) with conntrack_kernel_host=kernel."""
    from conftest import ANSIBLE_BIN

    result = tmp_path / "result-kernel-host.json"
    if result.exists():
        result.unlink()
    play = tmp_path / "play-kernel-host.yml"
    play.write_text(KERNEL_HOST_PLAY % result)
    inventory = tmp_path / "inventory-kernel-host.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {
        "node": {"ansible_connection": "local", "ansible_python_interpreter": str(node_wrapper)},
        "kernel": {"ansible_connection": "local", "ansible_python_interpreter": str(kernel_wrapper)}}}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory), str(play),
           "-e", json.dumps(dict(variables, conntrack_kernel_host="kernel")), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    return proc, (json.loads(result.read_text()) if result.exists() else None)


def wrapper(tmp_path, name, prefix):
    python = os.path.realpath(shutil.which("python3", path=str(COLLECTION / ".venv" / "bin")))
    path = tmp_path / name
    path.write_text('#!/bin/sh\nexec %s %s "$@"\n' % (prefix, python))
    path.chmod(0o755)
    return path


def test_kernel_host_raises_the_shared_limit_for_a_node_in_a_network_namespace(tmp_path, files):
    # The node is a fresh network namespace per module run (unshare -n), where nf_conntrack_max is
    # read-only; conntrack_kernel_host names an inventory host in the root namespace of the same kernel.
    node, kernel = wrapper(tmp_path, "python-node", "unshare -n"), wrapper(tmp_path, "python-kernel", "")
    if lab_owns_the_limit():
        pytest.skip("the lab's conntrack-full fault is active: it owns nf_conntrack_max now")
    before = read_int(MAX)
    variables = dict(files, conntrack_target=before + 4096)
    try:
        proc, result = run_with_kernel_host(tmp_path, node, kernel, variables, "--check", "--diff")
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert result["changed"] is True and read_int(MAX) == before and not os.path.exists(files["conntrack_sysctl_file"])
        proc, result = run_with_kernel_host(tmp_path, node, kernel, variables)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert read_int(MAX) == before + 4096
        assert pathlib.Path(files["conntrack_sysctl_file"]).read_text() == "net.netfilter.nf_conntrack_max=%d\n" % (before + 4096)
        assert result["changed"] is True and result["kernel_host"] == "kernel" and result["skipped_reason"] is None
        assert result["actions"][0] == "nf_conntrack_max %d -> %d (conntrack_target) on kernel (the kernel this node shares)" % (before, before + 4096)
        # Second run: the limit is the target already; nothing is written.
        proc, result = run_with_kernel_host(tmp_path, node, kernel, variables)
        assert proc.returncode == 0, proc.stdout[-4000:]
        assert result["changed"] is False and result["actions"] == []
    finally:
        write_int(MAX, before)


def test_kernel_host_with_another_kernel_is_refused_before_any_change(tmp_path, files):
    # A mount namespace whose boot_id is another file: the kernel host claims another kernel.
    fake = tmp_path / "boot_id"
    fake.write_text("00000000-0000-4000-8000-000000000000\n")
    kernel = wrapper(tmp_path, "python-kernel", "unshare -m sh -c 'mount --bind %s /proc/sys/kernel/random/boot_id && exec \"$0\" \"$@\"'" % fake)
    node = wrapper(tmp_path, "python-node", "unshare -n")
    before = read_int(MAX)
    proc, result = run_with_kernel_host(tmp_path, node, kernel, dict(files, conntrack_target=before + 4096))
    assert proc.returncode != 0 and result is None
    assert "conntrack_kernel_host=kernel runs another kernel than node" in proc.stdout, proc.stdout[-3000:]
    assert "00000000-0000-4000-8000-000000000000" in proc.stdout
    assert read_int(MAX) == before and not os.path.exists(files["conntrack_sysctl_file"])
