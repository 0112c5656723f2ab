# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""coredns_log_info as a process, on real log lines (module_utils/fixtures/corednslog/SOURCES.md)."""

from __future__ import annotations

import pathlib

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.coredns_log_info"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures" / "corednslog"


def run_module(tmp_path, args):
    return run_collection_module(MODULE, tmp_path, args)[:2]


def test_path(tmp_path):
    log = tmp_path / "coredns.log"
    log.write_text((FIXTURES / "coredns3775-servfail-timestamps.log").read_text() + (FIXTURES / "k8s86762-upstream-timeouts.log").read_text())
    rc, result = run_module(tmp_path, {"path": str(log), "instance": "i-0abc"})
    facts = result["coredns_log"]
    assert rc == 0 and result["changed"] is False and facts["source"] == str(log)
    assert [(t["domain"], t["rcode"], t["instances"]) for t in facts["tickets"]] == [
        ("lcr.acjus.jus.br.", "SERVFAIL", ["i-0abc"]), ("EXTERNALURL.", "SERVFAIL", ["i-0abc"])]


def test_lines_and_max_tickets(tmp_path):
    lines = (FIXTURES / "coredns2795-loop-detected.log").read_text().splitlines() + (FIXTURES / "k8s86762-upstream-timeouts.log").read_text().splitlines()
    rc, result = run_module(tmp_path, {"lines": lines, "max_tickets": 0})
    facts = result["coredns_log"]
    assert rc == 0 and facts["loop_detected"] and facts["loop"]["zone"] == "."
    assert facts["tickets"] == [] and facts["tickets_dropped"] == 7


def test_missing_file_fails_with_what_to_do(tmp_path):
    rc, result = run_module(tmp_path, {"path": str(tmp_path / "nope.log")})
    assert rc != 0 and result["failed"]
    assert "cannot read the CoreDNS log" in result["msg"] and "No such file" in result["msg"]


def test_path_and_lines_are_exclusive(tmp_path):
    rc, result = run_module(tmp_path, {"path": "/x", "lines": ["y"]})
    assert rc != 0 and "mutually exclusive" in result["msg"]
