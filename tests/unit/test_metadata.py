# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collection metadata stays consistent."""

from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).parents[2]


def test_report_version_matches_galaxy():
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    playbook_vars = yaml.safe_load((ROOT / "playbooks" / "vars" / "clusterdns.yml").read_text())
    assert playbook_vars["clusterdns_version"] == galaxy["version"]


def test_sanity_ignore_files_are_empty():
    for ignore in (ROOT / "tests" / "sanity").glob("ignore-*.txt"):
        assert ignore.read_text().strip() == "", ignore


def test_findings_doc_is_generated_from_the_catalog():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, str(ROOT / "tests" / "utils" / "gen_findings_doc.py"), "--check"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
