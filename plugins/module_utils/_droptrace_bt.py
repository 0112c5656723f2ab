# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# The bpftrace program that dns_drop_trace runs, shipped as data (module_utils travel with the
# module to the node). Stdlib only; render_program() fills in the few numbers and the port test.
#
# What the program does (bpftrace >= 0.17 with kernel BTF):
#   * tracepoint:skb:kfree_skb, i.e. every packet the kernel frees as dropped. From the skb it reads
#     the IP header at skb->head + skb->network_header (IPv4 or IPv6 by the version nibble), the
#     transport header right after it (IPv4 IHL; IPv6 fixed 40 bytes, no extension headers), and
#     keeps UDP/TCP packets whose source or destination port is one of the DNS ports.
#   * the namespace is the one of skb->dev (the device the packet was on), else of skb->sk (the
#     socket, for locally generated packets dropped before a device was set), else 0. The current
#     task's namespace is NOT used: drops happen in softirq context, where "current" is whatever
#     task the CPU happened to interrupt.
#   * kprobe/kretprobe on __nf_conntrack_confirm (only when the kernel has that symbol): a return
#     of NF_DROP (0) is a conntrack insert failure (the CT002 race); the skb is remembered so that
#     its kfree_skb record is flagged "ct_confirm_failed", and every failure is counted, DNS or not.
#   * it stops by itself after SECONDS (interval probe) or after BUDGET matching drops, so even
#     an orphaned bpftrace detaches within the trace window.
#
# Output lines (one record per line, fields separated by one space, empty field = unknown):
#   CDD-ATTACHED <ns>                       all probes attached (BEGIN runs after attachment)
#   CDD-SAMPLE <ns> <reason> <location> <netns> <netns_from> <ifname> <ipver> <l4proto>
#              <saddr> <sport> <daddr> <dport> <ct_confirm_failed>
#                                           one per drop, for the first SAMPLES drops only
#   CDD-BUDGET <n>                          the packet budget was reached
#   CDD-END <ns>                            the program is exiting
#   @cdd_drops[<reason>, <location>]: <n>   in-kernel counts of every matching drop
#   @cdd_flows[<reason>, <location>, <netns>, <ifname>, <l4proto>, <saddr>, <sport>, <daddr>, <dport>, <ct>]: <n>
#   @cdd_seen: <n>                          matching drops in total
#   @cdd_ct_fail_all: <n>                   conntrack confirm failures, any protocol or port
# <reason> is the raw enum value; names come from the tracepoint's format file (_droptrace).

from __future__ import annotations

import re

PROGRAM_VERSION = "1"

# Oldest bpftrace this program has been run with (Debian 12 ships 0.17.0).
MIN_BPFTRACE = (0, 17, 0)

CT_CONFIRM_SYMBOL = "__nf_conntrack_confirm"

_CT_PROBES = r"""
kprobe:__nf_conntrack_confirm
{
  @cdd_ctarg[tid] = (uint64)arg0;
}

kretprobe:__nf_conntrack_confirm
{
  $ctskb = @cdd_ctarg[tid];
  delete(@cdd_ctarg[tid]);
  if (retval == 0 && $ctskb != 0) {
    @cdd_ctfail[(uint64)$ctskb] = 1;
    @cdd_ct_fail_all = @cdd_ct_fail_all + 1;
  }
}
"""

_CT_LOOKUP = r"""
  $ct = @cdd_ctfail[(uint64)args->skbaddr];
  delete(@cdd_ctfail[(uint64)args->skbaddr]);
"""

_TEMPLATE = r"""
BEGIN
{
  @cdd_seen = 0;
  @cdd_printed = 0;
  @cdd_ct_fail_all = 0;
  printf("CDD-ATTACHED %llu\n", nsecs);
}
@@CT_PROBES@@
tracepoint:skb:kfree_skb
{
  $skb = (struct sk_buff *)args->skbaddr;
  if ($skb->network_header == 0xffff) {
    return;
  }
  $nh = $skb->head + $skb->network_header;
  $ver = (*(uint8 *)$nh) >> 4;
  $l4proto = (uint8)0;
  $l4 = $nh;
  if ($ver == 4) {
    $l4proto = *(uint8 *)($nh + 9);
    $l4 = $nh + ((*(uint8 *)$nh) & 15) * 4;
  } else if ($ver == 6) {
    $l4proto = *(uint8 *)($nh + 6);
    $l4 = $nh + 40;
  } else {
    return;
  }
  if ($l4proto != 17 && $l4proto != 6) {
    return;
  }
  $sport = ((uint16)*(uint8 *)$l4 << 8) | *(uint8 *)($l4 + 1);
  $dport = ((uint16)*(uint8 *)($l4 + 2) << 8) | *(uint8 *)($l4 + 3);
  if (!(@@PORT_TEST@@)) {
    return;
  }
  $netns = (uint32)0;
  $from = "none";
  if ($skb->dev != 0) {
    $netns = $skb->dev->nd_net.net->ns.inum;
    $from = "dev";
  } else if ($skb->sk != 0) {
    $netns = $skb->sk->__sk_common.skc_net.net->ns.inum;
    $from = "sk";
  }
  if ($ver == 4) {
    $src = ntop(2, *(uint32 *)($nh + 12));
    $dst = ntop(2, *(uint32 *)($nh + 16));
  } else {
    $src = ntop(10, ((struct ipv6hdr *)$nh)->saddr.in6_u.u6_addr8);
    $dst = ntop(10, ((struct ipv6hdr *)$nh)->daddr.in6_u.u6_addr8);
  }
  $reason = (uint32)@@REASON@@;
  $ct = 0;
@@CT_LOOKUP@@
  @cdd_seen = @cdd_seen + 1;
  @cdd_drops[$reason, ksym(args->location)] = count();
  @cdd_flows[$reason, ksym(args->location), $netns, $skb->dev->name, $l4proto, $src, $sport, $dst, $dport, $ct] = count();
  if (@cdd_printed < @@SAMPLES@@) {
    @cdd_printed = @cdd_printed + 1;
    printf("CDD-SAMPLE %llu %u %s %u %s %s %u %u %s %u %s %u %d\n", nsecs, $reason, ksym(args->location), $netns, $from,
           $skb->dev->name, $ver, $l4proto, $src, $sport, $dst, $dport, $ct);
  }
  if (@@BUDGET@@ > 0 && @cdd_seen >= @@BUDGET@@) {
    printf("CDD-BUDGET %llu\n", @cdd_seen);
    exit();
  }
}

interval:s:@@SECONDS@@
{
  exit();
}

END
{
  printf("CDD-END %llu\n", nsecs);
  print(@cdd_seen);
  print(@cdd_ct_fail_all);
  print(@cdd_drops);
  print(@cdd_flows);
  clear(@cdd_seen);
  clear(@cdd_ct_fail_all);
  clear(@cdd_printed);
  clear(@cdd_drops);
  clear(@cdd_flows);
@@CT_CLEAR@@}
"""

_CT_CLEAR = """  clear(@cdd_ctarg);
  clear(@cdd_ctfail);
"""

_MARKER = re.compile(r"@@[A-Z_]+@@")


def render_program(ports, seconds, samples, budget=0, reason_field=True, conntrack_probe=True):
    """The bpftrace program text for these settings.

    ``ports`` are the DNS ports (1-65535), ``seconds`` the trace window (1-3600), ``samples`` how
    many drops are printed one by one (0-10000), ``budget`` the number of matching drops after
    which tracing stops (0: no budget). ``reason_field`` False renders the program for kernels
    whose kfree_skb tracepoint has no ``reason`` (every record then carries reason 0).
    ``conntrack_probe`` adds the __nf_conntrack_confirm probes. Raises ValueError on bad numbers:
    only integers are ever put into the program text.
    """
    ports = [_int(port, "port", 1, 65535) for port in ports]
    if not ports:
        raise ValueError("at least one port is needed")
    values = {
        "@@PORT_TEST@@": " || ".join("$sport == %d || $dport == %d" % (port, port) for port in sorted(set(ports))),
        "@@SECONDS@@": str(_int(seconds, "seconds", 1, 3600)),
        "@@SAMPLES@@": str(_int(samples, "samples", 0, 10000)),
        "@@BUDGET@@": str(_int(budget, "budget", 0, 10**9)),
        "@@REASON@@": "args->reason" if reason_field else "0",
        "@@CT_PROBES@@": _CT_PROBES if conntrack_probe else "",
        "@@CT_LOOKUP@@": _CT_LOOKUP if conntrack_probe else "",
        "@@CT_CLEAR@@": _CT_CLEAR if conntrack_probe else "",
    }
    text = _TEMPLATE
    for marker, value in values.items():
        text = text.replace(marker, value)
    left = _MARKER.search(text)
    if left:
        raise ValueError("program template marker %s not filled" % left.group(0))
    return text


def _int(value, name, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError("%s must be an integer from %d to %d, got %r" % (name, low, high, value))
    return value
