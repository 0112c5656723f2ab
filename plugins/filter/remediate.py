# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils._dnsmasq_fix import plan


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dnsmasq_fix_plan(instance, admit, texts, default_route_interfaces=None, bind_dynamic=False, finding="DMQ001"):
    if not isinstance(instance, Mapping) or "config" not in instance:
        raise AnsibleFilterError("dnsmasq_fix_plan: the input must be one entry of clusterdns_dnsmasq.instances (dnsmasq_facts)")
    if isinstance(admit, str) or not isinstance(admit, (list, tuple)):
        raise AnsibleFilterError("dnsmasq_fix_plan: admit must be a list of interface names, got %r" % (admit,))
    try:
        return plan(_plain(instance), [str(a) for a in admit], _plain(texts or {}), list(default_route_interfaces or []), bool(bind_dynamic), finding)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("dnsmasq_fix_plan: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"dnsmasq_fix_plan": dnsmasq_fix_plan}
