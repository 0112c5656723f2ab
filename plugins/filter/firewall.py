# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils._firewall_fix import plan


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def firewall_fix_plan(findings, saves, mode="insert_accept", nft_ruleset=None):
    if isinstance(findings, (str, Mapping)) or not isinstance(findings, (list, tuple)):
        raise AnsibleFilterError("firewall_fix_plan: the input must be a list of IPT002 findings, got %r" % (findings,))
    if not isinstance(saves, Mapping):
        raise AnsibleFilterError("firewall_fix_plan: saves must map ipv4/ipv6 to iptables-save output, got %r" % (saves,))
    try:
        return plan(_plain(list(findings)), {str(k): str(v) for k, v in saves.items()}, str(mode), nft_ruleset or None)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("firewall_fix_plan: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"firewall_fix_plan": firewall_fix_plan}
