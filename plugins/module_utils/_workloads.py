# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Workload DNS facts (what workload_dns_info returns): pods' dnsPolicy / dnsConfig / hostNetwork
# and effective ndots, images that look musl-based, StatefulSets whose serviceName names no
# headless Service, Services relying on the tolerate-unready-endpoints annotation. Stdlib only.
#
# Cost is bounded: lists are read in pages (``limit`` / ``continue``) up to ``max_pods`` pods, and
# the result holds counts plus at most ``examples`` examples per problem, whatever the cluster size.

from __future__ import annotations

import contextlib
import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._cluster import TOLERATE_UNREADY, ApiError

# Heuristic: "alpine" as a word of the repository path or the tag (alpine, alpine3.19,
# 1.25-alpine, node:20-alpine3.18, library/alpine). Images built FROM alpine under another name
# cannot be told from their reference.
_MUSL = re.compile(r"(?:^|[/:_.-])alpine(?:$|[/:_.\d-])")

KUBELET_NDOTS = 5


def looks_musl(image):
    return bool(image) and bool(_MUSL.search(image.split("@", 1)[0].lower()))


def effective_dns(pod):
    """``(policy, ndots)`` the kubelet gives a pod. ndots is None when it comes from the node's
    resolv.conf (dnsPolicy Default, or ClusterFirst on hostNetwork), which the API does not show."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(spec.get("hostNetwork"))
    ndots = None
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network):
        ndots = KUBELET_NDOTS
    elif policy == "None":
        ndots = 1
    for option in (spec.get("dnsConfig") or {}).get("options") or []:
        if isinstance(option, dict) and option.get("name") == "ndots" and option.get("value") is not None:
            with contextlib.suppress(TypeError, ValueError):
                ndots = int(option["value"])
    return policy, ndots


def _owner(pod):
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return "%s/%s" % (refs[0].get("kind"), refs[0].get("name")) if refs else None


class _Problem:
    def __init__(self, limit):
        self.count = 0
        self.examples = []
        self.limit = limit

    def add(self, example):
        self.count += 1
        if len(self.examples) < self.limit:
            self.examples.append(example)

    def as_dict(self):
        return {"count": self.count, "examples": self.examples}


def _paged(read, path, page_size, cap):
    """Items of a list path, ``page_size`` at a time, at most ``cap`` (None: all).
    Returns (items, truncated)."""
    items, token = [], None
    while True:
        query = {"limit": page_size}
        if token:
            query["continue"] = token
        page = read(path, query) or {}
        items.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if cap is not None and len(items) >= cap:
            return items[:cap], bool(token) or len(items) > cap
        if not token:
            return items, False


def summarize(pods, services, statefulsets, examples=10, truncated=False):
    """Aggregate pods, Services and StatefulSets (API objects as dicts) into the facts."""
    policies, ndots_hist = {}, {}
    host_first, ndots5, musl, dns_config = _Problem(examples), _Problem(examples), _Problem(examples), _Problem(examples)
    musl_images = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        ident = {"namespace": meta.get("namespace"), "name": meta.get("name"), "owner": _owner(pod)}
        policy, ndots = effective_dns(pod)
        policies[policy] = policies.get(policy, 0) + 1
        key = str(ndots) if ndots is not None else "node"
        ndots_hist[key] = ndots_hist.get(key, 0) + 1
        if spec.get("hostNetwork") and policy == "ClusterFirst":
            host_first.add(dict(ident, dns_policy=policy))
        if ndots is not None and ndots >= KUBELET_NDOTS:
            ndots5.add(dict(ident, ndots=ndots, dns_policy=policy))
        if spec.get("dnsConfig"):
            dns_config.add(dict(ident, dns_config=spec["dnsConfig"], dns_policy=policy))
        images = [c.get("image") for c in (spec.get("containers") or []) + (spec.get("initContainers") or []) if isinstance(c, dict)]
        hits = sorted({i for i in images if looks_musl(i)})
        if hits:
            musl.count += 1
            for image in hits:
                seen = musl_images.setdefault(image, {"image": image, "pods": 0, "example_pod": "%s/%s" % (meta.get("namespace"), meta.get("name"))})
                seen["pods"] += 1
    musl.examples = [musl_images[image] for image in sorted(musl_images, key=lambda i: (-musl_images[i]["pods"], i))[:examples]]
    headless, by_name = set(), {}
    tolerate = _Problem(examples)
    for svc in services:
        meta = svc.get("metadata") or {}
        spec = svc.get("spec") or {}
        key = (meta.get("namespace"), meta.get("name"))
        by_name[key] = spec
        if spec.get("clusterIP") == "None":
            headless.add(key)
        if str((meta.get("annotations") or {}).get(TOLERATE_UNREADY, "")).lower() == "true" and not spec.get("publishNotReadyAddresses"):
            tolerate.add({"namespace": key[0], "name": key[1], "headless": spec.get("clusterIP") == "None"})
    sts_problem = _Problem(examples)
    for sts in statefulsets:
        meta = sts.get("metadata") or {}
        service = (sts.get("spec") or {}).get("serviceName")
        if not service:
            continue
        key = (meta.get("namespace"), service)
        if key in headless:
            continue
        reason = ("names Service %s/%s, which is not headless (clusterIP %s)" % (key[0], service, by_name[key].get("clusterIP"))
                  if key in by_name else "names no Service in namespace %s" % key[0])
        sts_problem.add({"namespace": meta.get("namespace"), "name": meta.get("name"), "service_name": service, "reason": reason})
    return {
        "available": True,
        "reason": None,
        "pods_scanned": len(pods),
        "truncated": truncated,
        "services_scanned": len(services),
        "statefulsets_scanned": len(statefulsets),
        "dns_policy": policies,
        "ndots": ndots_hist,
        "host_network_cluster_first": host_first.as_dict(),
        "ndots5": ndots5.as_dict(),
        "dns_config": dns_config.as_dict(),
        "musl_images": musl.as_dict(),
        "statefulsets_without_headless": sts_problem.as_dict(),
        "tolerate_unready": tolerate.as_dict(),
    }


def collect(read, namespace=None, max_pods=10000, page_size=500, examples=10):
    """Read pods, Services and StatefulSets (all namespaces, or ``namespace``) and summarize.
    An API server that does not answer or a 403 gives ``{"available": False, "reason"}``."""
    prefix = "/api/v1" + ("/namespaces/%s" % namespace if namespace else "")
    apps = "/apis/apps/v1" + ("/namespaces/%s" % namespace if namespace else "")
    try:
        pods, truncated = _paged(read, prefix + "/pods", min(page_size, max_pods) or 1, max_pods)
        services = _paged(read, prefix + "/services", page_size, None)[0]
        statefulsets = _paged(read, apps + "/statefulsets", page_size, None)[0]
    except ApiError as exc:
        return {"available": False, "reason": exc.reason()}
    result = summarize(pods, services, statefulsets, examples=examples, truncated=truncated)
    result["namespace"] = namespace
    result["max_pods"] = max_pods
    return result
