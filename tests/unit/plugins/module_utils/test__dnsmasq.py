# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_dnsmasq: command lines and configuration files (fixtures/dnsmasq/SOURCES.md), origins, conf-dir
suffix rules, interface wildcards and the verdict that tests/integration/test_seed003_incident.py
checks against the real dnsmasq."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _dnsmasq
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "dnsmasq"


def fixture(name):
    return (FIXTURES / name).read_text()


def files(tree):
    """reader / lister over a dict {path: text}; directories are the path prefixes."""

    def read(path):
        return (tree[path], None) if path in tree else (None, "not found: %s" % path)

    def listdir(path):
        prefix = path.rstrip("/") + "/"
        names = [p[len(prefix):] for p in tree if p.startswith(prefix) and "/" not in p[len(prefix):]]
        return (names, None) if names else (None, "not found: %s" % path)

    return read, listdir


def config(argv, tree=None):
    read, listdir = files(tree or {})
    return _dnsmasq.effective(_dnsmasq.load(argv, read, listdir))


def iface(name, *cidrs):
    addresses = []
    for cidr in cidrs:
        address, prefix = cidr.split("/")
        addresses.append({"address": address, "prefixlen": int(prefix), "family": "inet6" if ":" in address else "inet"})
    return {"name": name, "addresses": addresses}


def test_networkmanager_command_line():
    argv = fixture("github-gnome-network-displays-62-networkmanager-cmdline.txt").split()
    loaded = _dnsmasq.load(argv, *files({"/etc/NetworkManager/dnsmasq.d/x.conf": "server=/corp/10.0.0.1\n"}))
    cfg = _dnsmasq.effective(loaded)
    assert cfg["mode"] == {"value": "bind-interfaces", "origin": "command line"}
    assert cfg["listen_address"] == [{"value": "127.0.0.1", "origin": "command line"}]
    # --conf-file=/dev/null stops /etc/dnsmasq.conf from being read; the conf-dir is still read
    assert cfg["files"] == ["/dev/null", "/etc/NetworkManager/dnsmasq.d/x.conf"]
    assert ("server", "/corp/10.0.0.1", "/etc/NetworkManager/dnsmasq.d/x.conf:1") in [(e["option"], e["value"], e["origin"]) for e in cfg["options"]]


def test_short_options_and_separate_values():
    entries = _dnsmasq.parse_cmdline(["dnsmasq", "-kz", "-i", "eth0", "-Icali*", "--listen-address", "10.0.0.1", "--bind-dynamic",
                                      "-7", "/etc/dnsmasq.d,.dpkg-dist,.dpkg-old"])
    assert [(e["option"], e["value"]) for e in entries] == [
        ("keep-in-foreground", None), ("bind-interfaces", None), ("interface", "eth0"), ("except-interface", "cali*"),
        ("listen-address", "10.0.0.1"), ("bind-dynamic", None), ("conf-dir", "/etc/dnsmasq.d,.dpkg-dist,.dpkg-old")]


def test_default_conf_read_only_without_conf_file():
    tree = {"/etc/dnsmasq.conf": fixture("seed003-before.conf")}
    assert config(["dnsmasq"], tree)["except_interface"] == [{"value": "cilium_*", "origin": "/etc/dnsmasq.conf:1"}]
    assert config(["dnsmasq", "-C", "/etc/other.conf"], dict(tree, **{"/etc/other.conf": "\n"}))["except_interface"] == []


def test_origins_through_conf_file_and_conf_dir():
    tree = {
        "/etc/dnsmasq.conf": "# main\n\nconf-file=/etc/extra.conf\nconf-dir=/etc/dnsmasq.d/,*.conf\n",
        "/etc/extra.conf": fixture("github-pigsty-761-bind-interfaces.conf"),
        "/etc/dnsmasq.d/10-cni.conf": "   except-interface=cilium_*\n",
        "/etc/dnsmasq.d/10-cni.conf.bak": "except-interface=eth0\n",
    }
    cfg = config(["dnsmasq"], tree)
    assert cfg["files"] == ["/etc/dnsmasq.conf", "/etc/extra.conf", "/etc/dnsmasq.d/10-cni.conf"]
    assert cfg["listen_address"] == [{"value": "127.0.0.1", "origin": "/etc/extra.conf:1"}, {"value": "10.0.0.1", "origin": "/etc/extra.conf:1"}]
    assert cfg["mode"] == {"value": "bind-interfaces", "origin": "/etc/extra.conf:2"}
    assert cfg["except_interface"] == [{"value": "cilium_*", "origin": "/etc/dnsmasq.d/10-cni.conf:1"}]


@pytest.mark.parametrize(("value", "expected"), [
    ("/d", ["a.conf", "b.conf.bak", "z"]),
    ("/d,.bak", ["a.conf", "z"]),
    ("/d,*.conf", ["a.conf"]),
    ("/d,.dpkg-dist,.dpkg-old,.dpkg-new", ["a.conf", "b.conf.bak", "z"]),
])
def test_conf_dir_suffix_rules(value, expected):
    names = ["z", "a.conf", "b.conf.bak", ".hidden.conf", "edit.conf~", "#lock.conf#", "c.conf.dpkg-old"]
    directory, exclude, include = _dnsmasq.conf_dir_spec(value)
    chosen = _dnsmasq.conf_dir_files(names, exclude, include)
    assert directory == "/d"
    assert [n for n in chosen if n != "c.conf.dpkg-old"] == expected
    assert ("c.conf.dpkg-old" in chosen) == (value in ("/d", "/d,.bak"))


def test_missing_includes_are_problems_not_errors():
    cfg = config(["dnsmasq", "--conf-file=/etc/gone.conf", "--conf-dir=/etc/nodir"])
    assert [p["origin"] for p in cfg["problems"]] == ["command line", "command line"]
    assert "not found: /etc/gone.conf" in cfg["problems"][0]["message"]


def test_include_cycle_is_read_once():
    tree = {"/etc/a.conf": "conf-file=/etc/b.conf\n", "/etc/b.conf": "conf-file=/etc/a.conf\ninterface=eth0\n"}
    cfg = config(["dnsmasq", "-C", "/etc/a.conf"], tree)
    assert cfg["files"] == ["/etc/a.conf", "/etc/b.conf"] and cfg["interface"] == [{"value": "eth0", "origin": "/etc/b.conf:2"}]


def test_unknown_option_names_file_and_line():
    with pytest.raises(ParseError) as err:
        config(["dnsmasq"], {"/etc/dnsmasq.conf": "no-resolv\nexcept-interfaces=cilium_*\n"})
    assert (err.value.source, err.value.lineno, err.value.line) == ("/etc/dnsmasq.conf", 2, "except-interfaces=cilium_*")
    assert "/etc/dnsmasq.conf line 2" in str(err.value) and "dnsmasq --help" in str(err.value)


@pytest.mark.parametrize("argv", [["dnsmasq", "--no-such"], ["dnsmasq", "-i"], ["dnsmasq", "stray"], ["dnsmasq", "--interface"]])
def test_bad_command_lines(argv):
    with pytest.raises(ParseError):
        _dnsmasq.parse_cmdline(argv)


def test_leading_dashes_in_a_file_say_what_to_write():
    with pytest.raises(ParseError, match="expected bind-interfaces=VALUE without the leading --"):
        _dnsmasq.parse_conf("--bind-interfaces\n", "/etc/dnsmasq.conf")


def test_bad_port():
    with pytest.raises(ParseError, match="port"):
        config(["dnsmasq", "--port=dns"])


@pytest.mark.parametrize(("pattern", "name", "matches"), [
    ("cilium_*", "cilium_host", True), ("cilium_*", "cilium_net", True), ("cilium_*", "cilium", False),
    ("lxc*", "lxc12ab", True), ("eth0", "eth0", True), ("eth0", "eth01", False), ("*", "anything", True),
    ("cali*x", "cali123", True),  # dnsmasq stops comparing at the first "*"
])
def test_wildcards(pattern, name, matches):
    assert _dnsmasq.name_matches(pattern, name) is matches


def test_seed_config_ignores_cilium_host_and_serves_the_rest():
    cfg = config(["dnsmasq"], {"/etc/dnsmasq.conf": fixture("seed003-before.conf")})
    interfaces = [iface("lo", "127.0.0.1/8"), iface("bond0", "172.25.4.1/24"),
                  iface("cilium_host", "172.26.2.58/32"), iface("docker0", "172.17.0.1/16")]
    verdicts = {v["name"]: v for v in _dnsmasq.verdict(cfg, interfaces)}
    assert verdicts["cilium_host"] == {"name": "cilium_host", "addresses": ["172.26.2.58/32"], "pod_facing": True, "served": False,
                                       "because": "/etc/dnsmasq.conf:1: except-interface=cilium_*", "only_to": None}
    assert verdicts["bond0"]["served"] and not verdicts["bond0"]["pod_facing"]
    assert not verdicts["docker0"]["pod_facing"]
    after = config(["dnsmasq"], {"/etc/dnsmasq.conf": fixture("seed003-after.conf")})
    assert _dnsmasq.interface_verdict(after, iface("cilium_host", "172.26.2.58/32"))[0] is True
    assert _dnsmasq.interface_verdict(after, iface("lo", "127.0.0.1/8"))[1] == "/etc/dnsmasq.conf:1: except-interface=lo"


def test_except_beats_interface_and_lo_is_implied():
    cfg = config(["dnsmasq", "--interface=cali*", "--except-interface=cali0bad", "--interface=eth0"])
    assert _dnsmasq.interface_verdict(cfg, iface("cali0bad"))[:2] == (False, "command line: except-interface=cali0bad")
    assert _dnsmasq.interface_verdict(cfg, iface("cali1234"))[:2] == (True, "command line: interface=cali*")
    assert _dnsmasq.interface_verdict(cfg, iface("lo", "127.0.0.1/8"))[0] is True
    served, because, _only = _dnsmasq.interface_verdict(cfg, iface("cni0", "10.244.0.1/24"))
    assert not served and because == "command line: interface=cali* (cni0 is not included)"


def test_finix_generated_config_serves_only_eth0():
    cfg = config(["dnsmasq", "-C", "/etc/dnsmasq.conf"], {"/etc/dnsmasq.conf": fixture("github-finix-177-generated.conf")})
    assert cfg["port"] == {"value": 53, "origin": "/etc/dnsmasq.conf:8"}
    # bind-interfaces: queries to the bound addresses are answered whatever the ingress interface
    served, because, _only = _dnsmasq.interface_verdict(cfg, iface("cni0", "10.244.0.1/24"))
    assert served and because.startswith("/etc/dnsmasq.conf:1: bind-interfaces")
    wanted = [w["address"] for w in _dnsmasq.expected_sockets(cfg, [iface("eth0", "192.168.1.1/24"), iface("cni0", "10.244.0.1/24")])]
    assert wanted == ["192.168.1.1"]


def test_listen_address_admits_only_its_destinations_in_wildcard_mode():
    cfg = config(["dnsmasq", "--listen-address=169.254.25.10"])
    served, because, only_to = _dnsmasq.interface_verdict(cfg, iface("cilium_host", "10.0.0.1/32"))
    assert served and only_to == ["169.254.25.10"] and because.startswith("command line: listen-address=169.254.25.10")


def test_local_service_needs_a_connected_pod_subnet():
    cfg = config(["dnsmasq", "--local-service"])
    assert _dnsmasq.interface_verdict(cfg, iface("cni0", "10.244.0.1/24"))[0] is True
    served, because, _only = _dnsmasq.interface_verdict(cfg, iface("cilium_host", "10.0.0.1/32"))
    assert not served and "local-service" in because


def test_port_zero_disables_dns():
    cfg = config(["dnsmasq", "-p", "0"])
    assert _dnsmasq.interface_verdict(cfg, iface("cni0"))[0] is False
    assert _dnsmasq.expected_sockets(cfg, [iface("cni0", "10.244.0.1/24")]) == []


def test_pod_interface_patterns_overridable():
    assert _dnsmasq.is_pod_facing("cilium_host") and _dnsmasq.is_pod_facing("vxlan.calico") and not _dnsmasq.is_pod_facing("eth0")
    assert _dnsmasq.is_pod_facing("docker0", ["docker*"]) and not _dnsmasq.is_pod_facing("cni0", ["docker*"])


def test_ip_addr_json_and_sockets_from_the_test_bed():
    interfaces = _dnsmasq.parse_ip_addr(fixture("local-netns-ip-addr-cilium.json"))
    assert [i["name"] for i in interfaces] == ["lo", "cilium_host"]
    assert [(a["address"], a["prefixlen"]) for a in interfaces[0]["addresses"]][:2] == [("127.0.0.1", 8), ("169.254.25.10", 32)]
    cfg = config(["dnsmasq", "-C", "/c"], {"/c": fixture("local-netns-except-cilium.conf")})
    from ansible_collections.clusterdns.doctor.plugins.module_utils._iptables import parse_ss

    sockets = parse_ss(fixture("local-netns-ss-lnup-except-cilium.txt"), "udp", port=53)
    assert _dnsmasq.missing_sockets(cfg, interfaces, sockets) == []
    # the same sockets without the VIP's: the configuration asks for it (lo is not excluded)
    missing = _dnsmasq.missing_sockets(cfg, interfaces, [s for s in sockets if s["address"] != "169.254.25.10"])
    assert [(m["address"], m["origin"]) for m in missing] == [("169.254.25.10", "/c:1")]


@pytest.mark.parametrize("text", ["not json", "{}", "[{\"mtu\": 1}]"])
def test_ip_addr_bad_input(text):
    with pytest.raises(ParseError, match="ip -j addr"):
        _dnsmasq.parse_ip_addr(text, source="commands/ip-addr.txt")
