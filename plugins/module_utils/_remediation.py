# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Decisions of the kernel remediation roles (conntrack, ipvs), as pure functions so that they are
# unit-tested on captured facts: what the role would write, or why it writes nothing, or why the
# requested change is refused before anything is touched. The roles only carry the plan out.
# Stdlib only.

from __future__ import annotations

# kube-proxy's own conntrack sizing (KubeProxyConntrackConfiguration defaults): it raises
# nf_conntrack_max to max(maxPerCore * CPUs, min) when the live value is lower, and sets the hash
# size to a quarter of that.
KUBE_PROXY_MAX_PER_CORE = 32768
KUBE_PROXY_MIN = 131072
# Memory of one conntrack entry: struct nf_conn is about 256-320 bytes with its extensions, plus
# the hash bucket pointers; 320 is the conservative figure the role uses.
ENTRY_BYTES = 320
# Kernels from 5.9 reschedule a reused source port whose real server is gone (UDP included); kube-proxy
# stops setting conn_reuse_mode there (kubernetes PR 102122).
IPVS_FIXED_KERNEL = (5, 9)
IPVS_SYSCTLS = ("conn_reuse_mode", "expire_nodest_conn", "expire_quiescent_template")

CONNTRACK_DEFAULTS = {
    "target": 0,
    "headroom_factor": 4,
    "kube_proxy_max_per_core": KUBE_PROXY_MAX_PER_CORE,
    "kube_proxy_min": KUBE_PROXY_MIN,
    "memory_budget_percent": 5.0,
    "entry_bytes": ENTRY_BYTES,
    "allow_lower": False,
}

IPVS_DEFAULTS = {
    "conn_reuse_mode": 0,
    "expire_nodest_conn": 1,
    "expire_quiescent_template": 1,
    "apply_on_fixed_kernel": False,
}


def _int(value, name, minimum=None):
    if isinstance(value, bool):
        raise ValueError("%s must be an integer, got %r" % (name, value))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError("%s must be an integer, got %r" % (name, value)) from None
    if minimum is not None and number < minimum:
        raise ValueError("%s must be at least %d, got %d" % (name, minimum, number))
    return number


def _ceil_div(a, b):
    return -(-a // b)


def kube_proxy_max(cpus, per_core=KUBE_PROXY_MAX_PER_CORE, minimum=KUBE_PROXY_MIN):
    """nf_conntrack_max kube-proxy would set on a node with ``cpus`` CPUs (0 per core: it leaves the limit alone)."""
    if per_core <= 0:
        return None
    return max(per_core * cpus, minimum)


def conntrack_plan(state, options=None, evidence=None):
    """Decide the nf_conntrack_max (and hash size) the conntrack role writes.

    ``state``: ``max``, ``count``, ``buckets`` (ints from conntrack_facts; ``max`` None when
    nf_conntrack is not loaded), ``cpus``, ``mem_total_bytes``, ``max_writable``,
    ``buckets_writable``, ``hashsize_writable`` (bools), ``persisted_max`` (the value in the role's
    drop-in file, or None).
    ``options``: see CONNTRACK_DEFAULTS. ``evidence``: the CT001 finding's evidence, when present.

    Formula (computed target, ``options.target`` = 0):
    ``max(kube_proxy_max, count * headroom_factor)``, and on top of that ``2 * max`` when the
    kernel logged "table full" while the table is not full now (a burst), unless the live value is
    already the one this role persisted (so a second run does not double it again); capped at the
    memory budget ``MemTotal * memory_budget_percent / 100 / entry_bytes``.
    An explicit target above the budget, below the current count, or below the live value
    without ``allow_lower`` is refused (``error``) before anything changes.

    Returns ``{action: raise|lower|none|skip, error, target, current, count, buckets_target,
    buckets_path, kube_proxy_max, budget_max, reason, formula}``.
    """
    opts = dict(CONNTRACK_DEFAULTS)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    evidence = evidence or {}
    plan = {"action": "none", "error": None, "target": None, "current": None, "count": None,
            "buckets_current": None, "buckets_target": None, "buckets_path": None,
            "kube_proxy_max": None, "budget_max": None, "reason": None, "formula": None}
    try:
        target_opt = _int(opts["target"], "conntrack_target", 0)
        factor = _int(opts["headroom_factor"], "conntrack_headroom_factor", 1)
        per_core = _int(opts["kube_proxy_max_per_core"], "conntrack_kube_proxy_max_per_core", 0)
        kp_min = _int(opts["kube_proxy_min"], "conntrack_kube_proxy_min", 0)
        entry_bytes = _int(opts["entry_bytes"], "conntrack_entry_bytes", 1)
        percent = float(opts["memory_budget_percent"])
        if not 0 < percent <= 50:
            raise ValueError("conntrack_memory_budget_percent must be above 0 and at most 50, got %s" % opts["memory_budget_percent"])
        cpus = _int(state.get("cpus"), "the CPU count", 1)
    except ValueError as exc:
        plan.update(action="skip", error=str(exc))
        return plan
    plan["kube_proxy_max"] = kube_proxy_max(cpus, per_core, kp_min)
    current = state.get("max")
    if current is None:
        plan.update(action="skip", reason="nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_max): "
                    "there is no table to size; it is created when the first conntrack rule is loaded")
        return plan
    current = int(current)
    count = int(state.get("count") or 0)
    plan.update(current=current, count=count)
    mem = state.get("mem_total_bytes")
    budget = int(int(mem) * percent / 100 // entry_bytes) if mem else None
    plan["budget_max"] = budget

    if target_opt:
        target = target_opt
        plan["formula"] = "conntrack_target"
        if budget is not None and target > budget:
            plan.update(action="skip", error="conntrack_target %d needs %d MiB (%d bytes per entry), above conntrack_memory_budget_percent=%s %% "
                        "of MemTotal (%d entries, %d MiB): lower conntrack_target or raise the budget"
                        % (target, target * entry_bytes >> 20, entry_bytes, opts["memory_budget_percent"], budget, budget * entry_bytes >> 20))
            return plan
        if target < count:
            plan.update(action="skip", error="conntrack_target %d is below the %d entries in use now: the kernel would drop new flows; "
                        "use a value above %d" % (target, count, count))
            return plan
        if target < current and not opts["allow_lower"]:
            plan.update(action="skip", error="conntrack_target %d is below the live nf_conntrack_max %d: this role only raises the limit; "
                        "set conntrack_allow_lower: true to lower it" % (target, current))
            return plan
    else:
        candidates = {"count * conntrack_headroom_factor": count * factor}
        if plan["kube_proxy_max"]:
            candidates["kube-proxy max(maxPerCore * CPUs, min)"] = plan["kube_proxy_max"]
        if (evidence.get("table_full_events") or 0) > 0 and state.get("persisted_max") != current:
            candidates["2 * nf_conntrack_max (kernel logged 'table full')"] = 2 * current
        plan["formula"] = max(candidates, key=candidates.get)
        target = candidates[plan["formula"]]
        if budget is not None and target > budget:
            if budget <= current:
                plan.update(action="skip", error="the computed target %d (%s) is above the memory budget of %d entries "
                            "(conntrack_memory_budget_percent=%s %% of MemTotal), which is not above the live %d: "
                            "raise conntrack_memory_budget_percent or set conntrack_target"
                            % (target, plan["formula"], budget, opts["memory_budget_percent"], current))
                return plan
            target = budget
            plan["formula"] += ", capped at the memory budget"
        if target < current and not opts["allow_lower"]:
            target = current
    plan["target"] = target
    # kube-proxy sets the hash size to max / 4; raise-only like the limit itself.
    buckets = state.get("buckets")
    plan["buckets_current"] = buckets
    wanted_buckets = _ceil_div(target, 4)
    if buckets is not None and wanted_buckets > int(buckets):
        if state.get("buckets_writable"):
            plan.update(buckets_target=wanted_buckets, buckets_path="/proc/sys/net/netfilter/nf_conntrack_buckets")
        elif state.get("hashsize_writable"):
            plan.update(buckets_target=wanted_buckets, buckets_path="/sys/module/nf_conntrack/parameters/hashsize")
    if target == current:
        plan["reason"] = "nf_conntrack_max is %d, at or above the target (%s)" % (current, plan["formula"])
        plan.update(buckets_target=None, buckets_path=None)
        return plan
    if not state.get("max_writable"):
        plan.update(action="skip", buckets_target=None, buckets_path=None,
                    reason="/proc/sys/net/netfilter/nf_conntrack_max is not writable here (a container or a network namespace other "
                    "than the host's: the limit is global to the kernel); raise it to %d on the host" % target)
        return plan
    plan["action"] = "raise" if target > current else "lower"
    return plan


def _version(release):
    parts = []
    for piece in str(release or "").split("-", maxsplit=1)[0].split(".")[:2]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            return None
        parts.append(int(digits))
    return tuple(parts) if len(parts) == 2 else None


def ipvs_plan(state, options=None):
    """Decide the IPVS sysctls the ipvs role writes.

    ``state``: ``present`` (``<root>/net/ipv4/vs`` exists), ``writable``, ``kernel_release``
    (``uname -r`` text or ``[major, minor, patch]``), ``values`` (``{name: int or None}`` for
    conn_reuse_mode, expire_nodest_conn, expire_quiescent_template).
    ``options``: see IPVS_DEFAULTS; ``conn_reuse_mode`` -1 leaves that sysctl alone.

    Returns ``{action: apply|none|skip, error, changes: {name: {before, after}}, desired, reason}``.
    """
    opts = dict(IPVS_DEFAULTS)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    plan = {"action": "none", "error": None, "changes": {}, "desired": {}, "reason": None, "kernel": None}
    allowed = {"conn_reuse_mode": (-1, 0, 1, 2), "expire_nodest_conn": (0, 1), "expire_quiescent_template": (0, 1)}
    for name in IPVS_SYSCTLS:
        try:
            value = _int(opts[name], "ipvs_" + name)
        except ValueError as exc:
            plan.update(action="skip", error=str(exc))
            return plan
        if value not in allowed[name]:
            plan.update(action="skip", error="ipvs_%s must be one of %s, got %d" % (name, ", ".join(str(v) for v in allowed[name]), value))
            return plan
        if value != -1:
            plan["desired"][name] = value
    release = state.get("kernel_release")
    version = tuple(release[:2]) if isinstance(release, (list, tuple)) else _version(release)
    if version is None:
        plan.update(action="skip", error="kernel release %r is not MAJOR.MINOR[...]: set ipvs_kernel_release" % (release,))
        return plan
    plan["kernel"] = list(version)
    if not state.get("present"):
        plan.update(action="skip", reason="IPVS is not loaded (no net/ipv4/vs sysctls): kube-proxy is not in IPVS mode on this node")
        return plan
    if version >= IPVS_FIXED_KERNEL and not opts["apply_on_fixed_kernel"]:
        plan["reason"] = ("kernel %d.%d already reschedules reused source ports (fixed in 5.9); kube-proxy leaves "
                          "conn_reuse_mode alone there, and so does this role (ipvs_apply_on_fixed_kernel: true to apply anyway)" % version)
        return plan
    values = state.get("values") or {}
    for name, value in plan["desired"].items():
        before = values.get(name)
        if before is None:
            plan.update(action="skip", changes={}, reason="net/ipv4/vs/%s does not exist on this kernel: nothing written" % name)
            return plan
        if int(before) != value:
            plan["changes"][name] = {"before": int(before), "after": value}
    if not plan["changes"]:
        plan["reason"] = "the IPVS sysctls already have the wanted values"
        return plan
    if not state.get("writable", True):
        plan.update(action="skip", reason="the net/ipv4/vs sysctls are not writable here (a container without the host's network "
                    "namespace): set them on the host")
        return plan
    plan["action"] = "apply"
    return plan
