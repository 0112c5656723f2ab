"""labctl up on this machine, the DNS path through the ClusterIP (DNAT visible in conntrack),
the upstream zone, the admin kubeconfig from the root namespace, and a clean labctl down."""

import os
import pathlib
import re
import subprocess
import time

import pytest

from conftest import lab, lab_is_up, labctl, nsexec, short, skip_unless_root

pytestmark = pytest.mark.lab


def root_snapshot():
    ipt = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    ipt = "\n".join(ln for ln in ipt.splitlines() if not ln.startswith("#"))
    # counters change all the time; compare rules only
    ipt = re.sub(r"\[\d+:\d+\]", "", ipt)
    return {
        "nf_conntrack_max": pathlib.Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text().strip(),
        "iptables": ipt,
        "addrs": subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=False).stdout,
    }


def lab_processes():
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = pathlib.Path("/proc/%s/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if lab.STATE in cmd or lab.BIN in cmd or "labctl _" in cmd:
            out.append((pid, cmd))
    return out


def test_up_resolve_down():
    skip_unless_root()
    if lab_is_up():
        labctl("down")
    before = root_snapshot()
    t0 = time.time()
    r = labctl("up")
    print("labctl up: %.1f s" % (time.time() - t0))
    kubeconfig = r.stdout.strip().splitlines()[-1]
    assert kubeconfig == labctl("kubeconfig").stdout.strip() and os.path.exists(kubeconfig)
    try:
        # no lab address in the root namespace
        assert "10.201." not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=False).stdout
        # the pod resolves through the kube-dns ClusterIP; kube-proxy's DNAT shows in conntrack
        pod, node = lab.pod_ns(1), lab.node_ns(1)
        nsexec(node, "conntrack", "-F")
        assert short(pod, "kubernetes.default.svc.cluster.local") == "10.96.0.1"
        ct = nsexec(node, "conntrack", "-L", "-p", "udp", "--orig-dst", lab.KUBE_DNS_IP).stdout
        assert re.search(r"dst=10\.96\.0\.10 sport=\d+ dport=53 src=10\.201\.0\.2[12] dst=10\.244\.1\.2", ct), ct
        # resolv.conf is what a kubelet writes, so the short name works through the search path
        assert "ndots:5" in nsexec(pod, "cat", "/etc/resolv.conf").stdout
        assert short(pod, "kubernetes.default", "+search") == "10.96.0.1"
        # an external lab name resolves through CoreDNS -> upstream dnsmasq
        assert short(pod, "www.lab.example") == "192.0.2.10"
        up_log = pathlib.Path(lab.STATE, "logs", "upstream-dnsmasq.log").read_text()
        assert re.search(r"query\[A\] www\.lab\.example from 10\.201\.0\.2[12]", up_log)
        # the admin kubeconfig works from the root namespace (kubernetes client, if installed)
        try:
            import kubernetes
        except ImportError:
            kubernetes = None
        if kubernetes is not None:
            client = kubernetes.config.new_client_from_config(kubeconfig)
            names = [n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_node().items]
            assert names == ["node%d" % i for i in range(1, lab.NODES + 1)]
            # pod logs through the API: the agent serves the kubelet's containerLogs endpoint
            text = kubernetes.client.CoreV1Api(client).read_namespaced_pod_log("coredns-a", "kube-system")
            assert "CoreDNS-" in text
        svc = lab.Api().get("/api/v1/namespaces/kube-system/services/kube-dns")
        assert svc["spec"]["clusterIP"] == lab.KUBE_DNS_IP
    finally:
        labctl("down")
    assert_nothing_left(before, root_snapshot())


def assert_nothing_left(before, after, pids=()):
    # other users of the machine may change the root namespace meanwhile: compare what is ours
    lab_marks = ("10.201.0.", "10.96.0.", "10.244.", "169.254.20.10", lab.PREFIX, "KUBE-", "NodeLocal")
    for key in ("iptables", "addrs"):
        assert not [ln for ln in after[key].splitlines() if any(m in ln for m in lab_marks)
                    and ln not in before[key].splitlines()], key
    assert list(lab.lab_netns()) == []
    assert not [d for d in os.listdir("/etc/netns") if d.startswith(lab.PREFIX)] if os.path.isdir("/etc/netns") else True
    assert not os.path.exists(lab.STATE)
    assert lab_processes() == []
    assert [pid for pid in pids if alive(pid)] == []
    assert after["nf_conntrack_max"] == before["nf_conntrack_max"]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.destructive
def test_down_with_faults_applied_leaves_nothing():
    """down without heal: NodeLocal DNSCache on (node-cache, its rules and addresses in the node
    namespaces) and conntrack-full (global nf_conntrack_max lowered; guard, fill server and client
    processes, the guard in the root namespace) are all undone, the limit restored."""
    skip_unless_root()
    if lab_is_up():
        labctl("down")
    before = root_snapshot()
    labctl("up")
    try:
        labctl("nodelocal", "on")
        labctl("fault", "conntrack-full")
        lowered = pathlib.Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text().strip()
        assert lowered == str(lab.load_state()["faults"]["conntrack-full"]["new_max"]) != before["nf_conntrack_max"]
        pids = {n: lab.pid_of(n) for n in ("fault-conntrack-guard", "fault-conntrack-server", "fault-conntrack-client",
                                           "node-cache-node1", "node-cache-node2", "agent", "kube-apiserver")}
        assert all(pids.values()), pids
    finally:
        labctl("down")
    assert_nothing_left(before, root_snapshot(), pids.values())
