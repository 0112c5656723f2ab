# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_rbac on real ClusterRoles and bindings: coredns/deployment's manifest (EndpointSlices granted),
the Kubernetes 1.14 addon (no EndpointSlices), and the lab's ClusterRole after the
rbac-endpointslices fault (fixtures/cluster/SOURCES.md)."""

from __future__ import annotations

import copy

from cluster_world import load

from ansible_collections.clusterdns.doctor.plugins.module_utils import _rbac

ES_LIST = "list endpointslices.discovery.k8s.io"
ES_WATCH = "watch endpointslices.discovery.k8s.io"


def split(objects):
    crbs = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
    roles = [o for o in objects if o["kind"] == "ClusterRole"]
    rbs = [o for o in objects if o["kind"] == "RoleBinding"]
    return crbs, roles, rbs


def test_upstream_manifest_grants_everything_coredns_lists():
    crbs, roles = split(load("coredns-deployment-upstream.yaml.sed"))[:2]
    result = _rbac.evaluate("kube-system", "coredns", crbs, roles)
    assert result["cluster_roles"] == ["system:coredns"]
    assert all(result["can"].values()), result["can"]
    assert result["bindings"] == [{"kind": "ClusterRoleBinding", "name": "system:coredns", "namespace": None,
                                   "role_kind": "ClusterRole", "role": "system:coredns"}]


def test_kubernetes_1_14_addon_lacks_endpointslices_only():
    crbs, roles = split(load("k8s-1.14-addon-coredns.yaml.base"))[:2]
    can = _rbac.evaluate("kube-system", "coredns", crbs, roles)["can"]
    assert can[ES_LIST] is False and can[ES_WATCH] is False
    assert can["list services"] and can["watch namespaces"] and can["list endpoints"]


def test_other_service_account_gets_nothing():
    # coredns/helm#135: the chart's binding named another service account than the pods ran as.
    crbs, roles = split(load("coredns-deployment-upstream.yaml.sed"))[:2]
    result = _rbac.evaluate("kube-system", "coredns-coredns", crbs, roles)
    assert result["bindings"] == [] and not any(result["can"].values())


def test_group_subject_and_wildcards_count():
    crbs, roles = split(load("coredns-deployment-upstream.yaml.sed"))[:2]
    binding = copy.deepcopy(crbs[0])
    binding["subjects"] = [{"kind": "Group", "name": "system:serviceaccounts:kube-system", "apiGroup": "rbac.authorization.k8s.io"}]
    role = copy.deepcopy(roles[0])
    role["rules"] = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["list", "watch"]}]
    assert all(_rbac.evaluate("kube-system", "coredns", [binding], [role])["can"].values())
    assert not any(_rbac.evaluate("default", "coredns", [binding], [role])["can"].values())


def test_resource_names_never_grant_list():
    crbs, roles = split(load("coredns-deployment-upstream.yaml.sed"))[:2]
    role = copy.deepcopy(roles[0])
    for rule in role["rules"]:
        rule["resourceNames"] = ["kube-dns"]
    assert not any(_rbac.evaluate("kube-system", "coredns", crbs, [role])["can"].values())


def test_rolebinding_is_namespaced_only_and_missing_role_is_named():
    crbs, roles = split(load("coredns-deployment-upstream.yaml.sed"))[:2]
    rb = copy.deepcopy(crbs[0])
    rb["kind"] = "RoleBinding"
    rb["metadata"]["namespace"] = "kube-system"
    result = _rbac.evaluate("kube-system", "coredns", [], roles, [rb])
    assert result["can"][ES_LIST] is False
    assert ES_LIST in result["namespaced_only"]
    gone = _rbac.evaluate("kube-system", "coredns", crbs, [])
    assert gone["missing_roles"] == ["system:coredns"] and not any(gone["can"].values())
