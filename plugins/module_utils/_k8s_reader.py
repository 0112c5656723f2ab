# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.
#
# Collector: GET requests through kubernetes.core's API client (so kubeconfig, context, host,
# api_key, validate_certs ... behave exactly as in kubernetes.core's modules), as the
# ``read(path, query)`` callable that _cluster.collect and _workloads.collect take.

from __future__ import annotations

import contextlib
import json
import os

from ansible_collections.clusterdns.doctor.plugins.module_utils._cluster import ApiError


def api_reader(module, timeout):
    """``(read, None)``, or ``(None, reason)`` when no client can be made from the options."""
    # kubernetes.core imports the kubernetes client at import time; import here so that a missing
    # client is a reason, reported by the module, not an import failure.
    try:
        from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import get_api_client
    except ImportError as exc:
        return None, "kubernetes.core's client is not importable: %s" % exc
    kubeconfig = module.params.get("kubeconfig")
    if isinstance(kubeconfig, str) and not os.path.exists(os.path.expanduser(kubeconfig)):
        return None, "kubeconfig %s does not exist" % kubeconfig
    try:
        client = get_api_client(module)
    except Exception as exc:  # pylint: disable=broad-except  # kubeconfig problems surface as many types
        return None, "no Kubernetes client: %s" % exc

    def read(path, query):
        params = [(k, v) for k, v in sorted(query.items()) if v is not None]
        try:
            resp = client.client.request("get", path, query_params=params, serialize=False, _request_timeout=timeout)
        except Exception as exc:  # pylint: disable=broad-except  # urllib3, ssl and API errors alike
            status = getattr(exc, "status", None)
            if not status:
                text = str(exc).strip().splitlines()
                raise ApiError(None, text[0] if text else type(exc).__name__, path) from None
            message = getattr(exc, "reason", None) or ""
            with contextlib.suppress(TypeError, ValueError, AttributeError):
                message = json.loads(getattr(exc, "body", None)).get("message") or message
            raise ApiError(int(status), message, path) from None
        return json.loads(resp.data.decode("utf-8"))

    return read, None
