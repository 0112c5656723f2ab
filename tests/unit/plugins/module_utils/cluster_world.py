# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A read-only stand-in for the API server that serves captured API objects (fixtures/cluster) by
path, as the ``read(path, query)`` callable _cluster.collect and _workloads.collect take: lists
with equality label selectors and limit/continue pages, single objects, HTTP 403 and 404, and an
API server that does not answer. The real API server is exercised by tests/lab."""

from __future__ import annotations

import copy
import json
import pathlib

import yaml

from ansible_collections.clusterdns.doctor.plugins.module_utils._cluster import ApiError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "cluster"

PLURALS = {
    "deployments": "Deployment", "daemonsets": "DaemonSet", "statefulsets": "StatefulSet", "pods": "Pod",
    "services": "Service", "configmaps": "ConfigMap", "endpointslices": "EndpointSlice",
    "poddisruptionbudgets": "PodDisruptionBudget", "clusterrolebindings": "ClusterRoleBinding",
    "clusterroles": "ClusterRole", "rolebindings": "RoleBinding",
}


# What coredns/deployment's deploy.sh substitutes into coredns.yaml.sed (kubernetes/deploy.sh), and
# the Kubernetes addon's __PILLAR__ markers, with the lab's values.
SUBSTITUTIONS = {
    "CLUSTER_DOMAIN REVERSE_CIDRS": "cluster.local in-addr.arpa ip6.arpa", "UPSTREAMNAMESERVER": "/etc/resolv.conf",
    "}STUBDOMAINS": "}", "CLUSTER_DNS_IP": "10.96.0.10", "__PILLAR__DNS__DOMAIN__": "cluster.local",
    "__PILLAR__DNS__SERVER__": "10.96.0.10",
}


def load(*names, substitute=True):
    """API objects from fixture files: YAML streams, JSON objects or JSON lists (``items`` too)."""
    objects = []
    for name in names:
        text = (FIXTURES / name).read_text()
        if substitute:
            for marker, value in SUBSTITUTIONS.items():
                text = text.replace(marker, value)
        docs = [json.loads(text)] if name.endswith(".json") else list(yaml.safe_load_all(text))
        for doc in docs:
            if not doc:
                continue
            objects.extend(doc.get("items", []) if isinstance(doc, dict) and "items" in doc else (doc if isinstance(doc, list) else [doc]))
    return [o for o in objects if o.get("kind") and o["kind"] not in ("ServiceAccount",)]


class World:
    def __init__(self, objects, version="v1.34.4", forbidden=(), down=False):
        self.objects = [copy.deepcopy(o) for o in objects]
        self.version = version
        self.forbidden = set(forbidden)
        self.down = down
        self.requests = []

    def replace(self, kind, name, obj):
        self.objects = [o for o in self.objects if not (o["kind"] == kind and o["metadata"]["name"] == name)] + [obj]

    def find(self, kind, name):
        return next(o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name)

    def __call__(self, path, query):
        self.requests.append((path, dict(query)))
        if self.down:
            raise ApiError(None, "HTTPSConnectionPool(host='127.0.0.1', port=1): Max retries exceeded", path)
        if path == "/version":
            return {"major": "1", "gitVersion": self.version}
        parts = path.strip("/").split("/")
        parts = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = None
        if parts[0] == "namespaces" and len(parts) > 2:
            namespace, parts = parts[1], parts[2:]
        plural, name = parts[0], parts[1] if len(parts) > 1 else None
        if plural in self.forbidden:
            raise ApiError(403, '%s is forbidden: User "system:serviceaccount:default:reader" cannot list resource "%s"' % (plural, plural), path)
        kind = PLURALS[plural]
        items = [o for o in self.objects if o["kind"] == kind
                 and (namespace is None or o["metadata"].get("namespace", "default") == namespace)]
        if name is not None:
            for o in items:
                if o["metadata"]["name"] == name:
                    return copy.deepcopy(o)
            raise ApiError(404, '%s "%s" not found' % (plural, name), path)
        selector = query.get("labelSelector")
        if selector:
            want = dict(term.split("=", 1) for term in selector.split(","))
            items = [o for o in items if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())]
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items)
        page = items[start:start + limit]
        token = str(start + limit) if start + limit < len(items) else None
        return {"kind": kind + "List", "metadata": {"continue": token} if token else {}, "items": copy.deepcopy(page)}
