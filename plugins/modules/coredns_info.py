#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: coredns_info
short_description: CoreDNS, the kube-dns Service, the Corefile, CoreDNS RBAC, NodeLocal DNSCache and kube-proxy mode of a cluster
version_added: 1.0.0
description:
  - Reads, through the Kubernetes API, what cluster DNS is made of and returns it as RV(cluster),
    the cluster facts the C(clusterdns.doctor.dns_findings) filter evaluates.
  - The CoreDNS Deployment (image, version from the image tag, replicas, ready replicas, spread over
    nodes, anti-affinity, topology spread, resources, a cluster-proportional-autoscaler that scales
    it, its PodDisruptionBudget) and its pods (phase, readiness, restarts, last termination reason
    and message).
  - The kube-dns Service (ClusterIPs, sessionAffinity, ports, annotations) and its EndpointSlices
    (ready and not-ready addresses), next to the CoreDNS pod addresses.
  - The Corefile from the CoreDNS ConfigMap, parsed; a Corefile that does not parse is returned
    with the line and the parser message, not as a failure.
  - CoreDNS RBAC, whether the CoreDNS service account may list and watch EndpointSlices, Services,
    Namespaces and Pods cluster-wide, from the ClusterRoleBindings that name it and their ClusterRoles.
  - NodeLocal DNSCache (DaemonSet, ConfigMap, local addresses, Corefile) and kube-proxy's mode
    from its ConfigMap (C(config.conf)) or DaemonSet arguments.
  - With O(metrics=true), the C(:9153) Prometheus metrics of every Running CoreDNS pod, read through
    the API server's pod proxy twice, O(metrics_interval) seconds apart, and summed up as RV(cluster.metrics)
    (queries per second, responses by rcode, CPU cores used against the container's CPU limit, forward
    C(max_concurrent) rejects, upstream answers by rcode, health check failures, cache hit ratio, panics,
    reload failures), what CDNS009 (CoreDNS out of CPU or over capacity) evaluates.
  - Runs on the controller (C(delegate_to localhost)); it only reads.
  - An API server that does not answer gives RV(cluster.available=false) with the reason; an object
    that cannot be read (HTTP 403, missing) gives that section C(available=false) and the reason.
    The module fails only on bad options.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - kubernetes >= 24.2.0 (Python client, as for C(kubernetes.core))
  - PyYAML >= 3.11
notes:
  - Read access is enough; C(docs/rbac/clusterdns-diagnose.yml) is a ClusterRole with exactly what
    this module and C(clusterdns.doctor.workload_dns_info) read, and a Role in O(namespace) with
    C(get pods/proxy) for O(metrics=true).
  - O(metrics=true) takes O(metrics_interval) seconds (one sleep for all pods). A pod whose metrics
    cannot be read (HTTP 403 without C(pods/proxy), no C(prometheus) plugin on O(metrics_port)) is
    listed in C(errors) of RV(cluster.metrics); no pod read at all gives C(available=false) there.
  - The CoreDNS version comes from the image tag. Images pinned by digest only, or with a tag that
    is not a version, give a C(null) version in RV(cluster.coredns).
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.info_module
options:
  namespace:
    description: Namespace of CoreDNS, its ConfigMap, the kube-dns Service and NodeLocal DNSCache.
    type: str
    default: kube-system
  label_selector:
    description:
      - Equality label selector of the CoreDNS pods (and Deployment).
      - A Deployment named C(coredns) is used when none carries the label.
    type: str
    default: k8s-app=kube-dns
  service:
    description: Name of the cluster DNS Service. When missing, the first Service with O(label_selector) is used.
    type: str
    default: kube-dns
  configmap:
    description:
      - Name of the ConfigMap that holds the C(Corefile) key.
      - Default is the ConfigMap volume of the CoreDNS Deployment (C(coredns) when it has none).
    type: str
  nodelocaldns_name:
    description: Name of the NodeLocal DNSCache DaemonSet and ConfigMap.
    type: str
    default: node-local-dns
  request_timeout:
    description: Seconds to wait for each API request.
    type: int
    default: 20
  metrics:
    description:
      - Read the CoreDNS pods' Prometheus metrics through the API server's pod proxy
        (C(GET /api/v1/namespaces/NAMESPACE/pods/POD:PORT/proxy/metrics), needs C(get pods/proxy)).
    type: bool
    default: false
  metrics_port:
    description: Port of the CoreDNS C(prometheus) plugin (C(prometheus :9153) in the Corefile).
    type: int
    default: 9153
  metrics_interval:
    description:
      - Seconds between the two reads of each pod's metrics; the rates in RV(cluster.metrics) are over
        this interval. V(0) reads once (totals since each CoreDNS started, no rates; CDNS009 is then skipped).
    type: float
    default: 10
seealso:
  - module: clusterdns.doctor.workload_dns_info
  - module: kubernetes.core.k8s_info
  - name: Debugging DNS resolution (Kubernetes documentation)
    description: The checks this module automates.
    link: https://kubernetes.io/docs/tasks/administer-cluster/dns-debugging-resolution/
"""

EXAMPLES = r"""
- name: Read the cluster DNS set-up of the current kubeconfig
  clusterdns.doctor.coredns_info:
  register: coredns

- name: Show CoreDNS version and ready replicas
  ansible.builtin.debug:
    msg: "{{ coredns.cluster.coredns.deployment.version }} {{ coredns.cluster.coredns.deployment.ready_replicas }}"
  when: coredns.cluster.available

- name: CoreDNS load over 15 seconds (queries per second, CPU, max_concurrent rejects)
  clusterdns.doctor.coredns_info:
    metrics: true
    metrics_interval: 15
  register: coredns

- name: Show the queries per second of each CoreDNS pod
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.qps }} qps, {{ item.value.cpu_usage_cores }} cores"
  loop: "{{ coredns.cluster.metrics.pods | dict2items }}"
  when: coredns.cluster.metrics.available

- name: A k3s cluster, another kubeconfig
  clusterdns.doctor.coredns_info:
    kubeconfig: ~/.kube/k3s.yaml
    context: default
  register: coredns
"""

RETURN = r"""
cluster:
  description: Cluster DNS facts.
  returned: always
  type: dict
  contains:
    available:
      description: Whether the API server answered.
      type: bool
      returned: always
      sample: true
    reason:
      description: Why not.
      type: str
      returned: always
      sample: null
    server_version:
      description: The API server's C(gitVersion).
      type: str
      returned: success
      sample: v1.34.4
    errors:
      description: Every request that failed (HTTP 403 and the like), one sentence each.
      type: list
      elements: str
      returned: always
      sample: []
    coredns:
      description: >-
        C(deployment) (namespace, name, image, version [major, minor, patch], replicas, ready_replicas,
        node_spread, anti_affinity, topology_spread, resources, service_account, autoscaler),
        C(pods) (name, node, ip, phase, ready, restarts, waiting_reason, last_termination with
        reason, exit_code, message), C(pdb), C(reason) when no Deployment was found.
      type: dict
      returned: success
      sample: {"deployment": {"name": "coredns", "version": [1, 12, 4], "replicas": 2, "ready_replicas": 2,
               "node_spread": {"node1": 1, "node2": 1}}, "pods": [], "pdb": null, "reason": null}
    kube_dns:
      description: >-
        The kube-dns Service, C(name), C(cluster_ip), C(cluster_ips), C(session_affinity), C(ports),
        C(annotations), C(endpoints) (C(ready) and C(not_ready) addresses of its EndpointSlices),
        C(pod_ips) (the CoreDNS pods').
      type: dict
      returned: success
      sample: {"cluster_ip": "10.96.0.10", "session_affinity": "None", "endpoints": {"ready": ["10.201.0.21"], "not_ready": []}}
    configmap_name:
      description: The ConfigMap the Corefile was read from.
      type: str
      returned: success
      sample: coredns
    corefile:
      description: C(text), C(parsed) (server blocks) or C(parse_error) (C(message), C(lineno), C(line)).
      type: dict
      returned: success
      sample: {"text": ".:53 {\n    errors\n}\n", "parsed": [], "parse_error": null}
    rbac:
      description: >-
        C(service_account), C(bindings), C(cluster_roles), C(can) (for example
        C(list endpointslices.discovery.k8s.io) true or false), C(namespaced_only).
      type: dict
      returned: success
      sample: {"service_account": "kube-system/coredns", "can": {"list endpointslices.discovery.k8s.io": true}}
    nodelocaldns:
      description: C(present), C(daemonset), C(configmap), C(local_ip), C(corefile).
      type: dict
      returned: success
      sample: {"present": false, "daemonset": null, "configmap": null, "local_ip": [], "corefile": null}
    kube_proxy:
      description: C(present), C(mode) (V(iptables), V(ipvs), V(nftables); an empty mode is V(iptables)), C(source).
      type: dict
      returned: success
      sample: {"present": true, "mode": "ipvs", "source": "ConfigMap kube-system/kube-proxy"}
    metrics:
      description:
        - The CoreDNS pods' metrics (O(metrics=true)). C(available), C(reason), C(port), C(interval_seconds),
          C(errors) (one sentence per pod that could not be read), C(pods) by pod name.
        - Per pod, totals of the last read (C(version), C(requests), C(responses) by rcode, C(forward)
          with C(upstreams), C(healthcheck_failures), C(healthcheck_broken), C(max_concurrent_rejects),
          C(cache), C(panics), C(reload_failed), C(reload_hashes), C(cpu_seconds), C(resident_memory_bytes)),
          C(cpu_limit_cores) and C(cpu_request_cores) of the CoreDNS container, C(cpu_usage_cores),
          C(cpu_limit_ratio), C(qps), C(node), C(reads), and C(rates) over the interval (C(qps),
          C(responses), C(cpu_cores), C(upstreams), C(max_concurrent_rejects), C(healthcheck_broken),
          C(healthcheck_failures), C(cache_hit_ratio), C(latency_avg_ms), C(panics), C(reload_failed);
          C(restarted=true) and no rates when the pod restarted between the reads).
      type: dict
      returned: when O(metrics=true) and the API server answered
      sample: {"available": true, "interval_seconds": 10.0, "port": 9153, "errors": [],
               "pods": {"coredns-a": {"qps": 16.1, "cpu_usage_cores": 0.005, "cpu_limit_cores": null,
                                      "rates": {"max_concurrent_rejects": 0.0, "responses": {"NOERROR": 72.0}}}}}
"""

import contextlib
import copy
import json

from ansible_collections.clusterdns.doctor.plugins.module_utils import _coredns_metrics
from ansible_collections.clusterdns.doctor.plugins.module_utils._cluster import ApiError, collect, parse_selector
from ansible_collections.clusterdns.doctor.plugins.module_utils._k8s_reader import api_reader
from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


def argspec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace={"type": "str", "default": "kube-system"},
        label_selector={"type": "str", "default": "k8s-app=kube-dns"},
        service={"type": "str", "default": "kube-dns"},
        configmap={"type": "str"},
        nodelocaldns_name={"type": "str", "default": "node-local-dns"},
        request_timeout={"type": "int", "default": 20},
        metrics={"type": "bool", "default": False},
        metrics_port={"type": "int", "default": 9153},
        metrics_interval={"type": "float", "default": 10},
    )
    return spec


def text_fetcher(module, timeout):
    """``fetch(path) -> str``: a GET through kubernetes.core's client that returns the body as text
    (the pod proxy answers in the Prometheus text format, not JSON); failures raise ApiError."""
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client  # pylint: disable=import-outside-toplevel

    client = get_api_client(module)

    def fetch(path):
        try:
            resp = client.client.request("get", path, serialize=False, _request_timeout=timeout,
                                         header_params={"Accept": "text/plain;version=0.0.4"})
        except Exception as exc:  # pylint: disable=broad-except  # urllib3, ssl and API errors alike
            status = getattr(exc, "status", None)
            if not status:
                text = str(exc).strip().splitlines()
                raise ApiError(None, text[0] if text else type(exc).__name__, path) from None
            message = getattr(exc, "reason", None) or ""
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                message = json.loads(getattr(exc, "body", None)).get("message") or message
            raise ApiError(int(status), message, path) from None
        return resp.data.decode("utf-8", "replace")

    return fetch


def metrics_facts(module, cluster):
    p = module.params
    coredns = cluster.get("coredns") or {}
    resources = (coredns.get("deployment") or {}).get("resources")
    return _coredns_metrics.collect(text_fetcher(module, p["request_timeout"]), coredns.get("pods") or [],
                                    namespace=p["namespace"], port=p["metrics_port"], interval=p["metrics_interval"],
                                    resources=resources)


def main():
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True)
    p = module.params
    try:
        parse_selector(p["label_selector"])
    except ValueError as exc:
        module.fail_json(msg="label_selector: %s" % exc)
    if not 0 <= p["metrics_interval"] <= 300:
        module.fail_json(msg="metrics_interval: %s is not between 0 and 300 seconds" % p["metrics_interval"])
    if not 0 < p["metrics_port"] < 65536:
        module.fail_json(msg="metrics_port: %s is not a port number (1-65535)" % p["metrics_port"])
    read, reason = api_reader(module, p["request_timeout"])
    if read is None:
        module.exit_json(changed=False, cluster={"available": False, "reason": reason, "errors": [reason]})
    cluster = collect(read, namespace=p["namespace"], label_selector=p["label_selector"], service_name=p["service"],
                      configmap_name=p["configmap"], nodelocal_name=p["nodelocaldns_name"])
    if p["metrics"] and cluster.get("available"):
        cluster["metrics"] = metrics_facts(module, cluster)
    module.exit_json(changed=False, cluster=cluster)


if __name__ == "__main__":
    main()
