# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.clusterdns.doctor.plugins.module_utils._corefile import parse, render
from ansible_collections.clusterdns.doctor.plugins.module_utils._errors import ParseError


def _plain(value):
    """Turn Ansible's lazy/templated containers into plain dicts, lists and strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def corefile_parse(text, source="Corefile"):
    if not isinstance(text, str):
        raise AnsibleFilterError("corefile_parse: expects the Corefile text (or a ConfigMap / kubectl describe output), got %s"
                                 % type(text).__name__)
    try:
        return parse(str(text), source=str(source))
    except ParseError as exc:
        raise AnsibleFilterError("corefile_parse: %s" % exc) from exc


def corefile_render(blocks):
    if not isinstance(blocks, (list, tuple)):
        raise AnsibleFilterError("corefile_render: expects the list of server blocks from corefile_parse, got %s" % type(blocks).__name__)
    try:
        return render(_plain(blocks))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AnsibleFilterError("corefile_render: the input is not a corefile_parse result (%s)" % exc) from exc


class FilterModule:
    def filters(self):
        return {
            "corefile_parse": corefile_parse,
            "corefile_render": corefile_render,
        }
