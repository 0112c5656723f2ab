# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Waivers: findings a team has accepted for a while, with a reason and an expiry date (as
# kube-bench and Popeye allow). A waived finding stays in the report, marked as waived; it does
# not count toward the compliance threshold. An expired waiver no longer applies and is listed, so
# that nobody forgets it. Stdlib only.
#
# A waiver: {"id": "RES002", "hosts": ["node-*"], "object": "kube-system/Service/kube-dns",
#            "reason": "...", "expires": "2027-01-31", "owner": "team-dns"}
# ``hosts`` (shell-style patterns) and ``object`` are optional filters; id, reason and expires
# are required.

from __future__ import annotations

import datetime
import fnmatch

from ansible_collections.clusterdns.doctor.plugins.module_utils._catalog import CATALOG
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput

_KEYS = {"id", "hosts", "object", "reason", "expires", "owner"}


def _date(value, where):
    if isinstance(value, datetime.datetime):
        return value.date()
    if isinstance(value, datetime.date):
        return value
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput("%s: expires %r is not a date; write it as YYYY-MM-DD" % (where, value)) from None


def validate(waivers, source="clusterdns_waivers"):
    """Check and normalise a list of waivers; raises InvalidInput naming the entry and the field."""
    if waivers is None:
        return []
    if not isinstance(waivers, list):
        raise InvalidInput("%s must be a list of waivers, got %s" % (source, type(waivers).__name__))
    out = []
    for index, entry in enumerate(waivers):
        where = "%s[%d]" % (source, index)
        if not isinstance(entry, dict):
            raise InvalidInput("%s must be a mapping with id, reason and expires" % where)
        unknown = sorted(set(entry) - _KEYS)
        if unknown:
            raise InvalidInput("%s has unknown key(s) %s; valid keys: %s" % (where, ", ".join(unknown), ", ".join(sorted(_KEYS))))
        for key in ("id", "reason", "expires"):
            if not entry.get(key):
                raise InvalidInput("%s has no %s; every waiver needs id, reason and expires" % (where, key))
        if entry["id"] not in CATALOG:
            raise InvalidInput("%s: %r is not a finding id (see docs/findings.md)" % (where, entry["id"]))
        hosts = entry.get("hosts")
        if hosts is not None and (not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts)):
            raise InvalidInput("%s: hosts must be a list of host name patterns" % where)
        out.append({"id": entry["id"], "hosts": hosts, "object": entry.get("object"), "reason": str(entry["reason"]),
                    "expires": _date(entry["expires"], where).isoformat(), "owner": entry.get("owner"), "source": where})
    return out


def _matches(waiver, finding):
    if waiver["id"] != finding["id"]:
        return False
    if waiver["hosts"] is not None and not any(fnmatch.fnmatchcase(finding.get("host") or "", p) for p in waiver["hosts"]):
        return False
    return not (waiver["object"] is not None and waiver["object"] != finding.get("object"))


def apply(findings, waivers, today):
    """Mark findings covered by a waiver valid on ``today`` (an ISO date or date).

    Returns ``(findings, expired)``: the findings (new dicts; a waived one has a ``waiver`` key)
    and the waivers that expired before ``today`` (they do not apply)."""
    day = _date(today, "today")
    valid, expired = [], []
    for waiver in waivers:
        (valid if datetime.date.fromisoformat(waiver["expires"]) >= day else expired).append(waiver)
    out = []
    for finding in findings:
        match = next((w for w in valid if _matches(w, finding)), None)
        copy = dict(finding)
        if match:
            copy["waiver"] = {k: match[k] for k in ("reason", "expires", "owner", "source")}
        out.append(copy)
    return out, expired
