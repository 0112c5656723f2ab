# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Collectors: the only place that reads files and runs commands for the facts modules. Every
# facts module takes a ``root`` option. With root "/" it reads the live node and runs the
# tools; with any other root it reads a collected bundle: the node's own paths under the root
# (proc/..., etc/...) and saved command outputs under ``<root>/commands/<name>.txt``.
# See docs/bundle.md for the list of command names.

from __future__ import annotations

import errno
import os

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

LC_ENV = {"LANGUAGE": "C", "LC_ALL": "C", "LANG": "C"}


class Source:
    """Reads files and command outputs of one node, live or from a bundle.

    Every read returns a dict ``{"available": bool, "content": str|None, "reason": str|None,
    "path": str}`` so that a missing file is a fact, not a failure.
    """

    def __init__(self, module, root="/"):
        self.module = module
        self.root = root or "/"
        self.live = os.path.realpath(self.root) == "/"

    def path(self, path):
        """Absolute path of a node path (``/proc/...``) under the root."""
        return os.path.join(self.root, path.lstrip("/"))

    def read(self, path, max_bytes=8 * 1024 * 1024):
        full = self.path(path)
        try:
            with open(full, "rb") as handle:
                # Chunked: procfs sysctl files fail with ENOMEM when asked for megabytes at once.
                chunks, size = [], 0
                while size < max_bytes:
                    chunk = handle.read(min(65536, max_bytes - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                data = b"".join(chunks)
        except OSError as exc:
            return {"available": False, "content": None, "path": full, "reason": _os_reason(exc)}
        return {"available": True, "content": data.decode("utf-8", "replace"), "path": full, "reason": None}

    def listdir(self, path):
        full = self.path(path)
        try:
            return sorted(os.listdir(full))
        except OSError:
            return []

    def exists(self, path):
        return os.path.exists(self.path(path))

    def realpath(self, path):
        """Resolve a node path's symlinks inside the root (a bundle's absolute links point at the node)."""
        full = self.path(path)
        seen = 0
        while os.path.islink(full) and seen < 16:
            target = os.readlink(full)
            if os.path.isabs(target):
                full = self.path(target)
            else:
                full = os.path.normpath(os.path.join(os.path.dirname(full), target))
            seen += 1
        rel = os.path.relpath(full, self.root)
        return "/" + rel if not rel.startswith("..") else full

    def command(self, name, argv, ok_rcs=(0,)):
        """Output of a command: run it live, or read ``commands/<name>.txt`` from the bundle.

        ``argv[0]`` is looked up with get_bin_path; a missing tool is reported, not raised.
        """
        if not self.live:
            saved = os.path.join(self.root, "commands", name + ".txt")
            try:
                with open(saved, "rb") as handle:
                    out = handle.read().decode("utf-8", "replace")
            except OSError as exc:
                return {"available": False, "content": None, "path": saved, "reason": _os_reason(exc), "cmd": argv}
            return {"available": True, "content": out, "path": saved, "reason": None, "cmd": argv}
        binary = self.module.get_bin_path(argv[0], required=False, opt_dirs=["/usr/sbin", "/sbin"])
        if not binary:
            return {"available": False, "content": None, "path": None, "reason": "%s not found on PATH" % argv[0], "cmd": argv}
        cmd = [binary, *argv[1:]]
        rc, out, err = self.module.run_command(cmd, environ_update=LC_ENV)
        if rc not in ok_rcs:
            reason = "%s exited %d: %s" % (" ".join(argv), rc, (err or out).strip()[:300])
            return {"available": False, "content": None, "path": None, "reason": reason, "cmd": cmd, "rc": rc}
        return {"available": True, "content": out, "path": None, "reason": None, "cmd": cmd, "rc": rc, "stderr": err}


def _os_reason(exc):
    if exc.errno == errno.ENOENT:
        return "not found: %s" % exc.filename
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied: %s" % exc.filename
    return "%s: %s" % (exc.strerror or type(exc).__name__, exc.filename)


def exit_with_facts(module, key, failure, gather, *args):
    """The end of every facts module: ``gather(*args)`` becomes ``ansible_facts[key]``; content that
    cannot be parsed fails with ``failure`` and the file, line and what was expected."""
    try:
        facts = gather(*args)
    except ParseError as exc:
        module.fail_json(msg="%s: %s" % (failure, exc), **exc.as_dict())
    module.exit_json(changed=False, ansible_facts={key: facts})


def check_interval(module):
    """The ``interval`` option of the sampling facts modules: 0 to 300 seconds."""
    if module.params["interval"] < 0 or module.params["interval"] > 300:
        module.fail_json(msg="interval must be between 0 and 300 seconds, got %s" % module.params["interval"])
