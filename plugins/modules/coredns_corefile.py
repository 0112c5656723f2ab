#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: coredns_corefile
short_description: Structural edits of the CoreDNS Corefile in its ConfigMap, with a backup and a wait for CoreDNS to reload it
version_added: 1.0.0
description:
  - Reads the Corefile from the CoreDNS ConfigMap (O(namespace)/O(configmap), key O(key)) through the Kubernetes API,
    applies O(edits) to its parse tree (a plugin, or an option inside a plugin's block, present or absent in the
    server blocks that serve a zone), renders it and writes the ConfigMap back.
  - The Corefile written before is kept under O(backup_key) (C(Corefile-backup), the key kubeadm uses too);
    O(restore=true) puts it back, for a rollback.
  - Idempotent. The ConfigMap is written only when the edits change the Corefile's structure (plugins, arguments,
    blocks, comments); an unchanged Corefile keeps its layout. Comments stay; a removed line's comments move to the
    line after it. The written Corefile is in the canonical layout (four spaces per level).
  - The write carries the C(resourceVersion) it read (optimistic concurrency). When someone else changed the ConfigMap
    meanwhile, the module reads it again and re-applies the edits, at most three times.
  - Refuses, before any write, edits that add a plugin the running CoreDNS does not have (version from O(version) or
    from the image tag of the CoreDNS pods), and a current Corefile that does not parse (the line and what was expected).
  - With O(wait=true), after the write it waits until every CoreDNS pod has reloaded the new Corefile, from each pod's
    log since the write (the C(reload) plugin logs C(Reloading complete), or C(Corefile changed but reload failed)
    when CoreDNS rejects it and keeps serving the previous one). A rejected Corefile or no reload within
    O(wait_timeout) fails the module; the ConfigMap then still holds the new Corefile (run again with O(restore=true)).
  - Without the C(reload) plugin in the running Corefile CoreDNS does not notice the change; the module says
    RV(restart_required) and does not wait. It never restarts anything.
author:
  - clusterdns.doctor developers (!UNKNOWN)
requirements:
  - kubernetes >= 24.2.0 (Python client, as for C(kubernetes.core))
notes:
  - Needs C(get) and C(update) on the ConfigMap, C(list) on pods, and C(get) on C(pods/log) for O(wait).
  - CoreDNS sees a ConfigMap change when the kubelet refreshes the pod's ConfigMap volume (its sync period, about
    a minute by default) and the C(reload) plugin's next check (every 30 s plus up to 15 s of jitter by default),
    up to about two minutes in a real cluster, which is why O(wait_timeout) defaults to 120 s.
  - Plugin names are checked against CoreDNS releases; plugin options and arguments are checked by CoreDNS itself
    when it reloads (a rejected reload is reported with CoreDNS's message).
  - Edits act on server blocks only, not on snippets or files brought in with C(import).
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - clusterdns.doctor._attributes
options:
  namespace:
    description: Namespace of the ConfigMap and the CoreDNS pods.
    type: str
    default: kube-system
  configmap:
    description: Name of the ConfigMap that holds the Corefile.
    type: str
    default: coredns
  key:
    description: Data key of the Corefile.
    type: str
    default: Corefile
  backup_key:
    description: Data key the previous Corefile is kept under on every write (and read from by O(restore)).
    type: str
    default: Corefile-backup
  edits:
    description:
      - Edits applied in order. Each selects the server blocks that have a key for O(edits[].zone) (and O(edits[].port)).
      - A plugin edit ensures the plugin present (with O(edits[].args) and O(edits[].block) when given) or absent
        (every instance). An option edit (O(edits[].option)) ensures a line inside the plugin's block present (with
        O(edits[].option_args) when given) or absent; the plugin must be there for a present option.
    type: list
    elements: dict
    default: []
    suboptions:
      plugin:
        description: Plugin (directive) name, for example V(autopath), V(log), V(forward), V(cache).
        type: str
        required: true
      state:
        description: Whether the plugin (or the option) must be present or absent.
        type: str
        choices: [present, absent]
        default: present
      zone:
        description: Zone of the server blocks to edit (V(.) is the root zone, as in C(.:53)).
        type: str
        default: .
      port:
        description: Port of the server blocks to edit. Omitted, every port; a key without a port counts as 53.
        type: int
      args:
        description:
          - Arguments of the plugin. Omitted, an existing plugin keeps its arguments and a new one gets none.
          - A string is split at blanks (V(30) or V(". 10.0.0.2")).
        type: raw
      block:
        description:
          - The plugin's block, exactly, as lines (V(class denial error)) or dicts with C(name) and C(args).
            Omitted, an existing block is kept. An empty list removes the block.
        type: list
        elements: raw
      option:
        description: A line inside the plugin's block to ensure present or absent instead of the plugin, for example V(prefer_udp).
        type: str
      option_args:
        description: Arguments of O(edits[].option). Omitted, an existing option keeps its arguments and a new one gets none.
        type: raw
      position:
        description: Where a new plugin goes in the server block when O(edits[].after) and O(edits[].before) do not place it.
        type: str
        choices: [first, last]
        default: last
      after:
        description: A new plugin goes right after this plugin when the server block has it.
        type: str
      before:
        description: A new plugin goes right before this plugin when the server block has it.
        type: str
  restore:
    description:
      - Put the Corefile kept under O(backup_key) back (the backup stays). Cannot be combined with O(edits).
    type: bool
    default: false
  version:
    description:
      - CoreDNS version the plugin check uses, for example V(1.12.4).
      - Omitted, the oldest version among the image tags of the CoreDNS pods; without a version tag there, plugins
        are checked against every release this collection knows.
    type: str
  label_selector:
    description: Equality label selector of the CoreDNS pods (version and reload wait).
    type: str
    default: k8s-app=kube-dns
  wait:
    description: After a write, wait until every CoreDNS pod reloaded the new Corefile (or rejected it).
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait for the reload.
    type: int
    default: 120
  request_timeout:
    description: Seconds to wait for each API request.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    details: Reads and plans; writes nothing. C(changed) and the diff say what a real run would write.
  diff_mode:
    support: full
    details: The Corefile before and after.
seealso:
  - module: clusterdns.doctor.coredns_info
  - name: CoreDNS reload plugin
    description: How CoreDNS picks up a changed Corefile, and what a rejected one does.
    link: https://coredns.io/plugins/reload/
  - name: Customizing DNS Service (Kubernetes documentation)
    description: The CoreDNS ConfigMap.
    link: https://kubernetes.io/docs/tasks/administer-cluster/dns-custom-nameservers/
"""

EXAMPLES = r"""
- name: Remove autopath, log denials and errors, forward over UDP first
  clusterdns.doctor.coredns_corefile:
    edits:
      - {plugin: autopath, state: absent}
      - {plugin: errors, position: first}
      - {plugin: log, args: ["."], block: ["class denial error"], after: errors}
      - {plugin: forward, option: prefer_udp}
      - {plugin: forward, option: max_concurrent, option_args: [1000]}
  register: corefile

- name: Set the cache of the cluster.local block only, another kubeconfig
  clusterdns.doctor.coredns_corefile:
    kubeconfig: ~/.kube/prod.yaml
    edits:
      - {plugin: cache, args: [30], zone: cluster.local, port: 53}

- name: Put the previous Corefile back
  clusterdns.doctor.coredns_corefile:
    restore: true
"""

RETURN = r"""
corefile:
  description: The Corefile after the run (the one written, or that would be written in check mode).
  type: str
  returned: success
  sample: ".:53 {\n    errors\n    log . {\n        class denial error\n    }\n}\n"
previous:
  description: The Corefile the run read.
  type: str
  returned: success
  sample: ".:53 {\n    errors\n}\n"
actions:
  description: One sentence per change.
  type: list
  elements: str
  returned: success
  sample: ["server block .:53: removed autopath @kubernetes (line 9)"]
notices:
  description: Plugins in the Corefile the CoreDNS version does not have, a removed C(reload) plugin.
  type: list
  elements: str
  returned: success
  sample: []
version:
  description: The CoreDNS version the plugins were checked against, [major, minor, patch], or V(null).
  type: list
  elements: int
  returned: success
  sample: [1, 12, 4]
version_source:
  description: Where RV(version) came from.
  type: str
  returned: success
  sample: image registry.k8s.io/coredns/coredns:v1.12.4 of pod coredns-a
configmap:
  description: C(namespace), C(name) and the C(resource_version) after the run.
  type: dict
  returned: success
  sample: {"namespace": "kube-system", "name": "coredns", "resource_version": "4711"}
restart_required:
  description: The Corefile changed and the running one has no C(reload) plugin, so CoreDNS needs a restart to use it.
  type: bool
  returned: success
  sample: false
reload:
  description: >-
    C(status) (V(reloaded), V(failed), V(timeout), V(no_reload_plugin), V(no_pods), V(not_waited) or V(unchanged)),
    C(seconds) waited, C(pods) (C(name), C(status), C(detail): the CoreDNS log line when a pod rejected the Corefile).
  type: dict
  returned: always
  sample: {"status": "reloaded", "seconds": 3.2, "pods": [{"name": "coredns-a", "status": "reloaded", "detail": "logged 'Reloading complete'"}]}
diff:
  description: The Corefile before and after, when it changed.
  type: dict
  returned: changed
  sample: {"before": ".:53 {\n    autopath @kubernetes\n}\n", "after": ".:53 {\n}\n"}
"""

import contextlib
import copy
import json
import os
import time

from ansible_collections.clusterdns.doctor.plugins.module_utils import _corefile, _corefile_edit
from ansible_collections.clusterdns.doctor.plugins.module_utils._cluster import ApiError, parse_selector
from ansible_collections.clusterdns.doctor.plugins.module_utils._coredns_versions import image_version
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ClusterDNSError
from ansible_collections.kubernetes.core.plugins.module_utils.ansiblemodule import AnsibleModule
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule

ATTEMPTS = 3
LOG_SLACK = 60  # seconds before the write that the log reads start at (clock skew between controller and nodes)
POLL = 2.0
FIELD_MANAGER = "clusterdns-doctor"


def argspec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace={"type": "str", "default": "kube-system"},
        configmap={"type": "str", "default": "coredns"},
        key={"type": "str", "default": "Corefile", "no_log": False},
        backup_key={"type": "str", "default": "Corefile-backup", "no_log": False},
        edits={"type": "list", "elements": "dict", "default": [], "options": {
            "plugin": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "zone": {"type": "str", "default": "."},
            "port": {"type": "int"},
            "args": {"type": "raw"},
            "block": {"type": "list", "elements": "raw"},
            "option": {"type": "str"},
            "option_args": {"type": "raw"},
            "position": {"type": "str", "choices": ["first", "last"], "default": "last"},
            "after": {"type": "str"},
            "before": {"type": "str"},
        }},
        restore={"type": "bool", "default": False},
        version={"type": "str"},
        label_selector={"type": "str", "default": "k8s-app=kube-dns"},
        wait={"type": "bool", "default": True},
        wait_timeout={"type": "int", "default": 120},
        request_timeout={"type": "int", "default": 20},
    )
    return spec


class Api:
    """Requests through kubernetes.core's client (kubeconfig, context, host, api_key ... as in its modules)."""

    def __init__(self, module, timeout):
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client

        self.client = get_api_client(module).client
        self.timeout = timeout

    def request(self, method, path, query=None, body=None, raw=False):
        params = [(k, v) for k, v in sorted((query or {}).items()) if v is not None]
        try:
            resp = self.client.request(method, path, body=body, query_params=params, serialize=False, _request_timeout=self.timeout)
        except Exception as exc:  # pylint: disable=broad-except  # urllib3, ssl and API errors alike
            status = getattr(exc, "status", None)
            if not status:
                text = str(exc).strip().splitlines()
                raise ApiError(None, text[0] if text else type(exc).__name__, path) from None
            message = getattr(exc, "reason", None) or ""
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                message = json.loads(getattr(exc, "body", None)).get("message") or message
            raise ApiError(int(status), message, path) from None
        data = resp.data.decode("utf-8", "replace")
        return data if raw else json.loads(data)


def _container(pod):
    """The CoreDNS container of a pod: the one whose image names coredns, else the first."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    chosen = next((c for c in containers if "coredns" in (c.get("image") or "")), containers[0])
    status = next((s for s in (pod.get("status") or {}).get("containerStatuses") or [] if s.get("name") == chosen.get("name")), {})
    return chosen, status, len(containers) > 1


def list_pods(api, namespace, selector):
    items = api.request("get", "/api/v1/namespaces/%s/pods" % namespace, {"labelSelector": selector}).get("items") or []
    pods = {}
    for pod in items:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
            continue
        container, cstatus, several = _container(pod)
        pods[meta.get("name")] = {
            "uid": meta.get("uid"), "image": container.get("image"), "container": container.get("name") if several else None,
            "restarts": cstatus.get("restartCount") or 0, "ready": bool(cstatus.get("ready")),
            "waiting_reason": ((cstatus.get("state") or {}).get("waiting") or {}).get("reason"),
        }
    return pods


def detect_version(pods):
    """The oldest CoreDNS version among the pods' image tags, and where it came from."""
    found = sorted((image_version(p["image"]), name, p["image"]) for name, p in pods.items() if image_version(p["image"]))
    if not found:
        images = sorted({p["image"] for p in pods.values() if p.get("image")})
        return None, "no CoreDNS pod with a version tag (%s): plugins checked against every known release" % (", ".join(images) or "no pods")
    version, name, image = found[0]
    return version, "image %s of pod %s" % (image, name)


def log_events(api, namespace, name, pod, since):
    text = api.request("get", "/api/v1/namespaces/%s/pods/%s/log" % (namespace, name),
                       {"sinceTime": since, "container": pod.get("container")}, raw=True)
    return _corefile_edit.reload_events(text)


def baseline(api, namespace, pods, since):
    """Reload events of each pod's log since ``since``, read before the write."""
    out = {}
    for name, pod in pods.items():
        try:
            events = log_events(api, namespace, name, pod, since)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise ClusterDNSError("cannot read the log of CoreDNS pod %s/%s to wait for its reload (%s); grant get on pods/log "
                                      "or set wait: false" % (namespace, name, exc.reason())) from None
            events = None  # a container that is not running has no log yet: judged by its restarts and readiness
        out[name] = dict(pod, events=events)
    return out


def wait_reload(api, p, base, since, deadline, start):
    status, pods, settled = "waiting", [], {}
    while True:
        now = list_pods(api, p["namespace"], p["label_selector"])
        for name, pod in now.items():
            if name in settled and settled[name]["uid"] == pod["uid"] and settled[name]["restarts"] == pod["restarts"]:
                pod["events"] = settled[name]["events"]  # reloaded already: its log is not read again
                continue
            try:
                pod["events"] = log_events(api, p["namespace"], name, pod, since)
            except ApiError as exc:
                pod["events"], pod["log_error"] = None, exc.reason()
        status, pods = _corefile_edit.judge_reload(base, now)
        settled = {q["name"]: now[q["name"]] for q in pods if q["status"] == "reloaded"}
        if status != "waiting" or time.time() >= deadline:
            break
        time.sleep(POLL)
    return {"status": "timeout" if status == "waiting" else status, "seconds": round(time.time() - start, 1), "pods": pods}


def reload_message(reload, namespace, configmap, backup_key, restore):
    lines = "; ".join("%s: %s (%s)" % (p["name"], p["status"], p["detail"]) for p in reload["pods"])
    where = "ConfigMap %s/%s" % (namespace, configmap)
    if reload["status"] == "failed":
        head = "CoreDNS rejected the %s Corefile and keeps serving the one it had" % ("restored" if restore else "new")
    else:
        head = "CoreDNS did not reload the %s Corefile within %s s (raise wait_timeout if the kubelet's ConfigMap sync or the reload " \
               "interval is slower)" % ("restored" if restore else "new", reload["seconds"])
    tail = "" if restore else "; %s holds the new Corefile, the previous one is under %s (restore: true puts it back)" % (where, backup_key)
    return "%s: %s%s" % (head, lines, tail)


def run(module, api):
    p = module.params
    path = "/api/v1/namespaces/%s/configmaps/%s" % (p["namespace"], p["configmap"])
    where = "ConfigMap %s/%s" % (p["namespace"], p["configmap"])
    try:
        pods = list_pods(api, p["namespace"], p["label_selector"])
    except ApiError as exc:
        if p["wait"] or not p["version"]:
            raise ClusterDNSError("cannot list the CoreDNS pods (%s) for their version and reload; give version and wait: false "
                                  "to edit without them" % exc.reason()) from None
        pods = {}
    if p["version"]:
        version, source = image_version("coredns:" + p["version"]), "the version option"
        if version is None:
            raise ClusterDNSError("version %r is not a CoreDNS version such as 1.12.4" % p["version"])
    else:
        version, source = detect_version(pods)
    result = {"changed": False, "version": version, "version_source": source, "restart_required": False,
              "reload": {"status": "unchanged", "seconds": 0, "pods": []}}
    for _attempt in range(ATTEMPTS):
        try:
            cm = api.request("get", path)
        except ApiError as exc:
            raise ClusterDNSError("cannot read %s: %s" % (where, exc.reason())) from None
        data = cm.get("data") or {}
        text = data.get(p["key"])
        if not isinstance(text, str):
            raise ClusterDNSError("%s has no key %s (keys: %s)" % (where, p["key"], ", ".join(sorted(data)) or "none"))
        if p["restore"]:
            if not isinstance(data.get(p["backup_key"]), str):
                raise ClusterDNSError("%s has no key %s: nothing to restore" % (where, p["backup_key"]))
            new, changed = data[p["backup_key"]], data[p["backup_key"]] != text
            actions = ["restored %s from %s" % (p["key"], p["backup_key"])] if changed else []
            warnings = []
            reload_plugin = _has_reload(text)
        else:
            plan = _corefile_edit.plan(text, p["edits"], version, source="%s data.%s" % (where, p["key"]))
            new, changed, actions, warnings, reload_plugin = plan["after"], plan["changed"], plan["actions"], plan["warnings"], plan["reload_plugin"]
        result.update(corefile=new, previous=text, actions=actions, notices=warnings,
                      configmap={"namespace": p["namespace"], "name": p["configmap"], "resource_version": cm["metadata"].get("resourceVersion")})
        if not changed:
            return result
        result.update(changed=True, diff={"before": text, "after": new, "before_header": "%s data.%s" % (where, p["key"]),
                                          "after_header": "%s data.%s" % (where, p["key"])},
                      restart_required=not reload_plugin)
        if module.check_mode:
            result["reload"]["status"] = "not_waited"
            return result
        waiting = p["wait"] and reload_plugin and bool(pods)
        start = time.time()
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - LOG_SLACK))
        base = baseline(api, p["namespace"], pods, since) if waiting else {}
        body = copy.deepcopy(cm)
        body["data"] = dict(data)
        body["data"][p["key"]] = new
        if not p["restore"]:
            body["data"][p["backup_key"]] = text
        try:
            written = api.request("put", path, {"fieldManager": FIELD_MANAGER}, body=body)
        except ApiError as exc:
            if exc.status == 409:
                pods = list_pods(api, p["namespace"], p["label_selector"])
                continue  # changed by someone else since it was read: read again, edit again
            raise ClusterDNSError("cannot write %s: %s" % (where, exc.reason() if exc.status != 422 else exc.message)) from None
        result["configmap"]["resource_version"] = written["metadata"].get("resourceVersion")
        break
    else:
        raise ClusterDNSError("%s changed %d times while it was being edited; nothing written, run again" % (where, ATTEMPTS))
    if not reload_plugin:
        result["reload"]["status"] = "no_reload_plugin"
    elif not p["wait"]:
        result["reload"]["status"] = "not_waited"
    elif not pods:
        result["reload"]["status"] = "no_pods"
    else:
        result["reload"] = wait_reload(api, p, base, since, start + p["wait_timeout"], start)
        if result["reload"]["status"] != "reloaded":
            module.fail_json(msg=reload_message(result["reload"], p["namespace"], p["configmap"], p["backup_key"], p["restore"]), **result)
    return result


def _has_reload(text):
    try:
        return _corefile_edit.has_plugin(_corefile.parse(text), "reload")
    except ClusterDNSError:
        return True  # an unparsable Corefile: CoreDNS runs an older one; assume it reloads (the usual case)


def main():
    module = AnsibleK8SModule(module_class=AnsibleModule, argument_spec=argspec(), supports_check_mode=True)
    p = module.params
    if p["restore"] and p["edits"]:
        module.fail_json(msg="restore puts the backup back; it cannot be combined with edits")
    for name in ("wait_timeout", "request_timeout"):
        if p[name] < 1:
            module.fail_json(msg="%s must be 1 or more, got %d" % (name, p[name]))
    try:
        parse_selector(p["label_selector"])
        _corefile_edit.normalize(p["edits"])
    except ValueError as exc:
        module.fail_json(msg="%s" % exc)
    kubeconfig = p.get("kubeconfig")
    if isinstance(kubeconfig, str) and not kubeconfig.startswith("~") and not os.path.exists(kubeconfig):
        module.fail_json(msg="kubeconfig %s does not exist; nothing changed" % p["kubeconfig"])
    try:
        api = Api(module, p["request_timeout"])
    except Exception as exc:  # pylint: disable=broad-except  # kubeconfig problems surface as many types
        module.fail_json(msg="no Kubernetes client (%s); nothing changed" % str(exc).strip().splitlines()[0])
    try:
        result = run(module, api)
    except ApiError as exc:
        module.fail_json(msg="Kubernetes API: %s; nothing changed" % exc.reason())
    except ClusterDNSError as exc:
        module.fail_json(msg="%s; nothing changed" % exc)
    for notice in result.get("notices") or []:
        module.warn(notice)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
