#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install fsml_nb into it with the pinned constraints.
# Usage: scripts/setup-env.sh VENV_DIR EXTRAS      e.g. scripts/setup-env.sh .venv "postgres,datasets"
# A failed pip install fails this script (pip's output is filtered, never its exit status).
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

# pip, quiet, without the noise about absent local index folders; its exit status is kept (pipefail).
pip_install() {
  "$venv_dir/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
}

pip_install --upgrade pip setuptools wheel
# constraints.txt pins torch to the CPU build; installing it first keeps pip from resolving a CUDA build.
pip_install -c "$root/constraints.txt" torch
pip_install -c "$root/constraints.txt" -e "$root[$extras]"
"$venv_dir/bin/python" -c "import fsml_nb, torch; print(f'fsml_nb {fsml_nb.__version__} with torch {torch.__version__} in $venv_dir')"
