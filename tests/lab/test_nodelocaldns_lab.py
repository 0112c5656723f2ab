# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role nodelocaldns on the real lab, through remediate.yml with the lab's nodes as inventory hosts.

Deploy (forced) -> the real node-cache answers on 169.254.20.10 from the pod namespace and has its
NOTRACK rules on the nodes; a second run and a --check run change nothing; uninstall -> no object
left but the pre-existing kube-dns-upstream, no node-cache rule or address left on any node, pod DNS
through 10.96.0.10 works. The nodelocal-blackhole fault (node-cache's rules and addresses left with
no listener, NLD001) is repaired by the node part. A deployment that fails verification is deleted
again; bad input changes nothing. IPVS layout: node-cache on the local address only, kubelet
clusterDNS changed (in a KubeletConfiguration file) only with nodelocaldns_allow_restart.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess

import pytest
from conftest import dig, lab, labctl, nsexec, short, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("healed")]

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
NS = "kube-system"
LOCAL = "169.254.20.10"
KUBE_DNS = "10.96.0.10"
DS_PATH = "/apis/apps/v1/namespaces/kube-system/daemonsets/node-local-dns"
CM_PATH = "/api/v1/namespaces/kube-system/configmaps/node-local-dns"
SA_PATH = "/api/v1/namespaces/kube-system/serviceaccounts/node-local-dns"
UPSTREAM_PATH = "/api/v1/namespaces/kube-system/services/kube-dns-upstream"
FORCE = json.dumps({"clusterdns_remediate_force": ["nodelocaldns"]})


class Run:
    def __init__(self, proc, report_dir):
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        path = report_dir / "findings.json"
        self.report = json.loads(path.read_text()) if path.exists() else {}

    def changed(self):
        """changed= of every host in the PLAY RECAP."""
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", self.out, re.M)}

    def result(self, host="cluster", key="clusterdns_remediate_result_nodelocaldns"):
        return self.report["remediation"][host][key]

    def tail(self):
        return self.out[-6000:]


def remediate(tmp_path, *extra, check=False):
    inventory = labctl("inventory", "--python", str(COLLECTION / ".venv" / "bin" / "python")).stdout.strip()
    report = tmp_path / ("report-%d" % len(list(tmp_path.glob("report-*"))))
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_NOCOLOR": "1",
    })
    cmd = [str(COLLECTION / ".venv" / "bin" / "ansible-playbook"), str(COLLECTION / "playbooks" / "remediate.yml"), "-i", inventory,
           "--tags", "nodelocaldns", "-e", "clusterdns_report_dir=%s" % report, "-e", "clusterdns_log_seconds=0",
           "-e", "nodelocaldns_backup_dir=%s" % (tmp_path / "backups"), *extra]
    if check:
        cmd += ["--check", "--diff"]
    return Run(subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False), report)


def save(node, tool="iptables-save"):
    return nsexec(lab.node_ns(node), tool).stdout


def nodecache_rules(node):
    """node-cache's rules (by comment) and any NOTRACK/ACCEPT rule for the local address or kube-dns IP."""
    text = save(node) + save(node, "ip6tables-save")
    return [line for line in text.splitlines() if line.startswith("-A") and (
        "NodeLocal DNS Cache" in line or ((LOCAL in line or KUBE_DNS + "/32" in line) and ("NOTRACK" in line or "ACCEPT" in line)))]


def addresses(node):
    return nsexec(lab.node_ns(node), "ip", "-o", "addr", "show").stdout


def nodecache_running():
    return [i for i in (1, 2) if lab.pid_of("node-cache-" + lab.node_name(i))]


@pytest.fixture
def no_nodelocal(api):
    """Start without NodeLocal DNSCache; uninstall whatever a failed test left."""
    if api.get(DS_PATH) or api.get(CM_PATH):
        labctl("nodelocal", "off", check=False)
    for path in (SA_PATH,):
        if api.get(path):
            api.delete(path)
    yield
    if api.get(DS_PATH) or api.get(CM_PATH):
        labctl("nodelocal", "off", check=False)
    if api.get(SA_PATH):
        api.delete(SA_PATH)


def test_deploy_idempotent_check_and_uninstall(api, no_nodelocal, tmp_path):
    upstream_before = api.get(UPSTREAM_PATH)
    assert upstream_before, "the lab creates kube-dns-upstream at bootstrap"

    # --check: shows the change, creates nothing
    dry = remediate(tmp_path, "-e", FORCE, check=True)
    assert dry.rc == 0, dry.tail()
    assert api.get(DS_PATH) is None and api.get(CM_PATH) is None and api.get(SA_PATH) is None
    assert not nodecache_running()

    # deploy
    run = remediate(tmp_path, "-e", FORCE, "-e", "nodelocaldns_verify_netns=" + lab.pod_ns(1))
    assert run.rc == 0, run.tail()
    result = run.result()
    assert result["changed"] is True and result["mode"] == "iptables" and result["listen"] == [LOCAL, KUBE_DNS], result
    assert any("verified: node-cache answers from cdl-pod1" in a for a in result["actions"]), result
    ds = api.get(DS_PATH)
    assert ds["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "clusterdns.doctor"
    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("-localip") + 1] == "%s,%s" % (LOCAL, KUBE_DNS)
    assert "limits" not in ds["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert "bind %s %s" % (LOCAL, KUBE_DNS) in api.get(CM_PATH)["data"]["Corefile"]
    upstream = api.get(UPSTREAM_PATH)
    assert upstream["metadata"]["resourceVersion"] == upstream_before["metadata"]["resourceVersion"], "pre-existing Service adopted, not changed"

    # node-cache answers on the local address from the pod namespace; its NOTRACK rules are on node1
    assert short(lab.pod_ns(1), "kubernetes.default.svc.cluster.local", server=LOCAL) == "10.96.0.1"
    raw = nsexec(lab.node_ns(1), "iptables-save", "-t", "raw").stdout
    for address in (LOCAL, KUBE_DNS):
        assert re.search(r"-A PREROUTING -d %s/32 -p udp .*NodeLocal DNS Cache: skip conntrack.*-j NOTRACK" % re.escape(address), raw), raw
    assert nodecache_running() == [1, 2]

    # second run: nothing changes
    again = remediate(tmp_path, "-e", FORCE, "-e", "nodelocaldns_verify_netns=" + lab.pod_ns(1))
    assert again.rc == 0, again.tail()
    assert set(again.changed().values()) == {0}, again.changed()
    assert again.result()["changed"] is False
    version = api.get(DS_PATH)["metadata"]["resourceVersion"]

    # --check on the deployed state: nothing changes
    dry = remediate(tmp_path, "-e", FORCE, check=True)
    assert dry.rc == 0, dry.tail()
    assert set(dry.changed().values()) == {0}, dry.changed()
    assert api.get(DS_PATH)["metadata"]["resourceVersion"] == version

    # uninstall
    gone = remediate(tmp_path, "-e", "nodelocaldns_state=absent", "-e", "nodelocaldns_verify_netns=" + lab.pod_ns(1))
    assert gone.rc == 0, gone.tail()
    assert gone.result()["changed"] is True
    assert api.get(DS_PATH) is None and api.get(CM_PATH) is None and api.get(SA_PATH) is None
    assert api.get(UPSTREAM_PATH)["metadata"]["uid"] == upstream_before["metadata"]["uid"], "pre-existing kube-dns-upstream kept"
    assert any("kube-dns-upstream kept" in n for n in [gone.result()["skipped_reason"] or ""])
    assert wait_until(lambda: not nodecache_running(), 30)
    for node in (1, 2):
        assert nodecache_rules(node) == [], nodecache_rules(node)
        assert LOCAL not in addresses(node)
    assert short(lab.pod_ns(1), "kubernetes.default", "+search") == "10.96.0.1", "pod DNS through 10.96.0.10 and the search path"

    # uninstall again: nothing to do
    again = remediate(tmp_path, "-e", "nodelocaldns_state=absent")
    assert again.rc == 0, again.tail()
    assert set(again.changed().values()) == {0}, again.changed()


def test_blackhole_leftovers_removed_by_the_node_part(api, no_nodelocal, tmp_path):
    labctl("fault", "nodelocal-blackhole")
    assert nodecache_rules(1) and LOCAL in addresses(1)
    rc, _out = dig(lab.pod_ns(1), "kubernetes.default.svc.cluster.local", "+short")
    assert rc == 9, "the black hole: pod1's queries are neither DNATed nor answered"

    dry = remediate(tmp_path, check=True)
    assert dry.rc == 0, dry.tail()
    assert "NLD001" in dry.report["before"]["ids"]
    assert len(nodecache_rules(1)) == 12 and LOCAL in addresses(1), "--check removes nothing"
    planned = dry.result("node1", "clusterdns_remediate_result_nodelocaldns_node")
    assert planned["changed"] is False and len(planned["actions"]) == 14, planned
    assert any(a.startswith("node1: iptables -t raw -D PREROUTING -d 169.254.20.10/32 -p udp") for a in planned["actions"]), planned

    run = remediate(tmp_path)
    assert run.rc == 0, run.tail()
    node1 = run.result("node1", "clusterdns_remediate_result_nodelocaldns_node")
    assert node1["changed"] is True, node1
    assert any("ip addr del 169.254.20.10/32 dev lo" in a for a in node1["actions"]), node1
    assert "clusterdns_remediate_result_nodelocaldns_node" not in run.report["remediation"]["node2"], "no NLD001 on node2: its node part does not run"
    assert "NLD001" in run.report["before"]["ids"] and "NLD001" not in run.report["summary"]["ids"], run.report["summary"]
    assert not run.result()["changed"], "the cluster part deploys nothing for NLD001"
    assert nodecache_rules(1) == []
    assert LOCAL not in addresses(1) and KUBE_DNS not in addresses(1)
    assert short(lab.pod_ns(1), "kubernetes.default.svc.cluster.local") == "10.96.0.1"
    backups = sorted((tmp_path / "backups").glob("iptables-save-nodelocaldns-*.rules"))
    assert backups and "NodeLocal DNS Cache" in backups[-1].read_text()

    again = remediate(tmp_path)
    assert again.rc == 0, again.tail()
    assert set(again.changed().values()) == {0}, again.changed()


def test_failed_verification_removes_what_was_created(api, no_nodelocal, tmp_path):
    # the upstream answers REFUSED for a name outside its zone: the probe of node-cache fails
    run = remediate(tmp_path, "-e", FORCE, "-e", "nodelocaldns_verify_netns=" + lab.pod_ns(1), "-e", "nodelocaldns_verify_name=no-such.invalid")
    assert run.rc != 0
    assert "failed verification and was undone" in run.out, run.tail()
    result = run.result()
    assert result["failed"] is True and result["changed"] is False and result["actions"][0].startswith("rolled back: applied "), result
    assert api.get(DS_PATH) is None and api.get(CM_PATH) is None and api.get(SA_PATH) is None
    assert api.get(UPSTREAM_PATH), "the pre-existing Service is not deleted by the rollback"
    assert wait_until(lambda: not nodecache_running(), 30)
    for node in (1, 2):
        assert nodecache_rules(node) == []
        assert LOCAL not in addresses(node)
    assert short(lab.pod_ns(1), "kubernetes.default.svc.cluster.local") == "10.96.0.1"


@pytest.mark.parametrize("variables, message", [
    ({"nodelocaldns_local_ip": "10.96.0.10"}, "is the kube-dns ClusterIP"),
    ({"nodelocaldns_local_ip": "10.0.0.10"}, "must be a link-local"),
    ({"nodelocaldns_kube_proxy_mode": "nftables"}, "nodelocaldns_kube_proxy_mode"),
])
def test_bad_input_changes_nothing(api, no_nodelocal, tmp_path, variables, message):
    run = remediate(tmp_path, "-e", FORCE, "-e", json.dumps(variables))
    assert run.rc != 0
    assert message in run.out, run.tail()
    assert run.report, "the report is written even when the fix fails"
    assert api.get(DS_PATH) is None and api.get(CM_PATH) is None and api.get(SA_PATH) is None


def test_ipvs_layout_and_kubelet_cluster_dns_only_with_consent(api, no_nodelocal, tmp_path):
    """kube-proxy IPVS layout (the lab's kube-proxy stays in iptables mode): node-cache on the local address only,
    kubelet clusterDNS pointed at it in a KubeletConfiguration file only with nodelocaldns_allow_restart."""
    config = tmp_path / "kubelet" / "config.yaml"
    config.parent.mkdir()
    original = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nclusterDNS:\n- 10.96.0.10\nclusterDomain: cluster.local\n"
    config.write_text(original)
    ipvs = ["-e", "nodelocaldns_kube_proxy_mode=ipvs", "-e", "nodelocaldns_kubelet_config=%s" % config, "-e", "nodelocaldns_restart_command=true"]

    run = remediate(tmp_path, "-e", FORCE, *ipvs)
    assert run.rc == 0, run.tail()
    result = run.result()
    assert result["listen"] == [LOCAL] and result["restart_required"] is True, result
    assert any("kubelet clusterDNS 10.96.0.10 -> 169.254.20.10 in %s" % config in p for p in result["pending"]), result
    assert config.read_text() == original, "no kubelet change without nodelocaldns_allow_restart"
    args = api.get(DS_PATH)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("-localip") + 1] == LOCAL
    assert "forward . %s {" % KUBE_DNS in api.get(CM_PATH)["data"]["Corefile"]
    assert short(lab.pod_ns(1), "kubernetes.default.svc.cluster.local", server=LOCAL) == "10.96.0.1"
    assert KUBE_DNS not in [a for line in nodecache_rules(1) for a in re.findall(r"-[ds] (\S+)/32", line)]

    run = remediate(tmp_path, "-e", FORCE, "-e", "nodelocaldns_allow_restart=true", *ipvs)
    assert run.rc == 0, run.tail()
    assert "clusterDNS:\n- 169.254.20.10\n" in config.read_text()
    assert "clusterDomain: cluster.local" in config.read_text()
    assert list(config.parent.glob("config.yaml.*~")), "backup kept next to the file"
    assert run.result()["restart_required"] is False

    # uninstall: kubelet pointed back at the ClusterIP first, then the objects go
    gone = remediate(tmp_path, "-e", "nodelocaldns_state=absent", *ipvs)
    assert gone.rc != 0 and "Nothing was deleted" in gone.out, gone.tail()
    assert api.get(DS_PATH) is not None
    gone = remediate(tmp_path, "-e", "nodelocaldns_state=absent", "-e", "nodelocaldns_allow_restart=true", *ipvs)
    assert gone.rc == 0, gone.tail()
    assert "clusterDNS:\n- 10.96.0.10\n" in config.read_text()
    assert api.get(DS_PATH) is None
    assert wait_until(lambda: not nodecache_running(), 30)
    assert nodecache_rules(1) == [] and LOCAL not in addresses(1)
