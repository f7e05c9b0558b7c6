#!/usr/bin/env bash
# Set everything up and run the main job on the embedded default (SQLite, a local blob folder and
# the SQLite job queue under FSML_HOME, default ~/.fsml). No server needed.
# The main job is the whole loop as a papermill pipeline (pipelines/digits.toml):
#   import -> train -> export -> register -> evaluate -> deploy -> smoke-serve
# A second run is all cache hits; after a failure or Ctrl-C it resumes at the step that did not finish.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup-env.sh .venv "datasets,train,export,serve,pipeline,evaluate"
.venv/bin/fsml init
.venv/bin/fsml pipeline run digits "$@"
