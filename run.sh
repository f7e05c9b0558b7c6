#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default (SQLite + a local blob folder
# under FSML_HOME, default ~/.fsml). No server needed.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-env.sh .venv "datasets,train,export"
.venv/bin/fsml init
.venv/bin/fsml quickstart
