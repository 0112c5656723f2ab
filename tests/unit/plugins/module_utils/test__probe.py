# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dns_probe's pure logic: server options, reply headers of real dnsmasq replies (fixtures/probe/SOURCES.md),
percentiles, counters and the classification into the seeds' error table with the next hop."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _probe
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput, ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "probe"


def reply(name):
    return bytes.fromhex((FIXTURES / name).read_text().strip())


@pytest.mark.parametrize(("text", "expected"), [
    ("10.96.0.10", ("10.96.0.10", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("fd00::a", ("fd00::a", 53)),
    ("[fd00::a]:5353", ("fd00::a", 5353)),
    ("[fd00::A]", ("fd00::a", 53)),
])
def test_parse_server(text, expected):
    assert _probe.parse_server(text) == expected


@pytest.mark.parametrize(("text", "words"), [
    ("kube-dns.kube-system", "not an IP address"),
    ("10.96.0.10:0", "no valid port"),
    ("10.96.0.10:dns", "no valid port"),
    ("[fd00::a]5353", "not a server"),
])
def test_parse_server_rejects_with_the_value_and_the_forms(text, words):
    with pytest.raises(InvalidInput) as err:
        _probe.parse_server(text)
    assert words in str(err.value) and repr(text) in str(err.value)


@pytest.mark.parametrize(("fixture", "rcode"), [
    ("dnsmasq-2.90-noerror-a.hex", 0),
    ("dnsmasq-2.90-nxdomain.hex", 3),
    ("dnsmasq-2.90-refused.hex", 5),
    ("dnsmasq-2.90-aaaa-refused.hex", 5),
])
def test_header_of_real_dnsmasq_replies(fixture, rcode):
    assert _probe.parse_header(reply(fixture)) == (0x1234, rcode, False, True)


def test_header_truncated_bit_and_query_bit():
    data = bytearray(reply("dnsmasq-2.90-noerror-a.hex"))
    data[2] |= 0x02
    assert _probe.parse_header(bytes(data))[2] is True
    data[2] &= 0x7F  # QR cleared: a query, not a response
    assert _probe.parse_header(bytes(data))[3] is False


def test_header_too_short_names_what_was_expected():
    with pytest.raises(ParseError, match="shorter than its 12-byte header"):
        _probe.parse_header(b"\x12\x34\x81", source="10.96.0.10:53 udp")


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert [_probe.percentile(values, f) for f in (0.5, 0.9, 0.99, 1.0)] == [50, 90, 99, 100]
    assert _probe.percentile([7], 0.99) == 7
    assert _probe.percentile([1, 2, 3], 0.5) == 2
    assert _probe.percentile([], 0.5) is None


def stats_with(sent, answers=(), timeouts=0, errors=(), hop=None):
    stats = _probe.TargetStats("10.96.0.10", 53, "udp", hop)
    stats.sent = sent
    for rcode, latency in answers:
        stats.answer(rcode, latency)
    stats.timeouts = timeouts
    for kind in errors:
        stats.error(kind)
    stats.elapsed = 1.0
    return stats.summary()


def test_all_answered_is_ok_with_latencies_in_ms():
    summary = stats_with(100, [(0, (i + 1) / 10000.0) for i in range(100)])
    assert (summary["classification"], summary["next_hop"], summary["lost"], summary["loss_ratio"]) == ("ok", "", 0, 0.0)
    assert summary["latency_ms"] == {"p50": 5.0, "p90": 9.0, "p99": 9.9, "max": 10.0}
    assert summary["rcodes"] == {"NOERROR": 100} and summary["qps"] == 100.0


def test_no_reply_is_timeout_and_points_at_the_firewall():
    summary = stats_with(10, timeouts=10)
    assert (summary["classification"], summary["lost"], summary["loss_ratio"]) == ("timeout", 10, 1.0)
    assert "IPT002" in summary["next_hop"] and "DMQ001" in summary["next_hop"]
    assert summary["latency_ms"]["p50"] is None


def test_port_unreachable_is_unreachable():
    summary = stats_with(10, errors=["unreachable"] * 10)
    assert summary["classification"] == "unreachable" and "DMQ002" in summary["next_hop"]


def test_partial_loss_is_loss_and_at_the_clusterip_names_the_conntrack_race():
    summary = stats_with(200, [(0, 0.001)] * 190, timeouts=10, hop="pod-clusterip")
    assert (summary["classification"], summary["loss_ratio"]) == ("loss", 0.05)
    assert "CT002" in summary["next_hop"] and "CoreDNS endpoint" in summary["next_hop"]


@pytest.mark.parametrize(("rcode", "expected", "hint"), [(3, "nxdomain", "search path"), (2, "servfail", "CDNS010"), (5, "refused", "seed 002")])
def test_failing_rcodes(rcode, expected, hint):
    summary = stats_with(10, [(rcode, 0.001)] * 8 + [(0, 0.001)] * 2)
    assert summary["classification"] == expected and hint in summary["next_hop"]


def test_the_most_frequent_failure_wins():
    assert stats_with(10, [(5, 0.001)] * 2 + [(0, 0.001)] * 3, timeouts=5)["classification"] == "loss"
    assert stats_with(10, [(5, 0.001)] * 6 + [(0, 0.001)] * 1, timeouts=3)["classification"] == "refused"
    # a tie goes to the more specific answer (the server said why)
    assert stats_with(4, [(2, 0.001)] * 2, timeouts=2)["classification"] == "servfail"


def test_timeout_advice_depends_on_the_hop():
    texts = {hop: stats_with(5, timeouts=5, hop=hop)["next_hop"] for hop in _probe.HOPS}
    assert len(set(texts.values())) == len(_probe.HOPS)
    assert "kube-proxy" in texts["pod-clusterip"] and "CDNS010" in texts["coredns-upstream"]
    assert "DMQ001" in texts["node-resolver"] and "CDNS001" in texts["pod-endpoint"]


def test_nothing_sent_is_not_run():
    summary = stats_with(0)
    assert (summary["classification"], summary["loss_ratio"], summary["qps"]) == ("not_run", None, 0.0)
    assert "max_seconds" in summary["next_hop"]


def test_unknown_rcode_is_named_by_number():
    assert stats_with(1, [(14, 0.001)])["rcodes"] == {"RCODE14": 1}


def test_every_class_has_advice():
    for name in _probe.CLASSES:
        assert isinstance(_probe.next_hop(name), str)
        assert name == "ok" or _probe.next_hop(name)


def test_bulk_replies_count_like_single_ones():
    one, bulk = _probe.TargetStats("10.96.0.10", 53, "udp"), _probe.TargetStats("10.96.0.10", 53, "udp")
    for rcode, latency in ((0, 0.002), (0, 0.001), (3, 0.004), (14, 0.003)):
        one.answer(rcode, latency, truncated=rcode == 3)
    rcodes = [0] * 16
    rcodes[0], rcodes[3], rcodes[14] = 2, 1, 1
    bulk.add_replies(rcodes, [0.002, 0.001, 0.004, 0.003], 1)
    one.sent = bulk.sent = 5
    assert one.summary() == bulk.summary()
    assert bulk.summary()["rcodes"] == {"NOERROR": 2, "NXDOMAIN": 1, "RCODE14": 1} and bulk.summary()["classification"] == "nxdomain"
