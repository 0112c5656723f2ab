#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: dns_drop_trace
short_description: Trace where the kernel drops DNS packets, and why, for a bounded time
version_added: 1.0.0
description:
  - Runs a bpftrace program for O(seconds) seconds (or until O(packet_budget) drops were seen) on
    the C(skb:kfree_skb) tracepoint and reports every DNS packet (UDP and TCP, IPv4 and IPv6, source
    or destination port in O(ports)) that the kernel freed as dropped.
  - Each drop carries the kernel's drop reason (for example C(NETFILTER_DROP), C(NO_SOCKET),
    C(IP_RPFILTER), C(SOCKET_RCVBUFF)), the kernel function that dropped it, the network namespace
    inode and interface, and the source and destination address and port.
  - Reason names are read from the tracepoint's own format file on the node, never from a built-in
    table, because the numbers change between kernel versions.
  - The drops are counted in the kernel (complete counts by reason, by location and by flow) and
    the first O(samples) are also returned one by one.
  - Conntrack insert failures (the DNAT race of finding CT002) are reported as well. Where the
    kernel has kprobes, a probe on C(__nf_conntrack_confirm) flags each DNS packet that conntrack
    refused. Otherwise the module reports the increase of the C(insert_failed), C(drop) and
    C(clashres) counters of C(/proc/net/stat/nf_conntrack) over the trace window.
  - When the node cannot trace (not root, no bpftrace, bpftrace too old, no kernel BTF, no tracefs,
    no C(kfree_skb) tracepoint) the result says C(available=false) with the reason; the module does
    not fail. On kernels whose C(kfree_skb) has no C(reason) field (before 5.17) it falls back to
    counting drops by kernel location only.
  - The tracing process is always cleaned up. bpftrace runs in its own process group with a hard
    timeout and is killed on every exit path, including when this module gets C(SIGTERM),
    C(SIGINT) or C(SIGHUP). The child also gets C(SIGKILL) if the module dies, and the program
    stops itself after O(seconds) in any case. After it exits, the module checks that no process of
    that group is left.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - bpftrace 0.17.0 or later on the node (Debian/Ubuntu package C(bpftrace)).
  - Kernel with BPF tracepoint support and BTF (C(/sys/kernel/btf/vmlinux)); drop reasons need Linux 5.17 or later.
  - C(mount) when tracefs is not mounted yet.
notes:
  - Needs root. bpftrace refuses to run as any other user, and loading BPF needs C(CAP_SYS_ADMIN),
    or C(CAP_BPF) and C(CAP_PERFMON).
  - If tracefs is not mounted, the module mounts it at C(/sys/kernel/tracing) for the trace. It
    unmounts it afterwards unless O(unmount_tracefs=false). RV(ansible_facts.clusterdns_drop_trace.mounted_tracefs)
    says whether it did so.
  - The namespace of a drop is the namespace of the device the packet was on (C(skb->dev)).
    For locally sent packets dropped before a device was set, it is the namespace of the sending
    socket. The current task's namespace is not used, because drops happen in softirq context,
    where the current task is whatever task the CPU interrupted.
  - Headers are read at the packet's network header. IPv6 extension headers are not walked, so
    DNS over IPv6 with extension headers is not seen. Tunnelled packets are seen by their outer
    header.
  - Conntrack counters are per network namespace. This module reads the counters of the namespace
    it runs in, the node's, which is where kube-proxy does the DNAT to the kube-dns ClusterIP.
  - In check mode the module traces exactly as in normal mode. It changes nothing on the node; the
    temporary tracefs mount is undone.
  - See C(docs/droptrace.md) in the collection for what each reason means for DNS, and the limits.
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
options:
  seconds:
    description:
      - How long to trace, counted from the moment the probes are attached.
      - bpftrace needs one to a few seconds more to compile and attach the program.
    type: int
    default: 5
  packet_budget:
    description:
      - Stop as soon as this many DNS drops were seen, even before O(seconds).
      - V(0) means no budget.
    type: int
    default: 0
  ports:
    description:
      - DNS ports. A packet is traced when its source or destination port is one of them, so
        dropped replies are seen as well as dropped queries.
    type: list
    elements: int
    default: [53]
  samples:
    description:
      - How many drops to return one by one, in the order the kernel saw them (the counts are
        always complete).
    type: int
    default: 20
  max_flows:
    description:
      - How many flows (reason, location, namespace, interface, addresses and ports) to return,
        the biggest first.
    type: int
    default: 50
  conntrack:
    description:
      - Also report conntrack insert failures during the trace (kprobe where possible, counter
        delta otherwise).
    type: bool
    default: true
  unmount_tracefs:
    description:
      - Unmount tracefs after the trace if this module mounted it.
      - If it is busy (another tracer started using it meanwhile) it is left mounted and the result says so.
    type: bool
    default: true
seealso:
  - name: skb drop reasons (kernel source, include/net/dropreason-core.h)
    description: What each drop reason means.
    link: https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/tree/include/net/dropreason-core.h
  - name: bpftrace
    description: The tracing engine this module runs.
    link: https://github.com/bpftrace/bpftrace
"""

EXAMPLES = r"""
- name: Trace DNS drops for 10 seconds while the probe runs
  clusterdns.doctor.dns_drop_trace:
    seconds: 10
  become: true
  register: clusterdns_trace

- name: Show what the kernel dropped
  ansible.builtin.debug:
    msg: "{{ ansible_facts.clusterdns_drop_trace.summary }}"
  when: ansible_facts.clusterdns_drop_trace.available

- name: Say why tracing was not possible
  ansible.builtin.debug:
    msg: "no trace: {{ clusterdns_trace.ansible_facts.clusterdns_drop_trace.reason }}"
  when: not clusterdns_trace.ansible_facts.clusterdns_drop_trace.available

- name: Trace NodeLocal DNSCache and CoreDNS ports, stop after 100 drops
  clusterdns.doctor.dns_drop_trace:
    ports: [53, 1053, 5353]
    seconds: 30
    packet_budget: 100
  become: true
"""

RETURN = r"""
ansible_facts:
  description: Facts about this node.
  returned: always
  type: dict
  contains:
    clusterdns_drop_trace:
      description: Kernel drops of DNS packets during the trace window.
      returned: always
      type: dict
      contains:
        available:
          description: Whether tracing ran. When V(false), RV(ansible_facts.clusterdns_drop_trace.reason) says why.
          returned: always
          type: bool
          sample: true
        reason:
          description:
            - Why tracing was not possible.
            - With V(available=true), why the drops have no reason names (V(locations) mode), else V(null).
          returned: always
          type: str
          sample: "needs root: bpftrace runs only as root (effective uid 65534)"
        mode:
          description:
            - V(reasons) when the kernel reports drop reasons.
            - V(locations) when it does not (before 5.17); then every reason is V(null) and drops
              are counted by kernel location only.
          returned: when available
          type: str
          choices: [reasons, locations]
          sample: reasons
        engine:
          description: The tracer that ran.
          returned: when available
          type: dict
          contains:
            bpftrace:
              description: Path of bpftrace.
              type: str
              returned: success
              sample: /usr/bin/bpftrace
            version:
              description: bpftrace version.
              type: str
              returned: success
              sample: 0.17.0
            program_version:
              description: Version of the bpftrace program shipped with this collection.
              type: str
              returned: success
              sample: "1"
            exit_code:
              description: Exit code of bpftrace, V(null) when it had to be killed.
              type: int
              returned: success
              sample: 0
            messages:
              description: bpftrace's standard error (at most 20 lines), for warnings.
              type: list
              elements: str
              returned: success
              sample: []
        mounted_tracefs:
          description: Whether this module mounted tracefs (it was not mounted before).
          returned: always
          type: bool
          sample: false
        tracefs:
          description: Where tracefs was found or mounted, and whether a mount made by this module was undone.
          returned: when tracefs was looked for
          type: dict
          contains:
            path:
              description: tracefs mount point used.
              type: str
              returned: success
              sample: /sys/kernel/tracing
            unmounted:
              description:
                - V(true) when the module mounted tracefs and unmounted it again.
                - V(false) when it left its mount in place, V(null) when it did not mount.
              type: bool
              returned: success
              sample: true
            note:
              description: Why a mount made by this module was left in place.
              type: str
              returned: success
              sample: null
        ports:
          description: The DNS ports traced.
          returned: always
          type: list
          elements: int
          sample: [53]
        window:
          description: The trace window.
          returned: when available
          type: dict
          contains:
            seconds_requested:
              description: O(seconds).
              type: int
              returned: success
              sample: 5
            seconds_traced:
              description: Time between probe attachment and the end of the program.
              type: float
              returned: success
              sample: 5.0004
            started:
              description: Wall-clock time (UTC, ISO 8601) when the probes were attached.
              type: str
              returned: success
              sample: "2026-11-22T14:30:01.123456+00:00"
            ended_by:
              description: What ended the trace.
              type: str
              returned: success
              choices: [time, budget, killed]
              sample: time
            packet_budget:
              description: O(packet_budget).
              type: int
              returned: success
              sample: 0
        total_drops:
          description: DNS packets the kernel dropped during the window (in-kernel count).
          returned: when available
          type: int
          sample: 3
        loss_drops:
          description:
            - Drops that lost a DNS packet, that is every drop whose reason is not a socket teardown reason.
            - This is the number to match with probe losses.
          returned: when available
          type: int
          sample: 3
        teardown_drops:
          description:
            - Packets freed because their socket was being closed (C(QUEUE_PURGE), C(SOCKET_CLOSE), C(TCP_CLOSE)).
            - For example, a TCP DNS client that closes its connection after reading the answer. No DNS message is lost.
          returned: when available
          type: int
          sample: 0
        summary:
          description: One sentence for reports.
          returned: when available
          type: str
          sample: "kernel dropped 3 DNS packets in 5.0 s: 3 NETFILTER_DROP in nft_do_chain"
        by_reason:
          description: Drops per reason, most first.
          returned: when available
          type: list
          elements: dict
          contains:
            reason:
              description: Drop reason name from the tracepoint format file, V(null) in V(locations) mode.
              type: str
              returned: success
              sample: NETFILTER_DROP
            reason_code:
              description: The raw enum value on this kernel (not portable between kernels).
              type: int
              returned: success
              sample: 12
            kind:
              description: V(loss), or V(teardown) for the socket teardown reasons (see RV(ansible_facts.clusterdns_drop_trace.teardown_drops)).
              type: str
              returned: success
              choices: [loss, teardown]
              sample: loss
            count:
              description: Number of drops.
              type: int
              returned: success
              sample: 3
        by_location:
          description: Drops per reason and kernel function, most first.
          returned: when available
          type: list
          elements: dict
          contains:
            reason:
              description: Drop reason name.
              type: str
              returned: success
              sample: NETFILTER_DROP
            reason_code:
              description: Raw enum value.
              type: int
              returned: success
              sample: 12
            location:
              description: Kernel symbol that freed the packet.
              type: str
              returned: success
              sample: nft_do_chain
            kind:
              description: V(loss) or V(teardown), as in RV(ansible_facts.clusterdns_drop_trace.by_reason).
              type: str
              returned: success
              choices: [loss, teardown]
              sample: loss
            count:
              description: Number of drops.
              type: int
              returned: success
              sample: 3
        flows:
          description:
            - Drops per flow, the O(max_flows) biggest first. Each flow has the same keys as a
              sample (without C(t) and C(netns_from)) plus C(count).
          returned: when available
          type: list
          elements: dict
          sample:
            - reason: NETFILTER_DROP
              reason_code: 12
              location: nft_do_chain
              netns: 4026532177
              interface: veth-srv
              family: ipv4
              protocol: udp
              src: 192.0.2.1
              sport: 40000
              dst: 192.0.2.2
              dport: 53
              direction: query
              conntrack_confirm_failed: false
              count: 3
        flows_truncated:
          description: How many smaller flows were left out by O(max_flows).
          returned: when available
          type: int
          sample: 0
        samples:
          description: The first O(samples) drops, in order.
          returned: when available
          type: list
          elements: dict
          contains:
            t:
              description: Seconds after the probes were attached.
              type: float
              returned: success
              sample: 1.5
            reason:
              description: Drop reason name, V(null) in V(locations) mode.
              type: str
              returned: success
              sample: NETFILTER_DROP
            reason_code:
              description: Raw enum value.
              type: int
              returned: success
              sample: 12
            location:
              description: Kernel symbol that freed the packet.
              type: str
              returned: success
              sample: nft_do_chain
            netns:
              description: Network namespace inode (as in C(readlink /proc/PID/ns/net)), V(null) when unknown.
              type: int
              returned: success
              sample: 4026532177
            netns_from:
              description: Where the namespace was taken from. V(dev) is the packet's device, V(sk) is the sending socket, V(none) means unknown.
              type: str
              returned: success
              choices: [dev, sk, none]
              sample: dev
            interface:
              description: Name of the packet's device in that namespace, V(null) when there was none.
              type: str
              returned: success
              sample: veth-srv
            family:
              description: V(ipv4) or V(ipv6).
              type: str
              returned: success
              sample: ipv4
            protocol:
              description: V(udp) or V(tcp).
              type: str
              returned: success
              sample: udp
            src:
              description: Source address.
              type: str
              returned: success
              sample: 192.0.2.1
            sport:
              description: Source port.
              type: int
              returned: success
              sample: 40000
            dst:
              description: Destination address.
              type: str
              returned: success
              sample: 192.0.2.2
            dport:
              description: Destination port.
              type: int
              returned: success
              sample: 53
            direction:
              description: V(query) when the destination port is a DNS port, V(reply) otherwise.
              type: str
              returned: success
              sample: query
            conntrack_confirm_failed:
              description: Conntrack refused to confirm this packet's entry (insert failure), seen by the kprobe.
              type: bool
              returned: success
              sample: false
        namespaces:
          description:
            - The network namespaces that appear in RV(ansible_facts.clusterdns_drop_trace.flows) and
              RV(ansible_facts.clusterdns_drop_trace.samples), with what lives in them. This helps to
              tell which pod or service a namespace inode belongs to.
            - V(names) lists the bind mounts in C(/run/netns) (iproute2 and the pod namespaces of
              containerd and CRI-O) and C(/run/docker/netns). V(processes) lists up to five
              processes whose network namespace it is (for a pod, C(pause) and its containers).
              A namespace whose processes are all gone has empty lists.
          returned: when available
          type: list
          elements: dict
          sample:
            - netns: 4026532315
              names: [cni-5e8a4c2b-1d6f-4a3e-9c1b-2f0d3e4a5b6c]
              processes: [{"pid": 2211, "comm": "pause"}, {"pid": 2305, "comm": "coredns"}]
        lost_events:
          description: Samples bpftrace could not deliver (the counts are not affected).
          returned: when available
          type: int
          sample: 0
        conntrack:
          description: Conntrack insert failures during the window.
          returned: when available and O(conntrack=true)
          type: dict
          contains:
            method:
              description:
                - V(kprobe) means a probe on C(__nf_conntrack_confirm) saw each refusal.
                - V(counters) means only the C(/proc/net/stat/nf_conntrack) counters were compared.
                - V(none) means neither was possible.
              type: str
              returned: success
              choices: [kprobe, counters, none]
              sample: counters
            probe_note:
              description: Why the kprobe was not used.
              type: str
              returned: success
              sample: "the kernel has no kprobe support (no kprobe PMU, no kprobe_events)"
            confirm_failed_dns:
              description: DNS packets dropped because conntrack refused their entry (V(kprobe) method only, else V(null)).
              type: int
              returned: success
              sample: 0
            confirm_failed_all:
              description: Conntrack confirm failures of any protocol (V(kprobe) method only, else V(null)).
              type: int
              returned: success
              sample: 0
            counters_delta:
              description: Increase of the node's conntrack counters over the trace (V(null) when unreadable).
              type: dict
              returned: success
              sample: {"insert_failed": 0, "drop": 0, "clashres": 0, "early_drop": 0, "insert": 0}
            netns:
              description:
                - Inode of the network namespace the module ran in, whose conntrack counters were read (V(null) when unknown).
                - Drops in RV(ansible_facts.clusterdns_drop_trace.flows) with this C(netns) happened where the counters were read.
              type: int
              returned: success
              sample: 4026531840
        cleanup:
          description: Evidence that nothing of the trace is left running.
          returned: when available
          type: dict
          contains:
            pid:
              description: Process id bpftrace had.
              type: int
              returned: success
              sample: 12345
            killed:
              description: Whether the module had to signal bpftrace (it did not end by itself in time).
              type: bool
              returned: success
              sample: false
            remaining:
              description: Processes of bpftrace's process group still present after cleanup (empty list expected).
              type: list
              elements: int
              returned: success
              sample: []
"""

import contextlib
import datetime
import os
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils import _droptrace, _droptrace_bt
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import LC_ENV

TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
FORMAT = "events/skb/kfree_skb/format"
BTF = "/sys/kernel/btf/vmlinux"
CT_STAT = "/proc/net/stat/nf_conntrack"
# iproute2 names (ip netns) and the CNI runtimes' pod namespaces (containerd, CRI-O, Docker)
NETNS_DIRS = ("/run/netns", "/var/run/netns", "/run/docker/netns")
# bpftrace compiles the program with LLVM before attaching: allow for a slow node.
STARTUP_GRACE = 60
KILL_WAIT = 5
NO_REASON_FIELD = ("the kernel's skb:kfree_skb tracepoint has no drop reason field (Linux before 5.17): "
                   "drops are counted by kernel location only")
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Interrupted(Exception):
    """The module got a termination signal while tracing."""


def _on_signal(signum, _frame):
    # One signal is enough: ignore the next ones so that the cleanup runs to its end.
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


def _child_setup():
    """In the child before exec: own process group, and SIGKILL if the module process dies."""
    os.setpgid(0, 0)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (ImportError, OSError, AttributeError):
        pass


def _read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def _group_members(pgid):
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
            except OSError:
                continue
    return sorted(members)


class Tracer:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.result = {"available": False, "reason": None, "mounted_tracefs": False, "ports": sorted(set(self.params["ports"]))}
        self.tracefs_path = None
        self.we_mounted = False
        self.released = False

    def unavailable(self, reason):
        self.result["reason"] = reason
        return self.result

    # --- preconditions ---------------------------------------------------------------------

    def preconditions(self):
        """None when tracing can start, else the reason it cannot."""
        euid = os.geteuid()
        if euid != 0:
            return "needs root: bpftrace runs only as root (effective uid %d); run the task with become" % euid
        status = _read("/proc/self/status")
        if status is not None:
            missing = _droptrace.missing_capabilities(status)
            if missing:
                return "root without the capabilities BPF tracing needs (missing %s; a container without privileges?)" % " or ".join(missing)
        self.bpftrace = self.module.get_bin_path("bpftrace", required=False, opt_dirs=["/usr/sbin", "/usr/local/bin"])
        if not self.bpftrace:
            return "bpftrace is not installed (Debian/Ubuntu package bpftrace)"
        rc, out, err = self.module.run_command([self.bpftrace, "--version"], environ_update=LC_ENV)
        if rc != 0:
            return "bpftrace --version exited %d: %s" % (rc, (err or out).strip()[:200])
        self.version = _droptrace.parse_bpftrace_version(out)
        if self.version < _droptrace_bt.MIN_BPFTRACE:
            return "bpftrace %s is too old (need %s or later)" % (_v(self.version), _v(_droptrace_bt.MIN_BPFTRACE))
        if not os.path.exists(BTF):
            return "the kernel has no BTF (%s missing): the trace program needs kernel type information" % BTF
        return self.find_tracefs()

    def find_tracefs(self):
        mounts = _droptrace.tracefs_mounts(_read("/proc/self/mountinfo") or "")
        for path in TRACEFS_PATHS:
            if path in mounts:
                self.tracefs_path = path
                self.result["tracefs"] = {"path": path, "unmounted": None, "note": None}
                return None
        path = TRACEFS_PATHS[0]
        if not os.path.isdir(path):
            return "tracefs is not mounted and %s does not exist (kernel without tracefs?)" % path
        mount = self.module.get_bin_path("mount", required=False)
        if not mount:
            return "tracefs is not mounted and the mount command is not installed"
        rc, out, err = self.module.run_command([mount, "-t", "tracefs", "nodev", path], environ_update=LC_ENV)
        if rc != 0:
            return "tracefs is not mounted and mounting it at %s failed: %s" % (path, (err or out).strip()[:200])
        self.we_mounted = True
        self.tracefs_path = path
        self.result["mounted_tracefs"] = True
        self.result["tracefs"] = {"path": path, "unmounted": False, "note": None}
        return None

    def release_tracefs(self):
        if not self.we_mounted or self.released:
            return
        self.released = True
        info = self.result["tracefs"]
        if not self.params["unmount_tracefs"]:
            info["note"] = "left mounted (unmount_tracefs=false)"
            return
        umount = self.module.get_bin_path("umount", required=False)
        if not umount:
            info["note"] = "left mounted: the umount command is not installed"
            return
        rc, out, err = self.module.run_command([umount, self.tracefs_path], environ_update=LC_ENV)
        if rc == 0:
            info["unmounted"] = True
        else:
            info["note"] = "left mounted: umount failed: %s" % (err or out).strip()[:200]

    # --- the trace -------------------------------------------------------------------------

    def run(self):
        reason = self.preconditions()
        if reason:
            return self.unavailable(reason)
        fmt_path = os.path.join(self.tracefs_path, FORMAT)
        text = _read(fmt_path)
        if text is None:
            return self.unavailable("no skb:kfree_skb tracepoint (%s unreadable)" % fmt_path)
        fmt = _droptrace.parse_tracepoint_format(text, source=fmt_path)
        reasons = fmt["reasons"] if fmt["has_reason"] else None
        ct = self.conntrack_plan() if self.params["conntrack"] else None
        ct_before = self.ct_counters() if ct else None
        run = self.spawn(self.program(fmt, ct))
        failed_probe = _droptrace.probe_attach_error(run["stderr"], _droptrace_bt.CT_CONFIRM_SYMBOL) if run["rc"] else None
        if ct and ct["method"] == "kprobe" and failed_probe:
            # The kernel lists the symbol but cannot probe it (inlined, notrace): trace without it.
            ct.update(method="counters", probe_note="the kprobe could not be attached (%s)" % failed_probe)
            ct_before = self.ct_counters()
            run = self.spawn(self.program(fmt, ct))
        ct_after = self.ct_counters() if ct else None
        if run["rc"] != 0 and run["ended_by"] != "killed":
            self.module.fail_json(
                msg="bpftrace failed to run the DNS drop trace program (exit %s)" % run["rc"],
                stderr=run["stderr"], stdout=run["stdout"][-2000:], cmd=[self.bpftrace, "-e", "<program>"], rc=run["rc"])
        parsed = _droptrace.parse_trace_output(run["stdout"], reasons, self.result["ports"])
        agg = _droptrace.aggregate(parsed, flow_limit=self.params["max_flows"])
        traced = None
        started = None
        if parsed["attached"] is not None:
            end_ns = parsed["ended"] if parsed["ended"] is not None else run["mono_end"]
            traced = round((end_ns - parsed["attached"]) / 1e9, 4)
            started = (datetime.datetime.now(datetime.timezone.utc)
                       - datetime.timedelta(seconds=(time.monotonic_ns() - parsed["attached"]) / 1e9)).isoformat()
        ended_by = run["ended_by"]
        if ended_by == "time" and parsed["budget_reached"]:
            ended_by = "budget"
        self.result.update({
            "available": True,
            "mode": "reasons" if fmt["has_reason"] else "locations",
            "reason": None if fmt["has_reason"] else NO_REASON_FIELD,
            "engine": {"bpftrace": self.bpftrace, "version": _v(self.version), "program_version": _droptrace_bt.PROGRAM_VERSION,
                       "exit_code": run["rc"], "messages": run["stderr"].splitlines()[-20:]},
            "window": {"seconds_requested": self.params["seconds"], "seconds_traced": traced, "started": started,
                       "ended_by": ended_by, "packet_budget": self.params["packet_budget"]},
            "total_drops": parsed["seen"] if parsed["seen"] is not None else agg["total"],
            "loss_drops": agg["losses"],
            "teardown_drops": agg["teardown"],
            "summary": _droptrace.summarize(agg, traced if traced is not None else self.params["seconds"]),
            "by_reason": agg["by_reason"],
            "by_location": agg["by_location"],
            "flows": agg["flows"],
            "flows_truncated": agg["flows_truncated"],
            "samples": parsed["samples"],
            "lost_events": parsed["lost_events"],
            "cleanup": run["cleanup"],
        })
        inodes = {item["netns"] for item in agg["flows"] + parsed["samples"] if item["netns"]}
        self.result["namespaces"] = _namespaces(inodes)
        if ct:
            ct["netns"] = _own_netns()
            if ct["method"] == "kprobe":
                ct["confirm_failed_dns"] = agg["conntrack_confirm_failed"]
                ct["confirm_failed_all"] = parsed["ct_fail_all"]
            if ct_before is not None and ct_after is not None:
                ct["counters_delta"] = _droptrace.conntrack_delta(ct_before, ct_after)
            elif ct["method"] == "counters":
                ct["method"] = "none"
            self.result["conntrack"] = ct
        return self.result

    def program(self, fmt, ct):
        return _droptrace_bt.render_program(
            self.result["ports"], self.params["seconds"], self.params["samples"], self.params["packet_budget"],
            reason_field=fmt["has_reason"], conntrack_probe=bool(ct and ct["method"] == "kprobe"))

    def conntrack_plan(self):
        plan = {"method": "counters", "probe_note": None, "confirm_failed_dns": None, "confirm_failed_all": None, "counters_delta": None}
        kallsyms = _read("/proc/kallsyms") or ""
        has_kprobes = os.path.exists("/sys/bus/event_source/devices/kprobe") or os.path.exists(os.path.join(self.tracefs_path, "kprobe_events"))
        if not has_kprobes:
            plan["probe_note"] = "the kernel has no kprobe support (no kprobe PMU, no kprobe_events)"
        elif (" %s\n" % _droptrace_bt.CT_CONFIRM_SYMBOL) not in kallsyms and (" %s\t" % _droptrace_bt.CT_CONFIRM_SYMBOL) not in kallsyms:
            plan["probe_note"] = "the kernel has no %s symbol (nf_conntrack not loaded?)" % _droptrace_bt.CT_CONFIRM_SYMBOL
        else:
            plan["method"] = "kprobe"
        return plan

    def ct_counters(self):
        text = _read(CT_STAT)
        if text is None:
            return None
        return _droptrace.parse_conntrack_stat(text, source=CT_STAT)

    def spawn(self, program):
        """Run bpftrace with a hard deadline; always leaves no process of its group behind."""
        env = dict(os.environ)
        env.update(LC_ENV)
        deadline = self.params["seconds"] + STARTUP_GRACE
        # Not run_command: the tracer needs its own process group, a parent-death signal and a hard
        # deadline, and must be killed from the signal handlers; run_command offers none of these.
        proc = subprocess.Popen(  # pylint: disable=ansible-bad-function
            [self.bpftrace, "-e", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            preexec_fn=_child_setup, close_fds=True)  # noqa: PLW1509 - the module runs no threads
        cleanup = {"pid": proc.pid, "killed": False, "remaining": []}
        ended_by = "time"
        out, err = "", ""
        try:
            out, err = proc.communicate(timeout=deadline)
        except subprocess.TimeoutExpired:
            ended_by = "killed"
            out, err = self.stop(proc, cleanup)
        except Interrupted as exc:
            self.stop(proc, cleanup)
            self.release_tracefs()
            self.module.fail_json(msg="interrupted by signal %d while tracing; bpftrace (pid %d) was stopped" % (exc.args[0], proc.pid),
                                  cleanup=cleanup, mounted_tracefs=self.we_mounted, tracefs=self.result.get("tracefs"))
        finally:
            if proc.poll() is None:
                self.stop(proc, cleanup)
            cleanup["remaining"] = _group_members(proc.pid)
        return {"rc": proc.returncode if not cleanup["killed"] else None, "stdout": _text(out), "stderr": _text(err),
                "ended_by": ended_by, "cleanup": cleanup, "mono_end": time.monotonic_ns()}

    @staticmethod
    def stop(proc, cleanup):
        """SIGINT to the group (bpftrace detaches and prints its maps), then SIGKILL."""
        cleanup["killed"] = True
        out, err = b"", b""
        for sig in (signal.SIGINT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                out, err = proc.communicate(timeout=KILL_WAIT)
                break
            except subprocess.TimeoutExpired:
                continue
        return out, err


def _namespaces(inodes, max_processes=5):
    """Who lives in each network namespace: names under /run/netns and a few processes."""
    found = {inode: {"netns": inode, "names": [], "processes": []} for inode in sorted(inodes)}
    if not found:
        return []
    for directory in NETNS_DIRS:
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in entries:
            try:
                inode = os.stat(os.path.join(directory, name)).st_ino
            except OSError:
                continue
            if inode in found and name not in found[inode]["names"]:
                found[inode]["names"].append(name)
    for entry in sorted(os.listdir("/proc"), key=lambda pid: int(pid) if pid.isdigit() else 0):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink("/proc/%s/ns/net" % entry)
            inode = int(link[link.index("[") + 1:link.index("]")])
        except (OSError, ValueError):
            continue
        item = found.get(inode)
        if item is None or len(item["processes"]) >= max_processes:
            continue
        comm = _read("/proc/%s/comm" % entry)
        if comm is not None:
            item["processes"].append({"pid": int(entry), "comm": comm.strip()})
    return list(found.values())


def _own_netns():
    """Inode of the module's network namespace: the one whose conntrack counters were read."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


def _text(data):
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


def _v(version):
    return ".".join(str(part) for part in version)


def main():
    module = AnsibleModule(
        argument_spec={
            "seconds": {"type": "int", "default": 5},
            "packet_budget": {"type": "int", "default": 0},
            "ports": {"type": "list", "elements": "int", "default": [53]},
            "samples": {"type": "int", "default": 20},
            "max_flows": {"type": "int", "default": 50},
            "conntrack": {"type": "bool", "default": True},
            "unmount_tracefs": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    for name, low, high in (("seconds", 1, 300), ("packet_budget", 0, 10**6), ("samples", 0, 1000), ("max_flows", 1, 4096)):
        if not low <= params[name] <= high:
            module.fail_json(msg="option %s must be from %d to %d, got %d" % (name, low, high, params[name]))
    bad = [port for port in params["ports"] if not 1 <= port <= 65535]
    if bad or not params["ports"]:
        module.fail_json(msg="option ports must list ports from 1 to 65535, got %s" % (params["ports"],))
    if len(set(params["ports"])) > 16:
        module.fail_json(msg="option ports takes at most 16 ports, got %d" % len(set(params["ports"])))

    for sig in SIGNALS:
        signal.signal(sig, _on_signal)
    tracer = Tracer(module)
    try:
        result = tracer.run()
    except ParseError as exc:
        module.fail_json(msg="cannot read the DNS drop trace: %s" % exc, **exc.as_dict())
    except Interrupted as exc:
        tracer.release_tracefs()
        module.fail_json(msg="interrupted by signal %d; no tracer is left running" % exc.args[0], mounted_tracefs=tracer.we_mounted,
                         tracefs=tracer.result.get("tracefs"))
    finally:
        tracer.release_tracefs()
    module.exit_json(changed=False, ansible_facts={"clusterdns_drop_trace": result})


if __name__ == "__main__":
    main()
