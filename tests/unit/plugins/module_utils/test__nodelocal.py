# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""NodeLocal DNSCache logic: listen addresses per kube-proxy mode, the cleanup plan of node-cache's
leftovers (on the real rules node-cache wrote in the lab), the rollout check and the kubelet
clusterDNS edit."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _iptables, _nodelocal, _resolver
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "nodelocal"


def fixture(name):
    return (FIXTURES / name).read_text()


def sockets(name):
    return _iptables.parse_ss(fixture(name), "udp")


# --- listen addresses ---------------------------------------------------------------------------

def test_iptables_mode_listens_on_the_local_address_and_the_cluster_ip():
    assert _nodelocal.listen_addresses("iptables", "169.254.20.10", ["10.96.0.10"]) == ["169.254.20.10", "10.96.0.10"]


def test_ipvs_mode_listens_on_the_local_address_only():
    assert _nodelocal.listen_addresses("ipvs", "169.254.20.10", ["10.96.0.10"]) == ["169.254.20.10"]


def test_cluster_ips_of_the_other_family_are_left_out():
    assert _nodelocal.listen_addresses("iptables", "fd00::10", ["10.96.0.10", "fd00:10:96::a"]) == ["fd00::10", "fd00:10:96::a"]


@pytest.mark.parametrize("mode, local, message", [
    ("nftables", "169.254.20.10", "kube-proxy mode must be one of iptables, ipvs"),
    ("iptables", "8.8.8.8", "link-local"),
    ("iptables", "10.0.0.10", "link-local"),
    ("iptables", "127.0.0.10", "link-local"),
    ("iptables", "10.96.0.10", "is the kube-dns ClusterIP"),
    ("iptables", "169.254.20", "must be an IP address"),
])
def test_bad_listen_input_is_refused_with_the_reason(mode, local, message):
    with pytest.raises(ValueError, match=message):
        _nodelocal.listen_addresses(mode, local, ["10.96.0.10"])


# --- ip -j addr ---------------------------------------------------------------------------------

def test_ip_addr_json_gives_device_kind_and_address():
    addresses = _nodelocal.parse_ip_addr(fixture("netns-link-ipvs-ip-addr.json"))
    by = {(a["dev"], a["address"]): a for a in addresses}
    assert by[("nodelocaldns", "169.254.20.10")]["prefixlen"] == 32
    assert by[("kube-ipvs0", "10.96.0.10")]["kind"] == "veth"
    assert by[("lo", "fd00::10")] == {"dev": "lo", "kind": "loopback", "family": "ipv6", "address": "fd00::10", "prefixlen": 128}


def test_ip_addr_that_is_not_json_names_the_source():
    with pytest.raises(ParseError, match="ip -j addr show: not JSON"):
        _nodelocal.parse_ip_addr("1: lo: <LOOPBACK,UP> mtu 65536")


# --- node-cache rules and the cleanup plan ------------------------------------------------------

def test_nodecache_rules_are_found_by_their_comments_only():
    rules = _nodelocal.nodecache_rules(fixture("lab-node1-running-iptables-save.txt"))
    assert len(rules) == 21
    assert {r["table"] for r in rules} == {"raw", "filter"}
    assert {r["comment"] for r in rules} == set(_nodelocal.COMMENTS)
    health = [r for r in rules if "--sport 8080" in r["rule"]]
    assert health and health[0]["addresses"] == ["169.254.20.10"]
    six = _nodelocal.nodecache_rules(fixture("netns-ip6-nodecache-ip6tables-save.txt"), "ipv6")
    assert len(six) == 9 and not any("cilium" in r["rule"] for r in six)


def test_running_node_cache_is_left_alone():
    plan = _nodelocal.cleanup_plan({"ipv4": fixture("lab-node1-running-iptables-save.txt")}, sockets("lab-node1-running-ss-lnup.txt"),
                                   _nodelocal.parse_ip_addr(fixture("lab-node1-running-ip-addr.json")), ["169.254.20.10"])
    assert plan["changes"] is False
    assert plan["answering"] == ["10.96.0.10", "169.254.20.10"]
    assert plan["rules"] == [] and plan["commands"] == [] and plan["restore"] == {}
    assert any("node-cache runs" in k for k in plan["kept"])


def test_black_hole_plan_removes_every_rule_and_the_addresses_on_lo():
    save = fixture("lab-node1-running-iptables-save.txt")
    plan = _nodelocal.cleanup_plan({"ipv4": save}, sockets("netns-empty-ss-lnup.txt"),
                                   _nodelocal.parse_ip_addr(fixture("lab-node1-running-ip-addr.json")), ["169.254.20.10"])
    assert plan["changes"] is True
    assert sorted(plan["leftover"]) == ["10.96.0.10", "169.254.20.10"]
    assert len(plan["rules"]) == 21
    assert plan["tables"] == {"ipv4": ["filter", "raw"]}
    assert plan["commands"] == [["ip", "addr", "del", "169.254.20.10/32", "dev", "lo"], ["ip", "addr", "del", "10.96.0.10/32", "dev", "lo"]]
    assert plan["undo"] == [["ip", "addr", "add", "169.254.20.10/32", "dev", "lo"], ["ip", "addr", "add", "10.96.0.10/32", "dev", "lo"]]
    restore = plan["restore"]["ipv4"]
    assert restore.startswith("*filter\n-D INPUT -d 10.96.0.10/32 -p udp -m udp --dport 53 -m comment "
                              "--comment \"NodeLocal DNS Cache: allow DNS traffic\" -j ACCEPT\n")
    assert restore.count("COMMIT\n") == 2 and restore.count("-D ") == 21
    assert plan["diff"]["after"] == ""
    assert "127.0.0.1" not in json.dumps(plan["commands"])


def test_the_plan_applies_with_iptables_restore_in_a_namespace(tmp_path):
    """The restore input really deletes node-cache's rules and nothing else (real iptables-restore in a test namespace)."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True, check=False).stdout.strip() != "0":
        pytest.skip("needs root for a network namespace")
    ns = "cdunit-nl%d" % (abs(hash(str(tmp_path))) % 100000)
    # kube-proxy's nfacct rule needs the nfacct object kube-proxy created: left out of the copy
    save = "\n".join(line for line in fixture("lab-node1-running-iptables-save.txt").splitlines() if "nfacct" not in line) + "\n"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=save, text=True, check=True)
        before = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True, check=True).stdout
        plan = _nodelocal.cleanup_plan({"ipv4": before}, [], [], ["169.254.20.10"])
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore", "--noflush"], input=plan["restore"]["ipv4"], text=True, check=True)
        after = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert "NodeLocal DNS Cache" not in after
    kept = [line for line in before.splitlines() if line.startswith("-A") and "NodeLocal" not in line]
    assert kept and all(line in after.splitlines() for line in kept)
    assert _nodelocal.cleanup_plan({"ipv4": after}, [], [], ["169.254.20.10"])["changes"] is False


def test_link_is_deleted_but_kube_ipvs0_is_never_touched():
    addresses = _nodelocal.parse_ip_addr(fixture("netns-link-ipvs-ip-addr.json"))
    save = fixture("lab-node1-running-iptables-save.txt")
    plan = _nodelocal.cleanup_plan({"ipv4": save, "ipv6": fixture("netns-ip6-nodecache-ip6tables-save.txt")}, [], addresses, ["169.254.20.10"])
    assert plan["link"] == "nodelocaldns"
    assert ["ip", "link", "del", "nodelocaldns"] in plan["commands"]
    assert ["ip", "addr", "add", "169.254.20.10/32", "dev", "nodelocaldns"] in plan["undo"]
    assert not any("kube-ipvs0" in " ".join(c) for c in plan["commands"])
    assert any("10.96.0.10 on kube-ipvs0" in k for k in plan["kept"])
    assert ["ip", "addr", "del", "fd00::10/128", "dev", "lo"] in plan["commands"]
    assert plan["tables"]["ipv6"] == ["filter", "raw"]
    assert "cilium" not in plan["restore"]["ipv6"] and plan["restore"]["ipv6"].count("-D ") == 9


def test_only_the_silent_address_is_cleaned_when_node_cache_still_answers_on_another():
    save = fixture("lab-node1-running-iptables-save.txt")
    listening = [s for s in sockets("lab-node1-running-ss-lnup.txt") if s["address"] == "169.254.20.10"]
    plan = _nodelocal.cleanup_plan({"ipv4": save}, listening, _nodelocal.parse_ip_addr(fixture("lab-node1-running-ip-addr.json")), ["169.254.20.10"])
    assert plan["leftover"] == ["10.96.0.10"]
    assert all(r["addresses"] == ["10.96.0.10"] for r in plan["rules"]) and len(plan["rules"]) == 9
    assert plan["commands"] == [["ip", "addr", "del", "10.96.0.10/32", "dev", "lo"]]


def test_a_local_address_without_rules_on_lo_is_still_a_leftover():
    addresses = [{"dev": "lo", "kind": "loopback", "family": "ipv4", "address": "169.254.20.10", "prefixlen": 32}]
    plan = _nodelocal.cleanup_plan({"ipv4": ""}, [], addresses, ["169.254.20.10"])
    assert plan["commands"] == [["ip", "addr", "del", "169.254.20.10/32", "dev", "lo"]] and plan["restore"] == {}


def test_nothing_of_node_cache_nothing_planned():
    plan = _nodelocal.cleanup_plan({"ipv4": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"}, [], [], ["169.254.20.10"])
    assert plan["changes"] is False and plan["leftover"] == [] and plan["kept"] == []


# --- rollout ------------------------------------------------------------------------------------

def _node(name, ready=True, os_label="linux"):
    return {"metadata": {"name": name, "labels": {"kubernetes.io/os": os_label}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _pod(node, ready=True):
    return {"metadata": {"name": "node-local-dns-" + node, "labels": {"k8s-app": "node-local-dns"}},
            "spec": {"nodeName": node}, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


DS = {"metadata": {"name": "node-local-dns", "namespace": "kube-system", "generation": 2},
      "spec": {"selector": {"matchLabels": {"k8s-app": "node-local-dns"}},
               "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}}}


def test_rollout_from_the_controller_status():
    ds = dict(DS, status={"observedGeneration": 2, "desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberReady": 3, "numberAvailable": 3})
    assert _nodelocal.rollout(ds)["ready"] is True
    old = dict(DS, status=dict(ds["status"], observedGeneration=1))
    assert _nodelocal.rollout(old)["ready"] is False
    assert "has not seen the latest change" in _nodelocal.rollout(old)["summary"]
    rolling = dict(DS, status=dict(ds["status"], updatedNumberScheduled=2, numberUnavailable=1))
    assert _nodelocal.rollout(rolling)["ready"] is False


def test_rollout_without_a_controller_counts_ready_pods_per_node():
    nodes = [_node("node1"), _node("node2"), _node("down", ready=False), _node("win", os_label="windows")]
    assert _nodelocal.rollout(DS, [_pod("node1"), _pod("node2")], nodes)["ready"] is True
    waiting = _nodelocal.rollout(DS, [_pod("node1"), _pod("node2", ready=False)], nodes)
    assert waiting["ready"] is False and waiting["summary"].endswith("waiting on node2")
    assert _nodelocal.rollout(None)["summary"] == "DaemonSet not found"


# --- kubelet clusterDNS -------------------------------------------------------------------------

KUBEADM = """apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
clusterDNS:
- 10.96.0.10

clusterDomain: cluster.local
# comment kept
resolvConf: /run/systemd/resolve/resolv.conf
"""


def test_kubelet_block_list_replaced_other_lines_kept():
    edit = _nodelocal.kubelet_cluster_dns(KUBEADM, ["169.254.20.10"])
    assert edit["changed"] and edit["before"] == ["10.96.0.10"]
    assert edit["text"] == KUBEADM.replace("- 10.96.0.10\n", "- 169.254.20.10\n")
    assert _resolver.parse_kubelet_config(edit["text"])["cluster_dns"] == ["169.254.20.10"]
    back = _nodelocal.kubelet_cluster_dns(edit["text"], ["10.96.0.10"])
    assert _resolver.parse_kubelet_config(back["text"]) == _resolver.parse_kubelet_config(KUBEADM)
    assert _nodelocal.kubelet_cluster_dns(edit["text"], ["169.254.20.10"])["changed"] is False


def test_kubelet_flow_list_and_missing_key_and_json():
    flow = "kind: KubeletConfiguration\nclusterDNS: [10.96.0.10, 10.96.0.11]\nclusterDomain: cluster.local\n"
    assert _nodelocal.kubelet_cluster_dns(flow, ["169.254.20.10"])["text"] == \
        "kind: KubeletConfiguration\nclusterDNS:\n- 169.254.20.10\nclusterDomain: cluster.local\n"
    missing = "kind: KubeletConfiguration"
    assert _nodelocal.kubelet_cluster_dns(missing, ["169.254.20.10"])["text"] == "kind: KubeletConfiguration\nclusterDNS:\n- 169.254.20.10\n"
    js = json.dumps({"kind": "KubeletConfiguration", "clusterDNS": ["10.96.0.10"], "maxPods": 110})
    out = json.loads(_nodelocal.kubelet_cluster_dns(js, ["169.254.20.10"])["text"])
    assert out == {"kind": "KubeletConfiguration", "clusterDNS": ["169.254.20.10"], "maxPods": 110}


def test_kubelet_file_kubelet_would_refuse_is_not_edited():
    with pytest.raises(ParseError, match="config.yaml line 2: tab in indentation"):
        _nodelocal.kubelet_cluster_dns("clusterDNS:\n\t- 10.96.0.10\n", ["169.254.20.10"])
    with pytest.raises(ValueError, match="clusterDNS address must be an IP address"):
        _nodelocal.kubelet_cluster_dns(KUBEADM, ["node-local"])
