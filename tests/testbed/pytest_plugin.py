# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest side of the node test bed: the ``node_bed`` fixture and the clean-up of killed runs.

tests/integration/conftest.py imports these names; another test directory can load the module
with ``-p testbed.pytest_plugin`` (``tests`` on the path).

* ``node_bed``: a bed (bed.py) owned by the pytest process, closed in a ``finally``; a namespace
  still there after ``close()`` fails the test's teardown.
* SIGTERM (``timeout``, a CI job cancelled) raises KeyboardInterrupt: pytest then stops and still
  runs every fixture's teardown, so the beds go. Without this, Python dies on SIGTERM without
  running a single ``finally``. Further SIGTERMs are ignored until the teardown is done.
* When a session starts (as root), the beds whose owner process has ended (a run killed with
  SIGKILL) are removed; when it ends, the beds this session still owns are removed and the
  session fails: a test left one behind.
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from testbed import bed as testbed


def _interrupt(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt("SIGTERM: stopping, the fixtures' teardown still runs")


def pytest_configure(config):
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _interrupt)


def _say(session, text, **markup):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(text, **markup)


def pytest_sessionstart(session):
    if os.geteuid() != 0 or not os.path.isdir(testbed.REGISTRY):
        return
    for node, pod, reason in testbed.sweep():
        _say(session, "node test bed: removed %s/%s, left over: %s" % (node, pod, reason), yellow=True)


def pytest_sessionfinish(session, exitstatus):
    if os.geteuid() != 0 or not os.path.isdir(testbed.REGISTRY):
        return
    leaked = [(node, pod) for node, pod, reason in testbed.sweep(owner_pid=os.getpid()) if reason.startswith("still there")]
    if leaked:
        _say(session, "node test bed: a test left %s behind (removed now)" % ", ".join("%s/%s" % pair for pair in leaked), red=True)
        if session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def node_bed(request, tmp_path):
    """A node test bed (tests/testbed/bed.py): node and pod namespaces joined by a veth whose
    node-side name is the fixture's parameter (indirect parametrize; default ``cilium_host``),
    and the DNS VIP 169.254.25.10 on the node's lo. Removed after the test, also when it fails
    or the run is stopped with SIGTERM."""
    made = testbed.Bed(getattr(request, "param", "cilium_host"), workdir=str(tmp_path / "bed"))
    try:
        yield made
    finally:
        made.close()
