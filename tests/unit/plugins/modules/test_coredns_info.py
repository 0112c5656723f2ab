# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""coredns_info and workload_dns_info as processes, without a cluster: an API server that does not
answer and a kubeconfig that does not exist are results with a reason, not tracebacks; bad options
fail with the option named. Against a real API server they run in tests/lab/test_cluster_diagnosis.py."""

from __future__ import annotations

import json
import socket

import pytest

from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

PREFIX = "ansible_collections.clusterdns.doctor.plugins.modules."


def run_module(tmp_path, name, args):
    return run_collection_module(name, tmp_path, args)[:2]


@pytest.fixture
def closed_port():
    """A loopback port nobody listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def kubeconfig(tmp_path, port):
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:%d" % port, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


@pytest.mark.parametrize("name,key", [("coredns_info", "cluster"), ("workload_dns_info", "workloads")])
def test_unreachable_api_server_is_a_reason(tmp_path, closed_port, name, key):
    rc, result = run_module(tmp_path, name, {"kubeconfig": kubeconfig(tmp_path, closed_port), "request_timeout": 3})
    assert rc == 0, result
    assert result["changed"] is False
    assert result[key]["available"] is False
    assert "127.0.0.1" in result[key]["reason"] or "refused" in result[key]["reason"].lower(), result[key]["reason"]


def test_missing_kubeconfig_is_a_reason(tmp_path):
    rc, result = run_module(tmp_path, "coredns_info", {"kubeconfig": str(tmp_path / "nope")})
    assert rc == 0 and result["cluster"]["available"] is False
    assert "nope" in result["cluster"]["reason"]


def test_bad_options_fail_naming_the_option(tmp_path, closed_port):
    rc, result = run_module(tmp_path, "workload_dns_info", {"kubeconfig": kubeconfig(tmp_path, closed_port), "max_pods": 0})
    assert rc == 1 and "max_pods must be 1 or more" in result["msg"]
    rc, result = run_module(tmp_path, "coredns_info", {"kubeconfig": kubeconfig(tmp_path, closed_port), "label_selector": "k8s-app"})
    # the selector is checked before anything is asked of the API server
    assert rc == 1 and "label_selector" in result["msg"] and "key=value" in result["msg"]


@pytest.mark.parametrize("args,message", [
    ({"metrics_interval": -1}, "metrics_interval: -1.0 is not between 0 and 300 seconds"),
    ({"metrics_interval": 301}, "metrics_interval: 301.0 is not between 0 and 300 seconds"),
    ({"metrics_port": 0}, "metrics_port: 0 is not a port number"),
    ({"metrics_port": 70000}, "metrics_port: 70000 is not a port number"),
])
def test_bad_metrics_options_fail_before_any_request(tmp_path, closed_port, args, message):
    rc, result = run_module(tmp_path, "coredns_info", dict(args, kubeconfig=kubeconfig(tmp_path, closed_port), metrics=True))
    assert rc == 1 and message in result["msg"]


def test_metrics_of_an_unreachable_cluster_are_not_read(tmp_path, closed_port):
    rc, result = run_module(tmp_path, "coredns_info", {"kubeconfig": kubeconfig(tmp_path, closed_port), "request_timeout": 3,
                                                       "metrics": True, "metrics_interval": 1})
    assert rc == 0 and result["cluster"]["available"] is False and "metrics" not in result["cluster"]
