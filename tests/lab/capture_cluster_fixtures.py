# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Capture the lab's API objects, healthy and under faults, as unit-test fixtures
(tests/unit/plugins/module_utils/fixtures/cluster/lab-<state>.json).

    python3 tests/lab/capture_cluster_fixtures.py [STATE ...]     # as root, lab up

Each state is a labctl fault (healed right after the capture), ``healthy`` or ``nodelocal``.
managedFields are dropped; nothing else is changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from conftest import lab, labctl, wait_until  # noqa: E402  pylint: disable=wrong-import-position

OUT = os.path.join(HERE, "..", "unit", "plugins", "module_utils", "fixtures", "cluster")

PATHS = (
    "/apis/apps/v1/namespaces/kube-system/deployments",
    "/apis/apps/v1/namespaces/kube-system/daemonsets",
    "/api/v1/namespaces/kube-system/pods",
    "/api/v1/namespaces/kube-system/services",
    "/api/v1/namespaces/kube-system/configmaps",
    "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:coredns",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/system:coredns",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/services",
    "/apis/apps/v1/namespaces/default/statefulsets",
    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
)

# How long after the fault the interesting state is there (crash loops need a restart or two).
SETTLE = {"corefile-invalid": 8, "upstream-loop": 12, "rbac-endpointslices": 8}


def strip(obj):
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def capture(api):
    items = []
    for path in PATHS:
        got = api.get(path)
        if got is None:
            continue
        if got.get("kind", "").endswith("List"):
            kind = got["kind"][:-4]
            for item in got.get("items") or []:
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", got.get("apiVersion"))
                items.append(strip(item))
        else:
            items.append(strip(got))
    return items


def main(states):
    api = lab.Api()
    for state in states:
        if state == "nodelocal":
            labctl("nodelocal", "on")
            wait_until(lambda: (api.get("/apis/apps/v1/namespaces/kube-system/daemonsets/node-local-dns") or {}).get("status", {}).get("numberReady"), 60)
        elif state != "healthy":
            labctl("fault", state)
            time.sleep(SETTLE.get(state, 2))
        version = subprocess.run([lab.binpath("coredns"), "-version"], capture_output=True, text=True, check=False).stdout.split()[0]
        doc = {"captured": "labctl %s; kube-apiserver %s, %s; %s UTC" % (
            state if state in ("healthy", "nodelocal") else "fault " + state, lab.K8S_VERSION, version,
            time.strftime("%Y-%m-%d %H:%M", time.gmtime())), "items": capture(api)}
        with open(os.path.join(OUT, "lab-%s.json" % state), "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.write("\n")
        if state == "nodelocal":
            labctl("nodelocal", "off")
        elif state != "healthy":
            labctl("heal", state)
        print("captured", state)


if __name__ == "__main__":
    main(sys.argv[1:] or ["healthy"])
