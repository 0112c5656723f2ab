# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write one reStructuredText page per finding id of the catalog (plugins/module_utils/_catalog.py)
into a docs site source tree, plus an index, for tests/utils/build_docs_site.sh.

    python tests/utils/finding_pages.py RST_DIR

The pages say what the finding means (title, default severity, scope, the DNS path hop of
report.html), the evidence (the facts the rule reads and the evidence keys it reports, read from
the rule's source), why it breaks DNS, the fix (remediate tags, roles, variables, command) and the
references. Needs ansible_collections.clusterdns.doctor importable (run from .cache/collections or
set PYTHONPATH)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import re
import sys
import textwrap

PACKAGE = "ansible_collections.clusterdns.doctor.plugins.module_utils"
# The collection link that `make setup` makes (.cache/collections/ansible_collections/clusterdns/doctor).
COLLECTIONS = pathlib.Path(__file__).resolve().parents[2] / ".cache" / "collections"
SPECIAL = re.compile(r"([\\`*_|])")


def text(value):
    """Inline reStructuredText for a plain string (markup characters escaped)."""
    return SPECIAL.sub(r"\\\1", str(value))


def literal(value):
    return "``%s``" % str(value).replace("``", "` `") if value != "" else "(empty)"


def load_rules():
    findings = importlib.import_module(PACKAGE + "._findings")
    utils = pathlib.Path(findings.__file__).parent
    for path in sorted(utils.glob("_rules_*.py")):
        importlib.import_module("%s.%s" % (PACKAGE, path.stem))
    rules = {}
    for rule in findings._RULES:  # pylint: disable=protected-access
        rules.setdefault(rule.id, []).append(rule)
    return rules


def evidence_keys(func):
    """Constant keys of the dict literals passed to hit(...) in a rule function."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return []
    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "hit":
            pending = list(node.args[:1]) + [k.value for k in node.keywords if k.arg == "evidence"]
            while pending:
                arg = pending.pop()
                if isinstance(arg, ast.Name):
                    pending.extend(a.value for a in ast.walk(tree) if isinstance(a, ast.Assign)
                                   and any(getattr(t, "id", None) == arg.id for t in a.targets))
                elif isinstance(arg, ast.Dict):
                    keys.extend(k.value for k in arg.keys if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return list(dict.fromkeys(keys))


def module_for(fact_key, modules):
    """The module that gathers a fact key, when one is named after it."""
    topic = fact_key[len("clusterdns_"):] if fact_key.startswith("clusterdns_") else fact_key
    for name in ("%s_facts" % topic, "%s_info" % topic, "%s_dns_info" % topic):
        if name in modules:
            return name
    return None


def page(finding_id, entry, rules, modules, hops):
    title = "%s: %s" % (finding_id, entry["title"])
    out = [".. _clusterdns_finding_%s:" % finding_id, "", text(title), "=" * len(text(title)), "",
           "Default severity: **%s**. Scope: %s. Hop on the report.html DNS path: %s." % (
               entry["severity"], entry["scope"], ", ".join(hops) or "none"), ""]
    out += ["What it means", "-------------", "", text(entry["title"]) + ".", ""]
    out += ["Evidence", "--------", ""]
    if rules:
        for rule in rules:
            needs = []
            for key in rule.needs:
                module = module_for(key, modules)
                needs.append(":ansplugin:`clusterdns.doctor.%s#module` (%s)" % (module, literal(key)) if module else literal(key))
            out.append("* Reads %s." % (", ".join(needs) or "the facts passed to the rule engine"))
            keys = evidence_keys(rule.func)
            if keys:
                out.append("* Reports the evidence keys %s." % ", ".join(literal(k) for k in keys))
            doc = inspect.getdoc(rule.func)
            if doc:
                out.append("* " + text(" ".join(doc.split())))
    else:
        out.append("No rule evaluates this finding yet: it is in the catalog so that ids stay stable.")
    out += ["", "Why it breaks DNS", "-----------------", "", text(entry["cause"]), ""]
    fix = entry["fix"]
    out += ["Fix", "---", ""]
    if fix["tags"]:
        out.append("Remediate tags: %s; roles: %s." % (", ".join(literal(t) for t in fix["tags"]),
                                                       ", ".join(literal(r) for r in fix["roles"]) or "none"))
        out += ["", ".. code-block:: console", "", "    ansible-playbook clusterdns.doctor.remediate --tags %s --limit HOST" % ",".join(fix["tags"]), ""]
        if fix["variables"]:
            out.append("Variables: %s." % ", ".join(literal("%s=%s" % kv) for kv in sorted(fix["variables"].items())))
            out.append("")
    else:
        out += ["No automatic remediation: the report names what to change; see the references.", ""]
    out += ["References", "----------", ""]
    for ref in entry["references"]:
        out.append("* " + ("`%s <%s>`__" % (ref, ref) if ref.startswith(("https://", "http://")) else text(ref)))
    out.append("")
    return "\n".join(out)


def write(rst_dir):
    catalog = importlib.import_module(PACKAGE + "._catalog").CATALOG
    html = importlib.import_module(PACKAGE + "._html")
    rules = load_rules()
    plugins = pathlib.Path(importlib.import_module(PACKAGE).__path__[0]).parent
    modules = {p.stem for p in (plugins / "modules").glob("*.py") if not p.stem.startswith("_")}
    target = pathlib.Path(rst_dir) / "findings"
    target.mkdir(parents=True, exist_ok=True)
    for finding_id, entry in catalog.items():
        hops = [html.HOP_TITLES.get(h, h) for h in html.hops_of(finding_id)]
        (target / ("%s.rst" % finding_id)).write_text(page(finding_id, entry, rules.get(finding_id, []), modules, hops))
    index = [".. _clusterdns_findings:", "", "Finding catalog", "===============", "",
             "One page per finding id. The ids are stable: reports, JUnit, waivers and the AWX threshold use them.", "",
             ".. list-table::", "   :header-rows: 1", "", "   * - id", "     - default severity", "     - scope", "     - title"]
    for finding_id, entry in catalog.items():
        index += ["   * - :ref:`%s <clusterdns_finding_%s>`" % (finding_id, finding_id), "     - " + entry["severity"],
                  "     - " + entry["scope"], "     - " + text(entry["title"])]
    index += ["", ".. toctree::", "   :hidden:", ""] + ["   %s" % finding_id for finding_id in catalog] + [""]
    (target / "index.rst").write_text("\n".join(index))
    return sorted(catalog)


if __name__ == "__main__":
    sys.path[:0] = [str(pathlib.Path.cwd()), str(COLLECTIONS)]
    if len(sys.argv) != 2:
        sys.exit("usage: finding_pages.py RST_DIR")
    print("wrote %d finding pages" % len(write(sys.argv[1])))
