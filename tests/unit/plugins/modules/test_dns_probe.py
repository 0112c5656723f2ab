# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dns_probe as a process: option errors a user can act on, and real queries on loopback (a port
with no listener, and Debian's dnsmasq on a free loopback port when it is installed and we are root)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _probe

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dns_probe"
DNSMASQ = "/usr/sbin/dnsmasq"


def _collections_root():
    for parent in pathlib.Path(_probe.__file__).parents:
        if parent.name == "ansible_collections":
            return parent.parent
    return pathlib.Path.cwd()


def run_module(tmp_path, args):
    argsfile = tmp_path / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    environ = dict(os.environ, PYTHONPATH=str(_collections_root()))
    proc = subprocess.run([sys.executable, "-m", MODULE, str(argsfile)], env=environ, capture_output=True, text=True, timeout=120, check=False)
    return proc.returncode, json.loads(proc.stdout)


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("args", "words"), [
    ({"servers": ["kube-dns"]}, "'kube-dns' is not an IP address"),
    ({"servers": ["127.0.0.1:99999"]}, "no valid port"),
    ({"qtype": "AAAAA"}, "qtype: 'AAAAA' is not a DNS record type"),
    ({"names": ["a..b"]}, "names: 'a..b' is not a DNS name"),
    ({"count": 0}, "option count must be from 1"),
    ({"max_seconds": 0}, "option max_seconds must be from"),
    ({"netns": "cdp-no-such-netns"}, "network namespace 'cdp-no-such-netns' not found"),
    ({"transports": ["doh"]}, "transports"),
])
def test_bad_options_fail_with_what_to_fix(tmp_path, args, words):
    rc, result = run_module(tmp_path, dict({"names": ["www.bed.test"], "servers": ["127.0.0.1"], "count": 1}, **args))
    assert rc != 0 and result["failed"] and words in result["msg"]


def test_no_listener_on_loopback_is_unreachable_at_once(tmp_path):
    port = free_port()
    started = time.monotonic()
    rc, result = run_module(tmp_path, {"names": ["www.bed.test"], "servers": ["127.0.0.1:%d" % port], "transports": ["udp", "tcp"],
                                       "count": 5, "timeout": 5, "hop": "node-resolver"})
    assert rc == 0 and result["ok"] is False and result["changed"] is False
    udp, tcp = result["results"]
    for item in (udp, tcp):
        assert (item["classification"], item["sent"], item["answered"], item["errors"]) == ("unreachable", 5, 0, {"unreachable": 5})
        assert "dnsmasq or node-cache is down" in item["next_hop"]
    # ICMP port unreachable / RST answer at once: no 5 s timeouts were waited for
    assert time.monotonic() - started < 5 and udp["timeouts"] == 0


def test_max_seconds_bounds_the_run_and_counts_the_outstanding_as_timeouts(tmp_path):
    # A bound UDP socket that never answers: queries are accepted and never answered.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        rc, result = run_module(tmp_path, {"names": ["www.bed.test"], "servers": ["127.0.0.1:%d" % silent.getsockname()[1]],
                                           "count": 1000, "rate": 50, "timeout": 30, "max_seconds": 1})
    assert rc == 0 and time.monotonic() - started < 10
    (item,) = result["results"]
    assert item["classification"] == "timeout" and item["planned"] == 1000
    # sending stops half-way (timeout > half the bound) so that the last queries get their chance
    assert 15 <= item["sent"] <= 35 and item["timeouts"] == item["sent"] == item["lost"]


@pytest.fixture
def dnsmasq_loopback(tmp_path):
    if os.geteuid() != 0 or not os.path.exists(DNSMASQ):
        pytest.skip("needs root and /usr/sbin/dnsmasq (apt-get install dnsmasq-base)")
    port = free_port()
    proc = subprocess.Popen([DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--user=root", "--no-resolv", "--no-hosts",
                             "--listen-address=127.0.0.1", "--bind-interfaces", "--port=%d" % port, "--address=/bed.test/192.0.2.1",
                             "--address=/bed.test/2001:db8::1", "--local=/nx.test/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_real_dnsmasq_answers_nxdomain_and_refused(tmp_path, dnsmasq_loopback):
    server = "127.0.0.1:%d" % dnsmasq_loopback
    rc, result = run_module(tmp_path, {"names": ["www.bed.test"], "servers": [server], "transports": ["udp", "tcp"], "count": 20,
                                       "rate": 0, "parallel_a_aaaa": True})
    assert rc == 0 and result["ok"] is True
    for item in result["results"]:
        assert (item["sent"], item["answered"], item["rcodes"], item["classification"]) == (40, 40, {"NOERROR": 40}, "ok")
        assert item["answers"] == {"www.bed.test./A": ["192.0.2.1"], "www.bed.test./AAAA": ["2001:db8::1"]}
        assert 0 < item["latency_ms"]["p50"] <= item["latency_ms"]["p90"] <= item["latency_ms"]["p99"] <= item["latency_ms"]["max"]
    rc, result = run_module(tmp_path, {"names": ["a.nx.test"], "servers": [server], "count": 3})
    assert result["results"][0]["classification"] == "nxdomain" and result["results"][0]["rcodes"] == {"NXDOMAIN": 3}
    rc, result = run_module(tmp_path, {"names": ["out.example"], "servers": [server], "count": 3, "qtype": "srv"})
    assert result["results"][0]["classification"] == "refused" and "seed 002" in result["results"][0]["next_hop"]
