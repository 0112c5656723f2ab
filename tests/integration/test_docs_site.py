# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The docs site (tests/utils/build_docs_site.sh: antsibull-docs + Sphinx, warnings are errors) builds
without any network (``unshare -n``) and has a page for every module, filter, role and finding id."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess

import pytest
from conftest import COLLECTION


def _catalog():
    """The catalog, loaded by path (it imports nothing), so the test runs from the checkout too."""
    spec = importlib.util.spec_from_file_location("clusterdns_catalog", COLLECTION / "plugins" / "module_utils" / "_catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CATALOG


CATALOG = _catalog()
SCRIPT = COLLECTION / "tests" / "utils" / "build_docs_site.sh"
VENV = COLLECTION / ".venv" / "bin"

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="unshare -n needs root"),
    pytest.mark.skipif(not (VENV / "antsibull-docs").exists() or not (VENV / "sphinx-build").exists(),
                       reason="antsibull-docs and sphinx are installed by make setup"),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    dest = tmp_path_factory.mktemp("docsite") / "site"
    run = subprocess.run(["unshare", "-n", str(SCRIPT), str(dest)], capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return dest / "build" / "html"


def names(folder, suffix):
    return sorted(p.name[: -len(suffix)] for p in (COLLECTION / folder).glob("*" + suffix) if not p.name.startswith("_"))


def test_every_module_filter_and_role_has_a_page(site):
    modules = names("plugins/modules", ".py")
    filters = names("plugins/filter", ".yml")
    roles = sorted(p.name for p in (COLLECTION / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
    assert modules and filters
    missing = [name for name in ["%s_module" % m for m in modules] + ["%s_filter" % f for f in filters] + ["%s_role" % r for r in roles]
               if not (site / (name + ".html")).is_file()]
    assert missing == []
    # the module page is the module's DOCUMENTATION, not an empty stub
    assert "clusterdns_ipvs" in (site / "ipvs_facts_module.html").read_text()


def test_every_finding_id_has_its_page(site):
    index = (site / "findings" / "index.html").read_text()
    for finding_id, entry in CATALOG.items():
        page = site / "findings" / ("%s.html" % finding_id)
        assert page.is_file(), finding_id
        text = page.read_text()
        assert "Why it breaks DNS" in text and "References" in text
        assert re.search(r"%s\.html" % finding_id, index), finding_id
        for tag in entry["fix"]["tags"]:
            assert "--tags %s" % ",".join(entry["fix"]["tags"]) in text, (finding_id, tag)
    assert "findings/index.html" in (site / "index.html").read_text()


def test_the_site_loads_nothing_from_the_network(site):
    for page in site.rglob("*.html"):
        assert not re.search(r"""<(?:script|link|img)[^>]+(?:src|href)=["']https?://""", page.read_text()), page
