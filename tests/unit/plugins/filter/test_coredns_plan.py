# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The coredns_plan filters as the coredns role calls them: bad input is an AnsibleFilterError that
says what was expected; good input is the plan of _coredns_workload (tested there)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.filter.coredns_plan import FilterModule

FILTERS = FilterModule().filters()
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": "kube-system", "generation": 2},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                       "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                                    "spec": {"containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.12.1"}]}}},
              "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}}


@pytest.mark.parametrize("args,message", [
    (("not a dict",), "must be a dict of API objects"),
    (({"deployment": DEPLOYMENT}, "CDNS002"), "findings must be a list"),
    (({"deployment": DEPLOYMENT}, [], {"force": ["all"]}), "unknown action"),
    (({"deployment": DEPLOYMENT, "hpas": [{"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "coredns"}, "minReplicas": "x"}}]}, ["CDNS002"], {}),
     "shape of a Kubernetes API object"),
])
def test_workload_plan_bad_input(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        FILTERS["coredns_workload_plan"](*args)


def test_workload_plan_through_the_filter():
    facts = {"deployment": DEPLOYMENT, "deployments": [DEPLOYMENT], "pdbs": [], "hpas": []}
    plan = FILTERS["coredns_workload_plan"](facts, ["CDNS002"], {"min_replicas": 2})
    assert [c["definition"] for c in plan["changes"] if c["kind"] == "Deployment"] == [{"spec": {"replicas": 2}}]


def test_rollout_and_endpoints_filters():
    assert FILTERS["coredns_rollout_status"](DEPLOYMENT)["done"] is True
    assert FILTERS["coredns_ready_endpoints"]([{"endpoints": [{"addresses": ["10.201.0.21"]}, {"addresses": ["10.201.0.22"],
                                                                                               "conditions": {"ready": False}}]}]) == ["10.201.0.21"]
    for name, bad in (("coredns_rollout_status", []), ("coredns_ready_endpoints", {}), ("coredns_autoscaler", "x")):
        with pytest.raises(AnsibleFilterError, match="expects"):
            FILTERS[name](bad)
    assert FILTERS["coredns_autoscaler"]([DEPLOYMENT]) is None
