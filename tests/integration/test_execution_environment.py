# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The execution environment definition: the collection builds, and `ansible-builder create` makes
the build context offline (inside an empty network namespace), with this collection, the Python
requirements and the system packages in it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import pytest
from conftest import ANSIBLE_BIN, COLLECTION

pytestmark = pytest.mark.skipif(not shutil.which("unshare") or os.geteuid() != 0, reason="needs root and unshare for an empty network namespace")


def test_ansible_builder_create_offline(tmp_path):
    (tmp_path / "meta").mkdir()
    for name in ("execution-environment.yml", "ee-requirements.yml"):
        shutil.copy(COLLECTION / "meta" / name, tmp_path / "meta" / name)
    for name in ("requirements.txt", "bindep.txt"):
        shutil.copy(COLLECTION / name, tmp_path / name)
    build = subprocess.run([str(ANSIBLE_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), str(COLLECTION)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    (archive,) = tmp_path.glob("clusterdns-doctor-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "plugins/modules/conntrack_facts.py" in names and "playbooks/diagnose.yml" in names
    assert not [n for n in names if n.startswith((".cache", ".venv", "tests/output", ".ruff_cache", ".pytest_cache"))]
    builder = str(COLLECTION / ".venv" / "bin" / "ansible-builder")
    if not os.path.exists(builder):
        builder = shutil.which("ansible-builder") or pytest.skip("ansible-builder is not installed")
    create = subprocess.run(["unshare", "-n", builder, "create", "-f", "meta/execution-environment.yml", "-c", "context"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert create.returncode == 0, create.stdout + create.stderr
    context = tmp_path / "context"
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile
    assert (context / "_build" / "collections" / archive.name).exists()
    assert "kubernetes==" in (context / "_build" / "requirements.txt").read_text()
    assert "conntrack" in (context / "_build" / "bindep.txt").read_text()
    assert "clusterdns-doctor-" in (context / "_build" / "requirements.yml").read_text()
