# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Headless Chromium (Debian package ``chromium``) for the report.html tests: render a page with
no network at all (``unshare -n``, its own empty network namespace) and say what it logged and
which URLs it requested. Used by tests/integration/test_report_html.py and
tests/lab/test_report_html_lab.py."""

from __future__ import annotations

import pathlib
import re
import shutil
import struct
import subprocess

CHROMIUM = shutil.which("chromium")
UNSHARE = shutil.which("unshare")

# Requests Chromium itself makes on start (component updater, network time); a report page makes none.
BROWSER_HOSTS = re.compile(r"^https?://([a-z0-9-]+\.)*(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)(/|$)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions",
         "--disable-features=SpellcheckService,Translate,OptimizationHints,MediaRouter", "--enable-logging=stderr", "--v=0")
# <g class="hop ..." data-hop="KEY" data-state="STATE" data-severity="SEVERITY"> in the path diagram (plugins/module_utils/_html.py)
HOP = re.compile(r'<g class="hop[^"]*" data-hop="([a-z]+)" data-state="([a-z]+)" data-severity="([a-z]*)"')


def chromium(tmp_path, page, *args):
    """Run Chromium on ``page`` without any network; returns (stdout, stderr, the URLs it requested
    other than file:, data:, about: and the browser's own hosts)."""
    profile = tmp_path / ("profile-%d" % len(list(tmp_path.glob("profile-*"))))
    netlog = profile.with_suffix(".netlog.json")
    run = subprocess.run([UNSHARE, "-n", CHROMIUM, *FLAGS, "--user-data-dir=%s" % profile, "--log-net-log=%s" % netlog, *args,
                          page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    urls = set(re.findall(r'"url":"([^"]*)"', netlog.read_text())) if netlog.exists() else set()
    return run.stdout, run.stderr, {u for u in urls if not u.startswith(("file:", "data:", "about:")) and not BROWSER_HOSTS.match(u)}


def hops(dom):
    """The path diagram's hops in a rendered DOM: {hop: (state, worst severity or "")}."""
    return {key: (state, severity) for key, state, severity in HOP.findall(dom)}


def png_size(path):
    """(width, height) of a PNG file; fails when the file is not a PNG."""
    data = pathlib.Path(path).read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG: %s" % path
    return struct.unpack(">II", data[16:24])
