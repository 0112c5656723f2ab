# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# The finding engine: pure rule functions over facts. Stdlib only.
#
# Input  : ``nodes`` maps an inventory host to its ``ansible_facts`` (only the ``clusterdns_*`` keys
#          are read); ``cluster`` is the cluster facts dict or None when no cluster was reachable.
# Output : ``{"findings": [...], "checks": [...]}``. A check is one (rule id, host or cluster)
#          evaluation with status pass | fail | skip; a finding is a failed check's details.
#
# Writing a rule (in a _rules_<topic>.py module listed in RULE_MODULES):
#
#     @node_rule("CT001", needs=("clusterdns_conntrack",))
#     def conntrack_full(host, facts, ctx):
#         ct = facts["clusterdns_conntrack"]
#         if ct["usage_ratio"] < ctx.option("conntrack_usage_warning"):
#             return []
#         return [hit({"count": ct["count"], "max": ct["max"]}, detail="...", severity="error")]
#
# ``needs`` names fact keys that must be present and not ``available: false``; otherwise the
# check is skipped with the reason. A rule raises Skip("reason") for other missing data.

from __future__ import annotations

import importlib

from ansible_collections.clusterdns.doctor.plugins.module_utils._catalog import CATALOG, SEVERITIES, SEVERITY_RANK
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput

SCHEMA_VERSION = "1.0"

# Rule modules, imported in this order. Each registers its rules with the decorators below.
RULE_MODULES = (
    "_rules_node",
    "_rules_resolver",
    "_rules_netfilter",
    "_rules_dnsmasq",
    "_rules_cluster",
    "_rules_probe",
    "_rules_cloud",
)

DEFAULT_OPTIONS = {
    # CT001: conntrack usage ratio at which the table is reported (warning) and at which it is an error.
    "conntrack_usage_warning": 0.80,
    "conntrack_usage_error": 0.95,
    # CT002: insert_failed + drop counts below this are noise (counters are cumulative since boot).
    "conntrack_insert_failed_min": 1,
    # NODE001: UDP receive errors below this are noise.
    "udp_errors_min": 1,
    # CDNS001: restarts of a Ready CoreDNS pod below this are not reported.
    "coredns_restarts_min": 1,
    # CDNS010: SERVFAIL/REFUSED answers count from this many and this share of all answers on
    # (upstream i/o timeouts always count).
    "cdns010_failures_min": 10,
    "cdns010_failure_ratio": 0.01,
    # CDNS009: CoreDNS CPU use / throttling shares, max_concurrent rejects, and queries per second a
    # core and a replica serve (the share of that capacity at which it is reported).
    "cdns009_cpu_ratio": 0.9,
    "cdns009_throttled_ratio": 0.25,
    "cdns009_rejects_min": 1,
    "cdns009_qps_per_core": 17000,
    "cdns009_qps_per_replica": 33000,
    "cdns009_qps_ratio": 0.8,
    # Names of the findings whose rules should not run at all.
    "skip": [],
}


def validate_options(options):
    """Check rule options before anything runs: known names only, numbers where numbers are
    expected (shares between 0 and 1), ``skip`` a list of catalog ids. Raises InvalidInput naming
    the option and the valid choices; returns the options merged over the defaults."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidInput("finding options must be a mapping of option name to value, got %s" % type(options).__name__)
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise InvalidInput("unknown finding option(s) %s; valid options: %s" % (", ".join(unknown), ", ".join(sorted(DEFAULT_OPTIONS))))
    merged = dict(DEFAULT_OPTIONS)
    merged.update(options)
    for name, value in options.items():
        if name == "skip":
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise InvalidInput("finding option skip must be a list of finding ids, got %r" % (value,))
            bad = sorted(v for v in value if v not in CATALOG)
            if bad:
                raise InvalidInput("finding option skip names unknown finding id(s) %s; valid ids: %s" % (", ".join(bad), ", ".join(sorted(CATALOG))))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput("finding option %s must be a number (default %s), got %r" % (name, DEFAULT_OPTIONS[name], value))
        if value < 0:
            raise InvalidInput("finding option %s must not be negative, got %s" % (name, value))
        if (name.endswith("_ratio") or name.startswith("conntrack_usage_")) and value > 1:
            raise InvalidInput("finding option %s is a share between 0 and 1 (default %s), got %s" % (name, DEFAULT_OPTIONS[name], value))
    if merged["conntrack_usage_warning"] > merged["conntrack_usage_error"]:
        raise InvalidInput("finding option conntrack_usage_warning (%s) must not be above conntrack_usage_error (%s)"
                           % (merged["conntrack_usage_warning"], merged["conntrack_usage_error"]))
    return merged


class Skip(Exception):
    """Raised by a rule when the facts it needs are not there; the message is the reason."""


class _Rule:
    def __init__(self, finding_id, scope, func, needs):
        if finding_id not in CATALOG:
            raise KeyError("rule %s has no catalog entry" % finding_id)
        self.id = finding_id
        self.scope = scope
        self.func = func
        self.needs = tuple(needs)


_RULES = []


def node_rule(finding_id, needs=()):
    """Register ``func(host, facts, ctx) -> list`` as the node rule of ``finding_id``."""

    def register(func):
        _RULES.append(_Rule(finding_id, "node", func, needs))
        return func

    return register


def cluster_rule(finding_id, needs=()):
    """Register ``func(cluster, ctx) -> list`` as the cluster rule of ``finding_id``."""

    def register(func):
        _RULES.append(_Rule(finding_id, "cluster", func, needs))
        return func

    return register


def hit(evidence, detail=None, severity=None, obj=None, fix_variables=None):
    """What a rule returns for each problem it found: evidence (a dict of the facts that show it),
    a one-sentence ``detail`` naming the specific object, an optional severity override, the
    Kubernetes object (``namespace/kind/name``) for cluster findings and remediation variables."""
    if severity is not None and severity not in SEVERITIES:
        raise ValueError("severity %r is not one of %s" % (severity, ", ".join(SEVERITIES)))
    return {"evidence": evidence, "detail": detail, "severity": severity, "object": obj, "fix_variables": fix_variables or {}}


class Context:
    def __init__(self, nodes, cluster, options):
        self.nodes = nodes
        self.cluster = cluster
        self.options = validate_options(options)

    def option(self, name):
        return self.options[name]

    def node_facts(self, key):
        """``{host: facts[key]}`` over all nodes that have ``key`` available (for cross-node rules)."""
        return {host: facts[key] for host, facts in self.nodes.items() if _available(facts.get(key))}


def _available(value):
    return isinstance(value, dict) and value.get("available", True) is not False


def _missing_reason(facts, needs):
    for key in needs:
        value = facts.get(key) if isinstance(facts, dict) else None
        if value is None:
            return "%s not gathered" % key
        if not _available(value):
            return "%s unavailable: %s" % (key, value.get("reason") or "no reason given")
    return None


def _load_rules():
    for name in RULE_MODULES:
        importlib.import_module("ansible_collections.clusterdns.doctor.plugins.module_utils." + name)
    return list(_RULES)


def remediate_command(tags, host=None):
    if not tags:
        return None
    command = "ansible-playbook clusterdns.doctor.remediate --tags %s" % ",".join(tags)
    if host:
        command += " --limit %s" % host
    return command


def _finding(rule, result, host=None):
    entry = CATALOG[rule.id]
    fix = {
        "tags": list(entry["fix"]["tags"]),
        "roles": list(entry["fix"]["roles"]),
        "variables": dict(entry["fix"]["variables"], **result.get("fix_variables", {})),
        "command": remediate_command(entry["fix"]["tags"], host if rule.scope == "node" else None),
    }
    return {
        "id": rule.id,
        "severity": result.get("severity") or entry["severity"],
        "scope": rule.scope,
        "host": host,
        "object": result.get("object"),
        "title": entry["title"],
        "detail": result.get("detail") or entry["title"],
        "evidence": result["evidence"],
        "cause": entry["cause"],
        "fix": fix,
        "references": list(entry["references"]),
    }


def _run(rule, args, host, checks, findings):
    check = {"id": rule.id, "scope": rule.scope, "host": host, "status": "pass", "reason": None}
    try:
        results = rule.func(*args) or []
    except Skip as exc:
        check.update(status="skip", reason=str(exc))
        results = []
    if results:
        check["status"] = "fail"
        check["reason"] = "; ".join(r.get("detail") or CATALOG[rule.id]["title"] for r in results)
        findings.extend(_finding(rule, r, host) for r in results)
    checks.append(check)


def evaluate(nodes, cluster=None, options=None):
    """Evaluate every rule. See the module comment for the input and output shapes."""
    if nodes is None:
        nodes = {}
    if not isinstance(nodes, dict):
        raise InvalidInput("dns_findings expects a mapping of host name to ansible_facts, got %s" % type(nodes).__name__)
    for host, facts in nodes.items():
        if not isinstance(facts, dict):
            raise InvalidInput("facts of host %r must be a mapping (its ansible_facts), got %s" % (host, type(facts).__name__))
    if cluster is not None and not isinstance(cluster, dict):
        raise InvalidInput("cluster facts must be a mapping or None, got %s" % type(cluster).__name__)
    ctx = Context(nodes, cluster, options)
    skip = set(ctx.option("skip") or [])
    findings, checks = [], []
    for rule in _load_rules():
        if rule.id in skip:
            continue
        if rule.scope == "node":
            for host in sorted(nodes):
                facts = nodes[host]
                reason = _missing_reason(facts, rule.needs)
                if reason:
                    checks.append({"id": rule.id, "scope": "node", "host": host, "status": "skip", "reason": reason})
                    continue
                _run(rule, (host, facts, ctx), host, checks, findings)
        else:
            if cluster is None or not _available(cluster):
                reason = "no cluster reachable" if cluster is None else "cluster unavailable: %s" % (cluster.get("reason") or "no reason given")
                checks.append({"id": rule.id, "scope": "cluster", "host": None, "status": "skip", "reason": reason})
                continue
            reason = _missing_reason(cluster, rule.needs)
            if reason:
                checks.append({"id": rule.id, "scope": "cluster", "host": None, "status": "skip", "reason": reason})
                continue
            _run(rule, (cluster, ctx), None, checks, findings)
    findings.sort(key=lambda f: (-SEVERITY_RANK[f["severity"]], f["id"], f["host"] or "", f["object"] or ""))
    checks.sort(key=lambda c: (c["id"], c["host"] or ""))
    return {"findings": findings, "checks": checks}


def at_or_above(findings, threshold):
    """Findings whose severity is at or above ``threshold`` (none disables)."""
    if threshold in (None, "none"):
        return []
    if threshold not in SEVERITY_RANK:
        raise InvalidInput("fail threshold %r is not one of none, %s" % (threshold, ", ".join(SEVERITIES)))
    floor = SEVERITY_RANK[threshold]
    return [f for f in findings if SEVERITY_RANK[f["severity"]] >= floor]
