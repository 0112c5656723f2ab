# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The CoreDNS log classifier on real log lines from public GitHub issues (fixtures/corednslog/SOURCES.md)."""

from __future__ import annotations

import pathlib

from ansible_collections.clusterdns.doctor.plugins.module_utils import _corednslog

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "corednslog"


def summarize(*names, **options):
    lines = []
    for name in names:
        lines.extend((FIXTURES / name).read_text().splitlines(True))
    return _corednslog.summarize(lines, **options)


def test_servfail_for_external_name_makes_one_ticket_with_time():
    result = summarize("coredns3775-servfail-timestamps.log")
    assert (result["queries"], result["by_rcode"], result["by_qtype"]) == (5, {"NXDOMAIN": 3, "SERVFAIL": 2}, {"A": 5})
    (ticket,) = result["tickets"]
    assert (ticket["domain"], ticket["rcode"], ticket["count"]) == ("EXTERNALURL.", "SERVFAIL", 2)
    assert (ticket["first_time"], ticket["time"], ticket["lineno"]) == ("2020-03-25T16:36:53.164Z", "2020-03-25T16:36:53.166Z", 4)
    assert result["top_failed_names"] == [{"name": "EXTERNALURL.", "count": 2}]
    assert result["top_clients"] == [{"client": "10.42.192.21", "count": 5}]


def test_instance_option_fills_the_ticket():
    result = summarize("coredns3775-servfail-timestamps.log", instance="coredns-6d4b75cb6d-x2x4z")
    assert result["tickets"][0]["instances"] == ["coredns-6d4b75cb6d-x2x4z"]


def test_tcp_queries_and_top_names():
    result = summarize("coredns4513-tcp-noerror.log", "seed002-query.log")
    assert result["by_proto"] == {"tcp": 8, "udp": 1}
    assert result["by_rcode"] == {"NOERROR": 7, "NXDOMAIN": 2}
    assert result["top_names"][0] == {"name": "rwc.default.svc.cluster.local.", "count": 8}
    assert result["tickets"] == [] and result["unrecognised"] == 0


def test_node_cache_prefix_and_nxdomain_makes_no_ticket_by_default():
    result = summarize("coredns4066-node-cache-prefix.log")
    assert result["by_rcode"] == {"NXDOMAIN": 2} and result["tickets"] == []
    result = summarize("coredns4066-node-cache-prefix.log", ticket_rcodes=["NXDOMAIN"])
    assert [(t["domain"], t["instances"]) for t in result["tickets"]] == [("example.com.ec2.internal.", ["node-cache"])]


def test_upstream_timeouts_by_upstream():
    result = summarize("k8s86762-upstream-timeouts.log")
    assert result["errors"] == 7 and result["error_classes"] == {"timeout": 7}
    assert {k: v["count"] for k, v in result["upstream_errors"].items()} == {
        "169.254.25.10:53": 2, "172.31.136.23:53": 4, "172.31.136.24:53": 1}
    assert [(t["domain"], t["rcode"], t["reason"], t["count"]) for t in result["tickets"]] == [("lcr.acjus.jus.br.", "SERVFAIL", "timeout", 7)]


def test_loop_probe_timeouts_count_but_make_no_ticket():
    result = summarize("deployment225-hinfo-probe-timeouts.log")
    assert result["error_classes"] == {"timeout": 3} and set(result["upstream_errors"]) == {"172.23.83.11:53", "172.23.83.12:53"}
    assert result["tickets"] == [] and result["reloads"]["config_hash"] == "c01130958998acfddd4a8e74c3ad5d68"
    assert not result["loop_detected"]


def test_loop_detected_new_and_old_forms():
    loop = summarize("coredns2795-loop-detected.log")["loop"]
    assert (loop["zone"], loop["from"], loop["to"], loop["lineno"], loop["time"]) == (".", "127.0.0.1:34614", ":53", 7, "2019-04-17T00:18:44.486Z")
    old = summarize("kubeasz355-loop-seen-1.2.log")
    assert old["loop_detected"] and old["loop"]["time"] == "2018/11/05 13:48:22" and old["loop"]["lineno"] == 7


def test_reload_completed_and_failed():
    ok = summarize("deployment215-reload.log")["reloads"]
    assert (ok["count"], ok["completed"], ok["failed"], ok["config_hash"]) == (1, 1, 0, "c83324bafe01d7cfab8f6662ce9f398d")
    failed = summarize("coredns4729-aks-reload-failed.log")
    assert (failed["reloads"]["count"], failed["reloads"]["completed"], failed["reloads"]["failed"]) == (1, 0, 1)
    assert [e["instance"] for e in failed["corefile_errors"]] == ["coredns-75b9ff5757-7fmj7"] * 2
    assert "can only be used once per Server Block" in failed["corefile_errors"][0]["line"]


def test_kubernetes_rbac_forbidden_and_unsynced():
    result = summarize("khw295-endpointslice-forbidden.log", "coredns5495-unsynced-klog.log")
    assert result["kubernetes"]["count"] == 4
    assert result["kubernetes"]["forbidden"] == ["endpointslices"] and result["kubernetes"]["unsynced"]


def test_panic_lines():
    lines = ["[ERROR] Recovered from panic in server: \"dns://:53\" runtime error: invalid memory address or nil pointer dereference",
             "panic: runtime error: index out of range", "goroutine 1 [running]:"]
    result = _corednslog.summarize(lines)
    assert result["panics"]["count"] == 2 and result["unrecognised"] == 1


def test_memory_is_bounded_with_many_distinct_names():
    summary = _corednslog.LogSummary(track=50, max_tickets=3)
    line = '[INFO] 10.0.0.%d:5353 - 1 "A IN name%d.example. udp 29 false 512" SERVFAIL qr,rd 29 0.0001s'
    for i in range(5000):
        summary.add(line % (i % 200, i))
    summary.add(line % (1, 0))
    result = summary.result()
    assert len(summary.names.counts) <= 50 and result["counts_approximate"]
    assert (len(result["tickets"]), result["tickets_dropped"]) == (3, 4997)
    assert result["tickets"][0] == dict(result["tickets"][0], domain="name0.example.", count=2)
    assert result["by_rcode"] == {"SERVFAIL": 5001}


def test_top_counter_exact_until_full():
    counter = _corednslog.TopCounter(3)
    for key in "aabbbc":
        counter.add(key)
    assert counter.top(2) == [{"key": "b", "count": 3}, {"key": "a", "count": 2}] and not counter.approximate
