#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: support_bundle
short_description: Write a node's DNS support bundle (the files and command outputs the facts modules read) as a .tar.gz
version_added: 1.0.0
description:
  - Writes one C(.tar.gz) holding, under a top directory named O(name), the node paths the
    collection's facts modules read (C(proc/...), C(etc/resolv.conf), kubelet and dnsmasq
    configuration, ...) and C(commands/<name>.txt) for the command outputs they parse
    (C(iptables-save), C(ss -lnup), C(ip -j addr), C(dmesg), ...). The list is in C(docs/bundle.md).
  - The network namespace the module runs in is saved as C(commands/netns.txt), so that the kernel
    log's C(table full in netns N) lines are attributed to this node only when they are its own.
  - The running dnsmasq and kubelet command lines are saved as C(commands/dnsmasq-cmdline.txt) and
    C(commands/kubelet-cmdline.txt), and the configuration files they name are collected too; for
    dnsmasq also every C(conf-file) and C(conf-dir) named inside its configuration files, followed
    as dnsmasq follows them.
  - Symbolic links are stored as links (C(/etc/resolv.conf) pointing at the systemd-resolved stub
    matters), C(/proc) files by their content.
  - Nothing on the node changes except the archive itself. C(ipvsadm) only runs where
    C(/proc/net/ip_vs) exists, because it would load the C(ip_vs) module.
  - C(clusterdns.doctor.diagnose) with C(clusterdns_bundle_dir) reads the archives this writes.
author:
  - clusterdns.doctor developers (!UNKNOWN)
notes:
  - Run it as root (C(become)) to capture C(iptables-save), C(dmesg) and the processes of other users;
    what cannot be read is listed in RV(missing) with the reason.
  - Secrets are not collected. kubelet's configuration can name a client certificate path; the
    certificate itself is not read.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode the archive is not written; the result says it would be.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
options:
  dest:
    description: Path of the C(.tar.gz) to write on the node. Its directory must exist.
    type: path
    required: true
  name:
    description: Top directory in the archive, usually the inventory host name (diagnose names the node after it).
    type: str
    required: true
  commands:
    description: Whether to run the commands; V(false) collects files only.
    type: bool
    default: true
seealso:
  - name: Support bundles
    description: The layout and the list of files and commands.
    link: https://github.com/clusterdns/doctor/blob/main/docs/bundle.md
"""

EXAMPLES = r"""
- name: Write the bundle on the node
  clusterdns.doctor.support_bundle:
    dest: /tmp/clusterdns-bundle.tar.gz
    name: "{{ inventory_hostname }}"
  become: true

- name: Fetch it
  ansible.builtin.fetch:
    src: /tmp/clusterdns-bundle.tar.gz
    dest: "bundles/{{ inventory_hostname }}.tar.gz"
    flat: true
"""

RETURN = r"""
dest:
  description: Path of the archive written.
  returned: always
  type: str
  sample: /tmp/clusterdns-bundle.tar.gz
files:
  description: Number of files and links stored (command outputs included).
  returned: always
  type: int
  sample: 41
commands:
  description: Names of the command outputs stored under C(commands/).
  returned: always
  type: list
  elements: str
  sample: [iptables-save, ss-lnup, dmesg]
missing:
  description: Paths and commands that could not be collected, with the reason (absent paths are not listed).
  returned: always
  type: list
  elements: str
  sample: ["dmesg: dmesg exited 1: dmesg: read kernel buffer failed: Operation not permitted"]
"""

import glob
import io
import os
import tarfile
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.clusterdns.doctor.plugins.module_utils._bundle import COMMANDS, FILES, dnsmasq_include_paths, kubelet_resolv_conf, process_line
from ansible_collections.clusterdns.doctor.plugins.module_utils._conntrack import format_netns, netns_of_this_process
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import LC_ENV


class _Writer:
    def __init__(self, tar, top):
        self.tar = tar
        self.top = top
        self.names = set()
        self.missing = []

    def data(self, node_path, data):
        name = "%s/%s" % (self.top, node_path.lstrip("/"))
        if name in self.names:
            return
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        self.tar.addfile(info, io.BytesIO(data))
        self.names.add(name)

    def path(self, node_path):
        if os.path.islink(node_path):
            name = "%s/%s" % (self.top, node_path.lstrip("/"))
            if name not in self.names:
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(node_path)
                info.mtime = int(time.time())
                self.tar.addfile(info)
                self.names.add(name)
            target = os.path.realpath(node_path)
            if target != node_path:
                self.path(target)
            return
        if os.path.isdir(node_path):
            for entry in sorted(os.listdir(node_path)):
                self.path(os.path.join(node_path, entry))
            return
        if not os.path.isfile(node_path):
            return
        try:
            with open(node_path, "rb") as handle:
                chunks = []
                while True:  # chunked: procfs files fail large reads
                    chunk = handle.read(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            self.missing.append("%s: %s" % (node_path, exc.strerror))
            return
        self.data(node_path, b"".join(chunks))


def _processes(comm):
    """``(pid, argv)`` of the processes named ``comm`` in this network namespace (the facts modules
    judge a dnsmasq against the interfaces of its own namespace)."""
    found = []
    try:
        own = os.readlink("/proc/self/ns/net")
    except OSError:
        own = None
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            with open("/proc/%s/comm" % pid) as handle:
                if handle.read().strip() != comm:
                    continue
            if own is not None and os.readlink("/proc/%s/ns/net" % pid) != own:
                continue
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
        except OSError:
            continue
        if argv:
            found.append((pid, argv))
    return found


def _read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(), None
    except OSError as exc:
        return None, exc.strerror


def _list_dir(path):
    try:
        return os.listdir(path), None
    except OSError as exc:
        return None, exc.strerror


def collect(module, writer, run_commands):
    for pattern in FILES:
        for node_path in sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]:
            writer.path(node_path)
    saved = []
    dnsmasq = _processes("dnsmasq")
    if dnsmasq:
        writer.data("/commands/dnsmasq-cmdline.txt", ("\n".join(process_line(pid, argv) for pid, argv in dnsmasq) + "\n").encode())
        saved.append("dnsmasq-cmdline")
        for pid, argv in dnsmasq:
            paths, problem = dnsmasq_include_paths(argv, _read_text, _list_dir)
            if problem:
                writer.missing.append("dnsmasq (pid %s) includes: %s" % (pid, problem))
            for conf in paths:
                writer.path(conf)
    kubelet = _processes("kubelet")
    if kubelet:
        writer.data("/commands/kubelet-cmdline.txt", (" ".join(kubelet[0][1]) + "\n").encode())
        saved.append("kubelet-cmdline")
        for arg in kubelet[0][1]:
            if arg.startswith("--config="):
                writer.path(arg.split("=", 1)[1])
    try:
        with open("/var/lib/kubelet/config.yaml") as handle:
            resolv = kubelet_resolv_conf(handle.read())
    except OSError:
        resolv = None
    if resolv:
        writer.path(resolv)
    netns = netns_of_this_process()
    if netns:
        writer.data("/commands/netns.txt", format_netns(netns).encode())
        saved.append("netns")
    if not run_commands:
        return saved
    for command in COMMANDS:
        if command.get("when") and not os.path.exists(command["when"]):
            continue
        if command.get("unless") and os.path.exists(command["unless"]):
            continue
        binary = module.get_bin_path(command["argv"][0], required=False, opt_dirs=["/usr/sbin", "/sbin"])
        if not binary:
            continue
        rc, out, err = module.run_command([binary, *command["argv"][1:]], environ_update=LC_ENV)
        if rc != 0:
            writer.missing.append("%s: %s exited %d: %s" % (command["name"], " ".join(command["argv"]), rc, (err or out).strip()[:200]))
            continue
        text = out + (err if command.get("stderr") else "")
        writer.data("/commands/%s.txt" % command["name"], text.encode("utf-8", "replace"))
        saved.append(command["name"])
    return saved


def main():
    module = AnsibleModule(
        argument_spec={
            "dest": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "commands": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    dest, name = module.params["dest"], module.params["name"]
    if "/" in name or name in ("", ".", ".."):
        module.fail_json(msg="name %r must be a plain directory name (the inventory host name), without '/'" % name)
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    if not os.path.isdir(directory):
        module.fail_json(msg="the directory of dest does not exist: %s; create it first" % directory)
    if module.check_mode:
        module.exit_json(changed=True, dest=dest, files=0, commands=[], missing=[])
    handle, tmp = tempfile.mkstemp(prefix=".clusterdns-bundle-", suffix=".tar.gz", dir=directory)
    os.close(handle)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            writer = _Writer(tar, name)
            saved = collect(module, writer, module.params["commands"])
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)  # atomic: a reader never sees half an archive
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    module.exit_json(changed=True, dest=dest, files=len(writer.names), commands=saved, missing=writer.missing)


if __name__ == "__main__":
    main()
