# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.html rendered by headless Chromium (Debian package ``chromium``) with no network at all
(``unshare -n``): the report of a diagnose run on two fixture bundles with three faults (full
conntrack table with the DNAT race on an old kernel, the systemd-resolved stub handed to CoreDNS,
dnsmasq ignoring cilium_host as in seed 003) shows the broken hops, every finding, no script
error, and makes no request. Set CLUSTERDNS_REPORT_SCREENSHOT=docs/img/report-example.png to
refresh the screenshot in the docs."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import pytest
from conftest import COLLECTION, FIXTURES, load_report, run_playbook

sys.path.insert(0, str(COLLECTION / "tests" / "utils"))
from headless_chromium import CHROMIUM, UNSHARE, chromium, png_size  # noqa: E402

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(CHROMIUM is None, reason="the Debian package chromium is not installed (make setup installs it)"),
    pytest.mark.skipif(os.geteuid() != 0 or UNSHARE is None, reason="unshare -n needs root"),
]

WIDTH, HEIGHT = 1280, 2000
DNSMASQ_CONF = "tmp/cdbed-bqije4jo/dnsmasq.conf"  # the path in the captured dnsmasq command line


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    """diagnose.yml on two bundles, then report.html through the dns_report_render('html') filter."""
    tmp = tmp_path_factory.mktemp("report-html")
    bundles = tmp / "bundles"
    shutil.copytree(FIXTURES / "bundles" / "ct-full-node", bundles / "ct-full-node", symlinks=True)
    node = bundles / "node-cilium"
    (node / "commands").mkdir(parents=True)
    captures = FIXTURES / "dnsmasq"
    for name, fixture in (("dnsmasq-cmdline", "local-netns-dnsmasq-cmdline-except-cilium.txt"), ("ip-addr", "local-netns-ip-addr-cilium.json"),
                          ("ss-lnup", "local-netns-ss-lnup-except-cilium.txt"), ("ss-lntp", "local-netns-ss-lntp-except-cilium.txt")):
        shutil.copy(captures / fixture, node / "commands" / (name + ".txt"))
    (node / DNSMASQ_CONF).parent.mkdir(parents=True)
    shutil.copy(captures / "local-netns-except-cilium.conf", node / DNSMASQ_CONF)
    report_dir = tmp / "report"
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundles, "-e", "clusterdns_report_dir=%s" % report_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    render = tmp / "render.yml"
    render.write_text(
        "- name: Render report.html\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Write report.html\n      ansible.builtin.copy:\n"
        "        content: \"{{ lookup('ansible.builtin.file', src) | from_json | clusterdns.doctor.dns_report_render('html') }}\"\n"
        "        dest: \"{{ dest }}\"\n        mode: \"0644\"\n")
    run = run_playbook(str(render), "-e", "src=%s" % (report_dir / "findings.json"), "-e", "dest=%s" % (report_dir / "report.html"))
    assert run.returncode == 0, run.stdout + run.stderr
    return report_dir / "report.html", load_report(report_dir)


def test_three_faults_render_with_broken_hops(report_html, tmp_path):
    page, report = report_html
    assert set(report["summary"]["ids"]) == {"CT001", "CT002", "KRN001", "RES001", "DMQ001"}
    dom, log, requests = chromium(tmp_path, page, "--dump-dom")
    hops = dict(re.findall(r'<g class="hop[^"]*" data-hop="([a-z]+)" data-state="([a-z]+)"', dom))
    assert hops == {"pod": "unchecked", "netfilter": "fail", "resolver": "fail", "clusterip": "fail",
                    "coredns": "unchecked", "nodelocal": "unchecked", "upstream": "unchecked"}
    assert sorted(re.findall(r'data-finding="([A-Z]+[0-9]+)"', dom)) == sorted(f["id"] for f in report["findings"])
    assert 'id="skipped"' in dom and "dnsmasq-cmdline.txt" in dom
    assert "Uncaught" not in log and ":CONSOLE" not in log, log[-3000:]
    assert requests == set()


def test_screenshot(report_html, tmp_path):
    page, _report = report_html
    png = tmp_path / "report.png"
    chromium(tmp_path, page, "--screenshot=%s" % png, "--window-size=%d,%d" % (WIDTH, HEIGHT), "--hide-scrollbars")
    assert png_size(png) == (WIDTH, HEIGHT)
    assert png.stat().st_size > 50000  # a blank page compresses to a few kB
    target = os.environ.get("CLUSTERDNS_REPORT_SCREENSHOT")
    if target:
        shutil.copy(png, COLLECTION / target)


def test_the_harness_sees_fetches_and_script_errors(tmp_path):
    """The checks above can fail: a page that loads an image and throws is caught by both."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://192.0.2.1/x.png"><script>notDefined()</script></body></html>')
    _dom, log, requests = chromium(tmp_path, bad, "--dump-dom")
    assert "http://192.0.2.1/x.png" in requests
    assert "Uncaught ReferenceError" in log
    assert json.dumps(sorted(requests))
