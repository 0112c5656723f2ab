# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CoreDNS metrics: the Prometheus text parser, one-read summaries, rates between two reads, the
collector and CDNS009, on real :9153/metrics bodies of the lab's CoreDNS 1.12.4 read through the
kube-apiserver pod proxy, healthy and refusing queries over forward's max_concurrent
(fixtures/metrics/SOURCES.md), with the lab's captured API objects (fixtures/cluster)."""

from __future__ import annotations

import pathlib

import pytest
from cluster_world import World, load

from ansible_collections.clusterdns.doctor.plugins.module_utils import _cluster, _coredns_metrics, _findings, _rules_cluster, _workloads
from ansible_collections.clusterdns.doctor.plugins.module_utils._cluster import ApiError
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

assert _rules_cluster  # registers the cluster rules

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "metrics"
ALL = sorted(p.name for p in FIXTURES.glob("*.txt"))
HEALTHY = ("lab-healthy-coredns-a-1.txt", "lab-healthy-coredns-a-2.txt")
HEALTHY_SECONDS = 7.435
OVERLOAD_SECONDS = 2.139


def text(name):
    return (FIXTURES / name).read_text()


def overload(pod):
    return text("lab-max-concurrent-coredns-%s-1.txt" % pod), text("lab-max-concurrent-coredns-%s-2.txt" % pod)


# --- parser --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_parser_agrees_with_prometheus_client_on_real_bodies(name):
    parser = pytest.importorskip("prometheus_client.parser")
    samples, types = _coredns_metrics.parse(text(name), name)
    theirs = {(s.name, tuple(sorted(s.labels.items())), s.value) for f in parser.text_string_to_metric_families(text(name)) for s in f.samples}
    ours = {(n, tuple(sorted(labels.items())), v) for n, series in samples.items() for labels, v in series}
    assert ours == theirs and len(ours) > 150
    assert types["coredns_dns_requests_total"] == "counter" and types["coredns_dns_request_duration_seconds"] == "histogram"


def test_label_escapes_odd_spacing_special_values_and_timestamps():
    body = ('# a comment\n\nx{a="q\\"uote",b="back\\\\slash",c="new\\nline",} +Inf 1700000000000\n'
            'y{ a="1" , b="2" } NaN\nz -1.5e-3\nw{} 7\n')
    samples, _types = _coredns_metrics.parse(body)
    assert samples["x"] == [({"a": 'q"uote', "b": "back\\slash", "c": "new\nline"}, float("inf"))]
    assert samples["y"][0][0] == {"a": "1", "b": "2"} and samples["y"][0][1] != samples["y"][0][1]  # NaN
    assert samples["z"] == [({}, -0.0015)] and samples["w"] == [({}, 7.0)]


@pytest.mark.parametrize("body,lineno,message", [
    ("<html><body>503 Service Unavailable</body></html>\n", 1, "not a metric sample"),
    ('# HELP x\nx{a="1" 3\n', 2, "expected , or }"),
    ('x{a="1\n', 1, "unterminated label value"),
    ('x{a=1} 3\n', 1, "without a quoted value"),
    ('x{a="\\t"} 3\n', 1, "bad escape"),
    ("x\n", 1, "without a value"),
    ("x one\n", 1, "is not a number"),
    ("x 1 2 3\n", 1, "without a value"),
])
def test_bad_bodies_name_the_line(body, lineno, message):
    with pytest.raises(ParseError) as err:
        _coredns_metrics.parse(body, "metrics of pod coredns-a")
    assert err.value.lineno == lineno and message in err.value.message
    assert str(err.value).startswith("metrics of pod coredns-a line %d:" % lineno)


@pytest.mark.parametrize("quantity,cores", [("100m", 0.1), ("2", 2.0), ("0.5", 0.5), ("1500m", 1.5), (1, 1.0), (None, None),
                                            ("", None), ("1Gi", None), ("abc", None)])
def test_cpu_quantities(quantity, cores):
    assert _coredns_metrics.cpu_cores(quantity) == cores


# --- one read, two reads ---------------------------------------------------------------------------

def test_summary_of_a_real_read():
    one = _coredns_metrics.summarize(_coredns_metrics.parse(text(HEALTHY[1])))
    assert one["version"] == "1.12.4"
    assert one["requests"] == 122 and one["responses"] == {"NOERROR": 72, "NXDOMAIN": 46, "REFUSED": 4}
    assert one["forward"]["upstreams"] == {"10.201.0.53:53": {"requests": 19, "rcodes": {"NOERROR": 1, "NXDOMAIN": 14, "REFUSED": 4}}}
    assert one["forward"]["max_concurrent_rejects"] == 0 and one["forward"]["healthcheck_broken"] == 0
    assert one["cache"]["hits"] == 97 and one["cache"]["misses"] == 25
    # one reload of this process had failed before the capture (an invalid Corefile of another lab test)
    assert one["panics"] == 0 and one["reload_failed"] == 1 and one["cpu_seconds"] == 0.75
    (sha512,) = one["reload_hashes"]
    assert sha512.startswith("495610264f960adb") and len(sha512) == 128


def test_rates_of_a_healthy_pod():
    result = _coredns_metrics.pod_metrics([text(n) for n in HEALTHY], HEALTHY_SECONDS)
    rates = result["rates"]
    assert rates["restarted"] is False and rates["requests"] == 66 and rates["qps"] == round(66 / HEALTHY_SECONDS, 3)
    assert rates["responses"] == {"NOERROR": 36, "NXDOMAIN": 30} and rates["max_concurrent_rejects"] == 0
    assert rates["upstreams"] == {"10.201.0.53:53": {"queries": 14, "rcodes": {"NXDOMAIN": 14}}}
    assert 0 < rates["cpu_cores"] < 0.1 and 0.5 < rates["cache_hit_ratio"] < 1 and rates["latency_avg_ms"] > 0
    assert result["cpu_limit_cores"] is None and result["cpu_limit_ratio"] is None and result["qps"] == rates["qps"]


def test_rates_while_coredns_refuses_over_max_concurrent():
    a = _coredns_metrics.pod_metrics(overload("a"), OVERLOAD_SECONDS, {"limits": {"cpu": "100m"}, "requests": {"cpu": "50m"}})
    b = _coredns_metrics.pod_metrics(overload("b"), OVERLOAD_SECONDS)
    assert (a["rates"]["max_concurrent_rejects"], b["rates"]["max_concurrent_rejects"]) == (19, 17)
    assert a["rates"]["responses"] == {"REFUSED": 19} and a["rates"]["refused"] == 19
    assert a["cpu_limit_cores"] == 0.1 and a["cpu_request_cores"] == 0.05 and a["cpu_limit_ratio"] == round(a["cpu_usage_cores"] / 0.1, 3)


def test_a_restart_between_the_reads_gives_no_rates():
    # coredns-a really restarted between these captures (process_start_time_seconds differs)
    result = _coredns_metrics.pod_metrics([text(HEALTHY[1]), overload("a")[0]], 240.0)
    assert result["rates"] == {"interval_seconds": 240.0, "restarted": True} and result["qps"] is None


def test_forward_metrics_of_coredns_before_1_11():
    # No capture of an older CoreDNS is at hand: the series below are the pre-1.11 names and labels
    # of the forward plugin (coredns_forward_responses_total{rcode,to}), written for this test.
    old = ('coredns_forward_responses_total{rcode="NOERROR",to="10.0.0.2:53"} 10\n'
           'coredns_forward_responses_total{rcode="SERVFAIL",to="10.0.0.2:53"} 2\n'
           'coredns_forward_healthcheck_failures_total{to="10.0.0.2:53"} 3\n'
           'coredns_cache_hits_total{server="dns://:53",type="success"} 5\ncoredns_cache_misses_total{server="dns://:53"} 5\n')
    one = _coredns_metrics.summarize(_coredns_metrics.parse(old))
    assert one["forward"]["upstreams"] == {"10.0.0.2:53": {"requests": 12, "rcodes": {"NOERROR": 10, "SERVFAIL": 2}}}
    assert one["forward"]["healthcheck_failures"] == {"10.0.0.2:53": 3} and one["cache"] == {"hits": 5, "misses": 5, "entries": {}}
    assert one["requests"] is None and one["version"] is None


# --- collector -------------------------------------------------------------------------------------

class Proxy:
    """The pod proxy of the API server, answering with the captured bodies in order."""

    def __init__(self, bodies, forbidden=()):
        self.bodies = {pod: list(texts) for pod, texts in bodies.items()}
        self.forbidden = set(forbidden)
        self.paths = []

    def __call__(self, path):
        self.paths.append(path)
        pod = path.split("/pods/")[1].split(":")[0]
        if pod in self.forbidden:
            raise ApiError(403, 'pods "%s" is forbidden: User cannot get resource "pods/proxy"' % pod, path)
        return self.bodies[pod].pop(0)


class Clock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self):
        return self.now


PODS = [{"name": "coredns-a", "namespace": "kube-system", "node": "node1", "phase": "Running"},
        {"name": "coredns-b", "namespace": "kube-system", "node": "node2", "phase": "Running"},
        {"name": "coredns-c", "namespace": "kube-system", "node": "node2", "phase": "Pending"}]


def test_collect_reads_running_pods_twice_with_one_sleep():
    proxy, clock = Proxy({"coredns-a": overload("a"), "coredns-b": overload("b")}), Clock()
    result = _coredns_metrics.collect(proxy, PODS, interval=2.5, clock=clock, sleep=clock.sleep)
    assert clock.slept == [2.5] and result["available"] is True and result["errors"] == []
    assert proxy.paths == ["/api/v1/namespaces/kube-system/pods/coredns-%s:9153/proxy/metrics" % p for p in "abab"]
    assert sorted(result["pods"]) == ["coredns-a", "coredns-b"]  # the Pending pod is not read
    assert result["pods"]["coredns-a"]["rates"]["max_concurrent_rejects"] == 19 and result["pods"]["coredns-a"]["reads"] == 2
    assert result["pods"]["coredns-b"]["node"] == "node2" and result["pods"]["coredns-b"]["rates"]["interval_seconds"] == 2.5


def test_collect_without_pods_proxy_permission_is_a_reason_not_a_failure():
    proxy, clock = Proxy({}, forbidden={"coredns-a", "coredns-b"}), Clock()
    result = _coredns_metrics.collect(proxy, PODS, clock=clock, sleep=clock.sleep)
    assert result["available"] is False and clock.slept == []
    assert result["reason"].startswith("metrics of pod coredns-a: forbidden: GET /api/v1/namespaces/kube-system/pods/coredns-a:9153/proxy/metrics")
    assert len(result["errors"]) == 2


def test_collect_one_pod_unreadable_one_body_broken():
    proxy, clock = Proxy({"coredns-b": ["<html>bad gateway</html>", "x"]}, forbidden={"coredns-a"}), Clock()
    result = _coredns_metrics.collect(proxy, PODS, clock=clock, sleep=clock.sleep)
    assert result["available"] is False and result["pods"] == {}
    assert "metrics of pod coredns-b read 1 line 1: not a metric sample" in result["errors"][1]


def test_collect_once():
    proxy, clock = Proxy({"coredns-a": [text(HEALTHY[0])], "coredns-b": [overload("b")[0]]}), Clock()
    result = _coredns_metrics.collect(proxy, PODS, interval=0, clock=clock, sleep=clock.sleep)
    assert clock.slept == [] and result["pods"]["coredns-a"]["rates"] is None and result["pods"]["coredns-a"]["requests"] == 56


def test_collect_without_running_pods():
    result = _coredns_metrics.collect(Proxy({}), [dict(PODS[2])])
    assert result == {"available": False, "reason": "no Running CoreDNS pod to read metrics from", "port": 9153,
                      "interval_seconds": 10.0, "pods": {}, "errors": []}


# --- CDNS009 ---------------------------------------------------------------------------------------

def lab_cluster(metrics, cpu_limit=None, max_concurrent=None, interval=HEALTHY_SECONDS):
    world = World(load("lab-healthy.json", substitute=False))
    if cpu_limit:
        container = world.find("Deployment", "coredns")["spec"]["template"]["spec"]["containers"][0]
        container["resources"] = {"limits": {"cpu": cpu_limit}}
    if max_concurrent:
        cm = world.find("ConfigMap", "coredns")
        cm["data"]["Corefile"] = cm["data"]["Corefile"].replace("max_concurrent 1000", "max_concurrent %d" % max_concurrent)
    facts = _cluster.collect(world)
    facts["workloads"] = _workloads.collect(world)
    resources = facts["coredns"]["deployment"]["resources"]
    clock = Clock()
    facts["metrics"] = _coredns_metrics.collect(Proxy(metrics), facts["coredns"]["pods"], interval=interval,
                                                resources=resources, clock=clock, sleep=clock.sleep)
    return facts


def cdns009(facts, options=None):
    result = _findings.evaluate({}, cluster=facts, options=options)
    return next(c for c in result["checks"] if c["id"] == "CDNS009"), [f for f in result["findings"] if f["id"] == "CDNS009"]


def test_cdns009_healthy_lab_passes():
    # coredns-b: one real body read twice, an idle pod
    check, hits = cdns009(lab_cluster({"coredns-a": [text(n) for n in HEALTHY], "coredns-b": list(overload("b"))[:1] * 2}))
    assert check["status"] == "pass" and hits == []


def test_cdns009_max_concurrent_rejects_are_an_error_with_the_corefile_line():
    check, hits = cdns009(lab_cluster({"coredns-a": list(overload("a")), "coredns-b": list(overload("b"))}, max_concurrent=2,
                                      interval=OVERLOAD_SECONDS))
    assert check["status"] == "fail" and [f["object"] for f in hits] == ["kube-system/Pod/coredns-a", "kube-system/Pod/coredns-b"]
    first = hits[0]
    assert first["severity"] == "error" and first["evidence"]["max_concurrent_rejects"] == 19 and first["evidence"]["refused"] == 19
    (forward,) = first["evidence"]["forward_max_concurrent"]
    assert forward["max_concurrent"] == "2" and forward["forward"] == [".", "/etc/resolv.conf"]
    assert "refused 19 queries in 2.1 s" in first["detail"] and "max_concurrent 2 (Corefile line %d)" % forward["lineno"] in first["detail"]


def test_cdns009_cpu_at_the_limit_and_qps_beyond_capacity():
    bodies = {"coredns-a": [text(n) for n in HEALTHY], "coredns-b": list(overload("b"))[:1] * 2}
    # the healthy pod used ~7 millicores: at a 5m limit that is more than 90 %, at 100m it is not
    check, hits = cdns009(lab_cluster(dict(bodies), cpu_limit="5m"))
    assert check["status"] == "fail" and hits[0]["severity"] == "warning" and hits[0]["evidence"]["cpu_limit_cores"] == 0.005
    assert "of its 0.005 limit" in hits[0]["detail"]
    assert cdns009(lab_cluster(dict(bodies), cpu_limit="100m"))[0]["status"] == "pass"
    check, hits = cdns009(lab_cluster(dict(bodies)), options={"cdns009_qps_per_replica": 10})
    assert check["status"] == "fail" and hits[0]["evidence"]["qps_capacity"] == 10 and "queries/s" in hits[0]["detail"]


def test_cdns009_throttling_from_other_sources():
    facts = lab_cluster({"coredns-a": [text(n) for n in HEALTHY], "coredns-b": list(overload("b"))[:1] * 2})
    facts["metrics"]["pods"]["coredns-b"]["throttled_ratio"] = 0.4
    check, hits = cdns009(facts)
    assert [f["evidence"]["pod"] for f in hits] == ["coredns-b"] and "throttled in 40 %" in hits[0]["detail"]


@pytest.mark.parametrize("metrics,reason", [
    (None, "CoreDNS metrics not gathered"),
    ({"available": False, "reason": "metrics of pod coredns-a: forbidden: GET ..."}, "CoreDNS metrics unavailable: metrics of pod coredns-a: forbidden"),
    ({"available": True, "pods": {"coredns-a": {"rates": None, "cpu_usage_cores": None}}}, "no CoreDNS pod was measured over an interval"),
    ({"available": True, "pods": {"coredns-a": {"rates": {"restarted": True}, "cpu_usage_cores": None}}}, "no CoreDNS pod was measured"),
])
def test_cdns009_skips_with_the_reason(metrics, reason):
    facts = lab_cluster({"coredns-a": [text(n) for n in HEALTHY], "coredns-b": list(overload("b"))[:1] * 2})
    if metrics is None:
        del facts["metrics"]
    else:
        facts["metrics"] = metrics
    check, _hits = cdns009(facts)
    assert check["status"] == "skip" and check["reason"].startswith(reason)
