# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.html (_html.render_html) on real reports: the diagnose report of the ct-full-node bundle
(fixtures/reports/SOURCES.md) plus DMQ001 found by the real rule on the seed-003 dnsmasq capture."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
from html.parser import HTMLParser

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings, _html, _probe
from ansible_collections.clusterdns.doctor.plugins.module_utils import _rules_dnsmasq  # noqa: F401  pylint: disable=unused-import
from ansible_collections.clusterdns.doctor.plugins.module_utils._dnsmasq import POD_INTERFACE_PATTERNS
from ansible_collections.clusterdns.doctor.plugins.module_utils._report import build_report
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source
from ansible_collections.clusterdns.doctor.plugins.modules.dnsmasq_facts import gather

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
REPORT = json.loads((FIXTURES / "reports" / "diagnose-bundle-ct-full-node.json").read_text())
DNSMASQ_CONF = "/tmp/cdbed-bqije4jo/dnsmasq.conf"  # the path in the captured dnsmasq command line


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of a rendered page."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


def hop_states(page):
    return {attrs["data-hop"]: (attrs["data-state"], attrs["data-severity"]) for tag, attrs in parse(page).tags if tag == "g" and "data-hop" in attrs}


@pytest.fixture
def report_with_dmq001(tmp_path):
    """The ct-full-node report plus a node whose dnsmasq ignores cilium_host (seed 003 capture)."""
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    captures = FIXTURES / "dnsmasq"
    for name, fixture in (("dnsmasq-cmdline", "local-netns-dnsmasq-cmdline-except-cilium.txt"), ("ip-addr", "local-netns-ip-addr-cilium.json"),
                          ("ss-lnup", "local-netns-ss-lnup-except-cilium.txt"), ("ss-lntp", "local-netns-ss-lntp-except-cilium.txt")):
        shutil.copy(captures / fixture, root / "commands" / (name + ".txt"))
    conf = root / DNSMASQ_CONF.lstrip("/")
    conf.parent.mkdir(parents=True)
    shutil.copy(captures / "local-netns-except-cilium.conf", conf)
    node2 = _findings.evaluate({"node-cilium": {"clusterdns_dnsmasq": gather(Source(None, str(root)), POD_INTERFACE_PATTERNS)}})
    node2["findings"] = [f for f in node2["findings"] if f["id"] == "DMQ001"]
    assert node2["findings"], "the seed-003 capture no longer gives DMQ001"
    node2["checks"] = [c for c in node2["checks"] if c["id"].startswith("DMQ")]
    assessment = {"findings": REPORT["findings"] + node2["findings"], "checks": REPORT["checks"] + node2["checks"]}
    return build_report(assessment, REPORT["generated_at"], "1.0.0", REPORT["hosts"] + ["node-cilium"], REPORT["cluster"], fail_on="error")


def test_every_finding_has_its_section(report_with_dmq001):
    page = _html.render_html(report_with_dmq001)
    sections = [attrs["data-finding"] for tag, attrs in parse(page).tags if tag == "article"]
    assert sorted(sections) == sorted(f["id"] for f in report_with_dmq001["findings"])
    assert {"CT001", "DMQ001", "RES001"} <= set(sections)
    # most severe first, and the fix command of each finding is printed
    assert page.index('data-finding="RES001"') < page.index('data-finding="CT001"') < page.index('data-finding="KRN001"')
    for finding in report_with_dmq001["findings"]:
        if finding["fix"]["command"]:
            assert finding["fix"]["command"] in page
    assert "Compliance threshold error: FAILED" in page


def test_failing_hops_are_marked(report_with_dmq001):
    states = hop_states(_html.render_html(report_with_dmq001))
    assert states["netfilter"] == ("fail", "error")      # CT001 (error) is the worst of CT001 CT002 KRN001
    assert states["clusterip"] == ("fail", "error")      # the DNAT path to the ClusterIP goes through conntrack
    assert states["resolver"] == ("fail", "critical")    # DMQ001 and RES001 are critical
    # no cluster in this report: the cluster hops were not checked, which is not "OK"
    assert states["coredns"][0] == "unchecked" and states["upstream"][0] == "unchecked"


def test_a_hop_whose_checks_passed_is_ok():
    report = json.loads(json.dumps(REPORT))
    report["findings"] = [f for f in report["findings"] if f["id"] not in ("RES001",)]
    for check in report["checks"]:
        if check["id"] == "RES001":
            check["status"], check["reason"] = "pass", None
    states = hop_states(_html.render_html(report))
    assert states["resolver"] == ("ok", "")
    assert states["netfilter"][0] == "fail"


def test_waived_findings_do_not_mark_a_hop():
    report = json.loads(json.dumps(REPORT))
    for finding in report["findings"]:
        if finding["id"] == "RES001":
            finding["waiver"] = {"reason": "stub kept until the node image rebuild", "expires": "2099-01-01", "source": "waivers.yml"}
    page = _html.render_html(report)
    assert hop_states(page)["resolver"][0] != "fail"
    assert "stub kept until the node image rebuild" in page


EVIL = '</pre><script>alert(1)</script><img src="http://203.0.113.9/x.png" onerror="x()"><a href="https://evil.example/">'


def test_evil_strings_are_escaped():
    report = json.loads(json.dumps(REPORT))
    finding = report["findings"][0]
    finding["detail"] = EVIL
    finding["evidence"] = {EVIL: EVIL, "lines": [EVIL]}
    finding["fix"]["command"] = EVIL
    report["hosts"] = [EVIL]
    report["cluster"] = {"status": "assessed", "reason": None, "source": "kubeconfig " + EVIL, "context": EVIL, "server_version": "v1.34.4"}
    report["checks"][-1].update(status="skip", reason=EVIL)
    page = _html.render_html(report)
    elements = parse(page)
    assert not [t for t, _a in elements.tags if t in ("script", "img", "a", "link", "iframe")]
    assert not [a for _t, a in elements.tags if any(k.startswith("on") for k in a)]
    # the text is still there for the reader, as text
    assert EVIL in "".join(elements.text)
    assert "Cluster: assessed (from kubeconfig %s; context %s; Kubernetes v1.34.4)." % (EVIL, EVIL) in "".join(elements.text)


def test_nothing_external_is_loaded(report_with_dmq001):
    page = _html.render_html(report_with_dmq001)
    assert not re.search(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page, re.I)
    assert "@import" not in page
    # references stay readable as text
    assert "https://kubernetes.io/docs/tasks/administer-cluster/dns-debugging-resolution/" in page


def test_skipped_checks_are_listed_with_reasons():
    page = _html.render_html(REPORT)
    for check in REPORT["checks"]:
        if check["status"] == "skip":
            assert _html.escape(check["reason"]) in page


def _target(hop, server, latencies, sent):
    stats = _probe.TargetStats(server, 53, "udp", hop)
    stats.sent = stats.planned = sent
    for latency in latencies:
        stats.answer(0, latency)
    stats.timeouts = sent - len(latencies)
    stats.elapsed = 1.0
    return stats.summary()


def test_probe_charts_only_with_probe_data():
    assert 'id="probes"' not in _html.render_html(REPORT)
    report = dict(REPORT, probes={"ct-full-node": [
        _target("pod-clusterip", "10.96.0.10", [0.001] * 9, 10),
        _target("node-resolver", "127.0.0.53", [], 10),
    ]})
    page = _html.render_html(report)
    assert 'id="probe-latency"' in page and 'id="probe-loss"' in page
    assert "10.0 % lost (1 of 10)" in page
    assert "100.0 % lost (10 of 10), timeout" in page
    # the registered dns_probe results (each with its ``results`` list) give the same charts
    module_results = dict(REPORT, probes=[{"ok": False, "results": report["probes"]["ct-full-node"]}])
    assert "100.0 % lost (10 of 10), timeout" in _html.render_html(module_results)


def test_before_after_table_for_remediation_runs():
    report = dict(REPORT, mode="remediate-after", before={"ids": ["CT001", "DMQ001"], "findings": []})
    rows = {attrs["data-id"]: attrs for tag, attrs in parse(_html.render_html(report)).tags if tag == "tr" and "data-id" in attrs}
    assert set(rows) == {"CT001", "CT002", "DMQ001", "KRN001", "RES001"}
    page = _html.render_html(report)
    assert re.search(r'data-id="DMQ001">.*?class="fixed"', page)
    assert re.search(r'data-id="CT001">.*?class="remains"', page)
    assert 'id="before-after"' not in _html.render_html(REPORT)


@pytest.mark.parametrize("finding_id, hops", [
    ("CT001", ("netfilter", "clusterip")), ("IPVS002", ("netfilter", "clusterip")), ("DMQ002", ("resolver",)),
    ("CDNS001", ("coredns",)), ("CDNS010", ("upstream",)), ("NLD001", ("nodelocal",)), ("WL004", ("pod",)),
    ("SVC002", ("clusterip", "coredns")),
])
def test_hop_mapping(finding_id, hops):
    assert _html.hops_of(finding_id) == hops


def test_every_catalog_id_is_on_the_path():
    from ansible_collections.clusterdns.doctor.plugins.module_utils._catalog import CATALOG

    assert [i for i in CATALOG if _html.hops_of(i) == ("other",)] == []
