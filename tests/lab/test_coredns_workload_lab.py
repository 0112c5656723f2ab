# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The coredns role's workload part on the real lab: remediate.yml --tags coredns (cluster only, no
node host) against kube-apiserver, kube-proxy and CoreDNS.

For each lab fault (coredns-single-replica, session-affinity, rbac-endpointslices, and a CoreDNS
image older than 1.7.0 set through the API) the dry run (--check --diff) changes no object, the run
removes the finding from the report (findings.json), the object is fixed in the API, and a second
run changes nothing. A change whose verification fails (the second replica never gets Ready) is
undone. The lab's agent runs at most two CoreDNS replicas and does not schedule pods, so spread
(podAntiAffinity) is asserted on the Deployment object, not on pod placement.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
import yaml
from conftest import dig, lab, labctl, short, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("healed")]

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
NS = "/apis/apps/v1/namespaces/kube-system"
DEPLOYMENT = NS + "/deployments/coredns"
SERVICE = "/api/v1/namespaces/kube-system/services/kube-dns"
PDB = "/apis/policy/v1/namespaces/kube-system/poddisruptionbudgets/coredns"
ROLE = "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns"
AUTOSCALER_CM = "/api/v1/namespaces/kube-system/configmaps/dns-autoscaler"
LAB_IMAGE = lab.COREDNS_IMAGE


def remediate(tmp_path, *args, check=False, name="run"):
    """remediate.yml --tags coredns against the lab only; (process, findings.json, recap)."""
    report = tmp_path / name
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_INVENTORY": str(COLLECTION / "inventory" / "localhost.yml"),
        "ANSIBLE_NOCOLOR": "1",
    })
    cmd = [str(COLLECTION / ".venv" / "bin" / "ansible-playbook"), str(COLLECTION / "playbooks" / "remediate.yml"), "--tags", "coredns",
           "-e", "clusterdns_kubeconfig=%s" % lab.sp("kubeconfig"), "-e", "clusterdns_hosts=clusterdns_no_such_host",
           "-e", "clusterdns_report_dir=%s" % report, "-e", "clusterdns_log_seconds=0",
           "-e", "coredns_backup_dir=%s" % (tmp_path / "backups"), *args]
    if check:
        cmd += ["--check", "--diff"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    found = json.loads((report / "findings.json").read_text()) if (report / "findings.json").exists() else None
    return proc, found, recap(proc)


def recap(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    return None


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def ids(report):
    return {f["id"] for f in report["findings"]}


def result(report):
    return report["remediation"]["cluster"]["clusterdns_remediate_result_coredns"]["workload"]


def version(api, path):
    """What changes when the object's spec or data changes: the generation and spec of a Deployment
    (the lab's agent writes its status, which moves resourceVersion), the resourceVersion of others."""
    obj = api.get(path)
    if obj["kind"] == "Deployment":
        return obj["metadata"]["generation"], json.dumps(obj["spec"], sort_keys=True)
    return obj["metadata"]["resourceVersion"]


def backups(tmp_path):
    return {p.name: yaml.safe_load(p.read_text()) for p in (tmp_path / "backups").glob("*/*.yaml")}


def dry_run_changes_nothing(api, tmp_path, paths):
    before = {p: version(api, p) for p in paths}
    proc, report, counts = remediate(tmp_path, check=True, name="check")
    ok(proc)
    assert {p: version(api, p) for p in paths} == before
    assert api.get(PDB) is None and not (tmp_path / "backups").exists()
    return proc, report, counts


def second_run_changes_nothing(tmp_path, *args):
    proc, report, counts = remediate(tmp_path, *args, name="again")
    ok(proc)
    assert counts["changed"] == 0, proc.stdout[-3000:]
    return report


@pytest.fixture
def clean_workload(api):
    """Objects the role creates or changes outside what a labctl heal restores."""
    yield
    api.delete(PDB)
    dep = api.get(DEPLOYMENT)
    spec = dep["spec"]["template"]["spec"]
    if spec.get("affinity") or spec.get("topologySpreadConstraints") or spec["containers"][0]["image"] != LAB_IMAGE:
        api.patch(DEPLOYMENT, {"spec": {"template": {"spec": {"affinity": None, "topologySpreadConstraints": None}}}})
        api.req("PATCH", DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [{"name": "coredns", "image": LAB_IMAGE}]}}}},
                "application/strategic-merge-patch+json")
    role = api.get(ROLE)
    if "clusterdns.doctor/rules-before" in (role["metadata"].get("annotations") or {}):
        api.patch(ROLE, {"metadata": {"annotations": {"clusterdns.doctor/rules-before": None}}})
    api.delete(NS + "/deployments/dns-autoscaler")
    api.delete(AUTOSCALER_CM)


def test_single_replica_is_scaled_gets_a_pdb_and_spread_needs_consent(api, tmp_path, clean_workload):
    labctl("fault", "coredns-single-replica")
    proc, report, _counts = dry_run_changes_nothing(api, tmp_path, [DEPLOYMENT])
    assert "CDNS002" in ids(report) and "replicas: 2" in proc.stdout  # the diff of the Deployment

    proc, report, _counts = remediate(tmp_path)
    ok(proc)
    assert "CDNS002" in report["before"]["ids"] and "CDNS002" not in ids(report)
    dep = api.get(DEPLOYMENT)
    assert dep["spec"]["replicas"] == 2 and not dep["spec"]["template"]["spec"].get("affinity")
    pdb = api.get(PDB)
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    done = result(report)
    assert done["changed"] and done["restart_required"] and "podAntiAffinity" in done["pending"][0]
    assert backups(tmp_path)["Deployment-kube-system-coredns.yaml"]["spec"]["replicas"] == 1
    # both replicas answer through the ClusterIP
    assert wait_until(lambda: api.get(DEPLOYMENT)["status"].get("readyReplicas") == 2, 30)
    assert short(lab.pod_ns(1), "kubernetes.default.svc.cluster.local", server=lab.KUBE_DNS_IP) == "10.96.0.1"

    second_run_changes_nothing(tmp_path)

    # the spread, forced (CDNS002 is gone) and consented to: a preferred podAntiAffinity on the pod labels
    forced = ["-e", '{"clusterdns_remediate_force": ["coredns"], "coredns_workload_force": ["spread"], "coredns_allow_restart": true}']
    proc, report, _counts = remediate(tmp_path, *forced, name="spread")
    ok(proc)
    term = api.get(DEPLOYMENT)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term == {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                                                       "topologyKey": "kubernetes.io/hostname"}}
    assert not result(report)["restart_required"]
    second_run_changes_nothing(tmp_path, *forced)


def test_session_affinity_is_removed_and_kube_proxy_drops_its_affinity_rules(api, tmp_path, clean_workload):
    labctl("fault", "session-affinity")
    _proc, report, _counts = dry_run_changes_nothing(api, tmp_path, [SERVICE])
    assert "SVC001" in ids(report) and api.get(SERVICE)["spec"]["sessionAffinity"] == "ClientIP"

    proc, report, _counts = remediate(tmp_path)
    ok(proc)
    assert "SVC001" in report["before"]["ids"] and "SVC001" not in ids(report)
    spec = api.get(SERVICE)["spec"]
    assert spec["sessionAffinity"] == "None" and "sessionAffinityConfig" not in spec
    # what a user notices: kube-proxy no longer pins a client to one CoreDNS pod (no "recent" match)
    assert wait_until(lambda: "--rcheck" not in lab.nsrun(lab.node_ns(1), ["iptables-save", "-t", "nat"], capture=True), 30)
    assert backups(tmp_path)["Service-kube-system-kube-dns.yaml"]["spec"]["sessionAffinity"] == "ClientIP"
    second_run_changes_nothing(tmp_path)


def test_endpointslice_rbac_is_added_back_and_coredns_serves_again(api, tmp_path, clean_workload):
    labctl("fault", "rbac-endpointslices")
    _proc, report, _counts = dry_run_changes_nothing(api, tmp_path, [ROLE])
    assert "CDNS005" in ids(report)

    proc, report, _counts = remediate(tmp_path)
    ok(proc)
    assert "CDNS005" in report["before"]["ids"] and "CDNS005" not in ids(report)
    role = api.get(ROLE)
    assert {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]} in role["rules"]
    saved = json.loads(role["metadata"]["annotations"]["clusterdns.doctor/rules-before"])
    assert saved and all("endpointslices" not in r["resources"] for r in saved) and role["rules"][:len(saved)] == saved
    # CoreDNS's watch recovers without a restart: a new Service resolves
    assert wait_until(lambda: short(lab.pod_ns(1), "kube-dns.kube-system.svc.cluster.local", server=lab.KUBE_DNS_IP) == lab.KUBE_DNS_IP, 60)
    second_run_changes_nothing(tmp_path)


def test_failed_verification_undoes_the_change(api, tmp_path, clean_workload):
    labctl("fault", "coredns-down", "b")  # replica b is held down: a second replica never gets Ready
    labctl("fault", "coredns-single-replica")
    proc, _report, _counts = remediate(tmp_path, "-e", "coredns_verify_timeout=8")
    assert proc.returncode != 0
    assert "failed and was undone" in proc.stdout and "1 of 2 replicas Ready" in proc.stdout
    assert api.get(DEPLOYMENT)["spec"]["replicas"] == 1 and api.get(PDB) is None
    saved = backups(tmp_path)
    assert saved["Deployment-kube-system-coredns.yaml"]["spec"]["replicas"] == 1
    rc, _out = dig(lab.pod_ns(1), "kubernetes.default.svc.cluster.local", server=lab.KUBE_DNS_IP)
    assert rc == 0
    labctl("heal", "coredns-down")  # before coredns-single-replica, whose heal waits for two Ready replicas


def test_autoscaler_minimum_is_raised_before_the_deployment_is_scaled(api, tmp_path, clean_workload):
    # A cluster-proportional-autoscaler as kubespray and the Kubernetes addon deploy it; replicas 0
    # (the lab runs no such controller), its ConfigMap allows one CoreDNS replica.
    api.create(NS + "/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dns-autoscaler", "namespace": "kube-system"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"k8s-app": "dns-autoscaler"}},
                 "template": {"metadata": {"labels": {"k8s-app": "dns-autoscaler"}}, "spec": {"containers": [{
                     "name": "autoscaler", "image": "registry.k8s.io/cpa/cluster-proportional-autoscaler:v1.8.8",
                     "command": ["/cluster-proportional-autoscaler", "--namespace=kube-system", "--configmap=dns-autoscaler",
                                 "--target=Deployment/coredns", "--logtostderr=true", "--v=2"]}]}}}})
    api.create("/api/v1/namespaces/kube-system/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dns-autoscaler", "namespace": "kube-system"},
        "data": {"linear": '{"coresPerReplica":256,"nodesPerReplica":16,"min":1,"preventSinglePointFailure":false}'}})
    labctl("fault", "coredns-single-replica")
    dry_run_changes_nothing(api, tmp_path, [DEPLOYMENT, AUTOSCALER_CM])

    proc, report, _counts = remediate(tmp_path)
    ok(proc)
    params = json.loads(api.get(AUTOSCALER_CM)["data"]["linear"])
    assert params["min"] == 2 and params["preventSinglePointFailure"] is True and params["nodesPerReplica"] == 16
    assert api.get(DEPLOYMENT)["spec"]["replicas"] == 2 and "CDNS002" not in ids(report)
    actions = result(report)["actions"]
    assert actions[0].startswith("ConfigMap kube-system/dns-autoscaler") and "min 1 -> 2" in actions[0]
    second_run_changes_nothing(tmp_path)


def test_old_coredns_is_reported_and_upgraded_only_when_asked(api, tmp_path, clean_workload):
    api.req("PATCH", DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.6.7"}]}}}},
            "application/strategic-merge-patch+json")
    proc, report, counts = remediate(tmp_path, name="report")
    ok(proc)
    assert "CDNS003" in ids(report) and counts["changed"] == 0
    notes = " ".join(result(report)["actions"])
    assert "kubeadm installs CoreDNS 1.12.1 with Kubernetes 1.34" in notes and "1.8.4: the kubernetes plugin watches EndpointSlices" in notes
    assert result(report)["version"]["path"][0]["version"] == "1.7.0"

    proc, report, _counts = remediate(tmp_path, "-e", "coredns_upgrade_to=1.12.1", name="no-consent")
    ok(proc)
    assert result(report)["restart_required"] and "v1.12.1" in result(report)["pending"][0]
    assert api.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":v1.6.7")

    before = version(api, DEPLOYMENT)
    proc, _report, _counts = remediate(tmp_path, "-e", "coredns_upgrade_to=1.12.1", "-e", "coredns_allow_restart=true", check=True, name="check")
    ok(proc)
    assert version(api, DEPLOYMENT) == before and "registry.k8s.io/coredns/coredns:v1.12.1" in proc.stdout

    proc, report, _counts = remediate(tmp_path, "-e", "coredns_upgrade_to=1.12.1", "-e", "coredns_allow_restart=true", name="upgrade")
    ok(proc)
    assert api.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.k8s.io/coredns/coredns:v1.12.1"
    assert "CDNS003" in report["before"]["ids"] and "CDNS003" not in ids(report)
    second_run_changes_nothing(tmp_path, "-e", "coredns_upgrade_to=1.12.1", "-e", "coredns_allow_restart=true")


def test_a_downgrade_is_refused_before_anything_changes(api, tmp_path, clean_workload):
    before = version(api, DEPLOYMENT)
    # no finding in the healthy lab: the role runs because it is forced
    proc, _report, _counts = remediate(tmp_path, "-e", '{"clusterdns_remediate_force": ["coredns"]}', "-e", "coredns_upgrade_to=1.11.1",
                                       "-e", "coredns_allow_restart=true")
    assert proc.returncode != 0 and "Nothing was changed" in proc.stdout and "does not downgrade" in proc.stdout
    assert version(api, DEPLOYMENT) == before
