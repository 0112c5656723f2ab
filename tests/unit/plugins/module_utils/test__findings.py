# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The finding engine's mechanics: skips, severity overrides, ordering, thresholds, bad input."""

from __future__ import annotations

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings
from ansible_collections.clusterdns.doctor.plugins.module_utils._catalog import CATALOG, SEVERITIES
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput


@pytest.fixture
def only_test_rules(monkeypatch):
    """Replace the registered rules by the ones a test registers."""
    monkeypatch.setattr(_findings, "RULE_MODULES", ())
    monkeypatch.setattr(_findings, "_RULES", [])
    return _findings


def test_catalog_entries_are_complete():
    design_ids = (
        "CT001 CT002 KRN001 IPVS001 IPVS002 IPT001 IPT002 DMQ001 DMQ002 RES001 RES002 RES003 NLD001 NLD002 NLD003 SG001 "
        "NODE001 CDNS001 CDNS002 CDNS003 CDNS004 CDNS005 CDNS006 CDNS007 CDNS008 CDNS009 CDNS010 CDNS011 SVC001 SVC002 "
        "WL001 WL002 WL003 WL004"
    ).split()
    assert set(design_ids) <= set(CATALOG)
    for finding_id, entry in CATALOG.items():
        assert entry["severity"] in SEVERITIES, finding_id
        assert entry["scope"] in ("node", "cluster"), finding_id
        assert entry["title"] and entry["cause"] and entry["references"], finding_id
        for role in entry["fix"]["roles"]:
            assert role.startswith("clusterdns.doctor."), finding_id


def test_node_rule_fails_passes_and_skips(only_test_rules):
    @only_test_rules.node_rule("CT001", needs=("clusterdns_conntrack",))
    def rule(host, facts, ctx):
        ratio = facts["clusterdns_conntrack"]["usage_ratio"]
        if ratio < ctx.option("conntrack_usage_warning"):
            return []
        return [only_test_rules.hit({"usage_ratio": ratio}, detail="table at %d%%" % (ratio * 100), severity="error")]

    nodes = {
        "full": {"clusterdns_conntrack": {"available": True, "usage_ratio": 0.99}},
        "fine": {"clusterdns_conntrack": {"available": True, "usage_ratio": 0.10}},
        "container": {"clusterdns_conntrack": {"available": False, "reason": "nf_conntrack not loaded"}},
        "unreachable": {},
    }
    result = only_test_rules.evaluate(nodes)
    assert [(f["id"], f["host"], f["severity"]) for f in result["findings"]] == [("CT001", "full", "error")]
    finding = result["findings"][0]
    assert finding["evidence"] == {"usage_ratio": 0.99}
    assert finding["detail"] == "table at 99%"
    assert finding["fix"]["command"] == "ansible-playbook clusterdns.doctor.remediate --tags conntrack --limit full"
    assert finding["cause"] == CATALOG["CT001"]["cause"]
    status = {c["host"]: (c["status"], c["reason"]) for c in result["checks"]}
    assert status["full"][0] == "fail"
    assert status["fine"] == ("pass", None)
    assert status["container"] == ("skip", "clusterdns_conntrack unavailable: nf_conntrack not loaded")
    assert status["unreachable"] == ("skip", "clusterdns_conntrack not gathered")


def test_cluster_rules_skip_without_cluster(only_test_rules):
    @only_test_rules.cluster_rule("SVC001")
    def rule(cluster, ctx):
        return [only_test_rules.hit({"sessionAffinity": "ClientIP"}, obj="kube-system/Service/kube-dns")]

    skipped = only_test_rules.evaluate({}, None)
    assert skipped["findings"] == []
    assert skipped["checks"] == [{"id": "SVC001", "scope": "cluster", "host": None, "status": "skip", "reason": "no cluster reachable"}]
    assessed = only_test_rules.evaluate({}, {"available": True})
    assert assessed["findings"][0]["object"] == "kube-system/Service/kube-dns"
    assert assessed["findings"][0]["fix"]["command"] == "ansible-playbook clusterdns.doctor.remediate --tags coredns"


def test_rule_can_skip_with_reason_and_findings_sorted_by_severity(only_test_rules):
    @only_test_rules.node_rule("NODE001")
    def warn(host, facts, ctx):
        return [only_test_rules.hit({"RcvbufErrors": 3})]

    @only_test_rules.node_rule("RES001")
    def critical(host, facts, ctx):
        if host == "b":
            raise only_test_rules.Skip("no kubelet on this node")
        return [only_test_rules.hit({"nameserver": "127.0.0.53"})]

    result = only_test_rules.evaluate({"a": {}, "b": {}}, options={"skip": []})
    assert [(f["id"], f["host"]) for f in result["findings"]] == [("RES001", "a"), ("NODE001", "a"), ("NODE001", "b")]
    assert {"id": "RES001", "scope": "node", "host": "b", "status": "skip", "reason": "no kubelet on this node"} in result["checks"]
    assert only_test_rules.evaluate({"a": {}}, options={"skip": ["NODE001", "RES001"]})["checks"] == []


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [("none", []), ("critical", ["RES001"]), ("warning", ["RES001", "NODE001"]), ("info", ["RES001", "NODE001", "WL004"])],
)
def test_at_or_above(threshold, expected):
    findings = [{"id": "RES001", "severity": "critical"}, {"id": "NODE001", "severity": "warning"}, {"id": "WL004", "severity": "info"}]
    assert [f["id"] for f in _findings.at_or_above(findings, threshold)] == expected


def test_bad_input_is_named():
    with pytest.raises(InvalidInput, match="mapping of host name"):
        _findings.evaluate(["localhost"])
    with pytest.raises(InvalidInput, match="facts of host 'n1' must be a mapping"):
        _findings.evaluate({"n1": "oops"})
    with pytest.raises(InvalidInput, match="fail threshold 'severe' is not one of none, info, warning, error, critical"):
        _findings.at_or_above([], "severe")
    with pytest.raises(ValueError, match="severity 'fatal'"):
        _findings.hit({}, severity="fatal")


def test_real_rule_modules_register_known_ids():
    rules = _findings._load_rules()
    assert all(rule.id in CATALOG for rule in rules)


@pytest.mark.parametrize("options, message", [
    ({"conntrack_usage_warnin": 0.5}, r"unknown finding option\(s\) conntrack_usage_warnin; valid options: .*conntrack_usage_warning"),
    ({"conntrack_usage_warning": "high"}, "conntrack_usage_warning must be a number .default 0.8., got 'high'"),
    ({"udp_errors_min": True}, "udp_errors_min must be a number"),
    ({"udp_errors_min": -1}, "udp_errors_min must not be negative"),
    ({"conntrack_usage_error": 95}, "conntrack_usage_error is a share between 0 and 1"),
    ({"conntrack_usage_warning": 0.97}, r"conntrack_usage_warning \(0.97\) must not be above conntrack_usage_error \(0.95\)"),
    ({"skip": "CT001"}, "skip must be a list of finding ids"),
    ({"skip": ["CT01", "KRN001"]}, r"skip names unknown finding id\(s\) CT01; valid ids: .*CT001, CT002"),
    (["skip"], "finding options must be a mapping"),
])
def test_invalid_options_are_refused_with_the_valid_choices(options, message):
    with pytest.raises(InvalidInput, match=message):
        _findings.evaluate({}, options=options)


def test_valid_options_change_only_what_they_name():
    merged = _findings.validate_options({"conntrack_usage_warning": 0.5, "cdns009_qps_per_replica": 10, "skip": ["KRN001"]})
    assert merged["conntrack_usage_warning"] == 0.5 and merged["conntrack_usage_error"] == 0.95
    assert merged["skip"] == ["KRN001"] and merged["udp_errors_min"] == 1
    assert _findings.validate_options(None) == _findings.DEFAULT_OPTIONS
