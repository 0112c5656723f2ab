# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""DMQ001 and DMQ002 on facts gathered from bundles made of the real captures in fixtures/dnsmasq."""

from __future__ import annotations

import pathlib
import shutil

from ansible_collections.clusterdns.doctor.plugins.module_utils import _findings
from ansible_collections.clusterdns.doctor.plugins.module_utils import _rules_dnsmasq
from ansible_collections.clusterdns.doctor.plugins.module_utils._dnsmasq import POD_INTERFACE_PATTERNS
from ansible_collections.clusterdns.doctor.plugins.module_utils._sources import Source
from ansible_collections.clusterdns.doctor.plugins.modules.dnsmasq_facts import gather

# Importing the rule module registers DMQ001/DMQ002 (until _findings.RULE_MODULES lists it).
DMQ_RULES = (_rules_dnsmasq.pod_interface_ignored, _rules_dnsmasq.not_listening)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "dnsmasq"
CONF = "/tmp/cdbed-bqije4jo/dnsmasq.conf"  # the path in the captured command line


def bundle(tmp_path, conf="local-netns-except-cilium.conf", ss_lnup="local-netns-ss-lnup-except-cilium.txt"):
    root = tmp_path / "bundle"
    (root / "commands").mkdir(parents=True)
    for name, fixture in (("dnsmasq-cmdline", "local-netns-dnsmasq-cmdline-except-cilium.txt"), ("ip-addr", "local-netns-ip-addr-cilium.json"),
                          ("ss-lnup", ss_lnup), ("ss-lntp", "local-netns-ss-lntp-except-cilium.txt")):
        shutil.copy(FIXTURES / fixture, root / "commands" / (name + ".txt"))
    target = root / CONF.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy(FIXTURES / conf, target)
    return root


def evaluate(facts):
    result = _findings.evaluate({"node1": {"clusterdns_dnsmasq": facts}})
    return ([f for f in result["findings"] if f["id"].startswith("DMQ")],
            {c["id"]: c for c in result["checks"] if c["id"].startswith("DMQ")})


def test_dmq001_names_interface_line_and_pid(tmp_path):
    findings, checks = evaluate(gather(Source(None, str(bundle(tmp_path))), POD_INTERFACE_PATTERNS))
    (finding,) = findings
    assert finding["id"] == "DMQ001" and finding["severity"] == "critical"
    assert finding["evidence"]["interface"] == "cilium_host"
    assert finding["evidence"]["addresses"][0] == "10.244.0.1/24"
    assert finding["evidence"]["config_line"] == CONF + ":2: except-interface=cilium_*"
    assert finding["evidence"]["pid"] == 15967 and finding["evidence"]["mode"] == "bind-dynamic"
    assert "cilium_host" in finding["detail"] and finding["fix"]["tags"] == ["dnsmasq"]
    assert checks["DMQ002"]["status"] == "pass"


def test_dmq001_passes_when_the_pod_interface_is_not_pod_facing(tmp_path):
    facts = gather(Source(None, str(bundle(tmp_path))), ["docker*"])
    _findings_, checks = evaluate(facts)
    assert checks["DMQ001"]["status"] == "pass"


def test_dmq001_passes_after_the_seed_fix(tmp_path):
    root = bundle(tmp_path, conf="seed003-after.conf")
    findings, checks = evaluate(gather(Source(None, str(root)), POD_INTERFACE_PATTERNS))
    assert checks["DMQ001"]["status"] == "pass"
    # the fixed file has no bind-dynamic: dnsmasq would use one wildcard socket, and the captured
    # per-address sockets of the old process do not match the configuration on disk (restart needed)
    assert [(f["id"], f["evidence"]["address"], f["evidence"]["asked_by"]) for f in findings] == [
        ("DMQ002", "0.0.0.0", "wildcard (no bind-interfaces / bind-dynamic)")]


def test_dmq002_missing_socket(tmp_path):
    root = bundle(tmp_path)
    lines = (FIXTURES / "local-netns-ss-lnup-except-cilium.txt").read_text().splitlines(True)
    (root / "commands" / "ss-lnup.txt").write_text("".join(line for line in lines if "169.254.25.10" not in line))
    findings, checks = evaluate(gather(Source(None, str(root)), POD_INTERFACE_PATTERNS))
    dmq002 = [f for f in findings if f["id"] == "DMQ002"]
    assert [(f["evidence"]["address"], f["evidence"]["config_line"], f["severity"]) for f in dmq002] == [("169.254.25.10", CONF + ":1", "warning")]
    assert checks["DMQ001"]["status"] == "fail"


def test_skips_without_dnsmasq(tmp_path):
    root = tmp_path / "empty"
    (root / "commands").mkdir(parents=True)
    facts = gather(Source(None, str(root)), POD_INTERFACE_PATTERNS)
    assert facts["available"] is False and "dnsmasq-cmdline" in facts["reason"]
    findings, checks = evaluate(facts)
    assert findings == [] and {c["status"] for c in checks.values()} == {"skip"}


def test_no_sockets_known_means_no_dmq002(tmp_path):
    root = bundle(tmp_path)
    (root / "commands" / "ss-lnup.txt").unlink()
    (root / "commands" / "ss-lntp.txt").unlink()
    _f, checks = evaluate(gather(Source(None, str(root)), POD_INTERFACE_PATTERNS))
    assert checks["DMQ002"]["status"] == "pass" and checks["DMQ001"]["status"] == "fail"
