# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml through ansible-runner with a private data dir, as AWX runs it, against the node
test bed: a compliant node gives a successful job, the seed-003 node a failed one; the set_stats
artifacts carry the counts and ids; no secret reaches any event or artifact."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys

import pytest
import yaml
from conftest import COLLECTION

ansible_runner = pytest.importorskip("ansible_runner")

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not os.path.exists("/usr/sbin/dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
]

SECRET = "clusterdns-test-secret-7f3a9c"  # a bearer token that must never be printed or stored


def private_data_dir(tmp_path, bed):
    pd = tmp_path / "pd"
    (pd / "env").mkdir(parents=True)
    (pd / "inventory").mkdir()
    shutil.copytree(COLLECTION / "playbooks", pd / "project")
    wrapper = tmp_path / "python3"
    wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (bed.node, sys.executable))
    wrapper.chmod(0o755)
    (pd / "inventory" / "hosts").write_text(
        "[clusterdns_nodes]\nbed-node ansible_connection=local ansible_python_interpreter=%s\n"
        "[local]\nlocalhost ansible_connection=local ansible_python_interpreter=%s\n" % (wrapper, sys.executable))
    collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections"))
    (pd / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_NOCOLOR": "1"}))
    (pd / "env" / "settings").write_text(yaml.safe_dump({"job_timeout": 600, "idle_timeout": 300}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": SECRET}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return pd, kubeconfig


def run_job(tmp_path, bed, ident):
    pd, kubeconfig = private_data_dir(tmp_path, bed)
    extravars = {"clusterdns_fail_on": "critical", "clusterdns_kubeconfig": str(kubeconfig),
                 "clusterdns_report_dir": str(tmp_path / "report")}
    result = ansible_runner.run(private_data_dir=str(pd), playbook="diagnose.yml", ident=ident, extravars=extravars, quiet=True)
    events = list(result.events)
    stats = next(e for e in events if e["event"] == "playbook_on_stats")
    artifacts = pd / "artifacts" / ident
    return result, events, stats["event_data"].get("artifact_data", {}), artifacts


def assert_no_secret(artifacts, tmp_path):
    for path in artifacts.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    for path in (tmp_path / "report").iterdir():
        assert SECRET not in path.read_text(errors="replace"), path


def test_compliant_node_is_a_successful_job(node_bed, tmp_path):
    node_bed.start_dnsmasq("bind-dynamic\n")
    result, events, data, artifacts = run_job(tmp_path, node_bed, "compliant")
    assert (result.rc, result.status) == (0, "successful")
    assert (artifacts / "rc").read_text().strip() == "0" and (artifacts / "status").read_text().strip() == "successful"
    assert data["clusterdns_failed"] is False
    assert "DMQ001" not in data["clusterdns_finding_ids"]
    assert [pathlib.Path(p).name for p in data["clusterdns_report_files"]][:1] == ["findings.json"]
    assert any(e["event"] == "runner_on_ok" and e["event_data"].get("host") == "bed-node" for e in events)
    assert_no_secret(artifacts, tmp_path)


def test_seed003_node_is_a_failed_job_with_the_ids_in_the_artifacts(node_bed, tmp_path):
    node_bed.start_dnsmasq("bind-dynamic\nexcept-interface=cilium_*\n")
    result, events, data, artifacts = run_job(tmp_path, node_bed, "incident")
    assert result.rc == 2 and result.status == "failed"
    assert data["clusterdns_failed"] is True and "DMQ001" in data["clusterdns_finding_ids"]
    assert data["clusterdns_findings_by_severity"]["critical"] >= 1
    failed = [e for e in events if e["event"] == "runner_on_failed"]
    assert failed and "Findings at or above critical: DMQ001" in json.dumps(failed[-1]["event_data"]["res"])
    report = json.loads((tmp_path / "report" / "findings.json").read_text())
    assert report["summary"]["failing_ids"] == ["DMQ001"]
    assert_no_secret(artifacts, tmp_path)
