# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
"""

    FACTS_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: This module only reads; it returns the same facts in check mode.
  diff_mode:
    support: N/A
    details: This module does not change anything.
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: This module only reads; it returns the same data in check mode.
  diff_mode:
    support: N/A
    details: This module does not change anything.
"""

    ROOT = r"""
options:
  root:
    description:
      - Directory that stands for the node's C(/).
      - V(/) (the default) reads the live node and runs its tools.
      - Any other directory is an unpacked support bundle written by the C(clusterdns.doctor.collect) playbook;
        files are read below it and command outputs from C(<root>/commands/<name>.txt), so the
        diagnosis can run offline.
    type: path
    default: /
"""
