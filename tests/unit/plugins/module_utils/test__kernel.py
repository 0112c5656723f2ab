# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel release, SNMP counters and race-fix exposure (fixtures/kernel/SOURCES.md)."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _kernel
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "kernel"


@pytest.mark.parametrize("release, version", [
    ("6.18.44-fc-v1045", [6, 18, 44]),
    ("5.10.0-9-amd64", [5, 10, 0]),
    ("4.19.91-25.1.al7.x86_64", [4, 19, 91]),
    ("3.10.0-1160.el7.x86_64", [3, 10, 0]),
    ("6.1", [6, 1, 0]),
])
def test_parse_release(release, version):
    assert _kernel.parse_release(release) == version


def test_parse_release_rejects_junk():
    with pytest.raises(ParseError) as err:
        _kernel.parse_release("Linux", source="bundle/proc/sys/kernel/osrelease")
    assert "bundle/proc/sys/kernel/osrelease line 1" in str(err.value) and "uname -r" in err.value.expected


@pytest.mark.parametrize("name, release, version", [
    ("proc-version-build-machine.txt", "6.18.44-fc-v1045", [6, 18, 44]),
    ("proc-version-ubuntu-24.04-doca-24.txt", "6.8.0-50-generic", [6, 8, 0]),
    ("proc-version-rhcos-4.17-doca-24.txt", "5.14.0-427.47.1.el9_4.x86_64", [5, 14, 0]),
    ("proc-version-debian-10-sgfxi-43.txt", "4.19.0-9-amd64", [4, 19, 0]),
])
def test_release_from_proc_version(name, release, version):
    found = _kernel.release_from_proc_version((FIXTURES / name).read_text())
    assert found == release and _kernel.parse_release(found) == version


def test_release_from_proc_version_rejects_other_text():
    with pytest.raises(ParseError) as err:
        _kernel.release_from_proc_version("garbage", source="bundle/proc/version")
    assert "bundle/proc/version line 1" in str(err.value) and "Linux version" in err.value.expected


@pytest.mark.parametrize("version, unfixed", [
    ([3, 10, 0], ["nf-clash-same-tuple", "nf-nat-same-origin", "nf-clash-allow-insert", "ipvs-conn-reuse"]),
    ([4, 19, 91], ["nf-nat-same-origin", "nf-clash-allow-insert", "ipvs-conn-reuse"]),
    ([5, 4, 0], ["nf-clash-allow-insert", "ipvs-conn-reuse"]),
    ([5, 8, 18], ["ipvs-conn-reuse"]),
    ([5, 9, 0], []),
])
def test_exposure_boundaries(version, unfixed):
    assert [f["id"] for f in _kernel.exposure(version) if not f["fixed"]] == unfixed


def test_snmp_counters_of_a_namespace_with_receive_buffer_drops():
    udp = _kernel.parse_snmp((FIXTURES / "snmp-rcvbuf-netns.txt").read_text())["Udp"]
    assert udp["RcvbufErrors"] == 1991 and udp["InErrors"] == 1991 and udp["OutDatagrams"] == 2000
    assert _kernel.udp_drop_counters(udp) == {"InErrors": 1991, "RcvbufErrors": 1991, "MemErrors": 0, "InCsumErrors": 0}


def test_snmp_build_machine_and_snmp6():
    tables = _kernel.parse_snmp((FIXTURES / "snmp-build-machine.txt").read_text())
    assert {"Ip", "Tcp", "Udp", "UdpLite"} <= set(tables)
    udp6 = _kernel.parse_snmp6((FIXTURES / "snmp6-build-machine.txt").read_text())
    assert "InErrors" in udp6 and "RcvbufErrors" in udp6
    assert not any(name.startswith("Lite") for name in udp6)


@pytest.mark.parametrize("name, udp", [
    ("snmp-build-machine.txt", {"InDatagrams": 56, "InErrors": 0, "RcvbufErrors": 0, "MemErrors": 0}),
    ("snmp-rcvbuf-netns.txt", {"InDatagrams": 0, "InErrors": 1991, "RcvbufErrors": 1991, "MemErrors": 0}),
    # older kernels: seven UDP columns, no IgnoredMulti / MemErrors
    ("snmp-node-exporter-fixture.txt", {"InDatagrams": 88542, "InErrors": 0, "RcvbufErrors": 0, "MemErrors": None}),
])
def test_snmp_udp_counters_of_real_files(name, udp):
    tables = _kernel.parse_snmp((FIXTURES / name).read_text())
    assert {name: tables["Udp"].get(name) for name in udp} == udp
    assert "UdpLite" in tables and "Ip" in tables


@pytest.mark.parametrize("name, udp6", [
    ("snmp6-build-machine.txt", {"InErrors": 0, "RcvbufErrors": 0}),
    ("snmp6-rcvbuf-netns.txt", {"InErrors": 1991, "RcvbufErrors": 1991, "OutDatagrams": 2000}),
    ("snmp6-node-exporter-fixture.txt", {"InErrors": 0, "RcvbufErrors": 9, "SndbufErrors": 8}),
])
def test_snmp6_udp_counters_of_real_files(name, udp6):
    parsed = _kernel.parse_snmp6((FIXTURES / name).read_text())
    assert {name: parsed.get(name) for name in udp6} == udp6
    assert not any(key.startswith(("Lite", "6")) for key in parsed)


def test_snmp_mismatched_lines_are_reported():
    with pytest.raises(ParseError) as err:
        _kernel.parse_snmp("Udp: InDatagrams NoPorts\nUdp: 1\n", source="proc/net/snmp")
    assert err.value.lineno == 2 and "1 values for the 2 names of line 1" in str(err.value)
    with pytest.raises(ParseError):
        _kernel.parse_snmp("junk\n")
