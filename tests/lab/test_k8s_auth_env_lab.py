# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""diagnose.yml and remediate.yml with no kubeconfig at all, reading the lab's cluster from the
variables AWX's built-in "OpenShift or Kubernetes API Bearer Token" credential injects:
K8S_AUTH_HOST (the lab's API server URL), K8S_AUTH_API_KEY (the lab's admin token),
K8S_AUTH_SSL_CA_CERT (the lab CA file) and K8S_AUTH_VERIFY_SSL. clusterdns_kubeconfig and KUBECONFIG
are unset and HOME is an empty directory, so there is no ~/.kube/config either.

- session-affinity applied: diagnose assesses the cluster (the report names K8S_AUTH_HOST as the
  source) and reports SVC001; remediate --tags coredns --check plans the SVC001 fix and changes nothing;
  remediate --tags coredns removes the affinity (kube-proxy drops its affinity rules) and SVC001 is gone.
- a wrong token: the cluster part is skipped with the API server's 401 as the reason.
- an explicit clusterdns_kubeconfig that does not exist wins over the variables (skipped, not read
  through K8S_AUTH_HOST).
In every run, the token is in no output and no report file.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import subprocess

import jsonschema
import pytest
import yaml
from conftest import lab, labctl, wait_until

pytestmark = [pytest.mark.lab]

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
SERVICE = "/api/v1/namespaces/kube-system/services/kube-dns"
CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/coredns"
SCHEMA = json.loads((COLLECTION / "docs" / "findings.schema.json").read_text())


def server():
    with open(lab.sp("kubeconfig"), encoding="utf-8") as f:
        return yaml.safe_load(f)["clusters"][0]["cluster"]["server"]


def admin_token():
    with open(lab.sp("admin.token"), encoding="utf-8") as f:
        return f.read().strip()


def run(tmp_path, playbook, name, token, *args):
    """ansible-playbook against the lab only (clusterdns_hosts matches no host) with the K8S_AUTH_*
    variables and no kubeconfig; (process, findings.json or None). The token must be in no output
    and no report file."""
    home, report = tmp_path / "home", tmp_path / name
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("K8S_AUTH_")}
    env.update({
        "HOME": str(home),
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_INVENTORY": str(COLLECTION / "inventory" / "localhost.yml"),
        "ANSIBLE_NOCOLOR": "1",
        "K8S_AUTH_HOST": server(),
        "K8S_AUTH_API_KEY": token,
        "K8S_AUTH_SSL_CA_CERT": lab.sp("pki", "ca.crt"),
        "K8S_AUTH_VERIFY_SSL": "True",
    })
    variables = {"clusterdns_hosts": "clusterdns_no_such_host", "clusterdns_report_dir": str(report),
                 "clusterdns_log_seconds": 0, "clusterdns_metrics": False, "coredns_backup_dir": str(tmp_path / "backups")}
    cmd = [str(COLLECTION / ".venv" / "bin" / "ansible-playbook"), str(COLLECTION / "playbooks" / playbook),
           "-e", json.dumps(variables), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    (tmp_path / ("%s.log" % name)).write_text(proc.stdout + proc.stderr)
    assert token not in proc.stdout + proc.stderr
    leaked = [str(p) for p in report.rglob("*") if p.is_file() and token.encode() in p.read_bytes()] if report.exists() else []
    assert not leaked, leaked
    assert not (home / ".kube").exists()
    found = json.loads((report / "findings.json").read_text()) if (report / "findings.json").exists() else None
    return proc, found


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def ids(report):
    return {f["id"] for f in report["findings"]}


def affinity_rules():
    return "--rcheck" in lab.nsrun(lab.node_ns(1), ["iptables-save", "-t", "nat"], capture=True)


def test_diagnose_and_remediate_read_the_cluster_from_the_bearer_token_variables(api, tmp_path):
    token = admin_token()
    labctl("fault", "session-affinity")
    try:
        proc, report = run(tmp_path, "diagnose.yml", "diagnose", token)
        ok(proc)
        jsonschema.validate(report, SCHEMA)
        cluster = report["cluster"]
        assert cluster["status"] == "assessed" and cluster["source"] == "K8S_AUTH_HOST " + server(), cluster
        assert cluster["server_version"] and cluster["context"] is None
        svc001 = [f for f in report["findings"] if f["id"] == "SVC001"]
        assert svc001 and svc001[0]["evidence"]["session_affinity"] == "ClientIP", report["findings"]

        # the dry run plans the fix (and a Corefile edit of our own: coredns_corefile reads the same
        # variables) and changes nothing
        before = {path: api.get(path)["metadata"]["resourceVersion"] for path in (SERVICE, CONFIGMAP)}
        edit = json.dumps({"coredns_corefile_edits": [{"plugin": "cache", "args": [31]}]})
        proc, report = run(tmp_path, "remediate.yml", "check", token, "--tags", "coredns", "--check", "--diff", "-e", edit)
        ok(proc)
        assert report["cluster"]["source"] == "K8S_AUTH_HOST " + server()
        assert "SVC001" in report["before"]["ids"] and "SVC001" in ids(report)
        planned = report["remediation"]["cluster"]["clusterdns_remediate_result_coredns"]
        assert planned["workload"]["changed"] and "sessionAffinity: ClientIP" in proc.stdout, planned
        assert any(a.endswith("-> cache 31") for a in planned["corefile"]["actions"]) and "+    cache 31" in proc.stdout, planned["corefile"]
        assert {path: api.get(path)["metadata"]["resourceVersion"] for path in before} == before
        assert not (tmp_path / "backups").exists()

        # the run fixes it, through the same variables
        proc, report = run(tmp_path, "remediate.yml", "run", token, "--tags", "coredns")
        ok(proc)
        assert "SVC001" in report["before"]["ids"] and "SVC001" not in ids(report)
        assert api.get(SERVICE)["spec"]["sessionAffinity"] == "None"
        assert wait_until(lambda: not affinity_rules(), 30)  # kube-proxy no longer pins a client to one CoreDNS pod
    finally:
        labctl("heal", "session-affinity", check=False)


def test_a_wrong_token_skips_the_cluster_part_and_is_not_shown(api, tmp_path):
    token = "clusterdns-wrong-" + secrets.token_hex(16)
    proc, report = run(tmp_path, "diagnose.yml", "diagnose", token)
    ok(proc)
    cluster = report["cluster"]
    assert cluster["status"] == "skipped" and "401" in cluster["reason"] and token not in cluster["reason"], cluster
    assert cluster["source"] == "K8S_AUTH_HOST " + server()
    assert all(c["status"] == "skip" for c in report["checks"] if c["id"] == "SVC001")


def test_an_explicit_kubeconfig_wins_over_the_variables(api, tmp_path):
    missing = tmp_path / "no-such-kubeconfig"
    proc, report = run(tmp_path, "diagnose.yml", "diagnose", admin_token(), "-e", "clusterdns_kubeconfig=%s" % missing)
    ok(proc)
    assert report["cluster"]["status"] == "skipped" and str(missing) in report["cluster"]["reason"], report["cluster"]
