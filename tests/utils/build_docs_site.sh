#!/usr/bin/env bash
# Copyright (c) clusterdns.doctor contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Build the collection's docs site offline into DEST (default .cache/docsite):
# antsibull-docs (modules, filters, roles' argument specs, playbooks' extra docs) plus one page per
# finding id generated from the catalog (tests/utils/finding_pages.py), then Sphinx with warnings
# as errors. Needs `make setup` (.venv with antsibull-docs, sphinx, sphinx-ansible-theme,
# ansible-pygments) and touches no network: intersphinx is off, so links to docs.ansible.com are
# plain links. The HTML is in DEST/build/html.
#
#   tests/utils/build_docs_site.sh [DEST]
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$ROOT/.cache/docsite}"
VENV="${CLUSTERDNS_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
export ANSIBLE_CONFIG="$ROOT/ansible.cfg"

rm -rf "$DEST"
mkdir -p "$DEST"
chmod 700 "$DEST"  # antsibull-docs wants a directory only its owner can write to
antsibull-docs sphinx-init --use-current --squash-hierarchy --dest-dir "$DEST" \
    --project "clusterdns.doctor" --copyright "clusterdns.doctor contributors" \
    --title "clusterdns.doctor" --html-short-title "clusterdns.doctor" clusterdns.doctor >/dev/null
# offline: no intersphinx inventories to download
cat >>"$DEST/conf.py" <<'CONF'

# clusterdns.doctor: build offline (tests/utils/build_docs_site.sh). Without intersphinx the labels of
# docs.ansible.com and of other collections (common_return_values, kubernetes.core.k8s_info_module)
# cannot resolve: those references render as plain text instead of failing the build.
intersphinx_mapping = {}
suppress_warnings = ["ref.ref"]
CONF
mkdir -p "$DEST/rst"
chmod og-w "$DEST/rst"
antsibull-docs --config-file "$DEST/antsibull-docs.cfg" collection --use-current --squash-hierarchy \
    --cleanup everything --dest-dir "$DEST/rst" clusterdns.doctor >/dev/null
(cd "$ROOT/.cache/collections" && python "$ROOT/tests/utils/finding_pages.py" "$DEST/rst")
# the finding catalog in the collection index's table of contents
printf '\n.. toctree::\n   :caption: Finding catalog\n   :maxdepth: 1\n\n   findings/index\n' >>"$DEST/rst/index.rst"
sphinx-build -M html "$DEST/rst" "$DEST/build" -c "$DEST" -q -W --keep-going
echo "docs site: $DEST/build/html/index.html"
