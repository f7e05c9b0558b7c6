#!/usr/bin/env bash
# Build the documentation site into _site/: install the docs tools (the `docs` extra) next to the
# dev extras into the given virtual environment, execute the module notebooks (cells flagged
# `#| slow` or `#| cuda` are shown, not run), generate the CLI reference, render with MkDocs.
# Usage: scripts/build-docs.sh [VENV_DIR] [build_docs.py options, e.g. --only core,data]
# Quarto users can still run nbdev-docs (nbs/_quarto.yml); this path needs only the package registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-${FSML_TEST_VENV:-.venv}}
shift || true
cd "$root"
scripts/setup-env.sh "$venv" "dev,docs"
export PYTHONDONTWRITEBYTECODE=1
unset FSML_HOME FSML_DB_URL FSML_BLOB_URL FSML_BROKER_URL  # each notebook runs in a fresh FSML_HOME
exec "$venv/bin/python" scripts/build_docs.py --site-dir "$root/_site" "$@"
