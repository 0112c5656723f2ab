# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ClusterDNSError
from ansible_collections.clusterdns.doctor.plugins.module_utils._findings import evaluate
from ansible_collections.clusterdns.doctor.plugins.module_utils._html import render_html
from ansible_collections.clusterdns.doctor.plugins.module_utils._report import build_report, render_junit, render_markdown, render_prometheus, summary_line


def _plain(value):
    """Turn Ansible's lazy/templated containers into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dns_findings(nodes, cluster=None, options=None, detail=False):
    try:
        result = evaluate(_plain(nodes), _plain(cluster), _plain(options))
    except (ClusterDNSError, KeyError, TypeError) as exc:
        raise AnsibleFilterError("dns_findings: %s" % exc) from exc
    return result if detail else result["findings"]


def dns_report(assessment, generated_at, version, hosts, cluster_status=None, fail_on="none", mode="diagnose", extra=None, waivers=None, today=None):
    try:
        return build_report(_plain(assessment), generated_at, version, _plain(hosts), _plain(cluster_status), fail_on, mode, _plain(extra),
                            waivers=_plain(waivers), today=today)
    except (ClusterDNSError, KeyError, TypeError) as exc:
        raise AnsibleFilterError("dns_report: %s" % exc) from exc


_RENDERERS = {"markdown": render_markdown, "junit": render_junit, "summary": summary_line, "html": render_html, "prometheus": render_prometheus}


def dns_report_render(report, fmt="markdown"):
    if fmt not in _RENDERERS:
        raise AnsibleFilterError("dns_report_render: format %r is not one of %s" % (fmt, ", ".join(sorted(_RENDERERS))))
    try:
        return _RENDERERS[fmt](_plain(report))
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError("dns_report_render: the report is not a clusterdns.doctor report (%s); build it with dns_report" % exc) from exc


class FilterModule:
    def filters(self):
        return {
            "dns_findings": dns_findings,
            "dns_report": dns_report,
            "dns_report_render": dns_report_render,
        }
