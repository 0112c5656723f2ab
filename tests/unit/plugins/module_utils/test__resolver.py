# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""resolv.conf, kubelet configuration, flags, stub and libc parsers on real files from public
GitHub issues and this machine (fixtures/resolver/SOURCES.md), and their bad-input errors."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _resolver
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "resolver"


def load(name):
    return (FIXTURES / name).read_text()


def resolv(name):
    return _resolver.parse_resolv_conf(load(name), name)


# resolv.conf -------------------------------------------------------------------------------

@pytest.mark.parametrize("name, nameservers, search, options", [
    ("github-ubuntu-stub-resolv.conf", ["127.0.0.53"], ["."], {"edns0": True, "trust-ad": True}),
    ("github-ubuntu-upstream-resolv.conf", ["8.8.8.8", "8.8.4.4"], ["."], {}),
    ("github-aks-node-resolv.conf", ["168.63.129.16"], ["qibf5jn4e15enib2o0kmnxxmhd.gvxx.internal.cloudapp.net"], {}),
    ("github-kubelet-pod-resolv.conf", ["10.96.0.10"], ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"], {"ndots": 5}),
    ("github-eksctl-550-pod-dnsconfig.conf", ["169.254.20.10"],
     ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "ap-northeast-1.compute.internal", "us-west-2.compute.internal"],
     {"attempts": 3, "timeout": 1, "rotate": True}),
    ("github-k8s-33881-networkmanager.conf", ["213.186.33.99"], ["local", "localdomain"], {}),
])
def test_real_files_without_problems(name, nameservers, search, options):
    parsed = resolv(name)
    assert (parsed["nameservers"], parsed["search"], parsed["options"], parsed["problems"]) == (nameservers, search, options, [])


def test_this_machine():
    parsed = resolv("local-debian12-resolv.conf")
    assert parsed["nameservers"] == ["10.255.255.53"] and parsed["problems"] == []


def test_fourth_nameserver_is_ignored_with_its_line():
    parsed = resolv("github-rke2-upstream-too-many.conf")
    assert parsed["nameservers"] == ["146.141.8.16", "146.141.15.210", "8.8.8.8"]
    assert parsed["ignored_nameservers"] == ["8.8.4.4"]
    (problem,) = parsed["problems"]
    assert (problem["kind"], problem["lineno"], problem["line"]) == ("nameserver_limit", 21, "nameserver 8.8.4.4")
    assert "8.8.4.4 is ignored" in problem["message"]


def test_ipv6_nameservers_count_towards_the_limit():
    parsed = resolv("github-script-four-nameservers.conf")
    assert parsed["nameservers"] == ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"]
    assert [p["lineno"] for p in parsed["problems"]] == [4]


def test_placeholder_addresses_and_trailing_comments():
    parsed = resolv("github-coredns-1712-inline-comments.conf")
    # '127.0.0.1     # local' is valid (glibc stops at the blank); xx.xx.xx.xx is not an address.
    assert parsed["nameservers"] == ["127.0.0.1"]
    assert [(p["kind"], p["lineno"]) for p in parsed["problems"]] == [("invalid_nameserver", 2), ("invalid_nameserver", 3)]
    assert parsed["options"] == {"timeout": 1}


def test_glibc_rules_last_search_wins_options_accumulate_and_caps():
    text = ("search a.example b.example\n"
            "domain c.example\n"
            "options ndots:20 timeout:2\n"
            "options attempts:3 single-request-reopen\n"
            "nameserver fe80::1%eth0\n")
    parsed = _resolver.parse_resolv_conf(text, "t")
    assert parsed["search"] == ["c.example"]
    assert parsed["options"] == {"ndots": 15, "timeout": 2, "attempts": 3, "single-request-reopen": True}
    assert parsed["nameservers"] == ["fe80::1%eth0"]
    assert [(p["kind"], p["lineno"]) for p in parsed["problems"]] == [("invalid_option", 3)]


def test_junk_lines_are_reported_with_line_numbers():
    text = ("nameserver 192.0.2.1\n"
            "  nameserver 192.0.2.2\n"
            "nameservr 192.0.2.3\n"
            "nameserver\n"
            "options timeout:abc foo\n"
            "nameserver 192.0.2.4 192.0.2.5\n")
    parsed = _resolver.parse_resolv_conf(text, "t")
    assert parsed["nameservers"] == ["192.0.2.1", "192.0.2.4"]
    assert [(p["lineno"], p["kind"]) for p in parsed["problems"]] == [
        (2, "junk"), (3, "unknown_keyword"), (4, "invalid_nameserver"), (5, "invalid_option"), (5, "unknown_option"), (6, "junk")]


def test_search_limits():
    seven = "search " + " ".join("d%d.example" % i for i in range(7)) + "\n"
    (problem,) = _resolver.parse_resolv_conf(seven, "t")["problems"]
    assert problem["kind"] == "search_limit" and "glibc before 2.26 and kubelet before 1.28" in problem["message"]
    many = "search " + " ".join("d%d.example" % i for i in range(33)) + "\n"
    (problem,) = _resolver.parse_resolv_conf(many, "t")["problems"]
    assert "over kubelet's limit of 32 / 2048" in problem["message"]
    assert _resolver.parse_resolv_conf("search " + " ".join("d%d.example" % i for i in range(6)), "t")["problems"] == []


def test_not_text_is_refused():
    with pytest.raises(ParseError, match="resolv.conf content must be text"):
        _resolver.parse_resolv_conf(b"nameserver 192.0.2.1", "/etc/resolv.conf")


def test_effective_options_fill_glibc_defaults():
    assert _resolver.effective_options({"timeout": 1}) == {"ndots": 1, "timeout": 1, "attempts": 2}


@pytest.mark.parametrize("address, loopback", [("127.0.0.53", True), ("127.0.1.1", True), ("::1", True), ("10.96.0.10", False),
                                               ("169.254.20.10", False), ("garbage", False)])
def test_is_loopback(address, loopback):
    assert _resolver.is_loopback(address) is loopback


# kubelet ----------------------------------------------------------------------------------

def test_kubeadm_config_without_resolv_conf():
    assert _resolver.parse_kubelet_config(load("github-kubeadm-1.32-config.yaml"), "config.yaml") == {
        "cluster_dns": ["10.96.0.10"], "cluster_domain": "cluster.local", "resolv_conf": None, "kind": "KubeletConfiguration"}


def test_kubeadm_config_with_systemd_resolved_upstream():
    parsed = _resolver.parse_kubelet_config(load("github-kubeadm-resolvconf-config.yaml"), "config.yaml")
    assert parsed["resolv_conf"] == "/run/systemd/resolve/resolv.conf"
    assert parsed["cluster_dns"] == ["10.96.0.10"]


def test_eks_ami_json_config_without_cluster_dns():
    # The AMI's template: bootstrap.sh adds clusterDNS at boot; until then kubelet's defaults apply.
    assert _resolver.parse_kubelet_config(load("github-eks-ami-kubelet-config.json"), "kubelet-config.json") == {
        "cluster_dns": None, "cluster_domain": "cluster.local", "resolv_conf": None, "kind": "KubeletConfiguration"}


def test_flow_list_quotes_json_and_empty_resolv_conf():
    text = '---\nkind: KubeletConfiguration\nclusterDNS: ["169.254.25.10", 10.233.0.3]  # nodelocal first\nresolvConf: ""\n'
    assert _resolver.parse_kubelet_config(text, "c") == {
        "cluster_dns": ["169.254.25.10", "10.233.0.3"], "cluster_domain": None, "resolv_conf": "", "kind": "KubeletConfiguration"}
    as_json = '{"kind": "KubeletConfiguration", "clusterDNS": ["10.100.0.10"], "clusterDomain": "cluster.local"}'
    assert _resolver.parse_kubelet_config(as_json, "c")["cluster_dns"] == ["10.100.0.10"]


@pytest.mark.parametrize("text, lineno, fragment", [
    ("kind: KubeletConfiguration\nclusterDNS\n- 10.96.0.10\n", 2, "not a 'key: value' line"),
    ("clusterDNS:\n\t- 10.96.0.10\n", 2, "tab in indentation"),
    ("clusterDNS: [10.96.0.10\n", 1, "flow sequence not closed"),
    ("clusterDomain: \"cluster.local\n", 1, "unterminated quoted string"),
    ("clusterDNS: 10.96.0.10\n", 1, "clusterDNS must be a list"),
    ("kind: KubeletConfiguration\n---\nkind: KubeletConfiguration\n", 2, "a second YAML document"),
    ('{"clusterDNS": [\n', 2, "invalid JSON"),
])
def test_bad_kubelet_config_names_file_and_line(text, lineno, fragment):
    with pytest.raises(ParseError) as info:
        _resolver.parse_kubelet_config(text, "/var/lib/kubelet/config.yaml")
    assert info.value.lineno == lineno and fragment in str(info.value)
    assert str(info.value).startswith("/var/lib/kubelet/config.yaml line %d: " % lineno)


def test_flags_files():
    assert _resolver.parse_flags_file(load("github-kubeadm-2742-flags.env")) == {}
    assert _resolver.parse_flags_file(load("github-k8s-122632-flags.env")) == {}
    assert _resolver.parse_flags_file(load("github-k8s-33881-10-kubeadm.conf"), "10-kubeadm.conf") == {
        "cluster_dns": ["10.96.0.10"], "cluster_domain": "cluster.local"}
    extra = 'KUBELET_EXTRA_ARGS="--resolv-conf=/run/systemd/resolve/resolv.conf --cluster-dns=169.254.20.10,10.96.0.10"\n'
    assert _resolver.parse_flags_file(extra, "/etc/default/kubelet") == {
        "resolv_conf": "/run/systemd/resolve/resolv.conf", "cluster_dns": ["169.254.20.10", "10.96.0.10"]}


def test_flags_file_with_unbalanced_quote():
    with pytest.raises(ParseError, match=r"/etc/default/kubelet line 2: unbalanced quotes"):
        _resolver.parse_flags_file('# kubelet\nKUBELET_EXTRA_ARGS="--resolv-conf=/x\n', "/etc/default/kubelet")


def test_command_lines_with_equals_and_separate_values():
    argv = _resolver.split_cmdline(load("github-k8s-42542-kubelet-cmdline.txt").strip())
    assert _resolver.is_kubelet(argv)
    assert _resolver.parse_kubelet_args(argv[1:]) == {"resolv_conf": "/etc/kube-resolv.conf"}
    argv = _resolver.split_cmdline(load("github-coredns-2264-kubelet-cmdline.txt").strip())
    assert _resolver.parse_kubelet_args(argv[1:]) == {"resolv_conf": "/run/systemd/resolve/resolv.conf"}
    nul = "/usr/bin/kubelet\0--config=/var/lib/kubelet/config.yaml\0--cluster-dns\00010.96.0.10\0"
    assert _resolver.parse_kubelet_args(_resolver.split_cmdline(nul)[1:]) == {"config": "/var/lib/kubelet/config.yaml", "cluster_dns": ["10.96.0.10"]}
    assert not _resolver.is_kubelet(["/usr/bin/kubelet-wrapper"])


def test_flags_win_over_the_config_file():
    config = _resolver.parse_kubelet_config(load("github-kubeadm-1.32-config.yaml"), "c")
    settings = _resolver.kubelet_settings(config, [("cmdline", {"resolv_conf": "/etc/kube-resolv.conf"})], config_source="/var/lib/kubelet/config.yaml")
    assert (settings["resolv_conf"], settings["cluster_dns"]) == ("/etc/kube-resolv.conf", ["10.96.0.10"])
    assert settings["sources"] == {"cluster_dns": "/var/lib/kubelet/config.yaml", "cluster_domain": "/var/lib/kubelet/config.yaml", "resolv_conf": "cmdline"}
    assert _resolver.kubelet_settings()["resolv_conf"] == "/etc/resolv.conf"


# stub and libc ------------------------------------------------------------------------------

def test_stub_kinds():
    assert _resolver.stub_kind("/run/systemd/resolve/stub-resolv.conf", ["127.0.0.53"]) == "systemd-resolved"
    assert _resolver.stub_kind("/etc/resolv.conf", ["127.0.0.53"]) == "systemd-resolved"
    assert _resolver.stub_kind("/etc/resolv.conf", ["127.0.1.1"]) == "dnsmasq"
    assert _resolver.stub_kind("/etc/resolv.conf", ["127.0.0.1"], dnsmasq_configured=True) == "dnsmasq"
    assert _resolver.stub_kind("/etc/resolv.conf", ["127.0.0.1"]) == "other"
    assert _resolver.stub_kind("/etc/resolv.conf", ["10.255.255.53"]) is None


@pytest.mark.parametrize("name, libc, version", [
    ("local-debian12-ldd-version.txt", "glibc", "2.36"),
    ("github-alpine-pkg-glibc-46-glibc-compat-ldd-version.txt", "glibc", "2.25"),
    ("github-alpine-pkg-glibc-46-musl-ldd-version.txt", "musl", "1.1.15"),
    ("github-appsignal-369-musl-ldd.txt", "musl", "1.1.22"),
    ("github-appsignal-369-musl-ldd-version-cannot-load.txt", "musl", None),
])
def test_libc_of_real_ldd_outputs(name, libc, version):
    assert _resolver.parse_ldd_version(load(name)) == {"name": libc, "version": version}


def test_libc():
    assert _resolver.parse_ldd_version("") == {"name": None, "version": None}
    assert _resolver.parse_ldd_version("ldd: missing file arguments\n") == {"name": None, "version": None}
    assert _resolver.musl_loader(["libc.so.6", "ld-musl-x86_64.so.1"]) == "ld-musl-x86_64.so.1"
    assert _resolver.musl_loader(["ld-linux-x86-64.so.2"]) is None
