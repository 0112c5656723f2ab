# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CoreDNS versions from image references as they appear in real Deployments (kubeadm, EKS, the
Kubernetes addon, the first coredns/deployment manifest, the lab), the plugin table, and the musl
image heuristic of workload_dns_info."""

from __future__ import annotations

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import image_version, known_plugin
from ansible_collections.clusterdns.doctor.plugins.module_utils._workloads import effective_dns, looks_musl


@pytest.mark.parametrize("image,version", [
    ("registry.k8s.io/coredns/coredns:v1.11.1", [1, 11, 1]),
    ("coredns/coredns:1.9.4", [1, 9, 4]),
    ("registry.cn-hangzhou.aliyuncs.com/google_containers/coredns:1.3.1", [1, 3, 1]),
    ("602401143452.dkr.ecr.us-west-2.amazonaws.com/eks/coredns:v1.8.7-eksbuild.3", [1, 8, 7]),
    ("localhost:5000/coredns/coredns:v1.12.4@sha256:" + "0" * 64, [1, 12, 4]),
    ("rancher/mirrored-coredns-coredns:1.10.1", [1, 10, 1]),
    ("coredns/coredns:latest", None),
    ("coredns/coredns", None),
    ("registry.k8s.io/coredns/coredns@sha256:" + "0" * 64, None),
    ("localhost:5000/coredns", None),
])
def test_image_version(image, version):
    assert image_version(image) == version


def test_plugins_known_per_version():
    assert known_plugin("kubernetes", [1, 12, 4]) == (True, None)
    assert known_plugin("import", [1, 12, 4]) == (True, None)
    assert known_plugin("cahce", [1, 12, 4])[0] is False
    assert known_plugin("transfer", [1, 6, 7])[0] is False and known_plugin("transfer", [1, 7, 0])[0] is True
    assert known_plugin("proxy", [1, 4, 0])[0] is True and "1.5.0" in known_plugin("proxy", [1, 5, 0])[1]
    assert known_plugin("proxy", None)[0] is False


@pytest.mark.parametrize("image,musl", [
    ("alpine:3.20", True), ("docker.io/library/alpine", True), ("nginx:1.27-alpine", True),
    ("node:20-alpine3.18", True), ("python:3.12-alpine3.20@sha256:" + "0" * 64, True),
    ("nginx:1.27", False), ("registry.k8s.io/coredns/coredns:v1.11.1", False), ("myorg/alpineapp:1", False),
    ("", False), (None, False),
])
def test_musl_heuristic(image, musl):
    assert looks_musl(image) is musl


@pytest.mark.parametrize("spec,expected", [
    ({}, ("ClusterFirst", 5)),
    ({"hostNetwork": True}, ("ClusterFirst", None)),
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, ("ClusterFirstWithHostNet", 5)),
    ({"dnsPolicy": "Default"}, ("Default", None)),
    ({"dnsConfig": {"options": [{"name": "ndots", "value": "2"}]}}, ("ClusterFirst", 2)),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}}, ("None", 1)),
])
def test_effective_ndots(spec, expected):
    assert effective_dns({"spec": spec}) == expected
