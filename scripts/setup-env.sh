#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install fsml_nb into it with the pinned constraints.
# Usage: scripts/setup-env.sh VENV_DIR EXTRAS      e.g. scripts/setup-env.sh .venv "postgres,datasets"
set -euo pipefail
venv_dir=${1:-.venv}
extras=${2:-datasets}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$venv_dir/bin/python" ]; then
  echo "creating $venv_dir with $("$python" --version)"
  "$python" -m venv "$venv_dir"
fi
"$venv_dir/bin/python" -m pip install --quiet --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
# constraints.txt pins torch to the CPU build; installing it first keeps pip from resolving a CUDA build.
"$venv_dir/bin/python" -m pip install --quiet -c "$root/constraints.txt" torch 2>&1 | grep -v "^WARNING: Location" || true
"$venv_dir/bin/python" -m pip install --quiet -c "$root/constraints.txt" -e "$root[$extras]" 2>&1 \
  | grep -v "^WARNING: Location" || true
"$venv_dir/bin/python" -c "import fsml_nb, torch; print(f'fsml_nb {fsml_nb.__version__} with torch {torch.__version__} in $venv_dir')"
