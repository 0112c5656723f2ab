# -*- coding: utf-8 -*-
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to clusterdns.doctor: no API guarantee. Domain exceptions raised below the module
# boundary and translated once into fail_json / AnsibleFilterError.

from __future__ import annotations


class ClusterDNSError(Exception):
    """Base class of every error this collection raises below a module or plugin."""


class ParseError(ClusterDNSError, ValueError):
    """Content that is present but cannot be parsed.

    ``source`` names the file or command output, ``lineno`` is 1-based (None when the whole
    input is wrong), ``line`` is the offending text and ``expected`` says what would have been
    valid. ``str()`` gives one sentence that names all of them.
    """

    def __init__(self, message, source=None, lineno=None, line=None, expected=None):
        self.message = message
        self.source = source
        self.lineno = lineno
        self.line = line
        self.expected = expected
        super().__init__(self.__str__())

    def __str__(self):
        where = self.source or "input"
        if self.lineno is not None:
            where = "%s line %d" % (where, self.lineno)
        text = "%s: %s" % (where, self.message)
        if self.line is not None:
            text += " (line: %r)" % self.line
        if self.expected:
            text += "; expected %s" % self.expected
        return text

    def as_dict(self):
        return {
            "source": self.source,
            "lineno": self.lineno,
            "line": self.line,
            "expected": self.expected,
            "message": self.message,
        }


class InvalidInput(ClusterDNSError, ValueError):
    """A caller passed data that a rule or filter cannot use (wrong type or shape)."""
