# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee (the report formats themselves are documented
# in docs/report.md and versioned by SCHEMA_VERSION).
#
# Pure report builders: the findings.json document, report.md and junit.xml. Stdlib only.

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.clusterdns.doctor.plugins.module_utils._catalog import CATALOG, SEVERITIES, SEVERITY_RANK
from ansible_collections.clusterdns.doctor.plugins.module_utils._waivers import apply as apply_waivers
from ansible_collections.clusterdns.doctor.plugins.module_utils._waivers import validate as validate_waivers
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput
from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import SCHEMA_VERSION, at_or_above

COLLECTION = "clusterdns.doctor"


def build_report(assessment, generated_at, version, hosts, cluster_status=None, fail_on="none", mode="diagnose", extra=None,
                 waivers=None, today=None):
    """The findings.json document (schema docs/findings.schema.json, version SCHEMA_VERSION).

    ``assessment`` is what ``_findings.evaluate`` returned; ``cluster_status`` is
    ``{"status": "assessed"|"skipped", "reason": str|None, "context": str|None}``. ``waivers``
    (see _waivers) valid on ``today`` mark findings as waived: they stay in the report and do not
    count toward the severities, the ids or the ``fail_on`` threshold.
    """
    if not isinstance(assessment, dict) or "findings" not in assessment or "checks" not in assessment:
        raise InvalidInput("dns_report expects the output of dns_findings(detail=true): a mapping with 'findings' and 'checks'")
    findings, expired = assessment["findings"], []
    if waivers:
        findings, expired = apply_waivers(findings, validate_waivers(waivers), today or generated_at[:10])
    active = [f for f in findings if "waiver" not in f]
    by_severity = {name: 0 for name in reversed(SEVERITIES)}
    for finding in active:
        by_severity[finding["severity"]] += 1
    statuses = {"pass": 0, "fail": 0, "skip": 0}
    for check in assessment["checks"]:
        statuses[check["status"]] += 1
    failing = at_or_above(active, fail_on)
    report = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": COLLECTION, "version": version},
        "mode": mode,
        "generated_at": generated_at,
        "hosts": sorted(hosts),
        "cluster": cluster_status or {"status": "skipped", "reason": "not assessed", "context": None},
        "summary": {
            "total": len(active),
            "by_severity": by_severity,
            "checks": statuses,
            "ids": sorted({f["id"] for f in active}),
            "fail_on": fail_on,
            "failed": bool(failing),
            "failing_ids": sorted({f["id"] for f in failing}),
            "waived": len(findings) - len(active),
            "waived_ids": sorted({f["id"] for f in findings if "waiver" in f}),
            "expired_waivers": expired,
        },
        "findings": findings,
        "checks": assessment["checks"],
    }
    if extra:
        report.update(extra)
    return report


def cluster_origin(cluster, code="`%s`"):
    """`` (reason; from SOURCE; context X; Kubernetes V)`` for the cluster line, or "": why the cluster
    part was skipped, or which cluster was read and where its credentials came from."""
    parts = [cluster.get("reason"), cluster.get("source") and "from %s" % cluster["source"],
             cluster.get("context") and "context " + code % cluster["context"],
             cluster.get("server_version") and "Kubernetes %s" % cluster["server_version"]]
    parts = [p for p in parts if p]
    return " (%s)" % "; ".join(parts) if parts else ""


def _where(finding):
    if finding["scope"] == "node":
        return "node `%s`" % finding["host"]
    return "cluster" + (" object `%s`" % finding["object"] if finding.get("object") else "")


def _evidence_lines(evidence, indent="  "):
    lines = []
    if isinstance(evidence, dict):
        for key in evidence:
            value = evidence[key]
            if isinstance(value, (dict, list)) and value:
                lines.append("%s- %s:" % (indent, key))
                lines.extend(_evidence_lines(value, indent + "  "))
            else:
                lines.append("%s- %s: `%s`" % (indent, key, value))
    elif isinstance(evidence, list):
        for item in evidence:
            if isinstance(item, (dict, list)):
                sub = _evidence_lines(item, indent + "  ")
                if sub:
                    sub[0] = indent + "- " + sub[0].lstrip()[2:]
                lines.extend(sub)
            else:
                lines.append("%s- `%s`" % (indent, item))
    else:
        lines.append("%s- `%s`" % (indent, evidence))
    return lines


def render_markdown(report):
    """report.md: counts by severity, then each finding with evidence, cause and the fix command."""
    summary = report["summary"]
    out = [
        "# Cluster DNS report",
        "",
        "Generated %s by %s %s (%s mode)." % (report["generated_at"], report["tool"]["name"], report["tool"]["version"], report["mode"]),
        "",
        "Nodes: %s. Cluster: %s%s." % (
            ", ".join("`%s`" % h for h in report["hosts"]) or "none",
            report["cluster"]["status"],
            cluster_origin(report["cluster"]),
        ),
        "",
        "| severity | findings |",
        "|---|---|",
    ]
    for severity, count in summary["by_severity"].items():
        out.append("| %s | %d |" % (severity, count))
    checks = summary["checks"]
    out += ["", "Checks: %d passed, %d failed, %d skipped." % (checks["pass"], checks["fail"], checks["skip"]), ""]
    if summary["fail_on"] != "none":
        verdict = "FAILED: findings at or above %s: %s" % (summary["fail_on"], ", ".join(summary["failing_ids"])) if summary["failed"] else "passed"
        out += ["Compliance threshold `%s`: %s." % (summary["fail_on"], verdict), ""]
    if not report["findings"]:
        out += ["No findings.", ""]
    if summary.get("waived"):
        out += ["Waived: %d finding(s) (%s), listed below and not counted." % (summary["waived"], ", ".join(summary["waived_ids"])), ""]
    for waiver in summary.get("expired_waivers") or []:
        out += ["Expired waiver `%s` for %s (expired %s, %s): no longer applied." % (waiver["source"], waiver["id"], waiver["expires"], waiver["reason"]), ""]
    for finding in report["findings"]:
        waiver = finding.get("waiver")
        out += [
            "## %s%s %s: %s" % ("WAIVED " if waiver else "", finding["severity"].upper(), finding["id"], finding["title"]),
            "",
            "On %s: %s" % (_where(finding), finding["detail"]),
            "",
            "**Evidence**",
            "",
        ]
        if waiver:
            out += ["**Waived** until %s%s: %s" % (waiver["expires"], " by %s" % waiver["owner"] if waiver.get("owner") else "", waiver["reason"]), ""]
        out += _evidence_lines(finding["evidence"], "")
        out += ["", "**Why it breaks DNS**: " + finding["cause"], ""]
        if finding["fix"]["command"]:
            out += ["**Fix**: `%s` (roles: %s)" % (finding["fix"]["command"], ", ".join(finding["fix"]["roles"]) or "none"), ""]
            if finding["fix"]["variables"]:
                out += ["Variables: " + ", ".join("`%s=%s`" % kv for kv in sorted(finding["fix"]["variables"].items())), ""]
        else:
            out += ["**Fix**: no automatic remediation; see the references.", ""]
        out += ["References: " + ", ".join(finding["references"]), ""]
    skipped = [c for c in report["checks"] if c["status"] == "skip"]
    if skipped:
        out += ["## Skipped checks", "", "| check | host | reason |", "|---|---|---|"]
        for check in skipped:
            out.append("| %s | %s | %s |" % (check["id"], check["host"] or "cluster", check["reason"]))
        out.append("")
    return "\n".join(out)


def render_junit(report):
    """junit.xml: one test case per check and host; a finding is a failure, a skip is skipped."""
    by_check = {}
    for finding in report["findings"]:
        by_check.setdefault((finding["id"], finding["host"]), []).append(finding)
    suites = ET.Element("testsuites", name=COLLECTION)
    grouped = {}
    for check in report["checks"]:
        grouped.setdefault(check["host"] or "cluster", []).append(check)
    for target in sorted(grouped):
        checks = grouped[target]
        suite = ET.SubElement(
            suites, "testsuite", name="%s.%s" % (COLLECTION, target), tests=str(len(checks)),
            failures=str(sum(c["status"] == "fail" for c in checks)), skipped=str(sum(c["status"] == "skip" for c in checks)),
            errors="0", timestamp=str(report["generated_at"]))
        for check in checks:
            title = CATALOG[check["id"]]["title"]
            case = ET.SubElement(suite, "testcase", classname="%s.%s" % (COLLECTION, target), name="%s %s" % (check["id"], title))
            if check["status"] == "skip":
                ET.SubElement(case, "skipped", message=check["reason"] or "skipped")
            elif check["status"] == "fail" and all("waiver" in f for f in by_check.get((check["id"], check["host"]), [])):
                waiver = by_check[(check["id"], check["host"])][0]["waiver"]
                ET.SubElement(case, "skipped", message="waived until %s: %s" % (waiver["expires"], waiver["reason"]))
            elif check["status"] == "fail":
                for finding in by_check.get((check["id"], check["host"]), []):
                    if "waiver" in finding:
                        continue
                    failure = ET.SubElement(case, "failure", message=finding["detail"], type=finding["severity"])
                    failure.text = "\n".join(_evidence_lines(finding["evidence"], "")) + "\nFix: %s" % (finding["fix"]["command"] or "see references")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def summary_line(report):
    """One line for the end of a play."""
    counts = report["summary"]["by_severity"]
    parts = ["%d %s" % (counts[s], s) for s in sorted(counts, key=lambda s: -SEVERITY_RANK[s]) if counts[s]]
    return "clusterdns.doctor: %d finding(s)%s on %d node(s); cluster %s" % (
        report["summary"]["total"], " (" + ", ".join(parts) + ")" if parts else "", len(report["hosts"]), report["cluster"]["status"])


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_prometheus(report):
    """clusterdns.prom: the report as Prometheus text format (node_exporter textfile collector)."""
    summary = report["summary"]
    lines = []

    def metric(name, kind, doc, samples):
        lines.append("# HELP %s %s" % (name, doc))
        lines.append("# TYPE %s %s" % (name, kind))
        for labels, value in samples:
            text = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels)
            lines.append("%s%s %s" % (name, "{%s}" % text if text else "", value))

    metric("clusterdns_findings", "gauge", "Findings by severity (waived findings not counted).",
           [((("severity", s),), n) for s, n in summary["by_severity"].items()])
    seen = {}
    for finding in report["findings"]:
        key = (finding["id"], finding["severity"], finding["scope"], finding.get("host") or "", finding.get("object") or "",
               "true" if "waiver" in finding else "false")
        seen[key] = 1
    metric("clusterdns_finding", "gauge", "One series per finding (id, severity, scope, host, object, waived).",
           [(tuple(zip(("id", "severity", "scope", "host", "object", "waived"), key)), 1) for key in sorted(seen)])
    metric("clusterdns_findings_waived", "gauge", "Findings covered by an unexpired waiver.", [((), summary.get("waived", 0))])
    metric("clusterdns_waivers_expired", "gauge", "Waivers past their expiry date (no longer applied).",
           [((), len(summary.get("expired_waivers") or []))])
    metric("clusterdns_checks", "gauge", "Checks by status.", [((("status", s),), n) for s, n in summary["checks"].items()])
    metric("clusterdns_compliance_failed", "gauge", "1 when a finding at or above fail_on exists.",
           [((("fail_on", summary["fail_on"]),), 1 if summary["failed"] else 0)])
    metric("clusterdns_cluster_assessed", "gauge", "1 when the cluster part was assessed.", [((), 1 if report["cluster"]["status"] == "assessed" else 0)])
    return "\n".join(lines) + "\n"
