# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/awx_setup.yml with the awx.awx collection (24.6.1, not in the ansible 14 package: see
docs/awx.md for where it comes from): syntax check, the check-mode dry run that contacts no
controller and prints the objects, input validation, and a real run against a closed loopback port
that fails on the first controller call with the URL in the message."""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket

import pytest
from conftest import COLLECTION, run_playbook

EXTRA = pathlib.Path(os.environ.get("CLUSTERDNS_EXTRA_COLLECTIONS", str(COLLECTION / ".cache" / "extra_collections")))
AWX = EXTRA / "ansible_collections" / "awx" / "awx"

pytestmark = pytest.mark.skipif(not (AWX / "MANIFEST.json").exists(), reason="awx.awx is not under %s (make setup extracts it)" % EXTRA)

ENV = {
    "ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (COLLECTION / ".cache" / "collections", EXTRA),
    "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.default",
    "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
    # whatever the developer's shell holds, these tests talk to no controller
    "CONTROLLER_HOST": "", "CONTROLLER_OAUTH_TOKEN": "", "CONTROLLER_USERNAME": "", "CONTROLLER_PASSWORD": "",
}
VARS = {
    "clusterdns_awx_scm_url": "https://git.example.org/platform/dns-doctor.git",
    "clusterdns_awx_credentials": [{"name": "nodes ssh", "credential_type": "Machine"},
                                   {"name": "cluster reader", "credential_type": "OpenShift or Kubernetes API Bearer Token"}],
    "clusterdns_awx_notify_on_error": ["ops webhook"],
    "clusterdns_awx_hosts": ["node1.example.org", "node2.example.org"],
}


def run(*args, extra=None):
    return run_playbook("awx_setup.yml", "-e", json.dumps(dict(VARS, **(extra or {}))), *args, env=ENV)


def objects(stdout):
    """The object definitions the dry run printed (debug var in the json result format)."""
    match = re.search(r"ok: \[localhost\] => (\{.*?\n\})", stdout, re.S)
    assert match, stdout
    return json.loads(match.group(1))["__clusterdns_awx_objects"]


def test_syntax_check():
    result = run_playbook("awx_setup.yml", "--syntax-check", env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_is_a_dry_run_that_contacts_nothing():
    result = run("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    defs = objects(result.stdout)
    diagnose, drift = defs["job_templates"]
    assert (diagnose["playbook"], diagnose["job_type"], diagnose["survey_enabled"]) == ("playbooks/diagnose.yml", "run", True)
    assert (drift["playbook"], drift["job_type"], drift["diff_mode"]) == ("playbooks/remediate.yml", "check", True)
    survey = {q["variable"]: q for q in defs["survey"]["spec"]}
    assert survey["clusterdns_fail_on"]["choices"] == ["none", "info", "warning", "error", "critical"]
    assert survey["clusterdns_fail_on"]["default"] == "error"
    assert {"clusterdns_hosts", "clusterdns_context", "clusterdns_sample_interval"} <= set(survey)
    assert defs["schedule"]["unified_job_template"] == diagnose["name"]
    assert defs["schedule"]["rrule"].startswith("DTSTART;TZID=UTC:") and "FREQ=DAILY" in defs["schedule"]["rrule"]
    assert defs["project"]["scm_url"] == VARS["clusterdns_awx_scm_url"]
    assert defs["inventory"]["hosts"] == VARS["clusterdns_awx_hosts"]
    assert defs["notifications"]["error"] == ["ops webhook"]
    # every controller task was skipped: nothing was sent anywhere
    assert "changed=0" in result.stdout and "failed=0" in result.stdout
    assert "skipping: [localhost]" in result.stdout
    # credentials are names and types only
    assert all(set(c) == {"name", "credential_type"} for c in defs["credentials"])


def test_inventory_source_instead_of_hosts():
    defs = objects(run("--check", extra={"clusterdns_awx_inventory_source_path": "inventory/production.yml"}).stdout)
    assert defs["inventory"]["source_path"] == "inventory/production.yml" and defs["inventory"]["hosts"] == []


@pytest.mark.parametrize("extra, message", [
    ({"clusterdns_awx_fail_on": "sometimes"}, "value of clusterdns_awx_fail_on must be one of: none, info, warning, error, critical"),
    ({"clusterdns_awx_schedule_rrule": "every day at six"}, "is not an AWX rrule"),
    ({"clusterdns_awx_credentials": [{"name": "nodes ssh"}]}, "credential_type"),
])
def test_bad_input_is_named(extra, message):
    result = run("--check", extra=extra)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout


def test_missing_scm_url_is_named():
    result = run_playbook("awx_setup.yml", "--check", env=ENV)
    assert result.returncode != 0 and "clusterdns_awx_scm_url" in result.stdout, result.stdout


@pytest.fixture
def closed_port():
    """A loopback TCP port with nothing listening (bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_real_run_calls_the_controller_first_and_fails_clearly(closed_port):
    url = "https://127.0.0.1:%d" % closed_port
    result = run(extra={"clusterdns_awx_dry_run": False, "clusterdns_awx_controller_host": url})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TASK [Look up the organization Default]" in result.stdout
    assert "%s/api/v2/organizations/" % url in result.stdout and "Connection refused" in result.stdout
    assert "TASK [Create the project" not in result.stdout
