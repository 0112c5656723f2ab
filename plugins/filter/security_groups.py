# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils import _secgroups
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ClusterDNSError


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _call(name, func, *args, **kwargs):
    try:
        return func(*[_plain(a) for a in args], **{k: _plain(v) for k, v in kwargs.items()})
    except (ClusterDNSError, KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError("%s: %s" % (name, exc)) from exc


def _ports(value):
    if isinstance(value, str):
        lo, _sep, hi = value.partition("-")
        return (int(lo), int(hi or lo))
    return tuple(int(v) for v in value)


def security_groups_model(groups, provider="aws", nacls=None, instances=None, group_types=None, subnets=None):
    if not isinstance(groups, (list, tuple)):
        raise AnsibleFilterError("security_groups_model: the input must be a list of security groups, got %s" % type(groups).__name__)
    if provider == "aws":
        return _call("security_groups_model", _secgroups.aws_model, groups, nacls, instances, subnets)
    if provider == "alibaba":
        return _call("security_groups_model", _secgroups.alibaba_model, groups, instances, group_types)
    raise AnsibleFilterError("security_groups_model: provider must be aws or alibaba, got %r" % (provider,))


def security_groups_evaluate(model, servers=None, clients=None, cluster=None, ephemeral_ports="32768-60999", prefix_lists=None, check_nacls=True,
                             node_clients=True):
    servers = _plain(servers) or []
    if not servers and isinstance(cluster, Mapping):
        pods = ((cluster.get("coredns") or {}).get("pods")) or []
        servers = [{"name": "%s/%s" % (p.get("namespace") or "kube-system", p.get("name")), "address": p.get("ip"), "node": p.get("node")}
                   for p in pods if p.get("ip")]
    try:
        ephemeral = _ports(ephemeral_ports)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError("security_groups_evaluate: ephemeral_ports %r is not FROM-TO" % (ephemeral_ports,)) from exc
    model = _plain(model)
    if not isinstance(model, Mapping) or "interfaces" not in model:
        raise AnsibleFilterError("security_groups_evaluate: the input must be the result of security_groups_model, got %r" % (type(model).__name__,))
    clients = (_secgroups.interface_clients(model) if node_clients else []) + list(_plain(clients) or [])
    return _call("security_groups_evaluate", _secgroups.evaluate, model, servers, clients, ephemeral=ephemeral,
                 prefix_lists=prefix_lists, check_nacls=check_nacls)


def security_groups_fix_plan(evaluation, model, target_groups=None, manage_nacl=False, priority=1, description="clusterdns.doctor: DNS (SG001)",
                             server_cidrs=None):
    return _call("security_groups_fix_plan", _secgroups.fix_plan, evaluation, model, target_groups=target_groups, manage_nacl=bool(manage_nacl),
                 priority=int(priority), description=description, server_cidrs=server_cidrs or None)


def security_groups_module_rules(group):
    if not isinstance(group, Mapping):
        raise AnsibleFilterError("security_groups_module_rules: the input must be one group of ec2_security_group_info, got %r" % (group,))
    return _call("security_groups_module_rules", _secgroups.module_rules, group)


def security_groups_summary(evaluation, limit=20):
    return _call("security_groups_summary", _secgroups.summary, evaluation, limit=int(limit))


def security_groups_flow_key(entry):
    """check|protocol|client|server of one blocked flow (to compare evaluations before and after a change)."""
    if not isinstance(entry, Mapping):
        raise AnsibleFilterError("security_groups_flow_key: the input must be one entry of an evaluation's blocked list, got %r" % (entry,))
    return "|".join(str(entry.get(k)) for k in ("check", "protocol", "client", "server"))


class FilterModule:
    def filters(self):
        return {
            "security_groups_model": security_groups_model,
            "security_groups_evaluate": security_groups_evaluate,
            "security_groups_fix_plan": security_groups_fix_plan,
            "security_groups_module_rules": security_groups_module_rules,
            "security_groups_summary": security_groups_summary,
            "security_groups_flow_key": security_groups_flow_key,
        }
