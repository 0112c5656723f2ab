# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What support_bundle collects follows what the facts modules read."""

from __future__ import annotations

import pathlib

from ansible_collections.clusterdns.doctor.plugins.module_utils import _bundle

DOCS = pathlib.Path(__file__).parents[4] / "docs" / "bundle.md"


def test_dnsmasq_config_paths_from_real_command_lines():
    # NetworkManager's dnsmasq (gnome-network-displays#62 layout) and kubespray-style long options
    argv = ["/usr/sbin/dnsmasq", "--no-resolv", "--conf-dir=/etc/NetworkManager/dnsmasq.d", "-C", "/etc/dnsmasq.conf",
            "--conf-dir=/etc/dnsmasq.d,*.conf", "--interface=lo"]
    assert _bundle.dnsmasq_config_paths(argv) == ["/etc/NetworkManager/dnsmasq.d", "/etc/dnsmasq.conf", "/etc/dnsmasq.d"]
    assert _bundle.dnsmasq_config_paths(["dnsmasq", "-k"]) == []


def test_dnsmasq_include_paths_follow_the_configuration_files():
    files = {"/etc/dnsmasq.conf": "conf-dir=/srv/cni-dns,*.conf\nconf-file=/srv/extra.conf\n",
             "/srv/extra.conf": "conf-dir=/srv/more\n", "/srv/cni-dns/10-cni.conf": "except-interface=cilium_*\n"}
    dirs = {"/srv/cni-dns": ["10-cni.conf"], "/srv/more": []}

    def reader(path):
        return (files[path], None) if path in files else (None, "No such file or directory")

    def lister(path):
        return (dirs[path], None) if path in dirs else (None, "No such file or directory")

    assert _bundle.dnsmasq_include_paths(["dnsmasq", "-k"], reader, lister) == (["/srv/cni-dns", "/srv/extra.conf", "/srv/more"], None)
    assert _bundle.dnsmasq_include_paths(["dnsmasq", "--conf-file=/srv/extra.conf"], reader, lister) == (["/srv/extra.conf", "/srv/more"], None)
    files["/srv/extra.conf"] = "no-such-option\n"
    paths, problem = _bundle.dnsmasq_include_paths(["dnsmasq", "--conf-file=/srv/extra.conf"], reader, lister)
    assert paths == ["/srv/extra.conf"] and "/srv/extra.conf" in problem and "no-such-option" in problem


def test_kubelet_resolv_conf():
    assert _bundle.kubelet_resolv_conf("kind: KubeletConfiguration\nresolvConf: /run/systemd/resolve/resolv.conf\n") == "/run/systemd/resolve/resolv.conf"
    assert _bundle.kubelet_resolv_conf("resolvConf: \"/etc/k8s-resolv.conf\"  # custom\n") == "/etc/k8s-resolv.conf"
    assert _bundle.kubelet_resolv_conf("clusterDNS:\n- 10.96.0.10\n") is None


def test_every_command_is_documented_in_bundle_md():
    text = DOCS.read_text()
    for command in _bundle.COMMANDS:
        assert "`%s`" % command["name"] in text, command["name"]
