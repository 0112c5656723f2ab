# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Kubernetes node in two network namespaces, with a real dnsmasq.

::

    pod namespace                    node namespace
    eth0 10.244.X.2/24  <-- veth --> <pod_if> 10.244.X.1/24   (cilium_host, lxc..., cni0, cali...)
    default via 10.244.X.1           lo: 127.0.0.1, DNS VIP 169.254.25.10/32
                                     dnsmasq (/usr/sbin/dnsmasq), zone bed.test -> 192.0.2.1

Everything lives inside namespaces the bed creates; nothing touches the machine's own
interfaces. ``close()`` kills dnsmasq, deletes both namespaces (which removes the veth pair and
every iptables rule made inside them) and the bed's files; the pytest fixture calls it in a
``finally``. Names are short and unique per bed (``cdb<hex6>n`` / ``cdb<hex6>p``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid

DNSMASQ = "/usr/sbin/dnsmasq"
VIP = "169.254.25.10"
ZONE = "bed.test"
ZONE_ANSWER = "192.0.2.1"


class BedError(RuntimeError):
    """A test-bed step failed; the message has the command and its stderr."""


def run(argv, netns=None, check=True, timeout=30, stdin=None):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [str(a) for a in argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, input=stdin)
    if check and proc.returncode != 0:
        raise BedError("%s exited %d: %s" % (" ".join(cmd), proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


class Bed:
    """One node and one pod namespace. Use as a context manager or call close()."""

    def __init__(self, pod_if="cilium_host", subnet=0, vip=VIP, workdir=None):
        if len(pod_if) > 15:
            raise ValueError("interface name %r is longer than 15 characters" % pod_if)
        tag = uuid.uuid4().hex[:6]
        self.node = "cdb%sn" % tag
        self.pod = "cdb%sp" % tag
        self.pod_if = pod_if
        self.vip = vip
        self.node_ip = "10.244.%d.1" % subnet
        self.pod_ip = "10.244.%d.2" % subnet
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="cdbed-")
        os.makedirs(self.dir, exist_ok=True)
        self.dnsmasq = None
        self.conf_path = os.path.join(self.dir, "dnsmasq.conf")
        self._made = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # --- construction -------------------------------------------------------------------
    def _build(self):
        for name in (self.node, self.pod):
            run(["ip", "netns", "add", name])
            self._made.append(name)
            run(["ip", "link", "set", "lo", "up"], netns=name)
        # Create the pair inside the node namespace, then move the peer: no name ever exists in
        # the root namespace, so a per-test name like cilium_host cannot clash with the machine's.
        run(["ip", "link", "add", self.pod_if, "type", "veth", "peer", "name", "eth0", "netns", self.pod], netns=self.node)
        run(["ip", "addr", "add", self.node_ip + "/24", "dev", self.pod_if], netns=self.node)
        run(["ip", "link", "set", self.pod_if, "up"], netns=self.node)
        run(["ip", "addr", "add", self.vip + "/32", "dev", "lo"], netns=self.node)
        run(["ip", "addr", "add", self.pod_ip + "/24", "dev", "eth0"], netns=self.pod)
        run(["ip", "link", "set", "eth0", "up"], netns=self.pod)
        run(["ip", "route", "add", "default", "via", self.node_ip], netns=self.pod)

    def add_pod_interface(self, name, subnet):
        """Another veth into the pod namespace (``eth<subnet>``), for interfaces made after dnsmasq started."""
        peer = "eth%d" % subnet
        run(["ip", "link", "add", name, "type", "veth", "peer", "name", peer, "netns", self.pod], netns=self.node)
        run(["ip", "addr", "add", "10.244.%d.1/24" % subnet, "dev", name], netns=self.node)
        run(["ip", "link", "set", name, "up"], netns=self.node)
        run(["ip", "addr", "add", "10.244.%d.2/24" % subnet, "dev", peer], netns=self.pod)
        run(["ip", "link", "set", peer, "up"], netns=self.pod)

    def add_cluster_ip(self, cluster_ip="10.96.0.10"):
        """kube-proxy style DNAT of ``cluster_ip`` port 53 (UDP and TCP) to the VIP, in the node namespace."""
        for proto in ("udp", "tcp"):
            run(["iptables", "-t", "nat", "-A", "PREROUTING", "-d", cluster_ip + "/32", "-p", proto, "--dport", "53",
                 "-m", "comment", "--comment", "kube-system/kube-dns:dns", "-j", "DNAT", "--to-destination", self.vip + ":53"],
                netns=self.node)

    def add_drop(self, proto="udp"):
        """Drop DNS arriving from the pod interface (a firewall fault), in the node namespace."""
        run(["iptables", "-A", "INPUT", "-i", self.pod_if, "-p", proto, "--dport", "53", "-j", "DROP"], netns=self.node)

    # --- dnsmasq ------------------------------------------------------------------------
    def write_conf(self, text, name=None):
        path = os.path.join(self.dir, name) if name else self.conf_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def start_dnsmasq(self, conf=None, args=(), wait_for=None, user="root"):
        """Start dnsmasq in the node namespace with ``conf`` (text) as its only config file.

        The zone ``bed.test`` answers 192.0.2.1 without any upstream. Waits (at most 5 s) until a
        UDP socket on port 53 exists, or ``wait_for`` (an address) listens. ``user`` is the user
        dnsmasq drops to (``nobody`` behaves like a packaged dnsmasq, which cannot bind new
        interfaces after start with ``bind-interfaces``).
        """
        if self.dnsmasq is not None:
            raise BedError("dnsmasq already running")
        if conf is not None:
            self.write_conf(conf)
        argv = ["ip", "netns", "exec", self.node, DNSMASQ, "--keep-in-foreground", "--conf-file=" + self.conf_path,
                "--pid-file=", "--user=" + user, "--no-resolv", "--no-hosts", "--address=/%s/%s" % (ZONE, ZONE_ANSWER), *args]
        self.dnsmasq = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                err = self.dnsmasq.stderr.read()
                self.dnsmasq = None
                raise BedError("dnsmasq exited at start: %s" % err.strip())
            sockets = run(["ss", "-lnup"], netns=self.node).stdout
            if ":53 " in sockets and (wait_for is None or "%s:53 " % wait_for in sockets):
                return self.dnsmasq.pid
            time.sleep(0.1)
        raise BedError("dnsmasq did not listen on port 53 within 5 s")

    def stop_dnsmasq(self):
        if self.dnsmasq is None:
            return
        self.dnsmasq.terminate()
        try:
            self.dnsmasq.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.dnsmasq.kill()
            self.dnsmasq.wait(timeout=5)
        self.dnsmasq = None

    def restart_dnsmasq(self, conf=None, args=(), user="root"):
        self.stop_dnsmasq()
        return self.start_dnsmasq(conf, args, user=user)

    # --- probes -------------------------------------------------------------------------
    def dig(self, netns, server=None, name="www." + ZONE, tcp=False):
        """``dig +time=1 +tries=1``: the answer's addresses, or None on timeout / no server."""
        argv = ["dig", "+time=1", "+tries=1", "+short", "@" + (server or self.vip), name]
        if tcp:
            argv.insert(1, "+tcp")
        proc = run(argv, netns=netns, check=False, timeout=15)
        if proc.returncode != 0:
            return None
        return proc.stdout.split()

    def ping(self, netns, address=None):
        return run(["ping", "-c", "1", "-W", "1", address or self.vip], netns=netns, check=False, timeout=10).returncode == 0

    # --- clean-up -----------------------------------------------------------------------
    def close(self):
        try:
            self.stop_dnsmasq()
        finally:
            for name in reversed(self._made):
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=30)
            self._made = []
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
