# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee; the edit dicts are the contract of the
# coredns_corefile module's ``edits`` option.
#
# Structural Corefile edits over the parse tree of _corefile: ensure a plugin, or an option inside
# a plugin's block, present or absent in the server blocks that serve a zone; then render. Also
# the judgement of a CoreDNS reload from its log lines. Stdlib only, Python 3.9+.
#
# An edit (after ``normalize``):
#   plugin    directive name (``autopath``, ``log``, ``forward`` ...)
#   state     ``present`` | ``absent``
#   zone      server blocks that have a key for this zone (``.``, ``cluster.local``); port: and this port
#   args      present: the plugin's arguments (None keeps the current ones; a new plugin gets none)
#   block     present: the plugin's block, exactly, as [{name, args}] (None keeps the current block)
#   option    the edit is about this sub-directive of the plugin's block instead of the plugin
#   option_args  present: its arguments (None keeps the current ones; a new option gets none)
#   position / after / before   where a new plugin goes (first | last; after/before a plugin name)

from __future__ import annotations

import copy
import re

from ansible_collections.clusterdns.doctor.plugins.module_utils import _corefile
from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import known_plugin, version_string
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput

STATES = ("present", "absent")
POSITIONS = ("first", "last")
KEYS = ("plugin", "state", "zone", "port", "args", "block", "option", "option_args", "position", "after", "before")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_OPTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

# CoreDNS log lines of the reload plugin (plugin/reload/reload.go and caddy's restart, CoreDNS 1.x):
#   [INFO] Reloading
#   [INFO] Reloading complete                                                 (new Corefile serving)
#   [ERROR] Restart failed: plugin/forward: ...                              (setup failed)
#   [ERROR] plugin/reload: Corefile changed but reload failed: ...           (old Corefile keeps serving)
#   [WARNING] plugin/reload: Corefile parse failed: ...                      (syntax; logged every interval)
RELOAD_COMPLETE = "Reloading complete"
RELOAD_FAILED = ("Corefile changed but reload failed", "Corefile parse failed")


# -- edits ------------------------------------------------------------------------------------------
def _where(index):
    return "edits[%d]" % index


def _str_list(value, what):
    if value is None:
        return None
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = str(value).split()
    if not isinstance(value, (list, tuple)):
        raise InvalidInput("%s must be a list of words, got %r" % (what, value))
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise InvalidInput("%s must be a list of words, got %r" % (what, item))
        text = str(item)
        if text == "" or "\n" in text:
            raise InvalidInput("%s: empty or multi-line word %r" % (what, text))
        out.append(text)
    return out


def _entry(item, what):
    """A block entry: ``{name, args}`` or a line such as ``"class denial error"``."""
    if isinstance(item, str):
        words = item.split()
        if not words:
            raise InvalidInput("%s: empty line" % what)
        item = {"name": words[0], "args": words[1:]}
    if not isinstance(item, dict) or set(item) - {"name", "args", "block", "lineno", "comments", "end_comments"} or item.get("block") \
            or not isinstance(item.get("name"), str):
        raise InvalidInput("%s must be {name, args} or a line of words, got %r" % (what, item))
    if not _OPTION_RE.match(item["name"]):
        raise InvalidInput("%s: %r is not a directive name" % (what, item["name"]))
    return {"name": item["name"], "args": _str_list(item.get("args"), what + ".args") or [], "block": None,
            "lineno": None, "comments": [], "end_comments": []}


def normalize(edits):
    """Checked copies of ``edits`` with every key set. Raises InvalidInput naming the edit."""
    if edits is None:
        return []
    if not isinstance(edits, (list, tuple)):
        raise InvalidInput("edits must be a list of dicts, got %s" % type(edits).__name__)
    out = []
    for index, raw in enumerate(edits):
        where = _where(index)
        if not isinstance(raw, dict):
            raise InvalidInput("%s must be a dict, got %r" % (where, raw))
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise InvalidInput("%s: unknown key(s) %s; known: %s" % (where, ", ".join(unknown), ", ".join(KEYS)))
        edit = {key: raw.get(key) for key in KEYS}
        plugin = edit["plugin"]
        if not isinstance(plugin, str) or not _NAME_RE.match(plugin):
            raise InvalidInput("%s: plugin must be a plugin name such as 'log' or 'forward', got %r" % (where, plugin))
        edit["state"] = edit["state"] or "present"
        if edit["state"] not in STATES:
            raise InvalidInput("%s: state must be present or absent, got %r" % (where, edit["state"]))
        zone = "." if edit["zone"] in (None, "") else edit["zone"]
        if not isinstance(zone, str) or any(ch in zone for ch in " \t\n{}#"):
            raise InvalidInput("%s: zone must be a zone name such as '.' or 'cluster.local', got %r" % (where, edit["zone"]))
        edit["zone"] = _norm_zone(zone)
        if edit["port"] is not None:
            if isinstance(edit["port"], bool) or not str(edit["port"]).isdigit() or not 0 < int(edit["port"]) < 65536:
                raise InvalidInput("%s: port must be a port number, got %r" % (where, edit["port"]))
            edit["port"] = int(edit["port"])
        edit["args"] = _str_list(edit["args"], where + ".args")
        edit["option_args"] = _str_list(edit["option_args"], where + ".option_args")
        if edit["block"] is not None:
            if not isinstance(edit["block"], (list, tuple)):
                raise InvalidInput("%s: block must be a list of {name, args} (or lines), got %r" % (where, edit["block"]))
            edit["block"] = [_entry(item, "%s.block[%d]" % (where, n)) for n, item in enumerate(edit["block"])]
        if edit["option"] is not None:
            if not isinstance(edit["option"], str) or not _OPTION_RE.match(edit["option"]):
                raise InvalidInput("%s: option must be a directive name such as 'prefer_udp', got %r" % (where, edit["option"]))
            if edit["args"] is not None or edit["block"] is not None:
                raise InvalidInput("%s: an option edit changes one line inside %s's block; args and block belong to plugin edits"
                                   % (where, plugin))
        elif edit["option_args"] is not None:
            raise InvalidInput("%s: option_args without option" % where)
        edit["position"] = edit["position"] or "last"
        if edit["position"] not in POSITIONS:
            raise InvalidInput("%s: position must be first or last, got %r" % (where, edit["position"]))
        for key in ("after", "before"):
            if edit[key] is not None and (not isinstance(edit[key], str) or not _NAME_RE.match(edit[key])):
                raise InvalidInput("%s: %s must be a plugin name, got %r" % (where, key, edit[key]))
        if edit["after"] and edit["before"]:
            raise InvalidInput("%s: give after or before, not both" % where)
        out.append(edit)
    return out


def _norm_zone(zone):
    zone = zone.strip().lower()
    if zone not in ("", ".") and zone.endswith("."):
        zone = zone[:-1]
    return zone or "."


def _key_port(key):
    """A key's port; a key without one listens on CoreDNS's default, 53 for plain DNS."""
    if key.get("port") is not None:
        return key["port"]
    return 53 if key.get("scheme") in (None, "dns") else None


def select_servers(blocks, zone=".", port=None):
    """The server blocks with a key for ``zone`` (and ``port`` when given)."""
    zone = _norm_zone(zone)
    out = []
    for item in blocks:
        if item.get("kind", "server") != "server":
            continue
        for key in item.get("zones") or []:
            if _norm_zone(key.get("zone") or ".") == zone and (port is None or _key_port(key) == port):
                out.append(item)
                break
    return out


def _label(item):
    return " ".join(item.get("keys") or []) or "?"


def _words(entry):
    return " ".join([entry["name"]] + [_corefile.quote(a) for a in entry.get("args") or []])


def _line(entry):
    return " (line %s)" % entry["lineno"] if entry.get("lineno") else ""


def _render_entry(entry):
    text = _words(entry)
    if entry.get("block"):
        text += " { %s }" % "; ".join(_render_entry(sub) for sub in entry["block"])
    return text


def _new_entry(name, args, block):
    return {"name": name, "args": list(args or []), "block": copy.deepcopy(block) if block else None, "lineno": None,
            "comments": [], "end_comments": []}


def _remove(entries, index):
    """Remove ``entries[index]``; its comments move to the entry after it, so none is lost."""
    gone = entries.pop(index)
    if gone.get("comments"):
        if index < len(entries):
            entries[index]["comments"] = gone["comments"] + entries[index].get("comments", [])
            return gone, None
        return gone, gone["comments"]
    return gone, None


def _set_block(plugin, wanted):
    """Make ``plugin``'s block exactly ``wanted`` (names and args, in order), keeping the comments of
    entries that stay."""
    current = plugin.get("block") or []
    pool = {}
    for sub in current:
        pool.setdefault(sub["name"], []).append(sub)
    new = []
    for want in wanted:
        found = pool.get(want["name"])
        if found:
            keep = found.pop(0)
            keep = dict(keep, args=list(want["args"]))
            new.append(keep)
        else:
            new.append(copy.deepcopy(want))
    orphans = [c for subs in pool.values() for sub in subs for c in sub.get("comments") or []]
    end = list(plugin.get("end_comments") or []) + orphans
    plugin["block"] = new or None
    plugin["end_comments"] = end if new else []
    return [] if new else end


def _insert_at(plugins, edit):
    names = [p["name"] for p in plugins]
    if edit["after"] and edit["after"] in names:
        return len(names) - names[::-1].index(edit["after"])
    if edit["before"] and edit["before"] in names:
        return names.index(edit["before"])
    return 0 if edit["position"] == "first" else len(plugins)


def _apply_plugin(server, edit, actions):
    label = _label(server)
    plugins = server["plugins"]
    found = [i for i, p in enumerate(plugins) if p["name"] == edit["plugin"]]
    if edit["state"] == "absent":
        for index in reversed(found):
            gone, orphans = _remove(plugins, index)
            if orphans:
                server["end_comments"] = orphans + list(server.get("end_comments") or [])
            actions.append("server block %s: removed %s%s" % (label, _render_entry(gone), _line(gone)))
        return
    if not found:
        entry = _new_entry(edit["plugin"], edit["args"], edit["block"])
        plugins.insert(_insert_at(plugins, edit), entry)
        actions.append("server block %s: added %s" % (label, _render_entry(entry)))
        return
    for index in found:
        plugin = plugins[index]
        before = _render_entry(plugin)
        if edit["args"] is not None and plugin["args"] != edit["args"]:
            plugin["args"] = list(edit["args"])
        if edit["block"] is not None:
            current = [(s["name"], s["args"], s.get("block")) for s in plugin.get("block") or []]
            wanted = [(s["name"], s["args"], None) for s in edit["block"]]
            if current != wanted:
                orphans = _set_block(plugin, edit["block"])
                if orphans:
                    plugin["comments"] = list(plugin.get("comments") or []) + orphans
        after = _render_entry(plugin)
        if after != before:
            actions.append("server block %s: %s%s -> %s" % (label, before, _line(plugin), after))


def _apply_option(server, edit, actions):
    label = _label(server)
    found = [p for p in server["plugins"] if p["name"] == edit["plugin"]]
    if not found:
        if edit["state"] == "present":
            raise InvalidInput("server block %s has no %s plugin, so its option %s cannot be set; add the plugin first "
                               "(an edit {plugin: %s} before this one)" % (label, edit["plugin"], edit["option"], edit["plugin"]))
        return
    for plugin in found:
        where = "%s %s%s" % (label, _words(plugin), _line(plugin))
        block = plugin.get("block") or []
        subs = [i for i, s in enumerate(block) if s["name"] == edit["option"]]
        if edit["state"] == "absent":
            for index in reversed(subs):
                gone, orphans = _remove(block, index)
                if orphans:
                    plugin["end_comments"] = orphans + list(plugin.get("end_comments") or [])
                actions.append("server block %s: removed option %s" % (where, _render_entry(gone)))
            if subs and not block:
                plugin["comments"] = list(plugin.get("comments") or []) + list(plugin.get("end_comments") or [])
                plugin["block"], plugin["end_comments"] = None, []
            continue
        if not subs:
            entry = _new_entry(edit["option"], edit["option_args"], None)
            plugin["block"] = block + [entry]
            actions.append("server block %s: added option %s" % (where, _render_entry(entry)))
            continue
        sub = block[subs[0]]
        if edit["option_args"] is not None and sub["args"] != edit["option_args"]:
            before = _render_entry(sub)
            sub["args"] = list(edit["option_args"])
            actions.append("server block %s: option %s -> %s" % (where, before, _render_entry(sub)))


def apply_edits(blocks, edits):
    """``(new_blocks, actions)``: a deep copy of ``blocks`` (the output of _corefile.parse) with the
    normalized ``edits`` applied in order, and one sentence per change. Raises InvalidInput when a
    present edit names a zone no server block serves, or an option of a plugin that is absent."""
    blocks = copy.deepcopy(blocks)
    actions = []
    for index, edit in enumerate(edits):
        servers = select_servers(blocks, edit["zone"], edit["port"])
        if not servers:
            if edit["state"] == "absent":
                continue
            have = [_label(b) for b in blocks if b.get("kind", "server") == "server"]
            raise InvalidInput("%s: no server block serves zone %s%s (server blocks: %s)" % (
                _where(index), edit["zone"], "" if edit["port"] is None else " on port %d" % edit["port"], ", ".join(have) or "none"))
        try:
            for server in servers:
                if edit["option"] is None:
                    _apply_plugin(server, edit, actions)
                else:
                    _apply_option(server, edit, actions)
        except InvalidInput as exc:
            raise InvalidInput("%s: %s" % (_where(index), exc)) from None
    return blocks, actions


def server_plugins(blocks):
    """``(server block, plugin)`` for the top-level plugins of every server block."""
    for item in blocks:
        if item.get("kind", "server") == "server":
            for plugin in item.get("plugins") or []:
                yield item, plugin


def has_plugin(blocks, name):
    return any(plugin["name"] == name for _item, plugin in server_plugins(blocks))


def check_versions(edits, version):
    """Refuse edits that add a plugin the CoreDNS ``version`` does not have (InvalidInput)."""
    for index, edit in enumerate(edits):
        if edit["state"] != "present" or edit["option"] is not None:
            continue
        ok, reason = known_plugin(edit["plugin"], version)
        if not ok:
            raise InvalidInput("%s: %s; CoreDNS %s would stop with \"Unknown directive '%s'\" at its next start, and refuse the reload now"
                               % (_where(index), reason, version_string(version) or "(version unknown)", edit["plugin"]))


def unknown_plugins(blocks, version):
    """Sentences for plugins already in ``blocks`` that CoreDNS ``version`` does not have."""
    out = []
    for item, plugin in server_plugins(blocks):
        ok, reason = known_plugin(plugin["name"], version)
        if not ok:
            out.append("server block %s line %s: %s; every reload fails while it is in the Corefile"
                       % (_label(item), plugin.get("lineno"), reason))
    return out


def plan(text, edits, version=None, source="Corefile"):
    """Parse ``text``, apply ``edits`` and render.

    Returns ``{changed, before, after, actions, warnings, reload_plugin}``: ``after`` is the
    rendered Corefile when ``changed`` (``before`` otherwise: an unchanged Corefile is never
    rewritten, so a layout it has is kept). Raises ParseError when ``text`` does not parse (the line
    and what was expected) and InvalidInput for bad edits or plugins ``version`` does not have.
    """
    edits = normalize(edits)
    check_versions(edits, version)
    blocks = _corefile.parse(text, source=source)
    new, actions = apply_edits(blocks, edits)
    changed = _corefile.strip_lines(new) != _corefile.strip_lines(blocks)
    after = _corefile.render(new) if changed else text
    warnings = unknown_plugins(new, version)
    if has_plugin(blocks, "reload") and not has_plugin(new, "reload"):
        warnings.append("the reload plugin is removed: CoreDNS loads this Corefile, then reloads no later change without a restart")
    return {"changed": changed, "before": text, "after": after, "actions": actions if changed else [],
            "warnings": warnings, "reload_plugin": has_plugin(blocks, "reload")}


# -- reload ------------------------------------------------------------------------------------------
def reload_events(log_text):
    """Counts of reload outcomes in a CoreDNS log: ``{complete, failed, last_failure}``."""
    complete = failed = 0
    last = None
    for line in (log_text or "").splitlines():
        if RELOAD_COMPLETE in line:
            complete += 1
        elif any(marker in line for marker in RELOAD_FAILED):
            failed += 1
            last = line.strip()
    return {"complete": complete, "failed": failed, "last_failure": last}


DONE = ("reloaded", "restarted", "started", "gone", "not_ready")


def judge_reload(baseline, now):
    """Whether every CoreDNS pod took the new Corefile.

    ``baseline``: ``{pod name: {uid, restarts, events}}`` read just before the write; ``now``:
    ``{pod name: {uid, restarts, ready, waiting_reason, events}}`` (``events`` from
    ``reload_events`` over the log since the same instant, None when unread). Returns
    ``(status, pods)``: status ``failed`` when a pod rejected it (or a restarted/new pod cannot run),
    ``reloaded`` when every pod reloaded it (or restarted / started since, and is ready; a pod that
    was not ready before the write counts as done while another one served), ``waiting`` otherwise;
    pods is ``[{name, status, detail}]``, status ``reloaded``, ``restarted``, ``started``, ``gone``,
    ``not_ready``, ``failed`` or ``waiting``.
    """
    pods = []
    # A replica that was not ready before the write (crash-looping on the old Corefile, say) is not
    # waited for while another one serves: its back-off can outlast any timeout.
    serving = any(b.get("ready") for b in baseline.values())
    for name in sorted(set(baseline) | set(now)):
        base, cur = baseline.get(name), now.get(name)
        if cur is None:
            pods.append({"name": name, "status": "gone", "detail": "pod deleted since the write"})
            continue
        if base is not None and serving and not base.get("ready") and base.get("uid") == cur.get("uid") and not cur.get("ready"):
            pods.append({"name": name, "status": "not_ready", "detail": "not ready before the write (%s); not waited for"
                         % (base.get("waiting_reason") or "not ready")})
            continue
        fresh = base is None or base.get("uid") != cur.get("uid")
        restarted = not fresh and (cur.get("restarts") or 0) > (base.get("restarts") or 0)
        if fresh or restarted:
            what = "started" if fresh else "restarted"
            if cur.get("ready"):
                pods.append({"name": name, "status": what, "detail": "%s since the write and ready: it read the new Corefile at start" % what})
            elif cur.get("waiting_reason") in ("CrashLoopBackOff", "Error", "CreateContainerConfigError", "RunContainerError"):
                pods.append({"name": name, "status": "failed", "detail": "%s since the write and cannot run: %s" % (what, cur["waiting_reason"])})
            else:
                pods.append({"name": name, "status": "waiting", "detail": "%s since the write, not ready yet" % what})
            continue
        events, before = cur.get("events"), base.get("events") or {}
        if events is None:
            pods.append({"name": name, "status": "waiting", "detail": cur.get("log_error") or "log not read"})
        elif events["failed"] > before.get("failed", 0):
            pods.append({"name": name, "status": "failed", "detail": events["last_failure"]})
        elif events["complete"] > before.get("complete", 0):
            pods.append({"name": name, "status": "reloaded", "detail": "logged '%s'" % RELOAD_COMPLETE})
        else:
            pods.append({"name": name, "status": "waiting", "detail": "no reload logged yet"})
    if any(p["status"] == "failed" for p in pods):
        return "failed", pods
    if pods and all(p["status"] in DONE for p in pods) and any(p["status"] not in ("gone", "not_ready") for p in pods):
        return "reloaded", pods
    return "waiting", pods
