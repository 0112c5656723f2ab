# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Locating the broken hop from dns_probe results (results built with _probe.TargetStats, the module's own counters)."""

from __future__ import annotations

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _probe, _rules_probe
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput


def entry(hop, server, transport, answered, sent=10, timeouts=None, rcode=0, origin="pod", unreachable=0):
    stats = _probe.TargetStats(server, 53, transport, hop)
    stats.sent = sent
    for _answer in range(answered):
        stats.answer(rcode, 0.001)
    for _error in range(unreachable):
        stats.error("unreachable")
    stats.timeouts = sent - answered - unreachable if timeouts is None else timeouts
    item = {"hop": hop, "server": server, "transport": transport, "result": stats.summary()}
    if origin:
        item["origin"] = origin
    return item


def test_everything_answering_gives_nothing():
    assert _rules_probe.locate([entry("pod-clusterip", "10.96.0.10", "udp", 10), entry("pod-endpoint", "10.244.1.5", "udp", 10)]) == []


def test_clusterip_down_while_the_endpoint_answers_points_at_kube_proxy():
    (verdict,) = _rules_probe.locate([entry("pod-clusterip", "10.96.0.10", "udp", 0), entry("pod-endpoint", "10.244.1.5", "udp", 10)])
    assert (verdict["id"], verdict["severity"], verdict["hop"], verdict["classification"]) == ("PRB001", "critical", "pod-clusterip", "timeout")
    assert "kube-proxy rules or conntrack" in verdict["detail"] and "0 of 10" in verdict["detail"]


def test_clusterip_and_endpoint_down_points_at_coredns():
    verdicts = _rules_probe.locate([entry("pod-clusterip", "10.96.0.10", "udp", 0), entry("pod-endpoint", "10.244.1.5", "udp", 0, unreachable=10)])
    assert [(v["hop"], v["classification"]) for v in verdicts] == [("pod-clusterip", "timeout"), ("pod-endpoint", "unreachable")]
    assert "CDNS001" in verdicts[0]["detail"]


def test_seed003_pod_times_out_where_the_node_answers():
    verdicts = _rules_probe.locate([entry("node-resolver", "169.254.25.10", "udp", 0, origin="pod"),
                                    entry("node-resolver", "169.254.25.10", "udp", 5, sent=5, origin="node")])
    assert [(v["id"], v["origin"]) for v in verdicts] == [("PRB001", "pod")]
    assert "DMQ001" in verdicts[0]["detail"] and "seed 003" in verdicts[0]["detail"]


def test_udp_only_failure_names_a_udp_rule():
    (verdict,) = _rules_probe.locate([entry("node-resolver", "169.254.25.10", "udp", 0, origin="pod"),
                                      entry("node-resolver", "169.254.25.10", "tcp", 10, origin="pod")])
    assert "TCP to the same hop answers" in verdict["detail"] and "IPT002" in verdict["detail"]


@pytest.mark.parametrize(("answered", "expected"), [(195, [("PRB002", "warning")]), (180, [("PRB002", "error")]), (199, [])])
def test_partial_loss_by_ratio(answered, expected):
    verdicts = _rules_probe.locate([entry("pod-clusterip", "10.96.0.10", "udp", answered, sent=200)])
    assert [(v["id"], v["severity"]) for v in verdicts] == expected


def test_upstream_servfail_while_coredns_answers_the_pods():
    verdicts = _rules_probe.locate([entry("pod-endpoint", "10.244.1.5", "udp", 10),
                                    entry("coredns-upstream", "172.25.4.1", "udp", 10, rcode=2)])
    assert [(v["id"], v["classification"]) for v in verdicts] == [("PRB003", "servfail")]
    assert "only its upstream fails" in verdicts[0]["detail"] and verdicts[0]["evidence"]["rcodes"] == {"SERVFAIL": 10}


def test_bad_fact_names_the_entry():
    with pytest.raises(InvalidInput, match=r"clusterdns_probe\[1\] has no result"):
        _rules_probe.locate([entry("pod-clusterip", "10.96.0.10", "udp", 10), {"hop": "pod-endpoint"}])
    with pytest.raises(InvalidInput, match="must be a list"):
        _rules_probe.locate({"hop": "x"})


def test_plain_module_results_are_a_valid_fact_with_origin_from_netns():
    pod = dict(entry("node-resolver", "169.254.25.10", "udp", 0)["result"], netns="/proc/4242/ns/net")
    node = dict(entry("node-resolver", "169.254.25.10", "udp", 5, sent=5)["result"], netns=None)
    (verdict,) = _rules_probe.locate([pod, node])
    assert (verdict["origin"], verdict["server"], verdict["transport"]) == ("pod", "169.254.25.10", "udp")
    assert "node's own query" in verdict["detail"]


def test_probe_findings_through_the_engine_with_and_without_a_kernel_trace():
    """PRB001 (the pod's query to the node's dnsmasq times out, the node's own answers) becomes a
    finding naming the hop; a real kernel trace that saw no drop adds that the application discarded it."""
    import json as _json
    import pathlib as _pathlib

    from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings

    fixtures = _pathlib.Path(__file__).parent / "fixtures"
    probes = [entry("node-resolver", "169.254.25.10", "udp", 0, origin="pod"), entry("node-resolver", "169.254.25.10", "udp", 5, sent=5, origin="node")]
    result = _findings.evaluate({"node1": {"clusterdns_probe": probes}})
    prb001 = [f for f in result["findings"] if f["id"] == "PRB001"]
    assert prb001 and prb001[0]["severity"] == "critical" and prb001[0]["evidence"]["hop"] == "node-resolver"
    clean = _json.loads((fixtures / "droptrace" / "module-result-clean.json").read_text())
    clean = clean.get("ansible_facts", {}).get("clusterdns_drop_trace", clean)
    traced = _findings.evaluate({"node1": {"clusterdns_probe": probes, "clusterdns_drop_trace": clean}})
    (first,) = [f for f in traced["findings"] if f["id"] == "PRB001"][:1]
    assert "dropped no UDP DNS packet" in first["detail"] and "the server discarded them (interface filtering, as in seed 003)" in first["detail"]
    skipped = {c["id"]: c for c in _findings.evaluate({"node1": {}})["checks"]}
    assert skipped["PRB001"]["status"] == "skip" and "no probe results" in skipped["PRB001"]["reason"]
