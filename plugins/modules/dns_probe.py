#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: dns_probe
short_description: Send real DNS queries to one hop and say how many were lost, how fast the rest came back, and what to check next
version_added: 1.0.0
description:
  - Queries each of O(names) against each of O(servers) over each of O(transports), O(count) times, and reports per server and
    transport the queries sent, answered and lost, the rcode counts, latency percentiles, timeouts, truncated replies, socket
    errors, and a RV(results[].classification) from the error table of the seeds (NXDOMAIN, SERVFAIL, REFUSED, timeout,
    unreachable, plus V(loss) for partial loss) with RV(results[].next_hop), the advice for the next hop to check.
  - UDP queries go out from one connected, non-blocking socket per server with up to O(in_flight) queries outstanding, matched
    by DNS id, like C(dnsperf). Because the socket is connected, an ICMP port unreachable from the server comes back as an error
    and the query is classified V(unreachable) instead of waiting for a timeout.
  - With O(parallel_a_aaaa=true), each name is sent as an A and an AAAA query back to back from the same socket, so with the
    same source port, as the glibc and musl stub resolvers do. Through a DNAT (a kube-dns ClusterIP) this is the traffic that hits
    the conntrack insert race (seed 000, 5 s lookups).
  - TCP queries are sent one after the other over one connection per server, reconnecting after an error.
  - The run is bounded in count (O(count)) and in time (O(max_seconds)); the time is shared between the servers and transports.
  - It only reads (it sends queries), so it runs the same in check mode.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - dnspython 2.0 or later on the node (builds the queries and reads the sample answers).
  - For O(netns), root (C(CAP_SYS_ADMIN)) on the node.
notes:
  - Reply headers are read directly (id, rcode, TC bit); dnspython parses the first reply of each name and type for
    RV(results[].answers). This keeps the UDP path fast enough to compare with C(dnsperf) (see C(docs/benchmarks.md)).
  - Servers are IP addresses on purpose; the probe must not depend on the DNS it tests.
  - With O(netns), the module process switches its own network namespace (C(setns)) before it opens any socket; it is single
    threaded and ends after the probe, so nothing else is affected.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.info_module
options:
  names:
    description:
      - Names to query. They are sent as given (made absolute); the search path is not applied.
    type: list
    elements: str
    required: true
  servers:
    description:
      - DNS servers as V(IP), V(IP:PORT) or V([IPv6]:PORT). Without a port, O(port) is used.
    type: list
    elements: str
    required: true
  port:
    description: Port for servers given without one.
    type: int
    default: 53
  transports:
    description: Transports to probe each server with.
    type: list
    elements: str
    choices: [udp, tcp]
    default: [udp]
  count:
    description:
      - Rounds per server and transport. Each round queries every name once (twice with O(parallel_a_aaaa)).
    type: int
    default: 10
  rate:
    description:
      - Limit in queries per second per server and transport. V(0) means no limit (then O(in_flight) is the only bound).
    type: float
    default: 100
  in_flight:
    description: Maximum UDP queries outstanding at once per server.
    type: int
    default: 100
  timeout:
    description: Seconds to wait for each reply before counting the query as a timeout.
    type: float
    default: 2.0
  max_seconds:
    description:
      - Hard bound in seconds for the whole run, shared equally between the servers and transports. Servers and transports that
        did not get their turn report V(not_run).
      - UDP sending stops O(timeout) (at most half the share) before the end of each share, so that the last queries can be
        answered; queries still outstanding at the bound count as timeouts.
    type: float
    default: 60
  qtype:
    description: Query type, when O(parallel_a_aaaa) is false.
    type: str
    default: A
  parallel_a_aaaa:
    description:
      - Send an A and an AAAA query for each name back to back from the same UDP socket (same source port), as glibc and musl do.
        O(qtype) is then ignored.
    type: bool
    default: false
  netns:
    description:
      - Run the probe inside this network namespace. A name from C(ip netns list) (looked up in C(/run/netns) and
        C(/var/run/netns)) or a path such as C(/proc/<pid>/ns/net) (a pod's sandbox process).
      - Omit to probe from the namespace the module runs in (the node).
    type: str
  hop:
    description:
      - Which hop these servers are, so that RV(results[].next_hop) can name what to check next.
      - V(pod-clusterip) pod to the kube-dns ClusterIP, V(pod-endpoint) pod to a CoreDNS pod IP, V(coredns-upstream) CoreDNS (its
        namespace) to its upstream, V(node-resolver) node to the resolver in its C(/etc/resolv.conf).
    type: str
    choices: [pod-clusterip, pod-endpoint, coredns-upstream, node-resolver]
seealso:
  - name: dnsperf
    description: The DNS performance tool this probe is compared with.
    link: https://github.com/DNS-OARC/dnsperf
  - name: Racy conntrack and DNS lookup timeouts
    description: Why parallel A/AAAA from one socket through a DNAT loses queries.
    link: https://www.weave.works/blog/racy-conntrack-and-dns-lookup-timeouts
"""

EXAMPLES = r"""
- name: Probe the kube-dns ClusterIP from a pod's network namespace, A and AAAA in parallel like glibc
  clusterdns.doctor.dns_probe:
    names: [kubernetes.default.svc.cluster.local]
    servers: [10.96.0.10]
    transports: [udp, tcp]
    count: 200
    rate: 200
    timeout: 1
    parallel_a_aaaa: true
    netns: /proc/12345/ns/net
    hop: pod-clusterip
  become: true
  register: clusterip

- name: Say where the queries are lost
  ansible.builtin.debug:
    msg: "{{ item.server }} {{ item.transport }}: {{ item.classification }} (loss {{ item.loss_ratio }}) - {{ item.next_hop }}"
  loop: "{{ clusterip.results }}"
  when: item.classification != 'ok'

- name: Probe the node's own resolver
  clusterdns.doctor.dns_probe:
    names: [example.org]
    servers: [169.254.25.10, "127.0.0.1:5353"]
    count: 5
    hop: node-resolver
"""

RETURN = r"""
ok:
  description: Whether every server and transport was classified V(ok).
  type: bool
  returned: success
  sample: false
netns:
  description: The namespace the probe ran in (O(netns)), or V(null).
  type: str
  returned: success
  sample: cdb1a2b3cp
elapsed:
  description: Seconds the whole probe took.
  type: float
  returned: success
  sample: 1.52
results:
  description: One entry per server and transport, in the order of O(servers) then O(transports).
  type: list
  elements: dict
  returned: success
  contains:
    server:
      description: Server address.
      type: str
      sample: 10.96.0.10
    port:
      description: Server port.
      type: int
      sample: 53
    transport:
      description: V(udp) or V(tcp).
      type: str
      sample: udp
    hop:
      description: O(hop).
      type: str
      sample: pod-clusterip
    netns:
      description: O(netns), or V(null) when the probe ran in the module's own namespace (the node).
      type: str
      sample: /proc/12345/ns/net
    planned:
      description: Queries the run meant to send (O(count) times the names, twice with O(parallel_a_aaaa)).
      type: int
      sample: 400
    sent:
      description: Queries sent (fewer than RV(results[].planned) when O(max_seconds) ran out).
      type: int
      sample: 400
    answered:
      description: Replies received in time, whatever their rcode.
      type: int
      sample: 396
    lost:
      description: RV(results[].sent) minus RV(results[].answered).
      type: int
      sample: 4
    loss_ratio:
      description: RV(results[].lost) / RV(results[].sent); V(null) when nothing was sent.
      type: float
      sample: 0.01
    rcodes:
      description: Replies by rcode name.
      type: dict
      sample: {"NOERROR": 396}
    timeouts:
      description: Queries without a reply within O(timeout) (or when O(max_seconds) ran out).
      type: int
      sample: 4
    truncated:
      description: UDP replies with the TC bit set.
      type: int
      sample: 0
    errors:
      description: >-
        Socket outcomes that are not replies, by class: V(unreachable) (ICMP port unreachable, TCP connection refused),
        V(network) (no route, host unreachable), V(malformed) (not a DNS reply), V(closed) (TCP connection closed without a reply).
      type: dict
      sample: {}
    latency_ms:
      description: Latency of the answered queries in milliseconds, nearest-rank C(p50), C(p90), C(p99) and C(max); V(null) without replies.
      type: dict
      sample: {"p50": 0.21, "p90": 0.35, "p99": 1.2, "max": 4.8}
    qps:
      description: Queries sent per second over the time this server and transport took.
      type: float
      sample: 199.6
    source_port:
      description: Local port of the UDP socket (all queries to this server used it); V(null) for TCP.
      type: int
      sample: 41234
    answers:
      description: For each C(name/TYPE), the records of the first NOERROR reply (sample, as text).
      type: dict
      sample: {"kubernetes.default.svc.cluster.local./A": ["10.96.0.1"]}
    classification:
      description: >-
        V(ok), V(nxdomain), V(servfail), V(refused), V(timeout) (no reply at all), V(loss) (some replies missing),
        V(unreachable), V(error) or V(not_run).
      type: str
      sample: loss
    next_hop:
      description: What to check next for this classification at this hop, with the finding ids that cover it; empty for V(ok).
      type: str
      sample: "Part of the queries to the ClusterIP are lost: the DNAT conntrack race with parallel A/AAAA (CT002, KRN001, IPVS001)"
"""

import collections
import errno
import os
import select
import socket
import struct
import time

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.clusterdns.doctor.plugins.module_utils import _probe
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput, ParseError

try:
    import dns.exception
    import dns.message
    import dns.rdatatype

    HAS_DNSPYTHON = True
except ImportError:
    HAS_DNSPYTHON = False

NETNS_DIRS = ("/run/netns", "/var/run/netns")
CLONE_NEWNET = 0x40000000
_ID = struct.Struct("!H")
_NETWORK_ERRNOS = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EACCES, errno.EPERM)


class NetnsError(Exception):
    """The network namespace cannot be entered."""


def enter_netns(netns):
    """Move this (single-threaded) process into ``netns`` (name or path) with setns(2)."""
    if "/" in netns:
        candidates = [netns]
    else:
        candidates = [os.path.join(directory, netns) for directory in NETNS_DIRS]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        raise NetnsError("network namespace %r not found (looked at %s); list them with 'ip netns list'" % (netns, ", ".join(candidates)))
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
        else:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code))
    except OSError as exc:
        raise NetnsError("cannot enter network namespace %s: %s (needs root / CAP_SYS_ADMIN, and a network namespace file)"
                         % (path, exc.strerror)) from None
    finally:
        os.close(fd)
    return path


class Query:
    """A query template: the wire form without its 2-byte id."""

    __slots__ = ("key", "tail")

    def __init__(self, name, qtype):
        message = dns.message.make_query(name, qtype)
        self.key = "%s/%s" % (message.question[0].name, qtype.upper())
        self.tail = message.to_wire()[2:]


def _sample(answers, key, data):
    if key in answers:
        return
    try:
        message = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return
    answers[key] = [rdata.to_text() for rrset in message.answer for rdata in rrset][:16]


def probe_udp(stats, groups, params, deadline):
    """Many queries in flight on one connected non-blocking UDP socket, matched by DNS id."""
    address, port = stats.server, stats.port
    count, rate, timeout, window = params["count"], params["rate"], params["timeout"], params["in_flight"]
    answers = {}
    rcodes, latencies, truncated = [0] * 16, [], 0
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        try:
            sock.connect((address, port))
        except OSError:
            stats.error("network")
            return answers
        stats.source_port = sock.getsockname()[1]
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        total, size = count * len(groups), len(groups[0])
        in_flight = {}  # id -> (sent at, Query)
        order = collections.deque()  # (sent at, id), in send order, for expiry
        next_id = int.from_bytes(os.urandom(2), "big")
        start = time.monotonic()
        # Stop sending early enough for the last queries to be answered (or time out) before the
        # bound, so that "lost" means "not answered within timeout", as in dnsperf.
        last_send = deadline - min(timeout, (deadline - start) / 2)
        index = 0

        def refused(kind):
            # The ICMP error (or no route) belongs to the oldest query still waiting.
            while order:
                sent_at, qid = order.popleft()
                if qid in in_flight and in_flight[qid][0] == sent_at:
                    del in_flight[qid]
                    break
            stats.error(kind)

        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= last_send:
                index = total  # no more sending; wait for the outstanding replies
            while index < total and len(in_flight) + size <= window and (not rate or stats.sent < (now - start) * rate + 1):
                for query in groups[index % len(groups)]:
                    while next_id in in_flight:
                        next_id = (next_id + 1) & 0xFFFF
                    qid = next_id
                    next_id = (next_id + 1) & 0xFFFF
                    for _attempt in (1, 2):
                        sent_at = time.monotonic()
                        try:
                            sock.send(_ID.pack(qid) + query.tail)
                        except ConnectionRefusedError:
                            refused("unreachable")  # pending error of an earlier query; this one was not sent
                            continue
                        except BlockingIOError:
                            continue
                        except OSError as exc:
                            stats.sent += 1
                            stats.error("network" if exc.errno in _NETWORK_ERRNOS else "unreachable")
                            break
                        stats.sent += 1
                        in_flight[qid] = (sent_at, query)
                        order.append((sent_at, qid))
                        break
                index += 1
            # Wait for a reply, the next send slot or the next expiry, whichever comes first.
            if index >= total and not in_flight:
                break
            waits = [deadline - now]
            if order:
                waits.append(order[0][0] + timeout - now)
            if index < total and len(in_flight) + size <= window:
                waits.append((stats.sent - 1) / rate - (now - start) + 1e-6 if rate else 0)
            wait = max(0.0, min(waits))
            if poller.poll(wait * 1000.0 if wait > 0 else 0):
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        refused("unreachable")
                        continue
                    except OSError as exc:
                        refused("network" if exc.errno in _NETWORK_ERRNOS else "unreachable")
                        continue
                    received = time.monotonic()
                    # The header by hand (the hot path; _probe.parse_header does the same for TCP).
                    if len(data) < 12 or not data[2] & 0x80:
                        stats.error("malformed")
                        continue
                    entry = in_flight.pop((data[0] << 8) | data[1], None)
                    if entry is None:
                        continue  # late reply to a query already counted as a timeout
                    latencies.append(received - entry[0])
                    rcode = data[3] & 0x0F
                    rcodes[rcode] += 1
                    if data[2] & 0x02:
                        truncated += 1
                    if rcode == 0 and entry[1].key not in answers:
                        _sample(answers, entry[1].key, data)
            now = time.monotonic()
            while order and (order[0][1] not in in_flight or in_flight[order[0][1]][0] != order[0][0]):
                order.popleft()  # answered already
            while order and order[0][0] + timeout <= now:
                sent_at, qid = order.popleft()
                if qid in in_flight and in_flight[qid][0] == sent_at:
                    del in_flight[qid]
                    stats.timeouts += 1
        stats.timeouts += len(in_flight)  # still waiting when max_seconds ran out
        stats.elapsed = time.monotonic() - start
    finally:
        sock.close()
        stats.add_replies(rcodes, latencies, truncated)
    return answers


def _recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def probe_tcp(stats, groups, params, deadline):
    """One query at a time over one TCP connection per server (reconnects after an error)."""
    address, port = stats.server, stats.port
    count, rate, timeout = params["count"], params["rate"], params["timeout"]
    answers = {}
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = None
    start = time.monotonic()
    try:
        for index in range(count * len(groups)):
            for query in groups[index % len(groups)]:
                now = time.monotonic()
                if rate and stats.sent >= (now - start) * rate + 1:
                    time.sleep(min(max(0.0, stats.sent / rate - (now - start)), max(0.0, deadline - now)))
                    now = time.monotonic()
                if now >= deadline:
                    stats.elapsed = now - start
                    return answers
                stats.sent += 1
                sent_at = now
                try:
                    if sock is None:
                        sock = socket.socket(family, socket.SOCK_STREAM)
                        sock.settimeout(max(0.001, min(timeout, deadline - now)))
                        sock.connect((address, port))
                    sock.settimeout(max(0.001, min(timeout - (time.monotonic() - sent_at), deadline - time.monotonic())))
                    wire = _ID.pack(index & 0xFFFF) + query.tail
                    sock.sendall(struct.pack("!H", len(wire)) + wire)
                    length = struct.unpack("!H", _recv_exact(sock, 2))[0]
                    data = _recv_exact(sock, length)
                except socket.timeout:
                    stats.timeouts += 1
                except ConnectionRefusedError:
                    stats.error("unreachable")
                except (EOFError, ConnectionResetError, BrokenPipeError):
                    stats.error("closed")
                except OSError as exc:
                    stats.error("network" if exc.errno in _NETWORK_ERRNOS else "unreachable")
                else:
                    try:
                        qid, rcode, truncated, response = _probe.parse_header(data)
                    except ParseError:
                        qid, response = None, False
                    if response and qid == index & 0xFFFF:
                        stats.answer(rcode, time.monotonic() - sent_at, truncated)
                        if rcode == 0:
                            _sample(answers, query.key, data)
                        continue
                    stats.error("malformed")
                # any failure: start a new connection for the next query
                if sock is not None:
                    sock.close()
                    sock = None
    finally:
        if sock is not None:
            sock.close()
    stats.elapsed = time.monotonic() - start
    return answers


def run_probe(params, servers):
    """Probe every server and transport; returns the result list."""
    if params["parallel_a_aaaa"]:
        groups = [(Query(name, "A"), Query(name, "AAAA")) for name in params["names"]]
    else:
        groups = [(Query(name, params["qtype"]),) for name in params["names"]]
    started = time.monotonic()
    deadline = started + params["max_seconds"]
    targets = [_probe.TargetStats(address, port, transport, params["hop"]) for address, port in servers for transport in params["transports"]]
    results = []
    for position, stats in enumerate(targets):
        stats.planned = params["count"] * len(groups) * len(groups[0])
        now = time.monotonic()
        share = now + (deadline - now) / (len(targets) - position)  # each target gets its part of the remaining time
        engine = probe_udp if stats.transport == "udp" else probe_tcp
        answers = engine(stats, groups, params, share) if now < deadline else {}
        summary = stats.summary()
        summary["answers"] = answers
        summary["netns"] = params["netns"]
        results.append(summary)
    return results


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "servers": {"type": "list", "elements": "str", "required": True},
            "port": {"type": "int", "default": 53},
            "transports": {"type": "list", "elements": "str", "choices": ["udp", "tcp"], "default": ["udp"]},
            "count": {"type": "int", "default": 10},
            "rate": {"type": "float", "default": 100},
            "in_flight": {"type": "int", "default": 100},
            "timeout": {"type": "float", "default": 2.0},
            "max_seconds": {"type": "float", "default": 60},
            "qtype": {"type": "str", "default": "A"},
            "parallel_a_aaaa": {"type": "bool", "default": False},
            "netns": {"type": "str"},
            "hop": {"type": "str", "choices": list(_probe.HOPS)},
        },
        supports_check_mode=True,
    )
    if not HAS_DNSPYTHON:
        module.fail_json(msg=missing_required_lib("dnspython"))
    params = dict(module.params)
    for name, low, high in (("count", 1, 10**7), ("in_flight", 2, 60000), ("port", 1, 65535)):
        if not low <= params[name] <= high:
            module.fail_json(msg="option %s must be from %d to %d, got %d" % (name, low, high, params[name]))
    for name, low, high in (("rate", 0, 10**7), ("timeout", 0.001, 3600), ("max_seconds", 0.01, 86400)):
        if not low <= params[name] <= high:
            module.fail_json(msg="option %s must be from %s to %s, got %s" % (name, low, high, params[name]))
    if not params["names"] or not params["servers"]:
        module.fail_json(msg="options names and servers must each list at least one entry")
    try:
        servers = [_probe.parse_server(text, params["port"]) for text in params["servers"]]
    except InvalidInput as exc:
        module.fail_json(msg=str(exc))
    try:
        qtype = dns.rdatatype.RdataType.make(params["qtype"].upper())
        params["qtype"] = dns.rdatatype.to_text(qtype)
    except (dns.exception.DNSException, ValueError):
        module.fail_json(msg="option qtype: %r is not a DNS record type (A, AAAA, SRV, ...)" % params["qtype"])
    for name in params["names"]:
        try:
            dns.message.make_query(name, "A")
        except dns.exception.DNSException as exc:
            module.fail_json(msg="option names: %r is not a DNS name: %s" % (name, exc))
    started = time.monotonic()
    if params["netns"]:
        try:
            enter_netns(params["netns"])
        except NetnsError as exc:
            module.fail_json(msg=str(exc))
    results = run_probe(params, servers)
    module.exit_json(changed=False, ok=all(r["classification"] == "ok" for r in results), netns=params["netns"],
                     elapsed=round(time.monotonic() - started, 3), results=results)


if __name__ == "__main__":
    main()
