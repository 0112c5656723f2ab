# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Cluster rules: CDNS001-CDNS011, SVC001, SVC002, WL001-WL004 and NLD003.
# Input: the ``cluster`` result of coredns_info, with workload_dns_info's ``workloads`` result
# under the key ``workloads``; optionally ``metrics`` (CDNS009, what coredns_info returns with
# ``metrics: true``) and ``logs`` (CDNS010), which are read defensively (a missing key means "not
# gathered": the rule is skipped with that reason).

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import known_plugin, removed_option, version_string
from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, cluster_rule, hit
from ansible_collections.clusterdns.doctor.plugins.module_utils._rbac import permission_key

ENDPOINTSLICE_VERSION = (1, 8, 4)
MIN_VERSION = (1, 7, 0)
EXAMPLES = 10


def _dig(data, *path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _option(ctx, name, default):
    return ctx.options.get(name, default)


def _deployment(cluster):
    dep = _dig(cluster, "coredns", "deployment")
    if not dep:
        raise Skip(_dig(cluster, "coredns", "reason") or "no CoreDNS Deployment found")
    return dep


def _obj(dep):
    return "%s/Deployment/%s" % (dep.get("namespace"), dep.get("name"))


def _version(cluster):
    dep = _deployment(cluster)
    version = dep.get("version")
    if not version:
        raise Skip("CoreDNS version unknown: image %r has no version tag" % dep.get("image"))
    return tuple(version)


def _available_section(cluster, key, what):
    section = cluster.get(key)
    if not isinstance(section, dict):
        raise Skip("%s not gathered" % what)
    if section.get("available") is False:
        raise Skip("%s unavailable: %s" % (what, section.get("reason")))
    return section


def _parsed_corefile(cluster):
    corefile = _available_section(cluster, "corefile", "Corefile")
    if corefile.get("parse_error") or corefile.get("parsed") is None:
        raise Skip("the Corefile did not parse (see CDNS011)")
    return corefile["parsed"]


def _plugins(blocks):
    """(server block, plugin) pairs over the top level of every server block."""
    for block in _servers(blocks):
        for plugin in block.get("plugins") or []:
            yield block, plugin


def _servers(blocks):
    """Server blocks only (snippets are templates, not servers)."""
    return [b for b in blocks or [] if isinstance(b, dict) and b.get("kind", "server") == "server"]


def _zones(block):
    return [z.get("zone") if isinstance(z, dict) else z for z in block.get("zones") or []] or block.get("keys") or []


def _workloads(cluster):
    return _available_section(cluster, "workloads", "workload DNS facts (workload_dns_info)")


def _problem(workloads, key):
    section = workloads.get(key) or {}
    return int(section.get("count") or 0), list(section.get("examples") or [])[:EXAMPLES]


# --- CoreDNS --------------------------------------------------------------------------------------

@cluster_rule("CDNS001", needs=("coredns",))
def coredns_pods_unhealthy(cluster, ctx):
    coredns = cluster["coredns"]
    pods = coredns.get("pods") or []
    dep = coredns.get("deployment") or {}
    results = []
    if not pods:
        if dep and dep.get("replicas", 1) > 0:
            return [hit({"deployment": dep.get("name"), "replicas": dep.get("replicas"), "pods": []},
                        detail="Deployment %s wants %d replicas but no CoreDNS pod exists" % (dep.get("name"), dep.get("replicas")),
                        obj=_obj(dep))]
        raise Skip(coredns.get("reason") or "no CoreDNS pods")
    restarts_min = _option(ctx, "coredns_restarts_min", 1)
    for pod in pods:
        evidence = {key: pod.get(key) for key in ("name", "node", "phase", "ready", "restarts", "waiting_reason", "last_termination")}
        last = pod.get("last_termination") or {}
        why = ""
        if last.get("reason") or last.get("exit_code") is not None:
            why = "; last termination: %s (exit code %s)%s" % (
                last.get("reason"), last.get("exit_code"),
                ": " + last["message"].strip().splitlines()[-1][:300] if last.get("message") else "")
        obj = "%s/Pod/%s" % (pod.get("namespace") or dep.get("namespace"), pod.get("name"))
        if pod.get("phase") != "Running" or not pod.get("ready") or pod.get("waiting_reason"):
            state = pod.get("waiting_reason") or ("not Ready" if pod.get("phase") == "Running" else "phase %s" % pod.get("phase"))
            results.append(hit(evidence, obj=obj, detail="CoreDNS pod %s on %s is %s, %d restarts%s"
                               % (pod.get("name"), pod.get("node"), state, pod.get("restarts") or 0, why)))
        elif (pod.get("restarts") or 0) >= restarts_min:
            # Restarts of a pod that is Ready now are history (node reboots count too): info, except
            # an out-of-memory kill, which comes back under the same load.
            severity = "warning" if last.get("reason") == "OOMKilled" else "info"
            results.append(hit(evidence, obj=obj, severity=severity, detail="CoreDNS pod %s on %s is Ready but restarted %d times%s"
                               % (pod.get("name"), pod.get("node"), pod["restarts"], why)))
    return results


@cluster_rule("CDNS002", needs=("coredns",))
def coredns_single_point(cluster, ctx):
    dep = _deployment(cluster)
    spread = dep.get("node_spread") or {}
    evidence = {"replicas": dep.get("replicas"), "ready_replicas": dep.get("ready_replicas"), "node_spread": spread,
                "anti_affinity": dep.get("anti_affinity"), "topology_spread": dep.get("topology_spread"),
                "autoscaler": dep.get("autoscaler")}
    if (dep.get("replicas") or 0) < 2:
        return [hit(evidence, obj=_obj(dep), detail="Deployment %s runs %s CoreDNS replica(s): one pod or node failure stops cluster DNS"
                    % (dep.get("name"), dep.get("replicas")))]
    nodes = [n for n in spread if n != "(unscheduled)"]
    if len(nodes) == 1 and sum(spread.values()) >= 2:
        return [hit(evidence, obj=_obj(dep), detail="all %d CoreDNS pods run on node %s%s" % (
            sum(spread.values()), nodes[0], "" if dep.get("anti_affinity") or dep.get("topology_spread")
            else " (no podAntiAffinity or topologySpreadConstraints)"))]
    return []


@cluster_rule("CDNS003", needs=("coredns",))
def coredns_too_old(cluster, ctx):
    version = _version(cluster)
    dep = _deployment(cluster)
    if version >= MIN_VERSION:
        return []
    return [hit({"image": dep.get("image"), "version": list(version)}, obj=_obj(dep),
                detail="CoreDNS %s (image %s) is older than 1.7.0" % (version_string(version), dep.get("image")))]


@cluster_rule("CDNS004", needs=("coredns",))
def tolerate_unready(cluster, ctx):
    version = _version(cluster)
    if version < ENDPOINTSLICE_VERSION:
        raise Skip("CoreDNS %s still reads Endpoints and honours the annotation" % version_string(version))
    count, examples = _problem(_workloads(cluster), "tolerate_unready")
    if not count:
        return []
    return [hit({"version": list(version), "services": count, "examples": examples},
                detail="%d Service(s) rely on service.alpha.kubernetes.io/tolerate-unready-endpoints, which CoreDNS %s ignores "
                "(not-ready addresses are not published): %s" % (count, version_string(version), ", ".join(
                    "%s/%s" % (e.get("namespace"), e.get("name")) for e in examples)))]


@cluster_rule("CDNS005", needs=("coredns", "rbac"))
def coredns_rbac(cluster, ctx):
    rbac = cluster["rbac"]
    can = rbac.get("can") or {}
    dep = _deployment(cluster)
    version = tuple(dep.get("version") or ())
    needed = []
    if not version or version >= ENDPOINTSLICE_VERSION:
        needed += [("list", "endpointslices", "discovery.k8s.io"), ("watch", "endpointslices", "discovery.k8s.io")]
    else:
        needed += [("list", "endpoints", ""), ("watch", "endpoints", "")]
    needed += [(v, r, "") for r in ("services", "namespaces") for v in ("list", "watch")]
    try:
        blocks = _parsed_corefile(cluster)
    except Skip:
        blocks = []
    for _block, plugin in _plugins(blocks):
        if plugin.get("name") == "kubernetes":
            for sub in plugin.get("block") or []:
                if sub.get("name") == "pods" and "verified" in (sub.get("args") or []):
                    needed += [("list", "pods", ""), ("watch", "pods", "")]
    missing = []
    for verb, resource, group in needed:
        key = permission_key(verb, resource, group)
        if not can.get(key) and key not in missing:
            missing.append(key)
    if not missing:
        return []
    return [hit({"service_account": rbac.get("service_account"), "missing": missing, "cluster_roles": rbac.get("cluster_roles"),
                 "bindings": rbac.get("bindings"), "namespaced_only": rbac.get("namespaced_only"),
                 "version": list(version) if version else None},
                obj="ClusterRole/%s" % next((r for r in rbac.get("cluster_roles") or [] if "coredns" in r),
                                            (rbac.get("cluster_roles") or ["(none bound)"])[0]),
                detail="service account %s may not %s cluster-wide (ClusterRoles bound: %s)" % (
                    rbac.get("service_account"), ", ".join(missing), ", ".join(rbac.get("cluster_roles") or []) or "none"))]


@cluster_rule("CDNS006", needs=("corefile",))
def autopath(cluster, ctx):
    results = []
    for block, plugin in _plugins(_parsed_corefile(cluster)):
        if plugin.get("name") == "autopath":
            results.append(hit({"zones": _zones(block), "args": plugin.get("args"), "lineno": plugin.get("lineno"),
                                "configmap": cluster.get("configmap_name")},
                               detail="autopath %s in server block %s (Corefile line %s)" % (
                                   " ".join(plugin.get("args") or []), " ".join(_zones(block)), plugin.get("lineno"))))
    return results


@cluster_rule("CDNS007", needs=("corefile",))
def not_observable(cluster, ctx):
    results = []
    for block in _servers(_parsed_corefile(cluster)):
        names = {p.get("name") for p in block.get("plugins") or []}
        if not names & {"log", "errors"}:
            results.append(hit({"zones": _zones(block), "lineno": block.get("lineno"), "plugins": sorted(n for n in names if n)},
                               detail="server block %s (Corefile line %s) has neither errors nor log"
                               % (" ".join(_zones(block)), block.get("lineno"))))
    return results


def _forward_options(plugin):
    return {sub.get("name") for sub in plugin.get("block") or [] if isinstance(sub, dict)}


@cluster_rule("CDNS008", needs=("corefile",))
def tcp_upstream(cluster, ctx):
    blocks = _parsed_corefile(cluster)
    nodelocal = cluster.get("nodelocaldns") or {}
    nl_force_tcp = []
    for block, plugin in _plugins(_dig(nodelocal, "corefile", "parsed") or []):
        if plugin.get("name") == "forward" and "force_tcp" in _forward_options(plugin):
            nl_force_tcp.append({"zones": _zones(block), "to": (plugin.get("args") or [])[1:], "lineno": plugin.get("lineno")})
    results = []
    for block, plugin in _plugins(blocks):
        if plugin.get("name") != "forward":
            continue
        options = _forward_options(plugin)
        evidence = {"zones": _zones(block), "forward": plugin.get("args"), "options": sorted(o for o in options if o),
                    "lineno": plugin.get("lineno")}
        if "force_tcp" in options:
            results.append(hit(evidence, severity="warning",
                               detail="CoreDNS forward %s (Corefile line %s) uses force_tcp: an upstream that answers only UDP times out"
                               % (" ".join(plugin.get("args") or []), plugin.get("lineno"))))
        elif nl_force_tcp and "prefer_udp" not in options and any(z in ("", ".") or z.startswith(".:") for z in [_zones(block)[0] if _zones(block) else "."]):
            evidence["nodelocaldns_force_tcp"] = nl_force_tcp
            results.append(hit(evidence, severity="warning",
                               detail="NodeLocal DNSCache (%s) sends CoreDNS its queries over TCP (force_tcp) and CoreDNS forward %s "
                               "(Corefile line %s) keeps TCP to the upstream: add prefer_udp unless the upstream answers TCP"
                               % (nodelocal.get("daemonset"), " ".join(plugin.get("args") or []), plugin.get("lineno"))))
    return results


# CDNS009 thresholds (finding options): CPU use against the container's CPU limit, CFS throttling
# (only when the facts carry it), queries CoreDNS refused because forward's max_concurrent was
# reached, and queries per second against what one replica can serve. The QPS capacity figures
# are coredns/deployment's kubernetes/Scaling_CoreDNS.md: one CoreDNS on 2 vCPUs served ~33,700
# QPS with both cores pegged (~1900m), so ~17,000 QPS per core of CPU limit.
CDNS009_DEFAULTS = {"cdns009_cpu_ratio": 0.9, "cdns009_throttled_ratio": 0.25, "cdns009_rejects_min": 1,
                    "cdns009_qps_per_core": 17000, "cdns009_qps_per_replica": 33000, "cdns009_qps_ratio": 0.8}


def _max_concurrent(cluster):
    """``[{"zones", "forward", "max_concurrent", "lineno"}]`` of the Corefile's forward plugins."""
    try:
        blocks = _parsed_corefile(cluster)
    except Skip:
        return []
    out = []
    for block, plugin in _plugins(blocks):
        if plugin.get("name") != "forward":
            continue
        limit = next((sub.get("args") for sub in plugin.get("block") or [] if isinstance(sub, dict) and sub.get("name") == "max_concurrent"), None)
        out.append({"zones": _zones(block), "forward": plugin.get("args"), "max_concurrent": (limit or [None])[0], "lineno": plugin.get("lineno")})
    return out


def _pod_capacity(name, m, ctx, forwards):
    """(evidence, [(severity, reason)]) for one CoreDNS pod's metrics."""
    opt = {k: _option(ctx, k, v) for k, v in CDNS009_DEFAULTS.items()}
    rates = m.get("rates") or {}
    usage, limit = m.get("cpu_usage_cores"), m.get("cpu_limit_cores")
    throttled, qps = m.get("throttled_ratio"), m.get("qps")
    rejects = rates.get("max_concurrent_rejects")
    responses = rates.get("responses") or {}
    capacity = opt["cdns009_qps_per_core"] * limit if limit else opt["cdns009_qps_per_replica"]
    evidence = {"pod": name, "node": m.get("node"), "interval_seconds": rates.get("interval_seconds"), "qps": qps,
                "qps_capacity": capacity, "cpu_usage_cores": usage, "cpu_limit_cores": limit,
                "cpu_request_cores": m.get("cpu_request_cores"), "throttled_ratio": throttled,
                "max_concurrent_rejects": rejects, "refused": responses.get("REFUSED", 0), "servfail": responses.get("SERVFAIL", 0),
                "latency_avg_ms": rates.get("latency_avg_ms"), "forward_max_concurrent": forwards}
    reasons = []
    if usage is not None and limit and usage >= opt["cdns009_cpu_ratio"] * limit:
        reasons.append(("warning", "CPU %.3f cores of its %.3f limit" % (usage, limit)))
    if throttled is not None and throttled >= opt["cdns009_throttled_ratio"]:
        reasons.append(("warning", "throttled in %d %% of CFS periods" % round(100 * throttled)))
    if rejects is not None and rejects >= opt["cdns009_rejects_min"]:
        caps = ", ".join("%s (Corefile line %s)" % (f["max_concurrent"], f["lineno"]) for f in forwards if f.get("max_concurrent"))
        reasons.append(("error", "refused %d queries in %.1f s because forward's max_concurrent%s was reached (queries waiting on the "
                        "upstream)" % (rejects, rates.get("interval_seconds") or 0, " " + caps if caps else "")))
    if qps is not None and qps >= opt["cdns009_qps_ratio"] * capacity:
        reasons.append(("warning", "%.0f queries/s, %d %% of the ~%.0f one replica%s serves" % (
            qps, round(100 * qps / capacity), capacity, " with a %.3f-core limit" % limit if limit else " on 2 cores")))
    return evidence, reasons


@cluster_rule("CDNS009", needs=("coredns",))
def coredns_capacity(cluster, ctx):
    metrics = cluster.get("metrics")
    if not isinstance(metrics, dict):
        raise Skip("CoreDNS metrics not gathered (coredns_info metrics=true; diagnose.yml: clusterdns_metrics)")
    if metrics.get("available") is False:
        raise Skip("CoreDNS metrics unavailable: %s" % metrics.get("reason"))
    pods = metrics.get("pods") or {}
    measured = {n: m for n, m in pods.items() if isinstance(m, dict) and (
        (m.get("rates") or {}).get("restarted") is False or m.get("cpu_usage_cores") is not None or m.get("throttled_ratio") is not None)}
    if not measured:
        raise Skip("no CoreDNS pod was measured over an interval (one read only, or every pod restarted between the reads)")
    forwards = _max_concurrent(cluster)
    results = []
    for name, m in sorted(measured.items()):
        evidence, reasons = _pod_capacity(name, m, ctx, forwards)
        if reasons:
            severity = "error" if any(s == "error" for s, _r in reasons) else "warning"
            results.append(hit(evidence, severity=severity, obj="%s/Pod/%s" % (_dig(cluster, "coredns", "deployment", "namespace") or "kube-system", name),
                               detail="CoreDNS pod %s: %s" % (name, "; ".join(r for _s, r in reasons))))
    return results


def _merge_logs(results):
    """One coredns_log_info result per CoreDNS pod (diagnose reads each pod's log) as one."""
    merged = {"upstream_errors": {}, "by_rcode": {}, "error_classes": {}, "tickets": [], "instances": []}
    for result in results:
        if not isinstance(result, dict):
            continue
        merged["instances"].append(result.get("instance"))
        upstream = result.get("upstream_errors") or {}
        if isinstance(upstream, dict):
            for address, entry in upstream.items():
                slot = merged["upstream_errors"].setdefault(address, {"count": 0, "classes": {}})
                slot["count"] += int((entry or {}).get("count") or 0)
                for name, count in ((entry or {}).get("classes") or {}).items():
                    slot["classes"][name] = slot["classes"].get(name, 0) + int(count)
        for rcode, count in (result.get("by_rcode") or result.get("rcodes") or {}).items():
            merged["by_rcode"][rcode] = merged["by_rcode"].get(rcode, 0) + int(count)
        for name, count in (result.get("error_classes") or {}).items():
            merged["error_classes"][name] = merged["error_classes"].get(name, 0) + int(count)
        merged["tickets"].extend(result.get("tickets") or [])
    return merged


@cluster_rule("CDNS010", needs=("coredns",))
def upstream_failures(cluster, ctx):
    logs = cluster.get("logs")
    if isinstance(logs, list):
        logs = _merge_logs(logs)
    if not isinstance(logs, dict):
        raise Skip("CoreDNS logs not gathered (pass coredns_log_info's result as cluster.logs)")
    upstream = logs.get("upstream_errors") or 0
    # coredns_log_info: {"ADDRESS:PORT": {"count", "classes"}}; a plain count is accepted too.
    timeouts = sum(int((v or {}).get("count") or 0) for v in upstream.values()) if isinstance(upstream, dict) else int(upstream)
    rcodes = logs.get("by_rcode") or logs.get("rcodes") or {}
    bad = {k: int(v) for k, v in rcodes.items() if k in ("SERVFAIL", "REFUSED") and v}
    # Queries over forward's max_concurrent are refused by CoreDNS itself, not by an upstream (the
    # client gets REFUSED; CoreDNS 1.12.4 logs them with rcode "-" and an errors-plugin line
    # "concurrent queries exceeded maximum N"): CDNS009's cause, never counted or cited here.
    limited = int((logs.get("error_classes") or {}).get("max_concurrent") or 0)
    if limited and bad.get("REFUSED"):
        bad["REFUSED"] = max(0, bad["REFUSED"] - limited)
        bad = {k: v for k, v in bad.items() if v}
    answered = sum(int(v) for v in rcodes.values()) or 0
    # A few SERVFAIL/REFUSED answers are normal (clients asking for zones nobody serves); they are a
    # finding from cdns010_failures_min answers and cdns010_failure_ratio of all answers on.
    failures = sum(bad.values())
    if failures < _option(ctx, "cdns010_failures_min", 10) or (answered and failures < _option(ctx, "cdns010_failure_ratio", 0.01) * answered):
        bad = {}
    if not timeouts and not bad:
        return []
    tickets = [t for t in logs.get("tickets") or [] if not (isinstance(t, dict) and t.get("reason") == "max_concurrent")][:EXAMPLES]
    evidence = {"upstream_errors": timeouts, "upstreams": upstream if isinstance(upstream, dict) else None, "rcodes": bad, "tickets": tickets}
    detail = "CoreDNS logged %d upstream errors%s" % (timeouts, "".join(", %d %s" % (n, k) for k, n in sorted(bad.items())))
    if limited:
        evidence["max_concurrent_refused"] = limited
        detail += "; %d more queries were refused by CoreDNS's own forward max_concurrent limit, not by an upstream (see CDNS009)" % limited
    return [hit(evidence, detail=detail)]


@cluster_rule("CDNS011", needs=("corefile",))
def corefile_invalid(cluster, ctx):
    corefile = cluster["corefile"]
    source = corefile.get("source") or "Corefile"
    error = corefile.get("parse_error")
    if error:
        return [hit(dict(error, source=source), detail="%s does not parse at line %s: %s%s" % (
            source, error.get("lineno"), error.get("message"), " (%r)" % error["line"] if error.get("line") else ""))]
    dep = _dig(cluster, "coredns", "deployment") or {}
    version = dep.get("version")
    results = []
    for block, plugin in _plugins(corefile.get("parsed") or []):
        ok, reason = known_plugin(plugin.get("name"), version)
        if not ok:
            results.append(hit({"plugin": plugin.get("name"), "lineno": plugin.get("lineno"), "zones": _zones(block),
                                "version": version, "source": source},
                               detail="%s line %s: %s; CoreDNS fails with \"Unknown directive '%s'\"" % (
                                   source, plugin.get("lineno"), reason, plugin.get("name"))))
            continue
        for sub in plugin.get("block") or []:
            reason = removed_option(plugin.get("name"), sub.get("name"), version) if isinstance(sub, dict) else None
            if reason:
                results.append(hit({"plugin": plugin.get("name"), "option": sub.get("name"), "lineno": sub.get("lineno"),
                                    "zones": _zones(block), "version": version, "source": source},
                                   detail="%s line %s: %s; CoreDNS fails with \"unknown property '%s'\"" % (
                                       source, sub.get("lineno"), reason, sub.get("name"))))
    nl_error = _dig(cluster, "nodelocaldns", "corefile", "parse_error")
    if nl_error:
        results.append(hit(dict(nl_error, source=_dig(cluster, "nodelocaldns", "corefile", "source")),
                           detail="NodeLocal DNSCache Corefile does not parse at line %s: %s" % (nl_error.get("lineno"), nl_error.get("message"))))
    return results


# --- kube-dns Service -----------------------------------------------------------------------------

def _obj_svc(svc):
    return "%s/Service/%s" % (svc.get("namespace"), svc.get("name"))


@cluster_rule("SVC001", needs=("kube_dns",))
def session_affinity(cluster, ctx):
    svc = cluster["kube_dns"]
    if svc.get("session_affinity") != "ClientIP":
        return []
    return [hit({"session_affinity": "ClientIP", "cluster_ip": svc.get("cluster_ip")}, obj=_obj_svc(svc),
                detail="Service %s/%s has sessionAffinity ClientIP" % (svc.get("namespace"), svc.get("name")))]


@cluster_rule("SVC002", needs=("kube_dns",))
def no_endpoints(cluster, ctx):
    svc = cluster["kube_dns"]
    eps = svc.get("endpoints") or {}
    ready = eps.get("ready") or []
    pod_ips = svc.get("pod_ips") or []
    evidence = {"cluster_ip": svc.get("cluster_ip"), "selector": svc.get("selector"), "ready": ready,
                "not_ready": eps.get("not_ready") or [], "coredns_pod_ips": pod_ips, "endpoint_slices": svc.get("endpoint_slices")}
    if not ready:
        return [hit(evidence, obj=_obj_svc(svc), detail="Service %s/%s (%s) has no ready endpoint%s" % (
            svc.get("namespace"), svc.get("name"), svc.get("cluster_ip"),
            ", %d not ready" % len(eps["not_ready"]) if eps.get("not_ready") else
            ("; its selector %s matches no CoreDNS pod" % svc.get("selector") if pod_ips else "")))]
    strangers = sorted(set(ready) - set(pod_ips)) if pod_ips else []
    if strangers:
        return [hit(dict(evidence, not_coredns=strangers), obj=_obj_svc(svc), severity="error",
                    detail="Service %s/%s sends queries to %s, which are not CoreDNS pod addresses (%s)" % (
                        svc.get("namespace"), svc.get("name"), ", ".join(strangers), ", ".join(pod_ips)))]
    return []


# --- workloads ------------------------------------------------------------------------------------

def _names(examples):
    return ", ".join("%s/%s" % (e.get("namespace"), e.get("name")) for e in examples)


@cluster_rule("WL001", needs=("workloads",))
def host_network_cluster_first(cluster, ctx):
    count, examples = _problem(_workloads(cluster), "host_network_cluster_first")
    if not count:
        return []
    system_only = all(e.get("namespace") == "kube-system" for e in examples)
    return [hit({"pods": count, "examples": examples}, severity="info" if system_only else None,
                detail="%d hostNetwork pod(s) with dnsPolicy ClusterFirst use the node's resolver, not cluster DNS: %s"
                % (count, _names(examples)))]


@cluster_rule("WL002", needs=("workloads",))
def musl_images(cluster, ctx):
    count, examples = _problem(_workloads(cluster), "musl_images")
    if not count:
        return []
    return [hit({"pods": count, "examples": examples},
                detail="%d pod(s) run images that look musl-based (Alpine): %s" % (count, ", ".join(
                    e.get("image") or "" for e in examples)))]


@cluster_rule("WL003", needs=("workloads",))
def statefulset_service(cluster, ctx):
    count, examples = _problem(_workloads(cluster), "statefulsets_without_headless")
    return [hit(e, obj="%s/StatefulSet/%s" % (e.get("namespace"), e.get("name")),
                detail="StatefulSet %s/%s: serviceName %r %s" % (e.get("namespace"), e.get("name"), e.get("service_name"),
                                                                 e.get("reason") or "names no headless Service"))
            for e in examples] if count else []


@cluster_rule("WL004", needs=("workloads",))
def ndots(cluster, ctx):
    workloads = _workloads(cluster)
    count, examples = _problem(workloads, "ndots5")
    if not count:
        return []
    return [hit({"pods": count, "pods_scanned": workloads.get("pods_scanned"), "examples": examples},
                detail="%d of %s pods resolve with ndots:5: a name with fewer than 5 dots goes through every search domain "
                "first (up to 8 queries for A and AAAA)" % (count, workloads.get("pods_scanned")))]


# --- NodeLocal DNSCache ---------------------------------------------------------------------------

@cluster_rule("NLD003", needs=("nodelocaldns", "kube_proxy"))
def nodelocal_mode(cluster, ctx):
    nodelocal = cluster["nodelocaldns"]
    if not nodelocal.get("present"):
        raise Skip("NodeLocal DNSCache is not deployed")
    mode = _dig(cluster, "kube_proxy", "mode")
    if not mode:
        raise Skip("kube-proxy mode unknown (no kube-proxy ConfigMap or DaemonSet)")
    cluster_ips = _dig(cluster, "kube_dns", "cluster_ips") or [ip for ip in [_dig(cluster, "kube_dns", "cluster_ip")] if ip]
    local = nodelocal.get("local_ip") or []
    evidence = {"kube_proxy_mode": mode, "local_ip": local, "kube_dns_cluster_ips": cluster_ips, "daemonset": nodelocal.get("daemonset")}
    on_cluster_ip = sorted(set(local) & set(cluster_ips))
    results = []
    if mode == "ipvs" and on_cluster_ip:
        results.append(hit(evidence, detail="kube-proxy runs in IPVS mode but node-cache listens on the kube-dns ClusterIP %s "
                           "(IPVS owns that address on kube-ipvs0)" % ", ".join(on_cluster_ip)))
    if mode == "ipvs":
        for host, resolver in sorted(ctx.node_facts("clusterdns_resolver").items()):
            cluster_dns = _dig(resolver, "kubelet", "cluster_dns") or []
            if cluster_dns and not set(cluster_dns) & set(local):
                results.append(hit(dict(evidence, host=host, kubelet_cluster_dns=cluster_dns),
                                   detail="IPVS mode: kubelet clusterDNS on %s is %s, not the NodeLocal address %s"
                                   % (host, ", ".join(cluster_dns), ", ".join(local))))
    if mode == "iptables" and cluster_ips and not on_cluster_ip:
        results.append(hit(evidence, severity="warning", detail="iptables mode: node-cache listens on %s but not on the kube-dns ClusterIP %s, "
                           "so pods that use the ClusterIP bypass the cache" % (", ".join(local), ", ".join(cluster_ips))))
    return results
