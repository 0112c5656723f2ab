# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Report document, Markdown and JUnit rendering."""

from __future__ import annotations

import json
import pathlib
import xml.etree.ElementTree as ET

import jsonschema
import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings, _report

SCHEMA = json.loads((pathlib.Path(__file__).parents[4] / "docs" / "findings.schema.json").read_text())


@pytest.fixture
def assessment(monkeypatch):
    monkeypatch.setattr(_findings, "RULE_MODULES", ())
    monkeypatch.setattr(_findings, "_RULES", [])

    @_findings.node_rule("CT001", needs=("clusterdns_conntrack",))
    def ct(host, facts, ctx):
        c = facts["clusterdns_conntrack"]
        if c["count"] < c["max"]:
            return []
        return [_findings.hit({"count": c["count"], "max": c["max"]}, detail="conntrack table %d/%d" % (c["count"], c["max"]), severity="error")]

    @_findings.cluster_rule("SVC001")
    def svc(cluster, ctx):
        return []

    nodes = {
        "node-a": {"clusterdns_conntrack": {"count": 262144, "max": 262144}},
        "node-b": {"clusterdns_conntrack": {"count": 10, "max": 262144}},
        "node-c": {},
    }
    return _findings.evaluate(nodes, None)


def make(assessment, fail_on="none"):
    return _report.build_report(assessment, "2026-11-22T12:00:00Z", "1.0.0", ["node-a", "node-b", "node-c"],
                                {"status": "skipped", "reason": "no kubeconfig at /root/.kube/config", "context": None}, fail_on)


def test_report_document_matches_schema(assessment):
    report = make(assessment)
    jsonschema.validate(report, SCHEMA)
    assert report["summary"]["by_severity"] == {"critical": 0, "error": 1, "warning": 0, "info": 0}
    assert report["summary"]["checks"] == {"pass": 1, "fail": 1, "skip": 2}
    assert report["summary"]["ids"] == ["CT001"]
    assert report["summary"]["failed"] is False


@pytest.mark.parametrize(("fail_on", "failed"), [("error", True), ("critical", False), ("none", False), ("info", True)])
def test_fail_on_threshold(assessment, fail_on, failed):
    report = make(assessment, fail_on)
    assert report["summary"]["failed"] is failed
    assert report["summary"]["failing_ids"] == (["CT001"] if failed else [])


def test_markdown_has_evidence_cause_and_command(assessment):
    text = _report.render_markdown(make(assessment, "error"))
    assert "| error | 1 |" in text
    assert "## ERROR CT001: Conntrack table nearly full" in text
    assert "On node `node-a`: conntrack table 262144/262144" in text
    assert "- count: `262144`" in text
    assert "`ansible-playbook clusterdns.doctor.remediate --tags conntrack --limit node-a`" in text
    assert "Compliance threshold `error`: FAILED: findings at or above error: CT001." in text
    assert "| SVC001 | cluster | no cluster reachable |" in text
    assert "| CT001 | node-c | clusterdns_conntrack not gathered |" in text


def test_junit_one_case_per_check_and_host(assessment):
    root = ET.fromstring(_report.render_junit(make(assessment)))
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"clusterdns.doctor.node-a", "clusterdns.doctor.node-b", "clusterdns.doctor.node-c", "clusterdns.doctor.cluster"}
    failing = suites["clusterdns.doctor.node-a"].find("testcase")
    assert failing.get("name") == "CT001 Conntrack table nearly full"
    assert failing.find("failure").get("message") == "conntrack table 262144/262144"
    assert "Fix: ansible-playbook clusterdns.doctor.remediate --tags conntrack --limit node-a" in failing.find("failure").text
    assert suites["clusterdns.doctor.node-b"].find("testcase").find("failure") is None
    assert suites["clusterdns.doctor.node-c"].get("skipped") == "1"
    assert suites["clusterdns.doctor.cluster"].find("testcase/skipped").get("message") == "no cluster reachable"


def test_summary_line(assessment):
    assert _report.summary_line(make(assessment)) == "clusterdns.doctor: 1 finding(s) (1 error) on 3 node(s); cluster skipped"


def test_markdown_says_which_cluster_was_read(assessment):
    skipped = _report.render_markdown(make(assessment))
    assert "Cluster: skipped (no kubeconfig at /root/.kube/config)." in skipped
    assessed = _report.build_report(assessment, "2026-11-22T12:00:00Z", "1.0.0", ["node-a"], {
        "status": "assessed", "reason": None, "context": "prod-eu", "source": "kubeconfig /etc/clusterdns/kubeconfig",
        "server_version": "v1.34.4"})
    assert ("Cluster: assessed (from kubeconfig /etc/clusterdns/kubeconfig; context `prod-eu`; Kubernetes v1.34.4)."
            in _report.render_markdown(assessed))
    token = dict(assessed["cluster"], context=None, source="K8S_AUTH_HOST https://10.0.0.1:6443")
    assert "Cluster: assessed (from K8S_AUTH_HOST https://10.0.0.1:6443; Kubernetes v1.34.4)." in _report.render_markdown(dict(assessed, cluster=token))
