# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster rules on API objects captured from the lab's real kube-apiserver (v1.34.4, CoreDNS
1.12.4), healthy and under labctl faults (fixtures/cluster/lab-*.json, SOURCES.md). The same faults
run live through diagnose.yml in tests/lab/test_cluster_diagnosis.py."""

from __future__ import annotations

import pathlib

import pytest
from cluster_world import World, load

from ansible_collections.clusterdns.doctor.plugins.module_utils import _cluster, _corednslog, _findings, _rules_cluster, _workloads

assert _rules_cluster  # registers the cluster rules

LOGS = pathlib.Path(__file__).parent / "fixtures" / "corednslog"
RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}


def lab_facts(state, edit=None):
    world = World(load("lab-%s.json" % state, substitute=False))
    if edit:
        edit(world)
    facts = _cluster.collect(world)
    facts["workloads"] = _workloads.collect(world)
    return facts


def evaluate(state, edit=None):
    return _findings.evaluate({}, cluster=lab_facts(state, edit))


def of(result, finding_id):
    check = next(c for c in result["checks"] if c["id"] == finding_id)
    return check, [f for f in result["findings"] if f["id"] == finding_id]


def test_healthy_lab_has_nothing_at_warning_or_above():
    result = evaluate("healthy")
    assert [f for f in result["findings"] if RANK[f["severity"]] >= RANK["warning"]] == []
    statuses = {c["id"]: c["status"] for c in result["checks"]}
    for finding_id in ("CDNS001", "CDNS002", "CDNS003", "CDNS004", "CDNS005", "CDNS006", "CDNS007", "CDNS008",
                       "CDNS011", "SVC001", "SVC002", "WL001", "WL002", "WL003"):
        assert statuses[finding_id] == "pass", finding_id
    # the two dnsutils pods use ClusterFirst: ndots:5 is information
    check, hits = of(result, "WL004")
    assert hits[0]["severity"] == "info" and hits[0]["evidence"]["pods"] == 2


def test_corefile_invalid_crash_loop_and_unknown_directive():
    result = evaluate("corefile-invalid")
    hits = of(result, "CDNS001")[1]
    assert [f["evidence"]["name"] for f in hits] == ["coredns-a"]
    assert hits[0]["severity"] == "critical" and hits[0]["evidence"]["waiting_reason"] == "CrashLoopBackOff"
    assert hits[0]["evidence"]["last_termination"]["exit_code"] == 1 and hits[0]["evidence"]["restarts"] >= 1
    assert "CrashLoopBackOff" in hits[0]["detail"] and "exit code 1" in hits[0]["detail"]
    hits = of(result, "CDNS011")[1]
    assert hits[0]["evidence"]["plugin"] == "cahce" and hits[0]["evidence"]["version"] == [1, 12, 4]
    assert "line %d" % hits[0]["evidence"]["lineno"] in hits[0]["detail"]
    # one replica still serves: the Service keeps a ready endpoint
    assert of(result, "SVC002")[0]["status"] == "pass"


def test_upstream_loop_crash_loops_both_replicas():
    hits = of(evaluate("upstream-loop"), "CDNS001")[1]
    assert {f["evidence"]["name"] for f in hits} == {"coredns-a", "coredns-b"}
    assert all(f["evidence"]["restarts"] >= 1 and f["evidence"]["last_termination"]["exit_code"] != 0 for f in hits)


def test_coredns_down_no_ready_endpoint():
    result = evaluate("coredns-down")
    hits = of(result, "CDNS001")[1]
    assert {f["evidence"]["name"] for f in hits} == {"coredns-a", "coredns-b"}
    check, hits = of(result, "SVC002")
    assert check["status"] == "fail" and hits[0]["severity"] == "critical" and hits[0]["evidence"]["ready"] == []


def test_no_endpoints_selector_matches_no_pod():
    result = evaluate("no-endpoints")
    hits = of(result, "SVC002")[1]
    assert hits[0]["evidence"]["selector"] == {"k8s-app": "kube-dns-v2"} and hits[0]["evidence"]["ready"] == []
    assert "matches no CoreDNS pod" in hits[0]["detail"]


def test_svc002_endpoint_that_is_not_a_coredns_pod():
    def stranger(world):
        for sl in world.objects:
            if sl["kind"] == "EndpointSlice" and sl["metadata"]["labels"].get("kubernetes.io/service-name") == "kube-dns":
                sl["endpoints"][0]["addresses"] = ["10.201.0.99"]
    hits = of(evaluate("healthy", stranger), "SVC002")[1]
    assert hits[0]["severity"] == "error" and hits[0]["evidence"]["not_coredns"] == ["10.201.0.99"]


def test_rbac_endpointslices_removed():
    hits = of(evaluate("rbac-endpointslices"), "CDNS005")[1]
    assert hits[0]["evidence"]["missing"] == ["list endpointslices.discovery.k8s.io", "watch endpointslices.discovery.k8s.io"]
    assert hits[0]["object"] == "ClusterRole/system:coredns"


def test_statefulset_without_service():
    check, hits = of(evaluate("statefulset-servicename"), "WL003")
    assert check["status"] == "fail"
    assert hits[0]["evidence"] == {"namespace": "default", "name": "web", "service_name": "web", "reason": "names no Service in namespace default"}
    assert hits[0]["object"] == "default/StatefulSet/web"


def test_tolerate_unready_annotation_on_1_12():
    hits = of(evaluate("tolerate-unready-annotation"), "CDNS004")[1]
    assert hits[0]["evidence"]["examples"] == [{"namespace": "default", "name": "legacy-db", "headless": True}]
    assert hits[0]["evidence"]["version"] == [1, 12, 4]


def test_tolerate_unready_on_old_coredns_is_skipped():
    def old(world):
        world.find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.k8s.io/coredns/coredns:v1.8.0"
    check = of(evaluate("tolerate-unready-annotation", old), "CDNS004")[0]
    assert check["status"] == "skip" and "honours the annotation" in check["reason"]


def test_nodelocal_force_tcp_and_mode():
    result = evaluate("nodelocal")
    check, hits = of(result, "CDNS008")
    assert check["status"] == "fail" and hits[0]["evidence"]["nodelocaldns_force_tcp"]
    check = of(result, "NLD003")[0]
    assert check["status"] == "skip" and "kube-proxy mode unknown" in check["reason"]
    # the hostNetwork node-cache pods use dnsPolicy Default: no WL001
    assert of(result, "WL001")[0]["status"] == "pass"


@pytest.mark.parametrize("mode,status", [("ipvs", "fail"), ("iptables", "pass"), ("", "pass")])
def test_nld003_by_kube_proxy_mode(mode, status):
    # A kube-proxy ConfigMap with only the key that matters (the lab runs kube-proxy without one).
    def proxy(world):
        world.objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                              "data": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: %s\n"
                                       % (mode or '""')}})
    check, hits = of(evaluate("nodelocal", proxy), "NLD003")
    assert check["status"] == status, check
    if hits:
        assert hits[0]["evidence"]["kube_proxy_mode"] == "ipvs" and "10.96.0.10" in hits[0]["detail"]


def test_cdns010_from_coredns_log_info_result():
    facts = lab_facts("healthy")
    assert of(_findings.evaluate({}, cluster=facts), "CDNS010")[0]["status"] == "skip"
    facts["logs"] = {"by_rcode": {"NOERROR": 10, "SERVFAIL": 12}, "tickets": [],
                     "upstream_errors": {"10.201.0.53:53": {"count": 4, "classes": {"timeout": 4}}}}
    hits = of(_findings.evaluate({}, cluster=facts), "CDNS010")[1]
    assert hits[0]["evidence"]["upstream_errors"] == 4 and hits[0]["evidence"]["rcodes"] == {"SERVFAIL": 12}
    # two REFUSED among many answers and no upstream error: noise (seen on a healthy lab)
    facts["logs"] = {"by_rcode": {"NOERROR": 400, "REFUSED": 2}, "upstream_errors": {}}
    assert of(_findings.evaluate({}, cluster=facts), "CDNS010")[0]["status"] == "pass"
    # per-pod results (diagnose reads each CoreDNS pod's log) are merged
    facts["logs"] = [{"by_rcode": {"NOERROR": 5}, "upstream_errors": {"10.201.0.53:53": {"count": 1, "classes": {"timeout": 1}}}},
                     {"by_rcode": {"NOERROR": 5}, "upstream_errors": {"10.201.0.53:53": {"count": 2, "classes": {"timeout": 2}}}}]
    hits = of(_findings.evaluate({}, cluster=facts), "CDNS010")[1]
    assert hits[0]["evidence"]["upstream_errors"] == 3
    facts["logs"] = {"by_rcode": {"NOERROR": 10}, "upstream_errors": {}}
    assert of(_findings.evaluate({}, cluster=facts), "CDNS010")[0]["status"] == "pass"


def test_cdns010_leaves_queries_over_max_concurrent_to_cdns009():
    """Real CoreDNS 1.12.4 lines (captured in the lab): 14 queries over max_concurrent 2. They are
    CoreDNS's own refusals: alone they are no upstream failure; next to real upstream timeouts
    (another pod's log) they are neither counted nor cited as tickets, only named as CDNS009's."""
    limited = _corednslog.summarize(LOGS.joinpath("lab-1.12.4-max-concurrent.log").read_text().splitlines())
    assert limited["error_classes"] == {"max_concurrent": 14} and limited["upstream_errors"] == {}
    assert {t["reason"] for t in limited["tickets"]} == {"max_concurrent"}
    facts = lab_facts("healthy")
    facts["logs"] = [limited]
    assert of(_findings.evaluate({}, cluster=facts), "CDNS010")[0]["status"] == "pass"
    # the same refusals counted as REFUSED answers (a log plugin that records the client's rcode)
    facts["logs"] = [dict(limited, by_rcode={"NOERROR": 20, "REFUSED": 14})]
    assert of(_findings.evaluate({}, cluster=facts), "CDNS010")[0]["status"] == "pass"
    timeouts = _corednslog.summarize(LOGS.joinpath("k8s86762-upstream-timeouts.log").read_text().splitlines())
    assert timeouts["upstream_errors"]
    facts["logs"] = [limited, timeouts]
    (hit,) = of(_findings.evaluate({}, cluster=facts), "CDNS010")[1]
    assert hit["evidence"]["upstream_errors"] == sum(v["count"] for v in timeouts["upstream_errors"].values())
    assert hit["evidence"]["max_concurrent_refused"] == 14
    assert all(t.get("reason") != "max_concurrent" for t in hit["evidence"]["tickets"])
    assert "14 more queries were refused by CoreDNS's own forward max_concurrent limit" in hit["detail"]
