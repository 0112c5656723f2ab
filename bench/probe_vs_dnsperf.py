# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: the dns_probe module against dnsperf, on the same loopback DNS server.

Creates a network namespace (``cdpb<hex6>``), starts a DNS server on its 127.0.0.1:53 (Debian's
dnsmasq, or CoreDNS serving the zone ``bed.test`` from a zone file), and runs, ``--repeats`` times:

1. throughput: ``dnsperf -s 127.0.0.1 -d QUERYFILE -l SECONDS -q 100 -t 1`` and the module with
   ``count`` large, ``rate: 0``, ``in_flight: 100``, ``timeout: 1``, ``max_seconds: SECONDS``; the
   sustained QPS of each (dnsperf's "Queries per second", the module's ``qps``) and their ratio;
2. loss: ``iptables -A INPUT -p udp --dport 53 -m statistic --mode random --probability P -j DROP``
   in the namespace, then both at the same fixed rate (``dnsperf -Q QPS``, module ``rate: QPS``,
   1000 outstanding each); the loss each one reports ("Queries lost" and ``loss_ratio``).

Everything runs in the namespace the script made; the server, the rule and the namespace are
removed at the end, also after an error or Ctrl-C. Each run is bounded by SECONDS (plus the 1 s
reply timeout); every subprocess has a timeout.

    python3 bench/probe_vs_dnsperf.py [--server dnsmasq|coredns] [--seconds 10] [--repeats 3]
                                      [--loss-qps 2000] [--probability 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
COLLECTION = HERE.parent
MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dns_probe"
DNSMASQ = "/usr/sbin/dnsmasq"
COREDNS = "/var/cache/clusterdns-doctor/lab/bin/coredns-v1.12.4"
NAME = "www.bed.test"
ZONE = """$ORIGIN bed.test.
@   3600 IN SOA ns.bed.test. hostmaster.bed.test. 1 7200 3600 1209600 3600
@   3600 IN NS  ns
ns  3600 IN A   192.0.2.53
www 3600 IN A   192.0.2.1
"""


def collections_root():
    for candidate in (COLLECTION / ".cache" / "collections", *COLLECTION.parents):
        if (candidate / "ansible_collections" / "clusterdns" / "doctor").exists():
            return candidate
    sys.exit("cannot find ansible_collections/clusterdns/doctor above %s; run 'make setup' first" % COLLECTION)


def ns_run(netns, argv, timeout=30, check=True):
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))
    return proc


def start_server(kind, netns, workdir):
    if kind == "dnsmasq":
        argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--user=root", "--no-resolv", "--no-hosts",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--cache-size=10000", "--address=/bed.test/192.0.2.1"]
    else:
        (workdir / "db.bed.test").write_text(ZONE)
        (workdir / "Corefile").write_text(".:53 {\n    bind 127.0.0.1\n    file %s bed.test\n}\n" % (workdir / "db.bed.test"))
        argv = [COREDNS, "-conf", str(workdir / "Corefile")]
    server = subprocess.Popen(["ip", "netns", "exec", netns, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("%s exited at start (rc %s)" % (argv[0], server.returncode))
        if "127.0.0.1:53 " in ns_run(netns, ["ss", "-lnu"]).stdout:
            return server
        time.sleep(0.1)
    raise RuntimeError("%s did not listen on 127.0.0.1:53 within 10 s" % argv[0])


def dnsperf(netns, queryfile, seconds, qps=None, outstanding=100):
    argv = ["dnsperf", "-s", "127.0.0.1", "-d", str(queryfile), "-l", str(seconds), "-t", "1", "-q", str(outstanding)]
    if qps:
        argv += ["-Q", str(qps)]
    out = ns_run(netns, argv, timeout=seconds + 60).stdout

    def number(label):
        found = re.search(r"%s:\s+([\d.]+)" % re.escape(label), out)
        if not found:
            raise RuntimeError("dnsperf output without %r:\n%s" % (label, out))
        return float(found.group(1))

    sent, lost = number("Queries sent"), number("Queries lost")
    return {"command": " ".join(argv), "sent": int(sent), "lost": int(lost), "loss": lost / sent if sent else None,
            "qps": number("Queries per second")}


def probe(netns, workdir, seconds, rate=0, in_flight=100):
    args = {"names": [NAME], "servers": ["127.0.0.1"], "count": 10**7, "rate": rate, "in_flight": in_flight, "timeout": 1.0,
            "max_seconds": seconds, "netns": netns}
    argsfile = workdir / "probe-args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(collections_root()))
    proc = subprocess.run([sys.executable, "-m", MODULE, str(argsfile)], env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    result = json.loads(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError("dns_probe failed: %s" % result.get("msg"))
    item = result["results"][0]
    return {"command": "dns_probe %s" % json.dumps(args, sort_keys=True), "sent": item["sent"], "lost": item["lost"],
            "loss": item["loss_ratio"], "qps": item["qps"], "p50_ms": item["latency_ms"]["p50"], "p99_ms": item["latency_ms"]["p99"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--server", choices=["dnsmasq", "coredns"], default="dnsmasq")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loss-qps", type=int, default=2000)
    parser.add_argument("--probability", type=float, default=0.05)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespace, iptables)")
    for tool in ("dnsperf", "iptables", "ip"):
        if not shutil.which(tool):
            sys.exit("%s not found (apt-get install dnsperf iptables iproute2)" % tool)
    if not 1 <= opts.seconds <= 300 or not 1 <= opts.repeats <= 20:
        sys.exit("--seconds must be 1-300 and --repeats 1-20")

    netns = "cdpb%s" % uuid.uuid4().hex[:6]
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="cdpbench-"))
    queryfile = workdir / "queries.txt"
    queryfile.write_text("%s A\n" % NAME)
    server = None
    rows = {"throughput": [], "loss": []}
    try:
        subprocess.run(["ip", "netns", "add", netns], check=True, timeout=30)
        ns_run(netns, ["ip", "link", "set", "lo", "up"])
        server = start_server(opts.server, netns, workdir)
        for repeat in range(opts.repeats):
            perf, mine = dnsperf(netns, queryfile, opts.seconds), probe(netns, workdir, opts.seconds)
            rows["throughput"].append((perf, mine))
            print("throughput %d: dnsperf %.0f qps (lost %d)  probe %.0f qps (lost %d)  ratio %.2f"
                  % (repeat + 1, perf["qps"], perf["lost"], mine["qps"], mine["lost"], mine["qps"] / perf["qps"]), flush=True)
        rule = ["INPUT", "-p", "udp", "--dport", "53", "-m", "statistic", "--mode", "random", "--probability", str(opts.probability), "-j", "DROP"]
        ns_run(netns, ["iptables", "-A", *rule])
        for repeat in range(opts.repeats):
            perf = dnsperf(netns, queryfile, opts.seconds, qps=opts.loss_qps, outstanding=1000)
            mine = probe(netns, workdir, opts.seconds, rate=opts.loss_qps, in_flight=1000)
            rows["loss"].append((perf, mine))
            print("loss %d: dnsperf %.3f %% of %d  probe %.3f %% of %d  difference %.3f points"
                  % (repeat + 1, perf["loss"] * 100, perf["sent"], mine["loss"] * 100, mine["sent"], (mine["loss"] - perf["loss"]) * 100), flush=True)
        ns_run(netns, ["iptables", "-D", *rule])
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False, timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)

    ratios = [mine["qps"] / perf["qps"] for perf, mine in rows["throughput"]]
    gaps = [abs(mine["loss"] - perf["loss"]) * 100 for perf, mine in rows["loss"]]
    perf_qps = statistics.median(pair[0]["qps"] for pair in rows["throughput"])
    probe_qps = statistics.median(pair[1]["qps"] for pair in rows["throughput"])
    perf_loss = statistics.median(pair[0]["loss"] for pair in rows["loss"]) * 100
    probe_loss = statistics.median(pair[1]["loss"] for pair in rows["loss"]) * 100
    print("\nserver %s, %d s per run, %d repeats" % (opts.server, opts.seconds, opts.repeats))
    print("median QPS: dnsperf %.0f, probe %.0f, ratio probe/dnsperf %.2f" % (perf_qps, probe_qps, statistics.median(ratios)))
    print("median loss at %d qps with %.1f %% random drop: dnsperf %.3f %%, probe %.3f %%, largest gap %.3f points"
          % (opts.loss_qps, opts.probability * 100, perf_loss, probe_loss, max(gaps)))
    print("commands:\n  %s\n  %s" % (rows["loss"][0][0]["command"], rows["loss"][0][1]["command"]))
    return 0 if max(gaps) <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
