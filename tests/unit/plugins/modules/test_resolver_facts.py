# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""resolver_facts as a process: bundles built from the real files in module_utils/fixtures/resolver
(SOURCES.md) and the ct-full-node bundle, and this machine live."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

from ansible_collections.clusterdns.doctor.plugins.module_utils import _resolver
from ansible_collections.clusterdns.doctor.tests.unit.plugins.modules.utils import run_collection_module

MODULE = "ansible_collections.clusterdns.doctor.plugins.modules.resolver_facts"
FIXTURES = pathlib.Path(__file__).parents[1] / "module_utils" / "fixtures"
RESOLVER = FIXTURES / "resolver"


def run_module(tmp_path, args, check_mode=False):
    return run_collection_module(MODULE, tmp_path, args, check_mode=check_mode)[:2]


def make_bundle(tmp_path, files, links=None):
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    for node_path, fixture in files.items():
        target = root / node_path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(fixture, str) and (RESOLVER / fixture).is_file():
            shutil.copy(RESOLVER / fixture, target)
        else:
            target.write_text(fixture)
    for node_path, link in (links or {}).items():
        target = root / node_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(link)
    return root


def test_ct_full_node_bundle_stub_and_kubeadm_default(tmp_path):
    root = tmp_path / "node"
    shutil.copytree(FIXTURES / "bundles" / "ct-full-node", root, symlinks=True)
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc == 0 and result["changed"] is False, result
    facts = result["ansible_facts"]["clusterdns_resolver"]
    assert facts["available"] is True
    assert (facts["resolv_conf"]["realpath"], facts["resolv_conf"]["nameservers"]) == ("/run/systemd/resolve/stub-resolv.conf", ["127.0.0.53"])
    assert facts["stub"]["kind"] == "systemd-resolved"
    assert (facts["stub"]["upstream"]["path"], facts["stub"]["upstream"]["nameservers"]) == ("/run/systemd/resolve/resolv.conf", ["8.8.8.8", "8.8.4.4"])
    kubelet = facts["kubelet"]
    assert (kubelet["present"], kubelet["running"], kubelet["source"]) == (True, False, "config file")
    assert (kubelet["cluster_dns"], kubelet["cluster_domain"], kubelet["resolv_conf"]) == (["10.96.0.10"], "cluster.local", "/etc/resolv.conf")
    assert kubelet["resolv_conf_nameservers"] == ["127.0.0.53"]
    # The same facts in check mode.
    assert run_module(tmp_path, {"root": str(root)}, check_mode=True)[1]["ansible_facts"] == result["ansible_facts"]


def test_saved_cmdline_overrides_config_and_reads_the_other_file(tmp_path):
    root = make_bundle(tmp_path, {
        "etc/resolv.conf": "github-k8s-33881-networkmanager.conf",
        "etc/kube-resolv.conf": "github-script-four-nameservers.conf",
        "var/lib/kubelet/config.yaml": "github-kubeadm-1.32-config.yaml",
        "commands/kubelet-cmdline.txt": "github-k8s-42542-kubelet-cmdline.txt",
        "commands/ldd-version.txt": "local-debian12-ldd-version.txt",
    })
    rc, result = run_module(tmp_path, {"root": str(root)})
    kubelet = result["ansible_facts"]["clusterdns_resolver"]["kubelet"]
    assert rc == 0 and (kubelet["running"], kubelet["source"]) == (True, "cmdline")
    assert kubelet["sources"]["resolv_conf"] == "cmdline" and kubelet["resolv_conf"] == "/etc/kube-resolv.conf"
    assert kubelet["resolv_conf_nameservers"] == ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"]
    assert [p["lineno"] for p in kubelet["resolv_conf_file"]["problems"]] == [4]
    assert result["ansible_facts"]["clusterdns_resolver"]["libc"] == {"name": "glibc", "version": "2.36", "source": "ldd"}
    assert result["ansible_facts"]["clusterdns_resolver"]["stub"]["kind"] is None


def test_flags_file_without_running_kubelet(tmp_path):
    root = make_bundle(tmp_path, {
        "etc/resolv.conf": "github-aks-node-resolv.conf",
        "etc/systemd/system/kubelet.service.d/10-kubeadm.conf": "github-k8s-33881-10-kubeadm.conf",
        "var/lib/kubelet/kubeadm-flags.env": "github-k8s-122632-flags.env",
        "lib/ld-musl-x86_64.so.1": "",
    })
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_resolver"]
    kubelet = facts["kubelet"]
    assert rc == 0 and (kubelet["present"], kubelet["running"], kubelet["source"], kubelet["config_available"]) == (True, False, "flags file", False)
    assert kubelet["flags_files"] == ["/var/lib/kubelet/kubeadm-flags.env", "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"]
    assert (kubelet["cluster_dns"], kubelet["cluster_domain"]) == (["10.96.0.10"], "cluster.local")
    assert kubelet["resolv_conf_nameservers"] == ["168.63.129.16"]
    assert facts["libc"] == {"name": "musl", "version": None, "source": "ld-musl"}


def test_bundle_without_kubelet_or_resolv_conf(tmp_path):
    root = make_bundle(tmp_path, {})
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_resolver"]
    assert rc == 0 and facts["available"] is False
    assert facts["reason"] == "not found: %s" % (root / "etc" / "resolv.conf")
    assert facts["kubelet"]["present"] is False and facts["kubelet"]["resolv_conf_file"] is None


def test_absolute_symlink_in_a_bundle_stays_in_the_bundle(tmp_path):
    root = make_bundle(tmp_path, {"run/systemd/resolve/stub-resolv.conf": "github-ubuntu-stub-resolv.conf",
                                  "run/systemd/resolve/resolv.conf": "github-rke2-upstream-too-many.conf"},
                       links={"etc/resolv.conf": "/run/systemd/resolve/stub-resolv.conf"})
    rc, result = run_module(tmp_path, {"root": str(root)})
    facts = result["ansible_facts"]["clusterdns_resolver"]
    assert rc == 0 and facts["resolv_conf"]["nameservers"] == ["127.0.0.53"]
    assert facts["stub"]["upstream"]["problems"][0]["kind"] == "nameserver_limit"


def test_bad_kubelet_config_fails_with_file_and_line(tmp_path):
    root = make_bundle(tmp_path, {"etc/resolv.conf": "local-debian12-resolv.conf",
                                  "var/lib/kubelet/config.yaml": "kind: KubeletConfiguration\nclusterDNS:\n\t- 10.96.0.10\n"})
    rc, result = run_module(tmp_path, {"root": str(root)})
    assert rc != 0 and result["failed"] is True
    assert result["msg"].startswith("cannot read the resolver facts: %s line 3: tab in indentation" % (root / "var/lib/kubelet/config.yaml"))
    assert (result["lineno"], result["line"], result["expected"]) == (3, "\t- 10.96.0.10", "spaces")


def test_kubelet_config_option_points_elsewhere(tmp_path):
    root = make_bundle(tmp_path, {"etc/resolv.conf": "github-ubuntu-stub-resolv.conf",
                                  "etc/kubernetes/kubelet-config.yaml": "github-kubeadm-resolvconf-config.yaml",
                                  "run/systemd/resolve/resolv.conf": "github-ubuntu-upstream-resolv.conf"})
    rc, result = run_module(tmp_path, {"root": str(root), "kubelet_config": "/etc/kubernetes/kubelet-config.yaml"})
    kubelet = result["ansible_facts"]["clusterdns_resolver"]["kubelet"]
    assert rc == 0 and kubelet["resolv_conf"] == "/run/systemd/resolve/resolv.conf"
    assert kubelet["resolv_conf_nameservers"] == ["8.8.8.8", "8.8.4.4"]


def test_live_this_machine(tmp_path):
    rc, result = run_module(tmp_path, {})
    assert rc == 0, result
    facts = result["ansible_facts"]["clusterdns_resolver"]
    with open("/etc/resolv.conf", encoding="utf-8") as handle:
        expected = [line.split()[1] for line in handle if line.startswith("nameserver") and len(line.split()) > 1]
    assert facts["available"] is True
    assert facts["resolv_conf"]["nameservers"] == expected[:3]
    assert facts["resolv_conf"]["realpath"] == os.path.realpath("/etc/resolv.conf")
    ldd = shutil.which("ldd")
    if ldd:
        version = subprocess.run([ldd, "--version"], capture_output=True, text=True, check=False)
        first = (version.stdout or version.stderr).splitlines()[0]
        assert facts["libc"]["name"] == ("glibc" if "GLIBC" in first.upper() else "musl")
        assert facts["libc"]["version"] is None or first.endswith(facts["libc"]["version"])
    assert facts["kubelet"]["running"] is _kubelet_running()


def _kubelet_running():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            text = pathlib.Path("/proc", pid, "cmdline").read_text(errors="replace")
        except OSError:
            continue
        if _resolver.is_kubelet(_resolver.split_cmdline(text)):
            return True
    return False


def test_eks_json_config_and_musl_node_whose_ldd_cannot_print_its_version(tmp_path):
    root = make_bundle(tmp_path, {
        "etc/resolv.conf": "github-aks-node-resolv.conf",
        "etc/kubernetes/kubelet/kubelet-config.json": "github-eks-ami-kubelet-config.json",
        "commands/ldd-version.txt": "github-appsignal-369-musl-ldd-version-cannot-load.txt",
    })
    rc, result = run_module(tmp_path, {"root": str(root), "kubelet_config": "/etc/kubernetes/kubelet/kubelet-config.json"})
    facts = result["ansible_facts"]["clusterdns_resolver"]
    assert rc == 0, result
    kubelet = facts["kubelet"]
    assert (kubelet["present"], kubelet["config_path"], kubelet["cluster_domain"]) == (True, "/etc/kubernetes/kubelet/kubelet-config.json", "cluster.local")
    assert kubelet["cluster_dns"] == [] and kubelet["resolv_conf"] == "/etc/resolv.conf"  # kubelet defaults: no clusterDNS yet
    assert facts["libc"] == {"name": "musl", "version": None, "source": "ldd"}
