# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# CoreDNS versions from image references, and which plugin names a CoreDNS release knows.
#
# PLUGINS_1_12_4 is the output of ``coredns -plugins`` of CoreDNS-1.12.4 (built from
# github.com/coredns/coredns@v1.12.4 for the lab, captured on a Debian 12 build machine). Older
# releases: INTRODUCED names plugins that appeared later than 1.6.0 where the release notes say so
# (transfer: 1.7.0); REMOVED names plugins that left the default build (proxy: 1.5.0, replaced by
# forward; federation: 1.7.0). A name that is in none of these tables is unknown to every release
# this table covers: CoreDNS stops with "Unknown directive" on it.

from __future__ import annotations

import re

PLUGINS_1_12_4 = frozenset((
    "acl", "any", "auto", "autopath", "azure", "bind", "bufsize", "cache", "cancel", "chaos", "clouddns",
    "debug", "dns64", "dnssec", "dnstap", "erratic", "errors", "etcd", "file", "forward", "geoip", "grpc",
    "header", "health", "hosts", "k8s_external", "kubernetes", "loadbalance", "local", "log", "loop",
    "metadata", "minimal", "multisocket", "nsid", "on", "pprof", "prometheus", "quic", "ready", "reload",
    "rewrite", "root", "route53", "secondary", "sign", "template", "timeouts", "tls", "trace", "transfer",
    "tsig", "view", "whoami",
))

INTRODUCED = {"transfer": (1, 7, 0)}
REMOVED = {"proxy": (1, 5, 0), "federation": (1, 7, 0)}

# Options of a plugin that a release removed: the plugin then refuses the Corefile with "unknown
# property". kubernetes: resyncperiod and upstream, removed in 1.7.0 (coredns/coredns#3737; what
# broke EKS clusters upgraded to Kubernetes 1.18, aws/containers-roadmap#1115).
REMOVED_OPTIONS = {("kubernetes", "upstream"): (1, 7, 0), ("kubernetes", "resyncperiod"): (1, 7, 0)}

# Directives that are part of the Corefile syntax rather than plugins.
SYNTAX = frozenset(("import",))

_TAG = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+_.].*)?$")


def image_version(image):
    """``[major, minor, patch]`` from the tag of a CoreDNS image reference, or None.

    Accepts ``registry.k8s.io/coredns/coredns:v1.11.1``, ``coredns/coredns:1.8.0``,
    ``k8s.gcr.io/coredns:1.6.7``, EKS ``.../eks/coredns:v1.8.7-eksbuild.3``, a digest after the
    tag (``:v1.12.4@sha256:...``) and registries with ports. No tag, ``latest`` or a digest only
    give None."""
    if not isinstance(image, str) or not image:
        return None
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    match = _TAG.match(last.rsplit(":", 1)[1])
    if not match:
        return None
    return [int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)]


def version_string(version):
    return ".".join(str(v) for v in version) if version else None


def known_plugin(name, version=None):
    """Whether CoreDNS ``version`` ([major, minor, patch] or None for "any covered release")
    accepts directive ``name``. Returns (bool, reason)."""
    if name in SYNTAX:
        return True, None
    ver = tuple(version) if version else None
    if name in REMOVED:
        if ver is None or ver >= REMOVED[name]:
            return False, "plugin %r was removed in CoreDNS %s" % (name, version_string(REMOVED[name]))
        return True, None
    if name not in PLUGINS_1_12_4:
        return False, "no CoreDNS release has a plugin called %r" % name
    if ver is not None and name in INTRODUCED and ver < INTRODUCED[name]:
        return False, "plugin %r first appeared in CoreDNS %s; this one is %s" % (name, version_string(INTRODUCED[name]), version_string(version))
    return True, None


def removed_option(plugin, option, version=None):
    """Why CoreDNS ``version`` (None: any release covered here) refuses ``option`` inside
    ``plugin``'s block, or None when it accepts it (as far as this table knows)."""
    since = REMOVED_OPTIONS.get((plugin, option))
    if since is None or (version and tuple(version) < since):
        return None
    return "option %r of plugin %s was removed in CoreDNS %s" % (option, plugin, version_string(since))
