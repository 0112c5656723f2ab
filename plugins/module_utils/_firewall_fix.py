# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# The firewall fix of finding IPT002, planned from the finding evidence and the current
# ``iptables-save`` / ``ip6tables-save`` dumps: either an ACCEPT for the DNS part of the blocking
# rule's match, inserted right ahead of it, or the removal of the blocking rule. The change is an
# ``iptables-restore --noflush`` input per family (one transaction per table). Stdlib only.
#
# Scope: the ACCEPT keeps every condition of the blocking rule (interface, addresses, states, marks,
# sets) and narrows each port condition that includes 53 to exactly 53, so it never accepts more
# than the DNS traffic the rule drops. A native nftables ruleset (tables iptables does not manage)
# is refused: an iptables ACCEPT does not stop a drop in another nftables base chain.

from __future__ import annotations

import json

from ansible_collections.clusterdns.doctor.plugins.module_utils._iptables import (
    DNS_PORT, _PORT_OPTIONS, _includes, _port_set, covers_dns, rule_match, shadows, split_rule)

MODES = ("insert_accept", "remove")
COMMENT = "clusterdns.doctor firewall: DNS accepted ahead of the IPT002 rule"
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
_MANAGED = {"ip": IPTABLES_TABLES, "ip6": IPTABLES_TABLES, "arp": ("filter",), "bridge": ("filter", "nat", "broute")}
_TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}


def native_nft_chains(ruleset_json):
    """Base chains of nftables tables that iptables-nft does not manage, from ``nft -j list ruleset``.

    Returns ``[{"family", "table", "chain", "hook", "priority", "policy"}]``. Tables named like the
    iptables tables (``ip filter``, ``ip6 nat``, ``arp filter``, ``bridge filter`` ...) are iptables'
    own; any other table (``inet filter`` of /etc/nftables.conf, ``inet firewalld``, ``ip
    kube-proxy``) is native. Regular chains of native tables are left out: only base chains see
    packets by themselves.
    """
    if not ruleset_json or not ruleset_json.strip():
        return []
    try:
        data = json.loads(ruleset_json)
    except ValueError as exc:
        raise ValueError("nft -j list ruleset: not JSON (%s); expected the output of nftables 0.9 or later" % exc) from exc
    chains = []
    for item in data.get("nftables", []) if isinstance(data, dict) else []:
        chain = item.get("chain") if isinstance(item, dict) else None
        if not isinstance(chain, dict) or "hook" not in chain:
            continue
        if chain.get("table") in _MANAGED.get(chain.get("family"), ()):
            continue
        chains.append({"family": chain.get("family"), "table": chain.get("table"), "chain": chain.get("name"),
                       "hook": chain.get("hook"), "priority": chain.get("prio"), "policy": chain.get("policy")})
    return chains


def _chain_rules(text, table, chain):
    """The rules of ``table``/``chain`` in a save dump, in order, without counter prefixes."""
    rules, current = [], None
    prefix = "-A %s " % chain
    for raw in text.splitlines():
        if raw.startswith("*"):
            current = raw[1:].strip()
            continue
        if current != table or not raw or raw[0] not in "-[":
            continue
        line = raw[raw.find("] ") + 2:] if raw[0] == "[" else raw
        if line.startswith(prefix) or line == prefix.rstrip():
            rules.append(line)
    return rules


def _quote(word):
    if word and all(c.isalnum() or c in "-_.:/,!@+=%" for c in word):
        return word
    return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"')


def accept_rule(rule, port=DNS_PORT, comment=COMMENT):
    """The ACCEPT that takes the DNS traffic of the blocking save-format ``rule`` (``-A CHAIN ...``).

    Every condition is kept; port conditions that include ``port`` become exactly ``port`` (not
    negated); the comment is replaced (or added) and the target becomes ACCEPT.
    """
    words = split_rule(rule)
    out = words[:2]
    i, n = 2, len(words)
    has_comment = False
    while i < n:
        word = words[i]
        if word in ("-j", "--jump", "-g", "--goto"):
            break
        if word == "!" and i + 2 < n and words[i + 1] in _PORT_OPTIONS:
            spec = words[i + 2]
            if not _includes(_port_set(spec), port):  # "! --dport 123" includes 53
                out += [words[i + 1], str(port)]
            else:
                out += words[i:i + 3]
            i += 3
            continue
        if word in _PORT_OPTIONS and i + 1 < n:
            spec = words[i + 1]
            out += [word, str(port) if _includes(_port_set(spec), port) else spec]
            i += 2
            continue
        if word == "--comment" and i + 1 < n:
            out += [word, comment]
            has_comment = True
            i += 2
            continue
        out.append(word)
        i += 1
    if not has_comment:
        out += ["-m", "comment", "--comment", comment]
    out += ["-j", "ACCEPT"]
    return " ".join(_quote(w) for w in out)


def plan(findings, saves, mode="insert_accept", nft_ruleset=None, port=DNS_PORT):
    """What to change for the IPT002 ``findings`` (their evidence: family, table, chain, position, rule).

    ``saves`` maps family (``ipv4`` / ``ipv6``) to the current save dump. Returns ``{"refused",
    "changes", "already", "restore", "tables", "actions", "diff"}``: ``restore`` maps family to the
    ``iptables-restore --noflush`` input, ``tables`` maps family to the tables changed (backed up and
    restored on failure), ``diff`` is ``{"before", "after"}`` text of the changed chains.
    """
    if mode not in MODES:
        raise ValueError("firewall_mode must be one of %s, got %r" % (", ".join(MODES), mode))
    result = {"refused": [], "changes": [], "already": [], "restore": {}, "tables": {}, "actions": [],
              "diff": {"before": "", "after": ""}}
    for chain in native_nft_chains(nft_ruleset):
        result["refused"].append(
            "native nftables table %s %s, base chain %s (hook %s, priority %s, policy %s) is not managed by iptables: "
            "an iptables ACCEPT would not stop a drop there; fix the DNS rule in that ruleset (nft list table %s %s)"
            % (chain["family"], chain["table"], chain["chain"], chain["hook"], chain["priority"], chain["policy"],
               chain["family"], chain["table"]))
    if result["refused"]:
        return result
    seen = set()
    targets = []
    for finding in findings:
        ev = finding.get("evidence") or {}
        key = (ev.get("family"), ev.get("table"), ev.get("chain"), ev.get("rule"))
        if key in seen:
            continue
        seen.add(key)
        if ev.get("family") not in _TOOLS or not ev.get("table") or not ev.get("chain") or not str(ev.get("rule", "")).startswith("-A "):
            result["refused"].append("IPT002 evidence without family/table/chain/rule: %r" % (ev,))
            continue
        if ev["family"] not in saves:
            result["refused"].append("no %s-save dump to check the %s rule against" % (_TOOLS[ev["family"]], ev["family"]))
            continue
        targets.append(key)
    by_chain = {}
    for family, table, chain, rule in targets:
        rules = _chain_rules(saves[family], table, chain)
        where = "%s %s %s" % (_TOOLS[family], table, chain)
        if rule not in rules:
            result["already"].append("%s: the rule is gone: %s" % (where, rule))
            continue
        position = rules.index(rule) + 1
        words = split_rule(rule)
        ports = covers_dns(rule_match(words), port)
        earlier = [split_rule(r) for r in rules[:position - 1] if rule_match(split_rule(r))["target"] == "ACCEPT"]
        if mode == "insert_accept" and any(shadows(a, words, ports, port) for a in earlier):
            result["already"].append("%s: an ACCEPT ahead of rule %d already takes its DNS traffic" % (where, position))
            continue
        by_chain.setdefault((family, table, chain), []).append((position, rule))
    before, after = [], []
    for (family, table, chain), items in sorted(by_chain.items()):
        tool = _TOOLS[family]
        lines = []
        new_rules = list(_chain_rules(saves[family], table, chain))
        for position, rule in sorted(items, reverse=True):
            if mode == "insert_accept":
                accept = accept_rule(rule, port)
                command = "-I %s %d %s" % (chain, position, accept[len("-A %s " % chain):])
                new_rules.insert(position - 1, accept)
                action = "%s -t %s %s  (ahead of rule %d: %s)" % (tool, table, command, position, rule)
            else:
                command = "-D %s" % rule[3:]
                del new_rules[position - 1]
                action = "%s -t %s %s  (was rule %d)" % (tool, table, command, position)
            lines.append(command)
            result["changes"].append({"family": family, "table": table, "chain": chain, "position": position,
                                      "rule": rule, "command": command, "mode": mode})
            result["actions"].append(action)
        chunk = result["restore"].get(family, "")
        chunk += "*%s\n%s\nCOMMIT\n" % (table, "\n".join(lines))
        result["restore"][family] = chunk
        tables = result["tables"].setdefault(family, [])
        if table not in tables:
            tables.append(table)
        header = "# %s -t %s -S %s" % (tool, table, chain)
        before += [header] + _chain_rules(saves[family], table, chain)
        after += [header] + new_rules
    if before:
        result["diff"] = {"before": "\n".join(before) + "\n", "after": "\n".join(after) + "\n"}
    return result
