# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""report.html of a diagnose run on the cluster lab with three faults, rendered by headless
Chromium without a network (``unshare -n``).

The faults: ``firewall-udp53`` (node1 drops forwarded UDP port 53: pod1's queries), ``session-affinity``
(``sessionAffinity: ClientIP`` on kube-dns) and ``upstream-timeout`` (the upstream DNS server drops
every query). diagnose runs on the lab's nodes (``labctl inventory``) with probes from each node's pod
namespace, so the probe findings point at the hop that fails. The DOM must show those hops marked
with the ids that broke them, every finding, no script error and no request. Set
CLUSTERDNS_REPORT_SCREENSHOT=docs/img/report-lab.png to refresh the screenshot in docs/report.md."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import jsonschema
import pytest
import yaml
from conftest import dig, lab, labctl

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")).split(":")[0]
for directory in (COLLECTIONS, str(COLLECTION / "tests" / "utils")):
    if directory not in sys.path:
        sys.path.insert(0, directory)

from ansible_collections.clusterdns.doctor.plugins.module_utils._html import hops_of  # noqa: E402
from headless_chromium import CHROMIUM, UNSHARE, chromium, hops, png_size  # noqa: E402

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(CHROMIUM is None, reason="the Debian package chromium is not installed (make setup installs it)"),
    pytest.mark.skipif(UNSHARE is None, reason="unshare (util-linux) is not installed"),
]

# Healed in this order: each heal waits until both pods resolve, which pod1 cannot while node1 drops UDP 53.
FAULTS = ("firewall-udp53", "session-affinity", "upstream-timeout")
WIDTH, HEIGHT = 1280, 1500
# <g ... data-hop="KEY" ...>\n<title>TITLE: IDS</title>: the ids a failing hop names
HOP_TITLE = re.compile(r'<g class="hop[^"]*" data-hop="([a-z]+)"[^>]*>\s*<title>([^<]*)</title>')


def upstream_errors_logged():
    """CoreDNS has forwarded an external name to the silent upstream and logged the timeout. pod2 asks
    (pod1's UDP queries are dropped on node1); True once a replica's log shows it."""
    dig(lab.pod_ns(2), "www.lab.example", "+time=3", "+tries=1")
    logs = "".join(pathlib.Path(lab.STATE, "logs", "coredns-%s.log" % s).read_text(errors="replace")[-20000:] for s in lab.DNS_SLOTS)
    return "i/o timeout" in logs


def diagnose(tmp_path):
    """diagnose.yml on the lab's nodes, probing the kube-dns ClusterIP from each node's pod namespace."""
    inventory = yaml.safe_load(pathlib.Path(labctl("inventory", "--python", sys.executable).stdout.strip()).read_text())
    for host in inventory["all"]["children"]["clusterdns_nodes"]["hosts"].values():
        host["clusterdns_probe_netns"] = host["clusterdns_lab_pod_netns"]
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    report = tmp_path / "report"
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), str(COLLECTION / "playbooks" / "diagnose.yml"), "-i", str(path),
           "-e", "clusterdns_report_dir=%s" % report, "-e", "clusterdns_probe=true", "-e", "clusterdns_probe_count=10",
           "-e", "clusterdns_fail_on=error"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    # the run fails at the threshold, after the report files are written
    assert run.returncode == 2 and "Findings at or above error" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
    return report / "report.html", json.loads((report / "findings.json").read_text())


@pytest.fixture(scope="module")
def lab_report(api, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-html-lab")
    try:
        for fault in FAULTS:
            labctl("fault", fault)
        end = time.time() + 40
        while not upstream_errors_logged():
            assert time.time() < end, "CoreDNS logged no upstream timeout within 40 s"
            time.sleep(1)
        return diagnose(tmp)
    finally:
        for fault in FAULTS:
            labctl("heal", fault, check=False)
        assert lab.load_state().get("faults", {}) == {}, "faults left on the lab"


def ids_on(report, finding_id, **evidence):
    return [f for f in report["findings"] if f["id"] == finding_id and all(f["evidence"].get(k) == v for k, v in evidence.items())]


def test_the_report_has_the_findings_of_the_three_faults(lab_report):
    _page, report = lab_report
    (ipt002,) = ids_on(report, "IPT002")  # firewall-udp53: node1's FORWARD rule
    assert ipt002["host"] == "node1" and ipt002["severity"] == "error"
    assert [f["host"] for f in ids_on(report, "PRB001", hop="pod-clusterip", transport="udp")] == ["node1"]
    assert ids_on(report, "SVC001", session_affinity="ClientIP")  # session-affinity
    (cdns010,) = ids_on(report, "CDNS010")  # upstream-timeout
    assert cdns010["evidence"]["upstream_errors"] >= 1
    assert report["summary"]["failed"] is True and "IPT002" in report["summary"]["failing_ids"]
    # the probe results are in the report (valid against the schema): pod1's UDP queries to the
    # ClusterIP all lost, pod2's answered
    jsonschema.validate(report, json.loads((COLLECTION / "docs" / "findings.schema.json").read_text()))
    clusterip = {(host, p["transport"]): p for host, results in report["probes"].items() for p in results if p["hop"] == "pod-clusterip"}
    assert clusterip[("node1", "udp")]["sent"] > 0 and clusterip[("node1", "udp")]["loss_ratio"] == 1.0, clusterip
    assert clusterip[("node2", "udp")]["answered"] > 0, clusterip


def test_chromium_shows_the_broken_hops(lab_report, tmp_path):
    page, report = lab_report
    dom, log, requests = chromium(tmp_path, page, "--dump-dom")
    state = hops(dom)
    assert set(state) == {"pod", "netfilter", "resolver", "clusterip", "coredns", "nodelocal", "upstream"}
    named = {key: title.rsplit(": ", 1)[-1].split(", ") for key, title in HOP_TITLE.findall(dom)}
    # The hops the three faults break are marked failing, each naming the finding that broke it:
    # firewall-udp53 the node's netfilter and the ClusterIP (IPT002; PRB001 from pod1 over UDP),
    # session-affinity the ClusterIP and CoreDNS (SVC001), upstream-timeout the upstream (CDNS010) and
    # the nodes' own resolver, which is that upstream (PRB001 from the nodes).
    for key, ids in (("netfilter", {"IPT002"}), ("clusterip", {"IPT002", "PRB001", "SVC001"}), ("coredns", {"SVC001"}),
                     ("upstream", {"CDNS010"}), ("resolver", {"PRB001"})):
        assert state[key][0] == "fail" and ids <= set(named[key]), (key, state[key], named.get(key))
    # NodeLocal DNSCache is not deployed in the lab: not marked as failing
    assert state["nodelocal"][0] in ("ok", "unchecked")
    # The DOM agrees with findings.json, hop by hop: failing exactly where a finding maps, coloured
    # by the worst of them, naming all of them.
    rank = {"info": 0, "warning": 1, "error": 2, "critical": 3}
    from_report = {}
    for finding in report["findings"]:
        for hop in [] if finding.get("waiver") else hops_of(finding["id"], finding.get("evidence")):
            from_report.setdefault(hop, []).append(finding)
    for key, (hop_state, severity) in state.items():
        found = from_report.get(key, [])
        assert (hop_state == "fail") == bool(found), (key, state[key], [f["id"] for f in found])
        if found:
            assert set(named[key]) == {f["id"] for f in found}, key
            assert severity == max((f["severity"] for f in found), key=rank.get), key
    assert sorted(re.findall(r'data-finding="([A-Z]+[0-9]+)"', dom)) == sorted(f["id"] for f in report["findings"])
    assert 'class="verdict failed"' in dom
    # the probe charts: pod1's UDP hop to the ClusterIP drawn as fully lost
    assert 'id="probe-latency"' in dom and 'id="probe-loss"' in dom
    loss_chart = dom[dom.find('id="probe-loss"'):]
    loss_chart = loss_chart[:loss_chart.find("</svg>")]
    assert re.search(r"node1 pod-clusterip 10\.96\.0\.10:53/udp</text>\s*<rect [^>]*>(</rect>)?\s*<text [^>]*>100\.0 % lost", loss_chart), loss_chart
    assert "Uncaught" not in log and ":CONSOLE" not in log, log[-3000:]
    assert requests == set()


def test_screenshot(lab_report, tmp_path):
    page, _report = lab_report
    png = tmp_path / "report-lab.png"
    chromium(tmp_path, page, "--screenshot=%s" % png, "--window-size=%d,%d" % (WIDTH, HEIGHT), "--hide-scrollbars")
    assert png_size(png) == (WIDTH, HEIGHT)
    assert png.stat().st_size > 50000  # a blank page compresses to a few kB
    target = os.environ.get("CLUSTERDNS_REPORT_SCREENSHOT")
    if target:
        shutil.copy(png, COLLECTION / target)
