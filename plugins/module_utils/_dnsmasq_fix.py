# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# The dnsmasq role's plan (DMQ001 / DMQ002): which configuration lines to change so that dnsmasq
# answers on the pod-facing interfaces it ignores, without admitting anything else.

from __future__ import annotations

import ipaddress

from ansible_collections.clusterdns.doctor.plugins.module_utils._dnsmasq import COMMAND_LINE, conf_dir_files, conf_dir_spec, name_matches

FINGERPRINT = "clusterdns.doctor:dnsmasq"
DROPIN_NAME = "90-clusterdns-doctor-pod-interfaces.conf"


def _split_origin(origin):
    """``FILE:LINE`` -> (FILE, LINE) ; anything else (command line, default) -> (None, None)."""
    if not origin or origin == COMMAND_LINE:
        return None, None
    path, _sep, lineno = origin.rpartition(":")
    if not path or not lineno.isdigit():
        return None, None
    return path, int(lineno)


def global_addresses(addresses):
    """The addresses (``ADDR/PREFIX`` strings) of an interface that are globally routable."""
    found = []
    for item in addresses or []:
        address = item.split("/")[0].split("%")[0]
        try:
            if ipaddress.ip_address(address).is_global:
                found.append(item)
        except ValueError:
            continue
    return found


def _refusal(interface, default_route_interfaces):
    """Why an interface must not be admitted (dnsmasq would become an open resolver), or None."""
    public = global_addresses(interface.get("addresses"))
    if public:
        return "%s carries the public address(es) %s" % (interface["name"], ", ".join(public))
    if interface["name"] in default_route_interfaces:
        return "%s carries the default route" % interface["name"]
    return None


class _Files:
    """Line-level edits of configuration files, applied once per file at the end."""

    def __init__(self, texts):
        self.texts = texts
        self.lines = {}

    def get(self, path):
        if path not in self.lines:
            if path not in self.texts:
                return None
            self.lines[path] = self.texts[path].splitlines()
        return self.lines[path]

    def rendered(self):
        out = {}
        for path, lines in self.lines.items():
            if lines != self.texts[path].splitlines():
                out[path] = "\n".join(lines) + "\n"
        return out


def _option_line(raw):
    name, _sep, value = raw.strip().partition("=")
    return name.strip(), value.strip()


def plan(instance, admit, texts, default_route_interfaces=(), bind_dynamic=False, finding="DMQ001", dropin_name=DROPIN_NAME):
    """What to change in the configuration of one dnsmasq instance (``dnsmasq_facts`` instance).

    ``admit``: names of the pod-facing interfaces dnsmasq must answer on. ``texts``: the current text
    of every configuration file of the instance (path -> str). Returns ``{"files": {path: new text},
    "dropin": {"path", "text"} or None, "actions": [str], "refused": [str], "admitted": [str],
    "already_served": [str]}``. Nothing is changed when ``refused`` is not empty: an interface with a
    public address or the default route is never admitted, and options given on the command line
    cannot be edited in a file.

    * an ``except-interface`` entry that matches an admitted interface is edited where it is: an
      exact name is removed, a wildcard is narrowed to the other interfaces it matches now; the
      original line stays as a comment;
    * an admitted interface that ``interface=`` lines do not include gets an ``interface=`` line,
      in a drop-in of a ``conf-dir`` the instance reads when there is one, else next to the last
      ``interface=`` line;
    * ``bind_dynamic``: a ``bind-interfaces`` line becomes ``bind-dynamic``.
    """
    config = instance.get("config") or {}
    interfaces = {i["name"]: i for i in instance.get("interfaces") or []}
    files = _Files(dict(texts))
    result = {"files": {}, "dropin": None, "actions": [], "refused": [], "admitted": [], "already_served": []}
    wanted = []
    for name in admit:
        if name in wanted:
            continue
        interface = interfaces.get(name)
        if interface is None:
            result["refused"].append("interface %s does not exist on the node (it has: %s)" % (name, ", ".join(sorted(interfaces)) or "none"))
            continue
        why = _refusal(interface, default_route_interfaces)
        if why:
            result["refused"].append("not admitting %s: %s; dnsmasq would answer the world (open resolver)" % (name, why))
            continue
        if interface.get("served"):
            result["already_served"].append(name)
            continue
        wanted.append(name)
    if (config.get("port") or {}).get("value") == 0:
        result["refused"].append("%s: port=0 disables DNS in this dnsmasq; it is not a pod interface problem" % (config["port"].get("origin") or "default"))
    local_service = config.get("local_service")
    if wanted and local_service and not config.get("interface") and not config.get("listen_address"):
        result["refused"].append(
            "%s: local-service answers only connected subnets; adding interface= would switch dnsmasq to interface mode and drop the "
            "node's other interfaces: give the pod interface a connected subnet or replace local-service by interface= lines by hand"
            % local_service.get("origin"))
    if result["refused"]:
        return result

    # except-interface entries that exclude an admitted interface: edit the line where it is
    handled_lines = set()
    for item in config.get("except_interface") or []:
        hits = [n for n in wanted if name_matches(item["value"], n)]
        if not hits or item["origin"] in handled_lines:
            continue
        handled_lines.add(item["origin"])
        path, lineno = _split_origin(item["origin"])
        lines = files.get(path) if path else None
        if lines is None or lineno > len(lines):
            result["refused"].append("except-interface=%s excludes %s but comes from %s, which is not a file this role can edit; remove it there"
                                     % (item["value"], ", ".join(hits), item["origin"]))
            continue
        option, value = _option_line(lines[lineno - 1])
        kept = []
        for entry in (v.strip() for v in value.split(",")):
            if not entry:
                continue
            matched = [n for n in wanted if name_matches(entry, n)]
            if not matched:
                kept.append(entry)
            elif "*" in entry:
                kept.extend(n for n in sorted(interfaces) if name_matches(entry, n) and n not in wanted and n not in kept)
        replacement = ["# %s (%s) admitted %s: %s" % (FINGERPRINT, finding, ", ".join(hits), lines[lineno - 1].strip())]
        if kept:
            replacement.append("%s=%s" % (option, ",".join(kept)))
        lines[lineno - 1] = "\n".join(replacement)
        result["actions"].append("%s: except-interface=%s -> %s" % (item["origin"], value, ("except-interface=" + ",".join(kept)) if kept else "commented out"))

    # interface= lines that do not include an admitted interface
    includes = config.get("interface") or []
    missing = [n for n in wanted if includes and not any(name_matches(e["value"], n) for e in includes)]
    if missing:
        _add_interface_lines(result, files, config, includes, missing, finding, dropin_name)

    if bind_dynamic and (config.get("mode") or {}).get("value") == "bind-interfaces":
        path, lineno = _split_origin(config["mode"]["origin"])
        lines = files.get(path) if path else None
        if lines is None or lineno > len(lines):
            result["refused"].append("bind-interfaces comes from %s; change it to bind-dynamic there" % config["mode"]["origin"])
        else:
            lines[lineno - 1] = "# %s (%s): %s\nbind-dynamic" % (FINGERPRINT, finding, lines[lineno - 1].strip())
            result["actions"].append("%s: bind-interfaces -> bind-dynamic" % config["mode"]["origin"])
    if result["refused"]:
        result["actions"] = []
        return result
    result["files"] = files.rendered()
    result["admitted"] = wanted
    return result


def _add_interface_lines(result, files, config, includes, missing, finding, dropin_name):
    new_lines = ["interface=%s" % n for n in missing]
    for entry in config.get("options") or []:
        if entry["option"] != "conf-dir" or not entry.get("value"):
            continue
        directory, exclude, include = conf_dir_spec(entry["value"])
        if conf_dir_files([dropin_name], exclude, include):
            path = directory.rstrip("/") + "/" + dropin_name
            old = files.texts.get(path, "")
            have = [raw.strip() for raw in old.splitlines() if raw.strip() and not raw.strip().startswith("#")]
            body = have + [line for line in new_lines if line not in have]
            header = ["# %s (%s): pod-facing interfaces dnsmasq answers on (read through conf-dir=%s)" % (FINGERPRINT, finding, entry["value"]),
                      "# The other interfaces stay as the rest of the configuration says; remove this file to undo."]
            result["dropin"] = {"path": path, "text": "\n".join(header + body) + "\n"}
            result["actions"].append("%s: %s (drop-in)" % (path, ", ".join(new_lines)))
            return
    last = includes[-1]
    path, lineno = _split_origin(last["origin"])
    lines = files.get(path) if path else None
    if lines is None or lineno > len(lines):
        result["refused"].append("interface= comes from %s and no conf-dir is read; add %s there" % (last["origin"], ", ".join(new_lines)))
        return
    lines[lineno - 1] = "\n".join([lines[lineno - 1], "# %s (%s): pod-facing interfaces" % (FINGERPRINT, finding)] + new_lines)
    result["actions"].append("%s: added %s" % (last["origin"], ", ".join(new_lines)))
