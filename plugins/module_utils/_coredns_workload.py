# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# The plan of the coredns role's workload part: what to change in the CoreDNS Deployment, its
# autoscaler, its PodDisruptionBudget, the kube-dns Service and CoreDNS's ClusterRole for the
# findings CDNS002 (single point of failure), SVC001 (sessionAffinity), CDNS005 (RBAC) and
# CDNS003 (version guard). Pure: API objects (plain dicts, as kubernetes.core.k8s_info returns
# them) in, a list of patches with their undo patches out. Stdlib only, Python 3.9+.

from __future__ import annotations

import copy
import json
import re

from ansible_collections.clusterdns.doctor.plugins.module_utils import _rbac
from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import image_version, known_plugin, version_string
from ansible_collections.clusterdns.doctor.plugins.module_utils._corefile import parse as parse_corefile
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

MANAGED_BY = "clusterdns.doctor"
RULES_BEFORE = "clusterdns.doctor/rules-before"
HOSTNAME = "kubernetes.io/hostname"
ACTIONS = ("replicas", "spread", "pdb", "session_affinity", "rbac", "version")
FINDING_ACTIONS = {"CDNS002": ("replicas", "spread", "pdb"), "SVC001": ("session_affinity",),
                   "CDNS005": ("rbac",), "CDNS003": ("version",)}
MIN_VERSION = (1, 7, 0)
ENDPOINTSLICE_VERSION = (1, 8, 4)

# CoreDNS version kubeadm installs with each Kubernetes minor release: coredns/deployment
# kubernetes/CoreDNS-k8s_version.md ("CoreDNS version installed by kubeadm", v1.9 to v1.33) and
# kubernetes/kubernetes cmd/kubeadm/app/constants/constants.go CoreDNSVersion (v1.34, v1.35).
KUBEADM_COREDNS = {
    (1, 9): (1, 0, 1), (1, 10): (1, 0, 6), (1, 11): (1, 1, 3), (1, 12): (1, 2, 2), (1, 13): (1, 2, 6),
    (1, 14): (1, 3, 1), (1, 15): (1, 3, 1), (1, 16): (1, 6, 2), (1, 17): (1, 6, 5), (1, 18): (1, 6, 7),
    (1, 19): (1, 7, 0), (1, 20): (1, 7, 0), (1, 21): (1, 8, 0), (1, 22): (1, 8, 4), (1, 23): (1, 8, 6),
    (1, 24): (1, 8, 6), (1, 25): (1, 9, 3), (1, 26): (1, 9, 3), (1, 27): (1, 10, 1), (1, 28): (1, 10, 1),
    (1, 29): (1, 11, 1), (1, 30): (1, 11, 1), (1, 31): (1, 11, 3), (1, 32): (1, 11, 3), (1, 33): (1, 12, 0),
    (1, 34): (1, 12, 1), (1, 35): (1, 13, 1),
}

# What an upgrade across a release changes for a Kubernetes deployment of CoreDNS (release notes
# coredns-1.5.0.md, 1.7.0.md, 1.8.0.md, 1.8.4.md, the deprecation column of CoreDNS-k8s_version.md
# and coredns/corefile-migration migration/versions.go, which marks the kubernetes options
# upstream and resyncperiod "removed" from 1.6.1; CoreDNS 1.12.4 refuses all three options below
# with "unknown property").
MILESTONES = (
    ((1, 5, 0), "proxy leaves the default build: a Corefile with proxy must use forward"),
    ((1, 6, 1), "the kubernetes plugin refuses its old options upstream and resyncperiod"),
    ((1, 7, 0), "the federation plugin is removed and the Prometheus metric names change (dashboards and alerts need the new names); "
                "releases before it stop updating after API server jitter (headless names go stale)"),
    ((1, 8, 0), "the kubernetes plugin drops its transfer option (zone transfers move to the transfer plugin)"),
    ((1, 8, 4), "the kubernetes plugin watches EndpointSlices: CoreDNS needs list and watch on endpointslices.discovery.k8s.io, and "
                "the service.alpha.kubernetes.io/tolerate-unready-endpoints annotation stops working (use publishNotReadyAddresses)"),
)

# Options of a plugin's block that a release removed: plugin -> option -> release.
REMOVED_OPTIONS = {"kubernetes": {"upstream": (1, 6, 1), "resyncperiod": (1, 6, 1), "transfer": (1, 8, 0)}}

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


class PlanError(ValueError):
    """Input the plan cannot be made from (names the object and what to do)."""


def parse_version(text):
    """``"1.12.1"``, ``"v1.12"`` -> (1, 12, 1) / (1, 12, 0); anything else raises PlanError."""
    match = _VERSION.match(str(text or "").strip())
    if not match:
        raise PlanError("%r is not a CoreDNS version (expected MAJOR.MINOR.PATCH such as 1.12.1)" % (text,))
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _kubernetes_minor(server_version):
    match = re.match(r"^v?(\d+)\.(\d+)", str(server_version or ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def kubeadm_coredns(server_version):
    """(CoreDNS version kubeadm installs for this Kubernetes release, the release of the table
    used, exact) or None when the server version is unknown. Releases newer than the table get
    its newest entry, older ones its oldest (``exact`` False)."""
    minor = _kubernetes_minor(server_version)
    if minor is None:
        return None
    if minor in KUBEADM_COREDNS:
        return KUBEADM_COREDNS[minor], minor, True
    keys = sorted(KUBEADM_COREDNS)
    key = keys[-1] if minor > keys[-1] else keys[0]
    return KUBEADM_COREDNS[key], key, False


def milestones(current, target):
    """The MILESTONES crossed by an upgrade from ``current`` to ``target`` (tuples)."""
    low = tuple(current) if current else (0, 0, 0)
    return [{"version": version_string(v), "change": text} for v, text in MILESTONES if low < v <= tuple(target)]


def corefile_problems(text, version):
    """Why a CoreDNS of ``version`` would refuse this Corefile: unknown or removed plugins and
    removed plugin options, one sentence each with the line. A Corefile that does not parse gives
    one problem naming the line."""
    try:
        blocks = parse_corefile(text, "Corefile")
    except ParseError as exc:
        return ["the Corefile does not parse: %s" % exc]
    problems = []
    for block in blocks:
        if block.get("kind", "server") != "server":
            continue
        for plugin in block.get("plugins") or []:
            name = plugin.get("name")
            ok, reason = known_plugin(name, list(version))
            if not ok:
                problems.append("line %s: %s" % (plugin.get("lineno"), reason))
                continue
            for option in plugin.get("block") or []:
                removed = REMOVED_OPTIONS.get(name, {}).get(option.get("name"))
                if removed and tuple(version) >= removed:
                    problems.append("line %s: option %s of plugin %s was removed in CoreDNS %s"
                                    % (option.get("lineno"), option.get("name"), name, version_string(removed)))
    return problems


def pods_verified(text):
    """Whether a kubernetes plugin of the Corefile says ``pods verified`` (CoreDNS then watches pods)."""
    try:
        blocks = parse_corefile(text or "", "Corefile")
    except ParseError:
        return False
    for block in blocks:
        for plugin in block.get("plugins") or []:
            if plugin.get("name") == "kubernetes":
                for option in plugin.get("block") or []:
                    if option.get("name") == "pods" and "verified" in (option.get("args") or []):
                        return True
    return False


# --- label selectors ------------------------------------------------------------------------------

def selector_matches(selector, labels):
    """Whether a LabelSelector (matchLabels and matchExpressions) selects ``labels``. An empty
    selector selects nothing here (a PodDisruptionBudget with an empty selector is ambiguous)."""
    if not isinstance(selector, dict):
        return False
    labels = labels or {}
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in expressions:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


# --- cluster-proportional-autoscaler -------------------------------------------------------------

def _dig(data, *path, default=None):
    for key in path:
        if not isinstance(data, dict):
            return default
        data = data.get(key)
    return default if data is None else data


def _meta(obj, key):
    return _dig(obj, "metadata", key)


def _flag(args, name):
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def find_autoscaler(deployments, target_name, namespace="kube-system"):
    """The cluster-proportional-autoscaler Deployment among ``deployments`` that scales Deployment
    ``target_name``: ``{"name", "namespace", "configmap", "configmap_namespace", "default_params"}``
    or None. An autoscaler is a container whose image or arguments name cluster-proportional-autoscaler
    and whose ``--target`` is ``deployment/<target_name>`` (case-insensitive kind)."""
    for dep in deployments or []:
        if not isinstance(dep, dict) or _meta(dep, "name") == target_name:
            continue
        for container in _dig(dep, "spec", "template", "spec", "containers", default=[]):
            args = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
            words = " ".join([container.get("image") or ""] + args)
            if "proportional-autoscaler" not in words:
                continue
            target = _flag(args, "--target") or ""
            kind, _sep, name = target.partition("/")
            if kind.lower() != "deployment" or name != target_name:
                continue
            default = _flag(args, "--default-params")
            return {"name": _meta(dep, "name"), "namespace": _meta(dep, "namespace") or namespace,
                    "configmap": _flag(args, "--configmap"),
                    "configmap_namespace": _flag(args, "--namespace") or _meta(dep, "namespace") or namespace,
                    "default_params": default}
    return None


def _raise_params(mode, params, minimum, where):
    """Autoscaler parameters of ``mode`` with at least ``minimum`` replicas, and what changed."""
    if not isinstance(params, dict):
        raise PlanError("%s: the %s parameters are not a JSON object" % (where, mode))
    new = copy.deepcopy(params)
    changed = []
    if mode == "linear":
        if int(new.get("min") or 0) < minimum:
            changed.append("min %s -> %d" % (new.get("min", "unset"), minimum))
            new["min"] = minimum
        if not new.get("preventSinglePointFailure"):
            changed.append("preventSinglePointFailure %s -> true" % str(new.get("preventSinglePointFailure", "unset")).lower())
            new["preventSinglePointFailure"] = True
        if new.get("max") and int(new["max"]) < minimum:
            changed.append("max %s -> %d" % (new["max"], minimum))
            new["max"] = minimum
    elif mode == "ladder":
        for key in ("coresToReplicas", "nodesToReplicas"):
            steps = new.get(key)
            if steps is None:
                continue
            if not isinstance(steps, list) or not all(isinstance(s, list) and len(s) == 2 for s in steps):
                raise PlanError("%s: ladder %s must be a list of [threshold, replicas] pairs" % (where, key))
            for step in steps:
                if int(step[1]) < minimum:
                    changed.append("%s [%s, %s] -> [%s, %d]" % (key, step[0], step[1], step[0], minimum))
                    step[1] = minimum
    return new, changed


def autoscaler_data(data, minimum, where):
    """New ``data`` of the autoscaler ConfigMap (keys ``linear`` / ``ladder`` hold JSON) so that it
    never scales CoreDNS below ``minimum``; returns (data, changes). Unknown keys are kept."""
    if not any(k in (data or {}) for k in ("linear", "ladder")):
        raise PlanError("%s has neither a linear nor a ladder key (keys: %s); set the autoscaler's parameters by hand"
                        % (where, ", ".join(sorted(data or {})) or "none"))
    new, changes = dict(data), []
    for mode in ("linear", "ladder"):
        if mode not in new:
            continue
        try:
            params = json.loads(new[mode])
        except ValueError as exc:
            raise PlanError("%s key %s is not valid JSON: %s" % (where, mode, exc)) from None
        fixed, changed = _raise_params(mode, params, minimum, "%s key %s" % (where, mode))
        if changed:
            new[mode] = json.dumps(fixed)
            changes.extend("%s %s" % (mode, c) for c in changed)
    return new, changes


# --- verification ---------------------------------------------------------------------------------

def rollout_status(dep):
    """Whether a Deployment finished rolling out: the controller saw its last change, every
    replica runs the current template and is Ready, no old replica is left. ``{"done", "want",
    "ready", "updated", "replicas", "summary"}``."""
    spec_replicas = _dig(dep, "spec", "replicas")
    want = 1 if spec_replicas is None else int(spec_replicas)
    status = (dep or {}).get("status") or {}
    observed = int(status.get("observedGeneration") or 0) >= int(_dig(dep, "metadata", "generation", default=0))
    ready, updated, replicas = (int(status.get(k) or 0) for k in ("readyReplicas", "updatedReplicas", "replicas"))
    done = bool(dep) and observed and updated >= want and ready >= want and replicas <= want
    if not dep:
        summary = "the Deployment is gone"
    elif not observed:
        summary = "the Deployment controller has not seen the change (observedGeneration %s < generation %s)" % (
            status.get("observedGeneration"), _dig(dep, "metadata", "generation"))
    else:
        summary = "%d of %d replicas Ready, %d updated, %d running in all" % (ready, want, updated, replicas)
    return {"done": done, "want": want, "ready": ready, "updated": updated, "replicas": replicas, "summary": summary}


def ready_endpoints(slices):
    """Addresses of the ready endpoints of EndpointSlices (a missing ``ready`` condition counts as
    ready, as the API documents)."""
    found = []
    for sl in slices or []:
        for ep in (sl or {}).get("endpoints") or []:
            if _dig(ep, "conditions", "ready") is False:
                continue
            found.extend(a for a in ep.get("addresses") or [] if a not in found)
    return found


# --- the plan -------------------------------------------------------------------------------------

def _container(dep):
    containers = _dig(dep, "spec", "template", "spec", "containers", default=[])
    for c in containers:
        if c.get("name") == "coredns":
            return c
    for c in containers:
        if "coredns" in (c.get("image") or ""):
            return c
    return containers[0] if containers else {}


def _ref(obj, kind=None):
    ns = _meta(obj, "namespace")
    return "%s %s%s" % (kind or obj.get("kind"), ns + "/" if ns else "", _meta(obj, "name"))


def _reconciled(obj):
    return _dig(obj, "metadata", "labels", "addonmanager.kubernetes.io/mode") == "Reconcile"


class _Plan:
    def __init__(self):
        self.changes = {}
        self.order = []
        self.pending = []
        self.notes = []
        self.refused = []
        self.kept = []

    def change(self, obj, api_version, kind, patch, undo, action, restart=False, state="patched", undo_state="patched"):
        key = _ref(obj, kind)
        entry = self.changes.get(key)
        if entry is None:
            entry = {"key": key, "api_version": api_version, "kind": kind, "namespace": _meta(obj, "namespace"),
                     "name": _meta(obj, "name"), "state": state, "definition": {}, "undo_state": undo_state, "undo": {},
                     "actions": [], "restart": False, "before": None if state == "present" else _clean(obj)}
            self.changes[key] = entry
            self.order.append(key)
            if _reconciled(obj):
                self.notes.append("%s is labelled addonmanager.kubernetes.io/mode=Reconcile: the addon manager may revert "
                                  "this change; change the addon manifest too" % _ref(obj, kind))
        _merge(entry["definition"], patch)
        _merge(entry["undo"], undo)
        entry["actions"].append(action)
        entry["restart"] = entry["restart"] or restart


def _merge(into, patch):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _clean(obj):
    """The object as backed up: no status, no managedFields."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    (obj.get("metadata") or {}).pop("managedFields", None)
    return obj


def _deployment_patches(plan, dep, opts, wanted, autoscaler, autoscaler_cm, hpas):
    name = _meta(dep, "name")
    replicas = _dig(dep, "spec", "replicas")
    current = 1 if replicas is None else int(replicas)
    minimum = int(opts.get("min_replicas", 2))
    template_spec = _dig(dep, "spec", "template", "spec", default={})
    selector = _dig(dep, "spec", "selector", default={})

    if "replicas" in wanted:
        if autoscaler is not None:
            where = "ConfigMap %s/%s of autoscaler %s" % (autoscaler["configmap_namespace"], autoscaler["configmap"], autoscaler["name"])
            if not autoscaler.get("configmap"):
                plan.refused.append("Deployment %s/%s scales CoreDNS but has no --configmap argument: raise its minimum by hand"
                                    % (autoscaler["namespace"], autoscaler["name"]))
            elif autoscaler_cm is not None:
                try:
                    data, changed = autoscaler_data(_dig(autoscaler_cm, "data", default={}), minimum, where)
                except PlanError as exc:
                    plan.refused.append(str(exc))
                else:
                    if changed:
                        plan.change(autoscaler_cm, "v1", "ConfigMap", {"data": data}, {"data": dict(_dig(autoscaler_cm, "data", default={}))},
                                    "%s: %s (the autoscaler scales CoreDNS; its minimum is raised instead of only scaling the Deployment, "
                                    "which it would undo)" % (where, ", ".join(changed)))
                    else:
                        plan.kept.append("%s already keeps at least %d replicas" % (where, minimum))
            elif autoscaler.get("default_params"):
                try:
                    defaults = json.loads(autoscaler["default_params"])
                    data, changed = autoscaler_data({k: json.dumps(v) for k, v in defaults.items()}, minimum, where + " (from --default-params)")
                except (ValueError, AttributeError) as exc:
                    plan.refused.append("%s is missing and --default-params of %s is not usable: %s" % (where, autoscaler["name"], exc))
                else:
                    cm = {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": autoscaler["configmap"], "namespace": autoscaler["configmap_namespace"]}, "data": data}
                    plan.change(cm, "v1", "ConfigMap", cm, {}, "%s created from the autoscaler's --default-params with %s"
                                % (where, ", ".join(changed) or "its own values"), state="present", undo_state="absent")
            else:
                plan.refused.append("%s does not exist and the autoscaler has no --default-params: create it with a minimum of %d"
                                    % (where, minimum))
        for hpa in hpas or []:
            ref = _dig(hpa, "spec", "scaleTargetRef", default={})
            if ref.get("kind") != "Deployment" or ref.get("name") != name:
                continue
            spec = hpa.get("spec") or {}
            if int(spec.get("minReplicas") or 1) < minimum:
                patch = {"spec": {"minReplicas": minimum}}
                undo = {"spec": {"minReplicas": spec.get("minReplicas")}}
                text = "HorizontalPodAutoscaler %s/%s minReplicas %s -> %d" % (
                    _meta(hpa, "namespace"), _meta(hpa, "name"), spec.get("minReplicas", 1), minimum)
                if int(spec.get("maxReplicas") or 0) < minimum:
                    patch["spec"]["maxReplicas"] = minimum
                    undo["spec"]["maxReplicas"] = spec.get("maxReplicas")
                    text += ", maxReplicas %s -> %d" % (spec.get("maxReplicas"), minimum)
                plan.change(hpa, hpa.get("apiVersion") or "autoscaling/v2", "HorizontalPodAutoscaler", patch, undo, text)
        if current < minimum:
            plan.change(dep, "apps/v1", "Deployment", {"spec": {"replicas": minimum}}, {"spec": {"replicas": current}},
                        "Deployment %s/%s replicas %d -> %d" % (_meta(dep, "namespace"), name, current, minimum))
        else:
            plan.kept.append("Deployment %s/%s already runs %d replicas (minimum %d)" % (_meta(dep, "namespace"), name, current, minimum))

    if "spread" in wanted:
        mode = opts.get("spread", "anti_affinity")
        has_anti = bool(_dig(template_spec, "affinity", "podAntiAffinity"))
        has_tsc = bool(template_spec.get("topologySpreadConstraints"))
        if mode == "none":
            plan.kept.append("spreading over nodes not requested (coredns_spread: none)")
        elif has_anti or has_tsc:
            plan.kept.append("Deployment %s/%s already has %s" % (
                _meta(dep, "namespace"), name, "podAntiAffinity" if has_anti else "topologySpreadConstraints"))
        elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
            plan.refused.append("Deployment %s/%s has no pod selector to spread by" % (_meta(dep, "namespace"), name))
        else:
            if mode == "topology_spread":
                patch = {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway",
                                                        "labelSelector": copy.deepcopy(selector)}]}
                undo = {"topologySpreadConstraints": None}
                text = "a topologySpreadConstraint (maxSkew 1 over %s, ScheduleAnyway)" % HOSTNAME
            else:
                term = {"weight": 100, "podAffinityTerm": {"labelSelector": copy.deepcopy(selector), "topologyKey": HOSTNAME}}
                patch = {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term]}}}
                undo = {"affinity": {"podAntiAffinity": None}} if template_spec.get("affinity") else {"affinity": None}
                text = "a preferred podAntiAffinity (weight 100, topologyKey %s)" % HOSTNAME
            action = "Deployment %s/%s: add %s on the CoreDNS pod labels" % (_meta(dep, "namespace"), name, text)
            if opts.get("allow_restart"):
                plan.change(dep, "apps/v1", "Deployment", {"spec": {"template": {"spec": patch}}},
                            {"spec": {"template": {"spec": undo}}}, action + " (rolling restart of CoreDNS)", restart=True)
            else:
                plan.pending.append(action)


def _pdb_patch(plan, dep, opts, pdbs):
    pod_labels = _dig(dep, "spec", "template", "metadata", "labels", default={})
    ns = _meta(dep, "namespace")
    selecting = [p for p in pdbs or [] if selector_matches(_dig(p, "spec", "selector"), pod_labels)]
    if selecting:
        plan.kept.append("PodDisruptionBudget %s/%s already covers the CoreDNS pods" % (ns, _meta(selecting[0], "name")))
        return
    name = opts.get("pdb_name") or "coredns"
    if any(_meta(p, "name") == name for p in pdbs or []):
        plan.refused.append("PodDisruptionBudget %s/%s exists but does not select the CoreDNS pods (labels %s): fix its selector "
                            "or set coredns_pdb_name to another name" % (ns, name, pod_labels))
        return
    max_unavailable = opts.get("pdb_max_unavailable", 1)
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
           "spec": {"maxUnavailable": max_unavailable, "selector": copy.deepcopy(_dig(dep, "spec", "selector", default={}))}}
    plan.change(pdb, "policy/v1", "PodDisruptionBudget", pdb, {},
                "PodDisruptionBudget %s/%s created (maxUnavailable %s, selector of Deployment %s)" % (ns, name, max_unavailable, _meta(dep, "name")),
                state="present", undo_state="absent")


def _service_patch(plan, svc):
    spec = svc.get("spec") or {}
    if spec.get("sessionAffinity") != "ClientIP":
        plan.kept.append("Service %s/%s has sessionAffinity %s" % (_meta(svc, "namespace"), _meta(svc, "name"), spec.get("sessionAffinity") or "None"))
        return
    plan.change(svc, "v1", "Service", {"spec": {"sessionAffinity": "None", "sessionAffinityConfig": None}},
                {"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": copy.deepcopy(spec.get("sessionAffinityConfig"))}},
                "Service %s/%s sessionAffinity ClientIP -> None (every query is balanced over the CoreDNS pods again; a client no longer "
                "sticks to one pod, dead or overloaded)" % (_meta(svc, "namespace"), _meta(svc, "name")))


def needed_permissions(version, corefile):
    """(verb, resource, group) CoreDNS ``version`` needs cluster-wide with this Corefile."""
    needs = []
    if version is None or tuple(version) >= ENDPOINTSLICE_VERSION:
        needs += [("list", "endpointslices", "discovery.k8s.io"), ("watch", "endpointslices", "discovery.k8s.io")]
    else:
        needs += [("list", "endpoints", ""), ("watch", "endpoints", "")]
    needs += [(v, r, "") for r in ("services", "namespaces") for v in ("list", "watch")]
    if pods_verified(corefile):
        needs += [("list", "pods", ""), ("watch", "pods", "")]
    return needs


def _rbac_patch(plan, dep, version, corefile, bindings, roles, opts, why):
    ns = _meta(dep, "namespace")
    spec = _dig(dep, "spec", "template", "spec", default={})
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    needs = needed_permissions(version, corefile)
    result = _rbac.evaluate(ns, account, bindings, roles, needs=needs)
    missing = [(v, r, g) for v, r, g in needs if not result["can"][_rbac.permission_key(v, r, g)]]
    if not missing:
        plan.kept.append("service account %s/%s may already %s" % (ns, account, ", ".join(sorted(result["can"]))))
        return
    by_name = {_meta(r, "name"): r for r in roles or []}
    bound = [b["role"] for b in result["bindings"] if b["kind"] == "ClusterRoleBinding" and b["role_kind"] == "ClusterRole"]
    wanted = opts.get("rbac_cluster_role") or ""
    if wanted:
        if wanted not in bound:
            plan.refused.append("ClusterRole %s is not bound to service account %s/%s by any ClusterRoleBinding (bound: %s)"
                                % (wanted, ns, account, ", ".join(bound) or "none"))
            return
        chosen = wanted
    else:
        named = [b for b in bound if "coredns" in b]
        candidates = named or bound
        if len(set(candidates)) != 1:
            plan.refused.append("service account %s/%s lacks %s, and %s: set coredns_rbac_cluster_role to the ClusterRole to extend"
                                % (ns, account, ", ".join(_rbac.permission_key(*m) for m in missing),
                                   "no ClusterRoleBinding binds it to a ClusterRole (create one, as kubeadm's system:coredns)"
                                   if not candidates else "it is bound to several ClusterRoles (%s)" % ", ".join(sorted(set(candidates)))))
            return
        chosen = candidates[0]
    role = by_name.get(chosen)
    if role is None:
        plan.refused.append("ClusterRole %s, bound to service account %s/%s, does not exist: create it" % (chosen, ns, account))
        return
    if role.get("aggregationRule"):
        plan.refused.append("ClusterRole %s is an aggregated role (its rules are written by the controller): add a ClusterRole with "
                            "the aggregation labels instead" % chosen)
        return
    groups = {}
    for verb, resource, group in missing:
        groups.setdefault(group, {}).setdefault(resource, set()).add(verb)
    added = [{"apiGroups": [group], "resources": sorted(resources), "verbs": ["list", "watch"]}
             for group, resources in sorted(groups.items())]
    rules = copy.deepcopy(role.get("rules") or [])
    annotations = _dig(role, "metadata", "annotations", default={})
    undo_annotation = annotations.get(RULES_BEFORE)
    plan.change(role, "rbac.authorization.k8s.io/v1", "ClusterRole",
                {"metadata": {"annotations": {RULES_BEFORE: json.dumps(rules, sort_keys=True)}}, "rules": rules + added},
                {"metadata": {"annotations": {RULES_BEFORE: undo_annotation}}, "rules": rules},
                "ClusterRole %s: add list/watch on %s for service account %s/%s%s (existing rules kept, previous rules saved in "
                "annotation %s)" % (chosen, ", ".join("%s%s" % (r, "." + g if g else "") for g, rs in sorted(groups.items()) for r in sorted(rs)),
                                    ns, account, why, RULES_BEFORE))


def _version_patch(plan, dep, server_version, corefile, opts):
    """The version report, and the image change when coredns_upgrade_to asks for one. Returns
    (report, the version the image is changed to or None)."""
    container = _container(dep)
    image = container.get("image") or ""
    current = image_version(image)
    kubeadm = kubeadm_coredns(server_version)
    report = {"image": image, "version": version_string(current), "kubernetes": server_version,
              "kubeadm_coredns": version_string(kubeadm[0]) if kubeadm else None,
              "kubeadm_release": "%d.%d" % kubeadm[1] if kubeadm else None, "target": None, "path": []}
    target = opts.get("upgrade_to") or ""
    suggestion = kubeadm[0] if kubeadm and (current is None or tuple(current) < kubeadm[0]) else None
    path_to = parse_version(target) if target else (suggestion or (MIN_VERSION if current and tuple(current) < MIN_VERSION else None))
    if path_to:
        report["path"] = milestones(current, path_to)
    text = "CoreDNS %s (image %s)" % (version_string(current) or "of unknown version", image)
    if kubeadm:
        text += "; kubeadm installs CoreDNS %s with Kubernetes %s%s" % (
            version_string(kubeadm[0]), "%d.%d" % kubeadm[1], "" if kubeadm[2] else " (the newest release in its table; the cluster runs %s)" % server_version)
    if report["path"]:
        text += "; upgrading to %s crosses: %s" % (version_string(path_to), "; ".join("%s: %s" % (m["version"], m["change"]) for m in report["path"]))
    if not target:
        plan.notes.append(text + ("; set coredns_upgrade_to (and coredns_allow_restart: true) to upgrade" if suggestion else ""))
        return report, None
    plan.notes.append(text)
    wanted = parse_version(target)
    report["target"] = version_string(wanted)
    if current and wanted < tuple(current):
        plan.refused.append("coredns_upgrade_to %s is older than the running CoreDNS %s: this role does not downgrade"
                            % (version_string(wanted), version_string(current)))
        return report, None
    if current and wanted == tuple(current):
        plan.kept.append("CoreDNS already runs %s" % version_string(current))
        return report, None
    problems = corefile_problems(corefile, wanted) if corefile is not None else []
    if problems:
        plan.refused.append("the Corefile would stop CoreDNS %s: %s; fix the Corefile first (nothing was changed)"
                            % (version_string(wanted), "; ".join(problems)))
        return report, None
    new_image = opts.get("upgrade_image") or _retag(image, wanted)
    if not new_image:
        plan.refused.append("cannot derive the image of CoreDNS %s from %r: set coredns_upgrade_image" % (version_string(wanted), image))
        return report, None
    report["new_image"] = new_image
    action = "Deployment %s/%s container %s image %s -> %s (CoreDNS %s -> %s)" % (
        _meta(dep, "namespace"), _meta(dep, "name"), container.get("name"), image, new_image,
        version_string(current) or "of unknown version", version_string(wanted))
    if opts.get("allow_restart"):
        plan.change(dep, "apps/v1", "Deployment",
                    {"spec": {"template": {"spec": {"containers": [{"name": container.get("name"), "image": new_image}]}}}},
                    {"spec": {"template": {"spec": {"containers": [{"name": container.get("name"), "image": image}]}}}},
                    action + " (rolling restart of CoreDNS)", restart=True)
        return report, wanted
    plan.pending.append(action)
    return report, None


def _retag(image, version):
    """``registry/coredns/coredns:v1.8.0`` + (1, 12, 1) -> ``registry/coredns/coredns:v1.12.1``
    (the tag keeps its ``v`` prefix or not); None without a tag."""
    ref = image.split("@", 1)[0]
    head, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return None
    return "%s:%s%s" % (head, "v" if tag.startswith("v") else "", version_string(version))


def plan(facts, findings, options):
    """The changes for the workload findings.

    ``facts``: ``deployment`` (the CoreDNS Deployment), ``deployments`` (every Deployment of its
    namespace, for the autoscaler), ``autoscaler_configmap`` (None when missing or when there is no
    autoscaler), ``hpas``, ``pdbs``, ``service`` (kube-dns, or None), ``cluster_role_bindings``,
    ``cluster_roles``, ``corefile`` (text or None), ``server_version``.
    ``findings``: finding ids present. ``options``: ``min_replicas``, ``spread`` (anti_affinity,
    topology_spread, none), ``pdb_name``, ``pdb_max_unavailable``, ``allow_restart``,
    ``upgrade_to``, ``upgrade_image``, ``rbac_cluster_role``, ``force`` (names of ACTIONS).

    Returns ``{"changes": [...], "pending": [...], "notes": [...], "refused": [...], "kept": [...],
    "considered": [...], "version": {...} or None}``. Each change: ``key``, ``api_version``,
    ``kind``, ``namespace``, ``name``, ``state`` (patched or present), ``definition`` (the patch or
    the new object), ``undo_state`` (patched or absent), ``undo`` (the patch that restores it),
    ``actions``, ``restart`` (the pod template changes: a rolling restart), ``before`` (the object
    as it was, None for a new one). Changes are ordered RBAC, autoscaler, Deployment, PDB, Service."""
    options = dict(options or {})
    force = list(options.get("force") or [])
    unknown = [f for f in force if f not in ACTIONS]
    if unknown:
        raise PlanError("coredns_workload_force: unknown action(s) %s (choose from %s)" % (", ".join(unknown), ", ".join(ACTIONS)))
    wanted = set(force)
    for finding in findings or []:
        wanted.update(FINDING_ACTIONS.get(finding, ()))
    if options.get("upgrade_to"):
        wanted.add("version")
    result = _Plan()
    dep = facts.get("deployment")
    considered = [a for a in ACTIONS if a in wanted]
    out = {"considered": considered, "version": None}
    if not wanted:
        return dict(out, changes=[], pending=[], notes=[], refused=[], kept=[])
    if not dep and wanted - {"session_affinity"}:
        result.refused.append("no CoreDNS Deployment found: nothing to scale, spread or upgrade")
    current = image_version(_container(dep).get("image")) if dep else None
    version_target = None
    if dep and "version" in wanted:
        try:
            out["version"], version_target = _version_patch(result, dep, facts.get("server_version"), facts.get("corefile"), options)
        except PlanError as exc:
            result.refused.append("coredns_upgrade_to: %s" % exc)
    if dep:
        rbac_version = version_target or current
        upgrade_needs = version_target is not None and version_target >= ENDPOINTSLICE_VERSION and (current is None or tuple(current) < ENDPOINTSLICE_VERSION)
        if "rbac" in wanted or upgrade_needs:
            _rbac_patch(result, dep, rbac_version, facts.get("corefile"), facts.get("cluster_role_bindings"), facts.get("cluster_roles"),
                        options, " (needed by CoreDNS %s)" % version_string(version_target) if upgrade_needs and "rbac" not in wanted else "")
        autoscaler = find_autoscaler(facts.get("deployments"), _meta(dep, "name"), _meta(dep, "namespace"))
        if autoscaler is not None:
            out["autoscaler"] = autoscaler
        _deployment_patches(result, dep, options, wanted, autoscaler, facts.get("autoscaler_configmap"), facts.get("hpas"))
        if "pdb" in wanted:
            _pdb_patch(result, dep, options, facts.get("pdbs"))
    if "session_affinity" in wanted:
        if facts.get("service"):
            _service_patch(result, facts["service"])
        else:
            result.refused.append("no kube-dns Service found")
    rank = {"ClusterRole": 0, "ConfigMap": 1, "HorizontalPodAutoscaler": 1, "Deployment": 2, "PodDisruptionBudget": 3, "Service": 4}
    changes = sorted((result.changes[k] for k in result.order), key=lambda c: rank.get(c["kind"], 5))
    return dict(out, changes=changes, pending=result.pending, notes=result.notes, refused=result.refused, kept=result.kept)
