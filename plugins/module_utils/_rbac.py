# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Kubernetes RBAC evaluation, pure: which cluster-wide verbs a service account is granted by the
# ClusterRoleBindings that name it (directly, or through the groups every service account is in)
# and the ClusterRoles they reference. Input objects are API objects as plain dicts (rbac.authorization.k8s.io/v1).
#
# Only ClusterRoleBindings grant cluster-wide list/watch; a RoleBinding grants inside its own
# namespace, which is not enough for CoreDNS's kubernetes plugin (it lists all namespaces). Such
# bindings are reported separately so a user sees why a grant "does not count".

from __future__ import annotations

# What CoreDNS's kubernetes plugin lists and watches: (verb, resource, API group).
COREDNS_NEEDS = (
    ("list", "endpointslices", "discovery.k8s.io"),
    ("watch", "endpointslices", "discovery.k8s.io"),
    ("list", "services", ""),
    ("watch", "services", ""),
    ("list", "namespaces", ""),
    ("watch", "namespaces", ""),
    ("list", "pods", ""),
    ("watch", "pods", ""),
    ("list", "endpoints", ""),
    ("watch", "endpoints", ""),
)


def permission_key(verb, resource, group):
    """``"list endpointslices.discovery.k8s.io"``, ``"watch services"`` (core group has no suffix)."""
    return "%s %s" % (verb, resource + "." + group if group else resource)


def subject_matches(subject, namespace, name):
    """Whether a binding subject covers the service account ``namespace/name``."""
    if not isinstance(subject, dict):
        return False
    kind = subject.get("kind")
    if kind == "ServiceAccount":
        return subject.get("name") == name and subject.get("namespace", namespace) == namespace
    if kind == "Group":
        return subject.get("name") in ("system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated")
    if kind == "User":
        return subject.get("name") == "system:serviceaccount:%s:%s" % (namespace, name)
    return False


def _covers(values, wanted):
    values = values or []
    return "*" in values or wanted in values


def rule_allows(rule, verb, resource, group):
    """Whether one PolicyRule grants ``verb`` on every object of ``resource`` in API ``group``.
    Rules restricted by resourceNames never grant list or watch of the whole collection."""
    if not isinstance(rule, dict) or rule.get("resourceNames"):
        return False
    return (_covers(rule.get("verbs"), verb) and _covers(rule.get("apiGroups"), group)
            and _covers(rule.get("resources"), resource))


def bindings_for(namespace, name, cluster_role_bindings, role_bindings=()):
    """The ClusterRoleBindings and RoleBindings that name the service account, as
    ``[{"kind", "name", "namespace", "role_kind", "role"}]``."""
    found = []
    for kind, items in (("ClusterRoleBinding", cluster_role_bindings or []), ("RoleBinding", role_bindings or [])):
        for binding in items:
            if not isinstance(binding, dict):
                continue
            if not any(subject_matches(s, namespace, name) for s in binding.get("subjects") or []):
                continue
            meta = binding.get("metadata") or {}
            ref = binding.get("roleRef") or {}
            found.append({"kind": kind, "name": meta.get("name"), "namespace": meta.get("namespace"),
                          "role_kind": ref.get("kind"), "role": ref.get("name")})
    return found


def evaluate(namespace, name, cluster_role_bindings, cluster_roles, role_bindings=(), needs=COREDNS_NEEDS):
    """Cluster-wide permissions of service account ``namespace/name``.

    Returns ``{"service_account", "bindings", "cluster_roles", "missing_roles", "can",
    "namespaced_only"}``: ``can`` maps :func:`permission_key` of each need to a bool;
    ``namespaced_only`` lists the keys granted only by a RoleBinding (one namespace)."""
    roles = {}
    for role in cluster_roles or []:
        if isinstance(role, dict):
            roles[(role.get("metadata") or {}).get("name")] = role
    bindings = bindings_for(namespace, name, cluster_role_bindings, role_bindings)
    cluster_wide, namespaced, missing = [], [], []
    for binding in bindings:
        role = roles.get(binding["role"]) if binding["role_kind"] == "ClusterRole" else None
        if role is None:
            if binding["role_kind"] == "ClusterRole":
                missing.append(binding["role"])
            continue
        (cluster_wide if binding["kind"] == "ClusterRoleBinding" else namespaced).append(role)
    can, namespaced_only = {}, []
    for verb, resource, group in needs:
        key = permission_key(verb, resource, group)
        can[key] = any(rule_allows(r, verb, resource, group) for role in cluster_wide for r in role.get("rules") or [])
        if not can[key] and any(rule_allows(r, verb, resource, group) for role in namespaced for r in role.get("rules") or []):
            namespaced_only.append(key)
    return {
        "service_account": "%s/%s" % (namespace, name),
        "bindings": bindings,
        "cluster_roles": sorted({(r.get("metadata") or {}).get("name") for r in cluster_wide}),
        "missing_roles": sorted(set(missing)),
        "can": can,
        "namespaced_only": namespaced_only,
    }
