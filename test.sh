#!/usr/bin/env bash
# Set up a test environment and run the whole test suite:
#   1. notebooks and library in sync (nbdev-clean and nbdev-export change nothing),
#   2. ruff on the exported library,
#   3. nbdev-test: every notebook's examples and assert cells,
#   4. pytest: SQLite always; PostgreSQL where it answers (always with FSML_REQUIRE_SERVICES=1).
set -euo pipefail
cd "$(dirname "$0")"
venv=${FSML_TEST_VENV:-.venv}
scripts/setup-env.sh "$venv" "dev"
export MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
unset FSML_HOME FSML_DB_URL FSML_BLOB_URL FSML_BROKER_URL  # tests make their own stores

echo "== notebooks and library in sync"
state() { git status --porcelain --untracked-files=all; git diff; }
before=$(state)
"$venv/bin/nbdev-clean"
"$venv/bin/nbdev-export"
after=$(state)
if [ "$before" != "$after" ]; then
  echo "nbdev-clean/nbdev-export changed the tree: notebooks and fsml_nb/ disagree. Changes:"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi
if [ "${CI:-}" = "true" ] && [ -n "$after" ]; then
  echo "the checkout is not clean after export (untracked or modified files):"; echo "$after"; exit 1
fi

echo "== ruff"
"$venv/bin/ruff" check fsml_nb tests bench

echo "== nbdev-test"
"$venv/bin/nbdev-test" --n-workers 2 --timing --skip-folder-re "^([_.]|apps$)"  # apps: run by their browser tests

echo "== pytest"
"$venv/bin/pytest" -q "$@"
