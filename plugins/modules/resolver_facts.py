#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: resolver_facts
short_description: Resolver configuration of a node, the local stub in front of it, and what kubelet hands to pods
version_added: 1.0.0
description:
  - Parses C(/etc/resolv.conf) the way glibc reads it (nameservers actually used, search list,
    every glibc and musl option) and reports each line glibc ignores or truncates as a problem
    with its line number (more than 3 nameservers, invalid nameserver lines, unknown keywords and
    options, search lists over the glibc and kubelet limits).
  - Detects a local stub resolver in front of the real upstream servers (systemd-resolved's
    C(127.0.0.53) and C(/run/systemd/resolve/stub-resolv.conf), a dnsmasq on loopback) and reads
    the upstream file behind it (C(/run/systemd/resolve/resolv.conf) for systemd-resolved).
  - Finds kubelet and its DNS settings (C(clusterDNS), C(clusterDomain), C(resolvConf)) from the
    running kubelet's command line (C(/proc/<pid>/cmdline)), its C(--config) file (default
    O(kubelet_config)), and, when kubelet is not running, the flags files the kubelet unit reads
    (C(/var/lib/kubelet/kubeadm-flags.env), C(/etc/default/kubelet), C(/etc/sysconfig/kubelet),
    systemd drop-ins in C(kubelet.service.d)). Command-line flags win over the config file, as in
    kubelet. The resolv.conf kubelet hands to pods with C(dnsPolicy) V(Default) (CoreDNS) is parsed too.
  - Reports the libc flavour (glibc or musl) and version, because resolver options behave
    differently in each.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - None on the node. C(ldd) is run (C(ldd --version)) when present to tell the glibc version.
notes:
  - A missing file is a fact, not a failure. A kubelet config file that is present but is not a
    valid KubeletConfiguration (bad YAML or JSON, C(clusterDNS) not a list) makes the module fail
    with the file, the line and what was expected, because kubelet would refuse the same file.
  - The kubelet config file is read as JSON or as the block-style YAML that kubeadm, kubespray,
    EKS and k3s write; only the top-level C(clusterDNS), C(clusterDomain), C(resolvConf) and C(kind)
    keys are interpreted, so no YAML library is needed on the node.
  - Reading another user's C(/proc/<pid>/cmdline) works without root on most kernels, but not
    with C(hidepid); run with C(become) to be sure kubelet is found.
  - In a support bundle the kubelet command line is C(commands/kubelet-cmdline.txt) (arguments
    separated by spaces or NUL bytes) and C(ldd --version) is C(commands/ldd-version.txt).
extends_documentation_fragment:
  - clusterdns.doctor._attributes
  - clusterdns.doctor._attributes.facts_module
  - clusterdns.doctor._attributes.root
options:
  kubelet_config:
    description:
      - Path of the KubeletConfiguration file on the node, used when the kubelet command line
        has no C(--config) flag (or kubelet is not running).
    type: path
    default: /var/lib/kubelet/config.yaml
seealso:
  - module: clusterdns.doctor.iptables_facts
  - name: resolv.conf(5)
    description: The resolver configuration file as glibc reads it.
    link: https://man7.org/linux/man-pages/man5/resolv.conf.5.html
  - name: Debugging DNS resolution, known issues
    description: systemd-resolved's stub and kubelet C(--resolv-conf).
    link: https://kubernetes.io/docs/tasks/administer-cluster/dns-debugging-resolution/#known-issues
  - name: CoreDNS loop plugin, troubleshooting loops in Kubernetes clusters
    description: Why a loopback nameserver in the file kubelet hands to CoreDNS is a forwarding loop.
    link: https://coredns.io/plugins/loop/#troubleshooting-loops-in-kubernetes-clusters
"""

EXAMPLES = r"""
- name: Read the resolver configuration of the node and kubelet's DNS settings
  clusterdns.doctor.resolver_facts:
  become: true

- name: Warn when CoreDNS would inherit a loopback nameserver
  ansible.builtin.debug:
    msg: >-
      kubelet hands {{ ansible_facts.clusterdns_resolver.kubelet.resolv_conf }} to pods, with
      {{ ansible_facts.clusterdns_resolver.kubelet.resolv_conf_nameservers | join(', ') }};
      use {{ ansible_facts.clusterdns_resolver.stub.upstream.path }} instead
  when:
    - ansible_facts.clusterdns_resolver.kubelet.present
    - ansible_facts.clusterdns_resolver.stub.kind is not none

- name: Read a collected support bundle instead of the live node
  clusterdns.doctor.resolver_facts:
    root: /tmp/bundles/node1
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    clusterdns_resolver:
      description: Resolver configuration of the node.
      returned: always
      type: dict
      contains:
        available:
          description: Whether C(/etc/resolv.conf) could be read.
          type: bool
          returned: always
          sample: true
        reason:
          description: Why not; V(null) when available.
          type: str
          returned: always
          sample: null
        resolv_conf:
          description:
            - C(/etc/resolv.conf) as glibc reads it.
            - C(nameservers) are the ones used (at most 3, file order); C(ignored_nameservers) the valid ones after the third.
            - C(options) maps an option to its number (C(ndots), C(timeout), C(attempts)) or V(true).
            - Each of C(problems) has C(kind) (V(junk), V(unknown_keyword), V(invalid_nameserver), V(invalid_option),
              V(unknown_option), V(nameserver_limit), V(search_limit)), C(lineno), C(line) and C(message).
          type: dict
          returned: always
          sample:
            path: /etc/resolv.conf
            realpath: /run/systemd/resolve/stub-resolv.conf
            available: true
            reason: null
            nameservers: [127.0.0.53]
            ignored_nameservers: []
            search: ["."]
            options: {"edns0": true, "trust-ad": true}
            sortlist: []
            problems: []
        stub:
          description:
            - The local resolver behind a loopback nameserver in C(/etc/resolv.conf).
            - C(kind) is V(systemd-resolved), V(dnsmasq), V(other) or V(null) (no loopback nameserver).
            - C(upstream) is the file that lists the real upstream servers (C(path), C(available), C(reason),
              C(nameservers), C(search), C(options), C(problems)); its C(path) is V(null) when unknown.
          type: dict
          returned: always
          sample:
            kind: systemd-resolved
            upstream:
              path: /run/systemd/resolve/resolv.conf
              available: true
              reason: null
              nameservers: [8.8.8.8, 8.8.4.4]
              search: ["."]
              options: {}
              problems: []
        kubelet:
          description: kubelet's DNS settings.
          type: dict
          returned: always
          contains:
            present:
              description: Whether kubelet runs or is configured on the node (process, config file or flags file found).
              type: bool
              sample: true
            running:
              description: Whether a kubelet process (or a saved C(kubelet-cmdline) in a bundle) was found.
              type: bool
              sample: false
            source:
              description: Where the settings came from, highest precedence first present (V(cmdline), V(flags file), V(config file)), or V(null).
              type: str
              sample: config file
            sources:
              description: For each of C(cluster_dns), C(cluster_domain), C(resolv_conf), the file or V(cmdline) that set it (absent = kubelet default).
              type: dict
              sample: {"cluster_dns": "/var/lib/kubelet/config.yaml", "cluster_domain": "/var/lib/kubelet/config.yaml"}
            config_path:
              description: The KubeletConfiguration file read (from C(--config) or O(kubelet_config)).
              type: str
              sample: /var/lib/kubelet/config.yaml
            config_available:
              description: Whether that file could be read.
              type: bool
              sample: true
            flags_files:
              description: Flags files that were read (only when kubelet is not running).
              type: list
              elements: str
              sample: [/var/lib/kubelet/kubeadm-flags.env]
            cluster_dns:
              description: kubelet C(clusterDNS) (the nameservers of pods with C(dnsPolicy) V(ClusterFirst)).
              type: list
              elements: str
              sample: [10.96.0.10]
            cluster_domain:
              description: kubelet C(clusterDomain).
              type: str
              sample: cluster.local
            resolv_conf:
              description: The resolv.conf kubelet hands to pods with C(dnsPolicy) V(Default) (kubelet default C(/etc/resolv.conf)); V("") means none.
              type: str
              sample: /etc/resolv.conf
            resolv_conf_nameservers:
              description: The nameservers in that file that pods get.
              type: list
              elements: str
              sample: [127.0.0.53]
            resolv_conf_file:
              description: That file parsed (same keys as RV(ansible_facts.clusterdns_resolver.resolv_conf)), or V(null) when kubelet has none.
              type: dict
              sample: null
        libc:
          description: C(name) (V(glibc), V(musl) or V(null)), C(version) and C(source) (V(ld-musl), V(ldd) or V(null)).
          type: dict
          returned: always
          sample: {"name": "glibc", "version": "2.36", "source": "ldd"}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils import _resolver
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source, exit_with_facts

FLAGS_FILES = ("/var/lib/kubelet/kubeadm-flags.env", "/etc/default/kubelet", "/etc/sysconfig/kubelet")
DROPIN_DIRS = ("/etc/systemd/system/kubelet.service.d", "/usr/lib/systemd/system/kubelet.service.d", "/lib/systemd/system/kubelet.service.d")


def read_resolv(source, path):
    facts = {"path": path, "realpath": source.realpath(path), "available": False, "reason": None, "nameservers": [],
             "ignored_nameservers": [], "search": [], "options": {}, "sortlist": [], "problems": []}
    # Read through the resolved path: a bundle's absolute symlink must not lead to the controller's file.
    read = source.read(facts["realpath"])
    if not read["available"]:
        facts["reason"] = read["reason"]
        return facts
    facts.update(_resolver.parse_resolv_conf(read["content"], source=read["path"]), available=True)
    return facts


def _dnsmasq_upstream(source):
    read = source.read("/etc/dnsmasq.conf")
    for line in (read["content"] or "").splitlines():
        if line.strip().startswith("resolv-file="):
            return line.split("=", 1)[1].strip()
    if source.exists("/run/dnsmasq/resolv.conf"):
        return "/run/dnsmasq/resolv.conf"
    return None


def stub_facts(source, resolv):
    dnsmasq = source.exists("/etc/dnsmasq.conf") or source.exists("/etc/NetworkManager/dnsmasq.d")
    kind = _resolver.stub_kind(resolv["realpath"], resolv["nameservers"], dnsmasq_configured=dnsmasq)
    path = None
    if kind == "systemd-resolved":
        path = _resolver.SYSTEMD_UPSTREAM
    elif kind == "dnsmasq":
        path = _dnsmasq_upstream(source)
    upstream = {"path": None, "available": False, "reason": "no local stub resolver" if kind is None else "upstream file unknown",
                "nameservers": [], "search": [], "options": {}, "problems": []}
    if path:
        parsed = read_resolv(source, path)
        upstream = {key: parsed[key] for key in upstream}
    return {"kind": kind, "upstream": upstream}


def _kubelet_cmdline(source):
    """(argv, where) of the running kubelet, or (None, None)."""
    if not source.live:
        saved = source.command("kubelet-cmdline", ["kubelet-cmdline"])
        if saved["available"] and saved["content"].strip():
            return _resolver.split_cmdline(saved["content"].strip()), saved["path"]
        return None, None
    for pid in source.listdir("/proc"):
        if not pid.isdigit():
            continue
        read = source.read("/proc/%s/cmdline" % pid, max_bytes=256 * 1024)
        if read["available"] and read["content"]:
            argv = _resolver.split_cmdline(read["content"])
            if _resolver.is_kubelet(argv):
                return argv, read["path"]
    return None, None


def _flags_files(source):
    paths = list(FLAGS_FILES)
    for directory in DROPIN_DIRS:
        paths.extend(os.path.join(directory, name) for name in source.listdir(directory) if name.endswith(".conf"))
    found = []
    for path in paths:
        read = source.read(path)
        if read["available"]:
            found.append((path, _resolver.parse_flags_file(read["content"], source=read["path"])))
    return found


def kubelet_facts(source, default_config, resolv):
    argv, _where = _kubelet_cmdline(source)
    flag_sets = []
    flags_files = []
    if argv is not None:
        flag_sets.append(("cmdline", _resolver.parse_kubelet_args(argv[1:])))
    else:
        for path, flags in _flags_files(source):
            flags_files.append(path)
            flag_sets.append((path, flags))
    config_path = default_config
    for _source, flags in flag_sets:
        if flags.get("config"):
            config_path = flags["config"]
    config = None
    read = source.read(config_path)
    if read["available"]:
        config = _resolver.parse_kubelet_config(read["content"], source=read["path"])
    settings = _resolver.kubelet_settings(config, flag_sets, config_source=config_path)
    sources = settings["sources"]
    if "cmdline" in sources.values():
        origin = "cmdline"
    elif any(value in flags_files for value in sources.values()):
        origin = "flags file"
    elif sources:
        origin = "config file"
    else:
        origin = None
    facts = {
        "present": bool(argv is not None or read["available"] or flags_files),
        "running": argv is not None,
        "source": origin,
        "sources": sources,
        "config_path": config_path,
        "config_available": read["available"],
        "flags_files": flags_files,
        "cluster_dns": settings["cluster_dns"],
        "cluster_domain": settings["cluster_domain"],
        "resolv_conf": settings["resolv_conf"],
        "resolv_conf_nameservers": [],
        "resolv_conf_file": None,
    }
    if facts["present"] and settings["resolv_conf"]:
        parsed = resolv if settings["resolv_conf"] == resolv["path"] else read_resolv(source, settings["resolv_conf"])
        facts["resolv_conf_file"] = parsed
        facts["resolv_conf_nameservers"] = list(parsed["nameservers"])
    return facts


def libc_facts(source):
    loader = _resolver.musl_loader(source.listdir("/lib"))
    ldd = source.command("ldd-version", ["ldd", "--version"], ok_rcs=(0, 1))
    text = ""
    if ldd["available"]:
        text = (ldd["content"] or "") + "\n" + (ldd.get("stderr") or "")
    parsed = _resolver.parse_ldd_version(text)
    if loader and parsed["name"] != "glibc":
        return {"name": "musl", "version": parsed["version"] if parsed["name"] == "musl" else None, "source": "ld-musl"}
    return dict(parsed, source="ldd" if parsed["name"] else None)


def gather(source, kubelet_config):
    resolv = read_resolv(source, "/etc/resolv.conf")
    return {
        "available": resolv["available"],
        "reason": None if resolv["available"] else resolv["reason"],
        "resolv_conf": resolv,
        "stub": stub_facts(source, resolv),
        "kubelet": kubelet_facts(source, kubelet_config, resolv),
        "libc": libc_facts(source),
    }


def main():
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "default": "/"},
            "kubelet_config": {"type": "path", "default": "/var/lib/kubelet/config.yaml"},
        },
        supports_check_mode=True,
    )
    source = Source(module, module.params["root"])
    exit_with_facts(module, "clusterdns_resolver", "cannot read the resolver facts", gather, source, module.params["kubelet_config"])


if __name__ == "__main__":
    main()
