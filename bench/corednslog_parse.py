# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: coredns_log_info's streaming classifier against ``grep -c NOERROR`` on the same file.

Generates ``--lines`` CoreDNS log lines with a fixed seed, in the shapes of the real captures in
tests/unit/plugins/module_utils/fixtures/corednslog (query log with and without a ``--timestamps``
prefix, UDP and TCP, NOERROR/NXDOMAIN/SERVFAIL/REFUSED, errors-plugin upstream timeouts, reloads,
kubernetes plugin warnings), writes them to a temporary file, then times ``--repeats`` times each
``grep -c NOERROR FILE`` (one process, wall clock) and the classifier reading the same file line
by line (``summarize(open(FILE))``), and prints the medians and their ratio. It checks that the
classifier's NOERROR count equals grep's.

    python3 bench/corednslog_parse.py [--lines 1000000] [--repeats 5] [--seed 20261122] [--keep FILE]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
COLLECTION = HERE.parent


def _import_classifier():
    for candidate in (COLLECTION / ".cache" / "collections", *COLLECTION.parents):
        if (candidate / "ansible_collections" / "clusterdns" / "doctor").exists():
            sys.path.insert(0, str(candidate))
            break
    from ansible_collections.clusterdns.doctor.plugins.module_utils import _corednslog
    return _corednslog


def generate(path, count, seed):
    rng = random.Random(seed)
    names = ["svc%d.ns%d.svc.cluster.local." % (i, i % 40) for i in range(3000)] + ["api%d.example.com." % i for i in range(500)]
    rcodes = ["NOERROR"] * 80 + ["NXDOMAIN"] * 16 + ["SERVFAIL"] * 3 + ["REFUSED"]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(count):
            pick = rng.random()
            stamp = "2026-11-22T12:%02d:%02d.%03dZ " % (i // 60000 % 60, i // 1000 % 60, i % 1000) if i % 2 else ""
            if pick < 0.97:
                rcode = rng.choice(rcodes)
                out.write('%s[INFO] 10.244.%d.%d:%d - %d "%s IN %s %s 56 false 512" %s qr,aa,rd 110 0.000%06ds\n' % (
                    stamp, rng.randrange(8), rng.randrange(250), rng.randrange(1024, 65535), rng.randrange(65536),
                    "A" if rng.random() < 0.5 else "AAAA", rng.choice(names), "udp" if rng.random() < 0.95 else "tcp",
                    rcode, rng.randrange(1000000)))
            elif pick < 0.995:
                out.write("%s[ERROR] plugin/errors: 2 %s A: read udp 10.244.0.5:%d->10.0.0.%d:53: i/o timeout\n" % (
                    stamp, rng.choice(names), rng.randrange(1024, 65535), rng.randrange(2, 4)))
            elif pick < 0.998:
                out.write("%s[INFO] Reloading\n%s[INFO] plugin/reload: Running configuration SHA512 = %064x\n" % (stamp, stamp, i))
            else:
                out.write('%s[WARNING] plugin/kubernetes: Kubernetes API connection failure: Get "https://10.96.0.1:443/version": '
                          'dial tcp 10.96.0.1:443: i/o timeout\n' % stamp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--keep", help="write the generated log here and keep it")
    args = parser.parse_args()
    corednslog = _import_classifier()
    handle, path = tempfile.mkstemp(suffix=".log")
    os.close(handle)
    if args.keep:
        path = args.keep
    try:
        generate(path, args.lines, args.seed)
        size = os.path.getsize(path)
        with open(path, encoding="utf-8") as f:
            total = sum(1 for _line in f)
        grep_times, parse_times = [], []
        grep_count = result = None
        for _repeat in range(args.repeats):
            start = time.perf_counter()
            proc = subprocess.run(["grep", "-c", "NOERROR", path], capture_output=True, text=True, check=True)
            grep_times.append(time.perf_counter() - start)
            grep_count = int(proc.stdout)
            start = time.perf_counter()
            with open(path, encoding="utf-8", errors="replace") as f:
                result = corednslog.summarize(f)
            parse_times.append(time.perf_counter() - start)
        if result["by_rcode"].get("NOERROR") != grep_count or result["lines"] != total:
            print("MISMATCH: classifier NOERROR %s lines %s, grep %s lines %s" % (result["by_rcode"].get("NOERROR"), result["lines"], grep_count, total))
            return 1
        grep_median, parse_median = statistics.median(grep_times), statistics.median(parse_times)
        print("log: %d lines, %.1f MiB; queries %d, errors %d, reloads %d, tickets %d (max 20)" % (
            total, size / 2**20, result["queries"], result["errors"], result["reloads"]["count"], len(result["tickets"])))
        print("grep -c NOERROR: median %.4f s (%s)" % (grep_median, ", ".join("%.4f" % t for t in grep_times)))
        print("classifier:      median %.3f s (%s)" % (parse_median, ", ".join("%.3f" % t for t in parse_times)))
        print("ratio classifier / grep: %.1f" % (parse_median / grep_median))
        return 0
    finally:
        if not args.keep and os.path.exists(path):
            os.unlink(path)


if __name__ == "__main__":
    sys.exit(main())
