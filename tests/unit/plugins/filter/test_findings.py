# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dns_findings / dns_report / dns_report_render filters translate errors for Ansible users."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.filter.findings import FilterModule

FILTERS = FilterModule().filters()


def test_filters_are_exported():
    assert set(FILTERS) == {"dns_findings", "dns_report", "dns_report_render"}


def test_dns_findings_on_hosts_without_facts_returns_no_findings():
    assert FILTERS["dns_findings"]({"localhost": {}}) == []
    detail = FILTERS["dns_findings"]({"localhost": {}}, detail=True)
    assert detail["findings"] == []
    assert all(c["status"] == "skip" for c in detail["checks"])


def test_bad_input_raises_filter_error():
    with pytest.raises(AnsibleFilterError, match="dns_findings: dns_findings expects a mapping"):
        FILTERS["dns_findings"](["localhost"])
    with pytest.raises(AnsibleFilterError, match="dns_report: dns_report expects the output of dns_findings"):
        FILTERS["dns_report"]([], "2026-11-22T12:00:00Z", "1.0.0", [])
    with pytest.raises(AnsibleFilterError, match="format 'pdf' is not one of html, junit, markdown, prometheus, summary"):
        FILTERS["dns_report_render"]({}, "pdf")
    with pytest.raises(AnsibleFilterError, match="not a clusterdns.doctor report"):
        FILTERS["dns_report_render"]({"summary": {}}, "summary")


def test_invalid_finding_option_names_the_option_and_the_choices():
    with pytest.raises(AnsibleFilterError, match="dns_findings: unknown finding option.s. ndots_max; valid options: .*udp_errors_min"):
        FILTERS["dns_findings"]({}, options={"ndots_max": 3})
