# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node test bed removes everything it made: after a failed or killed test too.

A CI run once left two beds (``cdb...n``/``cdb...p`` with ``cilium_host``, made in the same
second by the two-bed fixture of test_remediate_failure_report.py) on the machine. A pytest
process stopped with SIGTERM (``timeout``, a cancelled job) dies without running one ``finally``;
a SIGKILLed one cannot clean up at all; ``down`` returned 0 without a state file and never
checked ``ip netns del``. Shown here, each on real namespaces: ``down`` with dnsmasq gone, the
state file gone and a process still inside; a namespace that stays is an error naming it; SIGTERM
still runs the fixtures' teardown; the next session sweeps the beds of a run killed outright and
leaves alone those whose owner still runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from conftest import COLLECTION
from testbed import bed as testbed

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
]

TESTS = COLLECTION / "tests"


def _env():
    return dict(os.environ, PYTHONPATH=str(TESTS))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "testbed", *args], env=_env(), capture_output=True, text=True, timeout=120, check=False)


def _exists(*names):
    return [name for name in names if testbed.netns_exists(name)]


def _pids(name):
    return subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30, check=False).stdout.split()


def _wait(predicate, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_down_removes_the_bed_when_dnsmasq_and_the_state_file_are_gone(tmp_path):
    state_dir = tmp_path / "bed"
    up = _cli("up", str(state_dir), "--except-interface", "cilium_*", "--owner-pid", str(os.getpid()))
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((state_dir / "state.json").read_text())
        names = (state["node"], state["pod"])
        assert _exists(*names) == list(names)
        registry = os.path.join(testbed.REGISTRY, state["node"] + ".json")
        assert json.loads(pathlib.Path(registry).read_text())["workdir"] == str(state_dir)
        # dnsmasq gone, the state file gone (as after an up killed half-way), a process still inside
        os.kill(int((state_dir / "dnsmasq.pid").read_text()), signal.SIGTERM)
        (state_dir / "state.json").unlink()
        sleeper = subprocess.Popen(["ip", "netns", "exec", state["node"], "sleep", "300"])
        assert _wait(lambda: bool(_pids(state["node"])))
        down = _cli("down", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert _exists(*names) == []
        assert sleeper.wait(timeout=10) != 0  # killed by down
        assert not os.path.exists(registry)
        again = _cli("down", str(state_dir))
        assert again.returncode == 0, again.stderr
    finally:
        _cli("down", str(state_dir))


def test_a_namespace_that_stays_is_an_error_naming_it(tmp_path, monkeypatch):
    # /run/netns stand-in with an entry `ip netns del` cannot remove (it is not in /run/netns)
    monkeypatch.setattr(testbed, "NETNS_DIR", str(tmp_path))
    (tmp_path / "cdbstuckn").write_text("")
    registry = tmp_path / "cdbstuckn.json"
    registry.write_text("{}")
    with pytest.raises(testbed.BedError, match=r"network namespaces left behind: cdbstuckn \(ip netns del exited [1-9]"):
        testbed.remove(["cdbstuckn", "cdbgonep"], str(registry))
    assert registry.exists()  # kept: the next sweep or down tries again


PLUGIN_TEST = '''
import pathlib, time

def test_waits(node_bed):
    pathlib.Path(%r).write_text(node_bed.node + " " + node_bed.pod)
    time.sleep(120)
'''


def test_sigterm_still_runs_the_teardown(tmp_path):
    names_file = tmp_path / "names"
    test_file = tmp_path / "test_sigterm_child.py"
    test_file.write_text(PLUGIN_TEST % str(names_file))
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "testbed.pytest_plugin",
                              "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"), str(test_file)],
                             env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait(names_file.exists, 60), child.communicate(timeout=5)[0] if child.poll() is not None else "no bed within 60 s"
        names = names_file.read_text().split()
        assert _exists(*names) == names
        child.send_signal(signal.SIGTERM)
        out = child.communicate(timeout=60)[0]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == pytest.ExitCode.INTERRUPTED, out
    assert _exists(*names) == [], out


CHILD_TESTS = {
    "fails": ("import pathlib\n\ndef test_fails(node_bed):\n    pathlib.Path(%r).write_text(node_bed.node + ' ' + node_bed.pod)\n"
              "    assert False, 'a failing test'\n"),
    "leaks": ("import pathlib\nfrom testbed.bed import Bed\n\ndef test_leaks():\n    bed = Bed()\n"
              "    pathlib.Path(%r).write_text(bed.node + ' ' + bed.pod)\n"),
}


@pytest.mark.parametrize("case", sorted(CHILD_TESTS))
def test_a_failing_test_and_a_leaking_test_leave_no_bed(tmp_path, case):
    # fails: the fixture's teardown removes the bed. leaks: a test that never closes its bed passes,
    # but the session's end removes the bed and fails the run, naming it.
    names_file = tmp_path / "names"
    test_file = tmp_path / ("test_child_%s.py" % case)
    test_file.write_text(CHILD_TESTS[case] % str(names_file))
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "testbed.pytest_plugin",
                            "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"), str(test_file)],
                           env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    names = names_file.read_text().split()
    assert child.returncode == pytest.ExitCode.TESTS_FAILED, child.stdout
    assert _exists(*names) == [], child.stdout
    if case == "leaks":
        assert "1 passed" in child.stdout and "node test bed: a test left %s/%s behind (removed now)" % tuple(names) in child.stdout
    else:
        assert "a failing test" in child.stdout


def test_the_next_session_sweeps_the_beds_of_a_killed_run_and_only_those(tmp_path):
    # A process that makes a bed and dies without any clean-up (SIGKILL, power cut of a runner).
    # Its DNS pod namespace and that namespace's dnsmasq go too.
    killed = subprocess.run([sys.executable, "-c", "import os\nfrom testbed.bed import Bed\nb = Bed(workdir=%r)\nb.add_dns_pod()\n"
                             "print(b.node, b.pod, *b.extra, flush=True)\nos._exit(0)\n" % str(tmp_path / "killed")],
                            env=_env(), capture_output=True, text=True, timeout=60, check=True)
    orphan = killed.stdout.split()
    assert len(orphan) == 3 and _pids(orphan[2])  # the DNS pod's dnsmasq runs on
    live = testbed.Bed("cni0", workdir=str(tmp_path / "live"))  # owned by this process, which runs
    try:
        assert _exists(*orphan) == orphan
        swept = _cli("sweep")
        assert swept.returncode == 0, swept.stderr
        assert "removed %s %s: its owner, process" % tuple(orphan[:2]) in swept.stdout
        assert _exists(*orphan) == []
        assert _exists(live.node, live.pod) == [live.node, live.pod]
        assert live.node not in swept.stdout
    finally:
        live.close()
        if _exists(*orphan):
            testbed.remove(orphan)
    assert _exists(live.node, live.pod) == []


def test_close_after_a_failed_build_leaves_nothing(tmp_path):
    # A veth name the kernel refuses fails the build after both namespaces exist.
    def ours():
        return {n for n in os.listdir(testbed.NETNS_DIR) if n.startswith("cdb")} if os.path.isdir(testbed.NETNS_DIR) else set()

    before = ours()
    with pytest.raises(testbed.BedError, match="bad name!"):
        testbed.Bed("bad name!", workdir=str(tmp_path / "bad"))
    assert [e for e in testbed.registered() if e.get("workdir") == str(tmp_path / "bad")] == []
    assert ours() - before == set()
