# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_droptrace parsers and _droptrace_bt rendering, on real captured outputs (fixtures/droptrace/SOURCES.md)."""

from __future__ import annotations

import json
import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _conntrack, _droptrace, _droptrace_bt, _findings
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput, ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "droptrace"


def _text(name):
    return (FIXTURES / name).read_text()


@pytest.fixture(scope="module")
def reasons():
    return _droptrace.parse_tracepoint_format(_text("linux-6.18-kfree_skb-format.txt"))["reasons"]


def _trace(name, reasons, ports=(53,)):
    return _droptrace.parse_trace_output(_text(name), reasons, ports, source=name)


# --- format file ------------------------------------------------------------------------------

def test_format_of_6_18_gives_reason_names_from_the_file():
    fmt = _droptrace.parse_tracepoint_format(_text("linux-6.18-kfree_skb-format.txt"))
    assert fmt["name"] == "kfree_skb" and fmt["id"] == 2310
    assert fmt["has_reason"] is True
    assert fmt["fields"]["reason"] == "enum skb_drop_reason"
    assert fmt["fields"]["location"] == "void *"
    # The names the issue talks about, with this kernel's numbers.
    assert fmt["reasons"][3] == "NO_SOCKET"
    assert fmt["reasons"][12] == "NETFILTER_DROP"
    assert fmt["reasons"][16] == "IP_RPFILTER"
    assert fmt["reasons"][6] == "SOCKET_RCVBUFF"
    assert fmt["reasons"][58] == "NEIGH_FAILED"
    assert fmt["reasons"][104] == "QUEUE_PURGE"
    assert min(fmt["reasons"]) == 2 and max(fmt["reasons"]) == 128
    assert len(fmt["reasons"]) == 127


def test_format_before_drop_reasons_has_no_reason_and_no_names():
    fmt = _droptrace.parse_tracepoint_format(_text("linux-pre5.17-kfree_skb-format.txt"))
    assert fmt["has_reason"] is False
    assert fmt["reasons"] == {}
    assert set(fmt["fields"]) >= {"skbaddr", "location", "protocol"}
    assert fmt["id"] == 1408


def test_format_numbers_follow_the_file_not_a_table():
    # A kernel that numbers reasons differently (synthetic edit of the real 6.18 file: the first
    # two pairs swapped) must give the names at the file's numbers.
    swapped = ('{ 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }', '{ 2, "NO_SOCKET" }, { 3, "NOT_SPECIFIED" }')
    text = _text("linux-6.18-kfree_skb-format.txt").replace(*swapped)
    fmt = _droptrace.parse_tracepoint_format(text)
    assert fmt["reasons"][2] == "NO_SOCKET" and fmt["reasons"][3] == "NOT_SPECIFIED"


def test_format_errors_name_the_file_and_what_was_expected():
    with pytest.raises(ParseError) as err:
        _droptrace.parse_tracepoint_format("hello\nworld\n", source="/x/format")
    assert "/x/format" in str(err.value) and "not a tracepoint format file" in str(err.value)
    # reason field, but the print format lost its symbolic list (synthetic truncation of the real file)
    text = _text("linux-6.18-kfree_skb-format.txt")
    cut = text[:text.index("__print_symbolic")] + '"\n'
    with pytest.raises(ParseError) as err:
        _droptrace.parse_tracepoint_format(cut, source="f")
    assert err.value.lineno is not None and "no drop reason names" in str(err.value)
    assert "__print_symbolic" in err.value.expected


# --- bpftrace --version ---------------------------------------------------------------------------

def test_bpftrace_version_from_the_real_output():
    assert _droptrace.parse_bpftrace_version(_text("bpftrace-version-0.17.txt")) == (0, 17, 0)
    assert _droptrace.parse_bpftrace_version("bpftrace v0.21.2-12-g1234abc\n") == (0, 21, 2)
    with pytest.raises(ParseError, match="unrecognised version line"):
        _droptrace.parse_bpftrace_version("bpftrace: command not found\n")
    with pytest.raises(ParseError, match="empty output"):
        _droptrace.parse_bpftrace_version("")


def test_kprobe_attach_error_is_recognised_in_real_stderr():
    stderr = _text("bpftrace-0.17-kprobe-unsupported-stderr.txt")
    assert _droptrace.probe_attach_error(stderr, "__nf_conntrack_confirm") == \
        "ERROR: Error attaching probe: 'kretprobe:__nf_conntrack_confirm'"
    # the warnings about the same symbol and the RLIMIT_MEMLOCK message are not attach errors
    assert _droptrace.probe_attach_error(stderr, "kfree_skb") is None
    assert _droptrace.probe_attach_error("", "__nf_conntrack_confirm") is None


# --- trace output -------------------------------------------------------------------------------

def test_netfilter_drop_records_carry_reason_location_netns_interface_and_flow(reasons):
    out = _trace("bpftrace-0.17-netfilter-drop.txt", reasons)
    assert out["seen"] == 3 and out["attached"] is not None and out["ended"] is not None
    assert out["budget_reached"] is False and out["lost_events"] == 0
    assert len(out["samples"]) == 3
    first = out["samples"][0]
    assert first["reason"] == "NETFILTER_DROP" and first["reason_code"] == 12
    assert first["location"] == "nft_do_chain"
    assert first["netns"] == 4026532315 and first["netns_from"] == "dev"
    assert first["interface"] == "cddcap1"
    assert (first["family"], first["protocol"], first["src"], first["dst"], first["dport"]) == ("ipv4", "udp", "192.0.2.1", "192.0.2.2", 53)
    assert first["direction"] == "query" and first["conntrack_confirm_failed"] is False
    assert 0 < first["t"] < 6
    v6 = out["samples"][2]
    assert (v6["family"], v6["src"], v6["dst"]) == ("ipv6", "2001:db8::1", "2001:db8::2")
    # the samples come in kernel order
    assert [s["t"] for s in out["samples"]] == sorted(s["t"] for s in out["samples"])
    assert out["drops"] == [{"reason": "NETFILTER_DROP", "reason_code": 12, "location": "nft_do_chain", "count": 3}]
    assert len(out["flows"]) == 3 and {f["count"] for f in out["flows"]} == {1}


def test_no_socket_drops_for_udp4_udp6_and_tcp(reasons):
    out = _trace("bpftrace-0.17-no-socket.txt", reasons)
    locations = {(s["reason"], s["location"], s["protocol"], s["family"]) for s in out["samples"]}
    assert locations == {("NO_SOCKET", "__udp4_lib_rcv", "udp", "ipv4"), ("NO_SOCKET", "__udp6_lib_rcv", "udp", "ipv6"),
                         ("NO_SOCKET", "tcp_v4_rcv", "tcp", "ipv4")}
    assert all(s["dst"] in ("192.0.2.3", "2001:db8::3") for s in out["samples"])


def test_clean_path_has_only_a_teardown_free_without_device(reasons):
    out = _trace("bpftrace-0.17-clean.txt", reasons)
    (sample,) = out["samples"]
    assert sample["reason"] == "QUEUE_PURGE" and sample["location"] == "sk_stream_kill_queues"
    assert sample["interface"] is None and sample["netns_from"] == "sk"
    assert sample["direction"] == "reply" and sample["sport"] == 53
    (flow,) = out["flows"]
    assert flow["interface"] is None and flow["count"] == 1
    agg = _droptrace.aggregate(out)
    assert agg["total"] == 1 and agg["losses"] == 0 and agg["teardown"] == 1
    assert agg["by_reason"] == [{"reason": "QUEUE_PURGE", "reason_code": 104, "kind": "teardown", "count": 1}]
    text = _droptrace.summarize(agg, 5)
    assert text.startswith("no kernel drop of DNS packets in 5.0 s")
    assert "1 more freed at socket teardown, not a loss: QUEUE_PURGE" in text


def test_budget_reached_and_samples_bounded(reasons):
    out = _trace("bpftrace-0.17-budget.txt", reasons)
    assert out["budget_reached"] is True
    assert len(out["samples"]) == 2  # rendered with samples=2
    assert out["seen"] == 3 and sum(f["count"] for f in out["flows"]) == 3


def test_location_only_mode_has_no_reason_names():
    out = _trace("bpftrace-0.17-locations-netfilter-drop.txt", None)
    assert {s["reason"] for s in out["samples"]} == {None}
    agg = _droptrace.aggregate(out)
    assert agg["by_location"] == [{"reason": None, "reason_code": 0, "location": "nft_do_chain", "count": 2, "kind": "loss"}]
    assert _droptrace.summarize(agg, 6) == "kernel dropped 2 DNS packets in 6.0 s: 2 (no reason field) in nft_do_chain"


def test_ports_decide_query_or_reply(reasons):
    out = _trace("bpftrace-0.17-netfilter-drop.txt", reasons, ports=(5353,))
    assert {s["direction"] for s in out["samples"]} == {"reply"}


def test_aggregate_orders_by_count_and_bounds_flows(reasons):
    nf = _trace("bpftrace-0.17-netfilter-drop.txt", reasons)
    ns = _trace("bpftrace-0.17-no-socket.txt", reasons)
    both = {"drops": nf["drops"] + ns["drops"], "flows": nf["flows"] + ns["flows"]}
    agg = _droptrace.aggregate(both, flow_limit=4)
    # equal counts: the lower reason code first
    assert [r["reason"] for r in agg["by_reason"]] == ["NO_SOCKET", "NETFILTER_DROP"]
    assert [r["count"] for r in agg["by_reason"]] == [3, 3]
    assert len(agg["flows"]) == 4 and agg["flows_truncated"] == 2
    assert agg["total"] == agg["losses"] == 6
    text = _droptrace.summarize(agg, 6)
    assert text.startswith("kernel dropped 6 DNS packets in 6.0 s: 3 NETFILTER_DROP in nft_do_chain, 1 NO_SOCKET in ")
    assert agg["by_location"][0]["location"] == "nft_do_chain"
    assert text.endswith(", and 1 more location(s)")


def test_unknown_reason_number_is_named_unknown(reasons):
    # synthetic: a sample line of the real capture with its reason number changed to one the 6.18 table lacks
    line = _text("bpftrace-0.17-netfilter-drop.txt").splitlines()[2].replace(" 12 nft_do_chain", " 999 nft_do_chain")
    out = _droptrace.parse_trace_output(line + "\n", reasons, (53,))
    assert out["samples"][0]["reason"] == "UNKNOWN_999"


def test_lost_events_line_is_counted(reasons):
    # synthetic: bpftrace prints "Lost N events" when its perf buffer overflows; not provoked here.
    text = _text("bpftrace-0.17-netfilter-drop.txt") + "Lost 7 events\n"
    assert _droptrace.parse_trace_output(text, reasons, (53,))["lost_events"] == 7


@pytest.mark.parametrize("bad", [
    "CDD-SAMPLE 1 12 nft_do_chain\n",                      # too few fields
    "@cdd_flows[12, nft_do_chain]: 3\n",                   # wrong key width
    "@something_else: 3\n",                                # a map we do not print
    "WARNING: who knows\n",                                # anything else
    "CDD-SAMPLE 1 12 x 1 dev lo 4 99 a 1 b 53 0\n",        # protocol 99 cannot come out of the filter
])
def test_trace_output_errors_name_the_line(bad, reasons):
    with pytest.raises(ParseError) as err:
        _droptrace.parse_trace_output("Attaching 4 probes...\n" + bad, reasons, (53,), source="bpftrace stdout")
    assert err.value.lineno == 2 and err.value.line == bad.rstrip("\n")
    assert "bpftrace stdout line 2" in str(err.value)


# --- conntrack stat, mounts, capabilities --------------------------------------------------------

def test_conntrack_stat_of_6_18_sums_cpus_and_takes_entries_once():
    before = _droptrace.parse_conntrack_stat(_text("linux-6.18-nf_conntrack-stat-before.txt"))
    assert before["entries"] == 0
    assert before["insert_failed"] == 0 and "clashres" in before and "chainlength" in before
    after = _droptrace.parse_conntrack_stat(_text("linux-6.18-nf_conntrack-stat-after.txt"))
    assert after["entries"] == 5  # both CPU rows say 5 (a global count): taken once, not summed
    assert _droptrace.conntrack_delta(before, after) == {"insert_failed": 0, "drop": 0, "clashres": 0, "early_drop": 0, "insert": 0}


def test_conntrack_delta_reports_increases():
    # synthetic numbers: the real captures above have all-zero counters on this kernel
    before = {"insert_failed": 10, "drop": 2, "clashres": 5, "early_drop": 0, "insert": 100}
    after = {"insert_failed": 14, "drop": 2, "clashres": 9, "early_drop": 0, "insert": 180}
    assert _droptrace.conntrack_delta(before, after) == {"insert_failed": 4, "drop": 0, "clashres": 4, "early_drop": 0, "insert": 80}
    # an older kernel without clashres: the column is left out, not invented
    assert "clashres" not in _droptrace.conntrack_delta({"insert_failed": 1}, {"insert_failed": 1, "clashres": 3})


def test_conntrack_stat_errors():
    with pytest.raises(ParseError, match="empty file"):
        _droptrace.parse_conntrack_stat("")
    header = _text("linux-6.18-nf_conntrack-stat-before.txt").splitlines()[0]
    with pytest.raises(ParseError) as err:
        _droptrace.parse_conntrack_stat(header + "\n00000001 00000002\n")
    assert err.value.lineno == 2 and "2 values for 17 counters" in str(err.value)


def test_tracefs_mounts_from_mountinfo():
    # lines in the layout of this machine's /proc/self/mountinfo (proc and sysfs real; the tracefs
    # line as it read while the module had tracefs mounted)
    mountinfo = (
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n"
        "640 23 0:62 / /sys/kernel/tracing rw,relatime - tracefs nodev rw\n"
    )
    assert _droptrace.tracefs_mounts(mountinfo) == ["/sys/kernel/tracing"]
    assert _droptrace.tracefs_mounts(mountinfo.splitlines()[0]) == []


@pytest.mark.parametrize(("capeff", "missing"), [
    ("000001fffeffffff", []),                  # root on the build machine (all but CAP_SYS_RESOURCE)
    ("0000000000000000", ["CAP_SYS_ADMIN"]),   # nobody
    ("000000c000000000", []),                  # CAP_BPF + CAP_PERFMON only
    ("0000008000000000", ["CAP_PERFMON"]),     # CAP_BPF only
])
def test_missing_capabilities(capeff, missing):
    assert _droptrace.missing_capabilities("Name:\tx\nCapEff:\t%s\n" % capeff) == missing


def test_missing_capabilities_without_capeff_line():
    with pytest.raises(ParseError, match="no CapEff line"):
        _droptrace.missing_capabilities("Name:\tx\n")


# --- the program text ---------------------------------------------------------------------------

def test_render_program_fills_every_marker_and_only_integers():
    text = _droptrace_bt.render_program([53, 5353, 53], 7, 20, 100)
    assert "@@" not in text
    assert "$sport == 53 || $dport == 53 || $sport == 5353 || $dport == 5353" in text
    assert "interval:s:7" in text and "@cdd_printed < 20" in text and "@cdd_seen >= 100" in text
    assert "kprobe:__nf_conntrack_confirm" in text and "args->reason" in text


def test_render_program_for_old_kernels_and_without_conntrack():
    text = _droptrace_bt.render_program([53], 5, 20, 0, reason_field=False, conntrack_probe=False)
    assert "args->reason" not in text and "$reason = (uint32)0;" in text
    assert "kprobe" not in text and "@cdd_ctfail" not in text


@pytest.mark.parametrize("kwargs", [
    {"ports": [0]}, {"ports": [70000]}, {"ports": ["53; system(\"x\")"]}, {"ports": []},
    {"seconds": 0}, {"seconds": True}, {"samples": -1}, {"budget": "1"},
])
def test_render_program_refuses_bad_numbers(kwargs):
    args = {"ports": [53], "seconds": 5, "samples": 20, "budget": 0}
    args.update(kwargs)
    with pytest.raises(ValueError):
        _droptrace_bt.render_program(**args)


# --- evidence helpers, on real module results (fixtures/droptrace/module-result-*.json) -----------

def _result(name):
    return json.loads(_text("module-result-%s.json" % name))


def test_drop_evidence_for_a_firewall_drop():
    trace = _result("netfilter-drop")
    evidence = _droptrace.drop_evidence(trace, reasons=("NETFILTER_DROP",))
    assert evidence["count"] == 4 and evidence["complete"] is True
    flow = evidence["examples"][0]
    # the namespace is named as the module found it (/run/netns name, the processes in it)
    assert evidence["text"] == (
        "kernel dropped 4 DNS packets in %.1f s: 4 NETFILTER_DROP in nft_do_chain; e.g. udp %s:%d -> 192.0.2.2:53 on %s (netns %d cdt29629s)"
        % (trace["window"]["seconds_traced"], flow["src"], flow["sport"], flow["interface"], flow["netns"]))
    assert evidence["namespaces"] == [{"netns": flow["netns"], "names": ["cdt29629s"], "processes": [{"pid": 29645, "comm": "dnsmasq"}]}]
    assert len(evidence["examples"]) == 3
    # other reasons, another namespace, the other direction: nothing to cite
    assert _droptrace.drop_evidence(trace, reasons=("NO_SOCKET",)) is None
    assert _droptrace.drop_evidence(trace, netns=(1,)) is None
    assert _droptrace.drop_evidence(trace, direction="reply") is None
    by_ns = _droptrace.drop_evidence(trace, netns=(flow["netns"],), direction="query")
    assert by_ns["count"] == 4 and by_ns["by_location"] == [{"reason": "NETFILTER_DROP", "reason_code": 12, "location": "nft_do_chain", "count": 4}]


def test_drop_evidence_ipv6_endpoint_and_truncated_flows():
    trace = _result("no-socket")
    evidence = _droptrace.drop_evidence(trace, direction="query")
    assert evidence["count"] == 2
    v6 = [f for f in evidence["examples"] if f["family"] == "ipv6"]
    assert v6 and v6[0]["dst"] == "2001:db8::3"
    # synthetic: the same real result as if the module had left flows out (max_flows)
    trace = dict(trace, flows=trace["flows"][:1], flows_truncated=1)
    evidence = _droptrace.drop_evidence(trace, direction="query")
    assert evidence["complete"] is False and evidence["count"] == 1
    assert evidence["text"].endswith("(at least; some flows were not returned)")


def test_kernel_verdict_tells_kernel_drop_from_application_discard():
    assert _droptrace.kernel_verdict(_result("netfilter-drop")) == "dropped"
    # the clean run has one QUEUE_PURGE (TCP teardown): still no kernel drop
    clean = _result("clean")
    assert clean["teardown_drops"] == 1
    assert _droptrace.kernel_verdict(clean) == "not_dropped"
    assert _droptrace.drop_evidence(clean) is None
    assert _droptrace.kernel_verdict({"available": False, "reason": "needs root"}) is None


def test_conntrack_confirmation():
    # real results: counters method, no insert failure on this kernel
    assert _droptrace.conntrack_confirmation(_result("netfilter-drop")) is None
    # synthetic deltas on the real result's structure
    trace = _result("netfilter-drop")
    trace["conntrack"] = dict(trace["conntrack"], counters_delta=dict(trace["conntrack"]["counters_delta"], insert_failed=3))
    seen = _droptrace.conntrack_confirmation(trace)
    assert seen["method"] == "counters" and seen["insert_failed"] == 3 and seen["confirm_failed_dns"] is None
    assert seen["text"] == "conntrack insert_failed rose by 3 during the %.1f s trace" % trace["window"]["seconds_traced"]
    trace["conntrack"] = dict(trace["conntrack"], method="kprobe", confirm_failed_dns=2, confirm_failed_all=5)
    seen = _droptrace.conntrack_confirmation(trace)
    assert seen["confirm_failed_dns"] == 2
    assert seen["text"].startswith("conntrack refused 2 DNS packets in ")


def test_conntrack_confirmation_of_real_insert_failures():
    # real result: conntrack refused 11 TCP DNS SYNs (two CPUs sending the same 4-tuple at once)
    # in the namespace the module ran in; no kprobes on this kernel, so the counters method
    trace = _result("conntrack-insert-failed")
    ct = trace["conntrack"]
    assert ct["method"] == "counters" and ct["counters_delta"]["insert_failed"] == 11 and ct["netns"]
    seen = _droptrace.conntrack_confirmation(trace)
    assert seen["method"] == "counters" and seen["insert_failed"] == 11 and seen["confirm_failed_dns"] is None
    drops = seen["dns_drops"]
    assert drops["count"] == 11 and drops["complete"] is True
    assert drops["by_location"] == [{"reason": "NETFILTER_DROP", "reason_code": 12, "location": "nf_hook_slow", "count": 11}]
    assert {(f["protocol"], f["dst"], f["dport"], f["netns"]) for f in drops["examples"]} == {("tcp", "192.0.2.2", 53, ct["netns"])}
    example = drops["examples"][0]
    assert seen["text"] == (
        "conntrack insert_failed rose by 11 during the 5.2 s trace, and in the same network namespace the kernel dropped 11 DNS packets"
        " in 5.2 s: 11 NETFILTER_DROP in nf_hook_slow; e.g. tcp 192.0.2.1:%d -> 192.0.2.2:53 on %s (netns %d h9c)"
        % (example["sport"], example["interface"], ct["netns"]))
    # the firewall drops of the other namespace (nft_do_chain, the server side) are not cited
    assert _droptrace.drop_evidence(trace, reasons=("NETFILTER_DROP",))["count"] == 120


def test_ct002_is_confirmed_live_by_the_trace():
    # CT002 through the finding engine: counters flat since boot (the 6.18 fixture), but the trace
    # saw insert failures during its window -> error, with the trace as evidence
    stat = (FIXTURES.parent / "conntrack" / "stat-6.18-build-machine.txt").read_text()
    conntrack = {"available": True, "reason": None, "count": 10, "max": 262144, "buckets": 65536, "usage_ratio": 0.0,
                 "stats": _conntrack.parse_stat_file(stat)["counters"], "stats_source": "proc", "stats_delta": None, "interval": 0.0}
    facts = {"clusterdns_conntrack": conntrack, "clusterdns_drop_trace": _result("conntrack-insert-failed")}
    result = _findings.evaluate({"node1": facts})
    (finding,) = [f for f in result["findings"] if f["id"] == "CT002"]
    assert finding["severity"] == "error"
    assert finding["detail"].startswith("conntrack insert_failed rose by 11 during the 5.2 s trace, and in the same network namespace")
    assert finding["evidence"]["kernel_trace"]["dns_drops"]["count"] == 11
    without = _findings.evaluate({"node1": {"clusterdns_conntrack": conntrack}})
    assert not [f for f in without["findings"] if f["id"] == "CT002"]


@pytest.mark.parametrize("bad", [None, [], {"flows": []}, {"available": True}])
def test_evidence_helpers_refuse_what_is_not_a_trace(bad):
    with pytest.raises(InvalidInput):
        _droptrace.drop_evidence(bad)
