# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml end to end: on this machine, on a fixture bundle, under --check, with bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from conftest import ANSIBLE_BIN, COLLECTION, FIXTURES, load_report, run_playbook

SCHEMA = json.loads((COLLECTION / "docs" / "findings.schema.json").read_text())
BUNDLE = FIXTURES / "bundles" / "ct-full-node"


def _key(report):
    return sorted((f["id"], f["host"], f["severity"]) for f in report["findings"])


def test_diagnose_this_machine_writes_valid_reports(report_dir):
    run = run_playbook("diagnose.yml", "-e", "clusterdns_report_dir=%s" % report_dir)
    assert run.returncode == 0, run.stdout + run.stderr
    report = load_report(report_dir)
    jsonschema.validate(report, SCHEMA)
    assert report["hosts"] == ["localhost"]
    # The node facts modules ran: every node check was evaluated or skipped with a reason.
    node_checks = [c for c in report["checks"] if c["scope"] == "node"]
    assert {c["id"] for c in node_checks} >= {"CT001", "CT002", "KRN001", "NODE001", "RES001", "RES002", "RES003"}
    for check in node_checks:
        assert check["status"] in ("pass", "fail") or check["reason"], check
    junit = ET.parse(report_dir / "junit.xml").getroot()
    assert len(junit.findall("testsuite/testcase")) == len(report["checks"])
    markdown = (report_dir / "report.md").read_text()
    assert markdown.startswith("# Cluster DNS report")
    assert "clusterdns.doctor:" in run.stdout and "finding(s)" in run.stdout
    assert (report_dir / "report.html").read_text().lstrip().lower().startswith("<!doctype html>")
    prom = (report_dir / "clusterdns.prom").read_text()
    assert "# TYPE clusterdns_findings gauge" in prom and 'clusterdns_checks{status="pass"}' in prom


def test_check_mode_gives_the_same_findings(tmp_path):
    normal = run_playbook("diagnose.yml", "-e", "clusterdns_report_dir=%s" % (tmp_path / "a"))
    checked = run_playbook("diagnose.yml", "--check", "-e", "clusterdns_report_dir=%s" % (tmp_path / "b"))
    assert normal.returncode == 0 and checked.returncode == 0, checked.stdout
    assert _key(load_report(tmp_path / "a")) == _key(load_report(tmp_path / "b"))


@pytest.fixture
def bundle_dir(tmp_path):
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    shutil.copytree(BUNDLE, bundles / "node-ct-full", symlinks=True)
    return bundles


def test_bundle_with_full_table_and_stub_resolver(bundle_dir, report_dir):
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % report_dir,
                       env={"ANSIBLE_SHOW_CUSTOM_STATS": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    report = load_report(report_dir)
    jsonschema.validate(report, SCHEMA)
    assert report["hosts"] == ["node-ct-full"]
    by_id = {f["id"]: f for f in report["findings"]}
    assert sorted(by_id) == ["CT001", "CT002", "KRN001", "RES001"]
    ct001 = by_id["CT001"]
    assert ct001["host"] == "node-ct-full"
    assert ct001["severity"] == "error"
    assert ct001["evidence"]["count"] == ct001["evidence"]["max"] == 262144
    assert ct001["evidence"]["table_full_events"] == 14 and "table full, dropping packet" in ct001["evidence"]["log_sample"][-1]
    res001 = by_id["RES001"]
    assert res001["severity"] == "critical"
    assert res001["evidence"]["loopback_nameservers"] == ["127.0.0.53"] and res001["evidence"]["stub"] == "systemd-resolved"
    assert res001["fix"]["variables"] == {"resolver_kubelet_resolv_conf": "/run/systemd/resolve/resolv.conf"}
    # report.md: counts by severity, then each finding with its evidence, cause and remediate command.
    markdown = (report_dir / "report.md").read_text()
    assert "| critical | 1 |\n| error | 1 |\n| warning | 2 |\n| info | 0 |" in markdown
    section = markdown.split("## ERROR CT001")[1].split("\n## ")[0]
    assert "- count: `262144`" in section and "- table_full_events: `14`" in section
    assert "**Why it breaks DNS**: " + ct001["cause"] in section
    assert "ansible-playbook clusterdns.doctor.remediate --tags conntrack --limit node-ct-full" in section
    assert "ansible-playbook clusterdns.doctor.remediate --tags resolver --limit node-ct-full" in markdown
    # junit.xml: one case per check and host; exactly the findings are failures, with the detail as message.
    junit = ET.parse(report_dir / "junit.xml").getroot()
    cases = junit.findall("testsuite/testcase")
    assert len(cases) == len(report["checks"])
    failed = {case.get("name").split()[0]: case.find("failure") for case in cases if case.find("failure") is not None}
    assert sorted(failed) == ["CT001", "CT002", "KRN001", "RES001"]
    assert "262144/262144" in failed["CT001"].get("message")
    # set_stats for AWX: counts and ids.
    stats = " ".join(run.stdout.split("CUSTOM STATS")[1].split())
    assert "clusterdns_finding_ids: - CT001 - CT002 - KRN001 - RES001" in stats and "clusterdns_findings_total: 4" in stats
    assert "critical: 1" in stats and "clusterdns_failed: false" in stats


def test_bundle_under_check_mode_gives_the_same_findings_and_checks(bundle_dir, tmp_path):
    normal = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % (tmp_path / "a"))
    checked = run_playbook("diagnose.yml", "--check", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % (tmp_path / "b"))
    assert normal.returncode == 0 and checked.returncode == 0, checked.stdout
    a, b = load_report(tmp_path / "a"), load_report(tmp_path / "b")
    assert a["findings"] == b["findings"] and a["checks"] == b["checks"]
    assert {"CT001", "RES001"} <= {f["id"] for f in b["findings"]}


def test_runs_as_clusterdns_doctor_diagnose(bundle_dir, report_dir):
    """The playbook by its FQCN, as an installed collection is used (ansible-playbook clusterdns.doctor.diagnose)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_INVENTORY=str(COLLECTION / "inventory" / "localhost.yml"),
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    run = subprocess.run([str(ANSIBLE_BIN / "ansible-playbook"), "clusterdns.doctor.diagnose", "-e", "clusterdns_bundle_dir=%s" % bundle_dir,
                          "-e", "clusterdns_report_dir=%s" % report_dir], env=env, cwd=str(report_dir.parent), capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert {"CT001", "RES001"} <= {f["id"] for f in load_report(report_dir)["findings"]}


def test_bundle_archive_gives_the_same_findings_as_the_directory(bundle_dir, tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    shutil.make_archive(str(archives / "node-ct-full"), "gztar", root_dir=bundle_dir, base_dir="node-ct-full")
    from_dir = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % (tmp_path / "d"))
    from_tar = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % archives, "-e", "clusterdns_report_dir=%s" % (tmp_path / "t"))
    assert from_dir.returncode == 0 and from_tar.returncode == 0, from_tar.stdout
    assert load_report(tmp_path / "d")["findings"] == load_report(tmp_path / "t")["findings"]


def test_fail_on_threshold_fails_the_run_after_writing_the_report(bundle_dir, report_dir):
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % report_dir,
                       "-e", "clusterdns_fail_on=critical")
    assert run.returncode == 2, run.stdout
    assert "Findings at or above critical: RES001" in run.stdout
    assert load_report(report_dir)["summary"]["failed"] is True


def test_invalid_variable_fails_before_anything_runs(report_dir):
    run = run_playbook("diagnose.yml", "-e", "clusterdns_fail_on=severe", "-e", "clusterdns_report_dir=%s" % report_dir)
    assert run.returncode != 0
    assert "clusterdns_fail_on" in run.stdout and "critical" in run.stdout
    assert not report_dir.exists()


@pytest.mark.parametrize("extra, message", [
    ("clusterdns_sample_interval=500", "between 0 and 300"),
    ('{"clusterdns_finding_options": {"conntrack_usage_warnin": 0.5}}', "unknown finding option(s) conntrack_usage_warnin; valid options:"),
    ('{"clusterdns_finding_options": {"skip": ["CT01"]}}', "unknown finding id(s) CT01; valid ids:"),
])
def test_invalid_sampling_and_finding_options_fail_before_anything_runs(bundle_dir, report_dir, extra, message):
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % report_dir, "-e", extra)
    assert run.returncode != 0
    assert message in " ".join(run.stdout.split()), run.stdout
    assert "node-ct-full" not in run.stdout  # the node play never started
    assert not report_dir.exists()


def test_empty_bundle_dir_is_refused(tmp_path, report_dir):
    (tmp_path / "empty").mkdir()
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % (tmp_path / "empty"), "-e", "clusterdns_report_dir=%s" % report_dir)
    assert run.returncode != 0
    assert "holds no bundle" in run.stdout
    assert not report_dir.exists()


def test_waiver_file_turns_a_failing_compliance_run_into_a_passing_one(bundle_dir, report_dir, tmp_path):
    waivers = tmp_path / "waivers.yml"
    waivers.write_text("waivers:\n  - id: RES001\n    hosts: [node-ct-*]\n    reason: stub resolver replaced in the next image\n"
                       "    expires: 2999-01-01\n    owner: team-dns\n")
    run = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % report_dir,
                       "-e", "clusterdns_fail_on=critical", "-e", "clusterdns_waivers_file=%s" % waivers)
    assert run.returncode == 0, run.stdout
    report = load_report(report_dir)
    jsonschema.validate(report, SCHEMA)
    (res001,) = [f for f in report["findings"] if f["id"] == "RES001"]
    assert res001["waiver"]["owner"] == "team-dns"
    assert report["summary"]["waived_ids"] == ["RES001"] and "RES001" not in report["summary"]["ids"]


def test_expired_and_invalid_waivers(bundle_dir, report_dir, tmp_path):
    expired = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % report_dir,
                           "-e", "clusterdns_fail_on=critical", "-e",
                           '{"clusterdns_waivers": [{"id": "RES001", "reason": "old", "expires": "2020-01-01"}]}')
    assert expired.returncode == 2, expired.stdout
    assert load_report(report_dir)["summary"]["expired_waivers"][0]["expires"] == "2020-01-01"
    bad = run_playbook("diagnose.yml", "-e", "clusterdns_bundle_dir=%s" % bundle_dir, "-e", "clusterdns_report_dir=%s" % (tmp_path / "bad"),
                       "-e", '{"clusterdns_waivers": [{"id": "RES001", "expires": "2027-01-01"}]}')
    assert bad.returncode != 0
    assert "clusterdns_waivers[0] has no reason" in bad.stdout
    assert not (tmp_path / "bad").exists()
