# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Cluster DNS facts from Kubernetes API objects (what coredns_info returns). Stdlib only.
#
# ``collect(read, ...)`` takes a ``read(path, query)`` callable that GETs an API path and returns
# the decoded JSON object, or raises ApiError (``status`` None for "no answer at all"). The module
# passes one built on kubernetes.core's client; tests pass captured API objects. Everything else
# here is pure: summaries of Deployments, Pods, Services, EndpointSlices, ConfigMaps and RBAC.
#
# Objects accepted: apps/v1 Deployment and DaemonSet, v1 Pod, Service, ConfigMap,
# discovery.k8s.io/v1 EndpointSlice, policy/v1 PodDisruptionBudget, rbac.authorization.k8s.io/v1.

from __future__ import annotations

import re

from ansible_collections.clusterdns.doctor.plugins.module_utils import _rbac
from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import image_version
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

try:
    from ansible_collections.clusterdns.doctor.plugins.module_utils._corefile import parse as parse_corefile
except ImportError:  # pragma: no cover - the parser ships with this collection
    parse_corefile = None

TOLERATE_UNREADY = "service.alpha.kubernetes.io/tolerate-unready-endpoints"


class ApiError(Exception):
    """A GET that failed: ``status`` is the HTTP status (None when the API server did not answer)."""

    def __init__(self, status, message, path=None):
        self.status = status
        self.message = message
        self.path = path
        super().__init__("%s%s: %s" % ("HTTP %s " % status if status else "", path or "request", message))

    def reason(self):
        if self.status == 403:
            return "forbidden: GET %s (%s)" % (self.path, self.message)
        if self.status == 404:
            return "not found: GET %s" % self.path
        if self.status is None:
            return "API server not reachable: %s" % self.message
        return "GET %s failed with HTTP %s: %s" % (self.path, self.status, self.message)


def _dig(data, *path, default=None):
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return default
    return default if data is None else data


def _items(obj):
    return [i for i in (obj or {}).get("items") or [] if isinstance(i, dict)]


def _meta(obj, key):
    return _dig(obj, "metadata", key)


def selector_string(labels):
    return ",".join("%s=%s" % (k, v) for k, v in sorted((labels or {}).items()))


def parse_selector(text):
    """``k8s-app=kube-dns,tier=x`` -> dict (equality selectors only)."""
    labels = {}
    for raw in (text or "").split(","):
        part = raw.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError("label selector %r: only key=value terms are supported (got %r)" % (text, part))
        labels[key.strip()] = value.strip().lstrip("=")
    return labels


def labels_match(selector_labels, labels):
    labels = labels or {}
    return bool(selector_labels) and all(labels.get(k) == v for k, v in selector_labels.items())


def _container(pod_spec, name_hint):
    containers = [c for c in (pod_spec or {}).get("containers") or [] if isinstance(c, dict)]
    for c in containers:
        if c.get("name") == name_hint:
            return c
    for c in containers:
        if name_hint in (c.get("image") or ""):
            return c
    return containers[0] if containers else {}


# --- pods ---------------------------------------------------------------------------------------

def pod_summary(pod):
    status = pod.get("status") or {}
    statuses = [s for s in status.get("containerStatuses") or [] if isinstance(s, dict)]
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    last = None
    waiting = None
    for cs in statuses:
        term = _dig(cs, "lastState", "terminated") or _dig(cs, "state", "terminated")
        if term and last is None:
            last = {"reason": term.get("reason"), "exit_code": term.get("exitCode"),
                    "message": (term.get("message") or "")[-2000:] or None, "finished_at": term.get("finishedAt")}
        if _dig(cs, "state", "waiting", "reason") and waiting is None:
            waiting = _dig(cs, "state", "waiting", "reason")
    return {
        "name": _meta(pod, "name"),
        "namespace": _meta(pod, "namespace"),
        "node": _dig(pod, "spec", "nodeName"),
        "ip": status.get("podIP"),
        "ips": [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict) and p.get("ip")] or ([status["podIP"]] if status.get("podIP") else []),
        "phase": status.get("phase"),
        "ready": ready,
        "restarts": sum(int(cs.get("restartCount") or 0) for cs in statuses),
        "waiting_reason": waiting,
        "last_termination": last,
    }


# --- Deployment ---------------------------------------------------------------------------------

def _autoscaler(deployments, target):
    """Name of a cluster-proportional-autoscaler Deployment that scales ``target`` (or any, when
    its target cannot be told), else None."""
    for dep in deployments:
        spec = _dig(dep, "spec", "template", "spec") or {}
        for c in spec.get("containers") or []:
            words = " ".join([c.get("image") or ""] + [str(a) for a in (c.get("command") or []) + (c.get("args") or [])])
            if "proportional-autoscaler" not in words and "autoscaler" not in (_meta(dep, "name") or ""):
                continue
            match = re.search(r"--target=(?:deployment|Deployment)/([\w.-]+)", words)
            if match is None or match.group(1) == target:
                return _meta(dep, "name")
    return None


def deployment_summary(dep, pods, namespace_deployments=()):
    spec = _dig(dep, "spec", "template", "spec") or {}
    container = _container(spec, "coredns")
    image = container.get("image")
    spread = {}
    for pod in pods:
        node = pod.get("node") or "(unscheduled)"
        spread[node] = spread.get(node, 0) + 1
    replicas = _dig(dep, "spec", "replicas")
    return {
        "namespace": _meta(dep, "namespace"),
        "name": _meta(dep, "name"),
        "image": image,
        "version": image_version(image),
        "replicas": 1 if replicas is None else int(replicas),
        "ready_replicas": int(_dig(dep, "status", "readyReplicas", default=0)),
        "available_replicas": int(_dig(dep, "status", "availableReplicas", default=0)),
        "node_spread": spread,
        "anti_affinity": bool(_dig(spec, "affinity", "podAntiAffinity")),
        "topology_spread": bool(spec.get("topologySpreadConstraints")),
        "resources": container.get("resources") or {},
        "service_account": spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
        "autoscaler": _autoscaler([d for d in namespace_deployments if d is not dep], _meta(dep, "name")),
        "selector": _dig(dep, "spec", "selector", "matchLabels") or {},
        "configmaps": [v["configMap"]["name"] for v in spec.get("volumes") or []
                       if isinstance(v, dict) and _dig(v, "configMap", "name")],
    }


def pdb_summary(pdbs, pod_labels):
    for pdb in pdbs:
        sel = _dig(pdb, "spec", "selector", "matchLabels") or {}
        if labels_match(sel, pod_labels):
            spec = pdb.get("spec") or {}
            return {"name": _meta(pdb, "name"), "min_available": spec.get("minAvailable"),
                    "max_unavailable": spec.get("maxUnavailable"),
                    "disruptions_allowed": _dig(pdb, "status", "disruptionsAllowed")}
    return None


# --- Service and EndpointSlices ------------------------------------------------------------------

def slice_endpoints(slices):
    """``{"ready": [ip], "not_ready": [ip]}`` over EndpointSlices (a missing ``ready``
    condition counts as ready, as the API documents)."""
    ready, not_ready = [], []
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            ok = _dig(ep, "conditions", "ready")
            for ip in ep.get("addresses") or []:
                (not_ready if ok is False else ready).append(ip)
    return {"ready": sorted(set(ready)), "not_ready": sorted(set(not_ready) - set(ready))}


def service_summary(svc, slices, pods):
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return {
        "namespace": _meta(svc, "namespace"),
        "name": _meta(svc, "name"),
        "cluster_ip": spec.get("clusterIP"),
        "cluster_ips": ips,
        "session_affinity": spec.get("sessionAffinity") or "None",
        "selector": spec.get("selector") or {},
        "ports": [{"name": p.get("name"), "port": p.get("port"), "protocol": p.get("protocol", "TCP"),
                   "target_port": p.get("targetPort")} for p in spec.get("ports") or [] if isinstance(p, dict)],
        "annotations": _meta(svc, "annotations") or {},
        "publish_not_ready_addresses": bool(spec.get("publishNotReadyAddresses")),
        "endpoints": slice_endpoints(slices),
        "endpoint_slices": [_meta(s, "name") for s in slices],
        "pod_ips": sorted({ip for p in pods for ip in p.get("ips") or []}),
    }


# --- Corefile, kube-proxy, NodeLocal DNSCache ----------------------------------------------------

def corefile_summary(text, source):
    result = {"text": text, "parsed": None, "parse_error": None, "source": source}
    if text is None:
        return result
    if parse_corefile is None:
        result["parse_error"] = {"message": "the Corefile parser is not installed", "lineno": None, "line": None}
        return result
    try:
        result["parsed"] = parse_corefile(text, source)
    except ParseError as exc:
        result["parse_error"] = {"message": exc.message, "lineno": exc.lineno, "line": exc.line, "expected": exc.expected}
    return result


_MODE = re.compile(r"^mode:[ \t]*(.*?)[ \t]*(?:#.*)?$", re.M)


def kube_proxy_mode(config_text):
    """kube-proxy's proxy mode from its ConfigMap ``config.conf`` (KubeProxyConfiguration YAML).
    ``mode: ""`` and a missing ``mode`` mean iptables on Linux. Top-level key only."""
    match = _MODE.search(config_text or "")
    mode = match.group(1).strip("'\"") if match else ""
    return mode or "iptables"


def _arg_value(args, flag):
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
    return None


def nodelocal_summary(ds, cm):
    if ds is None:
        return {"present": False, "daemonset": None, "configmap": None, "local_ip": [], "corefile": None}
    spec = _dig(ds, "spec", "template", "spec") or {}
    container = _container(spec, "node-cache")
    args = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    local = _arg_value(args, "-localip") or _arg_value(args, "--localip") or ""
    text = _dig(cm, "data", "Corefile") if cm else None
    return {
        "present": True,
        "daemonset": "%s/%s" % (_meta(ds, "namespace"), _meta(ds, "name")),
        "configmap": "%s/%s" % (_meta(cm, "namespace"), _meta(cm, "name")) if cm else None,
        "image": container.get("image"),
        "args": args,
        "local_ip": [ip.strip() for ip in local.split(",") if ip.strip()],
        "desired": _dig(ds, "status", "desiredNumberScheduled"),
        "ready": _dig(ds, "status", "numberReady"),
        "corefile": corefile_summary(text, "ConfigMap %s/%s key Corefile" % (_meta(cm, "namespace"), _meta(cm, "name"))) if cm else None,
    }


# --- collection ---------------------------------------------------------------------------------

class _Reader:
    def __init__(self, read):
        self._read = read
        self.errors = []

    def get(self, path, query=None, missing_ok=False):
        try:
            return self._read(path, query or {})
        except ApiError as exc:
            if exc.path is None:
                exc.path = path
            if exc.status is None:
                raise
            if exc.status == 404 and missing_ok:
                return None
            self.errors.append(exc.reason())
            raise

    def items(self, path, query=None):
        return _items(self.get(path, query))


def _section(fn, *args):
    """Run a collector; an API error becomes ``{"available": False, "reason": ...}``."""
    try:
        return fn(*args)
    except ApiError as exc:
        if exc.status is None:
            raise
        return {"available": False, "reason": exc.reason()}


def collect(read, namespace="kube-system", label_selector="k8s-app=kube-dns", service_name="kube-dns",
            configmap_name=None, nodelocal_name="node-local-dns", kube_proxy_configmap="kube-proxy"):
    """Cluster DNS facts (the ``cluster`` result of coredns_info). Never raises ApiError for one
    object: sections that could not be read carry ``available: false`` and the reason; only an
    API server that does not answer at all gives ``{"available": False, "reason"}``."""
    api = _Reader(read)
    try:
        version = api.get("/version")
    except ApiError as exc:
        return {"available": False, "reason": exc.reason(), "errors": [exc.reason()]}
    labels = parse_selector(label_selector)
    facts = {"available": True, "reason": None, "server_version": (version or {}).get("gitVersion"),
             "namespace": namespace, "label_selector": label_selector}
    try:
        coredns = _section(_coredns, api, namespace, label_selector, labels)
        facts["coredns"] = coredns
        pods = coredns.get("pods") or []
        facts["kube_dns"] = _section(_service, api, namespace, service_name, labels, pods)
        dep = coredns.get("deployment") or {}
        cm_name = configmap_name or next((n for n in dep.get("configmaps") or [] if "coredns" in n), None) \
            or (dep.get("configmaps") or ["coredns"])[0]
        facts["configmap_name"] = cm_name
        facts["corefile"] = _section(_corefile, api, namespace, cm_name)
        if dep:
            facts["rbac"] = _section(_rbac_facts, api, namespace, dep.get("service_account") or "default")
        else:
            facts["rbac"] = {"available": False, "reason": "no CoreDNS Deployment, so no service account to check"}
        facts["nodelocaldns"] = _section(_nodelocal, api, namespace, nodelocal_name)
        facts["kube_proxy"] = _section(_kube_proxy, api, namespace, kube_proxy_configmap)
    except ApiError as exc:  # the API server went away half-way
        return {"available": False, "reason": exc.reason(), "errors": api.errors + [exc.reason()]}
    facts["errors"] = api.errors
    return facts


def _coredns(api, namespace, label_selector, labels):
    all_deps = api.items("/apis/apps/v1/namespaces/%s/deployments" % namespace)
    deps = [d for d in all_deps if labels_match(labels, _meta(d, "labels"))]
    if not deps:
        deps = [d for d in all_deps if labels_match(labels, _dig(d, "spec", "template", "metadata", "labels"))]
    if not deps:
        deps = [d for d in all_deps if _meta(d, "name") == "coredns"]
    pods = [pod_summary(p) for p in api.items("/api/v1/namespaces/%s/pods" % namespace, {"labelSelector": label_selector})]
    pods.sort(key=lambda p: p["name"] or "")
    result = {"available": True, "reason": None, "deployment": None, "pods": pods, "pdb": None}
    if not deps:
        result["reason"] = "no Deployment labelled %s (or named coredns) in namespace %s" % (label_selector, namespace)
        return result
    dep = deps[0]
    result["deployment"] = deployment_summary(dep, pods, all_deps)
    try:
        pdbs = api.items("/apis/policy/v1/namespaces/%s/poddisruptionbudgets" % namespace)
        result["pdb"] = pdb_summary(pdbs, _dig(dep, "spec", "template", "metadata", "labels") or labels)
    except ApiError as exc:
        if exc.status is None:
            raise
        result["pdb"] = {"available": False, "reason": exc.reason()}
    return result


def _service(api, namespace, name, labels, pods):
    svc = api.get("/api/v1/namespaces/%s/services/%s" % (namespace, name), missing_ok=True)
    if svc is None:
        candidates = api.items("/api/v1/namespaces/%s/services" % namespace, {"labelSelector": selector_string(labels)})
        if not candidates:
            return {"available": False, "reason": "no Service %s/%s and none labelled %s" % (namespace, name, selector_string(labels))}
        svc = candidates[0]
    slices = api.items("/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices" % namespace,
                       {"labelSelector": "kubernetes.io/service-name=%s" % _meta(svc, "name")})
    summary = service_summary(svc, slices, pods)
    summary["available"] = True
    return summary


def _corefile(api, namespace, name):
    cm = api.get("/api/v1/namespaces/%s/configmaps/%s" % (namespace, name), missing_ok=True)
    if cm is None:
        return {"available": False, "reason": "no ConfigMap %s/%s" % (namespace, name)}
    text = _dig(cm, "data", "Corefile")
    if text is None:
        return {"available": False, "reason": "ConfigMap %s/%s has no Corefile key (keys: %s)"
                % (namespace, name, ", ".join(sorted(cm.get("data") or {})) or "none")}
    summary = corefile_summary(text, "ConfigMap %s/%s key Corefile" % (namespace, name))
    summary["available"] = True
    return summary


def _rbac_facts(api, namespace, service_account):
    crbs = api.items("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
    roles = api.items("/apis/rbac.authorization.k8s.io/v1/clusterroles")
    try:
        rbs = api.items("/apis/rbac.authorization.k8s.io/v1/namespaces/%s/rolebindings" % namespace)
    except ApiError as exc:
        if exc.status != 403:
            raise
        rbs = []
    result = _rbac.evaluate(namespace, service_account, crbs, roles, rbs)
    result["available"] = True
    return result


def _nodelocal(api, namespace, name):
    ds = api.get("/apis/apps/v1/namespaces/%s/daemonsets/%s" % (namespace, name), missing_ok=True)
    if ds is None:
        found = api.items("/apis/apps/v1/namespaces/%s/daemonsets" % namespace, {"labelSelector": "k8s-app=node-local-dns"})
        ds = found[0] if found else None
    cm = None
    if ds is not None:
        cm = api.get("/api/v1/namespaces/%s/configmaps/%s" % (namespace, name), missing_ok=True)
    summary = nodelocal_summary(ds, cm)
    summary["available"] = True
    return summary


def _kube_proxy(api, namespace, name):
    cm = api.get("/api/v1/namespaces/%s/configmaps/%s" % (namespace, name), missing_ok=True)
    if cm is not None:
        text = _dig(cm, "data", "config.conf")
        if text is not None:
            return {"available": True, "present": True, "mode": kube_proxy_mode(text), "source": "ConfigMap %s/%s" % (namespace, name)}
    ds = api.get("/apis/apps/v1/namespaces/%s/daemonsets/kube-proxy" % namespace, missing_ok=True)
    if ds is not None:
        c = _container(_dig(ds, "spec", "template", "spec"), "kube-proxy")
        args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        mode = _arg_value(args, "--proxy-mode")
        return {"available": True, "present": True, "mode": mode or "iptables", "source": "DaemonSet %s/kube-proxy args" % namespace}
    return {"available": True, "present": False, "mode": None, "source": None}
