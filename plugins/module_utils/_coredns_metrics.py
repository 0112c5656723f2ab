# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# CoreDNS metrics: the Prometheus text exposition format (version 0.0.4, what the prometheus plugin
# serves on :9153/metrics) parsed, the series CDNS009 and CDNS010 need summed up per CoreDNS pod,
# and two reads of one pod turned into rates. Stdlib only.
#
#   samples = parse(text, source)               # {sample name: [(labels, value)]}
#   one = summarize(samples)                    # counters and gauges of one read
#   rates(first, second, seconds)               # per-second rates between two reads
#
# Metric names follow CoreDNS 1.7.0 and later (the names changed in 1.7.0); the forward plugin's
# per-upstream series moved from coredns_forward_* to coredns_proxy_*{proxy_name="forward"} in
# 1.11, and both are read.

from __future__ import annotations

import math
import re
import time

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}
_CPU = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|k|M|G)?$")
_CPU_UNITS = {None: 1.0, "m": 0.001, "k": 1000.0, "M": 1e6, "G": 1e9}


def _labels(text, pos, source, lineno, line):
    """Parse ``{a="x",b="y\\"z"}`` starting at ``text[pos] == "{"``; returns (labels, next position)."""
    labels = {}
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == "}":
            return labels, pos + 1
        match = _LABEL.match(text, pos)
        if not match:
            raise ParseError("bad label name", source, lineno, line, expected='NAME="VALUE" pairs inside {}')
        name = match.group(0)
        pos = match.end()
        if text[pos:pos + 2] != '="':
            raise ParseError("label %s without a quoted value" % name, source, lineno, line, expected='%s="VALUE"' % name)
        pos += 2
        value = []
        while True:
            if pos >= len(text):
                raise ParseError("unterminated label value of %s" % name, source, lineno, line, expected='a closing "')
            char = text[pos]
            if char == "\\":
                escaped = text[pos + 1:pos + 2]
                if escaped not in _ESCAPES:
                    raise ParseError("bad escape \\%s in label %s" % (escaped, name), source, lineno, line, expected='\\\\, \\" or \\n')
                value.append(_ESCAPES[escaped])
                pos += 2
                continue
            if char == '"':
                pos += 1
                break
            value.append(char)
            pos += 1
        labels[name] = "".join(value)
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "}":
            raise ParseError("expected , or } after label %s" % name, source, lineno, line, expected="a comma or a closing brace")


def _value(word, source, lineno, line):
    try:
        return float(word)
    except ValueError:
        raise ParseError("sample value %r is not a number" % word, source, lineno, line,
                         expected="a float, +Inf, -Inf or NaN") from None


def parse(text, source="metrics"):
    """Prometheus text format -> ``(samples, types)``: ``samples`` is ``{sample name: [(labels,
    value)]}`` (a histogram's ``_bucket``, ``_sum`` and ``_count`` series under their own names),
    ``types`` is ``{family: type}`` from the ``# TYPE`` lines.

    Raises ParseError naming the line for anything that is not a comment, a blank line or a
    sample. An HTML or JSON body (a proxy error page) fails on its first line."""
    if not isinstance(text, str):
        raise ParseError("metrics must be text, got %s" % type(text).__name__, source)
    samples, types = {}, {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            words = line.split(None, 3)
            if len(words) >= 4 and words[1] == "TYPE":
                types[words[2]] = words[3].strip()
            if line == "# EOF":  # OpenMetrics end marker
                break
            continue
        match = _NAME.match(line)
        if not match:
            raise ParseError("not a metric sample", source, lineno, raw[:200], expected="NAME{LABELS} VALUE [TIMESTAMP]")
        name = match.group(0)
        pos = match.end()
        labels = {}
        if pos < len(line) and line[pos] == "{":
            labels, pos = _labels(line, pos, source, lineno, raw[:200])
        rest = line[pos:].split()
        if not rest or len(rest) > 2 or (pos < len(line) and line[pos] not in " \t"):
            raise ParseError("sample %s without a value" % name, source, lineno, raw[:200], expected="NAME{LABELS} VALUE [TIMESTAMP]")
        samples.setdefault(name, []).append((labels, _value(rest[0], source, lineno, raw[:200])))
    return samples, types


def cpu_cores(quantity):
    """A Kubernetes CPU quantity (``100m``, ``0.5``, ``2``) in cores, or None when unset or not a
    CPU quantity."""
    if quantity is None:
        return None
    if isinstance(quantity, (int, float)) and not isinstance(quantity, bool):
        return float(quantity)
    match = _CPU.match(str(quantity).strip())
    if not match:
        return None
    return float(match.group(1)) * _CPU_UNITS[match.group(2)]


# --- one read ------------------------------------------------------------------------------------

def _total(samples, name, **match):
    series = [v for labels, v in samples.get(name) or [] if all(labels.get(k) == want for k, want in match.items())]
    return sum(series) if series else None


def _by(samples, name, key, **match):
    out = {}
    for labels, value in samples.get(name) or []:
        if all(labels.get(k) == want for k, want in match.items()):
            label = labels.get(key, "")
            out[label] = out.get(label, 0.0) + value
    return out


def _nested(samples, name, outer, inner, **match):
    out = {}
    for labels, value in samples.get(name) or []:
        if all(labels.get(k) == want for k, want in match.items()):
            slot = out.setdefault(labels.get(outer, ""), {})
            slot[labels.get(inner, "")] = slot.get(labels.get(inner, ""), 0.0) + value
    return out


def summarize(parsed):
    """What one read of a CoreDNS pod's metrics says (``parsed`` is parse()'s result). Counters are
    totals since the process started; absent series are None (or empty)."""
    samples = parsed[0] if isinstance(parsed, tuple) else parsed
    build = (samples.get("coredns_build_info") or [({}, 0)])[0][0]
    # forward per upstream: coredns_proxy_request_duration_seconds_count{proxy_name="forward"} since
    # 1.11, coredns_forward_responses_total before
    upstream = _nested(samples, "coredns_proxy_request_duration_seconds_count", "to", "rcode", proxy_name="forward") \
        or _nested(samples, "coredns_forward_responses_total", "to", "rcode")
    health_failures = _by(samples, "coredns_proxy_healthcheck_failures_total", "to", proxy_name="forward") \
        or _by(samples, "coredns_forward_healthcheck_failures_total", "to")
    hits = _total(samples, "coredns_cache_hits_total")
    cache_requests = _total(samples, "coredns_cache_requests_total")
    misses = _total(samples, "coredns_cache_misses_total")
    # the hit series appear with the first hit, the deprecated miss series may go: derive one
    # from the other and the requests counter
    if misses is None and cache_requests is not None and hits is not None:
        misses = max(cache_requests - hits, 0.0)
    if hits is None and cache_requests is not None and misses is not None:
        hits = max(cache_requests - misses, 0.0)
    return {
        "version": build.get("version"),
        "requests": _total(samples, "coredns_dns_requests_total"),
        "requests_by_zone": _by(samples, "coredns_dns_requests_total", "zone"),
        "responses": _by(samples, "coredns_dns_responses_total", "rcode"),
        "duration_sum": _total(samples, "coredns_dns_request_duration_seconds_sum"),
        "duration_count": _total(samples, "coredns_dns_request_duration_seconds_count"),
        "forward": {
            "upstreams": {to: {"requests": sum(rcodes.values()), "rcodes": rcodes} for to, rcodes in sorted(upstream.items())},
            "healthcheck_failures": health_failures,
            "healthcheck_broken": _total(samples, "coredns_forward_healthcheck_broken_total"),
            "max_concurrent_rejects": _total(samples, "coredns_forward_max_concurrent_rejects_total"),
        },
        "cache": {"hits": hits, "misses": misses, "entries": _by(samples, "coredns_cache_entries", "type")},
        "panics": _total(samples, "coredns_panics_total"),
        "reload_failed": _total(samples, "coredns_reload_failed_total"),
        "reload_hashes": sorted({labels.get("value") for labels, _v in samples.get("coredns_reload_version_info") or [] if labels.get("value")}),
        "cpu_seconds": _total(samples, "process_cpu_seconds_total"),
        "resident_memory_bytes": _total(samples, "process_resident_memory_bytes"),
        "start_time_seconds": _total(samples, "process_start_time_seconds"),
    }


# --- two reads -----------------------------------------------------------------------------------

def _delta(first, second):
    if first is None or second is None:
        return None
    return second - first


def _rate(delta, seconds):
    return None if delta is None else round(delta / seconds, 3)


def _dict_delta(first, second):
    return {k: v - (first or {}).get(k, 0.0) for k, v in (second or {}).items() if v - (first or {}).get(k, 0.0)}


def rates(first, second, seconds):
    """Rates between two summarize() results of one pod taken ``seconds`` apart. A counter that
    went down (the process restarted in between) gives ``restarted: true`` and no rates."""
    if not seconds or seconds <= 0:
        raise ValueError("two reads need a positive interval, got %r" % seconds)
    started = (first.get("start_time_seconds"), second.get("start_time_seconds"))
    restarted = started[0] is not None and started[1] is not None and started[0] != started[1]
    for key in ("requests", "cpu_seconds", "panics"):
        if first.get(key) is not None and second.get(key) is not None and second[key] < first[key]:
            restarted = True
    if restarted:
        return {"interval_seconds": seconds, "restarted": True}
    requests = _delta(first.get("requests"), second.get("requests"))
    responses = _dict_delta(first.get("responses"), second.get("responses"))
    fwd1, fwd2 = first.get("forward") or {}, second.get("forward") or {}
    upstream = {}
    for to, entry in (fwd2.get("upstreams") or {}).items():
        before = ((fwd1.get("upstreams") or {}).get(to) or {}).get("rcodes") or {}
        change = _dict_delta(before, entry.get("rcodes"))
        if change:
            upstream[to] = {"queries": sum(change.values()), "rcodes": change}
    duration = _delta(first.get("duration_sum"), second.get("duration_sum"))
    count = _delta(first.get("duration_count"), second.get("duration_count"))
    hits = _delta((first.get("cache") or {}).get("hits"), (second.get("cache") or {}).get("hits"))
    misses = _delta((first.get("cache") or {}).get("misses"), (second.get("cache") or {}).get("misses"))
    looked_up = (hits or 0.0) + (misses or 0.0)
    return {
        "interval_seconds": seconds,
        "restarted": False,
        "requests": requests,
        "qps": _rate(requests, seconds),
        "responses": responses,
        "servfail": responses.get("SERVFAIL", 0.0),
        "refused": responses.get("REFUSED", 0.0),
        "latency_avg_ms": round(1000.0 * duration / count, 3) if duration is not None and count else None,
        "cpu_cores": _rate(_delta(first.get("cpu_seconds"), second.get("cpu_seconds")), seconds),
        "upstreams": upstream,
        "max_concurrent_rejects": _delta(fwd1.get("max_concurrent_rejects"), fwd2.get("max_concurrent_rejects")),
        "healthcheck_broken": _delta(fwd1.get("healthcheck_broken"), fwd2.get("healthcheck_broken")),
        "healthcheck_failures": _dict_delta(fwd1.get("healthcheck_failures"), fwd2.get("healthcheck_failures")),
        "cache_hit_ratio": round(hits / looked_up, 3) if hits is not None and looked_up else None,
        "panics": _delta(first.get("panics"), second.get("panics")),
        "reload_failed": _delta(first.get("reload_failed"), second.get("reload_failed")),
    }


def pod_metrics(texts, seconds, resources=None, source="metrics"):
    """One pod: ``texts`` is one or two metrics bodies read ``seconds`` apart; ``resources`` the
    CoreDNS container's resources (requests/limits). Returns the last read's summary with
    ``rates`` (None with one read) and the CPU figures CDNS009 compares."""
    reads = [summarize(parse(text, "%s read %d" % (source, i + 1))) for i, text in enumerate(texts)]
    last = reads[-1]
    result = dict(last)
    result["rates"] = rates(reads[0], last, seconds) if len(reads) > 1 and seconds else None
    limits, requests = (resources or {}).get("limits") or {}, (resources or {}).get("requests") or {}
    result["cpu_limit_cores"] = cpu_cores(limits.get("cpu"))
    result["cpu_request_cores"] = cpu_cores(requests.get("cpu"))
    usage = (result["rates"] or {}).get("cpu_cores")
    result["cpu_usage_cores"] = usage
    result["qps"] = (result["rates"] or {}).get("qps")
    if usage is not None and result["cpu_limit_cores"]:
        result["cpu_limit_ratio"] = round(usage / result["cpu_limit_cores"], 3)
    else:
        result["cpu_limit_ratio"] = None
    for key in ("qps", "cpu_usage_cores"):
        if isinstance(result[key], float) and math.isnan(result[key]):
            result[key] = None
    return result


# --- collection ----------------------------------------------------------------------------------

def proxy_path(namespace, pod, port):
    """The API server's pod proxy path to a pod's metrics endpoint (needs ``get pods/proxy``)."""
    return "/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics" % (namespace, pod, port)


def collect(fetch, pods, namespace="kube-system", port=9153, interval=10.0, resources=None, clock=None, sleep=None):
    """Read the metrics of every Running CoreDNS pod twice, ``interval`` seconds apart (once when
    ``interval`` is 0), through ``fetch(path) -> text``, which raises an exception with a
    ``reason()`` (_cluster.ApiError) or any exception for a pod that cannot be read.

    Returns ``{"available", "reason", "port", "interval_seconds", "pods": {name: pod_metrics()},
    "errors": [sentence]}``; ``available`` is false (with the first error as the reason) when no
    pod could be read at all."""
    clock = clock or time.monotonic
    sleep = sleep or time.sleep
    result = {"available": True, "reason": None, "port": port, "interval_seconds": interval, "pods": {}, "errors": []}
    targets = [p for p in pods or [] if p.get("name") and p.get("phase") == "Running"]
    if not targets:
        result.update(available=False, reason="no Running CoreDNS pod to read metrics from")
        return result
    reads = {}

    def read(pod):
        path = proxy_path(pod.get("namespace") or namespace, pod["name"], port)
        try:
            text = fetch(path)
        except Exception as exc:  # pylint: disable=broad-except  # every failure is that pod's reason
            reason = exc.reason() if hasattr(exc, "reason") and callable(exc.reason) else "%s: %s" % (path, exc)
            result["errors"].append("metrics of pod %s: %s" % (pod["name"], reason))
            reads.pop(pod["name"], None)
            return False
        reads.setdefault(pod["name"], []).append((clock(), text))
        return True

    readable = [p for p in targets if read(p)]
    if readable and interval > 0:
        sleep(interval)
        for pod in readable:
            read(pod)
    for pod in targets:
        entries = reads.get(pod["name"])
        if not entries:
            continue
        seconds = entries[-1][0] - entries[0][0] if len(entries) > 1 else 0.0
        try:
            metrics = pod_metrics([text for _t, text in entries], seconds or None, resources,
                                  source="metrics of pod %s" % pod["name"])
        except (ParseError, ValueError) as exc:
            result["errors"].append("metrics of pod %s: %s" % (pod["name"], exc))
            continue
        metrics["node"] = pod.get("node")
        metrics["reads"] = len(entries)
        result["pods"][pod["name"]] = metrics
    if not result["pods"]:
        result.update(available=False, reason=result["errors"][0] if result["errors"] else "no metrics read")
    return result
