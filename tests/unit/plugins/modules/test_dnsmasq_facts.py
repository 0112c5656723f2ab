# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""dnsmasq_facts as a process on bundle directories made of real captures (fixtures/dnsmasq)."""

from __future__ import annotations

import pathlib
import shutil

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.dnsmasq_facts"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures" / "dnsmasq"
CONF = "/tmp/cdbed-bqije4jo/dnsmasq.conf"


def run_module(tmp_path, args):
    return run_collection_module(MODULE, tmp_path, args)[:2]


def make_bundle(tmp_path, conf_text=None):
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    for name, fixture in (("dnsmasq-cmdline", "local-netns-dnsmasq-cmdline-except-cilium.txt"), ("ip-addr", "local-netns-ip-addr-cilium.json"),
                          ("ss-lnup", "local-netns-ss-lnup-except-cilium.txt"), ("ss-lntp", "local-netns-ss-lntp-except-cilium.txt")):
        shutil.copy(FIXTURES / fixture, root / "commands" / (name + ".txt"))
    target = root / CONF.lstrip("/")
    target.parent.mkdir(parents=True)
    if conf_text is None:
        shutil.copy(FIXTURES / "local-netns-except-cilium.conf", target)
    else:
        target.write_text(conf_text)
    return root


def test_bundle_of_the_broken_node(tmp_path):
    rc, result = run_module(tmp_path, {"root": str(make_bundle(tmp_path))})
    assert rc == 0 and result["changed"] is False
    facts = result["ansible_facts"]["clusterdns_dnsmasq"]
    assert facts["available"] is True and facts["reason"] is None
    (instance,) = facts["instances"]
    assert instance["pid"] == 15967 and instance["cmdline"][0] == "/usr/sbin/dnsmasq"
    assert instance["config"]["files"] == [CONF]
    assert instance["ignored_pod_interfaces"] == ["cilium_host"]
    assert sorted((s["protocol"], s["address"]) for s in instance["sockets"]) == [
        ("tcp", "127.0.0.1"), ("tcp", "169.254.25.10"), ("tcp", "::1"), ("udp", "127.0.0.1"), ("udp", "169.254.25.10"), ("udp", "::1")]
    cilium = next(i for i in instance["interfaces"] if i["name"] == "cilium_host")
    assert cilium["because"] == CONF + ":2: except-interface=cilium_*"


def test_pattern_options(tmp_path):
    rc, result = run_module(tmp_path, {"root": str(make_bundle(tmp_path)), "pod_interface_patterns": ["eth*"], "extra": ["lo"]})
    facts = result["ansible_facts"]["clusterdns_dnsmasq"]
    assert rc == 0 and facts["pod_interface_patterns"] == ["eth*", "lo"]
    assert facts["instances"][0]["ignored_pod_interfaces"] == []
    assert [i["name"] for i in facts["instances"][0]["interfaces"] if i["pod_facing"]] == ["lo"]


def test_invalid_config_fails_with_file_and_line(tmp_path):
    rc, result = run_module(tmp_path, {"root": str(make_bundle(tmp_path, "bind-dynamic\nexcept-interfaces=cilium_*\n"))})
    assert rc != 0 and result["failed"] is True
    assert result["lineno"] == 2 and result["source"].endswith(CONF)
    assert "except-interfaces" in result["msg"] and "dnsmasq --help" in result["msg"]


def test_no_dnsmasq_in_bundle(tmp_path):
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    (root / "commands" / "dnsmasq-cmdline.txt").write_text("")
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_dnsmasq"]
    assert rc == 0 and facts["available"] is False and facts["reason"] == "commands/dnsmasq-cmdline.txt lists no dnsmasq process"


def test_live_node_without_dnsmasq_in_a_fresh_namespace_is_a_fact(tmp_path):
    """Live mode on this machine: only dnsmasq processes of the module's own network namespace count."""
    rc, result = run_module(tmp_path, {})
    facts = result["ansible_facts"]["clusterdns_dnsmasq"]
    assert rc == 0
    if not facts["available"]:
        assert facts["reason"] == "no dnsmasq process in this network namespace"
    else:  # a dnsmasq runs in the root namespace of this machine
        assert all(isinstance(i["pid"], int) for i in facts["instances"])
