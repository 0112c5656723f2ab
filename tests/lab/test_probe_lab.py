# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dns_probe in the cluster lab: each connectivity fault is put on the right hop.

For every fault, dns_probe (the module, run as a process with its ``netns`` option) probes the hops
of docs/probe.md from pod1's namespace (kube-dns ClusterIP, both CoreDNS pod IPs, node1's address),
from node1 itself and from CoreDNS replica a's namespace (its upstream); _rules_probe.locate turns
the results into verdicts, and the test checks which hop they blame.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import lab, labctl

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS = os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")).split(":")[0]
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.clusterdns.doctor.plugins.module_utils import _rules_probe  # noqa: E402

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("healed")]

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dns_probe"
CLUSTER_NAME = "kubernetes.default.svc.cluster.local"
EXTERNAL_NAME = "www.lab.example"
POD1, NODE1 = lab.pod_ns(1), lab.node_ns(1)


def probe(netns, servers, hop, names=(CLUSTER_NAME,), transports=("udp", "tcp"), timeout=1.0):
    args = {"names": list(names), "servers": list(servers), "transports": list(transports), "count": 4, "rate": 50,
            "timeout": timeout, "max_seconds": 60, "netns": netns, "hop": hop}
    proc = subprocess.run([sys.executable, "-m", MODULE], input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, result
    return result["results"]


def survey(node_resolver=False):
    """All hops as diagnose would probe them; returns (results, verdicts)."""
    results = probe(POD1, ["10.96.0.10"], "pod-clusterip")
    results += probe(POD1, list(lab.DNS_SLOTS.values()), "pod-endpoint")
    results += probe(lab.dns_ns("a"), ["10.201.0.53"], "coredns-upstream", names=(EXTERNAL_NAME,))
    if node_resolver:
        results += probe(POD1, [lab.node_ip(1)], "node-resolver", names=(EXTERNAL_NAME,), transports=("udp",))
        results += [dict(r, netns=None) for r in probe(NODE1, [lab.node_ip(1)], "node-resolver", names=(EXTERNAL_NAME,), transports=("udp",))]
    return results, _rules_probe.locate(results)


def blamed(verdicts):
    return sorted({(v["hop"], v["origin"], v["transport"], v["classification"]) for v in verdicts})


def test_healthy_lab_has_no_verdict(api):
    results, verdicts = survey()
    assert verdicts == [], verdicts
    assert all(r["classification"] == "ok" for r in results)


def test_firewall_udp53_is_a_udp_rule_on_the_pod_path(api):
    labctl("fault", "firewall-udp53")
    _results, verdicts = survey()
    assert blamed(verdicts) == [("pod-clusterip", "pod", "udp", "timeout"), ("pod-endpoint", "pod", "udp", "timeout")]
    assert all("TCP to the same hop answers" in v["detail"] for v in verdicts)


def test_dnsmasq_except_interface_is_the_node_resolver_seen_from_the_pod(api):
    labctl("fault", "dnsmasq-except-interface")
    _results, verdicts = survey(node_resolver=True)
    assert blamed(verdicts) == [("node-resolver", "pod", "udp", "timeout")]
    assert "DMQ001" in verdicts[0]["detail"] and "node's own query" in verdicts[0]["detail"]


def test_coredns_down_is_coredns(api):
    labctl("fault", "coredns-down")
    _results, verdicts = survey()
    hops = {(v["hop"], v["classification"]) for v in verdicts}
    assert {h for h, _c in hops} == {"pod-clusterip", "pod-endpoint"}
    assert {c for _h, c in hops} == {"unreachable"}
    assert all("CDNS001" in v["detail"] for v in verdicts if v["hop"] == "pod-clusterip")


def test_upstream_timeout_is_the_upstream(api):
    labctl("fault", "upstream-timeout")
    _results, verdicts = survey()
    assert blamed(verdicts) == [("coredns-upstream", "pod", "tcp", "timeout"), ("coredns-upstream", "pod", "udp", "timeout")]
    assert all("only its upstream fails" in v["detail"] for v in verdicts)


def test_no_endpoints_is_the_clusterip_path(api):
    labctl("fault", "no-endpoints")
    _results, verdicts = survey()
    assert blamed(verdicts) == [("pod-clusterip", "pod", "tcp", "unreachable"), ("pod-clusterip", "pod", "udp", "unreachable")]
    assert all("kube-proxy rules" in v["detail"] and "IPT001" in v["next_hop"] for v in verdicts)


def test_nodelocal_blackhole_is_the_clusterip_path(api):
    labctl("fault", "nodelocal-blackhole")
    _results, verdicts = survey()
    assert {v["hop"] for v in verdicts} == {"pod-clusterip"}
    assert all("NLD001" in v["detail"] for v in verdicts)
