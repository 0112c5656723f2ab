# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waivers: accepted findings are reported as waived, not hidden, and stop counting until they expire."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _report, _waivers
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput

FINDINGS = [
    {"id": "RES001", "severity": "critical", "scope": "node", "host": "node-a", "object": None},
    {"id": "RES001", "severity": "critical", "scope": "node", "host": "infra-1", "object": None},
    {"id": "SVC001", "severity": "warning", "scope": "cluster", "host": None, "object": "kube-system/Service/kube-dns"},
]


def waiver(**kw):
    entry = {"id": "RES001", "reason": "systemd-resolved replaced in Q1", "expires": "2027-01-31"}
    entry.update(kw)
    return entry


def test_a_waiver_marks_matching_findings_only():
    findings, expired = _waivers.apply(FINDINGS, _waivers.validate([waiver(hosts=["node-*"], owner="team-dns")]), "2026-12-02")
    assert expired == []
    assert [f.get("waiver", {}).get("owner") for f in findings] == ["team-dns", None, None]
    assert findings[0]["waiver"]["source"] == "clusterdns_waivers[0]" and "waiver" not in FINDINGS[0]  # inputs untouched


def test_object_filter_and_yaml_dates():
    valid = _waivers.validate([waiver(id="SVC001", object="kube-system/Service/kube-dns", expires=datetime.date(2027, 1, 1))])
    findings, _unused = _waivers.apply(FINDINGS, valid, datetime.date(2026, 12, 2))
    assert [f["id"] for f in findings if "waiver" in f] == ["SVC001"]


def test_expired_waivers_do_not_apply_and_are_listed():
    findings, expired = _waivers.apply(FINDINGS, _waivers.validate([waiver(expires="2026-12-01")]), "2026-12-02")
    assert not any("waiver" in f for f in findings)
    assert [w["expires"] for w in expired] == ["2026-12-01"]
    still, none = _waivers.apply(FINDINGS, _waivers.validate([waiver(expires="2026-12-02")]), "2026-12-02")  # valid through that day
    assert sum("waiver" in f for f in still) == 2 and none == []


@pytest.mark.parametrize("entry, message", [
    ({"id": "RES001", "expires": "2027-01-01"}, "clusterdns_waivers[0] has no reason"),
    (waiver(expires="next year"), "expires 'next year' is not a date; write it as YYYY-MM-DD"),
    (waiver(id="RES999"), "'RES999' is not a finding id"),
    (waiver(host="node-a"), "unknown key(s) host; valid keys"),
    (waiver(hosts="node-a"), "hosts must be a list"),
    ("RES001", "must be a mapping"),
])
def test_bad_waivers_name_the_entry(entry, message):
    with pytest.raises(InvalidInput) as err:
        _waivers.validate([entry])
    assert message in str(err.value)


def test_report_counts_only_unwaived_findings_toward_the_threshold():
    finding = {"id": "RES001", "severity": "critical", "scope": "node", "host": "node-a", "object": None, "title": "t", "detail": "d",
               "evidence": {"nameservers": ["127.0.0.53"]}, "cause": "c", "fix": {"tags": [], "roles": [], "variables": {}, "command": None},
               "references": ["r"]}
    assessment = {"findings": [finding], "checks": [{"id": "RES001", "scope": "node", "host": "node-a", "status": "fail", "reason": "d"}]}
    plain = _report.build_report(assessment, "2026-12-02T00:00:00Z", "1.0.0", ["node-a"], fail_on="critical")
    assert plain["summary"]["failed"] is True and plain["summary"]["total"] == 1
    waived = _report.build_report(assessment, "2026-12-02T00:00:00Z", "1.0.0", ["node-a"], fail_on="critical", waivers=[waiver()])
    assert waived["summary"]["failed"] is False
    assert (waived["summary"]["total"], waived["summary"]["waived"], waived["summary"]["waived_ids"]) == (0, 1, ["RES001"])
    assert waived["findings"][0]["waiver"]["expires"] == "2027-01-31"  # reported, not hidden
    markdown = _report.render_markdown(waived)
    assert "## WAIVED CRITICAL RES001" in markdown and "**Waived** until 2027-01-31: systemd-resolved replaced in Q1" in markdown
    assert 'skipped message="waived until 2027-01-31' in _report.render_junit(waived)
    later = _report.build_report(assessment, "2027-02-01T00:00:00Z", "1.0.0", ["node-a"], fail_on="critical", waivers=[waiver()])
    assert later["summary"]["failed"] is True and "Expired waiver" in _report.render_markdown(later)


def test_prometheus_textfile_parses_and_counts_like_the_report():
    parser = pytest.importorskip("prometheus_client.parser")
    finding = {"id": "DMQ001", "severity": "critical", "scope": "node", "host": 'node "a"\\1', "object": None, "title": "t",
               "detail": "d", "evidence": {"interface": "cilium_host"}, "cause": "c",
               "fix": {"tags": [], "roles": [], "variables": {}, "command": None}, "references": ["r"]}
    assessment = {"findings": [finding, dict(finding, id="RES001")],
                  "checks": [{"id": "DMQ001", "scope": "node", "host": "a", "status": "fail", "reason": "d"}]}
    report = _report.build_report(assessment, "2026-12-02T00:00:00Z", "1.0.0", ["a"], fail_on="error", waivers=[waiver()])
    families = {f.name: f for f in parser.text_string_to_metric_families(_report.render_prometheus(report))}
    by_severity = {s.labels["severity"]: s.value for s in families["clusterdns_findings"].samples}
    assert by_severity == {"info": 0, "warning": 0, "error": 0, "critical": 1}
    series = {(s.labels["id"], s.labels["waived"], s.labels["host"]) for s in families["clusterdns_finding"].samples}
    assert series == {("DMQ001", "false", 'node "a"\\1'), ("RES001", "true", 'node "a"\\1')}  # label escaping round-trips
    assert families["clusterdns_findings_waived"].samples[0].value == 1
    assert families["clusterdns_compliance_failed"].samples[0].value == 1
