# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Kubernetes node in two network namespaces, with a real dnsmasq.

::

    pod namespace                    node namespace
    eth0 10.244.X.2/24  <-- veth --> <pod_if> 10.244.X.1/24   (cilium_host, lxc..., cni0, cali...)
    default via 10.244.X.1           lo: 127.0.0.1, DNS VIP 169.254.25.10/32
                                     dnsmasq (/usr/sbin/dnsmasq), zone bed.test -> 192.0.2.1
    DNS pod namespace (add_dns_pod)  lxc<hex6>d 10.244.1.1/24, forwarding; kube-proxy rules
    eth0 10.244.1.2/24  <-- veth --> (add_cluster_ip): ClusterIP 10.96.0.10:53 -> DNAT 10.244.1.2:53
    dnsmasq, zone bed.test

Everything lives inside namespaces the bed creates; nothing touches the machine's own
interfaces. ``close()`` kills dnsmasq, deletes both namespaces (which removes the veth pair and
every iptables rule made inside them) and the bed's files; the pytest fixture calls it in a
``finally``. Names are short and unique per bed (``cdb<hex6>n`` / ``cdb<hex6>p``).

A run that is killed cannot clean up after itself, so every bed is also registered, before its
first namespace exists, in ``/run/clusterdns-testbed/<node>.json`` with its state directory and
its owner (a process id and that process's start time). ``sweep()`` removes the beds whose owner
has gone (the integration conftest runs it when a session starts and ends), ``remove()`` removes
one bed's namespaces after killing every process still inside them, and fails when a namespace
is still there afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

DNSMASQ = "/usr/sbin/dnsmasq"
VIP = "169.254.25.10"
ZONE = "bed.test"
ZONE_ANSWER = "192.0.2.1"
REGISTRY = "/run/clusterdns-testbed"
NETNS_DIR = "/run/netns"


class BedError(RuntimeError):
    """A test-bed step failed; the message has the command and its stderr."""


def run(argv, netns=None, check=True, timeout=30, stdin=None):
    cmd = (["ip", "netns", "exec", netns] if netns else []) + [str(a) for a in argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, input=stdin)
    if check and proc.returncode != 0:
        raise BedError("%s exited %d: %s" % (" ".join(cmd), proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


def process_start(pid):
    """The start time of ``pid`` (clock ticks since boot, /proc/PID/stat field 22), or None when
    there is no such process or it is a zombie: with the pid it names one process, pid reuse aside."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as handle:
            fields = handle.read().rsplit(") ", 1)[-1].split()
    except (OSError, ValueError):
        return None
    if not fields or fields[0] == "Z":
        return None
    return int(fields[19])


def netns_exists(name):
    return os.path.exists(os.path.join(NETNS_DIR, name))


def register(node, pod, workdir, owner_pid=None, extra=()):
    """Write the bed's registry entry (before a namespace it names exists); returns its path.
    ``extra``: further namespaces of the bed (the DNS pod)."""
    os.makedirs(REGISTRY, exist_ok=True)
    entry = {"node": node, "pod": pod, "extra": list(extra), "workdir": os.path.abspath(workdir) if workdir else None, "created": time.time(),
             "owner_pid": owner_pid, "owner_start": process_start(owner_pid) if owner_pid else None}
    path = os.path.join(REGISTRY, node + ".json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(entry, handle)
    return path


def registered():
    """Every registry entry, each with its ``path``."""
    entries = []
    for path in sorted(glob.glob(os.path.join(REGISTRY, "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                entry = json.load(handle)
        except (OSError, ValueError):
            continue
        entry["path"] = path
        entries.append(entry)
    return entries


def _kill_inside(name, deadline):
    """SIGTERM, then SIGKILL, every process in netns ``name`` (dnsmasq, a module still running)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30, check=False)
        pids = [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        while time.monotonic() < deadline and any(process_start(pid) is not None for pid in pids):
            time.sleep(0.05)
        deadline = time.monotonic() + 2


def remove(names, registry_path=None):
    """Remove network namespaces ``names`` (a missing one is fine) after killing what runs in them.

    Raises BedError naming the namespaces still present afterwards and the error of ``ip netns del``;
    the registry entry is removed only when every namespace is gone.
    """
    errors = []
    for name in [n for n in names if n]:
        if not netns_exists(name):
            continue
        _kill_inside(name, time.monotonic() + 5)
        proc = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True, timeout=30, check=False)
        if netns_exists(name):
            errors.append("%s (ip netns del exited %d: %s)" % (name, proc.returncode, (proc.stderr or proc.stdout).strip() or "no message"))
    if errors:
        raise BedError("network namespaces left behind: %s" % "; ".join(errors))
    if registry_path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(registry_path)


def entry_names(entry):
    """The namespaces of a registry entry or a command-line state, pod side first."""
    return [n for n in [entry.get("pod"), *(entry.get("extra") or []), entry.get("node")] if n]


def stale(entry):
    """Why a registry entry's bed is left over (its owner has gone), or None while the owner runs."""
    owner = entry.get("owner_pid")
    if not owner:
        return None
    if process_start(owner) != entry.get("owner_start"):
        return "its owner, process %s, has ended" % owner
    return None


def sweep(owner_pid=None, everything=False):
    """Remove the beds whose owner has ended (or, with ``owner_pid``, those of that owner too;
    with ``everything``, every registered bed). Returns ``[(node, pod, reason)]`` of the beds removed."""
    removed = []
    for entry in registered():
        reason = "removed on request" if everything else stale(entry)
        if reason is None and owner_pid is not None and entry.get("owner_pid") == owner_pid:
            reason = "still there when its owner, process %s, finished" % owner_pid
        if reason is None:
            continue
        remove(entry_names(entry), entry["path"])
        removed.append((entry.get("node"), entry.get("pod"), reason))
    return removed


class Bed:
    """One node and one pod namespace. Use as a context manager or call close().

    ``owner_pid`` is the process whose end makes the bed a leftover for ``sweep()``: this process
    by default, 0 for none (a bed of the command line that only ``down`` removes).
    """

    def __init__(self, pod_if="cilium_host", subnet=0, vip=VIP, workdir=None, owner_pid=None):
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
        # Registered before the first namespace exists; owned by this process unless told otherwise
        # (the command line passes the process that will run ``down``, or none).
        self._owner = os.getpid() if owner_pid is None else (owner_pid or None)
        self.extra = []  # further namespaces (add_dns_pod)
        self._servers = []  # dnsmasq processes outside the node namespace
        self.registry = register(self.node, self.pod, self.dir, self._owner)
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # --- construction -------------------------------------------------------------------
    def _build(self):
        for name in (self.node, self.pod):
            run(["ip", "netns", "add", name])
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

    def add_dns_pod(self, subnet=1):
        """A CoreDNS stand-in in a namespace of its own (``cdb<hex6>d``), joined to the node by a veth
        ``lxc<hex6>d`` as Cilium names a pod's, at 10.244.<subnet>.2, with a dnsmasq answering the
        bed's zone. The node namespace forwards (its own net.ipv4.ip_forward). Returns the address."""
        name = self.node[:-1] + "d"
        node_if = "lxc" + self.node[3:-1] + "d"
        address = "10.244.%d.2" % subnet
        self.extra.append(name)
        self.registry = register(self.node, self.pod, self.dir, self._owner, self.extra)  # before it exists
        run(["ip", "netns", "add", name])
        run(["ip", "link", "set", "lo", "up"], netns=name)
        run(["ip", "link", "add", node_if, "type", "veth", "peer", "name", "eth0", "netns", name], netns=self.node)
        run(["ip", "addr", "add", "10.244.%d.1/24" % subnet, "dev", node_if], netns=self.node)
        run(["ip", "link", "set", node_if, "up"], netns=self.node)
        run(["ip", "addr", "add", address + "/24", "dev", "eth0"], netns=name)
        run(["ip", "link", "set", "eth0", "up"], netns=name)
        run(["ip", "route", "add", "default", "via", "10.244.%d.1" % subnet], netns=name)
        run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=self.node)
        server = subprocess.Popen(["ip", "netns", "exec", name, DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=",
                                   "--user=root", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=" + address,
                                   "--address=/%s/%s" % (ZONE, ZONE_ANSWER)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._servers.append(server)
        for _attempt in range(50):  # at most 5 s
            if server.poll() is not None:
                raise BedError("dnsmasq of the DNS pod exited at start: %s" % server.stderr.read().strip())
            if "%s:53 " % address in run(["ss", "-lnu"], netns=name).stdout:
                return address
            time.sleep(0.1)
        raise BedError("dnsmasq of the DNS pod did not listen on %s:53 within 5 s" % address)

    def add_cluster_ip(self, cluster_ip="10.96.0.10", target=None):
        """kube-proxy (iptables mode) rules for the kube-dns Service ``cluster_ip`` port 53, UDP and TCP,
        in the node namespace: KUBE-SERVICES from PREROUTING and OUTPUT, a KUBE-SVC chain per port with
        the ``kube-system/kube-dns:dns`` / ``:dns-tcp`` comments, and a KUBE-SEP chain that DNATs to
        ``target`` port 53 (a DNS pod of add_dns_pod; default: the VIP on the node)."""
        target = target or self.vip
        if run(["iptables", "-t", "nat", "-N", "KUBE-SERVICES"], netns=self.node, check=False).returncode == 0:
            for chain in ("PREROUTING", "OUTPUT"):
                run(["iptables", "-t", "nat", "-A", chain, "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
                    netns=self.node)
        for proto, port_name in (("udp", "dns"), ("tcp", "dns-tcp")):
            digest = base64.b32encode(hashlib.sha256(("%s/%s/%s" % (cluster_ip, proto, target)).encode()).digest()).decode()
            svc, sep = "KUBE-SVC-" + digest[:16], "KUBE-SEP-" + digest[16:32]
            comment = "kube-system/kube-dns:" + port_name
            for chain in (svc, sep):
                run(["iptables", "-t", "nat", "-N", chain], netns=self.node)
            run(["iptables", "-t", "nat", "-A", "KUBE-SERVICES", "-d", cluster_ip + "/32", "-p", proto, "-m", "comment", "--comment",
                 comment + " cluster IP", "-m", proto, "--dport", "53", "-j", svc], netns=self.node)
            run(["iptables", "-t", "nat", "-A", svc, "-m", "comment", "--comment", "%s -> %s:53" % (comment, target), "-j", sep], netns=self.node)
            run(["iptables", "-t", "nat", "-A", sep, "-p", proto, "-m", "comment", "--comment", comment, "-m", proto,
                 "-j", "DNAT", "--to-destination", target + ":53"], netns=self.node)

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
        """Stop dnsmasq, remove both namespaces (and whatever still runs in them) and the bed's files.

        Raises BedError when a namespace is still there afterwards; safe to call twice."""
        try:
            self.stop_dnsmasq()
            for server in self._servers:
                server.kill()
                server.wait(timeout=5)
            self._servers = []
        finally:
            try:
                remove([self.pod, *self.extra, self.node], self.registry)
            finally:
                if self._own_dir:
                    shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
