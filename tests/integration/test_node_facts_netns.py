# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""conntrack_facts and kernel_facts through ansible inside a network namespace the test creates.

UDP counters and conntrack entries are per network namespace, so a namespace is a real node as far
as these modules can tell. The test makes real receive-buffer drops (datagrams sent to a socket
that is never read, with a 4 KiB buffer) while kernel_facts samples its interval, and real
conntrack entries (UDP flows through a ``-m conntrack`` rule), and checks what the modules and the
finding engine report. Only loopback traffic inside the namespace; the namespace is removed in
every case.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid

import pytest
from conftest import ANSIBLE_BIN, COLLECTION

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces"),
    pytest.mark.skipif(not shutil.which("conntrack"), reason="conntrack is not installed (apt-get install conntrack)"),
]

# Sends bursts of 100 datagrams every 0.1 s (at most ROUNDS bursts) to an unread socket with a
# 4 KiB receive buffer, in the namespace, so that drops happen all through kernel_facts' interval.
FLOOD = """
import socket, sys, time
rounds = int(sys.argv[1])
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
r.bind(("127.0.0.1", 5300))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(rounds):
    for _ in range(100):
        s.sendto(b"x" * 64, ("127.0.0.1", 5300))
    time.sleep(0.1)
"""


def sh(*argv, netns=None, timeout=30, check=True):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [str(a) for a in argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture
def netns(tmp_path):
    name = "cdnode-" + uuid.uuid4().hex[:8]
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "link", "set", "lo", "up", netns=name)
        wrapper = tmp_path / "python3"
        wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (name, sys.executable))
        wrapper.chmod(0o755)
        yield name, wrapper
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)


def module(wrapper, tmp_path, name, args):
    env = dict(os.environ, ANSIBLE_CONFIG=str(COLLECTION / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")))
    cmd = [str(ANSIBLE_BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=%s" % wrapper,
           "-m", "clusterdns.doctor.%s" % name, "-a", json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]["ansible_facts"]


def test_receive_buffer_drops_during_the_interval_give_node001(netns, tmp_path):
    name, wrapper = netns
    flood = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", FLOOD, "300"])  # <= 30000 datagrams, <= 30 s
    try:
        facts = module(wrapper, tmp_path, "kernel_facts", {"interval": 4})["clusterdns_kernel"]
    finally:
        flood.kill()
        flood.wait(timeout=10)
    rising = facts["udp_delta"]["udp"]
    assert rising["RcvbufErrors"] > 100 and rising["InErrors"] == rising["RcvbufErrors"]
    assert facts["interval"] == 4.0
    result = _findings.evaluate({"node1": {"clusterdns_kernel": facts}})
    (node001,) = [f for f in result["findings"] if f["id"] == "NODE001"]
    assert node001["evidence"]["window"] == "in 4.0 s" and node001["evidence"]["udp"]["RcvbufErrors"] == rising["RcvbufErrors"]


def test_quiet_namespace_has_no_node001(netns, tmp_path):
    name, wrapper = netns
    facts = module(wrapper, tmp_path, "kernel_facts", {"interval": 0.5})["clusterdns_kernel"]
    checks = {c["id"]: c for c in _findings.evaluate({"node1": {"clusterdns_kernel": facts}})["checks"]}
    assert checks["NODE001"]["status"] == "pass"


def test_conntrack_count_is_the_namespace_table(netns, tmp_path):
    name, wrapper = netns
    # conntrack starts tracking in a namespace once a rule needs it
    sh("iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT", netns=name)
    sh(sys.executable, "-c", "import socket\nfor p in range(40000, 40025):\n"
       "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'q', ('127.0.0.1', p))", netns=name)
    listed = int(sh("conntrack", "-C", netns=name).stdout.strip())
    facts = module(wrapper, tmp_path, "conntrack_facts", {"interval": 0.5})["clusterdns_conntrack"]
    assert listed >= 25 and facts["count"] == listed
    assert facts["max"] == int(pathlib.Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    assert facts["stats_source"] == "proc" and facts["stats_delta"] is not None
    checks = {c["id"]: c for c in _findings.evaluate({"node1": {"clusterdns_conntrack": facts}})["checks"]}
    assert checks["CT001"]["status"] == "pass" and checks["CT002"]["status"] == "pass"
