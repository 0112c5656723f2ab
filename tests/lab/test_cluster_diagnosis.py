# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster diagnosis on the real lab: for every lab fault with a cluster finding, diagnose.yml
(coredns_info + workload_dns_info + the cluster rules) reports that finding with its evidence;
the healthy lab gives no finding at warning or above; diagnose works with a token bound to the
shipped read-only ClusterRole and metrics Role (docs/rbac/clusterdns-diagnose.yml) and nothing
more. CDNS009 reads the CoreDNS pods' metrics through the kube-apiserver's pod proxy and fires
when CoreDNS really refuses queries over forward's max_concurrent; NLD003 reads kube-proxy's mode
from its ConfigMap."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import threading
import time

import pytest
import yaml
from conftest import dig, lab, labctl, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("healed")]

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
RBAC = COLLECTION / "docs" / "rbac" / "clusterdns-diagnose.yml"
RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}
KUBE_PROXY_CM = "/api/v1/namespaces/kube-system/configmaps/kube-proxy"
# Seconds between the two metrics reads (the playbook default is 10; the lab's rates need less).
METRICS_INTERVAL = 3


def truncate_coredns_logs():
    for slot in lab.DNS_SLOTS:
        path = lab.sp("logs", "coredns-%s.log" % slot)
        if os.path.exists(path):
            os.truncate(path, 0)  # CoreDNS writes with O_APPEND: its next line starts the file


@pytest.fixture(autouse=True)
def own_coredns_log_lines(api):
    """Each test sees only the CoreDNS log lines of its own time, as clusterdns_log_seconds gives
    on a real kubelet: the lab's kubelet stand-in serves the whole container log (it ignores
    sinceSeconds), so lines of earlier tests and other modules (i/o timeouts, max_concurrent
    refusals) would reach CDNS010. The logs are rotated before each test and after the last one."""
    truncate_coredns_logs()
    yield


@pytest.fixture(scope="module", autouse=True)
def no_coredns_log_lines_left(api):
    yield
    truncate_coredns_logs()


@pytest.fixture(scope="module", autouse=True)
def kube_proxy_configmap(api):
    """ConfigMap kube-system/kube-proxy, as labctl up creates it (a lab started before it did gets
    it here, with the same content)."""
    if api.get(KUBE_PROXY_CM) is None:
        api.create("/api/v1/namespaces/kube-system/configmaps", lab.kube_proxy_configmap())
    return api.get(KUBE_PROXY_CM)


def diagnose(tmp_path, kubeconfig=None):
    """Run diagnose.yml against the lab only (clusterdns_hosts matches no host); the report."""
    report = tmp_path / "report"
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_INVENTORY": str(COLLECTION / "inventory" / "localhost.yml"),
        "ANSIBLE_NOCOLOR": "1",
    })
    cmd = [str(COLLECTION / ".venv" / "bin" / "ansible-playbook"), str(COLLECTION / "playbooks" / "diagnose.yml"),
           "-e", "clusterdns_kubeconfig=%s" % (kubeconfig or lab.sp("kubeconfig")),
           "-e", "clusterdns_hosts=clusterdns_no_such_host", "-e", "clusterdns_report_dir=%s" % report,
           # only this test's CoreDNS log lines (CDNS010), not those of earlier faults
           "-e", "clusterdns_log_seconds=90", "-e", "clusterdns_metrics_interval=%d" % METRICS_INTERVAL]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return json.loads((report / "findings.json").read_text())


def findings(report, finding_id):
    return [f for f in report["findings"] if f["id"] == finding_id]


def check(report, finding_id):
    return next(c for c in report["checks"] if c["id"] == finding_id)


def pod(api, name):
    return api.get("/api/v1/namespaces/kube-system/pods/%s" % name)


def crash_looping(api):
    p = pod(api, "coredns-a")
    cs = (p["status"].get("containerStatuses") or [{}])[0]
    return cs.get("restartCount", 0) >= 1 and (cs.get("lastState") or {}).get("terminated")


def upstream_timed_out(api):
    """A pod asks for an external lab name; CoreDNS forwards it to the (now silent) upstream and logs
    the i/o timeout. True once CoreDNS has logged it (bounded by the caller's wait)."""
    dig(lab.pod_ns(1), "www.lab.example", "+time=3", "+tries=1")
    logs = "".join(pathlib.Path(lab.STATE, "logs", "coredns-%s.log" % s).read_text(errors="replace")[-20000:] for s in ("a", "b"))
    return "i/o timeout" in logs or "read udp" in logs


def not_ready(api):
    return not any(c["type"] == "Ready" and c["status"] == "True" for c in pod(api, "coredns-a")["status"].get("conditions", []))


def evidence_of(hits, key):
    return [f["evidence"].get(key) for f in hits]


def test_healthy_lab_is_clean(api, tmp_path):
    # First in the module: a fresh lab, before any fault restarted a CoreDNS pod.
    report = diagnose(tmp_path)
    loud = [f for f in report["findings"] if RANK[f["severity"]] >= RANK["warning"]]
    assert loud == [], json.dumps(loud, indent=1)[:3000]
    cluster_checks = {c["id"]: c for c in report["checks"] if c["scope"] == "cluster"}
    # The cluster part really ran: these were evaluated, not skipped for want of a cluster.
    for finding_id in ("CDNS002", "CDNS003", "CDNS005", "CDNS006", "CDNS007", "CDNS009", "CDNS011", "SVC001", "SVC002", "WL001", "WL003"):
        assert cluster_checks[finding_id]["status"] == "pass", cluster_checks[finding_id]
    # Restarts left by earlier faults on a lab that was already up are info; the pods are Ready.
    assert cluster_checks["CDNS001"]["status"] in ("pass", "fail")


# fault, fault arguments, expected finding, what its evidence must show, lab state to wait for.
MATRIX = [
    ("session-affinity", (), "SVC001", lambda hits: evidence_of(hits, "session_affinity") == ["ClientIP"], None),
    ("coredns-single-replica", (), "CDNS002", lambda hits: evidence_of(hits, "replicas") == [1], None),
    ("autopath", (), "CDNS006", lambda hits: hits[0]["evidence"]["args"] == ["@kubernetes"] and hits[0]["evidence"]["lineno"], None),
    ("no-log-plugin", (), "CDNS007", lambda hits: "log" not in hits[0]["evidence"]["plugins"] and "kubernetes" in hits[0]["evidence"]["plugins"], None),
    ("corefile-invalid", (), "CDNS011", lambda hits: evidence_of(hits, "plugin") == ["cahce"] and hits[0]["evidence"]["lineno"], None),
    ("corefile-invalid", (), "CDNS001", lambda hits: any(
        f["evidence"]["name"] == "coredns-a" and f["evidence"]["restarts"] >= 1 and f["evidence"]["last_termination"]["exit_code"] != 0
        for f in hits), crash_looping),
    ("upstream-loop", (), "CDNS001", lambda hits: any(
        f["evidence"]["restarts"] >= 1 and f["evidence"]["last_termination"]["exit_code"] != 0 for f in hits), crash_looping),
    ("coredns-down", ("all",), "CDNS001", lambda hits: {f["evidence"]["name"] for f in hits if not f["evidence"]["ready"]} == {"coredns-a", "coredns-b"},
     not_ready),
    ("coredns-down", ("all",), "SVC002", lambda hits: hits[0]["evidence"]["ready"] == [] and hits[0]["severity"] == "critical", not_ready),
    ("no-endpoints", (), "SVC002", lambda hits: hits[0]["evidence"]["ready"] == [] and hits[0]["evidence"]["selector"] == {"k8s-app": "kube-dns-v2"}, None),
    ("rbac-endpointslices", (), "CDNS005", lambda hits: "list endpointslices.discovery.k8s.io" in hits[0]["evidence"]["missing"]
     and "watch endpointslices.discovery.k8s.io" in hits[0]["evidence"]["missing"], None),
    ("statefulset-servicename", (), "WL003", lambda hits: any(f["evidence"]["name"] == "web" and f["evidence"]["service_name"] == "web" for f in hits), None),
    ("upstream-timeout", (), "CDNS010", lambda hits: hits[0]["evidence"]["upstream_errors"] >= 1 and hits[0]["evidence"]["tickets"]
     and hits[0]["evidence"]["tickets"][0]["domain"].rstrip(".") == "www.lab.example", upstream_timed_out),
    ("tolerate-unready-annotation", (), "CDNS004", lambda hits: any(
        e.get("name") == "legacy-db" for e in hits[0]["evidence"]["examples"]), None),
]


@pytest.mark.parametrize("fault,args,finding_id,shows,ready", MATRIX, ids=["%s-%s" % (m[0], m[2]) for m in MATRIX])
def test_fault_gives_finding(api, tmp_path, fault, args, finding_id, shows, ready):
    labctl("fault", fault, *args)
    if ready is not None:
        assert wait_until(lambda: ready(api), 40), "lab state for %s not reached" % fault
    report = diagnose(tmp_path)
    hits = findings(report, finding_id)
    assert hits, "%s: no %s; checks: %s" % (fault, finding_id, check(report, finding_id))
    assert shows(hits), json.dumps(hits, indent=1)[:3000]
    assert all(f["scope"] == "cluster" and f["evidence"] for f in hits)


def test_nodelocal_in_the_lab_is_reported_as_force_tcp_without_prefer_udp(api, tmp_path):
    labctl("nodelocal", "on")
    report = diagnose(tmp_path)
    hits = findings(report, "CDNS008")
    assert hits and hits[0]["evidence"]["nodelocaldns_force_tcp"], check(report, "CDNS008")
    # kube-proxy runs in iptables mode and node-cache listens on the local address and the kube-dns
    # ClusterIP, as it should in that mode: NLD003 is evaluated and passes.
    assert check(report, "NLD003")["status"] == "pass", check(report, "NLD003")


def test_nld003_nodelocal_on_the_clusterip_while_kube_proxy_says_ipvs(api, tmp_path, kube_proxy_configmap):
    original = kube_proxy_configmap["data"]["config.conf"]
    assert "\nmode: iptables\n" in original
    labctl("nodelocal", "on")
    try:
        api.patch(KUBE_PROXY_CM, {"data": {"config.conf": original.replace("\nmode: iptables\n", "\nmode: ipvs\n")}})
        report = diagnose(tmp_path)
    finally:
        api.patch(KUBE_PROXY_CM, {"data": {"config.conf": original}})
    hits = findings(report, "NLD003")
    assert hits, check(report, "NLD003")
    evidence = hits[0]["evidence"]
    assert evidence["kube_proxy_mode"] == "ipvs" and evidence["kube_dns_cluster_ips"] == ["10.96.0.10"]
    assert evidence["local_ip"] == ["169.254.20.10", "10.96.0.10"] and evidence["daemonset"] == "kube-system/node-local-dns"
    assert hits[0]["severity"] == "error" and "10.96.0.10" in hits[0]["detail"]
    assert api.get(KUBE_PROXY_CM)["data"]["config.conf"] == original


class Burst(threading.Thread):
    """Rounds of parallel queries for names no cache holds, from the pod namespace of node1 to the
    kube-dns ClusterIP, until stopped; bounded to ``limit`` seconds and ``rounds`` rounds."""

    def __init__(self, parallel=8, limit=150, rounds=300):
        super().__init__(daemon=True)
        self.parallel, self.limit, self.rounds = parallel, limit, rounds
        self.stop = threading.Event()
        self.answers = {}

    def run(self):
        end = time.time() + self.limit
        for r in range(self.rounds):
            if self.stop.is_set() or time.time() > end:
                return
            procs = [subprocess.Popen(["ip", "netns", "exec", lab.pod_ns(1), "dig", "+time=1", "+tries=1",
                                       "burst-%d-%d.example.com" % (r, i), "@%s" % lab.KUBE_DNS_IP],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(self.parallel)]
            for proc in procs:
                out = proc.communicate(timeout=10)[0]
                status = out.split("status: ")[1].split(",")[0] if "status: " in out else "no answer"
                self.answers[status] = self.answers.get(status, 0) + 1
            time.sleep(0.3)


def test_cdns009_fires_when_coredns_refuses_queries_over_max_concurrent(api, tmp_path):
    # A real overload: forward allows 2 queries in flight, the upstream answers nothing (fault
    # upstream-timeout), and a bounded burst from a pod keeps more than 2 waiting: CoreDNS answers
    # the rest REFUSED and counts them in coredns_forward_max_concurrent_rejects_total.
    info = lab.edit_corefile(lambda text: text.replace("max_concurrent 1000", "max_concurrent 2"))
    burst = Burst()
    try:
        labctl("fault", "upstream-timeout")
        burst.start()
        report = diagnose(tmp_path)
    finally:
        burst.stop.set()
        burst.join(30)
        labctl("heal", "upstream-timeout", check=False)
        lab.restore_corefile(info)
    assert "max_concurrent 1000" in lab.get_corefile(api)
    assert burst.answers.get("REFUSED"), burst.answers  # the clients saw it
    hits = findings(report, "CDNS009")
    assert hits, check(report, "CDNS009")
    assert all(f["severity"] == "error" and f["object"].startswith("kube-system/Pod/coredns-") for f in hits)
    evidence = hits[0]["evidence"]
    assert evidence["max_concurrent_rejects"] >= 1 and evidence["refused"] >= evidence["max_concurrent_rejects"]
    assert evidence["interval_seconds"] >= METRICS_INTERVAL and evidence["qps"] > 0
    assert [f["max_concurrent"] for f in evidence["forward_max_concurrent"]] == ["2"]
    assert "because forward's max_concurrent 2 (Corefile line" in hits[0]["detail"]
    # The upstream's timeouts are CDNS010's; CoreDNS's own refusals are not cited there as tickets.
    for f in findings(report, "CDNS010"):
        assert all(t.get("reason") != "max_concurrent" for t in f["evidence"]["tickets"]), f


@pytest.fixture
def diagnose_kubeconfig(api, tmp_path):
    """A kubeconfig whose token belongs to a service account bound to the shipped ClusterRole and
    metrics Role only."""
    shipped = yaml.safe_load(RBAC.read_text())
    assert shipped["kind"] == "List"
    role, metrics_role = shipped["items"]
    assert (role["kind"], metrics_role["kind"], metrics_role["metadata"]["namespace"]) == ("ClusterRole", "Role", "kube-system")
    name = role["metadata"]["name"]
    created = []
    try:
        api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        created.append("/apis/rbac.authorization.k8s.io/v1/clusterroles/%s" % name)
        api.create("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles", metrics_role)
        created.append("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/%s" % metrics_role["metadata"]["name"])
        api.create("/api/v1/namespaces/kube-system/serviceaccounts",
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "clusterdns-diagnose", "namespace": "kube-system"}})
        created.append("/api/v1/namespaces/kube-system/serviceaccounts/clusterdns-diagnose")
        api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "clusterdns-diagnose"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "clusterdns-diagnose", "namespace": "kube-system"}]})
        created.append("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/clusterdns-diagnose")
        api.create("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "clusterdns-diagnose-metrics", "namespace": "kube-system"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": metrics_role["metadata"]["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": "clusterdns-diagnose", "namespace": "kube-system"}]})
        created.append("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings/clusterdns-diagnose-metrics")
        token = api.req("POST", "/api/v1/namespaces/kube-system/serviceaccounts/clusterdns-diagnose/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}})["status"]["token"]
        path = tmp_path / "kubeconfig-diagnose"
        path.write_text(lab.kubeconfig_text(api.server, token, "clusterdns-diagnose"))
        path.chmod(0o600)
        yield path
    finally:
        for obj in reversed(created):
            api.delete(obj)


def test_diagnose_with_the_shipped_clusterrole_only(api, tmp_path, diagnose_kubeconfig):
    labctl("fault", "session-affinity")
    admin = diagnose(tmp_path / "admin")
    limited = diagnose(tmp_path / "limited", kubeconfig=diagnose_kubeconfig)
    assert sorted(f["id"] for f in limited["findings"]) == sorted(f["id"] for f in admin["findings"])
    assert findings(limited, "SVC001")
    for finding_id in ("CDNS005", "SVC002", "WL003", "CDNS006", "CDNS009"):
        assert check(limited, finding_id)["status"] == "pass", check(limited, finding_id)
    # Without the metrics Role, CDNS009 says why it did not look; the rest is unchanged.
    api.delete("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/rolebindings/clusterdns-diagnose-metrics")
    assert wait_until(lambda: proxy_forbidden(diagnose_kubeconfig), 15)
    no_metrics = diagnose(tmp_path / "no-metrics", kubeconfig=diagnose_kubeconfig)
    assert check(no_metrics, "CDNS009")["status"] == "skip" and "forbidden" in check(no_metrics, "CDNS009")["reason"]
    assert "pods/proxy" in check(no_metrics, "CDNS009")["reason"]
    assert sorted(f["id"] for f in no_metrics["findings"]) == sorted(f["id"] for f in admin["findings"])
    # Without the role the same identity reads nothing: the checks say why instead of failing.
    api.delete("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/clusterdns-diagnose")
    assert wait_until(lambda: lab_forbidden(diagnose_kubeconfig), 15)
    denied = diagnose(tmp_path / "denied", kubeconfig=diagnose_kubeconfig)
    assert check(denied, "CDNS002")["status"] == "skip" and "forbidden" in check(denied, "CDNS002")["reason"]
    assert check(denied, "SVC001")["status"] == "skip" and "forbidden" in check(denied, "SVC001")["reason"]


def lab_forbidden(kubeconfig, path="/api/v1/namespaces/kube-system/pods"):
    cfg = json.loads(pathlib.Path(kubeconfig).read_text())
    limited = lab.Api(cfg["clusters"][0]["cluster"]["server"])
    limited.token = cfg["users"][0]["user"]["token"]
    try:
        limited.get(path)
    except RuntimeError as exc:
        return ": 403 " in str(exc)
    except ValueError:  # allowed: the metrics are text, not JSON
        return False
    return False


def proxy_forbidden(kubeconfig):
    return lab_forbidden(kubeconfig, "/api/v1/namespaces/kube-system/pods/coredns-a:9153/proxy/metrics")
