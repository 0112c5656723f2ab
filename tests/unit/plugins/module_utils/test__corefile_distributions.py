# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Corefile parser, renderer and Corefile rules on the kubespray and EKS Corefiles
(fixtures/corefile/SOURCES.md): kubespray's template rendered with its defaults and with its
documented external zones, the EKS add-on ConfigMap with extra stub zones, and the EKS ConfigMap
whose `upstream` stopped CoreDNS 1.7.0. The other distributions are in test__corefile.py."""

from __future__ import annotations

import pathlib

import pytest
from cluster_world import World, load

from ansible_collections.clusterdns.doctor.plugins.module_utils import _cluster, _corefile, _findings, _rules_cluster
from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import removed_option

assert _rules_cluster  # registers the cluster rules

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "corefile"
NEW = ("kubespray-defaults-configmap.yaml", "kubespray-external-zones-configmap.yaml", "eks-addon-dual-region-configmap.yaml",
       "eks-k8s118-upstream-configmap.yaml")


def blocks_of(name):
    return _corefile.parse((FIXTURES / name).read_text(), name)


def names(plugins):
    return [p["name"] for p in plugins]


@pytest.mark.parametrize("name", NEW)
def test_round_trip_keeps_meaning(name):
    blocks = blocks_of(name)
    text = _corefile.render(blocks)
    again = _corefile.parse(text)
    assert _corefile.strip_lines(again) == _corefile.strip_lines(blocks)
    assert _corefile.render(again) == text


def test_kubespray_defaults():
    (server,) = blocks_of("kubespray-defaults-configmap.yaml")
    assert server["keys"] == [".:53"] and server["lineno"] == 11
    assert names(server["plugins"]) == ["errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload",
                                        "loadbalance"]
    errors = server["plugins"][0]
    assert errors["block"] == [] and "errors {\n    }" in _corefile.render([server])  # the empty block survives
    forward = _corefile.find([server], "forward")
    assert [(o["name"], o["args"]) for o in forward["block"]] == [("prefer_udp", []), ("max_concurrent", ["1000"])]
    assert _corefile.option(_corefile.find([server], "health"), "lameduck") == ["5s"]
    # the blank line the cache block variable leaves is no directive
    assert _corefile.find([server], "cache")["args"] == ["30"] and _corefile.find([server], "loop")["lineno"] == 29


def test_kubespray_external_zones_ports_schemes_and_the_hosts_key():
    blocks = blocks_of("kubespray-external-zones-configmap.yaml")
    assert [b["keys"] for b in blocks] == [["example.com", "example.io:1053"], ["https://mycompany.local:4453"], ["mydomain.tld"], [".:53"]]
    assert blocks[0]["zones"] == [{"zone": "example.com", "port": None, "scheme": None}, {"zone": "example.io", "port": 1053, "scheme": None}]
    assert blocks[1]["zones"] == [{"zone": "mycompany.local", "port": 4453, "scheme": "https"}]
    assert _corefile.find(blocks, "forward", zone="example.io")["args"] == [".", "1.1.1.1", "2.2.2.2"]
    assert _corefile.find(blocks, "rewrite", zone="mydomain.tld")["args"] == ["name", "stop", "website.tld", "website.namespace.svc.cluster.local"]
    assert _corefile.option(_corefile.find(blocks, "hosts", zone="mydomain.tld"), "fallthrough") == []
    assert "192.168.0.100" not in _corefile.render(blocks)  # the hosts file is another data key


def test_eks_addon_deeper_closing_brace_and_stub_zones():
    blocks = blocks_of("eks-addon-dual-region-configmap.yaml")
    assert [b["keys"] for b in blocks] == [[".:53"], ["camunda-paris.svc.cluster.local:53"], ["camunda-paris-failover.svc.cluster.local:53"]]
    health = _corefile.find(blocks, "health")
    assert [(o["name"], o["args"]) for o in health["block"]] == [("lameduck", ["5s"])]
    assert names(_corefile.plugins_of(blocks, ".")) == ["errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop",
                                                        "reload", "loadbalance"]
    stub = _corefile.find(blocks, "forward", zone="camunda-paris.svc.cluster.local")
    assert stub["args"] == [".", "10.202.19.54", "10.202.53.21", "10.202.84.222"] and stub["block"][0]["name"] == "force_tcp"


def lab_with_corefile(name, image=None):
    world = World(load("lab-healthy.json", substitute=False))
    world.find("ConfigMap", "coredns")["data"]["Corefile"] = _corefile.extract((FIXTURES / name).read_text(), name)[0]
    if image:
        world.find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]["image"] = image
    result = _findings.evaluate({}, cluster=_cluster.collect(world))
    return {c["id"]: (c, [f for f in result["findings"] if f["id"] == c["id"]]) for c in result["checks"]}


def test_rules_on_the_eks_addon_corefile():
    checks = lab_with_corefile("eks-addon-dual-region-configmap.yaml", "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.11.1-eksbuild.4")
    check, hits = checks["CDNS008"]
    stubs = [["camunda-paris.svc.cluster.local"], ["camunda-paris-failover.svc.cluster.local"]]
    assert check["status"] == "fail" and [h["evidence"]["zones"] for h in hits] == stubs
    for finding_id in ("CDNS006", "CDNS007", "CDNS011"):
        assert checks[finding_id][0]["status"] == "pass", checks[finding_id]


def test_the_eks_1_18_upgrade_failure_is_cdns011_on_the_line_coredns_named():
    name = "eks-k8s118-upstream-configmap.yaml"
    # CoreDNS 1.7.0 said: plugin/kubernetes: /etc/coredns/Corefile:6 - Error during parsing: unknown property 'upstream'
    lines = _corefile.extract((FIXTURES / name).read_text(), name)[0].splitlines()
    corefile_line = [line.strip() for line in lines].index("upstream") + 1
    assert corefile_line == 6
    check, hits = lab_with_corefile(name, "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.7.0-eksbuild.1")["CDNS011"]
    assert check["status"] == "fail" and hits[0]["severity"] == "critical"
    assert (hits[0]["evidence"]["plugin"], hits[0]["evidence"]["option"], hits[0]["evidence"]["lineno"]) == ("kubernetes", "upstream", 6)
    assert "unknown property 'upstream'" in hits[0]["detail"]
    # the same Corefile was fine on the CoreDNS 1.6.6 it was written for
    assert lab_with_corefile(name, "602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.6.6-eksbuild.1")["CDNS011"][0]["status"] == "pass"


def test_removed_options_table():
    assert removed_option("kubernetes", "upstream", [1, 6, 6]) is None
    assert "1.7.0" in removed_option("kubernetes", "resyncperiod", [1, 12, 4])
    assert removed_option("kubernetes", "upstream", None)  # unknown version: the current releases decide
    assert removed_option("kubernetes", "pods", [1, 12, 4]) is None and removed_option("forward", "upstream", None) is None
