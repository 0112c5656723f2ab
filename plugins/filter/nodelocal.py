# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils import _nodelocal
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _list(value, what, name):
    if value is None:
        return []
    if isinstance(value, (str, Mapping)) or not isinstance(value, (list, tuple)):
        raise AnsibleFilterError("%s: %s must be a list, got %r" % (name, what, value))
    return _plain(list(value))


def nodelocaldns_listen(local_ip, mode, cluster_ips=None):
    try:
        return _nodelocal.listen_addresses(str(mode), str(local_ip), [str(ip) for ip in _list(cluster_ips, "cluster_ips", "nodelocaldns_listen")])
    except ValueError as exc:
        raise AnsibleFilterError("nodelocaldns_listen: %s" % exc) from exc


def nodelocaldns_cleanup_plan(saves, sockets, ip_addr_json, local_ips=None, interface="nodelocaldns"):
    if not isinstance(saves, Mapping):
        raise AnsibleFilterError("nodelocaldns_cleanup_plan: the input must map ipv4/ipv6 to iptables-save output, got %r" % (saves,))
    try:
        addresses = _nodelocal.parse_ip_addr(str(ip_addr_json or "[]"))
        return _nodelocal.cleanup_plan({str(k): str(v) for k, v in saves.items() if v}, _list(sockets, "sockets", "nodelocaldns_cleanup_plan"),
                                       addresses, [str(ip) for ip in _list(local_ips, "local_ips", "nodelocaldns_cleanup_plan")], str(interface))
    except ParseError as exc:
        raise AnsibleFilterError("nodelocaldns_cleanup_plan: %s" % exc) from exc


def nodelocaldns_rollout(daemonset, pods=None, nodes=None):
    if daemonset is not None and not isinstance(daemonset, Mapping):
        raise AnsibleFilterError("nodelocaldns_rollout: the input must be a DaemonSet object (or none), got %r" % (daemonset,))
    return _nodelocal.rollout(_plain(daemonset) if daemonset else None, _list(pods, "pods", "nodelocaldns_rollout"),
                              _list(nodes, "nodes", "nodelocaldns_rollout"))


def nodelocaldns_kubelet_dns(text, ips, source="config.yaml"):
    try:
        return _nodelocal.kubelet_cluster_dns(str(text), [str(ip) for ip in _list(ips, "ips", "nodelocaldns_kubelet_dns")], str(source))
    except ValueError as exc:  # ParseError is a ValueError
        raise AnsibleFilterError("nodelocaldns_kubelet_dns: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {
            "nodelocaldns_listen": nodelocaldns_listen,
            "nodelocaldns_cleanup_plan": nodelocaldns_cleanup_plan,
            "nodelocaldns_rollout": nodelocaldns_rollout,
            "nodelocaldns_kubelet_dns": nodelocaldns_kubelet_dns,
        }
