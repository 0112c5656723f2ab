# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one of the collection's modules as Ansible does: a separate Python process reading its
arguments from a JSON file, with the collection importable. Shared by the module tests."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

PREFIX = "ansible_collections.clusterdns.doctor.plugins.modules."


def collections_root():
    """The directory that holds ``ansible_collections`` (the tests run from the collection link)."""
    for parent in pathlib.Path(__file__).resolve().parents:
        if parent.name == "ansible_collections":
            return parent.parent
    for parent in pathlib.Path(__file__).parents:
        if parent.name == "ansible_collections":
            return parent.parent
    return pathlib.Path.cwd()


def run_collection_module(name, tmp_path, args, env=None, timeout=120, check_mode=False):
    """Run ``clusterdns.doctor.<name>`` with ``args``; returns ``(rc, result dict, stderr)``."""
    module_args = dict(args)
    if check_mode:
        module_args["_ansible_check_mode"] = True
    argsfile = pathlib.Path(tmp_path) / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(collections_root())] + sys.path)
    environ.update(env or {})
    name = name.rsplit(".", 1)[-1]
    proc = subprocess.run([sys.executable, "-m", PREFIX + name, str(argsfile)], env=environ, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.stdout, "module %s printed nothing; stderr: %s" % (name, proc.stderr[-2000:])
    return proc.returncode, json.loads(proc.stdout), proc.stderr
