# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers for the integration tests: run the collection's playbooks like a user does."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = COLLECTION / "tests" / "unit" / "plugins" / "module_utils" / "fixtures"
# Directory holding the ansible-playbook to test with (the "compat" stage points it at the
# oldest supported ansible-core).
ANSIBLE_BIN = pathlib.Path(os.environ.get("CLUSTERDNS_ANSIBLE_BIN", str(COLLECTION / ".venv" / "bin")))
# tests/testbed (the node test bed) is imported as the package "testbed".
if str(COLLECTION / "tests") not in sys.path:
    sys.path.append(str(COLLECTION / "tests"))

# The node_bed fixture, SIGTERM turned into a clean stop, and the sweep of beds left by killed runs.
from testbed import pytest_plugin as testbed_plugin

node_bed = testbed_plugin.node_bed
pytest_configure = testbed_plugin.pytest_configure
pytest_sessionstart = testbed_plugin.pytest_sessionstart
pytest_sessionfinish = testbed_plugin.pytest_sessionfinish


def run_playbook(playbook, *args, cwd=None, env=None, timeout=600):
    """Run a playbook of this checkout; returns the CompletedProcess (never raises on rc)."""
    environ = dict(os.environ)
    environ.update({
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY": str(COLLECTION / "inventory" / "localhost.yml"),
    })
    environ.update(env or {})
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), str(COLLECTION / "playbooks" / playbook), *args]
    return subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout, check=False)


def load_report(report_dir):
    return json.loads((pathlib.Path(report_dir) / "findings.json").read_text())


@pytest.fixture
def report_dir(tmp_path):
    return tmp_path / "report"


def bed_inventory(bed, tmp_path):
    """An inventory with one host, bed-node, whose interpreter runs inside the bed's node namespace."""
    wrapper = tmp_path / "python3"
    wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (bed.node, sys.executable))
    wrapper.chmod(0o755)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"clusterdns_nodes": {"hosts": {"bed-node": {
        "ansible_connection": "local", "ansible_python_interpreter": str(wrapper)}}}}))
    return str(inventory)
