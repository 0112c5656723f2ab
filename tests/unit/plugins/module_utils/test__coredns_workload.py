# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The coredns role's workload plan on real objects: the Kubernetes 1.14 CoreDNS addon (one replica,
no affinity, no EndpointSlice RBAC, CoreDNS 1.3.1), coredns/deployment's manifest, the lab's captured
objects, and the Kubernetes dns-horizontal-autoscaler addon (fixtures/cluster and
fixtures/coredns_workload, see their SOURCES.md). Whatever the role applies is a patch from here,
so each test checks the patch and the undo patch a user's cluster would get."""

from __future__ import annotations

import copy
import json
import pathlib

import pytest
import yaml
from cluster_world import load

from ansible_collections.clusterdns.doctor.plugins.module_utils import _coredns_workload as wl
from ansible_collections.clusterdns.doctor.plugins.module_utils._rbac import evaluate, permission_key

HERE = pathlib.Path(__file__).parent / "fixtures" / "coredns_workload"
ES = ("list endpointslices.discovery.k8s.io", "watch endpointslices.discovery.k8s.io")
# cluster-proportional-autoscaler README, "Ladder mode"
LADDER = {"coresToReplicas": [[1, 1], [64, 3], [512, 5], [1024, 7], [2048, 10], [4096, 15]], "nodesToReplicas": [[1, 1], [2, 2]]}


def of(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def facts(objects, **extra):
    cm = [o for o in of(objects, "ConfigMap") if "Corefile" in (o.get("data") or {})]
    base = {"deployment": of(objects, "Deployment")[0], "deployments": of(objects, "Deployment"),
            "service": next((s for s in of(objects, "Service") if s["metadata"]["name"] == "kube-dns"), None),
            "cluster_roles": of(objects, "ClusterRole"), "cluster_role_bindings": of(objects, "ClusterRoleBinding"),
            "pdbs": of(objects, "PodDisruptionBudget"), "hpas": [], "autoscaler_configmap": None,
            "corefile": cm[0]["data"]["Corefile"] if cm else None, "server_version": "v1.34.4"}
    base.update(extra)
    return base


def addon():
    return load("k8s-1.14-addon-coredns.yaml.base")


def autoscaler_objects():
    text = (HERE / "k8s-addon-dns-horizontal-autoscaler.yaml.base").read_text().replace("{{.Target}}", "Deployment/coredns")
    return [d for d in yaml.safe_load_all(text) if d]


def change(plan, kind):
    found = [c for c in plan["changes"] if c["kind"] == kind]
    assert len(found) == 1, plan
    return found[0]


# --- version tables ---------------------------------------------------------------------------------

@pytest.mark.parametrize("server,expected,exact", [
    ("v1.34.4", (1, 12, 1), True), ("v1.22.17-eks-abc", (1, 8, 4), True), ("v1.18.0", (1, 6, 7), True),
    ("v1.33.1+k3s1", (1, 12, 0), True), ("v1.40.0", (1, 13, 1), False), ("v1.8.0", (1, 0, 1), False)])
def test_kubeadm_coredns_per_kubernetes_release(server, expected, exact):
    version, _release, is_exact = wl.kubeadm_coredns(server)
    assert version == expected and is_exact is exact


def test_unknown_server_version_gives_no_kubeadm_version():
    assert wl.kubeadm_coredns(None) is None and wl.kubeadm_coredns("unknown") is None


def test_milestones_crossed_between_two_releases():
    crossed = [m["version"] for m in wl.milestones([1, 6, 7], (1, 12, 1))]
    assert crossed == ["1.7.0", "1.8.0", "1.8.4"]
    assert wl.milestones([1, 8, 4], (1, 8, 4)) == []


@pytest.mark.parametrize("text", ["1.12.1", "v1.12.1", "1.12"])
def test_parse_version(text):
    assert wl.parse_version(text)[:2] == (1, 12)


@pytest.mark.parametrize("text", ["latest", "1", "v1.12.1-eksbuild.1", ""])
def test_parse_version_refuses_what_is_not_a_release(text):
    with pytest.raises(wl.PlanError, match="not a CoreDNS version"):
        wl.parse_version(text)


# --- Corefile against a release ---------------------------------------------------------------------

def test_kubernetes_1_14_corefile_is_refused_by_a_current_coredns_for_upstream():
    corefile = of(addon(), "ConfigMap")[0]["data"]["Corefile"]
    assert wl.corefile_problems(corefile, (1, 3, 1)) == []
    problems = wl.corefile_problems(corefile, (1, 12, 1))
    assert len(problems) == 1 and "line 6" in problems[0] and "option upstream of plugin kubernetes" in problems[0]


def test_proxy_and_transfer_and_unknown_plugins_are_named_with_their_lines():
    corefile = ".:53 {\n    errors\n    kubernetes cluster.local {\n        transfer to *\n    }\n    proxy . /etc/resolv.conf\n    cahce 30\n}\n"
    problems = wl.corefile_problems(corefile, (1, 8, 0))
    assert [p.split(":")[0] for p in problems] == ["line 4", "line 6", "line 7"]
    assert "removed in CoreDNS 1.5.0" in problems[1] and "no CoreDNS release" in problems[2]
    assert wl.corefile_problems(corefile.replace("    cahce 30\n", ""), (1, 4, 0)) == []


def test_a_corefile_that_does_not_parse_is_one_problem_with_its_line():
    problems = wl.corefile_problems(".:53 {\n    errors\n", (1, 12, 1))
    assert len(problems) == 1 and "does not parse" in problems[0]


# --- label selectors, rollout, endpoints --------------------------------------------------------------

@pytest.mark.parametrize("selector,labels,expected", [
    ({"matchLabels": {"k8s-app": "kube-dns"}}, {"k8s-app": "kube-dns", "pod-template-hash": "x"}, True),
    ({"matchLabels": {"k8s-app": "kube-dns"}}, {"k8s-app": "other"}, False),
    ({"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]}, {"k8s-app": "kube-dns"}, True),
    ({"matchExpressions": [{"key": "k8s-app", "operator": "NotIn", "values": ["kube-dns"]}]}, {"k8s-app": "kube-dns"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"k8s-app": "kube-dns"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"k8s-app": "kube-dns"}, False),
    ({}, {"k8s-app": "kube-dns"}, False)])
def test_selector_matches(selector, labels, expected):
    assert wl.selector_matches(selector, labels) is expected


def test_rollout_status_of_the_lab():
    healthy = of(load("lab-healthy.json"), "Deployment")[0]
    assert wl.rollout_status(healthy)["done"] is True
    down = of(load("lab-coredns-down.json"), "Deployment")[0]
    status = wl.rollout_status(down)
    assert status["done"] is False and "0 of 2 replicas Ready" in status["summary"]
    newer = copy.deepcopy(healthy)
    newer["metadata"]["generation"] = healthy["status"]["observedGeneration"] + 1
    assert "has not seen the change" in wl.rollout_status(newer)["summary"]


def test_ready_endpoints_of_the_lab():
    assert wl.ready_endpoints([s for s in of(load("lab-healthy.json"), "EndpointSlice") if s["metadata"]["name"] == "kube-dns-lab"]) \
        == ["10.201.0.21", "10.201.0.22"]
    assert wl.ready_endpoints([s for s in of(load("lab-coredns-down.json"), "EndpointSlice") if s["metadata"]["name"] == "kube-dns-lab"]) == []


# --- CDNS002: replicas, spread, PDB ---------------------------------------------------------------------

def test_single_replica_addon_is_scaled_gets_a_pdb_and_spread_waits_for_consent():
    objects = addon()
    plan = wl.plan(facts(objects), ["CDNS002"], {"min_replicas": 2})
    dep = change(plan, "Deployment")
    assert dep["definition"] == {"spec": {"replicas": 2}} and dep["undo"] == {"spec": {"replicas": 1}}
    assert dep["restart"] is False and dep["before"]["spec"]["template"] == of(objects, "Deployment")[0]["spec"]["template"]
    pdb = change(plan, "PodDisruptionBudget")
    assert pdb["state"] == "present" and pdb["undo_state"] == "absent" and pdb["before"] is None
    assert pdb["definition"]["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    assert [c["kind"] for c in plan["changes"]] == ["Deployment", "PodDisruptionBudget"]
    assert len(plan["pending"]) == 1 and "podAntiAffinity" in plan["pending"][0]
    assert any("addonmanager.kubernetes.io/mode=Reconcile" in n for n in plan["notes"])


@pytest.mark.parametrize("mode,key", [("anti_affinity", "affinity"), ("topology_spread", "topologySpreadConstraints")])
def test_spread_with_consent_changes_the_pod_template(mode, key):
    plan = wl.plan(facts(addon()), ["CDNS002"], {"min_replicas": 2, "allow_restart": True, "spread": mode})
    dep = change(plan, "Deployment")
    template = dep["definition"]["spec"]["template"]["spec"]
    assert dep["restart"] is True and dep["definition"]["spec"]["replicas"] == 2 and plan["pending"] == []
    assert list(template) == [key]
    if mode == "anti_affinity":
        term = template["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
        assert term == {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                                                           "topologyKey": "kubernetes.io/hostname"}}
        assert dep["undo"]["spec"]["template"]["spec"] == {"affinity": None}
    else:
        assert template[key][0]["whenUnsatisfiable"] == "ScheduleAnyway"
        assert dep["undo"]["spec"]["template"]["spec"] == {key: None}


def test_upstream_manifest_keeps_its_required_anti_affinity():
    objects = load("coredns-deployment-upstream.yaml.sed")
    plan = wl.plan(facts(objects), ["CDNS002"], {"min_replicas": 2, "allow_restart": True})
    dep = change(plan, "Deployment")
    assert dep["definition"] == {"spec": {"replicas": 2}}
    assert any("already has podAntiAffinity" in k for k in plan["kept"])


def test_an_existing_pdb_that_selects_the_pods_is_kept_one_that_does_not_blocks_its_name():
    objects = addon()
    selecting = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "dns", "namespace": "kube-system"},
                 "spec": {"minAvailable": 1, "selector": {"matchExpressions": [{"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}]}}}
    plan = wl.plan(facts(objects, pdbs=[selecting]), ["CDNS002"], {})
    assert [c["kind"] for c in plan["changes"]] == ["Deployment"]
    other = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "coredns", "namespace": "kube-system"},
             "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}
    plan = wl.plan(facts(objects, pdbs=[other]), ["CDNS002"], {})
    assert plan["refused"] and "does not select the CoreDNS pods" in plan["refused"][0]


def test_enough_replicas_on_one_node_only_asks_for_spread():
    objects = addon()
    objects[[o["kind"] for o in objects].index("Deployment")]["spec"]["replicas"] = 3
    plan = wl.plan(facts(objects, pdbs=[]), ["CDNS002"], {"pdb_name": "coredns-pdb", "pdb_max_unavailable": "25%"})
    assert [c["kind"] for c in plan["changes"]] == ["PodDisruptionBudget"]
    assert change(plan, "PodDisruptionBudget")["definition"]["metadata"]["name"] == "coredns-pdb"
    assert change(plan, "PodDisruptionBudget")["definition"]["spec"]["maxUnavailable"] == "25%"
    assert any("already runs 3 replicas" in k for k in plan["kept"]) and plan["pending"]


# --- CDNS002 with an autoscaler --------------------------------------------------------------------------

def test_the_addon_autoscaler_is_found_with_its_configmap_and_default_params():
    found = wl.find_autoscaler(of(autoscaler_objects(), "Deployment") + of(addon(), "Deployment"), "coredns")
    assert found["name"] == "kube-dns-autoscaler" and found["configmap"] == "kube-dns-autoscaler"
    assert found["configmap_namespace"] == "kube-system" and json.loads(found["default_params"])["linear"]["nodesPerReplica"] == 16
    assert wl.find_autoscaler(of(autoscaler_objects(), "Deployment"), "kube-dns-v2") is None


def test_linear_autoscaler_minimum_is_raised_in_its_configmap_and_the_deployment_scaled():
    objects = addon() + autoscaler_objects()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-dns-autoscaler", "namespace": "kube-system"},
          "data": {"linear": '{"coresPerReplica":256,"nodesPerReplica":16,"min":1,"preventSinglePointFailure":false}'}}
    plan = wl.plan(facts(objects, deployment=of(addon(), "Deployment")[0], autoscaler_configmap=cm), ["CDNS002"], {"min_replicas": 2})
    assert [c["kind"] for c in plan["changes"]] == ["ConfigMap", "Deployment", "PodDisruptionBudget"]
    fixed = change(plan, "ConfigMap")
    params = json.loads(fixed["definition"]["data"]["linear"])
    assert params == {"coresPerReplica": 256, "nodesPerReplica": 16, "min": 2, "preventSinglePointFailure": True}
    assert fixed["undo"] == {"data": cm["data"]} and "min 1 -> 2" in fixed["actions"][0]
    # once raised, the next plan leaves the ConfigMap alone
    cm["data"] = fixed["definition"]["data"]
    again = wl.plan(facts(objects, deployment=of(addon(), "Deployment")[0], autoscaler_configmap=cm), ["CDNS002"], {"min_replicas": 2})
    assert "ConfigMap" not in [c["kind"] for c in again["changes"]]


def test_ladder_steps_below_the_minimum_are_raised():
    data, changed = wl.autoscaler_data({"ladder": json.dumps(LADDER)}, 2, "ConfigMap kube-system/dns-autoscaler")
    ladder = json.loads(data["ladder"])
    assert ladder["coresToReplicas"][0] == [1, 2] and ladder["coresToReplicas"][1] == [64, 3]
    assert ladder["nodesToReplicas"] == [[1, 2], [2, 2]] and len(changed) == 2


def test_missing_autoscaler_configmap_is_created_from_default_params():
    objects = addon() + autoscaler_objects()
    plan = wl.plan(facts(objects, deployment=of(addon(), "Deployment")[0]), ["CDNS002"], {"min_replicas": 3})
    cm = change(plan, "ConfigMap")
    assert cm["state"] == "present" and cm["undo_state"] == "absent"
    assert json.loads(cm["definition"]["data"]["linear"]) == {"coresPerReplica": 256, "nodesPerReplica": 16,
                                                              "preventSinglePointFailure": True, "min": 3}


@pytest.mark.parametrize("data,message", [
    ({"linear": "{min: 1"}, "not valid JSON"), ({"other": "{}"}, "neither a linear nor a ladder key"),
    ({"ladder": '{"nodesToReplicas": [1, 2]}'}, "pairs")])
def test_unusable_autoscaler_configmap_is_refused(data, message):
    objects = addon() + autoscaler_objects()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-dns-autoscaler", "namespace": "kube-system"}, "data": data}
    plan = wl.plan(facts(objects, deployment=of(addon(), "Deployment")[0], autoscaler_configmap=cm), ["CDNS002"], {})
    assert any(message in r and "kube-dns-autoscaler" in r for r in plan["refused"]), plan["refused"]


def test_hpa_min_replicas_is_raised():
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "coredns", "namespace": "kube-system"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "coredns"}, "minReplicas": 1, "maxReplicas": 1}}
    plan = wl.plan(facts(addon(), hpas=[hpa]), ["CDNS002"], {"min_replicas": 2})
    fixed = change(plan, "HorizontalPodAutoscaler")
    assert fixed["definition"] == {"spec": {"minReplicas": 2, "maxReplicas": 2}}
    assert fixed["undo"] == {"spec": {"minReplicas": 1, "maxReplicas": 1}}


# --- SVC001 -----------------------------------------------------------------------------------------------

def test_session_affinity_is_removed_and_its_config_kept_for_the_undo():
    objects = load("lab-healthy.json")
    svc = next(s for s in of(objects, "Service") if s["metadata"]["name"] == "kube-dns")
    svc["spec"].update(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10800}})
    plan = wl.plan(facts(objects, service=svc), ["SVC001"], {})
    fixed = change(plan, "Service")
    assert fixed["definition"] == {"spec": {"sessionAffinity": "None", "sessionAffinityConfig": None}}
    assert fixed["undo"] == {"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}}
    assert plan["considered"] == ["session_affinity"]


# --- CDNS005 ----------------------------------------------------------------------------------------------

def test_lab_clusterrole_without_endpointslices_gets_them_back_rules_kept():
    objects = load("lab-rbac-endpointslices.json")
    plan = wl.plan(facts(objects), ["CDNS005"], {})
    role = change(plan, "ClusterRole")
    before = of(objects, "ClusterRole")[0]["rules"]
    assert role["definition"]["rules"][:len(before)] == before
    assert role["definition"]["rules"][len(before):] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]
    assert json.loads(role["definition"]["metadata"]["annotations"][wl.RULES_BEFORE]) == before
    assert role["undo"] == {"metadata": {"annotations": {wl.RULES_BEFORE: None}}, "rules": before}
    # the patched role grants what CoreDNS 1.12 lists and watches
    patched = dict(of(objects, "ClusterRole")[0], rules=role["definition"]["rules"])
    can = evaluate("kube-system", "coredns", of(objects, "ClusterRoleBinding"), [patched])["can"]
    assert all(can[k] for k in ES) and can[permission_key("watch", "services", "")]


def test_pods_verified_adds_pods_and_old_coredns_needs_endpoints_not_slices():
    objects = addon()
    role = of(objects, "ClusterRole")[0]
    role["rules"] = [r for r in role["rules"] if "pods" not in r["resources"]] + [
        {"apiGroups": [""], "resources": ["endpoints", "services", "namespaces"], "verbs": ["list", "watch"]}]
    corefile = of(objects, "ConfigMap")[0]["data"]["Corefile"].replace("pods insecure", "pods verified")
    plan = wl.plan(facts(objects, corefile=corefile), ["CDNS005"], {})
    added = change(plan, "ClusterRole")["definition"]["rules"][-1]
    assert added == {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}


def test_rbac_is_refused_without_a_single_bound_role():
    objects = [o for o in load("lab-rbac-endpointslices.json") if o["kind"] != "ClusterRoleBinding"]
    plan = wl.plan(facts(objects), ["CDNS005"], {})
    assert plan["changes"] == [] and "no ClusterRoleBinding binds it" in plan["refused"][0]
    objects = load("lab-rbac-endpointslices.json")
    aggregated = dict(of(objects, "ClusterRole")[0], aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]})
    plan = wl.plan(facts(objects, cluster_roles=[aggregated]), ["CDNS005"], {})
    assert "aggregated role" in plan["refused"][0]
    plan = wl.plan(facts(objects), ["CDNS005"], {"rbac_cluster_role": "view"})
    assert "is not bound" in plan["refused"][0]


# --- CDNS003 ----------------------------------------------------------------------------------------------

def test_old_coredns_is_reported_with_kubeadm_version_and_path_nothing_changed():
    plan = wl.plan(facts(addon(), server_version="v1.22.3"), ["CDNS003"], {})
    assert plan["changes"] == [] and plan["pending"] == []
    assert plan["version"]["kubeadm_coredns"] == "1.8.4" and plan["version"]["version"] == "1.3.1"
    assert [m["version"] for m in plan["version"]["path"]] == ["1.5.0", "1.6.1", "1.7.0", "1.8.0", "1.8.4"]
    assert "set coredns_upgrade_to" in plan["notes"][0]


def test_upgrade_is_refused_while_the_corefile_has_an_option_the_target_refuses():
    plan = wl.plan(facts(addon()), ["CDNS003"], {"upgrade_to": "1.12.1", "allow_restart": True})
    assert plan["changes"] == [] and "option upstream of plugin kubernetes" in plan["refused"][0]


def test_upgrade_with_consent_changes_the_image_and_adds_endpointslice_rbac():
    objects = addon()
    corefile = of(objects, "ConfigMap")[0]["data"]["Corefile"].replace("        upstream\n", "")
    plan = wl.plan(facts(objects, corefile=corefile), ["CDNS003"], {"upgrade_to": "v1.12.1", "allow_restart": True})
    assert [c["kind"] for c in plan["changes"]] == ["ClusterRole", "Deployment"]
    assert "needed by CoreDNS 1.12.1" in change(plan, "ClusterRole")["actions"][0]
    dep = change(plan, "Deployment")
    assert dep["definition"]["spec"]["template"]["spec"]["containers"] == [
        {"name": "coredns", "image": "registry.cn-hangzhou.aliyuncs.com/google_containers/coredns:1.12.1"}]
    assert dep["undo"]["spec"]["template"]["spec"]["containers"][0]["image"].endswith("coredns:1.3.1") and dep["restart"]


def test_upgrade_without_consent_is_pending_and_touches_no_rbac():
    objects = addon()
    corefile = of(objects, "ConfigMap")[0]["data"]["Corefile"].replace("        upstream\n", "")
    plan = wl.plan(facts(objects, corefile=corefile), [], {"upgrade_to": "1.12.1"})
    assert plan["changes"] == [] and "image" in plan["pending"][0] and plan["considered"] == ["version"]


@pytest.mark.parametrize("target,message", [("1.2.0", "does not downgrade"), ("nonsense", "not a CoreDNS version")])
def test_upgrade_refusals(target, message):
    plan = wl.plan(facts(addon()), ["CDNS003"], {"upgrade_to": target, "allow_restart": True})
    assert plan["changes"] == [] and message in plan["refused"][0]


def test_registry_k8s_io_tags_keep_their_v():
    lab = of(load("lab-healthy.json"), "Deployment")[0]
    lab["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.k8s.io/coredns/coredns:v1.6.7"
    plan = wl.plan(facts(load("lab-healthy.json"), deployment=lab), ["CDNS003"], {"upgrade_to": "1.12.1", "allow_restart": True})
    assert plan["version"]["new_image"] == "registry.k8s.io/coredns/coredns:v1.12.1"


# --- gating -----------------------------------------------------------------------------------------------

def test_nothing_is_considered_without_a_finding_and_force_runs_an_action():
    objects = addon()
    assert wl.plan(facts(objects), ["CDNS006", "WL004"], {})["considered"] == []
    forced = wl.plan(facts(objects), [], {"force": ["pdb"]})
    assert [c["kind"] for c in forced["changes"]] == ["PodDisruptionBudget"]
    with pytest.raises(wl.PlanError, match="unknown action"):
        wl.plan(facts(objects), [], {"force": ["everything"]})


def test_healthy_lab_needs_nothing_even_when_every_action_is_forced():
    plan = wl.plan(facts(load("lab-healthy.json"), pdbs=[{"metadata": {"name": "coredns", "namespace": "kube-system"},
                                                          "spec": {"selector": {"matchLabels": {"k8s-app": "kube-dns"}}}}]),
                   [], {"force": ["replicas", "pdb", "session_affinity", "rbac", "version"]})
    assert plan["changes"] == [] and plan["refused"] == [] and plan["pending"] == []
    assert plan["version"]["version"] == "1.12.4" and plan["version"]["path"] == []
