# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_workload import PlanError, find_autoscaler, plan, ready_endpoints, rollout_status


def _plain(value):
    """Turn Ansible's lazy/templated containers into plain dicts, lists and strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def coredns_workload_plan(facts, findings=None, options=None):
    if not isinstance(facts, Mapping):
        raise AnsibleFilterError("coredns_workload_plan: the input must be a dict of API objects (deployment, service, ...), got %s"
                                 % type(facts).__name__)
    if isinstance(findings, str) or not isinstance(findings or [], (list, tuple)):
        raise AnsibleFilterError("coredns_workload_plan: findings must be a list of finding ids, got %r" % (findings,))
    try:
        return plan(_plain(facts), [str(f) for f in findings or []], _plain(options or {}))
    except PlanError as exc:
        raise AnsibleFilterError("coredns_workload_plan: %s" % exc) from exc
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise AnsibleFilterError("coredns_workload_plan: an input object does not have the shape of a Kubernetes API object (%s)" % exc) from exc


def coredns_autoscaler(deployments, target="coredns", namespace="kube-system"):
    if not isinstance(deployments, (list, tuple)):
        raise AnsibleFilterError("coredns_autoscaler: expects a list of Deployment objects, got %s" % type(deployments).__name__)
    return find_autoscaler(_plain(deployments), str(target), str(namespace))


def coredns_rollout_status(deployment):
    if not isinstance(deployment, Mapping):
        raise AnsibleFilterError("coredns_rollout_status: expects a Deployment object, got %s" % type(deployment).__name__)
    return rollout_status(_plain(deployment))


def coredns_ready_endpoints(slices):
    if not isinstance(slices, (list, tuple)):
        raise AnsibleFilterError("coredns_ready_endpoints: expects a list of EndpointSlice objects, got %s" % type(slices).__name__)
    return ready_endpoints(_plain(slices))


class FilterModule:
    def filters(self):
        return {
            "coredns_workload_plan": coredns_workload_plan,
            "coredns_autoscaler": coredns_autoscaler,
            "coredns_rollout_status": coredns_rollout_status,
            "coredns_ready_endpoints": coredns_ready_endpoints,
        }
