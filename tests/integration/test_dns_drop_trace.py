# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dns_drop_trace with the real bpftrace on this kernel, against real drops made in network
namespaces this test creates (client 192.0.2.1 / 2001:db8::1, server 192.0.2.2 / 2001:db8::2 with
dnsmasq; 192.0.2.3 / 2001:db8::3 are server addresses nothing listens on).

The trace is node-wide, and other tests on the machine may drop DNS packets of their own, so every
assertion looks only at records whose network namespace is the one this test made.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from conftest import COLLECTION, run_playbook

from ansible_collections.clusterdns.doctor.plugins.module_utils._droptrace import conntrack_confirmation

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and BPF"),
    pytest.mark.skipif(not shutil.which("bpftrace"), reason="bpftrace is not installed (apt-get install bpftrace)"),
    pytest.mark.skipif(not shutil.which("dnsmasq"), reason="dnsmasq is not installed (apt-get install dnsmasq-base)"),
]

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dns_drop_trace"
COLLECTIONS_ROOT = COLLECTION / ".cache" / "collections"
PYTHON = COLLECTION / ".venv" / "bin" / "python"
TAG = "cdt%d" % (os.getpid() % 100000)
DIG = ["dig", "+tries=1", "+time=1", "+retry=0"]


def sh(*argv, check=True, netns=None, timeout=30):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [str(arg) for arg in argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


class Bed:
    """Two namespaces joined by a veth pair, dnsmasq on the server side."""

    def __init__(self, name="", except_interface=False):
        self.cli, self.srv = TAG + name + "c", TAG + name + "s"
        self.cli_if, self.srv_if = TAG + name + "c0", TAG + name + "s0"
        self.pidfile = pathlib.Path("/tmp/%s%s-dnsmasq.pid" % (TAG, name))
        # seed 003: dnsmasq on the wildcard address told to ignore the interface the queries come in on
        self.except_interface = except_interface

    def up(self):
        sh("ip", "netns", "add", self.cli)
        sh("ip", "netns", "add", self.srv)
        sh("ip", "link", "add", self.cli_if, "netns", self.cli, "type", "veth", "peer", "name", self.srv_if, "netns", self.srv)
        for ns, dev, addrs in ((self.cli, self.cli_if, ("192.0.2.1/24", "2001:db8::1/64")),
                               (self.srv, self.srv_if, ("192.0.2.2/24", "2001:db8::2/64", "192.0.2.3/24", "2001:db8::3/64"))):
            for addr in addrs:
                sh("ip", "-n", ns, "addr", "add", addr, "dev", dev, *(["nodad"] if ":" in addr else []))
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        if self.except_interface:
            listen = ["--except-interface=%s" % self.srv_if]
        else:
            listen = ["--bind-interfaces", "--listen-address=192.0.2.2", "--listen-address=2001:db8::2"]
        sh("dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", *listen, "--address=/example.test/192.0.2.53",
           "--pid-file=%s" % self.pidfile, "--user=root", netns=self.srv)
        self.srv_netns = os.stat("/run/netns/%s" % self.srv).st_ino
        self.cli_netns = os.stat("/run/netns/%s" % self.cli).st_ino
        if self.except_interface:
            for _attempt in range(50):
                if ":53 " in sh("ss", "-lnu", netns=self.srv).stdout:
                    return
                time.sleep(0.1)
            raise AssertionError("dnsmasq in %s does not listen" % self.srv)
        for _attempt in range(50):
            if sh(*DIG, "@192.0.2.2", "example.test", "+short", netns=self.cli, check=False).stdout.strip() == "192.0.2.53":
                return
            time.sleep(0.1)
        raise AssertionError("dnsmasq in %s does not answer" % self.srv)

    def down(self):
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            pass
        self.pidfile.unlink(missing_ok=True)
        for ns in (self.cli, self.srv):
            sh("ip", "netns", "del", ns, check=False)

    def firewall(self, *rule):
        sh("iptables", *rule, netns=self.srv)

    def query(self, server, *extra):
        return sh(*DIG, "@%s" % server, "example.test", *extra, netns=self.cli, check=False)


@pytest.fixture(scope="module")
def bed():
    made = Bed()
    try:
        made.up()
        yield made
    finally:
        made.down()


@pytest.fixture
def clean_firewall(bed):
    yield bed
    for tool in ("iptables", "ip6tables"):
        sh(tool, "-F", "INPUT", netns=bed.srv, check=False)


class Run:
    """The module as a process (python -m, the way Ansible's wrapper runs it), started in the background."""

    def __init__(self, tmp_path, args, prefix=(), python=PYTHON, pythonpath=(COLLECTIONS_ROOT,)):
        argsfile = tmp_path / "args.json"
        argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        argsfile.chmod(0o644)
        tmp_path.chmod(0o755)
        cmd = [*prefix, str(python), "-m", MODULE, str(argsfile)]
        env = dict(os.environ, PYTHONPATH=":".join(str(path) for path in pythonpath))
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        self.tracer = None

    def wait_attached(self, timeout=60):
        """Wait until bpftrace (our child) holds its perf event links: the probes are attached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # (the module also runs "bpftrace --version" first: look again until a child has probes)
            self.tracer = _child_named(self.proc.pid, "bpftrace")
            if self.tracer and _perf_fds(self.tracer) >= 2:
                time.sleep(0.5)  # BEGIN runs right after attachment
                return self.tracer
            if self.proc.poll() is not None:
                raise AssertionError("module ended before tracing: %s %s" % self.proc.communicate())
            time.sleep(0.05)
        raise AssertionError("bpftrace did not attach within %d s" % timeout)

    def result(self, timeout=120):
        out, err = self.proc.communicate(timeout=timeout)
        assert out, err
        return json.loads(out)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _child_named(ppid, name):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if comm == name and int(fields[1]) == ppid:
            return int(entry)
    return None


def _perf_fds(pid):
    count = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "anon_inode:[perf_event]":
                    count += 1
            except OSError:
                continue
    except OSError:
        return 0
    return count


def _bpftrace_processes():
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/comm" % entry) as handle:
                    if handle.read().strip() == "bpftrace":
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _prog_ids_of(pid):
    """BPF program ids attached through perf events by ``pid`` (bpftool perf list), or None without bpftool."""
    if not shutil.which("bpftool"):
        return None
    listing = json.loads(subprocess.run(["bpftool", "-j", "perf", "list"], capture_output=True, text=True, check=True).stdout or "[]")
    return {item["prog_id"] for item in listing if item.get("pid") == pid}


def _loaded_prog_ids():
    listing = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout or "[]")
    return {item["id"] for item in listing}


def _ours(facts, bed):
    return [flow for flow in facts["flows"] if flow["netns"] in (bed.srv_netns, bed.cli_netns)]


def _trace_while(tmp_path, bed, action, **args):
    run = Run(tmp_path, dict({"seconds": 5}, **args))
    try:
        run.wait_attached()
        action()
        result = run.result()
    finally:
        run.kill()
    assert result.get("failed") is not True, result
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is True, facts["reason"]
    assert facts["cleanup"]["remaining"] == [] and facts["cleanup"]["killed"] is False
    return facts


def test_iptables_drop_on_udp53_is_netfilter_drop_with_netns_and_flow(tmp_path, clean_firewall):
    bed = clean_firewall
    bed.firewall("-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
    sh("ip6tables", "-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP", netns=bed.srv)

    def queries():
        for _query in range(3):
            assert "timed out" in bed.query("192.0.2.2").stdout
        for _query in range(2):
            assert "timed out" in bed.query("2001:db8::2", "AAAA").stdout

    facts = _trace_while(tmp_path, bed, queries)
    ours = _ours(facts, bed)
    assert sum(flow["count"] for flow in ours) == 5, ours
    for flow in ours:
        assert flow["reason"] == "NETFILTER_DROP" and flow["netns"] == bed.srv_netns
        assert flow["interface"] == bed.srv_if and flow["protocol"] == "udp" and flow["dport"] == 53
        assert flow["direction"] == "query"
    assert {(f["family"], f["src"], f["dst"]) for f in ours} == {("ipv4", "192.0.2.1", "192.0.2.2"), ("ipv6", "2001:db8::1", "2001:db8::2")}
    assert any(item["reason"] == "NETFILTER_DROP" and item["count"] >= 5 for item in facts["by_reason"])
    assert "NETFILTER_DROP in %s" % ours[0]["location"] in facts["summary"]
    samples = [s for s in facts["samples"] if s["netns"] == bed.srv_netns]
    assert len(samples) == 5 and all(s["netns_from"] == "dev" and 0 <= s["t"] <= 6 for s in samples)
    assert facts["window"]["ended_by"] == "time" and 4.5 <= facts["window"]["seconds_traced"] <= 7
    # the namespace inode is resolved to its ip-netns name and the processes in it (dnsmasq)
    (where,) = [item for item in facts["namespaces"] if item["netns"] == bed.srv_netns]
    assert where["names"] == [bed.srv]
    assert "dnsmasq" in [proc["comm"] for proc in where["processes"]]


def test_other_dns_ports_are_traced_when_named(tmp_path, clean_firewall):
    # ports [53, 1053]: a dropped query to port 1053 is traced, one to port 2053 is not
    bed = clean_firewall
    bed.firewall("-A", "INPUT", "-p", "udp", "-m", "multiport", "--dports", "1053,2053", "-j", "DROP")

    def queries():
        assert "timed out" in bed.query("192.0.2.2", "-p", "1053").stdout
        assert "timed out" in bed.query("192.0.2.2", "-p", "2053").stdout

    facts = _trace_while(tmp_path, bed, queries, ports=[53, 1053])
    assert facts["ports"] == [53, 1053]
    ours = _ours(facts, bed)
    assert [(f["reason"], f["dport"], f["direction"], f["count"]) for f in ours] == [("NETFILTER_DROP", 1053, "query", 1)], ours


def test_query_to_an_address_without_listener_is_no_socket(tmp_path, bed):
    answers = []

    def queries():
        answers.append(bed.query("192.0.2.3").stdout)
        answers.append(bed.query("2001:db8::3", "AAAA").stdout)
        answers.append(bed.query("192.0.2.3", "+tcp").stdout)

    facts = _trace_while(tmp_path, bed, queries)
    ours = _ours(facts, bed)
    got = sorted((f["reason"], f["location"], f["protocol"], f["family"]) for f in ours)
    # The kernel frees the query as NO_SOCKET in the UDP/TCP receive function of the server
    # namespace and answers with ICMP port unreachable (UDP) or RST (TCP); dig sees a refusal,
    # not a timeout.
    assert got == [("NO_SOCKET", "__udp4_lib_rcv", "udp", "ipv4"), ("NO_SOCKET", "__udp6_lib_rcv", "udp", "ipv6"),
                   ("NO_SOCKET", "tcp_v4_rcv", "tcp", "ipv4")], ours
    assert all(f["netns"] == bed.srv_netns and f["dst"] in ("192.0.2.3", "2001:db8::3") for f in ours)
    assert all("refused" in answer for answer in answers), answers


def test_strict_rp_filter_drop_of_a_spoofed_source(tmp_path, bed):
    # A source the server namespace has no route back to, sent from the client over the veth:
    # strict reverse-path filtering in the server namespace (namespace-local sysctls) drops it.
    sh("ip", "-n", bed.cli, "addr", "add", "198.51.100.7/32", "dev", bed.cli_if)
    for key in ("all", bed.srv_if):
        sh("sysctl", "-qw", "net.ipv4.conf.%s.rp_filter=1" % key, netns=bed.srv)
    try:
        facts = _trace_while(tmp_path, bed, lambda: bed.query("192.0.2.2", "-b", "198.51.100.7"))
    finally:
        for key in ("all", bed.srv_if):
            sh("sysctl", "-qw", "net.ipv4.conf.%s.rp_filter=0" % key, netns=bed.srv, check=False)
        sh("ip", "-n", bed.cli, "addr", "del", "198.51.100.7/32", "dev", bed.cli_if, check=False)
    ours = _ours(facts, bed)
    assert [(f["reason"], f["location"], f["src"], f["dst"], f["netns"], f["interface"]) for f in ours] == [
        ("IP_RPFILTER", "ip_rcv_finish_core", "198.51.100.7", "192.0.2.2", bed.srv_netns, bed.srv_if)], ours


def test_clean_path_shows_no_loss(tmp_path, bed):
    answers = []

    def queries():
        answers.append(bed.query("192.0.2.2", "+short").stdout.strip())
        answers.append(bed.query("2001:db8::2", "+short").stdout.strip())
        answers.append(bed.query("192.0.2.2", "+tcp", "+short").stdout.strip())

    facts = _trace_while(tmp_path, bed, queries)
    assert answers == ["192.0.2.53"] * 3
    ours = _ours(facts, bed)
    # The only frees in our namespaces are socket teardown of the TCP query (QUEUE_PURGE when dig
    # closes its connection): not a loss.
    assert all(f["reason"] in ("QUEUE_PURGE", "SOCKET_CLOSE", "TCP_CLOSE") for f in ours), ours
    if facts["loss_drops"] == 0:
        assert facts["summary"].startswith("no kernel drop of DNS packets")


def test_dnsmasq_except_interface_is_no_kernel_drop(tmp_path):
    # The seed-003 case: dnsmasq listens on the wildcard address but excludes the interface the
    # queries arrive on. The queries time out, yet the kernel drops nothing: they reach dnsmasq's
    # socket and dnsmasq discards them. The trace tells this apart from a firewall drop.
    # Control in the same window: one query from a second client address that a firewall rule
    # drops, so the test shows the trace did see this namespace.
    seed = Bed(name="x", except_interface=True)
    try:
        seed.up()
        sh("ip", "-n", seed.cli, "addr", "add", "192.0.2.9/24", "dev", seed.cli_if)
        seed.firewall("-A", "INPUT", "-s", "192.0.2.9", "-p", "udp", "--dport", "53", "-j", "DROP")
        answers = []

        def queries():
            answers.extend(seed.query("192.0.2.2").stdout for _query in range(3))
            seed.query("192.0.2.2", "-b", "192.0.2.9")

        facts = _trace_while(tmp_path, seed, queries)
        listening = sh("ss", "-lnu", netns=seed.srv).stdout
    finally:
        seed.down()
    assert all("timed out" in answer for answer in answers), answers
    assert "*:53" in listening or "0.0.0.0:53" in listening, listening
    ours = _ours(facts, seed)
    assert [(f["reason"], f["src"], f["count"]) for f in ours] == [("NETFILTER_DROP", "192.0.2.9", 1)], ours
    assert not [f for f in ours if f["src"] == "192.0.2.1"]


FLOOD = 20000


def test_counts_stay_exact_under_a_drop_flood(tmp_path, clean_firewall):
    # 20000 queries from one socket into a DROP rule, sent as fast as one Python loop can: the
    # in-kernel counts must be exact while only `samples` records are printed.
    bed = clean_firewall
    bed.firewall("-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
    sender = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('192.0.2.1', 40053))\n"
        "start = time.monotonic()\n"
        "for i in range(%d):\n"
        "    s.sendto(b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x07example\\x04test\\x00\\x00\\x01\\x00\\x01', ('192.0.2.2', 53))\n"
        "    if time.monotonic() - start > 20:\n"
        "        raise SystemExit('flood too slow: %%d sent' %% i)\n"
        "print(time.monotonic() - start)\n" % FLOOD
    )
    elapsed = []
    facts = _trace_while(tmp_path, bed, lambda: elapsed.append(float(sh(sys.executable, "-c", sender, netns=bed.cli).stdout)),
                         seconds=8, samples=20)
    (flow,) = _ours(facts, bed)
    assert (flow["reason"], flow["src"], flow["sport"], flow["count"]) == ("NETFILTER_DROP", "192.0.2.1", 40053, FLOOD)
    assert len(facts["samples"]) == 20 and facts["lost_events"] == 0
    assert facts["total_drops"] >= FLOOD
    print("flood: %d drops in %.2f s, all counted" % (FLOOD, elapsed[0]))


def test_packet_budget_ends_the_trace_early(tmp_path, clean_firewall):
    bed = clean_firewall
    bed.firewall("-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
    start = time.monotonic()
    facts = _trace_while(tmp_path, bed, lambda: [bed.query("192.0.2.2") for _query in range(3)], seconds=60, packet_budget=2, samples=1)
    assert time.monotonic() - start < 30
    assert facts["window"]["ended_by"] == "budget" and facts["window"]["seconds_traced"] < 10
    assert facts["total_drops"] == 2 and len(facts["samples"]) == 1


def test_nothing_remains_after_return(tmp_path, bed):
    run = Run(tmp_path, {"seconds": 2})
    try:
        tracer = run.wait_attached()
        progs = _prog_ids_of(tracer)
        result = run.result()
    finally:
        run.kill()
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["cleanup"]["pid"] == tracer and facts["cleanup"]["remaining"] == []
    assert not os.path.exists("/proc/%d" % tracer)
    assert tracer not in _bpftrace_processes()
    if progs is not None:
        assert progs, "bpftool saw no program of the running tracer"
        assert not progs & _loaded_prog_ids()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_nothing_remains_after_an_interrupt(tmp_path, bed, sig):
    run = Run(tmp_path, {"seconds": 120})
    try:
        tracer = run.wait_attached()
        progs = _prog_ids_of(tracer)
        run.proc.send_signal(sig)
        result = run.result(timeout=30)
    finally:
        run.kill()
    assert result["failed"] is True
    assert result["msg"] == "interrupted by signal %d while tracing; bpftrace (pid %d) was stopped" % (sig, tracer)
    assert result["cleanup"]["remaining"] == []
    assert not os.path.exists("/proc/%d" % tracer)
    if progs is not None:
        assert progs and not progs & _loaded_prog_ids()
    if result["mounted_tracefs"]:
        assert result["tracefs"]["unmounted"] is True


def test_unprivileged_user_gets_available_false(tmp_path):
    # nobody cannot execute the venv's interpreter (it lives under /root): the system python3 with
    # the venv's ansible on the path runs the module, as a node's python would.
    site = next((COLLECTION / ".venv" / "lib").glob("python3*/site-packages"))
    # pytest's tmp_path is under a root-only directory: nobody reads its arguments from /tmp
    shared = pathlib.Path(tempfile.mkdtemp(prefix="cddt-", dir="/tmp"))
    try:
        run = Run(shared, {"seconds": 1}, prefix=("runuser", "-u", "nobody", "--"), python="/usr/bin/python3",
                  pythonpath=(COLLECTIONS_ROOT, site))
        result = run.result(timeout=60)
    finally:
        shutil.rmtree(shared)
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is False
    assert facts["reason"] == "needs root: bpftrace runs only as root (effective uid 65534); run the task with become"
    assert facts["mounted_tracefs"] is False


def test_root_without_capabilities_gets_available_false(tmp_path):
    # uid 0 with an empty capability bounding set, like root in an unprivileged container
    run = Run(tmp_path, {"seconds": 1}, prefix=("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs"))
    facts = run.result(timeout=60)["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is False
    assert facts["reason"] == "root without the capabilities BPF tracing needs (missing CAP_SYS_ADMIN; a container without privileges?)"


# Conntrack insert failures (CT002) made for real. Two processes pinned to two CPUs send the same
# TCP SYN (same 4-tuple) to port 53 at the same moment through raw sockets. Conntrack makes an entry
# for each packet; the first to reach confirmation is inserted and the other is refused (TCP has no
# clash resolution): insert_failed rises, the kernel drops the packet and the loser's sendto() fails
# with EPERM. 5000 OUTPUT rules that match nothing widen the time between conntrack's entry and its
# confirmation. Each burst sends PAIRS SYNs per process, 2 ms apart (well under 1 s).
CLASH = r"""
import os, socket, struct, sys, time
src, dst, pairs, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cpus = sorted(os.sched_getaffinity(0))[:2]
def syn(sport):
    hdr = struct.pack("!HHIIBBHHH", sport, 53, 1000, 0, 5 << 4, 0x02, 64240, 0, 0)
    data = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr)) + hdr
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xffff) + (total >> 16)
    return hdr[:16] + struct.pack("!H", ~total & 0xffff) + hdr[18:]
packets = [syn(base + i) for i in range(pairs)]
start = time.monotonic() + 0.3
readers = []
for cpu in cpus:
    rfd, wfd = os.pipe()
    if os.fork() == 0:
        os.sched_setaffinity(0, {cpu})
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        refused = 0
        for i, packet in enumerate(packets):
            while time.monotonic() < start + i * 0.002:
                pass
            try:
                sock.sendto(packet, (dst, 0))
            except PermissionError:
                refused += 1
        os.write(wfd, b"%d" % refused)
        os._exit(0)
    os.close(wfd)
    readers.append(rfd)
print(sum(int(os.read(rfd, 32) or b"0") for rfd in readers))
"""
PAIRS = 100


def _ct_stat(netns):
    rows = [line.split() for line in sh("cat", "/proc/net/stat/nf_conntrack", netns=netns).stdout.splitlines()]
    return {name: sum(int(row[col], 16) for row in rows[1:]) for col, name in enumerate(rows[0])}


def test_conntrack_insert_failures_on_dns_flows_are_seen_live(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("two packets can only race on two CPUs")
    cli, srv = TAG + "kc", TAG + "ks"
    try:
        sh("ip", "netns", "add", cli)
        sh("ip", "netns", "add", srv)
        sh("ip", "link", "add", cli + "0", "netns", cli, "type", "veth", "peer", "name", srv + "0", "netns", srv)
        sh("ip", "-n", cli, "addr", "add", "192.0.2.1/24", "dev", cli + "0")
        sh("ip", "-n", srv, "addr", "add", "192.0.2.2/24", "dev", srv + "0")
        for ns, dev in ((cli, cli + "0"), (srv, srv + "0")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        # the SYNs that conntrack lets through end at the server's firewall (no SYN-ACK comes back)
        sh("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "53", "-j", "DROP", netns=srv)
        rules = "*filter\n:OUTPUT ACCEPT [0:0]\n" + "-A OUTPUT -p udp --dport 9 -j ACCEPT\n" * 5000
        rules += "-A OUTPUT -m conntrack --ctstate INVALID -j ACCEPT\nCOMMIT\n"
        subprocess.run(["ip", "netns", "exec", cli, "iptables-restore"], input=rules, text=True, check=True, timeout=60)
        before = _ct_stat(cli)
        # the module runs in the client namespace, as on a node where kube-proxy's DNAT and conntrack live
        run = Run(tmp_path, {"seconds": 8, "samples": 5, "max_flows": 4096}, prefix=("ip", "netns", "exec", cli))
        try:
            run.wait_attached()
            refused = 0
            for burst in range(4):
                refused += int(sh(sys.executable, "-c", CLASH, "192.0.2.1", "192.0.2.2", PAIRS, 30000 + burst * PAIRS, netns=cli).stdout)
                if refused:
                    break
            result = run.result()
        finally:
            run.kill()
        after = _ct_stat(cli)
        netns = os.stat("/run/netns/%s" % cli).st_ino
    finally:
        for ns in (cli, srv):
            sh("ip", "netns", "del", ns, check=False)
    assert refused > 0, "no clash in %d bursts (a very busy machine?)" % (burst + 1)
    assert after["insert_failed"] - before["insert_failed"] == refused
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is True and facts["cleanup"]["remaining"] == []
    ct = facts["conntrack"]
    assert ct["netns"] == netns
    assert ct["counters_delta"]["insert_failed"] == refused and ct["counters_delta"]["drop"] == refused
    # every refused SYN is in the trace: NETFILTER_DROP in the client namespace, a TCP DNS query
    ours = [f for f in facts["flows"] if f["netns"] == netns]
    assert sum(f["count"] for f in ours) == refused, ours
    assert {(f["reason"], f["location"], f["protocol"], f["src"], f["dst"], f["dport"], f["direction"]) for f in ours} == {
        ("NETFILTER_DROP", "nf_hook_slow", "tcp", "192.0.2.1", "192.0.2.2", 53, "query")}
    # CT002's live evidence: the counter rise and the DNS drops of that namespace in the same window
    seen = conntrack_confirmation(facts)
    assert seen["insert_failed"] == refused and seen["dns_drops"]["count"] == refused
    assert seen["text"].startswith("conntrack insert_failed rose by %d during the " % refused)
    assert "in the same network namespace the kernel dropped %d DNS packet" % refused in seen["text"]


def _private_mounts(script):
    """A Run prefix: the module runs in a new mount namespace that ``script`` (sh) prepared first,
    so what it hides or replaces is never seen by the rest of the machine."""
    return ("unshare", "-m", "--propagation", "private", "sh", "-c", script + ' && exec "$0" "$@"')


def test_kernel_without_btf_gets_available_false(tmp_path):
    run = Run(tmp_path, {"seconds": 1}, prefix=_private_mounts("mount -t tmpfs none /sys/kernel/btf"))
    facts = run.result(timeout=60)["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is False and facts["mounted_tracefs"] is False
    assert facts["reason"] == "the kernel has no BTF (/sys/kernel/btf/vmlinux missing): the trace program needs kernel type information"


def test_kernel_without_tracefs_gets_available_false(tmp_path):
    # no tracefs mounted and no /sys/kernel/tracing to mount it on (BTF kept in place)
    keep = tmp_path / "btf"
    keep.mkdir()
    script = ("for p in /sys/kernel/tracing /sys/kernel/debug/tracing /sys/kernel/debug; do umount -R $p 2>/dev/null; done;"
              f" mount --bind /sys/kernel/btf {keep} && mount -t tmpfs none /sys/kernel && mkdir /sys/kernel/btf"
              f" && mount --move {keep} /sys/kernel/btf")
    run = Run(tmp_path, {"seconds": 1}, prefix=_private_mounts(script))
    facts = run.result(timeout=60)["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is False and facts["mounted_tracefs"] is False
    assert facts["reason"] == "tracefs is not mounted and /sys/kernel/tracing does not exist (kernel without tracefs?)"


def test_kernel_without_drop_reasons_counts_by_location(tmp_path, clean_firewall):
    # A kernel before 5.17: its kfree_skb format (no reason field; skbaddr and location at the same
    # offsets as on 6.18) is bound over this kernel's, for the module and bpftrace alike. The module
    # renders the program without the reason and still sees the real drops, by kernel location.
    bed = clean_firewall
    bed.firewall("-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
    old = COLLECTION / "tests" / "unit" / "plugins" / "module_utils" / "fixtures" / "droptrace" / "linux-pre5.17-kfree_skb-format.txt"
    script = "mount -t tracefs nodev /sys/kernel/tracing && mount --bind %s /sys/kernel/tracing/events/skb/kfree_skb/format" % old
    run = Run(tmp_path, {"seconds": 4}, prefix=_private_mounts(script))
    try:
        run.wait_attached()
        for _query in range(2):
            assert "timed out" in bed.query("192.0.2.2").stdout
        result = run.result()
    finally:
        run.kill()
    facts = result["ansible_facts"]["clusterdns_drop_trace"]
    assert facts["available"] is True and facts["mode"] == "locations"
    assert facts["reason"].startswith("the kernel's skb:kfree_skb tracepoint has no drop reason field (Linux before 5.17)")
    ours = _ours(facts, bed)
    assert [(f["reason"], f["location"], f["interface"], f["dst"], f["dport"]) for f in ours] == [
        (None, "nft_do_chain", bed.srv_if, "192.0.2.2", 53)] * len(ours) and sum(f["count"] for f in ours) == 2
    assert "(no reason field) in nft_do_chain" in facts["summary"]


def test_conntrack_probe_program_compiles_on_this_kernel(tmp_path):
    # This kernel has no kprobes, so the module uses the counters; the kprobe variant of the program
    # must still be valid bpftrace: compile it to an ELF file without attaching (dry run).
    sys.path.insert(0, str(COLLECTION / "plugins" / "module_utils"))
    try:
        import _droptrace_bt
    finally:
        sys.path.pop(0)
    program = tmp_path / "ct.bt"
    program.write_text(_droptrace_bt.render_program([53], 5, 20, 0, conntrack_probe=True))
    mounted = False
    with open("/proc/self/mountinfo") as handle:
        if " - tracefs " not in handle.read():
            sh("mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing")
            mounted = True
    try:
        done = subprocess.run(["bpftrace", "--emit-elf", str(tmp_path / "ct.o"), str(program)], capture_output=True, text=True, timeout=120, check=False)
    finally:
        if mounted:
            sh("umount", "/sys/kernel/tracing", check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ct.o").stat().st_size > 0


def test_through_ansible_in_check_mode(tmp_path):
    playbook = tmp_path / "trace.yml"
    playbook.write_text(
        "- hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Trace\n      clusterdns.doctor.dns_drop_trace:\n        seconds: 1\n      register: trace\n"
        "    - name: Show\n      ansible.builtin.debug:\n        msg: \"TRACE {{ trace.ansible_facts.clusterdns_drop_trace | to_json }}\"\n")
    run = run_playbook(str(playbook), "--check", env={"ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert run.returncode == 0, run.stdout + run.stderr
    line = next(line for line in run.stdout.splitlines() if '"msg": "TRACE ' in line)
    facts = json.loads(json.loads("{%s}" % line.strip())["msg"][len("TRACE "):])
    assert facts["available"] is True and facts["window"]["seconds_requested"] == 1
    assert facts["cleanup"]["remaining"] == []


# The tasks proposed for diagnose.yml (clusterdns_trace_seconds): start the trace in the
# background, run the probe meanwhile, then collect the trace; its result becomes the node fact.
ASYNC_PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    clusterdns_trace_seconds: 6
  tasks:
    - name: Start the kernel DNS drop trace
      clusterdns.doctor.dns_drop_trace:
        seconds: "{{ clusterdns_trace_seconds | int }}"
      become: true
      async: "{{ clusterdns_trace_seconds | int + 90 }}"
      poll: 0
      changed_when: false
      register: __clusterdns_register_trace_job
      when: clusterdns_trace_seconds | default(0) | int > 0

    - name: Let bpftrace attach before probing
      ansible.builtin.wait_for:
        timeout: 3
      check_mode: false  # only waits; in check mode wait_for would not
      when: __clusterdns_register_trace_job.ansible_job_id is defined

    - name: Probe (stands for dns_probe) - queries that a firewall drops
      ansible.builtin.command: ip netns exec %(cli)s dig +tries=1 +time=1 +retry=0 @192.0.2.2 example.test
      changed_when: false
      failed_when: false
      check_mode: false
      loop: [1, 2]

    - name: Collect the kernel DNS drop trace
      ansible.builtin.async_status:
        jid: "{{ __clusterdns_register_trace_job.ansible_job_id }}"
      become: true
      register: __clusterdns_register_trace
      until: __clusterdns_register_trace.finished
      retries: "{{ clusterdns_trace_seconds | int + 90 }}"
      delay: 1
      when: __clusterdns_register_trace_job.ansible_job_id is defined

    - name: Show the node fact
      ansible.builtin.debug:
        msg: "TRACE {{ ansible_facts.clusterdns_drop_trace | to_json }}"
"""


@pytest.mark.parametrize("check", [False, True], ids=["normal", "check"])
def test_async_wiring_for_diagnose(tmp_path, clean_firewall, check):
    bed = clean_firewall
    bed.firewall("-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
    playbook = tmp_path / "trace.yml"
    playbook.write_text(ASYNC_PLAYBOOK % {"cli": bed.cli})
    args = ["--check"] if check else []
    run = run_playbook(str(playbook), *args, env={"ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "changed=0" in run.stdout
    line = next(line for line in run.stdout.splitlines() if '"msg": "TRACE ' in line)
    facts = json.loads(json.loads("{%s}" % line.strip())["msg"][len("TRACE "):])
    assert facts["available"] is True and facts["cleanup"]["remaining"] == []
    ours = _ours(facts, bed)
    assert [(f["reason"], f["dst"], f["dport"]) for f in ours] == [("NETFILTER_DROP", "192.0.2.2", 53)] * len(ours)
    assert sum(f["count"] for f in ours) == 2
