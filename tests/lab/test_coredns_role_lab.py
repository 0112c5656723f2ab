# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The coredns role's Corefile part on the real lab: remediate.yml --tags coredns (cluster only, no
node host) against kube-apiserver and the lab's two CoreDNS 1.12.4 replicas, whose reload plugin
picks up the ConfigMap the lab's agent mirrors into their Corefile (as a kubelet does).

While the role changes the Corefile, a background prober in the pod namespace cdl-pod1 asks the
kube-dns ClusterIP every 50 ms (a cluster name and an upstream name, one try of 1 s each, bounded in
count and time) and counts every query that got no NOERROR answer.

- autopath (CDNS006): removed; both replicas reload without a restart (same process, same
  restartCount, "Reloading complete" in their log); no lookup fails; CDNS006 is gone from
  findings.json; a second run changes nothing.
- no-log-plugin (CDNS007): errors and log (class denial error) added, CDNS007 gone.
- an edit CoreDNS rejects at reload (forward max_concurrent "lots": the Corefile parses, the forward
  plugin refuses it at setup): rolled back to the original Corefile (Corefile-backup kept), DNS never
  broken, the play fails with CoreDNS's reason.
- an edit naming a plugin CoreDNS 1.12.4 does not have (cahce): refused before any write.
- --check --diff: the ConfigMap keeps its resourceVersion, the diff shows the line removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import lab, labctl, short, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("healed")]

COLLECTION = pathlib.Path(__file__).resolve().parents[2]
CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/coredns"
SLOTS = sorted(lab.DNS_SLOTS)

# Runs inside cdl-pod1 with this interpreter (dnspython): argv stop-file, result-file, max queries, max seconds.
PROBER = r"""
import json, os, sys, time
import dns.exception, dns.message, dns.query, dns.rcode
stop, out, limit, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
names = ["kubernetes.default.svc.cluster.local", "www.lab.example"]
sent, ok, failures, end = 0, 0, [], time.time() + seconds
while sent < limit and time.time() < end and not os.path.exists(stop):
    name = names[sent % 2]
    started = time.time()
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), "10.96.0.10", timeout=1.0)
        if reply.rcode() == dns.rcode.NOERROR and reply.answer:
            ok += 1
        else:
            failures.append([round(started, 3), name, dns.rcode.to_text(reply.rcode())])
    except dns.exception.Timeout:
        failures.append([round(started, 3), name, "timeout"])
    sent += 1
    time.sleep(0.05)
with open(out, "w") as f:
    json.dump({"sent": sent, "ok": ok, "failures": failures, "seconds": round(seconds - (end - time.time()), 1)}, f)
"""


@contextlib.contextmanager
def background_probe(tmp_path, limit=6000, seconds=300):
    """Queries from cdl-pod1 to the kube-dns ClusterIP until the block ends (or the bounds); the
    yielded dict gets sent, ok, failures."""
    stop, out = tmp_path / "probe.stop", tmp_path / "probe.json"
    proc = subprocess.Popen(["ip", "netns", "exec", lab.pod_ns(1), sys.executable, "-c", PROBER, str(stop), str(out), str(limit), str(seconds)])
    stats = {}
    try:
        yield stats
    finally:
        stop.touch()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            stats.update(json.loads(out.read_text()))


def remediate(tmp_path, *args, extra=None, name="run"):
    """remediate.yml --tags coredns against the lab only, probing from cdl-pod1; (process, findings.json)."""
    report = tmp_path / name
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(COLLECTION / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(COLLECTION / ".cache" / "collections")),
        "ANSIBLE_INVENTORY": str(COLLECTION / "inventory" / "localhost.yml"),
        "ANSIBLE_NOCOLOR": "1",
    })
    variables = {"clusterdns_kubeconfig": lab.sp("kubeconfig"), "clusterdns_hosts": "clusterdns_no_such_host",
                 "clusterdns_report_dir": str(report), "clusterdns_log_seconds": 0, "coredns_verify_netns": lab.pod_ns(1),
                 "coredns_reload_timeout": 60}
    variables.update(extra or {})
    cmd = [str(COLLECTION / ".venv" / "bin" / "ansible-playbook"), str(COLLECTION / "playbooks" / "remediate.yml"), "--tags", "coredns",
           "-e", json.dumps(variables), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    (tmp_path / ("%s.log" % name)).write_text(proc.stdout + proc.stderr)
    found = json.loads((report / "findings.json").read_text()) if (report / "findings.json").exists() else None
    return proc, found


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def corefile_result(report):
    return report["remediation"]["cluster"]["clusterdns_remediate_result_coredns"]["corefile"]


def ids(report):
    return {f["id"] for f in report["findings"]}


def pods(api):
    """CoreDNS replica -> (process id, restartCount)."""
    out = {}
    for slot in SLOTS:
        pod = api.get("/api/v1/namespaces/kube-system/pods/coredns-%s" % slot)
        out[slot] = (lab.pid_of("coredns-" + slot), pod["status"]["containerStatuses"][0]["restartCount"])
    return out


def logs_since(offsets):
    return {slot: lab.log_since(slot, offsets[slot]) for slot in SLOTS}


@pytest.fixture
def original_corefile(api):
    """The Corefile before the test; afterwards it is put back (with a restart of a replica that
    misses the reload, as labctl heal does) and the Corefile-backup key the role leaves is removed,
    so that the next test starts from the lab's own ConfigMap."""
    cm = api.get(CONFIGMAP)
    yield cm["data"]["Corefile"]
    lab.restore_corefile({"corefile": cm["data"]["Corefile"]})
    if "Corefile-backup" in (api.get(CONFIGMAP).get("data") or {}):
        api.req("PATCH", CONFIGMAP, [{"op": "remove", "path": "/data/Corefile-backup"}], "application/json-patch+json")


def test_autopath_is_removed_by_a_reload_without_restart_and_no_lookup_fails(api, tmp_path, original_corefile):
    labctl("fault", "autopath")
    with_autopath = api.get(CONFIGMAP)["data"]["Corefile"]
    assert "autopath @kubernetes" in with_autopath
    before, offsets = pods(api), lab.log_offsets()
    with background_probe(tmp_path) as probe:
        proc, report = remediate(tmp_path)
    ok(proc)
    cm = api.get(CONFIGMAP)["data"]
    assert "autopath" not in cm["Corefile"], proc.stdout[-6000:]
    assert "pods verified" in cm["Corefile"]  # pods insecure only when asked
    assert cm["Corefile-backup"] == with_autopath
    # reloaded, not restarted: the same processes, no container restart, and each logged the reload
    assert pods(api) == before
    assert all("Reloading complete" in text for text in logs_since(offsets).values()), logs_since(offsets)
    # the probe ran through the whole change and every lookup was answered
    assert probe["sent"] >= 40 and probe["failures"] == [], probe
    assert "CDNS006" in report["before"]["ids"] and "CDNS006" not in ids(report)
    result = corefile_result(report)
    assert result["changed"] is True and result["restart_required"] is False
    assert any(a.startswith("server block .:53: removed autopath @kubernetes") for a in result["actions"]), result
    assert result["reload"]["status"] == "reloaded" and {p["name"] for p in result["reload"]["pods"]} == {"coredns-a", "coredns-b"}
    assert [r["classification"] for r in result["probe"]["after"]] == ["ok"] * 3  # ClusterIP and both replicas
    # a second run has nothing to do: no finding left, and the same edit asked again is already there
    rv = api.get(CONFIGMAP)["metadata"]["resourceVersion"]
    proc, report = remediate(tmp_path, extra={"clusterdns_remediate_force": ["coredns"],
                                              "coredns_corefile_edits": [{"plugin": "autopath", "state": "absent"}]}, name="again")
    ok(proc)
    assert api.get(CONFIGMAP)["metadata"]["resourceVersion"] == rv
    again = corefile_result(report)
    assert again["changed"] is False and again["skipped_reason"] == "the Corefile already has what coredns_corefile_edits calls for", again


def test_no_log_plugin_gets_errors_and_log_with_denial_and_error(api, tmp_path, original_corefile):
    labctl("fault", "no-log-plugin")
    proc, report = remediate(tmp_path)
    ok(proc)
    text = api.get(CONFIGMAP)["data"]["Corefile"]
    assert text.startswith(".:53 {\n    errors\n    log . {\n        class denial error\n    }\n"), text
    assert "CDNS007" in report["before"]["ids"] and "CDNS007" not in ids(report)
    assert corefile_result(report)["reload"]["status"] == "reloaded"


def test_dry_run_changes_nothing_and_shows_the_diff(api, tmp_path, original_corefile):
    labctl("fault", "autopath")
    rv = api.get(CONFIGMAP)["metadata"]["resourceVersion"]
    proc, report = remediate(tmp_path, "--check", "--diff")
    ok(proc)
    assert api.get(CONFIGMAP)["metadata"]["resourceVersion"] == rv
    assert "autopath @kubernetes" in api.get(CONFIGMAP)["data"]["Corefile"]
    assert "--- before: ConfigMap kube-system/coredns data.Corefile" in proc.stdout
    assert "\n-    autopath @kubernetes\n" in proc.stdout, proc.stdout[-4000:]
    assert corefile_result(report)["changed"] is True and "CDNS006" in ids(report)


def test_a_corefile_coredns_rejects_is_rolled_back_and_dns_never_breaks(api, tmp_path, original_corefile):
    before, offsets = pods(api), lab.log_offsets()
    edits = [{"plugin": "forward", "option": "max_concurrent", "option_args": ["lots"]}]
    with background_probe(tmp_path) as probe:
        proc, report = remediate(tmp_path, extra={"clusterdns_remediate_force": ["coredns"], "coredns_corefile_edits": edits})
    assert proc.returncode != 0
    out = proc.stdout
    assert "CoreDNS rejected the new Corefile and keeps serving the one it had" in out, out[-6000:]
    assert 'plugin/forward: strconv.Atoi: parsing \\"lots\\"' in out or 'parsing "lots"' in out
    assert "was undone" in out and "CoreDNS reloaded it" in out
    cm = api.get(CONFIGMAP)["data"]
    assert cm["Corefile"] == original_corefile and cm["Corefile-backup"] == original_corefile
    # each replica rejected it (the old configuration kept serving), then reloaded the restored one
    for slot, text in logs_since(offsets).items():
        assert text.index("Corefile changed but reload failed") < text.rindex("Reloading complete"), (slot, text)
    assert pods(api) == before
    assert probe["sent"] >= 40 and probe["failures"] == [], probe


def test_answers_worse_after_the_reload_roll_the_change_back(api, tmp_path, original_corefile):
    # CoreDNS accepts this Corefile, but cluster.local is no longer its zone: the names the probe asks
    # go to the upstream, which refuses them. The probe after the reload sees it; the role puts the
    # previous Corefile back and cluster names resolve again.
    edits = [{"plugin": "kubernetes", "args": ["cluster.invalid", "in-addr.arpa", "ip6.arpa"]}]
    proc, report = remediate(tmp_path, extra={"clusterdns_remediate_force": ["coredns"], "coredns_corefile_edits": edits})
    assert proc.returncode != 0
    assert "CoreDNS answers worse with the new Corefile: 10.96.0.10/udp/" in proc.stdout, proc.stdout[-6000:]
    assert "was undone" in proc.stdout and "CoreDNS reloaded it" in proc.stdout
    assert api.get(CONFIGMAP)["data"]["Corefile"] == original_corefile
    assert short(lab.pod_ns(1), "kubernetes.default.svc.cluster.local") == "10.96.0.1"


def test_a_plugin_coredns_does_not_have_is_refused_before_any_write(api, tmp_path, original_corefile):
    rv = api.get(CONFIGMAP)["metadata"]["resourceVersion"]
    edits = [{"plugin": "cahce", "args": [30]}]
    proc, _report = remediate(tmp_path, extra={"clusterdns_remediate_force": ["coredns"], "coredns_corefile_edits": edits})
    assert proc.returncode != 0
    assert "no CoreDNS release has a plugin called 'cahce'" in proc.stdout and "nothing changed" in proc.stdout, proc.stdout[-4000:]
    assert api.get(CONFIGMAP)["metadata"]["resourceVersion"] == rv


def test_a_corefile_that_does_not_parse_is_refused_naming_its_line(api, tmp_path, original_corefile):
    # someone left an unbalanced brace: CoreDNS warns at each reload check and keeps its configuration
    broken = original_corefile.replace("    cache 30\n", "    cache 30 {\n", 1)
    api.patch(CONFIGMAP, {"data": {"Corefile": broken}})
    try:
        rv = api.get(CONFIGMAP)["metadata"]["resourceVersion"]
        proc, _report = remediate(tmp_path, extra={"clusterdns_remediate_force": ["coredns"], "coredns_corefile_edits": [{"plugin": "log"}]})
        assert proc.returncode != 0
        assert "ConfigMap kube-system/coredns data.Corefile line 1: block opened here is never closed" in proc.stdout, proc.stdout[-4000:]
        assert api.get(CONFIGMAP)["metadata"]["resourceVersion"] == rv
    finally:
        # CoreDNS never loaded the broken file, so putting the original back needs no reload
        api.patch(CONFIGMAP, {"data": {"Corefile": original_corefile}})


def test_unknown_directive_removed_by_a_user_edit_while_a_replica_crash_loops(api, tmp_path, original_corefile):
    # corefile-invalid: 'cahce 30' in the ConfigMap; replica b rejected it at reload and serves the old
    # Corefile, replica a was restarted into it and crash-loops. The edit removes the directive: b reloads,
    # a is not waited for (not ready before the write) and comes back on the fixed Corefile.
    labctl("fault", "corefile-invalid")
    proc, report = remediate(tmp_path, extra={"clusterdns_remediate_force": ["coredns"],
                                              "coredns_corefile_edits": [{"plugin": "cahce", "state": "absent"}]})
    ok(proc)
    assert "cahce" not in api.get(CONFIGMAP)["data"]["Corefile"]
    reload = {p["name"]: p["status"] for p in corefile_result(report)["reload"]["pods"]}
    assert reload["coredns-b"] == "reloaded" and reload["coredns-a"] in ("not_ready", "restarted"), corefile_result(report)["reload"]
    assert "CDNS011" in report["before"]["ids"] and "CDNS011" not in ids(report)
    assert wait_until(lambda: lab.ready_replicas() == 2, 60), "replica a did not come back on the fixed Corefile"
