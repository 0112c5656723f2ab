# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Corefile parser and renderer on real Corefiles and ConfigMaps from public GitHub issues and
repositories (fixtures/corefile/SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _corefile
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "corefile"
GOOD = sorted(p.name for p in FIXTURES.iterdir() if p.name != "SOURCES.md" and not p.name.startswith("bad-") and not p.name.endswith(".override"))


def load(name):
    return (FIXTURES / name).read_text()


def names(plugins):
    return [p["name"] for p in plugins]


@pytest.mark.parametrize("name", GOOD)
def test_every_fixture_parses_and_round_trips(name):
    blocks = _corefile.parse(load(name), source=name)
    assert any(b["kind"] == "server" for b in blocks)
    text = _corefile.render(blocks)
    again = _corefile.parse(text)
    assert _corefile.strip_lines(again) == _corefile.strip_lines(blocks)
    assert _corefile.render(again) == text  # the canonical form is a fixed point


def test_kubeadm_configmap():
    blocks = _corefile.parse(load("kubeadm-k8s119-configmap.yaml"))
    (server,) = blocks
    assert server["keys"] == [".:53"] and server["zones"] == [{"zone": ".", "port": 53, "scheme": None}]
    assert names(server["plugins"]) == ["errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload",
                                        "loadbalance"]
    forward = _corefile.find(blocks, "forward")
    assert forward["args"] == [".", "/etc/resolv.conf"]
    assert _corefile.option(forward, "max_concurrent") == ["1000"]
    kubernetes = _corefile.find(blocks, "kubernetes", zone="cluster.local")
    assert kubernetes["args"] == ["cluster.local", "in-addr.arpa", "ip6.arpa"]
    assert _corefile.option(kubernetes, "fallthrough") == ["in-addr.arpa", "ip6.arpa"]
    # line numbers are those of the YAML document, so a user can find the line in the ConfigMap
    assert (server["lineno"], kubernetes["lineno"], forward["block"][0]["lineno"]) == (8, 14, 21)


def test_k3s_top_level_import_and_second_data_key():
    blocks = _corefile.parse(load("k3s-v1.26-configmap.yaml"))
    assert [b["kind"] for b in blocks] == ["server", "import"]
    assert blocks[1]["plugins"][0]["args"] == ["/etc/coredns/custom/*.server"]
    hosts = _corefile.find(blocks, "hosts")
    assert hosts["args"] == ["/etc/coredns/NodeHosts"] and _corefile.option(hosts, "reload") == ["15s"]
    assert "1.1.2.143" not in _corefile.render(blocks)  # NodeHosts is another key of the ConfigMap


def test_aks_template_regex_quoted_argument_survives():
    blocks = _corefile.parse(load("aks-template-configmap.yaml"))
    templates = _corefile.find_all(blocks, "template")
    assert [t["args"] for t in templates] == [["ANY", "ANY", "internal.cloudapp.net"], ["ANY", "ANY", "reddog.microsoft.com"]]
    assert _corefile.option(templates[0], "match") == ["^(?:[^.]+\\.){4,}internal\\.cloudapp\\.net\\.$"]
    assert _corefile.find(blocks, "import")["args"] == ["custom/*.override"]


def test_aks_override_fragment():
    plugins = _corefile.parse_fragment(load("aks-coredns-custom-test.override"), "test.override")
    assert [(p["name"], p["args"]) for p in plugins] == [("hosts", ["example.hosts", "example.org"])]
    assert [(e["name"], e["args"]) for e in plugins[0]["block"]] == [("10.0.0.1", ["example.org"]), ("fallthrough", [])]


def test_rke2_describe_output_odd_spacing_and_next_key():
    blocks = _corefile.parse(load("rke2-lighthouse-describe.txt"))
    assert [b["keys"] for b in blocks] == [[".:53"]]  # lighthouse.server is another data key
    kubernetes = _corefile.find(blocks, "kubernetes")
    assert kubernetes["args"] == ["cluster.local", "cluster.local", "in-addr.arpa", "ip6.arpa"]
    assert _corefile.find(blocks, "prometheus")["args"] == ["0.0.0.0:9153"]
    assert blocks[0]["lineno"] == 5


def test_openshift_describe_port_5353_and_chaos_block():
    blocks = _corefile.parse(load("openshift-microshift-describe.txt"))
    assert [b["zones"] for b in blocks] == [[{"zone": ".", "port": 5353, "scheme": None}],
                                            [{"zone": "hostname.bind", "port": 5353, "scheme": None}]]
    assert _corefile.find(blocks, "kubernetes")["args"][:3] == ["{{", ".ClusterDomain", "}}"]
    assert _corefile.option(_corefile.find(blocks, "log"), "class") == ["error"]
    assert names(_corefile.plugins_of(blocks, "hostname.bind")) == ["chaos"]
    assert _corefile.plugins_of(blocks, ".", port=53) == []


def test_nodelocaldns_pillar_markers_and_zone_selection():
    blocks = _corefile.parse(load("nodelocaldns-k8s-configmap.yaml"))
    assert [b["zones"][0]["zone"] for b in blocks] == ["__PILLAR__DNS__DOMAIN__", "in-addr.arpa", "ip6.arpa", "."]
    assert _corefile.find(blocks, "bind")["args"] == ["__PILLAR__LOCAL__DNS__", "__PILLAR__DNS__SERVER__"]
    assert _corefile.find(blocks, "forward", zone="10.in-addr.arpa")["block"][0]["name"] == "force_tcp"
    assert _corefile.find(blocks, "forward")["args"] == [".", "__PILLAR__UPSTREAM__SERVERS__"]
    assert _corefile.find(blocks, "forward")["block"] is None


def test_inline_comment_after_brace_is_kept():
    blocks = _corefile.parse(load("user-helm94-stub-zone.corefile"))
    assert blocks[1]["keys"] == ["example.org:53"] and blocks[1]["comments"] == ["adding a block here"]
    assert "#adding a block here\nexample.org:53 {" in _corefile.render(blocks)
    assert _corefile.find(blocks, "forward", zone="www.example.org")["args"] == [".", "10.150.0.1"]
    assert _corefile.find(blocks, "forward", zone="example.com")["args"] == [".", "172.16.0.1"]


SYNTAX = (
    "# managed by hand\r\n"
    "(common) {\r\n"
    "\terrors\r\n"
    "}\r\n"
    "example.org:53,  tls://secure.example.org:853,\r\n"
    "  grpc://g.example.org {   # three keys\r\n"
    "  import common\r\n"
    "  template IN A example.org {\r\n"
    "      answer \"{{ .Name }} 60 IN A 10.0.0.1\"\r\n"
    "      authority \"say \\\"hi\\\"\" # escaped quotes\r\n"
    "  }\r\n"
    "  forward . {$UPSTREAM} {$FALLBACK:9.9.9.9} {\r\n"
    "    policy sequential\r\n"
    "    # more later\r\n"
    "  }\r\n"
    "  health { lameduck 5s }\r\n"
    "  # before the end\r\n"
    "}\r\n"
    "# the end\r\n"
)


def test_syntax_corner_cases_and_comments_round_trip():
    blocks = _corefile.parse(SYNTAX)
    snippet, server = blocks
    assert (snippet["kind"], snippet["snippet"], names(snippet["plugins"])) == ("snippet", "common", ["errors"])
    assert server["keys"] == ["example.org:53", "tls://secure.example.org:853", "grpc://g.example.org"]
    assert server["zones"] == [{"zone": "example.org", "port": 53, "scheme": None}, {"zone": "secure.example.org", "port": 853, "scheme": "tls"},
                               {"zone": "g.example.org", "port": None, "scheme": "grpc"}]
    template = _corefile.find(blocks, "template", "example.org")
    assert [(e["name"], e["args"]) for e in template["block"]] == [("answer", ["{{ .Name }} 60 IN A 10.0.0.1"]),
                                                                   ("authority", ['say "hi"'])]
    assert template["block"][1]["comments"] == [" escaped quotes"]
    forward = _corefile.find(blocks, "forward", "example.org")
    assert forward["args"] == [".", "{$UPSTREAM}", "{$FALLBACK:9.9.9.9}"] and forward["end_comments"] == [" more later"]
    assert _corefile.option(_corefile.find(blocks, "health", "example.org"), "lameduck") == ["5s"]
    assert (snippet["comments"], server["comments"], server["end_comments"], server["trailing_comments"]) == (
        [" managed by hand"], [" three keys"], [" before the end"], [" the end"])
    text = _corefile.render(blocks)
    assert "\r" not in text and "\t" not in text
    for comment in ("# managed by hand", "# three keys", "# escaped quotes", "# more later", "# before the end", "# the end"):
        assert comment in text
    assert 'authority "say \\"hi\\""' in text
    assert _corefile.strip_lines(_corefile.parse(text)) == _corefile.strip_lines(blocks)


def test_edit_then_render():
    blocks = _corefile.parse(load("kubeadm-k8s119-configmap.yaml"))
    blocks[0]["plugins"].insert(0, {"name": "log", "args": []})
    blocks.append({"keys": ["consul.local:53"], "plugins": [{"name": "forward", "args": [".", "10.150.0.1"]}]})
    text = _corefile.render(blocks)
    assert text.startswith(".:53 {\n    log\n    errors\n")
    assert text.endswith("\n\nconsul.local:53 {\n    forward . 10.150.0.1\n}\n")
    assert _corefile.find(_corefile.parse(text), "forward", "consul.local")["args"] == [".", "10.150.0.1"]


@pytest.mark.parametrize("text, lineno, message, expected", [
    (".:53 {\n    errors\n    forward . 8.8.8.8 {\n        max_concurrent 1000\n    }\n", 1, "never closed", "a matching '}'"),
    (".:53 {\n    errors\n}\n}\n", 4, "'}' without a matching '{'", "one '}' fewer"),
    ("{\n    errors\n}\n", 1, "a block with no keys", "the zones it serves"),
    (".:53 {\n    template IN A x {\n        answer \"x 60 IN A 1.2.3.4\n    }\n}\n", 3, "unterminated quoted argument", "a closing \""),
    (".:53\n    errors\n", 1, "keys without a block", "'{' at the end of the line"),
    (".:53 {\n    {\n    }\n}\n", 2, "no directive name", "a directive before '{'"),
    ("example.org, {\n}\n", 1, "end with a comma", "another key"),
])
def test_bad_input_names_the_line(text, lineno, message, expected):
    with pytest.raises(ParseError) as info:
        _corefile.parse(text, source="coredns/Corefile")
    error = info.value
    assert (error.lineno, error.source) == (lineno, "coredns/Corefile")
    assert error.line == text.split("\n")[lineno - 1]
    assert message in str(error) and expected in error.expected


def test_real_truncated_paste_reports_the_open_block():
    with pytest.raises(ParseError) as info:
        _corefile.parse(load("bad-deployment215-truncated.corefile"))
    assert info.value.lineno == 9 and info.value.line.strip() == "kubernetes cluster.local in-addr.arpa ip6.arpa {"


def test_real_pasted_data_key_inside_the_corefile():
    with pytest.raises(ParseError) as info:
        _corefile.parse(load("bad-coredns4918-pasted-hosts.yaml"), source="coredns.yaml")
    # the line of the YAML file, not of the Corefile
    assert (info.value.lineno, info.value.line.strip()) == (24, "customdomains.db: |")
    assert str(info.value).startswith("coredns.yaml data.Corefile line 24: server block keys without a block")


def test_configmap_without_corefile_and_folded_scalar():
    with pytest.raises(ParseError, match="ConfigMap without a Corefile key"):
        _corefile.parse("apiVersion: v1\nkind: ConfigMap\ndata:\n  NodeHosts: |\n    1.2.3.4 a\n")
    with pytest.raises(ParseError, match="folded YAML scalar") as info:
        _corefile.parse("apiVersion: v1\nkind: ConfigMap\ndata:\n  Corefile: >\n    .:53 {\n    }\n")
    assert info.value.lineno == 4


def test_json_configmap():
    text = '{"apiVersion": "v1", "kind": "ConfigMap", "data": {"Corefile": ".:53 {\\n    errors\\n}\\n"}}'
    assert names(_corefile.parse(text)[0]["plugins"]) == ["errors"]


def test_parse_key_forms():
    assert _corefile.parse_key(":53") == {"zone": ".", "port": 53, "scheme": None}
    assert _corefile.parse_key("dns://cluster.local.:1053") == {"zone": "cluster.local", "port": 1053, "scheme": "dns"}
    assert _corefile.parse_key("{$DNS_DOMAIN}:53") == {"zone": "{$DNS_DOMAIN}", "port": 53, "scheme": None}
    assert _corefile.parse_key("{$ZONE:example.org}") == {"zone": "{$ZONE:example.org}", "port": None, "scheme": None}
    assert _corefile.parse_key("10.0.0.0/8") == {"zone": "10.0.0.0/8", "port": None, "scheme": None}
