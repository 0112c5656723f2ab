# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""corefile_parse / corefile_render called directly and in a real ansible-playbook run, as a playbook uses them."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.filter.corefile import FilterModule
from ansible_collections.clusterdns.doctor.plugins.module_utils import _corefile

FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures" / "corefile"
FILTERS = FilterModule().filters()


def _collections_root():
    for parent in pathlib.Path(_corefile.__file__).parents:
        if parent.name == "ansible_collections":
            return parent.parent
    return pathlib.Path.cwd()


def run_play(tmp_path, tasks, **variables):
    """Run ``tasks`` in a real ansible-playbook on localhost; returns (rc, stdout)."""
    play = [{"hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    environ = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections_root()), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "home"))
    playbook = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([playbook, "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml")], env=environ,
                          capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_filters_are_exported():
    assert set(FILTERS) == {"corefile_parse", "corefile_render"}


def test_parse_and_render_in_a_playbook(tmp_path):
    text = (FIXTURES / "kubeadm-k8s119-configmap.yaml").read_text()
    bad = (FIXTURES / "bad-deployment215-truncated.corefile").read_text()
    tasks = [
        {"name": "upstreams", "ansible.builtin.assert": {"that": [
            "(cm | clusterdns.doctor.corefile_parse)[0].plugins | selectattr('name', 'eq', 'forward') | map(attribute='args') | first"
            " == ['.', '/etc/resolv.conf']"]}},
        {"name": "render", "ansible.builtin.assert": {"that": [
            "(cm | clusterdns.doctor.corefile_parse | clusterdns.doctor.corefile_render).startswith('.:53 {\\n    errors\\n    health {')",
            "'max_concurrent 1000' in (cm | clusterdns.doctor.corefile_parse | clusterdns.doctor.corefile_render)"]}},
        {"name": "bad", "ansible.builtin.debug": {"msg": "{{ bad | clusterdns.doctor.corefile_parse('my-corefile') }}"}},
    ]
    rc, output = run_play(tmp_path, tasks, cm=text, bad=bad)
    assert "ok=2" in output and "failed=1" in output and rc != 0, output
    assert "my-corefile line 9: block opened here is never closed" in output
    assert "expected a matching '}'" in output


def test_parse_error_names_source_and_line():
    bad = (FIXTURES / "bad-deployment215-truncated.corefile").read_text()
    with pytest.raises(AnsibleFilterError, match=r"corefile_parse: Corefile line 9: block opened here is never closed"):
        FILTERS["corefile_parse"](bad)


def test_wrong_input_types():
    with pytest.raises(AnsibleFilterError, match="expects the Corefile text"):
        FILTERS["corefile_parse"]({"Corefile": ".:53 {}"})
    with pytest.raises(AnsibleFilterError, match="expects the list of server blocks"):
        FILTERS["corefile_render"](".:53 {\n}\n")
    with pytest.raises(AnsibleFilterError, match="not a corefile_parse result"):
        FILTERS["corefile_render"]([{"plugins": [{"args": []}]}])
