# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dns_drop_trace as a process: option checks, the not-available paths, and the process handling
around bpftrace (timeout, signals, bad output).

The bpftrace used in the process tests is a synthetic stand-in, a shell script written by the test,
because those tests are about what the module does when the tracer hangs, dies or prints garbage.
A real bpftrace cannot be made to do that on purpose. The real tracer is tested in
tests/integration/test_dns_drop_trace.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _droptrace
from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import collections_root, run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dns_drop_trace"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the module only gets past its root check as root")


def run_module(tmp_path, args, env=None, timeout=120):
    return run_collection_module(MODULE, tmp_path, args, env=env, timeout=timeout)


@pytest.mark.parametrize(("args", "message"), [
    ({"seconds": 0}, "option seconds must be from 1 to 300, got 0"),
    ({"seconds": 301}, "option seconds must be from 1 to 300, got 301"),
    ({"samples": 5000}, "option samples must be from 0 to 1000, got 5000"),
    ({"ports": [53, 0]}, "option ports must list ports from 1 to 65535"),
    ({"ports": []}, "option ports must list ports from 1 to 65535"),
    ({"ports": list(range(1, 18))}, "option ports takes at most 16 ports, got 17"),
])
def test_bad_options_fail_with_the_option_named(tmp_path, args, message):
    rc, result, _err = run_module(tmp_path, args)
    assert rc == 1 and result["failed"] is True
    assert message in result["msg"]


@needs_root
def test_without_bpftrace_the_trace_is_not_available(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    # get_bin_path also looks in /sbin, /usr/sbin, /usr/local/sbin and the module's opt_dirs; the
    # Debian package installs /usr/bin/bpftrace, which is outside all of them.
    rc, result, _err = run_module(tmp_path, {}, env={"PATH": str(empty)})
    assert rc == 0 and result["changed"] is False
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is False
    assert facts["reason"] == "bpftrace is not installed (Debian/Ubuntu package bpftrace)"
    assert facts["mounted_tracefs"] is False


def _fake_bpftrace(tmp_path, version="bpftrace v0.17.0", body="exit 0"):
    """Write the synthetic bpftrace stand-in; ``body`` runs for ``bpftrace -e PROGRAM``."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "bpftrace"
    script.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo '%s'; exit 0; fi\n%s\n" % (version, body))
    script.chmod(0o755)
    return {"PATH": "%s:/usr/bin:/bin" % bindir}


@needs_root
def test_too_old_bpftrace_is_not_available(tmp_path):
    rc, result, _err = run_module(tmp_path, {}, env=_fake_bpftrace(tmp_path, version="bpftrace v0.16.0"))
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert rc == 0 and facts["available"] is False
    assert facts["reason"] == "bpftrace 0.16.0 is too old (need 0.17.0 or later)"


@needs_root
def test_unreadable_tracer_output_fails_naming_the_line(tmp_path):
    body = "echo 'Attaching 4 probes...'; echo 'CDD-ATTACHED 100'; echo 'something odd'; exit 0"
    rc, result, _err = run_module(tmp_path, {"seconds": 1}, env=_fake_bpftrace(tmp_path, body=body))
    assert rc == 1 and result["failed"] is True
    assert result["msg"].startswith("cannot read the DNS drop trace: bpftrace output line 3: unexpected trace output")
    assert result["line"] == "something odd" and result["lineno"] == 3


@needs_root
def test_tracer_error_fails_with_its_stderr(tmp_path):
    body = "echo \"ERROR: Error attaching probe: 'tracepoint:skb:kfree_skb'\" >&2; exit 1"
    rc, result, _err = run_module(tmp_path, {"seconds": 1}, env=_fake_bpftrace(tmp_path, body=body))
    assert rc == 1 and result["msg"] == "bpftrace failed to run the DNS drop trace program (exit 1)"
    assert "Error attaching probe" in result["stderr"] and result["rc"] == 1


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_module_kills_a_tracer_that_ignores_sigint(tmp_path, sig):
    pidfile = tmp_path / "pids"
    # A tracer that never ends by itself and ignores SIGINT and SIGTERM, with a child of its own.
    body = "trap '' INT TERM; echo $$ > %s; sleep 600 & echo $! >> %s; wait; wait" % (pidfile, pidfile)
    env = _fake_bpftrace(tmp_path, body=body)
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"seconds": 300}}))
    environ = dict(os.environ, PYTHONPATH=str(collections_root()), **env)
    module = subprocess.Popen([sys.executable, "-m", MODULE, str(argsfile)], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(pidfile.read_text().split() if pidfile.exists() else []) < 2:
            time.sleep(0.1)
        pids = [int(pid) for pid in pidfile.read_text().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        module.send_signal(sig)
        out, _err = module.communicate(timeout=30)
    finally:
        if module.poll() is None:
            module.kill()
            module.wait(timeout=10)
    result = json.loads(out)
    assert module.returncode == 1
    assert result["msg"] == "interrupted by signal %d while tracing; bpftrace (pid %d) was stopped" % (sig, pids[0])
    assert result["cleanup"]["killed"] is True and result["cleanup"]["remaining"] == []
    assert not any(_alive(pid) for pid in pids)
    if result["mounted_tracefs"]:
        assert result["tracefs"]["unmounted"] is True


@needs_root
def test_sigkill_to_the_module_still_takes_the_tracer_down(tmp_path):
    # The module cannot clean up after SIGKILL; the child's parent-death signal does.
    pidfile = tmp_path / "pids"
    body = "trap '' INT TERM; echo $$ > %s; exec sleep 600" % pidfile
    env = _fake_bpftrace(tmp_path, body=body)
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"seconds": 300, "unmount_tracefs": True}}))
    environ = dict(os.environ, PYTHONPATH=str(collections_root()), **env)
    module = subprocess.Popen([sys.executable, "-m", MODULE, str(argsfile)], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (pidfile.exists() and pidfile.read_text().strip()):
            time.sleep(0.1)
        pid = int(pidfile.read_text())
        assert _alive(pid)
        module.kill()
        module.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        assert not _alive(pid)
    finally:
        if module.poll() is None:
            module.kill()
            module.wait(timeout=10)
        # SIGKILL skipped the module's own unmount: undo a tracefs mount it made (never one that was there before).
        _unmount_if_only_we_mounted()


_TRACEFS_BEFORE = None


def _tracefs_mounted():
    with open("/proc/self/mountinfo") as handle:
        return "/sys/kernel/tracing" in _droptrace.tracefs_mounts(handle.read())


@pytest.fixture(autouse=True, scope="module")
def _remember_tracefs():
    global _TRACEFS_BEFORE  # noqa: PLW0603 - one module-wide flag for the SIGKILL cleanup
    _TRACEFS_BEFORE = _tracefs_mounted() if ROOT else None
    yield
    _unmount_if_only_we_mounted()


def _unmount_if_only_we_mounted():
    if ROOT and _TRACEFS_BEFORE is False and _tracefs_mounted():
        subprocess.run(["umount", "/sys/kernel/tracing"], check=False, capture_output=True)
