# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee for the helpers; the data model returned by
# ``parse`` is the contract of the corefile_parse / corefile_render filters.
#
# Pure Corefile parser and renderer. Stdlib only, Python 3.9+.
#
# Syntax accepted (the Caddyfile v1 dialect CoreDNS 1.x reads):
#   * tokens are separated by blanks (spaces, tabs, CR); a newline ends a directive;
#   * ``"..."`` quotes a token; inside quotes only ``\"`` is an escape (other backslashes stay),
#     and a quoted token may span lines; a quote may open in the middle of a token;
#   * ``#`` outside quotes starts a comment to the end of the line;
#   * ``{`` and ``}`` open and close a block only as tokens of their own; ``{$ENV}`` and
#     ``{$ENV:default}`` are ordinary tokens and are kept verbatim, like ``__PILLAR__X__`` and
#     ``$DNS_DOMAIN`` template markers;
#   * top level: server blocks ``KEY [KEY...] {``, keys separated by blanks or commas (a line that
#     ends with a comma continues on the next line; the ``{`` must be on the line of the last key),
#     snippets ``(name) { ... }`` and ``import PATTERN`` lines.
# Not accepted: the brace-less single server block of Caddy v1 (CoreDNS configs in Kubernetes
# always use braces); it fails with "expected '{'".

from __future__ import annotations

import json
import re

from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

INDENT = "    "
SCHEMES = ("dns", "tls", "grpc", "grpcs", "https", "quic")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_PORT_RE = re.compile(r"^(\d+|\{\$[^}]*\}|__[A-Z0-9_]+__|\$[A-Za-z_][A-Za-z0-9_]*)$")
_SNIPPET_RE = re.compile(r"^\((.+)\)$")
_CM_KEY_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<quote>[\"']?)Corefile(?P=quote):[ \t]*(?P<rest>.*)$")
_DESCRIBE_KEY_RE = re.compile(r"^[^\s:][^:]*:\s*$")


class _Token:
    __slots__ = ("text", "line", "end", "quoted")

    def __init__(self, text, line, end, quoted):
        self.text = text
        self.line = line
        self.end = end
        self.quoted = quoted

    @property
    def brace(self):
        """``{`` or ``}`` when the token is an unquoted brace, else ``None``."""
        return self.text if not self.quoted and self.text in ("{", "}") else None


def _lex(text, source, offset):
    """Tokens and comments. Comments are ``(line, text, inline)``: ``inline`` when a token came
    before them on the same line."""
    tokens, comments = [], []
    lines = text.split("\n")
    i = 0
    n = len(text)
    line = 1
    val = []
    quoted = False
    was_quoted = False
    start = None
    quote_line = 0
    last_token_line = 0

    def emit(end_line):
        tokens.append(_Token("".join(val), start, end_line, was_quoted))

    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < n and text[i + 1] == '"':
                val.append('"')
                i += 2
                continue
            if ch == '"':
                quoted = False
                i += 1
                continue
            if ch == "\n":
                line += 1
            val.append(ch)
            i += 1
            continue
        if ch in " \t\r\n":
            if val or was_quoted:
                emit(line)
                last_token_line = line
                val = []
                was_quoted = False
                start = None
            if ch == "\n":
                line += 1
            i += 1
            continue
        if ch == "#":
            end = text.find("\n", i)
            end = n if end < 0 else end
            if val or was_quoted:
                emit(line)
                last_token_line = line
                val = []
                was_quoted = False
                start = None
            comments.append((line, text[i + 1:end].rstrip("\r \t"), last_token_line == line))
            i = end
            continue
        if start is None:
            start = line
        if ch == '"':
            quoted = True
            was_quoted = True
            quote_line = line
            i += 1
            continue
        val.append(ch)
        i += 1
    if quoted:
        raise ParseError("unterminated quoted argument", source=source, lineno=quote_line + offset,
                         line=lines[quote_line - 1].rstrip("\r"), expected='a closing " (write \\" for a quote inside an argument)')
    if val or was_quoted:
        emit(line)
    for tok in tokens:
        tok.line += offset
        tok.end += offset
    return tokens, [(ln + offset, body, inline) for ln, body, inline in comments]


def parse_key(key):
    """``tls://example.org:853`` -> ``{"zone": "example.org", "port": 853, "scheme": "tls"}``.

    The zone keeps its spelling (template markers stay verbatim) without a trailing dot, except
    the root zone ``.``; an empty zone (``:53``) is the root zone. ``port`` is ``None`` when the
    key has none (CoreDNS then uses its default, 53 for dns) or when it is a template marker.
    """
    scheme = None
    rest = key
    match = _SCHEME_RE.match(key)
    if match:
        scheme, rest = match.group(1).lower(), match.group(2)
    port = None
    zone = rest
    head, sep, tail = rest.rpartition(":")
    if sep and _PORT_RE.match(tail) and head.count("{") == head.count("}"):
        zone = head
        port = int(tail) if tail.isdigit() else None
    if zone not in ("", ".") and zone.endswith("."):
        zone = zone[:-1]
    return {"zone": zone or ".", "port": port, "scheme": scheme}


class _Parser:
    def __init__(self, text, source, offset):
        self.source = source
        self.lines = text.split("\n")
        self.offset = offset
        self.tokens, comments = _lex(text, source, offset)
        self.comments = comments
        self.pos = 0
        self.cpos = 0

    # -- helpers ---------------------------------------------------------------------------
    def _line_text(self, lineno):
        index = lineno - self.offset - 1
        return self.lines[index].rstrip("\r") if 0 <= index < len(self.lines) else None

    def error(self, message, lineno, expected):
        return ParseError(message, source=self.source, lineno=lineno, line=self._line_text(lineno), expected=expected)

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _comments_before(self, lineno):
        """Own-line comments that come before ``lineno``."""
        out = []
        while self.cpos < len(self.comments) and self.comments[self.cpos][0] < lineno:
            out.append(self.comments[self.cpos][1])
            self.cpos += 1
        return out

    def _comments_on(self, lineno, into):
        """Comments written at the end of line ``lineno`` (after a token)."""
        while self.cpos < len(self.comments) and self.comments[self.cpos][0] == lineno and self.comments[self.cpos][2]:
            into.append(self.comments[self.cpos][1])
            self.cpos += 1

    def _line_tokens(self):
        """The tokens of one logical line: until a brace or the end of the line."""
        first = self.tokens[self.pos]
        out = [first]
        self.pos += 1
        end = first.end
        while self.pos < len(self.tokens):
            tok = self.tokens[self.pos]
            if tok.line != end or tok.brace:
                break
            out.append(tok)
            end = tok.end
            self.pos += 1
        return out, end

    def _opens_block(self, end):
        tok = self._peek()
        return tok is not None and tok.brace == "{" and tok.line == end

    # -- grammar ---------------------------------------------------------------------------
    def parse(self):
        items = []
        while self._peek() is not None:
            tok = self._peek()
            comments = self._comments_before(tok.line)
            if tok.brace == "}":
                message = "'}' without a matching '{'"
                raise self.error(message, tok.line, "a server block 'ZONE[:PORT] {' before it, or one '}' fewer")
            if tok.brace == "{":
                raise self.error("a block with no keys", tok.line, "the zones it serves before '{', for example '.:53 {'")
            if tok.text == "import" and not tok.quoted:
                words, end = self._line_tokens()
                if self._opens_block(end):
                    raise self.error("'import' cannot open a block", end, "'import FILE_OR_SNIPPET' on a line of its own")
                self._comments_on(end, comments)
                plugin = {"name": "import", "args": [w.text for w in words[1:]], "block": None, "lineno": tok.line,
                          "comments": [], "end_comments": []}
                items.append(self._item("import", [], tok.line, comments, [plugin], None))
                continue
            snippet = _SNIPPET_RE.match(tok.text) if not tok.quoted else None
            if snippet:
                words, end = self._line_tokens()
                if len(words) > 1 or not self._opens_block(end):
                    raise self.error("a snippet needs a block", tok.line, "'(%s) {' with the snippet's directives inside" % snippet.group(1))
                self.pos += 1
                self._comments_on(end, comments)
                plugins, end_comments = self._block(tok.line)
                item = self._item("snippet", [], tok.line, comments, plugins, snippet.group(1))
                item["end_comments"] = end_comments
                items.append(item)
                continue
            keys, end = self._keys()
            if not self._opens_block(end):
                raise self.error("server block keys without a block", end,
                                 "'{' at the end of the line of the last key (for example '.:53 {')")
            self.pos += 1
            self._comments_on(end, comments)
            plugins, end_comments = self._block(tok.line)
            item = self._item("server", keys, tok.line, comments, plugins, None)
            item["end_comments"] = end_comments
            items.append(item)
        trailing = [c[1] for c in self.comments[self.cpos:]]
        if items:
            items[-1]["trailing_comments"] = trailing
        return items

    @staticmethod
    def _item(kind, keys, lineno, comments, plugins, snippet):
        return {"kind": kind, "keys": keys, "zones": [parse_key(k) for k in keys], "snippet": snippet, "lineno": lineno,
                "comments": comments, "plugins": plugins, "end_comments": [], "trailing_comments": []}

    def _keys(self):
        keys = []
        while True:
            words, end = self._line_tokens()
            for word in words:
                keys.extend(k for k in word.text.split(",") if k)
            if not words[-1].text.endswith(","):
                return keys, end
            nxt = self._peek()
            if nxt is None or nxt.brace:
                raise self.error("server block keys end with a comma", end, "another key after ',' or no trailing ','")

    def _block(self, open_line):
        """Directives until the matching ``}``; the opening ``{`` is consumed. ``open_line`` is
        ``None`` for a fragment: directives until the end of the text."""
        directives = []
        while True:
            tok = self._peek()
            if tok is None and open_line is None:
                return directives, [c[1] for c in self.comments[self.cpos:]]
            if tok is None:
                raise self.error("block opened here is never closed", open_line, "a matching '}' (unbalanced braces)")
            comments = self._comments_before(tok.line)
            if tok.brace == "}" and open_line is None:
                message = "'}' without a matching '{'"
                raise self.error(message, tok.line, "one '}' fewer")
            if tok.brace == "}":
                self.pos += 1
                if directives:
                    self._comments_on(tok.line, directives[-1]["comments"])
                return directives, comments
            if tok.brace == "{":
                raise self.error("a block with no directive name", tok.line, "a directive before '{', for example 'forward . 8.8.8.8 {'")
            words, end = self._line_tokens()
            entry = {"name": words[0].text, "args": [w.text for w in words[1:]], "block": None, "lineno": tok.line,
                     "comments": comments, "end_comments": []}
            if self._opens_block(end):
                self.pos += 1
                self._comments_on(end, comments)
                entry["block"], entry["end_comments"] = self._block(end)
            else:
                self._comments_on(end, comments)
            directives.append(entry)


# -- embedded Corefiles --------------------------------------------------------------------------
def _block_scalar(lines, start, key_indent, header, source):
    """A YAML block scalar (``|``, ``|-``, ``>`` ...) starting after line index ``start``."""
    body = []
    indent = None
    for index in range(start + 1, len(lines)):
        line = lines[index].rstrip("\r")
        if not line.strip():
            body.append("")
            continue
        width = len(line) - len(line.lstrip(" "))
        if width <= key_indent:
            break
        if indent is None:
            indent = width
            first = index
        if width < indent:
            raise ParseError("Corefile value is less indented than its first line", source=source, lineno=index + 1,
                             line=line, expected="every line of the Corefile block indented at least %d spaces" % indent)
        body.append(line[indent:])
    if indent is None:
        return "", start + 1
    while body and not body[-1]:
        body.pop()
    if header.startswith(">"):
        raise ParseError("folded YAML scalar for the Corefile", source=source, lineno=start + 1, line=lines[start],
                         expected="'Corefile: |' (a literal block keeps the newlines the Corefile needs)")
    return "\n".join(body) + "\n", first


def extract(text, source="Corefile"):
    """Find the Corefile in ``text``: a bare Corefile, a ConfigMap (YAML with ``data.Corefile``,
    or JSON), or ``kubectl describe configmap`` output (``Corefile:`` then ``----``).

    Returns ``(corefile_text, source, line_offset, form)``; ``line_offset`` maps Corefile lines
    back to lines of ``text`` (``None`` when it cannot: JSON), ``form`` is ``corefile``,
    ``configmap`` or ``describe``.
    """
    stripped = text.lstrip()
    if stripped.startswith("{") and not stripped.startswith("{$"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            data = doc.get("data") or {}
            if not isinstance(data, dict) or not isinstance(data.get("Corefile"), str):
                raise ParseError("JSON document without data.Corefile", source=source,
                                 expected="a ConfigMap whose data has a 'Corefile' key")
            return data["Corefile"], "%s data.Corefile" % source, 0, "configmap"
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if line.rstrip("\r") == "Corefile:" and index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}:
            body = []
            for later in lines[index + 2:]:
                clean = later.rstrip("\r")
                if clean.startswith("Events:") or clean in ("BinaryData", "BinaryData:"):
                    break
                body.append(clean)
            # the next data key ("NodeHosts:" then "----") ends the Corefile too
            for pos in range(len(body) - 1):
                if _DESCRIBE_KEY_RE.match(body[pos]) and body[pos + 1].strip() and set(body[pos + 1].strip()) == {"-"}:
                    body = body[:pos]
                    break
            while body and not body[-1].strip():
                body.pop()
            return "\n".join(body) + "\n", "%s (kubectl describe)" % source, index + 2, "describe"
    if re.search(r"^\s*kind:\s*['\"]?ConfigMap", text, re.M) or re.search(r"^apiVersion:", text, re.M):
        for index, line in enumerate(lines):
            match = _CM_KEY_RE.match(line.rstrip("\r"))
            if not match:
                continue
            rest = match.group("rest").strip()
            if rest.startswith(("|", ">")):
                body, first = _block_scalar(lines, index, len(match.group("indent")), rest, source)
                return body, "%s data.Corefile" % source, first, "configmap"
            if rest.startswith('"'):
                try:
                    return json.loads(rest), "%s data.Corefile" % source, None, "configmap"
                except ValueError:
                    raise ParseError("cannot read the double-quoted Corefile value", source=source, lineno=index + 1,
                                     line=line, expected="'Corefile: |' followed by the Corefile, indented") from None
            raise ParseError("Corefile value in a form this parser does not read", source=source, lineno=index + 1,
                             line=line, expected="'Corefile: |' followed by the Corefile, indented")
        raise ParseError("ConfigMap without a Corefile key", source=source,
                         expected="a ConfigMap whose data has a 'Corefile' key (the coredns or node-local-dns ConfigMap)")
    return text, source, 0, "corefile"


def parse_fragment(text, source="Corefile fragment"):
    """Directives without a server block around them: the ``*.override`` keys of the AKS / k3s
    ``coredns-custom`` ConfigMap, or a snippet body. Returns the plugin list (same shape as
    ``parse()[i]["plugins"]``)."""
    parser = _Parser(text, source, 0)
    plugins, trailing = parser._block(None)
    if plugins:
        plugins[-1]["comments"].extend(trailing)
    return plugins


def parse(text, source="Corefile"):
    """Parse a Corefile (or a ConfigMap / ``kubectl describe`` output that holds one).

    Returns a list of top-level items. Each has ``kind`` (``server``, ``snippet`` or ``import``),
    ``keys``, ``zones`` (``[{zone, port, scheme}]``, see ``parse_key``), ``snippet`` (the name, or
    ``None``), ``lineno``, ``comments`` (comment lines before it, and comments at the end of its
    first line), ``plugins``, ``end_comments`` (comments before its closing ``}``) and
    ``trailing_comments`` (comments after the last item; only the last item has any). A top-level
    ``import`` is an item of kind ``import`` with one plugin named ``import``.

    Each plugin (and each entry of a nested block, at any depth) is ``{name, args, block,
    lineno, comments, end_comments}``; ``block`` is ``None`` without braces, else a list of entries.
    Quoted arguments are unquoted (``\\"`` becomes ``"``). Line numbers are those of ``text``
    (so of the YAML or describe output when the Corefile is embedded).
    """
    if not isinstance(text, str):
        raise ParseError("Corefile must be text, not %s" % type(text).__name__, source=source, expected="a string")
    corefile, where, offset, _form = extract(text, source)
    return _Parser(corefile, where, offset or 0).parse()


# -- rendering -----------------------------------------------------------------------------------
def quote(arg):
    """``arg`` as a Corefile token: quoted when it would otherwise split, vanish, comment out or
    open or close a block."""
    if arg == "" or any(ch in arg for ch in ' \t\r\n"#') or arg in ("{", "}"):
        return '"%s"' % arg.replace('"', '\\"')
    return arg


def _render_comments(comments, depth, out, indent):
    for comment in comments:
        out.append("%s#%s" % (indent * depth, comment))


def _render_entries(entries, depth, out, indent):
    for entry in entries:
        _render_comments(entry.get("comments") or [], depth, out, indent)
        words = [quote(entry["name"])] + [quote(str(a)) for a in entry.get("args") or []]
        if entry.get("block") is None:
            out.append(indent * depth + " ".join(words))
            continue
        out.append(indent * depth + " ".join(words) + " {")
        _render_entries(entry["block"], depth + 1, out, indent)
        _render_comments(entry.get("end_comments") or [], depth + 1, out, indent)
        out.append(indent * depth + "}")


def render(blocks, indent=INDENT):
    """Canonical Corefile text for ``blocks`` (the output of ``parse``, possibly edited).

    Four spaces per level (the layout of the kubeadm and CoreDNS example Corefiles), one
    directive per line, comments on their own lines before what they were attached to, a blank
    line between top-level items. ``parse(render(parse(x)))`` equals ``parse(x)`` except for line
    numbers.
    """
    out = []
    for number, item in enumerate(blocks):
        if number:
            out.append("")
        _render_comments(item.get("comments") or [], 0, out, indent)
        kind = item.get("kind") or ("snippet" if item.get("snippet") else "server")
        if kind == "import":
            _render_entries(item.get("plugins") or [], 0, out, indent)
        else:
            head = "(%s)" % item["snippet"] if kind == "snippet" else " ".join(quote(k) for k in item.get("keys") or [])
            if not head:
                raise ValueError("server block %d has no keys" % (number + 1))
            out.append(head + " {")
            _render_entries(item.get("plugins") or [], 1, out, indent)
            _render_comments(item.get("end_comments") or [], 1, out, indent)
            out.append("}")
        _render_comments(item.get("trailing_comments") or [], 0, out, indent)
    return "\n".join(out) + "\n" if out else ""


# -- helpers for rule writers --------------------------------------------------------------------
def strip_lines(value):
    """``value`` without ``lineno`` keys (to compare two parses of different layouts)."""
    if isinstance(value, dict):
        return {k: strip_lines(v) for k, v in value.items() if k != "lineno"}
    if isinstance(value, list):
        return [strip_lines(v) for v in value]
    return value


def _suffix_of(name, zone):
    name = name.lower().rstrip(".")
    zone = zone.lower().rstrip(".")
    return zone in ("", name) or name.endswith("." + zone)


def server_for(blocks, zone=".", port=None):
    """The server block CoreDNS would use for ``zone``: the most specific zone that contains it,
    among blocks on ``port`` (any port when ``None``). ``None`` when no block serves it."""
    best, best_len = None, -1
    for item in blocks:
        if item.get("kind", "server") != "server":
            continue
        for key in item.get("zones") or []:
            if port is not None and key["port"] not in (None, port):
                continue
            if _suffix_of(zone, key["zone"]):
                length = len(key["zone"].rstrip("."))
                if length > best_len:
                    best, best_len = item, length
    return best


def plugins_of(blocks, zone=".", port=None):
    """Plugins of the server block that serves ``zone`` (``[]`` when none does)."""
    block = server_for(blocks, zone, port)
    return block["plugins"] if block else []


def find_all(blocks, plugin, zone=".", port=None):
    """Every plugin named ``plugin`` in the server block that serves ``zone``."""
    return [p for p in plugins_of(blocks, zone, port) if p["name"] == plugin]


def find(blocks, plugin, zone=".", port=None):
    """The first plugin named ``plugin`` in the server block that serves ``zone``, or ``None``.

    ``find(blocks, "forward")["args"]`` -> ``[".", "/etc/resolv.conf"]``.
    """
    found = find_all(blocks, plugin, zone, port)
    return found[0] if found else None


def option(entry, name):
    """Arguments of the sub-directive ``name`` inside a plugin's block (``None`` when absent).

    ``option(find(blocks, "forward"), "max_concurrent")`` -> ``["1000"]``.
    """
    for sub in (entry or {}).get("block") or []:
        if sub["name"] == name:
            return sub["args"]
    return None
