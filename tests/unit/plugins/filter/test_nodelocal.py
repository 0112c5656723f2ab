# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nodelocaldns filters (input checks) and the nodelocaldns role's templates rendered by a real
ansible-playbook for both kube-proxy modes: valid objects, a Corefile the Corefile parser reads, the
listen addresses and forward target of each mode, no memory limit."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.filter.nodelocal import FilterModule
from ansible_collections.clusterdns.doctor.plugins.module_utils import _corefile

FILTERS = FilterModule().filters()
ROLE = pathlib.Path(__file__).parents[4] / "roles" / "nodelocaldns"


def test_filter_input_is_checked():
    with pytest.raises(AnsibleFilterError, match="nodelocaldns_listen: kube-proxy mode must be one of"):
        FILTERS["nodelocaldns_listen"]("169.254.20.10", "userspace", ["10.96.0.10"])
    with pytest.raises(AnsibleFilterError, match="cluster_ips must be a list"):
        FILTERS["nodelocaldns_listen"]("169.254.20.10", "iptables", "10.96.0.10")
    with pytest.raises(AnsibleFilterError, match="must map ipv4/ipv6"):
        FILTERS["nodelocaldns_cleanup_plan"]("*raw", [], "[]")
    with pytest.raises(AnsibleFilterError, match="ip -j addr show: not JSON"):
        FILTERS["nodelocaldns_cleanup_plan"]({"ipv4": ""}, [], "lo: <LOOPBACK>")
    with pytest.raises(AnsibleFilterError, match="must be a DaemonSet object"):
        FILTERS["nodelocaldns_rollout"]("node-local-dns")
    with pytest.raises(AnsibleFilterError, match="config.yaml line 1: a list item at the top level"):
        FILTERS["nodelocaldns_kubelet_dns"]("- 10.96.0.10\n", ["169.254.20.10"])
    assert FILTERS["nodelocaldns_listen"]("169.254.20.10", "ipvs", ["10.96.0.10"]) == ["169.254.20.10"]


def _collections_root():
    for parent in pathlib.Path(_corefile.__file__).parents:
        if parent.name == "ansible_collections":
            return parent.parent
    return pathlib.Path.cwd()


def render(tmp_path, mode, upstream):
    """The four objects as the role renders them, from a real ansible-playbook (JSON)."""
    (tmp_path / "templates").symlink_to(ROLE / "templates")
    variables = {
        "nodelocaldns_name": "node-local-dns", "nodelocaldns_namespace": "kube-system", "nodelocaldns_upstream_service": "kube-dns-upstream",
        "nodelocaldns_local_ip": "169.254.20.10", "nodelocaldns_health_port": 8080, "nodelocaldns_metrics_port": 9253,
        "nodelocaldns_image": "registry.k8s.io/dns/k8s-dns-node-cache", "nodelocaldns_version": "1.26.4",
        "nodelocaldns_resources": {"requests": {"cpu": "25m", "memory": "5Mi"}}, "nodelocaldns_priority_class": "system-node-critical",
        "nodelocaldns_interface": "nodelocaldns", "nodelocaldns_pidfile": "/tmp/node-cache.pid",
        "__nodelocaldns_labels": {"app.kubernetes.io/managed-by": "clusterdns.doctor"},
        "__nodelocaldns_kube_dns_selector": {"k8s-app": "kube-dns"}, "__nodelocaldns_domain": "cluster.local",
        "__nodelocaldns_listen": "{{ nodelocaldns_local_ip | clusterdns.doctor.nodelocaldns_listen('%s', ['10.96.0.10']) }}" % mode,
        "__nodelocaldns_cluster_upstream": upstream,
    }
    out = tmp_path / "objects.json"
    objects = {name: "{{ lookup('ansible.builtin.template', '%s.yml.j2') | from_yaml }}" % name
               for name in ("serviceaccount", "service-upstream", "configmap", "daemonset")}
    play = [{"hosts": "localhost", "gather_facts": False, "vars": variables, "tasks": [
        {"ansible.builtin.copy": {"dest": str(out), "mode": "0644", "content": "{{ objects | to_json }}"}, "vars": {"objects": objects}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    environ = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(_collections_root()), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"), ANSIBLE_HOME=str(tmp_path / "home"))
    playbook = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([playbook, "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml")], env=environ,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def _container(objects):
    return objects["daemonset"]["spec"]["template"]["spec"]["containers"][0]


def test_iptables_mode_objects(tmp_path):
    objects = render(tmp_path, "iptables", "__PILLAR__CLUSTER__DNS__")
    args = _container(objects)["args"]
    assert args[args.index("-localip") + 1] == "169.254.20.10,10.96.0.10"
    assert args[args.index("-upstreamsvc") + 1] == "kube-dns-upstream" and args[args.index("-health-port") + 1] == "8080"
    assert _container(objects)["resources"] == {"requests": {"cpu": "25m", "memory": "5Mi"}}
    spec = objects["daemonset"]["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "Default" and spec["priorityClassName"] == "system-node-critical"
    assert _container(objects)["livenessProbe"]["httpGet"] == {"host": "169.254.20.10", "path": "/health", "port": 8080}
    assert objects["service-upstream"]["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert {(p["port"], p["protocol"]) for p in objects["service-upstream"]["spec"]["ports"]} == {(53, "UDP"), (53, "TCP")}
    for name in ("serviceaccount", "service-upstream", "configmap", "daemonset"):
        assert objects[name]["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "clusterdns.doctor"
    corefile = objects["configmap"]["data"]["Corefile"]
    blocks = _corefile.parse(corefile)
    text = json.dumps(blocks)
    assert "cluster.local" in text and "in-addr.arpa" in text and "ip6.arpa" in text
    assert corefile.count("bind 169.254.20.10 10.96.0.10") == 4
    assert corefile.count("forward . __PILLAR__CLUSTER__DNS__ {") == 3 and "forward . __PILLAR__UPSTREAM__SERVERS__" in corefile
    assert "health 169.254.20.10:8080" in corefile and corefile.count("health ") == 1


def test_ipvs_mode_objects(tmp_path):
    objects = render(tmp_path, "ipvs", "10.96.0.10")
    args = _container(objects)["args"]
    assert args[args.index("-localip") + 1] == "169.254.20.10"
    corefile = objects["configmap"]["data"]["Corefile"]
    _corefile.parse(corefile)
    assert corefile.count("bind 169.254.20.10\n") == 4 and "10.96.0.10 " not in corefile.replace("forward . 10.96.0.10 {", "")
    assert corefile.count("forward . 10.96.0.10 {") == 3
