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


def test_release_from_proc_version():
    text = (FIXTURES / "proc-version-build-machine.txt").read_text()
    assert _kernel.release_from_proc_version(text) == "6.18.44-fc-v1045"
    with pytest.raises(ParseError):
        _kernel.release_from_proc_version("garbage")


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


def test_snmp_mismatched_lines_are_reported():
    with pytest.raises(ParseError) as err:
        _kernel.parse_snmp("Udp: InDatagrams NoPorts\nUdp: 1\n", source="proc/net/snmp")
    assert err.value.lineno == 2 and "1 values for the 2 names of line 1" in str(err.value)
    with pytest.raises(ParseError):
        _kernel.parse_snmp("junk\n")
