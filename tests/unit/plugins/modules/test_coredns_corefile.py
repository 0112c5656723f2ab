# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""coredns_corefile as a process, without a cluster: bad options and bad edits fail before any API
request, naming the option or the edit; an API server that does not answer fails saying nothing
changed. Against a real API server and real CoreDNS it runs in tests/lab/test_coredns_role_lab.py."""

from __future__ import annotations

import json
import socket

import pytest

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module


@pytest.fixture
def kubeconfig(tmp_path):
    """A kubeconfig that points at a loopback port nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:%d" % port, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


def run(tmp_path, args, check_mode=False):
    rc, result, _stderr = run_collection_module("coredns_corefile", tmp_path, args, check_mode=check_mode)
    return rc, result


@pytest.mark.parametrize("args,message", [
    ({"restore": True, "edits": [{"plugin": "log"}]}, "cannot be combined with edits"),
    ({"edits": [{"plugin": "forward", "option_args": ["1"]}]}, "edits[0]: option_args without option"),
    ({"edits": [{"plugin": "log"}, {"plugin": "log", "block": [{"name": "class", "value": "x"}]}]}, "edits[1].block[0] must be {name, args}"),
    ({"edits": [{"plugin": "log", "state": "gone"}]}, "state"),
    ({"wait_timeout": 0}, "wait_timeout must be 1 or more"),
    ({"label_selector": "k8s-app"}, "key=value"),
])
def test_bad_options_fail_before_any_request(tmp_path, kubeconfig, args, message):
    rc, result = run(tmp_path, dict(args, kubeconfig=kubeconfig, request_timeout=2))
    assert rc == 1 and result["failed"], result
    assert message in result["msg"], result["msg"]
    assert "127.0.0.1" not in result["msg"]  # refused before the API server was asked


def test_unreachable_api_server_changes_nothing(tmp_path, kubeconfig):
    rc, result = run(tmp_path, {"kubeconfig": kubeconfig, "request_timeout": 2, "edits": [{"plugin": "autopath", "state": "absent"}]})
    assert rc == 1 and result.get("changed") in (None, False)
    assert "nothing changed" in result["msg"] and "127.0.0.1" in result["msg"] and "refused" in result["msg"], result["msg"]


def test_missing_kubeconfig(tmp_path):
    rc, result = run(tmp_path, {"kubeconfig": str(tmp_path / "nope"), "edits": [{"plugin": "log"}]})
    assert rc == 1 and "nope" in result["msg"], result
