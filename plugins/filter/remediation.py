# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils._remediation import conntrack_plan as _conntrack_plan
from ansible_collections.clusterdns.doctor.plugins.module_utils._remediation import ipvs_plan as _ipvs_plan


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def conntrack_plan(state, options=None, evidence=None):
    if not isinstance(state, Mapping):
        raise AnsibleFilterError("conntrack_plan expects a mapping (max, count, buckets, cpus, ...), got %s" % type(state).__name__)
    return _conntrack_plan(_plain(state), _plain(options), _plain(evidence))


def ipvs_plan(state, options=None):
    if not isinstance(state, Mapping):
        raise AnsibleFilterError("ipvs_plan expects a mapping (present, kernel_release, values, ...), got %s" % type(state).__name__)
    return _ipvs_plan(_plain(state), _plain(options))


class FilterModule:
    def filters(self):
        return {
            "conntrack_plan": conntrack_plan,
            "ipvs_plan": ipvs_plan,
        }
