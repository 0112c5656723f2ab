# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one remediation role of this collection on localhost, the way remediate.yml imports it,
and read back the result fact it sets (clusterdns_remediate_result_<role>)."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import ANSIBLE_BIN, COLLECTION

ROLE_PLAY = """---
- name: Run the {role} role alone
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Import the role
      ansible.builtin.import_role:
        name: clusterdns.doctor.{role}
    - name: Save the result fact
      ansible.builtin.copy:
        content: "{{{{ clusterdns_remediate_result_{role} | to_json }}}}"
        dest: "{result}"
        mode: "0644"
      check_mode: false
"""


def run_role(tmp_path, role, extra_vars, *args, interpreter=None, timeout=600):
    """Returns (CompletedProcess, result dict or None when the role failed before reporting)."""
    result = tmp_path / ("result-%s.json" % role)
    if result.exists():
        result.unlink()
    play = tmp_path / ("play-%s.yml" % role)
    play.write_text(ROLE_PLAY.format(role=role, result=result))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local",
        "ansible_python_interpreter": str(interpreter) if interpreter else "{{ ansible_playbook_python }}"}}}}))
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_NOCOLOR": "1",
    })
    cmd = [str(ANSIBLE_BIN / "ansible-playbook"), "-i", str(inventory), str(play), "-e", json.dumps(extra_vars), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return proc, (json.loads(result.read_text()) if result.exists() else None)


def recap(proc):
    """The localhost line of PLAY RECAP as a dict of ints (ok, changed, failed, rescued, ...)."""
    for line in proc.stdout.splitlines():
        if line.startswith("localhost") and "ok=" in line:
            return {k: int(v) for k, v in (item.split("=") for item in line.split(":", 1)[1].split())}
    raise AssertionError("no PLAY RECAP in:\n" + proc.stdout[-3000:] + proc.stderr[-2000:])
