#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: workload_dns_info
short_description: How the workloads of a cluster resolve names - dnsPolicy, dnsConfig, ndots, musl images, StatefulSet Services
version_added: 1.0.0
description:
  - Lists pods, Services and StatefulSets through the Kubernetes API and returns aggregated counts
    with a few examples per problem as RV(workloads), the C(workloads) part of the cluster facts
    that the C(clusterdns.doctor.dns_findings) filter evaluates (WL001 to WL004, CDNS004).
  - Per pod, the dnsPolicy (an unset policy is C(ClusterFirst)), a dnsConfig, hostNetwork and the
    effective C(ndots) the kubelet writes (5 for C(ClusterFirst) off the host network and
    C(ClusterFirstWithHostNet), overridden by C(dnsConfig.options)).
  - Images that look musl-based. The heuristic is the word C(alpine) in the image repository path or
    tag (C(alpine:3.20), C(nginx:1.27-alpine), C(node:20-alpine3.18)); an image built from Alpine under
    another name is not recognised.
  - StatefulSets whose C(serviceName) names no Service or a Service that is not headless, and Services
    that carry C(service.alpha.kubernetes.io/tolerate-unready-endpoints) without
    C(publishNotReadyAddresses).
  - Pods are read in pages of O(page_size) up to O(max_pods); the result size does not grow with the
    cluster (counts plus at most O(examples) examples per problem).
  - An API server that does not answer, or missing permissions, give RV(workloads.available=false)
    and the reason; the module fails only on bad options.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - kubernetes >= 24.2.0 (Python client, as for C(kubernetes.core))
  - PyYAML >= 3.11
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.info_module
options:
  namespace:
    description: Only this namespace. Default is every namespace.
    type: str
  max_pods:
    description: Read at most this many pods; RV(workloads.truncated) says when there were more.
    type: int
    default: 10000
  page_size:
    description: Objects per list request (the API's C(limit)).
    type: int
    default: 500
  examples:
    description: Examples kept per problem.
    type: int
    default: 10
  request_timeout:
    description: Seconds to wait for each API request.
    type: int
    default: 20
seealso:
  - module: clusterdns.doctor.coredns_info
  - name: DNS for Services and Pods (Kubernetes documentation)
    description: dnsPolicy, dnsConfig and the resolv.conf the kubelet writes.
    link: https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/
"""

EXAMPLES = r"""
- name: How the workloads resolve names
  clusterdns.doctor.workload_dns_info:
  register: workloads

- name: Show hostNetwork pods that cannot resolve cluster names
  ansible.builtin.debug:
    msg: "{{ workloads.workloads.host_network_cluster_first.examples }}"
  when: workloads.workloads.available

- name: One namespace, first 2000 pods
  clusterdns.doctor.workload_dns_info:
    namespace: shop
    max_pods: 2000
  register: workloads
"""

RETURN = r"""
workloads:
  description: Aggregated workload DNS facts.
  returned: always
  type: dict
  contains:
    available:
      description: Whether the lists could be read.
      type: bool
      returned: always
      sample: true
    reason:
      description: Why not.
      type: str
      returned: always
      sample: null
    pods_scanned:
      description: Pods read.
      type: int
      returned: success
      sample: 2
    truncated:
      description: Whether more than O(max_pods) pods exist.
      type: bool
      returned: success
      sample: false
    dns_policy:
      description: Pods per effective dnsPolicy.
      type: dict
      returned: success
      sample: {"ClusterFirst": 2}
    ndots:
      description: Pods per effective ndots (V(node) when the node's resolv.conf decides).
      type: dict
      returned: success
      sample: {"5": 2}
    host_network_cluster_first:
      description: C(count) and C(examples) (namespace, name, owner) of hostNetwork pods with dnsPolicy ClusterFirst.
      type: dict
      returned: success
      sample: {"count": 0, "examples": []}
    ndots5:
      description: C(count) and C(examples) of pods that resolve with ndots 5 or more.
      type: dict
      returned: success
      sample: {"count": 2, "examples": [{"namespace": "default", "name": "dnsutils-node1", "owner": null, "ndots": 5, "dns_policy": "ClusterFirst"}]}
    dns_config:
      description: C(count) and C(examples) of pods with a dnsConfig.
      type: dict
      returned: success
      sample: {"count": 0, "examples": []}
    musl_images:
      description: C(count) of pods and C(examples) (image, pods, example_pod) of images that look musl-based.
      type: dict
      returned: success
      sample: {"count": 1, "examples": [{"image": "nginx:1.27-alpine", "pods": 1, "example_pod": "web/nginx-0"}]}
    statefulsets_without_headless:
      description: C(count) and C(examples) (namespace, name, service_name, reason).
      type: dict
      returned: success
      sample: {"count": 1, "examples": [{"namespace": "default", "name": "web", "service_name": "web", "reason": "names no Service in namespace default"}]}
    tolerate_unready:
      description: C(count) and C(examples) (namespace, name, headless) of Services relying on the tolerate-unready annotation.
      type: dict
      returned: success
      sample: {"count": 0, "examples": []}
"""

import copy

from ansible_collections.clusterdns.doctor.plugins.module_utils._k8s_reader import api_reader
from ansible_collections.clusterdns.doctor.plugins.module_utils._workloads import collect
from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


def argspec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace={"type": "str"},
        max_pods={"type": "int", "default": 10000},
        page_size={"type": "int", "default": 500},
        examples={"type": "int", "default": 10},
        request_timeout={"type": "int", "default": 20},
    )
    return spec


def main():
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True)
    p = module.params
    for name in ("max_pods", "page_size", "examples"):
        if p[name] < 1:
            module.fail_json(msg="%s must be 1 or more, got %d" % (name, p[name]))
    read, reason = api_reader(module, p["request_timeout"])
    if read is None:
        module.exit_json(changed=False, workloads={"available": False, "reason": reason})
    result = collect(read, namespace=p["namespace"], max_pods=p["max_pods"], page_size=p["page_size"], examples=p["examples"])
    module.exit_json(changed=False, workloads=result)


if __name__ == "__main__":
    main()
