# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Locating the broken hop from dns_probe results. Pure, stdlib only.
#
# Input: the node fact ``clusterdns_probe``, a list of ``{hop, origin, server, transport, result}``
# where ``result`` is one entry of dns_probe's ``results`` and ``origin`` is ``pod`` or ``node``
# (where the probe ran). An entry may also be a dns_probe result itself (it has ``hop``, ``server``,
# ``transport`` and ``netns``): then the origin is ``pod`` when the probe ran in another network
# namespace, ``node`` otherwise, so ``results | flatten`` of registered probes is a valid fact.
#
# ``locate(entries)`` returns one verdict per failing (hop, origin, server, transport): the proposed
# finding id (PRB001 hop does not answer, PRB002 hop loses part of the queries, PRB003 hop answers
# with SERVFAIL/REFUSED), a severity, the evidence, and a ``detail`` that compares it with the other
# hops (ClusterIP fails while a CoreDNS endpoint answers -> kube-proxy/conntrack on this node; the
# node's resolver answers the node but not the pod -> interface filtering as in seed 003; UDP fails
# while TCP answers -> a UDP-only rule). The node rules PRB001-PRB003 below turn the verdicts of a
# node's ``clusterdns_probe`` fact (diagnose.yml's dns_probe results) into findings; with a kernel
# drop trace (``clusterdns_drop_trace``) PRB001 also says whether the kernel dropped the queries or
# they reached the server's socket and the application discarded them (seed 003).

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils._droptrace import drop_evidence, kernel_verdict
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput
from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import Skip, hit, node_rule

DOWN = ("timeout", "unreachable", "error")
RCODE_FAIL = ("servfail", "refused")
LOSS_MIN = 0.01  # PRB002: loss ratios below this are noise on a busy node


def _origin(entry):
    return entry.get("origin") or ("pod" if entry.get("netns") else "node")


def _normalize(entries):
    if not isinstance(entries, list):
        raise InvalidInput("clusterdns_probe must be a list of {hop, origin, server, transport, result}, got %s" % type(entries).__name__)
    normalized = []
    for position, item in enumerate(entries):
        entry = item
        if isinstance(item, dict) and "result" not in item and "classification" in item:
            entry = {"hop": item.get("hop"), "netns": item.get("netns"), "server": item.get("server"),
                     "transport": item.get("transport"), "result": item}
        if not isinstance(entry, dict) or not isinstance(entry.get("result"), dict) or "classification" not in entry["result"]:
            raise InvalidInput("clusterdns_probe[%d] has no result with a classification (register dns_probe and keep one entry of its results)"
                               % position)
        normalized.append(entry)
    return normalized


def _ok(index, hop, origin, transport=None):
    """True when some probe of ``hop`` from ``origin`` (on ``transport`` if given) answered cleanly."""
    return any(c == "ok" for (h, o, t), classes in index.items() if h == hop and o == origin and transport in (None, t) for c in classes)


def _compare(entry, index):
    hop, origin, transport = entry["hop"], _origin(entry), entry["transport"]
    clause = []
    other = "tcp" if transport == "udp" else "udp"
    if _ok(index, hop, origin, other) and not _ok(index, hop, origin, transport):
        clause.append("%s to the same hop answers, so a rule that filters %s port 53 is the likely cause (IPT002, SG001)"
                      % (other.upper(), transport.upper()))
    if hop == "pod-clusterip":
        if _ok(index, "pod-endpoint", origin, transport):
            clause.append("the pod reaches a CoreDNS endpoint directly, so the fault is in the ClusterIP path on this node: "
                          "kube-proxy rules or conntrack (IPT001, IPVS002, CT001, CT002), or a NodeLocal DNSCache that holds "
                          "the ClusterIP without answering (NLD001)")
        elif any(h == "pod-endpoint" for (h, _o, _t) in index):
            clause.append("CoreDNS endpoints fail from the pod too, so look at CoreDNS and the path to it (CDNS001, SVC002, IPT002, SG001)")
    elif hop == "node-resolver" and origin == "pod" and _ok(index, "node-resolver", "node", transport):
        clause.append("the node's own query to the same resolver answers, so the resolver ignores or a rule drops traffic from the "
                      "pod interface (DMQ001, IPT002; seed 003)")
    elif hop == "pod-endpoint" and _ok(index, "pod-endpoint", "node", transport):
        clause.append("the node reaches the endpoint, so the pod's path is filtered (IPT002, SG001)")
    elif hop == "coredns-upstream" and (_ok(index, "pod-endpoint", "pod") or _ok(index, "pod-clusterip", "pod")):
        clause.append("CoreDNS answers the pods, so only its upstream fails: the upstream's ACL or firewall, or the upstream itself "
                      "(SG001, CDNS010)")
    return clause


def locate(entries):
    """Verdicts for the failing probe results, most severe first (see the module comment)."""
    entries = _normalize(entries)
    index = {}
    for entry in entries:
        key = (entry.get("hop"), _origin(entry), entry.get("transport"))
        index.setdefault(key, []).append(entry["result"]["classification"])
    verdicts = []
    for entry in entries:
        result = entry["result"]
        classification = result["classification"]
        loss = result.get("loss_ratio") or 0.0
        if classification in DOWN:
            finding, severity = "PRB001", "critical"
        elif classification == "loss" and loss >= LOSS_MIN:
            finding, severity = "PRB002", "error" if loss >= 0.05 else "warning"
        elif classification in RCODE_FAIL:
            finding, severity = "PRB003", "error"
        else:
            continue
        where = "%s from the %s to %s:%s over %s" % (entry.get("hop") or "probe", _origin(entry), entry.get("server"), result.get("port", 53),
                                                     entry.get("transport"))
        detail = "%s: %s (%s of %s queries answered)" % (where, classification, result.get("answered"), result.get("sent"))
        clauses = _compare(entry, index)
        if clauses:
            detail += "; " + "; ".join(clauses)
        verdicts.append({
            "id": finding, "severity": severity, "hop": entry.get("hop"), "origin": _origin(entry), "server": entry.get("server"),
            "transport": entry.get("transport"), "classification": classification, "detail": detail + ".",
            "next_hop": result.get("next_hop"),
            "evidence": {key: result.get(key) for key in ("sent", "answered", "lost", "loss_ratio", "rcodes", "timeouts", "errors", "latency_ms")},
        })
    rank = {"critical": 0, "error": 1, "warning": 2}
    verdicts.sort(key=lambda v: (rank[v["severity"]], v["id"], str(v["hop"]), str(v["server"]), str(v["transport"])))
    return verdicts


def _verdicts(facts, finding_id):
    probes = facts.get("clusterdns_probe")
    if not probes:
        raise Skip("no probe results (diagnose probes live nodes only)")
    return [v for v in locate(probes) if v["id"] == finding_id]


def _hits(facts, finding_id):
    results = []
    trace = facts.get("clusterdns_drop_trace")
    for verdict in _verdicts(facts, finding_id):
        evidence = dict(verdict["evidence"], hop=verdict["hop"], origin=verdict["origin"], server=verdict["server"],
                        transport=verdict["transport"], classification=verdict["classification"], next_hop=verdict["next_hop"])
        detail = verdict["detail"]
        if finding_id == "PRB001" and trace and kernel_verdict(trace) is not None:
            # only drops of this transport count: a TCP probe's aborted connection says nothing about UDP
            kernel = drop_evidence(trace, protocol=verdict["transport"])
            evidence["kernel_drops"] = kernel
            if kernel:
                detail += " " + kernel["text"] + "."
            else:
                detail += (" The kernel dropped no %s DNS packet during the trace: the queries reached the server's socket"
                           " and the server discarded them (interface filtering, as in seed 003)." % (verdict["transport"] or "").upper())
        results.append(hit(evidence, detail=detail, severity=verdict["severity"]))
    return results


@node_rule("PRB001")
def probe_hop_silent(host, facts, ctx):
    return _hits(facts, "PRB001")


@node_rule("PRB002")
def probe_hop_losing(host, facts, ctx):
    return _hits(facts, "PRB002")


@node_rule("PRB003")
def probe_hop_failing(host, facts, ctx):
    return _hits(facts, "PRB003")
