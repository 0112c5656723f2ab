# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The dnsmasq role's plan (_dnsmasq_fix.plan) on configurations loaded by the real parser."""

from __future__ import annotations

from ansible_collections.clusterdns.doctor.plugins.module_utils import _dnsmasq
from ansible_collections.clusterdns.doctor.plugins.module_utils._dnsmasq_fix import DROPIN_NAME, plan

IFACES = [
    {"name": "lo", "addresses": [{"address": "127.0.0.1", "prefixlen": 8, "family": "inet"}]},
    {"name": "bond0", "addresses": [{"address": "172.25.4.1", "prefixlen": 24, "family": "inet"}]},
    {"name": "cilium_host", "addresses": [{"address": "172.26.2.58", "prefixlen": 32, "family": "inet"}]},
    {"name": "cilium_net", "addresses": []},
    {"name": "cilium_vxlan", "addresses": []},
    {"name": "eth1", "addresses": [{"address": "8.8.4.4", "prefixlen": 24, "family": "inet"}]},
]


def instance(files, argv=("/usr/sbin/dnsmasq",)):
    def reader(path):
        return (files[path], None) if path in files else (None, "missing")

    def lister(path):
        names = [p[len(path.rstrip("/")) + 1:] for p in files if p.startswith(path.rstrip("/") + "/")]
        return (names, None) if names else (None, "missing")

    config = _dnsmasq.effective(_dnsmasq.load(list(argv), reader, lister))
    interfaces = _dnsmasq.verdict(config, IFACES)
    return {"pid": 1, "config": config, "interfaces": interfaces,
            "ignored_pod_interfaces": [i["name"] for i in interfaces if i["pod_facing"] and not i["served"]]}


def test_seed003_wildcard_is_narrowed_to_the_other_interfaces_it_matches():
    files = {"/etc/dnsmasq.conf": "listen-address=172.25.4.1\nexcept-interface=cilium_*,lo\n"}
    inst = instance(files)
    # listen-address only: cilium_host is excluded by the wildcard
    assert "cilium_host" in inst["ignored_pod_interfaces"]
    result = plan(inst, ["cilium_host"], files)
    assert result["refused"] == []
    new = result["files"]["/etc/dnsmasq.conf"]
    assert new.splitlines() == [
        "listen-address=172.25.4.1",
        "# clusterdns.doctor:dnsmasq (DMQ001) admitted cilium_host: except-interface=cilium_*,lo",
        "except-interface=cilium_net,cilium_vxlan,lo",
    ]
    # the planned file, loaded again, serves cilium_host and still excludes the rest
    again = instance({"/etc/dnsmasq.conf": new})
    served = {i["name"]: i["served"] for i in again["interfaces"]}
    assert served["cilium_host"] and not served["cilium_vxlan"] and not served["cilium_net"]
    assert plan(again, ["cilium_host"], {"/etc/dnsmasq.conf": new})["files"] == {}  # idempotent


def test_missing_interface_goes_to_a_drop_in_of_the_conf_dir_read():
    files = {"/etc/dnsmasq.conf": "interface=bond0\nbind-dynamic\nconf-dir=/etc/dnsmasq.d/,*.conf\n",
             "/etc/dnsmasq.d/00-base.conf": "no-resolv\n"}
    inst = instance(files)
    result = plan(inst, ["cilium_host"], files)
    assert result["files"] == {}  # the main file is left alone
    assert result["dropin"]["path"] == "/etc/dnsmasq.d/" + DROPIN_NAME
    assert result["dropin"]["text"].splitlines()[-1] == "interface=cilium_host"
    files2 = dict(files, **{result["dropin"]["path"]: result["dropin"]["text"]})
    again = instance(files2)
    assert "cilium_host" not in again["ignored_pod_interfaces"]
    assert plan(again, ["cilium_host"], files2)["dropin"] is None  # idempotent


def test_bind_interfaces_becomes_bind_dynamic_on_request():
    files = {"/etc/dnsmasq.conf": "interface=bond0\nbind-interfaces\n"}
    result = plan(instance(files), [], files, bind_dynamic=True, finding="DMQ002")
    assert result["files"]["/etc/dnsmasq.conf"].splitlines()[1:] == [
        "# clusterdns.doctor:dnsmasq (DMQ002): bind-interfaces", "bind-dynamic"]
    assert plan(instance(files), [], files)["files"] == {}


def test_missing_interface_without_conf_dir_is_added_next_to_the_last_interface_line():
    files = {"/etc/dnsmasq.conf": "interface=bond0\nno-resolv\n"}
    result = plan(instance(files), ["cilium_host"], files)
    assert result["files"]["/etc/dnsmasq.conf"].splitlines()[0:3] == [
        "interface=bond0", "# clusterdns.doctor:dnsmasq (DMQ001): pod-facing interfaces", "interface=cilium_host"]


def test_public_address_default_route_and_unknown_interfaces_are_refused():
    files = {"/etc/dnsmasq.conf": "interface=bond0\n"}
    inst = instance(files)
    result = plan(inst, ["eth1", "cilium_host", "eth7"], files, default_route_interfaces=["cilium_host"])
    assert result["files"] == {} and result["dropin"] is None and result["actions"] == []
    text = " | ".join(result["refused"])
    assert "eth1 carries the public address(es) 8.8.4.4/24" in text
    assert "cilium_host carries the default route" in text
    assert "interface eth7 does not exist" in text


def test_command_line_exclusion_cannot_be_edited_in_a_file():
    files = {"/etc/dnsmasq.conf": "no-resolv\n"}
    inst = instance(files, argv=("/usr/sbin/dnsmasq", "--except-interface=cilium_*"))
    result = plan(inst, ["cilium_host"], files)
    assert result["files"] == {}
    assert "comes from command line" in result["refused"][0]
