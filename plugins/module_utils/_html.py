# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee (the report file itself is described in
# docs/report.md).
#
# report.html: one self-contained file rendered from the findings.json document. Inline CSS and
# inline SVG only: no script, no font, no image and no style sheet is fetched, so the file can be
# attached to a ticket and opened offline. Every value from the report is escaped. Stdlib only.

from __future__ import annotations

import json
from html import escape

from ansible_collections.clusterdns.doctor.plugins.module_utils._report import cluster_origin

# The DNS path drawn at the top of the report, in the order a pod's query travels it.
# (key, title, lines drawn in the box, subtitle under the box)
HOPS = (
    ("pod", "Pod", ("Pod",), "dnsPolicy, resolv.conf, libc"),
    ("netfilter", "Node: conntrack, iptables, IPVS", ("conntrack", "iptables, IPVS"), "DNAT to the ClusterIP, kernel"),
    ("resolver", "Node: dnsmasq, resolv.conf", ("dnsmasq", "resolv.conf"), "what dnsPolicy Default gets"),
    ("clusterip", "kube-dns ClusterIP", ("kube-dns", "ClusterIP"), "Service, kube-proxy rules"),
    ("coredns", "CoreDNS replicas", ("CoreDNS", "replicas"), "pods, Corefile, RBAC"),
    ("nodelocal", "NodeLocal DNSCache", ("NodeLocal", "DNSCache"), "node-cache on each node"),
    ("upstream", "Upstream", ("Upstream",), "forward / resolv.conf servers"),
)
HOP_TITLES = {key: title for key, title, _lines, _sub in HOPS}

# Finding id -> hops it marks. Exact ids first, then the id's letter prefix (see docs/report.md).
HOPS_BY_ID = {
    "CDNS008": ("upstream",),
    "CDNS010": ("upstream",),
}
HOPS_BY_PREFIX = {
    "WL": ("pod",),
    "CT": ("netfilter", "clusterip"),
    "KRN": ("netfilter", "clusterip"),
    "IPT": ("netfilter", "clusterip"),
    "IPVS": ("netfilter", "clusterip"),
    "NODE": ("netfilter", "clusterip"),
    "SG": ("netfilter", "clusterip"),
    "DMQ": ("resolver",),
    "RES": ("resolver",),
    "SVC": ("clusterip", "coredns"),
    "CDNS": ("coredns",),
    "NLD": ("nodelocal",),
    "PRB": ("clusterip",),
}
# dns_probe findings (PRB*) mark the hop their evidence names.
HOPS_BY_PROBE_HOP = {
    "pod-clusterip": ("clusterip",),
    "pod-endpoint": ("coredns",),
    "coredns-upstream": ("upstream",),
    "node-resolver": ("resolver",),
}

SEVERITY_ORDER = ("critical", "error", "warning", "info")
_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITY_ORDER))}
# fill, text colour
COLOURS = {
    "critical": ("#8f0019", "#ffffff"),
    "error": ("#d63a1a", "#ffffff"),
    "warning": ("#f2b100", "#1b1b1b"),
    "info": ("#3b82c4", "#ffffff"),
    "ok": ("#2f8f46", "#ffffff"),
    "unchecked": ("#c9ced6", "#1b1b1b"),
}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9}
main{max-width:1240px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px}h2{margin:32px 0 12px;font-size:20px;border-bottom:2px solid #d8dce2;padding-bottom:4px}
h3{margin:0 0 6px;font-size:17px}h3.severity-group{margin:20px 0 6px;font-size:18px}.meta{color:#4a5360;margin:0 0 16px}
.counts{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.count{padding:8px 14px;border-radius:6px;font-weight:600;min-width:90px;text-align:center}
.verdict{padding:10px 14px;border-radius:6px;font-weight:600;margin:8px 0}
.verdict.failed{background:#8f0019;color:#fff}.verdict.passed{background:#2f8f46;color:#fff}
.finding{background:#fff;border:1px solid #d8dce2;border-left:8px solid #999;border-radius:6px;padding:12px 16px;margin:12px 0}
.finding.critical{border-left-color:#8f0019}.finding.error{border-left-color:#d63a1a}
.finding.warning{border-left-color:#f2b100}.finding.info{border-left-color:#3b82c4}
.finding.waived{opacity:.75;border-left-style:dashed}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:700;text-transform:uppercase;margin-right:6px}
dl.evidence{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}
dl.evidence dt{font-weight:600;color:#4a5360}dl.evidence dd{margin:0}
pre{background:#eef1f5;padding:6px 8px;border-radius:4px;overflow-x:auto;margin:2px 0;white-space:pre-wrap;word-break:break-word}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:13px}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border:1px solid #d8dce2;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}table+h3{margin-top:16px}svg.chart{width:100%;height:auto}
.path svg{background:#fff;border:1px solid #d8dce2;border-radius:6px;width:100%;height:auto}
.refs{color:#4a5360;font-size:13px}.refs code{font-size:12px}
.fixed{color:#2f8f46;font-weight:600}.new{color:#8f0019;font-weight:600}.remains{color:#b36b00;font-weight:600}
"""


def _e(value):
    return escape("" if value is None else str(value), quote=True)


def hops_of(finding_id, evidence=None):
    """The path hops a finding id marks ("other" when it maps to none); a probe finding marks the
    hop of its evidence."""
    if finding_id.startswith("PRB") and isinstance(evidence, dict) and evidence.get("hop") in HOPS_BY_PROBE_HOP:
        return HOPS_BY_PROBE_HOP[evidence["hop"]]
    if finding_id in HOPS_BY_ID:
        return HOPS_BY_ID[finding_id]
    prefix = finding_id.rstrip("0123456789")
    return HOPS_BY_PREFIX.get(prefix, ("other",))


def _waived(finding):
    return bool(finding.get("waiver"))


def hop_states(report):
    """Per hop: ``state`` (fail, ok, unchecked), worst ``severity``, the finding ``ids`` and ``waived`` ids.

    A hop is ``unchecked`` when no check mapped to it passed or failed (all were skipped, e.g. no
    cluster reachable). Waived findings do not mark a hop as failing; they are listed separately.
    """
    states = {key: {"state": "unchecked", "severity": None, "ids": [], "waived": []} for key, _t, _l, _s in HOPS}
    for check in report.get("checks", []):
        if check.get("status") in ("pass", "fail"):
            for hop in hops_of(check["id"]):
                if hop in states and states[hop]["state"] == "unchecked":
                    states[hop]["state"] = "ok"
    for finding in report.get("findings", []):
        for hop in hops_of(finding["id"], finding.get("evidence")):
            if hop not in states:
                continue
            state = states[hop]
            if _waived(finding):
                if finding["id"] not in state["waived"]:
                    state["waived"].append(finding["id"])
                continue
            state["state"] = "fail"
            if finding["id"] not in state["ids"]:
                state["ids"].append(finding["id"])
            if state["severity"] is None or _RANK[finding["severity"]] > _RANK[state["severity"]]:
                state["severity"] = finding["severity"]
    return states


def _svg_text(x, y, text, size=13, weight="normal", fill="#1b1b1b", anchor="middle"):
    return '<text x="%d" y="%d" font-size="%d" font-weight="%s" fill="%s" text-anchor="%s">%s</text>' % (
        x, y, size, weight, fill, anchor, _e(text))


def path_diagram(report):
    """Inline SVG of the DNS path with each hop coloured by its worst finding."""
    states = hop_states(report)
    box_w, box_h, gap, top = 160, 118, 26, 40
    width = len(HOPS) * box_w + (len(HOPS) - 1) * gap + 40
    height = 250
    out = [
        '<svg viewBox="0 0 %d %d" role="img" aria-labelledby="path-title" id="dns-path">' % (width, height),
        '<title id="path-title">DNS path from the pod to the upstream; failing hops are coloured by their worst finding</title>',
        '<defs><marker id="arrow" markerWidth="10" markerHeight="10" refX="9" refY="5" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#4a5360"/></marker></defs>',
        '<rect x="%d" y="%d" width="%d" height="%d" rx="8" fill="none" stroke="#4a5360" stroke-dasharray="6 4"/>' % (
            20 + box_w + gap - 8, top - 26, 2 * box_w + gap + 16, box_h + 34),
        _svg_text(20 + box_w + gap + box_w + gap // 2, top - 10, "node", size=12, fill="#4a5360"),
    ]
    for index, (key, title, lines, subtitle) in enumerate(HOPS):
        x = 20 + index * (box_w + gap)
        state = states[key]
        colour_key = state["severity"] if state["state"] == "fail" else state["state"]
        fill, ink = COLOURS[colour_key]
        if state["state"] == "fail":
            ids = state["ids"]
            status = (state["severity"].upper(), " ".join(ids[:3]) + (" +%d" % (len(ids) - 3) if len(ids) > 3 else ""))
            tooltip = "%s: %s" % (title, ", ".join(ids))
        else:
            status = ("OK",) if state["state"] == "ok" else ("not checked",)
            tooltip = "%s: %s" % (title, status[0])
        out.append('<g class="hop hop-%s" data-hop="%s" data-state="%s" data-severity="%s">' % (
            _e(state["state"]), _e(key), _e(state["state"]), _e(state["severity"] or "")))
        out.append("<title>%s</title>" % _e(tooltip))
        stroke = ' stroke="#1b1b1b" stroke-width="3"' if state["state"] == "fail" else ' stroke="#4a5360"'
        out.append('<rect x="%d" y="%d" width="%d" height="%d" rx="8" fill="%s"%s/>' % (x, top, box_w, box_h, fill, stroke))
        for line_no, line in enumerate(lines):
            out.append(_svg_text(x + box_w // 2, top + 24 + 18 * line_no, line, size=15, weight="bold", fill=ink))
        for line_no, line in enumerate(status):
            out.append(_svg_text(x + box_w // 2, top + 74 + 16 * line_no, line, size=12, weight="bold", fill=ink))
        if state["waived"]:
            out.append(_svg_text(x + box_w // 2, top + box_h - 6, "waived: " + " ".join(state["waived"]), size=11, fill=ink))
        out.append(_svg_text(x + box_w // 2, top + box_h + 20, subtitle, size=11, fill="#4a5360"))
        out.append("</g>")
        if index < len(HOPS) - 1:
            y = top + box_h // 2
            out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#4a5360" stroke-width="2" marker-end="url(#arrow)"/>' % (
                x + box_w + 1, y, x + box_w + gap - 2, y))
    legend_y = height - 28
    legend_x = 20
    for name in ("critical", "error", "warning", "info", "ok", "unchecked"):
        fill, _ink = COLOURS[name]
        out.append('<rect x="%d" y="%d" width="14" height="14" rx="3" fill="%s" stroke="#4a5360"/>' % (legend_x, legend_y, fill))
        label = "not checked" if name == "unchecked" else name
        out.append(_svg_text(legend_x + 20, legend_y + 12, label, size=12, anchor="start"))
        legend_x += 40 + 8 * len(label)
    out.append("</svg>")
    return "\n".join(out)


def _value_html(value):
    if isinstance(value, list) and value and not any(isinstance(item, (dict, list)) for item in value):
        if sum(len(str(item)) for item in value) <= 100:
            return ", ".join("<code>%s</code>" % _e(item) for item in value)
        return "<pre><code>%s</code></pre>" % "\n".join(_e(item) for item in value)
    if isinstance(value, (dict, list)):
        if not value:
            return "<code>%s</code>" % _e(json.dumps(value))
        return "<pre><code>%s</code></pre>" % _e(json.dumps(value, indent=2, sort_keys=True, default=str))
    return "<code>%s</code>" % _e(value)


def evidence_html(evidence):
    """A definition list for a mapping, pretty JSON for anything else."""
    if isinstance(evidence, dict) and evidence:
        rows = ["<dt>%s</dt><dd>%s</dd>" % (_e(key), _value_html(evidence[key])) for key in evidence]
        return '<dl class="evidence">%s</dl>' % "".join(rows)
    return _value_html(evidence)


def _where(finding):
    if finding.get("scope") == "node":
        return "node %s" % finding.get("host")
    return "cluster" + (" object %s" % finding["object"] if finding.get("object") else "")


def _badge(severity):
    fill, ink = COLOURS.get(severity, COLOURS["unchecked"])
    return '<span class="badge" style="background:%s;color:%s">%s</span>' % (fill, ink, _e(severity))


def finding_html(finding):
    severity = finding["severity"]
    classes = "finding %s%s" % (severity, " waived" if _waived(finding) else "")
    anchor = "finding-%s-%s" % (finding["id"], finding.get("host") or "cluster")
    hops = ", ".join(HOP_TITLES.get(hop, "not on the path diagram") for hop in hops_of(finding["id"], finding.get("evidence")))
    out = [
        '<article class="%s" id="%s" data-finding="%s">' % (_e(classes), _e(anchor), _e(finding["id"])),
        "<h3>%s%s %s</h3>" % (_badge(severity), _e(finding["id"]), _e(finding.get("title"))),
        "<p><strong>On %s</strong> (path: %s): %s</p>" % (_e(_where(finding)), _e(hops), _e(finding.get("detail"))),
    ]
    if _waived(finding):
        waiver = finding["waiver"]
        out.append("<p><strong>Waived</strong> until %s: %s</p>" % (_e(waiver.get("expires")), _e(waiver.get("reason"))))
    out += ["<h4>Evidence</h4>", evidence_html(finding.get("evidence")),
            "<p><strong>Why it breaks DNS:</strong> %s</p>" % _e(finding.get("cause"))]
    fix = finding.get("fix") or {}
    if fix.get("command"):
        out.append("<p><strong>Fix</strong> (roles: %s):</p><pre><code>%s</code></pre>" % (
            _e(", ".join(fix.get("roles") or []) or "none"), _e(fix["command"])))
        if fix.get("variables"):
            out.append("<p>Variables: %s</p>" % ", ".join(
                "<code>%s=%s</code>" % (_e(k), _e(v)) for k, v in sorted(fix["variables"].items())))
    else:
        out.append("<p><strong>Fix:</strong> no automatic remediation; see the references.</p>")
    refs = finding.get("references") or []
    if refs:
        # References are printed, not linked: the file loads and links nothing external.
        out.append('<p class="refs">References: %s</p>' % ", ".join("<code>%s</code>" % _e(r) for r in refs))
    out.append("</article>")
    return "\n".join(out)


def _probe_rows(probes, host=None):
    """Flatten ``probes`` to (host, target summary) pairs. Accepted: a list of dns_probe target
    summaries, a list of dns_probe results (``results`` lists the summaries), or a mapping
    host -> either of those."""
    rows = []
    if isinstance(probes, dict):
        if isinstance(probes.get("results"), list):
            return _probe_rows(probes["results"], host)
        for name in sorted(probes):
            rows.extend(_probe_rows(probes[name], name))
    elif isinstance(probes, list):
        for item in probes:
            if isinstance(item, dict) and isinstance(item.get("results"), list):
                rows.extend(_probe_rows(item["results"], item.get("host", host)))
            elif isinstance(item, dict) and "server" in item:
                rows.append((item.get("host", host), item))
    return rows


def probe_charts(probes):
    """Two inline SVG bar charts: latency (p50, p99) and loss per probed hop."""
    rows = _probe_rows(probes)
    if not rows:
        return ""
    labels = []
    for host, item in rows:
        label = "%s%s %s:%s/%s" % ((host + " ") if host else "", item.get("hop") or "?", item.get("server"),
                                   item.get("port", 53), item.get("transport", "udp"))
        labels.append(label)
    latencies = [(item.get("latency_ms") or {}) for _h, item in rows]
    top = max([lat.get("p99") or lat.get("max") or lat.get("p50") or 0 for lat in latencies] + [1.0])
    label_w, bar_w, row_h = 360, 500, 26
    height = 30 + row_h * len(rows)
    lat = ['<svg class="chart" id="probe-latency" viewBox="0 0 %d %d" role="img">' % (
        label_w + bar_w + 300, height), "<title>Probe latency per hop (p50 solid, p99 light)</title>"]
    for index, label in enumerate(labels):
        y = 20 + index * row_h
        p50 = latencies[index].get("p50")
        p99 = latencies[index].get("p99")
        lat.append(_svg_text(label_w - 8, y + 14, label, size=12, anchor="end"))
        if p50 is None:
            lat.append(_svg_text(label_w + 4, y + 14, "no reply", size=12, fill="#8f0019", anchor="start"))
            continue
        p99 = p99 if p99 is not None else p50
        lat.append('<rect x="%d" y="%d" width="%.1f" height="16" fill="#9cc3e6"/>' % (label_w, y + 2, bar_w * p99 / top))
        lat.append('<rect x="%d" y="%d" width="%.1f" height="16" fill="#1f5f99"/>' % (label_w, y + 2, max(bar_w * p50 / top, 2)))
        lat.append(_svg_text(label_w + bar_w * p99 / top + 6, y + 14, "p50 %s ms, p99 %s ms" % (p50, p99), size=12, anchor="start"))
    lat.append("</svg>")
    loss = ['<svg class="chart" id="probe-loss" viewBox="0 0 %d %d" role="img">' % (
        label_w + bar_w + 300, height), "<title>Probe loss per hop (share of queries without a reply)</title>"]
    for index, (_host, item) in enumerate(rows):
        y = 20 + index * row_h
        ratio = item.get("loss_ratio")
        loss.append(_svg_text(label_w - 8, y + 14, labels[index], size=12, anchor="end"))
        if ratio is None:
            loss.append(_svg_text(label_w + 4, y + 14, "not run", size=12, anchor="start"))
            continue
        fill = COLOURS["ok"][0] if ratio == 0 else COLOURS["error"][0]
        loss.append('<rect x="%d" y="%d" width="%.1f" height="16" fill="%s"/>' % (label_w, y + 2, max(bar_w * ratio, 2), fill))
        loss.append(_svg_text(label_w + max(bar_w * ratio, 2) + 6, y + 14, "%.1f %% lost (%s of %s), %s" % (
            100.0 * ratio, item.get("lost"), item.get("sent"), item.get("classification", "")), size=12, anchor="start"))
    loss.append("</svg>")
    return "\n".join(['<section id="probes"><h2>Probes per hop</h2>', "<h3>Latency</h3>", "\n".join(lat),
                      "<h3>Loss</h3>", "\n".join(loss), "</section>"])


def before_after_html(report):
    """Finding ids before and after a remediation run: fixed, remaining, new."""
    before = set((report.get("before") or {}).get("ids") or [])
    after = set(report["summary"].get("ids") or [])
    rows = []
    for finding_id in sorted(before | after):
        if finding_id in before and finding_id not in after:
            state = ("fixed", "fixed")
        elif finding_id in after and finding_id not in before:
            state = ("new", "new since the change")
        else:
            state = ("remains", "still present")
        rows.append('<tr data-id="%s"><td>%s</td><td>%s</td><td>%s</td><td class="%s">%s</td></tr>' % (
            _e(finding_id), _e(finding_id), "yes" if finding_id in before else "no",
            "yes" if finding_id in after else "no", state[0], _e(state[1])))
    if not rows:
        rows.append('<tr><td colspan="4">No finding before or after the change.</td></tr>')
    out = ['<section id="before-after"><h2>Before and after remediation</h2>',
           "<table><thead><tr><th>finding</th><th>before</th><th>after</th><th>result</th></tr></thead><tbody>",
           "\n".join(rows), "</tbody></table>"]
    remediation = report.get("remediation")
    if remediation:
        out.append("<h3>What each node's roles did</h3>")
        out.append("<pre><code>%s</code></pre>" % _e(json.dumps(remediation, indent=2, sort_keys=True, default=str)))
    out.append("</section>")
    return "\n".join(out)


def render_html(report):
    """report.html for a findings.json document (docs/findings.schema.json)."""
    summary = report["summary"]
    cluster = report["cluster"]
    title = "Cluster DNS report %s" % report["generated_at"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title>" % _e(title),
        "<style>%s</style></head><body><main>" % CSS,
        "<h1>Cluster DNS report</h1>",
        '<p class="meta">Generated %s by %s %s (%s mode). Nodes: %s. Cluster: %s%s.</p>' % (
            _e(report["generated_at"]), _e(report["tool"]["name"]), _e(report["tool"]["version"]), _e(report["mode"]),
            _e(", ".join(report["hosts"]) or "none"), _e(cluster["status"]),
            _e(cluster_origin(cluster, "%s"))),
        '<div class="counts" id="counts">',
    ]
    for severity in SEVERITY_ORDER:
        fill, ink = COLOURS[severity]
        count = summary["by_severity"].get(severity, 0)
        if not count:
            fill, ink = "#e4e7ec", "#4a5360"
        out.append('<div class="count" data-severity="%s" style="background:%s;color:%s">%d %s</div>' % (
            severity, fill, ink, count, severity))
    checks = summary["checks"]
    out.append('<div class="count" style="background:#fff;border:1px solid #d8dce2">checks: %d passed, %d failed, %d skipped</div>' % (
        checks["pass"], checks["fail"], checks["skip"]))
    out.append("</div>")
    if summary.get("waived"):
        out.append("<p>%d finding(s) waived: %s.</p>" % (summary["waived"], _e(", ".join(summary.get("waived_ids") or []))))
    if summary.get("fail_on", "none") != "none":
        if summary["failed"]:
            out.append('<p class="verdict failed" id="verdict">Compliance threshold %s: FAILED (%s)</p>' % (
                _e(summary["fail_on"]), _e(", ".join(summary["failing_ids"]))))
        else:
            out.append('<p class="verdict passed" id="verdict">Compliance threshold %s: passed</p>' % _e(summary["fail_on"]))
    out += ['<section class="path" id="path"><h2>DNS path</h2>', path_diagram(report), "</section>"]
    if report.get("mode") == "remediate-after":
        out.append(before_after_html(report))
    if report.get("probes"):
        out.append(probe_charts(report["probes"]))
    out.append('<section id="findings"><h2>Findings</h2>')
    if not report["findings"]:
        out.append("<p>No findings.</p>")
    for severity in SEVERITY_ORDER:
        group = [f for f in report["findings"] if f["severity"] == severity]
        if group:
            out.append('<h3 class="severity-group" data-severity="%s">%s (%d)</h3>' % (severity, _e(severity.capitalize()), len(group)))
            out.extend(finding_html(f) for f in group)
    out.append("</section>")
    skipped = [c for c in report["checks"] if c["status"] == "skip"]
    if skipped:
        out += ['<section id="skipped"><h2>Checks skipped</h2>',
                "<table><thead><tr><th>check</th><th>host</th><th>reason</th></tr></thead><tbody>"]
        for check in skipped:
            out.append("<tr><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                _e(check["id"]), _e(check.get("host") or "cluster"), _e(check.get("reason"))))
        out += ["</tbody></table>", "</section>"]
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
