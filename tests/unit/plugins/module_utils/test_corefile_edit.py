# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Structural Corefile edits (plugins/module_utils/_corefile_edit.py) on real Corefiles
(fixtures/corefile and fixtures/corefile_edit, see their SOURCES.md), and the reload judgement on a
real CoreDNS 1.12.4 log."""

from __future__ import annotations

import pathlib

import pytest

from ansible_collections.clusterdns.doctor.plugins.module_utils import _corefile, _corefile_edit
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import InvalidInput, ParseError

HERE = pathlib.Path(__file__).parent / "fixtures"
COREFILES = HERE / "corefile"
EDIT = HERE / "corefile_edit"
V1124 = [1, 12, 4]
# The fixtures of fixtures/corefile this test reads (others may be added there by other tests).
REAL = ["kubeadm-k8s119-configmap.yaml", "k3s-v1.26-configmap.yaml", "aks-template-configmap.yaml", "aks-privatelink.corefile",
        "rke2-lighthouse-describe.txt", "openshift-microshift-describe.txt", "nodelocaldns-k8s-configmap.yaml",
        "user-helm94-stub-zone.corefile", "user-aks1111-proxy.corefile"]

# What the coredns role asks for CDNS006, CDNS007 and CDNS008 (roles/coredns/defaults/main/corefile.yml).
OBSERVE = [{"plugin": "errors", "position": "first"},
           {"plugin": "log", "args": ["."], "block": ["class denial error"], "after": "errors"}]
PREFER_UDP = [{"plugin": "forward", "option": "force_tcp", "state": "absent"}, {"plugin": "forward", "option": "prefer_udp"}]


def load(path):
    return path.read_text()


def corefile_of(name):
    """The Corefile text itself (the ConfigMap or describe output around it removed)."""
    return _corefile.extract(load(COREFILES / name))[0]


def plan(text, edits, version=None):
    return _corefile_edit.plan(text, edits, version)


def plugin_names(text, zone=".", port=None):
    return [p["name"] for p in _corefile_edit.select_servers(_corefile.parse(text), zone, port)[0]["plugins"]]


def test_kubeadm_default_gets_log_errors_and_prefer_udp_exactly():
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    result = plan(text, OBSERVE + PREFER_UDP + [{"plugin": "forward", "option": "max_concurrent", "option_args": [2000]}], V1124)
    assert result["changed"]
    # errors was already first: only log is added, right after it; forward gets prefer_udp, max_concurrent changes
    assert result["actions"] == [
        "server block .:53: added log . { class denial error }",
        "server block .:53 forward . /etc/resolv.conf (line 13): added option prefer_udp",
        "server block .:53 forward . /etc/resolv.conf (line 13): option max_concurrent 1000 -> max_concurrent 2000",
    ]
    assert result["after"] == (
        ".:53 {\n"
        "    errors\n"
        "    log . {\n"
        "        class denial error\n"
        "    }\n"
        "    health {\n"
        "        lameduck 5s\n"
        "    }\n"
        "    ready\n"
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 30\n"
        "    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n"
        "        max_concurrent 2000\n"
        "        prefer_udp\n"
        "    }\n"
        "    cache 30\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n")
    assert result["reload_plugin"] and result["warnings"] == []


@pytest.mark.parametrize("name", REAL)
def test_edits_are_idempotent_on_real_corefiles(name):
    text = corefile_of(name)
    blocks = _corefile.parse(text)
    zone = next(k["zone"] for b in blocks if b["kind"] == "server" for k in b["zones"])
    edits = [dict(e, zone=zone) for e in OBSERVE] + [{"plugin": "cache", "args": [60], "zone": zone}]
    first = plan(text, edits)
    assert first["changed"] and first["actions"]
    again = plan(first["after"], edits)
    # nothing left to do: no write, the text handed back as it was
    assert not again["changed"] and again["actions"] == [] and again["after"] == first["after"]
    names = plugin_names(first["after"], zone)
    assert names.count("log") == 1 and names.count("errors") == 1 and names.count("cache") == 1
    assert names.index("log") == names.index("errors") + 1


@pytest.mark.parametrize("name", REAL)
def test_an_edit_that_changes_nothing_keeps_the_text_byte_for_byte(name):
    text = corefile_of(name)
    server = next(b for b in _corefile.parse(text) if b["kind"] == "server")
    # an absent plugin made absent, a present plugin made present (its arguments kept)
    result = plan(text, [{"plugin": "no_such_plugin_here", "state": "absent", "zone": "."},
                         {"plugin": server["plugins"][0]["name"], "zone": server["zones"][0]["zone"]}])
    assert not result["changed"] and result["after"] == text and result["actions"] == []


def test_comments_are_kept_and_a_removed_lines_comments_move_down():
    # user-helm94: a comment at the end of the server block's first line, mixed indentation
    text = corefile_of("user-helm94-stub-zone.corefile")
    before = [c for b in _corefile.parse(text) for c in b["comments"]]
    assert before, "fixture has a comment"
    result = plan(text, [{"plugin": "cache", "state": "absent", "zone": "example.org"}, {"plugin": "log", "zone": "example.org"}])
    after = _corefile.parse(result["after"])
    assert [c for b in after for c in b["comments"]] == before
    again = _corefile.parse(_corefile.render(after))
    assert _corefile.strip_lines(again) == _corefile.strip_lines(after)


def test_removed_plugin_comment_is_not_lost():
    text = ".:53 {\n    errors\n    # server-side search path\n    autopath @kubernetes\n    kubernetes cluster.local {\n        pods verified\n    }\n}\n"
    result = plan(text, [{"plugin": "autopath", "state": "absent"}])
    assert "# server-side search path\n    kubernetes cluster.local {" in result["after"]
    assert result["actions"] == ["server block .:53: removed autopath @kubernetes (line 4)"]


def test_kops_autopath_removed_and_pods_insecure_only_when_asked():
    text = load(EDIT / "kops-external-autopath.corefile")
    removed = plan(text, [{"plugin": "autopath", "state": "absent"}])
    assert "autopath" not in removed["after"]
    assert "pods verified" in removed["after"]  # the watch of all pods stays unless the user asks
    assert removed["actions"] == ["server block .:53: removed autopath @kubernetes (line 15)"]
    both = plan(text, [{"plugin": "autopath", "state": "absent"},
                       {"plugin": "kubernetes", "option": "pods", "option_args": ["insecure"]}])
    assert "pods insecure" in both["after"] and "pods verified" not in both["after"]
    assert both["actions"][1] == "server block .:53 kubernetes cluster.local (line 16): option pods verified -> pods insecure"
    # the other server block (amazonaws.com:53) is untouched
    assert plugin_names(both["after"], "amazonaws.com") == plugin_names(text, "amazonaws.com")


def test_kops_the_zone_selects_the_block():
    text = load(EDIT / "kops-external-autopath.corefile")
    result = plan(text, [{"plugin": "cache", "args": "60", "zone": "amazonaws.com."}])
    assert result["actions"] == ["server block amazonaws.com:53: cache 30 (line 10) -> cache 60"]
    assert "cache 300" in result["after"]


def test_version_check_refuses_plugins_the_running_coredns_lacks():
    text = load(EDIT / "kops-external-autopath.corefile")
    with pytest.raises(InvalidInput) as err:
        plan(text, [{"plugin": "cahce", "args": [30]}], V1124)
    assert "edits[0]" in str(err.value) and "no CoreDNS release has a plugin called 'cahce'" in str(err.value)
    assert "Unknown directive 'cahce'" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        plan(text, [{"plugin": "transfer", "args": ["to", "*"]}], [1, 6, 7])
    assert "first appeared in CoreDNS 1.7.0; this one is 1.6.7" in str(err.value)
    # removing is always allowed; existing plugins the version lacks are reported (proxy left in 1.5.0)
    result = plan(text, [{"plugin": "cahce", "state": "absent"}, {"plugin": "log"}], V1124)
    assert any("plugin 'proxy' was removed in CoreDNS 1.5.0" in w and "line 8" in w for w in result["warnings"])


def test_an_option_needs_its_plugin():
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    with pytest.raises(InvalidInput) as err:
        plan(text, [{"plugin": "hosts", "option": "fallthrough"}])
    assert "edits[0]" in str(err.value) and "server block .:53 has no hosts plugin" in str(err.value)
    # absent option of an absent plugin: nothing to do
    assert not plan(text, [{"plugin": "hosts", "option": "fallthrough", "state": "absent"}])["changed"]


def test_removing_the_last_option_removes_the_braces():
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    result = plan(text, [{"plugin": "forward", "option": "max_concurrent", "state": "absent"}])
    assert "    forward . /etc/resolv.conf\n    cache 30" in result["after"]


def test_block_is_set_exactly_keeping_what_stays():
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    result = plan(text, [{"plugin": "kubernetes",
                          "block": ["pods verified", {"name": "fallthrough", "args": ["in-addr.arpa", "ip6.arpa"]}]}])
    kubernetes = _corefile.find(_corefile.parse(result["after"]), "kubernetes")
    assert [(s["name"], s["args"]) for s in kubernetes["block"]] == [("pods", ["verified"]), ("fallthrough", ["in-addr.arpa", "ip6.arpa"])]


def test_a_zone_without_server_block_is_refused_for_present_edits():
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    with pytest.raises(InvalidInput) as err:
        plan(text, [{"plugin": "log", "zone": "example.org"}])
    assert "no server block serves zone example.org (server blocks: .:53)" in str(err.value)
    with pytest.raises(InvalidInput) as err:
        plan(text, [{"plugin": "log", "port": 5353}])
    assert "on port 5353" in str(err.value)
    assert plan(text, [{"plugin": "log", "port": 53}])["changed"]  # .:53


def test_openshift_port_5353_and_root_zone():
    text = corefile_of("openshift-microshift-describe.txt")
    result = plan(text, [{"plugin": "log", "state": "absent", "port": 5353}])
    assert result["changed"] and "log" in plugin_names(text, ".", 5353)
    assert "log" not in plugin_names(result["after"], ".", 5353)
    assert "log" not in result["after"].split(".:5353 {")[1].split("\n}")[0]


def test_a_current_corefile_that_does_not_parse_is_refused_with_its_line():
    text = load(COREFILES / "bad-deployment215-truncated.corefile")
    with pytest.raises(ParseError) as err:
        _corefile_edit.plan(text, [{"plugin": "log"}], source="ConfigMap kube-system/coredns data.Corefile")
    assert "ConfigMap kube-system/coredns data.Corefile line" in str(err.value) and "expected" in str(err.value)


@pytest.mark.parametrize("edit,message", [
    ({"plugin": "Log"}, "plugin must be a plugin name"),
    ({"plugin": "log", "state": "gone"}, "state must be present or absent"),
    ({"plugin": "log", "zone": "a b"}, "zone must be a zone name"),
    ({"plugin": "log", "port": 70000}, "port must be a port number"),
    ({"plugin": "log", "args": [["x"]]}, "args must be a list of words"),
    ({"plugin": "log", "args": ["a\nb"]}, "multi-line word"),
    ({"plugin": "forward", "option": "prefer_udp", "args": ["."]}, "args and block belong to plugin edits"),
    ({"plugin": "forward", "option_args": ["1"]}, "option_args without option"),
    ({"plugin": "log", "after": "errors", "before": "health"}, "not both"),
    ({"plugin": "log", "position": "middle"}, "position must be first or last"),
    ({"plugin": "log", "block": "class all"}, "block must be a list"),
    ({"plugin": "log", "block": [{"name": "class", "value": 1}]}, "must be {name, args}"),
    ({"plugin": "log", "colour": "red"}, "unknown key(s) colour"),
])
def test_bad_edits_name_the_edit(edit, message):
    with pytest.raises(InvalidInput) as err:
        _corefile_edit.normalize([{"plugin": "errors"}, edit])
    assert "edits[1]" in str(err.value) and message in str(err.value)


def test_removing_reload_is_warned():
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    result = plan(text, [{"plugin": "reload", "state": "absent"}])
    assert any("reload plugin is removed" in w for w in result["warnings"])
    assert result["reload_plugin"]  # the running Corefile has it: CoreDNS will load this one


# -- reload judgement ------------------------------------------------------------------------------
LOG = (EDIT / "coredns-1.12.4-reload-rejected-then-restored.log").read_text()
# the log as it was at each step: started; the rejected reload logged; the restored Corefile loaded
START, _REJECT, _RESTORE = LOG.split("[INFO] Reloading\n")
REJECTED = START + "[INFO] Reloading\n" + _REJECT
RELOADED = START + "[INFO] Reloading\n" + _RESTORE


def test_reload_events_of_a_real_log():
    assert _corefile_edit.reload_events(LOG) == dict(_corefile_edit.reload_events(REJECTED), complete=1)
    assert _corefile_edit.reload_events(RELOADED) == {"complete": 1, "failed": 0, "last_failure": None}
    events = _corefile_edit.reload_events(REJECTED)
    assert events["complete"] == 0 and events["failed"] == 1
    assert events["last_failure"].startswith("[ERROR] plugin/reload: Corefile changed but reload failed")
    assert 'parsing "lots"' in events["last_failure"]


def pod(uid="u1", restarts=0, ready=True, waiting=None, text=""):
    return {"uid": uid, "restarts": restarts, "ready": ready, "waiting_reason": waiting, "events": _corefile_edit.reload_events(text)}


def test_judge_reload():
    start = START
    base = {"coredns-a": pod(text=start), "coredns-b": pod(uid="u2", text=start)}
    assert _corefile_edit.judge_reload(base, {"coredns-a": pod(text=start), "coredns-b": pod(uid="u2", text=start)})[0] == "waiting"
    status, pods = _corefile_edit.judge_reload(base, {"coredns-a": pod(text=RELOADED), "coredns-b": pod(uid="u2", text=start)})
    assert status == "waiting" and [p["status"] for p in pods] == ["reloaded", "waiting"]
    status, pods = _corefile_edit.judge_reload(base, {"coredns-a": pod(text=RELOADED), "coredns-b": pod(uid="u2", text=REJECTED)})
    assert status == "failed" and 'parsing "lots"' in pods[1]["detail"]
    assert _corefile_edit.judge_reload(base, {"coredns-a": pod(text=RELOADED), "coredns-b": pod(uid="u2", text=RELOADED)})[0] == "reloaded"
    # a replica replaced since the write started on the new Corefile: done once ready, failed when it cannot run
    status, pods = _corefile_edit.judge_reload(base, {"coredns-a": pod(text=RELOADED), "coredns-c": pod(uid="u3")})
    assert status == "reloaded" and {p["name"]: p["status"] for p in pods} == {"coredns-a": "reloaded", "coredns-b": "gone", "coredns-c": "started"}
    status, pods = _corefile_edit.judge_reload(base, {"coredns-a": pod(restarts=1, ready=False, waiting="CrashLoopBackOff"),
                                                      "coredns-b": pod(uid="u2", text=RELOADED)})
    assert status == "failed" and "CrashLoopBackOff" in pods[0]["detail"]
    assert _corefile_edit.judge_reload(base, {})[0] == "waiting"  # no pod at all is not a reload


def test_a_replica_not_ready_before_the_write_is_not_waited_for_while_another_serves():
    # the lab's corefile-invalid: replica a crash-loops on the old Corefile, b serves; the fix reloads b
    base = {"coredns-a": pod(restarts=3, ready=False, waiting="CrashLoopBackOff"), "coredns-b": pod(uid="u2", text=START)}
    status, pods = _corefile_edit.judge_reload(base, {"coredns-a": pod(restarts=3, ready=False, waiting="CrashLoopBackOff"),
                                                      "coredns-b": pod(uid="u2", text=RELOADED)})
    assert status == "reloaded" and pods[0]["status"] == "not_ready" and "CrashLoopBackOff" in pods[0]["detail"]
    # b has not reloaded yet: still waiting (a alone proves nothing)
    assert _corefile_edit.judge_reload(base, {"coredns-a": base["coredns-a"], "coredns-b": pod(uid="u2", text=START)})[0] == "waiting"
    # nothing served before: the replicas are waited for until they restart onto the new Corefile and get ready
    down = {"coredns-a": pod(restarts=3, ready=False, waiting="CrashLoopBackOff")}
    assert _corefile_edit.judge_reload(down, {"coredns-a": pod(restarts=3, ready=False, waiting="CrashLoopBackOff")})[0] == "waiting"
    assert _corefile_edit.judge_reload(down, {"coredns-a": pod(restarts=4, ready=True)})[0] == "reloaded"


def test_normalize_is_idempotent():
    edits = [{"plugin": "log", "args": ["."], "block": ["class denial error"], "after": "errors"}, {"plugin": "cache", "args": 30}]
    once = _corefile_edit.normalize(edits)
    assert _corefile_edit.normalize(once) == once
    text = corefile_of("kubeadm-k8s119-configmap.yaml")
    assert plan(text, once)["after"] == plan(text, edits)["after"]
