# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster rules through the finding engine, on cluster facts that _cluster.collect and
_workloads.collect build from captured API objects (fixtures/cluster/SOURCES.md): upstream
manifests, and the lab's real kube-apiserver healthy and under each fault."""

from __future__ import annotations

import copy

import pytest
from cluster_world import World, load

from ansible_collections.clusterdns.doctor.plugins.module_utils import _cluster, _findings, _rules_cluster, _workloads

assert _rules_cluster  # registers the cluster rules (the lead adds it to _findings.RULE_MODULES)

UPSTREAM = "coredns-deployment-upstream.yaml.sed"
ADDON_114 = "k8s-1.14-addon-coredns.yaml.base"


def facts_of(world):
    facts = _cluster.collect(world)
    facts["workloads"] = _workloads.collect(world, page_size=2)
    return facts


def cluster(*files, edit=None):
    world = World(load(*files))
    if edit:
        edit(world)
    return facts_of(world)


def run(facts, rule):
    result = _findings.evaluate({}, cluster=facts)
    check = next(c for c in result["checks"] if c["id"] == rule)
    return check, [f for f in result["findings"] if f["id"] == rule]


def set_corefile(text):
    def edit(world):
        world.find("ConfigMap", "coredns")["data"]["Corefile"] = text
    return edit


def corefile_of(name):
    return load(name) and next(o for o in load(name) if o["kind"] == "ConfigMap")["data"]["Corefile"]


# --- CDNS002 / CDNS003 / CDNS005 on upstream manifests -------------------------------------------

def test_cdns002_replicas_unset_means_one():
    check, hits = run(cluster(UPSTREAM), "CDNS002")
    assert check["status"] == "fail"
    assert hits[0]["evidence"]["replicas"] == 1 and hits[0]["evidence"]["anti_affinity"] is True
    assert hits[0]["object"] == "kube-system/Deployment/coredns"


def test_cdns003_old_and_new():
    check, hits = run(cluster(ADDON_114), "CDNS003")
    assert check["status"] == "fail" and hits[0]["evidence"]["version"] == [1, 3, 1]
    assert "registry.cn-hangzhou.aliyuncs.com/google_containers/coredns:1.3.1" in hits[0]["detail"]
    assert run(cluster(UPSTREAM), "CDNS003")[0]["status"] == "pass"


def test_cdns003_skips_without_version_tag():
    def latest(world):
        world.find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["image"] = "coredns/coredns:latest"
    check = run(cluster(UPSTREAM, edit=latest), "CDNS003")[0]
    assert check["status"] == "skip" and "coredns/coredns:latest" in check["reason"]


def test_cdns005_new_coredns_with_old_clusterrole():
    def upgrade(world):
        world.find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.k8s.io/coredns/coredns:v1.8.4"
    check, hits = run(cluster(ADDON_114, edit=upgrade), "CDNS005")
    assert check["status"] == "fail"
    assert hits[0]["evidence"]["missing"] == ["list endpointslices.discovery.k8s.io", "watch endpointslices.discovery.k8s.io"]
    assert hits[0]["object"] == "ClusterRole/system:coredns"


def test_cdns005_old_coredns_needs_endpoints_only_and_upstream_role_passes():
    assert run(cluster(ADDON_114), "CDNS005")[0]["status"] == "pass"
    assert run(cluster(UPSTREAM), "CDNS005")[0]["status"] == "pass"


def test_cdns005_pods_verified_needs_pods():
    def verified(world):
        cm = world.find("ConfigMap", "coredns")
        cm["data"]["Corefile"] = cm["data"]["Corefile"].replace("fallthrough in-addr.arpa ip6.arpa", "pods verified\n      fallthrough in-addr.arpa ip6.arpa")
        role = world.find("ClusterRole", "system:coredns")
        role["rules"][0]["resources"].remove("pods")
    check, hits = run(cluster(UPSTREAM, edit=verified), "CDNS005")
    assert check["status"] == "fail" and hits[0]["evidence"]["missing"] == ["list pods", "watch pods"]


def test_cdns005_rbac_unreadable_is_a_skip_with_reason():
    world = World(load(UPSTREAM), forbidden=("clusterrolebindings",))
    check = run(facts_of(world), "CDNS005")[0]
    assert check["status"] == "skip" and "forbidden" in check["reason"] and "clusterrolebindings" in check["reason"]


# --- Corefile rules --------------------------------------------------------------------------------

def test_cdns006_autopath():
    text = corefile_of(UPSTREAM).replace("    ready\n", "    ready\n    autopath @kubernetes\n")
    check, hits = run(cluster(UPSTREAM, edit=set_corefile(text)), "CDNS006")
    assert check["status"] == "fail" and hits[0]["evidence"]["args"] == ["@kubernetes"] and hits[0]["evidence"]["lineno"] == 7
    assert run(cluster(UPSTREAM), "CDNS006")[0]["status"] == "pass"


def test_cdns007_no_errors_no_log():
    text = corefile_of(UPSTREAM).replace("    errors\n", "")
    check, hits = run(cluster(UPSTREAM, edit=set_corefile(text)), "CDNS007")
    assert check["status"] == "fail" and hits[0]["evidence"]["zones"] == ["."]
    assert run(cluster(UPSTREAM), "CDNS007")[0]["status"] == "pass"


def test_cdns008_force_tcp_forward():
    text = corefile_of(UPSTREAM).replace("max_concurrent 1000", "max_concurrent 1000\n      force_tcp")
    check, hits = run(cluster(UPSTREAM, edit=set_corefile(text)), "CDNS008")
    assert check["status"] == "fail" and "force_tcp" in hits[0]["evidence"]["options"] and hits[0]["severity"] == "warning"
    assert run(cluster(UPSTREAM), "CDNS008")[0]["status"] == "pass"


def test_cdns011_unknown_directive_and_parse_error():
    typo = corefile_of(UPSTREAM).replace("cache 30", "cahce 30")
    check, hits = run(cluster(UPSTREAM, edit=set_corefile(typo)), "CDNS011")
    assert check["status"] == "fail"
    assert hits[0]["evidence"]["plugin"] == "cahce" and hits[0]["evidence"]["lineno"] == 14
    assert "Unknown directive 'cahce'" in hits[0]["detail"] and "ConfigMap kube-system/coredns" in hits[0]["detail"]
    unbalanced = corefile_of(UPSTREAM).replace("    cache 30\n", "    cache 30 {\n")
    check, hits = run(cluster(UPSTREAM, edit=set_corefile(unbalanced)), "CDNS011")
    assert check["status"] == "fail" and hits[0]["evidence"]["lineno"] and hits[0]["evidence"]["message"]
    # the other Corefile rules say why they did not look
    assert "did not parse" in run(cluster(UPSTREAM, edit=set_corefile(unbalanced)), "CDNS006")[0]["reason"]
    assert run(cluster(UPSTREAM), "CDNS011")[0]["status"] == "pass"


def test_cdns011_proxy_removed_plugin_on_new_coredns_but_not_old():
    # The first coredns/deployment manifest used `proxy`, which left CoreDNS in 1.5.0.
    text = corefile_of(ADDON_114).replace("forward . /etc/resolv.conf", "proxy . /etc/resolv.conf")
    assert run(cluster(ADDON_114, edit=set_corefile(text)), "CDNS011")[0]["status"] == "pass"  # 1.3.1 has proxy
    check, hits = run(cluster(UPSTREAM, edit=set_corefile(text)), "CDNS011")
    assert check["status"] == "fail"
    assert [(f["evidence"]["plugin"], f["evidence"].get("option")) for f in hits] == [("kubernetes", "upstream"), ("proxy", None)]
    assert "removed in CoreDNS 1.5.0" in hits[1]["detail"]
    # the 1.14 addon's `kubernetes { upstream }` stops CoreDNS 1.7.0 and later as well
    assert "option 'upstream' of plugin kubernetes was removed in CoreDNS 1.7.0" in hits[0]["detail"]
    assert "unknown property 'upstream'" in hits[0]["detail"]


def test_corefile_missing_is_a_skip():
    def drop(world):
        world.objects = [o for o in world.objects if o["kind"] != "ConfigMap"]
    check = run(cluster(UPSTREAM, edit=drop), "CDNS011")[0]
    assert check["status"] == "skip" and "no ConfigMap kube-system/coredns" in check["reason"]


# --- Service ---------------------------------------------------------------------------------------

def test_svc001_session_affinity():
    def affinity(world):
        world.find("Service", "kube-dns")["spec"]["sessionAffinity"] = "ClientIP"
    check, hits = run(cluster(UPSTREAM, edit=affinity), "SVC001")
    assert check["status"] == "fail" and hits[0]["object"] == "kube-system/Service/kube-dns"
    assert run(cluster(UPSTREAM), "SVC001")[0]["status"] == "pass"


def test_svc002_no_slices_at_all():
    check, hits = run(cluster(UPSTREAM), "SVC002")
    assert check["status"] == "fail" and hits[0]["evidence"]["ready"] == [] and hits[0]["severity"] == "critical"


# --- bad input --------------------------------------------------------------------------------------

def test_unreachable_api_server_skips_every_cluster_rule():
    facts = facts_of(World([], down=True))
    assert facts["available"] is False and "not reachable" in facts["reason"]
    result = _findings.evaluate({}, cluster=facts)
    cluster_checks = [c for c in result["checks"] if c["scope"] == "cluster"]
    assert cluster_checks and all(c["status"] == "skip" and "not reachable" in c["reason"] for c in cluster_checks)


def test_no_coredns_deployment_is_reported_not_raised():
    world = World([o for o in load(UPSTREAM) if o["kind"] != "Deployment"])
    facts = facts_of(world)
    assert facts["coredns"]["deployment"] is None and "k8s-app=kube-dns" in facts["coredns"]["reason"]
    check = run(facts, "CDNS002")[0]
    assert check["status"] == "skip" and "no Deployment labelled k8s-app=kube-dns" in check["reason"]
    assert run(facts, "CDNS005")[0]["status"] == "skip"


def test_bad_label_selector_is_a_clear_error():
    with pytest.raises(ValueError, match="only key=value"):
        _cluster.collect(World(load(UPSTREAM)), label_selector="k8s-app in (kube-dns)")


def test_workload_pages_are_bounded():
    objects = load(UPSTREAM)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "default", "name": "p"}, "spec": {"containers": [{"image": "nginx:1.27-alpine"}]}}
    many = [copy.deepcopy(pod) for i in range(7)]
    for i, p in enumerate(many):
        p["metadata"]["name"] = "p%d" % i
    world = World(objects + many)
    result = _workloads.collect(world, max_pods=5, page_size=2, examples=2)
    assert result["pods_scanned"] == 5 and result["truncated"] is True
    assert result["musl_images"] == {"count": 5, "examples": [{"image": "nginx:1.27-alpine", "pods": 5, "example_pod": "default/p0"}]}
    assert [q.get("limit") for (p, q) in world.requests if p.endswith("/pods")] == [2, 2, 2]


# --- workloads ----------------------------------------------------------------------------------

HOSTNET = "issue-k8s-17406-hostnet-pod.yaml"


def test_wl001_hostnet_pod_with_cluster_first():
    check, hits = run(cluster(UPSTREAM, HOSTNET), "WL001")
    assert check["status"] == "fail" and hits[0]["severity"] == "warning"
    assert hits[0]["evidence"]["examples"] == [{"namespace": "default", "name": "hostnet", "owner": None, "dns_policy": "ClusterFirst"}]
    # the same pod in kube-system (system agents usually need no cluster names) is info

    def to_system(world):
        world.find("Pod", "hostnet")["metadata"]["namespace"] = "kube-system"
    assert run(cluster(UPSTREAM, HOSTNET, edit=to_system), "WL001")[1][0]["severity"] == "info"


def test_wl001_fixed_pod_and_ndots():
    def fixed(world):
        world.find("Pod", "hostnet")["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"
    facts = cluster(UPSTREAM, HOSTNET, edit=fixed)
    assert run(facts, "WL001")[0]["status"] == "pass"
    # ClusterFirstWithHostNet gives the pod the kubelet's ndots:5
    check, hits = run(facts, "WL004")
    assert check["status"] == "fail" and hits[0]["severity"] == "info" and hits[0]["evidence"]["pods"] == 1
    assert run(cluster(UPSTREAM, HOSTNET), "WL004")[0]["status"] == "pass"  # node resolv.conf: ndots unknown


def test_wl002_musl_image():
    # a minimal Pod built here: no capture has an -alpine image
    def alpine(world):
        world.find("Pod", "hostnet")["spec"]["containers"][0]["image"] = "nginx:1.27-alpine"
    check, hits = run(cluster(UPSTREAM, HOSTNET, edit=alpine), "WL002")
    assert check["status"] == "fail" and hits[0]["evidence"]["examples"][0]["image"] == "nginx:1.27-alpine"
    assert run(cluster(UPSTREAM, HOSTNET), "WL002")[0]["status"] == "pass"  # busybox


def test_workload_rules_skip_when_workloads_unreadable():
    world = World(load(UPSTREAM, HOSTNET), forbidden=("statefulsets",))
    check = run(facts_of(world), "WL001")[0]
    assert check["status"] == "skip" and "forbidden" in check["reason"] and "statefulsets" in check["reason"]
