# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml as an AWX job on the cluster lab: ``ansible-runner run <private data dir> -p
diagnose.yml``, with the project (the playbooks), the inventory (``labctl inventory``: the lab's
node namespaces as hosts), ``env/extravars`` (the lab kubeconfig's path, the threshold, a waiver
file in the project) and ``env/envvars``, as AWX lays them out.

The healthy lab is a successful job at ``clusterdns_fail_on=warning``; the lab with seed 003 on
node1 and CoreDNS scaled to one replica is a failed job whose failing task is the compliance gate.
Both runs are checked through what AWX keeps: the job events, the ``set_stats`` artifact data, rc
and status, the fact cache, and the report files; and the lab's bearer token appears nowhere under
the private data dir (artifacts included)."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
from xml.etree import ElementTree

import pytest
import yaml
from conftest import lab, labctl

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
RUNNER = shutil.which("ansible-runner", path="%s%s%s" % (BIN, os.pathsep, os.environ.get("PATH", "")))
GATE = "Fail when findings reach the clusterdns_fail_on threshold"
REPORT_FILES = ["findings.json", "report.md", "junit.xml", "report.html", "clusterdns.prom"]
RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}

pytestmark = [pytest.mark.lab, pytest.mark.skipif(RUNNER is None, reason="ansible-runner is not installed (requirements-dev.txt)")]


def lab_waivers(today):
    """Findings the lab accumulates from earlier fault tests, accepted for the lab only (docs/awx.md):
    they are reported as waived, and the test checks that nothing else reaches the threshold."""
    expires = (today + datetime.timedelta(days=30)).isoformat()
    return [
        {"id": "CDNS010", "expires": expires, "owner": "lab",
         "reason": "lab: the lab's pod log endpoint ignores sinceSeconds, so upstream errors provoked by earlier fault tests stay in the log"},
        {"id": "RES002", "hosts": ["node1", "node2"], "expires": expires, "owner": "lab",
         "reason": "lab: the conntrack drops that expose the node resolv.conf were made by the conntrack-full fault test"},
    ]


def private_data_dir(tmp_path, waivers):
    """The directory AWX hands to ansible-runner: project/, inventory/, env/."""
    pd = tmp_path / "pd"
    (pd / "env").mkdir(parents=True)
    (pd / "inventory").mkdir()
    shutil.copytree(COLLECTION / "playbooks", pd / "project")
    (pd / "project" / "waivers.yml").write_text(yaml.safe_dump({"waivers": waivers}))
    # The lab's nodes as hosts; the kubeconfig comes from the job's extra vars (as a credential
    # would inject it), not from the inventory.
    inventory = yaml.safe_load(pathlib.Path(labctl("inventory", "--python", sys.executable).stdout.strip()).read_text())
    assert inventory["all"]["vars"].pop("clusterdns_kubeconfig") == lab.sp("kubeconfig")
    (pd / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    collections = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections"))
    (pd / "env" / "envvars").write_text(yaml.safe_dump({"ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_NOCOLOR": "1"}))
    (pd / "env" / "settings").write_text(yaml.safe_dump({"job_timeout": 600, "idle_timeout": 300}))
    (pd / "env" / "extravars").write_text(yaml.safe_dump({
        "clusterdns_kubeconfig": lab.sp("kubeconfig"),
        "clusterdns_fail_on": "warning",
        # a scheduled run looks at what rises now, not at counters since the namespace was made
        "clusterdns_sample_interval": 2,
        "clusterdns_waivers_file": "waivers.yml",  # relative to the project, as in an AWX project
    }))
    return pd


def ansible_runner(pd, playbook, ident):
    """``ansible-runner run PD -p PLAYBOOK --ident IDENT`` with this Python's ansible-playbook on PATH."""
    env = dict(os.environ, PATH="%s%s%s" % (BIN, os.pathsep, os.environ.get("PATH", "")))
    return subprocess.run([RUNNER, "run", str(pd), "-p", playbook, "--ident", ident], capture_output=True, text=True,
                          env=env, timeout=900, check=False)


class Job:
    """One ansible-runner job and what it left in artifacts/<ident>."""

    def __init__(self, tmp_path, ident, waivers):
        self.pd = private_data_dir(tmp_path, waivers)
        self.ident = ident
        run = ansible_runner(self.pd, "diagnose.yml", ident)
        self.rc = run.returncode
        self.output = run.stdout + run.stderr
        self.artifacts = self.pd / "artifacts" / ident
        self.events = sorted((json.loads(p.read_text()) for p in (self.artifacts / "job_events").glob("*.json")), key=lambda e: e["counter"])
        (stats,) = [e["event_data"] for e in self.events if e["event"] == "playbook_on_stats"]
        self.stats = stats
        self.data = stats.get("artifact_data") or {}
        self.report_dir = self.pd / "project" / "clusterdns-report"  # the default, relative to the project as AWX runs it
        self.report = json.loads((self.report_dir / "findings.json").read_text())

    def status(self):
        return (self.artifacts / "rc").read_text().strip(), (self.artifacts / "status").read_text().strip()

    def of(self, kind, host=None, task=None):
        return [e["event_data"] for e in self.events if e["event"] == kind
                and (host is None or e["event_data"].get("host") == host) and (task is None or e["event_data"].get("task") == task)]


def token():
    value = yaml.safe_load(pathlib.Path(lab.sp("kubeconfig")).read_text())["users"][0]["user"]["token"]
    assert len(value) >= 16
    return value.encode()


def files_with(pd, secret):
    """Every file under the private data dir (artifacts: command, stdout, job_events, fact_cache;
    env; inventory; project with the report) that holds ``secret``."""
    files = [p for p in pd.rglob("*") if p.is_file()]
    assert any(p.parent.name == "job_events" for p in files) and any(p.name == "command" for p in files)
    return sorted(str(p.relative_to(pd)) for p in files if secret in p.read_bytes())


def assert_no_secret(job):
    assert any((job.artifacts / "fact_cache").iterdir())
    leaked = files_with(job.pd, token())
    assert leaked == [], "the lab's bearer token is in %s" % leaked


def assert_artifacts_match_the_report(job):
    """set_stats data (what AWX shows under Artifacts) = the report's summary; the files exist."""
    summary = job.report["summary"]
    assert job.data["clusterdns_findings_total"] == summary["total"]
    assert job.data["clusterdns_findings_by_severity"] == summary["by_severity"]
    assert job.data["clusterdns_finding_ids"] == summary["ids"]
    assert job.data["clusterdns_failed"] is summary["failed"]
    waived = [f for f in job.report["findings"] if f.get("waiver")]
    assert job.data["clusterdns_findings_waived"] == summary["waived"] == len(waived)
    counted = {f["id"] for f in job.report["findings"] if not f.get("waiver")}
    assert set(summary["ids"]) == counted and set(job.data["clusterdns_finding_ids"]) == counted
    assert job.data["clusterdns_report_files"] == [str(job.report_dir / name) for name in REPORT_FILES]
    assert all(pathlib.Path(p).stat().st_size > 0 for p in job.data["clusterdns_report_files"])


def assert_node_facts_from_the_lab_nodes(job, endpoints):
    """The facts modules ran inside node1's and node2's namespaces: kube-proxy's kube-dns rules with
    the CoreDNS endpoints running now (the machine's own namespace has no such rule)."""
    task = "Gather iptables facts (kube-proxy DNS chains, NodeLocal DNSCache rules, rules that drop DNS)"
    for host in ("node1", "node2"):
        (event,) = job.of("runner_on_ok", host=host, task=task)
        services = event["res"]["ansible_facts"]["clusterdns_iptables"]["services"]
        dns = [s for s in services if s["cluster_ip"] == lab.KUBE_DNS_IP and s["protocol"] == "udp"]
        assert dns and {e["ip"] for e in dns[0]["endpoints"]} == endpoints, services
    assert job.report["hosts"] == ["node1", "node2"]
    assert job.report["cluster"]["status"] == "assessed" and job.report["cluster"]["server_version"].startswith("v1.")


@pytest.mark.usefixtures("healed")
def test_healthy_lab_is_a_successful_job(api, tmp_path):
    today = datetime.datetime.now(datetime.timezone.utc).date()
    job = Job(tmp_path, "compliant", lab_waivers(today))
    assert job.rc == 0, job.output[-4000:]
    assert job.status() == ("0", "successful")
    assert job.of("runner_on_failed") == [] and job.of("runner_on_unreachable") == []
    assert job.stats["failures"] == {} and job.stats["dark"] == {}
    assert set(job.stats["ok"]) == {"localhost", "node1", "node2"}
    assert len(job.of("runner_on_skipped", host="localhost", task=GATE)) == 1  # the compliance gate did not fire
    assert job.data["clusterdns_failed"] is False
    assert job.report["summary"]["fail_on"] == "warning" and job.report["summary"]["failing_ids"] == []
    # Nothing at or above the threshold that no lab waiver covers; what the lab waivers cover is
    # still in the report, marked.
    loud = [f for f in job.report["findings"] if RANK[f["severity"]] >= RANK["warning"] and not f.get("waiver")]
    assert loud == [], json.dumps(loud, indent=1)[:3000]
    assert {f["id"] for f in job.report["findings"] if f.get("waiver")} <= {"CDNS010", "RES002"}
    assert_artifacts_match_the_report(job)
    assert_node_facts_from_the_lab_nodes(job, set(lab.DNS_SLOTS.values()))
    assert "clusterdns.doctor: " in (job.artifacts / "stdout").read_text()
    assert_no_secret(job)


@pytest.mark.usefixtures("healed")
def test_faulty_lab_is_a_failed_job_at_the_compliance_gate(api, tmp_path):
    today = datetime.datetime.now(datetime.timezone.utc).date()
    waivers = [*lab_waivers(today),
               {"id": "CDNS002", "reason": "scaled down for the node1 maintenance window (CHG-42)",
                "expires": (today + datetime.timedelta(days=7)).isoformat()},
               {"id": "DMQ001", "hosts": ["node1"], "reason": "accepted until the dnsmasq config change was due",
                "expires": (today - datetime.timedelta(days=1)).isoformat()}]
    faults = ["dnsmasq-except-interface", "coredns-single-replica"]
    try:
        for fault in faults:
            labctl("fault", fault)
        job = Job(tmp_path, "incident", waivers)
    finally:
        for fault in reversed(faults):
            labctl("heal", fault, check=False)
    assert job.rc == 2, job.output[-4000:]
    assert job.status() == ("2", "failed")
    # The one failed task is the compliance gate on the controller; every node was gathered.
    failed = job.of("runner_on_failed")
    assert [(e["host"], e["task"]) for e in failed] == [("localhost", GATE)]
    assert job.stats["failures"] == {"localhost": 1} and set(job.stats["ok"]) == {"localhost", "node1", "node2"}
    message = failed[0]["res"]["msg"]
    assert message.startswith("Findings at or above warning: ") and "DMQ001" in message and "CDNS002" not in message
    assert str(job.report_dir / "report.md") in message
    # seed 003 on node1, seen by dnsmasq_facts inside node1's namespace; its waiver has expired
    (dmq001,) = [f for f in job.report["findings"] if f["id"] == "DMQ001"]
    assert dmq001["host"] == "node1" and dmq001["severity"] == "critical" and "cilium_host" in json.dumps(dmq001["evidence"])
    assert not dmq001.get("waiver")
    assert [w["id"] for w in job.report["summary"]["expired_waivers"]] == ["DMQ001"]
    # CoreDNS at one replica is reported, waived, and not counted
    (cdns002,) = [f for f in job.report["findings"] if f["id"] == "CDNS002"]
    assert cdns002["waiver"]["reason"].endswith("(CHG-42)") and cdns002["evidence"]["replicas"] == 1
    assert job.data["clusterdns_failed"] is True and "DMQ001" in job.data["clusterdns_finding_ids"]
    assert "CDNS002" not in job.data["clusterdns_finding_ids"] and job.data["clusterdns_findings_waived"] >= 1
    assert job.data["clusterdns_findings_by_severity"]["critical"] >= 1
    assert_artifacts_match_the_report(job)
    assert_node_facts_from_the_lab_nodes(job, {lab.DNS_SLOTS["a"]})  # one replica left: one endpoint in the rules
    # The report files were written before the gate failed the job.
    cases = {(c.get("classname"), c.get("name").split()[0]): c for c in ElementTree.parse(job.report_dir / "junit.xml").iter("testcase")}
    assert cases[("clusterdns.doctor.node1", "DMQ001")].find("failure").get("type") == "critical"
    assert cases[("clusterdns.doctor.cluster", "CDNS002")].find("skipped").get("message").startswith("waived until ")
    assert "FAILED (" in (job.report_dir / "report.html").read_text()
    assert_no_secret(job)


def test_the_secret_check_finds_a_token_passed_in_the_environment(tmp_path):
    """The check above can fail: ansible-runner writes the job's environment, env/envvars included,
    into artifacts/<ident>/command. A token handed to a job as an environment variable (as
    K8S_AUTH_API_KEY) is in the artifacts; a kubeconfig path is not the token. No lab needed."""
    secret = "clusterdns-fake-token-3c41d0e2"
    pd = tmp_path / "pd"
    (pd / "env").mkdir(parents=True)
    (pd / "project").mkdir()
    (pd / "project" / "noop.yml").write_text(
        "- name: Nothing\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Say hello\n      ansible.builtin.debug:\n        msg: hello\n")
    (pd / "env" / "envvars").write_text(yaml.safe_dump({"K8S_AUTH_API_KEY": secret}))
    run = ansible_runner(pd, "noop.yml", "leak")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "artifacts/leak/command" in files_with(pd, secret.encode())
